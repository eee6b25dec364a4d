"""Measured figures of this CPU for a simulator preset: the dense matmul peak and one core's load
rate from its L1 data cache (the read bandwidth comes from :func:`nm_kernels.bench.bench_kernels`,
timed in the same rounds as the kernels)."""

from __future__ import annotations

import time

import numpy as np
import torch
from numba import njit

from nm_kernels.bench import time_round_robin


def _median_seconds(fn, repeats: int) -> float:
    """The benchmark's protocol (:func:`nm_kernels.bench.time_round_robin`) for one candidate."""
    return time_round_robin({"fn": fn}, repeats, warmup=1)["fn"]


def matmul_gflops(size: int = 2048, repeats: int = 5) -> float:
    """Dense float32 peak as reached by torch.matmul (BLAS) on ``size``^3 (median of repeats)."""
    a = torch.randn(size, size)
    b = torch.randn(size, size)
    return 2 * size**3 / _median_seconds(lambda: torch.matmul(a, b), repeats) / 1e9


# The load probe's array: 16 KiB of float32, half the 32 KiB L1 data cache of the Zen 1 and
# Zen 4 hosts (lscpu), and the bytes it sums per timed call (about 13 ms at 78 GB/s).
LOAD_PROBE_FLOATS = 4096
LOAD_PROBE_BYTES = 1 << 30


@njit(fastmath=True, cache=True)
def l1_sum(values, passes):
    """``passes`` sums of an L1-resident float32 array. With fastmath the compiler vectorises
    the sum over independent accumulators, so the load ports, not the adds' latency, bind it:
    32 bytes per cycle on the Zen 1 guest, its one 256-bit load per cycle
    (``scripts/vector_throughput.py``: ``vmovups ymm, m256`` 1.01 cycles)."""
    total = np.float32(0)
    for _ in range(passes):
        for i in range(values.shape[0]):
            total += values[i]
    return total


def core_load_gb_s(repeats: int = 5) -> float:
    """One core's load rate from its L1 data cache in GB/s: the fastest of ``repeats`` timed
    calls of :func:`l1_sum` on one thread (a port limit, so the best call is the figure, as in a
    throughput table; slower calls lost the core to something else). The
    Execution-Cache-Memory model's in-core load time of a kernel is its loaded bytes at this rate
    (:func:`nm_kernels.cpu.gemv_load_bytes`)."""
    values = np.ones(LOAD_PROBE_FLOATS, dtype=np.float32)
    passes = LOAD_PROBE_BYTES // values.nbytes
    l1_sum(values, 1)  # compile (or load from the cache) outside the timing
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        l1_sum(values, passes)
        best = min(best, time.perf_counter() - start)
    return passes * values.nbytes / best / 1e9
