"""Two versions of the CPU group kernels timed in one process, in interleaved rounds.

Run from the repository root:
    PYTHONPATH=. python scripts/simd_ab.py --base HEAD~1 --case 2:4/rank/float32 \
        --case 8:16/index/float16 [--shape 11008x4096] [--batch 1] [--rounds 9]

Cross-process benchmarks on a shared 2-core guest move by 20-40% from run to run (the read
bandwidth alone by 26-58 GB/s), more than most kernel changes. Here ``nm_kernels/simd_nm.py`` as
it is in ``--base`` (a git revision) and as it is in the working tree are both loaded, each
builds its kernel for the same compressed weight, their outputs are checked against each other,
and each round times the streaming read (``nm_kernels.bench.stream_read`` of a buffer the size
of the float32 weight) and then each version once; medians over the rounds, under the thread
pools ``nmsim bench kernels`` sets (``nmsim.cli.TIMING_ENVIRONMENT``); with ``--cold`` every
timed call (the read's too) follows ``nm_kernels.bench``'s cache eviction. Prints one line per case:
ms, GB/s of weight and metadata, and the fraction of the read bandwidth, old and new, and the
median and quartiles over the rounds of each round's new/old time.
"""

from __future__ import annotations

import os

from nmsim.cli import TIMING_ENVIRONMENT

for _name, _value in TIMING_ENVIRONMENT.items():  # before numpy and Numba load
    os.environ.setdefault(_name, _value)

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from compression import formats as F
from nm_kernels import bench, cpu

KERNEL_FILE = "nm_kernels/simd_nm.py"


def load_version(revision: str, folder: Path):
    """``simd_nm`` as it is at ``revision``, imported under its own module name."""
    shown = subprocess.run(["git", "show", f"{revision}:{KERNEL_FILE}"], check=False,
                           capture_output=True, text=True)
    if shown.returncode:
        raise SystemExit(f"simd_ab.py: error: --base {revision}: no {KERNEL_FILE} there "
                         f"({shown.stderr.strip().splitlines()[-1] if shown.stderr else 'git'})")
    source = shown.stdout
    name = "simd_nm_" + "".join(c if c.isalnum() else "_" for c in revision)
    path = folder / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="git revision of the old kernels")
    parser.add_argument("--case", action="append", required=True,
                        metavar="PATTERN/ENCODING/DTYPE", help="repeatable, e.g. 2:4/rank/float32")
    parser.add_argument("--shape", default="11008x4096", help="OUTxIN")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--cold", action="store_true", help="evict the caches before every "
                        "timed call, as nmsim bench kernels does (default: back to back)")
    args = parser.parse_args(argv)
    try:
        rows, cols = (int(v) for v in args.shape.split("x"))
        cases = [(F.Pattern.parse(p), e, d) for p, e, d in (c.split("/") for c in args.case)]
    except ValueError as error:
        parser.error(f"--shape OUTxIN and --case PATTERN/ENCODING/DTYPE: {error}")
    if min(rows, cols, args.batch, args.rounds) < 1:
        parser.error("--shape sides, --batch and --rounds must be at least 1")
    from nm_kernels import simd_nm as new

    rng = np.random.default_rng(0)
    buffer = bench.read_buffer(rows * cols * 4)
    bench.stream_read(buffer)
    eviction = bench.eviction_buffer() if args.cold else None

    def evict():
        if eviction is not None:
            bench.stream_read(eviction)

    with tempfile.TemporaryDirectory() as folder:
        versions = {"old": load_version(args.base, Path(folder)), "new": new}
        for case, (pattern, encoding, dtype) in zip(args.case, cases, strict=True):
            mask = F.nm_mask(rng.random((rows, cols)), pattern, "dense")
            weight = F.NMTensor.from_dense(rng.uniform(0.5, 1.5, (rows, cols)), mask, pattern,
                                           encoding, "dense", dtype)
            shape = (cols,) if args.batch == 1 else (cols, args.batch)
            x = rng.standard_normal(shape).astype(np.float32)
            plans = {}
            for name, module in versions.items():
                cpu.simd_nm = module  # prepare() builds its kernels from this module
                plans[name] = cpu.prepare(weight)
            cpu.simd_nm = new
            outputs = {name: plan(x).copy() for name, plan in plans.items()}
            if not np.allclose(outputs["old"], outputs["new"], rtol=1e-3, atol=1e-2):
                raise SystemExit(f"{case}: the two versions' outputs differ")
            for plan in plans.values():  # warm-up
                plan(x)
            times = {name: [] for name in plans}
            reads = []
            for _ in range(args.rounds):
                evict()
                start = time.perf_counter()
                bench.stream_read(buffer)
                reads.append(time.perf_counter() - start)
                for name, plan in plans.items():
                    evict()
                    start = time.perf_counter()
                    plan(x)
                    times[name].append(time.perf_counter() - start)
            read = buffer.nbytes / np.median(reads) / 1e9
            nbytes = weight.values.nbytes + weight.metadata.nbytes
            parts = [f"{name} {np.median(t) * 1e3:.2f} ms "
                     f"{nbytes / np.median(t) / 1e9:.1f} GB/s "
                     f"{nbytes / np.median(t) / 1e9 / read:.0%}" for name, t in times.items()]
            # each round's new/old time: a round times the two one after the other, so the
            # machine's drift between rounds cancels
            ratios = np.array(times["new"]) / np.array(times["old"])
            low, mid, high = np.percentile(ratios, [25, 50, 75])
            print(f"{case} {args.shape} batch {args.batch}: read {read:.1f} GB/s | "
                  + " | ".join(parts)
                  + f" | new/old per round {mid:.2f} ({low:.2f}-{high:.2f})", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
