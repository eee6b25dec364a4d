"""Measured figure of this CPU for a simulator preset: the dense matmul peak (the read bandwidth
comes from :func:`nm_kernels.bench.bench_kernels`, timed in the same rounds as the kernels)."""

from __future__ import annotations

import torch

from nm_kernels.bench import time_round_robin


def _median_seconds(fn, repeats: int) -> float:
    """The benchmark's protocol (:func:`nm_kernels.bench.time_round_robin`) for one candidate."""
    return time_round_robin({"fn": fn}, repeats, warmup=1)["fn"]


def matmul_gflops(size: int = 2048, repeats: int = 5) -> float:
    """Dense float32 peak as reached by torch.matmul (BLAS) on ``size``^3 (median of repeats)."""
    a = torch.randn(size, size)
    b = torch.randn(size, size)
    return 2 * size**3 / _median_seconds(lambda: torch.matmul(a, b), repeats) / 1e9
