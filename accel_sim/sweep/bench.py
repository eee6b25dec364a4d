"""Sweep benchmarks: wall time, peak memory (process tree) and store size of one sweep.

``python -m accel_sim.sweep.bench [--spec FILE | --points N] [--workers W] [--db PATH]``

Peak RSS is sampled every 50 ms over the whole process tree (the sweep process plus its pool
workers), summed, with psutil; the store size is the database file plus its WAL after the run.
``--points N`` builds a spec of about N points of the cheapest real workload (SmolLM2-135M decode,
batch 1, KV 128) by crossing array sizes, decoder counts, buffers and bandwidths on the
flexible-nm preset.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import threading
import time
from pathlib import Path

import psutil

from accel_sim.sweep.engine import run_spec
from accel_sim.sweep.spec import load_spec, parse_spec
from accel_sim.sweep.store import open_store


def cheap_spec(points: int) -> str:
    """YAML of at least ``points`` design points on the cheapest real workload."""
    axes = {"num_decoders": [4, 8, 16, 32, 64], "mux_style": ["full", "sorted"],
            "pattern": ["2:4", "4:8", "8:16", "16:32"],
            "dram_bandwidth_gb_s": [800, 1200, 1600, 2039, 2400, 3350],
            "weight_buffer_kib": [32, 64, 128, 256]}
    have = math.prod(len(v) for v in axes.values())
    rows = [8, 16, 24, 32, 40, 48, 56, 64, 72, 80, 88, 96, 104, 112, 120, 128]
    axes["array_rows"] = rows[:max(1, min(len(rows), math.ceil(points / have)))]
    body = "\n".join(f"  {k}: {json.dumps(v)}" for k, v in axes.items())
    return ("name: bench\nhardware: flexible-nm\nworkloads: [smollm2-135m]\n"
            "phases: {decode: {batch: 1, kv_len: 128}}\naxes:\n" + body + "\n")


class PeakRSS:
    """Samples the summed RSS of this process and its descendants in a background thread."""

    def __init__(self, interval_s: float = 0.05):
        self.interval_s = interval_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for proc in [me, *me.children(recursive=True)]:
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            time.sleep(self.interval_s)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", help="spec file (default: the embedded default spec)")
    parser.add_argument("--points", type=int, help="build a cheap spec of about N points")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--db", type=Path, help="results database (default: a fresh temp file)")
    args = parser.parse_args(argv)
    spec = parse_spec(cheap_spec(args.points), f"<{args.points}-point bench>") \
        if args.points else load_spec(args.spec)
    with tempfile.TemporaryDirectory() as tmp:
        db = args.db or Path(tmp) / "bench.sqlite"
        with PeakRSS() as rss, open_store(db) as store:
            stats = run_spec(spec, store, workers=args.workers, progress=True)
        size = sum(p.stat().st_size for p in db.parent.glob(db.name + "*"))
        record = {"spec": spec.source, "points": stats.total, "computed": stats.computed,
                  "errors": stats.errors, "engine": stats.engine, "wall_s": round(stats.wall_s, 2),
                  "points_per_s": round(stats.computed / stats.wall_s, 1),
                  "peak_rss_mib": round(rss.peak / 2**20, 1),
                  "store_mib": round(size / 2**20, 2)}
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
