"""Measured figures of this CPU for a simulator preset: read bandwidth and dense matmul peak."""

from __future__ import annotations

import torch

from kernels.bench import read_buffer, stream_read, time_round_robin


def _median_seconds(fn, repeats: int) -> float:
    """The benchmark's protocol (:func:`kernels.bench.time_round_robin`) for one candidate."""
    return time_round_robin({"fn": fn}, repeats, warmup=1)["fn"]


def read_bandwidth_gb_s(megabytes: int = 512, repeats: int = 5) -> float:
    """DRAM read bandwidth: a parallel streaming read of ``megabytes`` MB
    (:func:`kernels.bench.stream_read`, median of repeats)."""
    buffer = read_buffer(megabytes * 2**20)
    return buffer.nbytes / _median_seconds(lambda: stream_read(buffer), repeats) / 1e9


def matmul_gflops(size: int = 2048, repeats: int = 5) -> float:
    """Dense float32 peak as reached by torch.matmul (BLAS) on ``size``^3 (median of repeats)."""
    a = torch.randn(size, size)
    b = torch.randn(size, size)
    return 2 * size**3 / _median_seconds(lambda: torch.matmul(a, b), repeats) / 1e9
