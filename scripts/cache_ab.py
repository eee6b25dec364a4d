"""How much a back-to-back benchmark flatters a weight that partly fits the last-level cache.

Run from the repository root:
    PYTHONPATH=. python scripts/cache_ab.py [--shape 11008x4096] [--rounds 9] \
        [--case 2:4/index/float16 ...] [--read-mb 180 --read-mb 50 ...]

In one process and interleaved rounds, each candidate (the streaming read of buffers of the
given sizes, the Numba dense GEMV and the N:M GEMVs of the given cases, batch 1) is timed twice
per round: warm (one untimed call, then 5 timed back-to-back calls, as ``nmsim bench kernels
--warm-cache``) and cold (the same, with ``nm_kernels.bench``'s cache eviction before every
timed call, as ``nmsim bench kernels`` does by default). Prints the medians over rounds and
cold / warm, under the thread pools ``nmsim bench kernels`` sets.
"""

from __future__ import annotations

import os

from nmsim.cli import TIMING_ENVIRONMENT

for _name, _value in TIMING_ENVIRONMENT.items():  # before numpy and Numba load
    os.environ.setdefault(_name, _value)

import argparse
from functools import partial

import numpy as np

from compression import formats as F
from nm_kernels import bench
from nm_kernels.cpu import DensePlan, prepare
from nmsim.commands.bench import _parse_shape

DEFAULT_CASES = ("2:4/index/float32", "2:4/index/float16", "8:16/rank/float16")


def _candidates(shape, cases, read_mb) -> dict:
    weight = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    x = bench._activations(shape[1], 1, seed=1)
    candidates = {f"read {mb:g} MB": partial(bench.stream_read, bench.read_buffer(int(mb * 1e6)))
                  for mb in read_mb}
    for case in cases:
        pattern, encoding, dtype = case.split("/")
        dense_name = f"numba-dense {dtype}"
        if dense_name not in candidates:
            candidates[dense_name] = partial(DensePlan(weight.astype(F.value_dtype(dtype))), x)
        tensor = F.NMTensor.from_dense(weight, F.nm_mask(np.abs(weight), pattern), pattern,
                                       encoding, dtype=dtype)
        plan = prepare(tensor)
        candidates[f"{case} ({plan.nbytes / 1e6:.0f} MB)"] = partial(plan, x)
    return candidates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="11008x4096")
    parser.add_argument("--case", action="append", help="PATTERN/ENCODING/DTYPE (repeatable)")
    parser.add_argument("--read-mb", action="append", type=float,
                        help="streaming-read buffer size in MB (repeatable; default 180 90 50 40)")
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    candidates = _candidates(_parse_shape(args.shape), args.case or DEFAULT_CASES,
                             args.read_mb or (180, 90, 50, 40))
    evict = partial(bench.stream_read, bench.eviction_buffer())
    timed = {}
    for _ in range(args.rounds):
        for name, fn in candidates.items():
            for cold in (False, True):
                seconds = bench.time_round_robin({name: fn}, 1, 0, evict if cold else None)
                timed.setdefault((name, cold), []).append(seconds[name])
    print(f"{args.shape}, batch 1, median of {args.rounds} rounds, "
          f"{bench.last_level_cache_bytes() >> 20} MiB last-level cache")
    for name in candidates:
        warm, cold = (float(np.median(timed[(name, c)])) for c in (False, True))
        print(f"  {name:<32} warm {warm * 1e3:7.2f} ms  cold {cold * 1e3:7.2f} ms  "
              f"cold/warm {cold / warm:.2f}")


if __name__ == "__main__":
    main()
