"""Measured figures of this CPU for a simulator preset: read bandwidth and dense matmul peak."""

from __future__ import annotations

import numpy as np
import torch
from numba import njit, prange

from kernels.bench import time_round_robin


@njit(parallel=True, cache=True)
def _parallel_sum(array):
    total = 0.0
    for i in prange(array.shape[0]):
        total += array[i]
    return total


def _median_seconds(fn, repeats: int) -> float:
    """The benchmark's protocol (:func:`kernels.bench.time_round_robin`) for one candidate."""
    return time_round_robin({"fn": fn}, repeats, warmup=1)["fn"]


def read_bandwidth_gb_s(megabytes: int = 512, repeats: int = 5) -> float:
    """DRAM read bandwidth: a parallel float32 sum over ``megabytes`` MB (median of repeats)."""
    array = np.ones(megabytes * 2**20 // 4, dtype=np.float32)
    return array.nbytes / _median_seconds(lambda: _parallel_sum(array), repeats) / 1e9


def matmul_gflops(size: int = 2048, repeats: int = 5) -> float:
    """Dense float32 peak as reached by torch.matmul (BLAS) on ``size``^3 (median of repeats)."""
    a = torch.randn(size, size)
    b = torch.randn(size, size)
    return 2 * size**3 / _median_seconds(lambda: torch.matmul(a, b), repeats) / 1e9
