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

Each set is also re-made with the overlap ``nmsim validate`` now takes, the
Execution-Cache-Memory one (``nmsim.commands.validate.ecm_sides``), which has no fitted
figure: a kernel's load instructions (``nm_kernels.cpu.gemv_load_bytes``) at the cores' L1 load
rate overlap its DRAM transfers only by the host's share (below). Records made since carry their load bytes and the rate
measured in the run; older ones get their load bytes from a weight of the same shape, pattern
and encoding (only its structure counts) on the recorded kernel path, and the
rate of their host: :data:`ZEN1_CORE_LOAD_GB_S` for the Zen 1 guest; the Zen 4 sets had
none measured and are re-made only at a rate given with ``--zen4-core-load-gb-s``. Each is
shown with the loads not overlapped at all (the model as published) and overlapped by the
share a load-bound streaming loop shows on the host (recorded since the runs that measure it;
:data:`ZEN1_LOAD_TRANSFER_OVERLAP` for older Zen 1 runs; ``--zen4-load-overlap``).
"""

from __future__ import annotations

import argparse
import json
import statistics
from functools import cache
from pathlib import Path

import numpy as np

from compression import formats as F
from nm_kernels.cpu import default_decoder, dense_gemv_load_bytes, gemv_load_bytes
from nmsim.commands.validate import _simulated_seconds, ecm_sides

COLD = Path("reports/kernels/cpu_validate_speed_cold.json")
ZEN1 = (Path("reports/kernels/zen1/validate_table.json"),
        Path("reports/kernels/zen1/validate_overlap.json"),
        Path("reports/kernels/zen1/validate_ecm.json"))
FIT_SETS = ("a666e29", "9854040")  # the first two cold sets on the Zen 4 guest
# One core's L1 load rate on the Zen 1 guest (GB/s): nm_kernels.hostperf.core_load_gb_s gave
# 76.0-78.5 there on 2026-12-05, as scripts/vector_throughput.py's one `vmovups ymm, m256` per
# cycle (1.01 cycles) at its 2.45-2.49 GHz does (32 bytes per cycle).
ZEN1_CORE_LOAD_GB_S = 77.0
# The share of a load-bound loop's L1 traffic the Zen 1 guest hides under its DRAM transfers:
# nm_kernels.hostperf.load_transfer_overlap there on 2026-12-05 (09:00-09:30 UTC, in and
# beside the validate runs of reports/kernels/zen1/validate_ecm.json).
ZEN1_LOAD_TRANSFER_OVERLAP = 0.27


def _runs(path: Path):
    """(set label, run's speedup records) of a committed validate report."""
    report = json.loads(path.read_text())
    for group in report["sets"]:
        for run in group["runs"]:
            yield f"{path.parent.name}/{path.name}:{group.get('commit', '?')}", run


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


@cache
def _load_bytes(shape: tuple, pattern: str, encoding: str, kernel: str) -> int:
    """The batch-1 load bytes of a float16 weight of ``shape`` on the recorded ``kernel``
    path, read by the default decoder (only the weight's structure counts, not its values)."""
    weight = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    p = F.Pattern.parse(pattern)
    tensor = F.NMTensor.from_dense(weight, F.nm_mask(np.abs(weight), p), p, encoding,
                                   dtype="float16")
    return gemv_load_bytes(tensor, kernel, default_decoder(p, encoding))


def ecm_errors(records: list[dict], core_load_gb_s: float | None,
               load_overlap: float | None = None) -> list[float] | None:
    """predicted / measured speedup - 1 of each record with the ECM overlap of each side, at
    the record's own load rate and load/transfer overlap or else ``core_load_gb_s`` and
    ``load_overlap``; None where either is unknown."""
    out = []
    for record in records:
        rate = record["host"].get("core_load_gb_s", core_load_gb_s)
        hidden = record["host"].get("load_transfer_overlap", load_overlap)
        if rate is None or hidden is None:
            return None
        rows, cols = record["shape"]
        loads = (record.get("load_bytes_dense", dense_gemv_load_bytes(rows, cols, 2)),
                 record.get("load_bytes_sparse") or _load_bytes(
                     tuple(record["shape"]), record["pattern"], record["encoding"],
                     record["kernel"]))
        dense, sparse, _, _ = ecm_sides(_inputs(record), loads, rate, hidden)
        out.append(dense["seconds"] / sparse["seconds"] / record["measured_speedup"] - 1)
    return out


def _without_load_overlap(record: dict) -> dict:
    """``record`` with no load/transfer overlap of its own (the ECM model as published)."""
    host = {k: v for k, v in record["host"].items() if k != "load_transfer_overlap"}
    return {**record, "host": host}


def _summary(errs: list[float]) -> str:
    return (f"median |error| {statistics.median(map(abs, errs)):5.1%}, median "
            f"{statistics.median(errs):+6.1%}, within 10% {sum(abs(e) <= 0.1 for e in errs)}"
            f"/{len(errs)}")


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
    parser.add_argument("--zen4-core-load-gb-s", type=float, default=None, metavar="GB_S",
                        help="re-make the Zen 4 sets with the ECM overlap at this L1 load "
                        "rate per core (none was measured there)")
    parser.add_argument("--zen4-load-overlap", type=float, default=None, metavar="SHARE",
                        help="and with this share of the loads hidden under the transfers "
                        "(none was measured there)")
    args = parser.parse_args(argv)
    if not 0 < args.step <= 1:
        parser.error(f"--step must be in (0, 1], got {args.step}")
    if args.zen4_core_load_gb_s is not None and not args.zen4_core_load_gb_s > 0:
        parser.error(f"--zen4-core-load-gb-s must be positive, got {args.zen4_core_load_gb_s}")
    if args.zen4_load_overlap is not None and not 0 <= args.zen4_load_overlap <= 1:
        parser.error(f"--zen4-load-overlap must be in [0, 1], got {args.zen4_load_overlap}")
    sets = data_sets()
    grid = [round(v, 6) for v in np.arange(1.0, -1e-9, -args.step)]
    table = {name: {eta: errors(records, eta) for eta in grid} for name, records in sets.items()}
    best = min(grid, key=lambda eta: statistics.median(map(abs, table["fit"][eta])))
    for name, by_eta in table.items():
        print(f"{name} ({len(sets[name])} predictions)")
        for eta, errs in by_eta.items():
            mark = "  <- best on the fit half" if eta == best else ""
            print(f"  overlap {eta:.2f}: {_summary(errs)}{mark}")
        zen1 = "zen1" in name
        rate = ZEN1_CORE_LOAD_GB_S if zen1 else args.zen4_core_load_gb_s
        hidden = ZEN1_LOAD_TRANSFER_OVERLAP if zen1 else args.zen4_load_overlap
        records = sets[name]
        rate_label = ("as recorded" if all("core_load_gb_s" in r["host"] for r in records)
                      else f"{rate} GB/s")
        strict = ecm_errors([_without_load_overlap(r) for r in records], rate, 0.0)
        measured = ecm_errors(records, rate, hidden)
        hidden_label = ("as recorded" if all("load_transfer_overlap" in r["host"]
                                             for r in records) else hidden)
        if strict is None:
            print("  ECM overlap: not re-made (no load rate for this host; "
                  "--zen4-core-load-gb-s)")
            continue
        print(f"  ECM, loads not overlapped (load rate {rate_label} per core): "
              f"{_summary(strict)}")
        if measured is not None:
            print(f"  ECM, loads overlapped by {hidden_label}: {_summary(measured)}")
    print(f"best overlap on the fit half: {best:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
