"""Fit the host preset's memory/compute overlap on one half of the recorded validate runs and
check it on the rest (how ``accel_sim.config.HOST_MEMORY_COMPUTE_OVERLAP`` was chosen).

Run from the repository root:
    PYTHONPATH=. python scripts/fit_host_overlap.py [--step 0.05]

Every record of ``nmsim validate --json`` keeps what its prediction was made from (the read
bandwidth, each kernel's cache-resident rate and per-call cost, the thread count) next to the
measured speedup, so a prediction can be made again for any overlap. The fit half is the first
two sets of ten runs on the 2-core Zen 4 guest with cold caches
(``reports/kernels/cpu_validate_speed_cold.json``); the check sets are that file's other two
sets and the Zen 1 guest's runs (``reports/kernels/zen1/validate_table.json``,
``validate_overlap.json``), another CPU generation that the fit never sees. The criterion is
the median |predicted / measured speedup - 1| over the fit half; printed for every overlap on
the grid: the median |error|, the median error and the predictions within 10%, per data set.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np

from nmsim.commands.validate import _simulated_seconds

COLD = Path("reports/kernels/cpu_validate_speed_cold.json")
ZEN1 = (Path("reports/kernels/zen1/validate_table.json"),
        Path("reports/kernels/zen1/validate_overlap.json"))
FIT_SETS = ("a666e29", "9854040")  # the first two cold sets on the Zen 4 guest


def _runs(path: Path):
    """(set label, run's speedup records) of a committed validate report."""
    report = json.loads(path.read_text())
    for group in report["sets"]:
        for run in group["runs"]:
            yield f"{path.name}:{group.get('commit', '?')}", run


def _inputs(record: dict) -> tuple:
    host = record["host"]
    return (tuple(record["shape"]), host["bandwidth_gb_s"], host["cores"], record["pattern"],
            record["encoding"], host["dense_gflops_resident"], host["sparse_gflops_resident"],
            (1e6 * host["dense_call_overhead_s"], 1e6 * host["sparse_call_overhead_s"]))


def errors(records: list[dict], overlap: float) -> list[float]:
    """predicted / measured speedup - 1 of each record at ``overlap``."""
    out = []
    for record in records:
        dense, sparse = _simulated_seconds(*_inputs(record), overlap=overlap)
        out.append(dense["seconds"] / sparse["seconds"] / record["measured_speedup"] - 1)
    return out


def data_sets() -> dict[str, list[dict]]:
    """{"fit": ..., "check: <set>": ...} records."""
    sets: dict[str, list[dict]] = {"fit": []}
    for path in (COLD, *ZEN1):
        for label, run in _runs(path):
            key = "fit" if path == COLD and label.split(":")[1] in FIT_SETS else f"check {label}"
            sets.setdefault(key, []).extend(run)
    return sets


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--step", type=float, default=0.05, help="grid step of the overlap")
    args = parser.parse_args(argv)
    if not 0 < args.step <= 1:
        parser.error(f"--step must be in (0, 1], got {args.step}")
    sets = data_sets()
    grid = [round(v, 6) for v in np.arange(1.0, -1e-9, -args.step)]
    table = {name: {eta: errors(records, eta) for eta in grid} for name, records in sets.items()}
    best = min(grid, key=lambda eta: statistics.median(map(abs, table["fit"][eta])))
    for name, by_eta in table.items():
        print(f"{name} ({len(sets[name])} predictions)")
        for eta, errs in by_eta.items():
            mark = "  <- best on the fit half" if eta == best else ""
            print(f"  overlap {eta:.2f}: median |error| {statistics.median(map(abs, errs)):5.1%}, "
                  f"median {statistics.median(errs):+6.1%}, within 10% "
                  f"{sum(abs(e) <= 0.1 for e in errs)}/{len(errs)}{mark}")
    print(f"best overlap on the fit half: {best:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
