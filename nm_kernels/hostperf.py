"""Measured figures of this CPU for a simulator preset: the dense matmul peak and one core's load
rate from its L1 data cache (the read bandwidth comes from :func:`nm_kernels.bench.bench_kernels`,
timed in the same rounds as the kernels)."""

from __future__ import annotations

import time

import numpy as np
import torch
from numba import njit, prange

from nm_kernels import bench


def _median_seconds(fn, repeats: int) -> float:
    """The benchmark's protocol (:func:`nm_kernels.bench.time_round_robin`) for one candidate."""
    return bench.time_round_robin({"fn": fn}, repeats, warmup=1)["fn"]


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


# The load/transfer overlap probe: rows of float32 streamed from DRAM, each element copied into
# a 4 KiB buffer and updated there OVERLAP_STEPS times (loads, stores and two arithmetic
# operations per element and step, all in L1: the loop is bound by its L1 traffic), against the
# same loop on OVERLAP_RESIDENT_ROWS rows that stay in L2 (384 KiB: the Zen 1 guest's L2 holds
# 512 KiB, Zen 4's 1 MiB) and the read of as many bytes, in the same rounds. Three steps put
# the loop near its ridge on the Zen 1 guest (compute/bytes 1.3-2.9 in its runs of 2026-12-05).
OVERLAP_CHUNK = 1024
OVERLAP_STEPS = 3
OVERLAP_ROW_FLOATS = 24 * OVERLAP_CHUNK  # 96 KiB rows
OVERLAP_RESIDENT_ROWS = 4


@njit(parallel=True, fastmath=True, cache=True)
def l1_stream(rows, steps, repeats):
    """The probe's loop over every row of ``rows`` (2-D float32, rows a multiple of
    OVERLAP_CHUNK long) ``repeats`` times, rows over the threads: each chunk of a row copied
    into an L1 buffer with one update, ``steps - 1`` more updates there
    (``v = v * v * 0.5 + 0.5``, which keeps 1.0 at 1.0), then summed; returns the sum."""
    count = rows.shape[0]
    total = np.float32(0)
    for job in prange(count * repeats):
        row = rows[job % count]
        chunk = np.empty(OVERLAP_CHUNK, dtype=np.float32)
        acc = np.float32(0)
        for start in range(0, row.shape[0], OVERLAP_CHUNK):
            for j in range(OVERLAP_CHUNK):
                v = row[start + j]
                chunk[j] = v * v * np.float32(0.5) + np.float32(0.5)
            for _ in range(steps - 1):
                for j in range(OVERLAP_CHUNK):
                    chunk[j] = chunk[j] * chunk[j] * np.float32(0.5) + np.float32(0.5)
            for j in range(OVERLAP_CHUNK):
                acc += chunk[j]
        total += acc
    return total


def load_transfer_overlap(nbytes: int, repeats: int) -> dict:
    """The share of a loop's L1 loads and stores that this host overlaps with its DRAM
    transfers: ``overlap`` = (resident + read - streamed) / resident, the median over
    ``repeats`` rounds of :func:`l1_stream` on at least ``nbytes`` streamed cold, its
    L2-resident twin (the same work) and a streaming read of as many bytes, with that
    figure's quartiles and the loop's ``compute_to_bytes`` (resident / read). It inverts
    the Execution-Cache-Memory time of a loop whose in-core time is its loads,
    ``streamed = max(resident, (1 - overlap) x resident + read)`` (Treibig and Hager 2010
    take 0: the loads add to the transfers; 1 is the roofline). Clipped to [0, 1]."""
    row_bytes = OVERLAP_ROW_FLOATS * 4
    count = max(1, -(-nbytes // (row_bytes * OVERLAP_RESIDENT_ROWS))) * OVERLAP_RESIDENT_ROWS
    streamed = np.ones((count, OVERLAP_ROW_FLOATS), dtype=np.float32)
    resident = np.ones((OVERLAP_RESIDENT_ROWS, OVERLAP_ROW_FLOATS), dtype=np.float32)
    words = bench.read_buffer(streamed.nbytes)
    evict_buffer = bench.eviction_buffer()
    rounds = bench.time_rounds(
        {"streamed": lambda: l1_stream(streamed, OVERLAP_STEPS, 1),
         "read": lambda: bench.stream_read(words),
         "resident": lambda: l1_stream(resident, OVERLAP_STEPS,
                                       count // OVERLAP_RESIDENT_ROWS)},
        repeats, 1, evict=lambda: bench.stream_read(evict_buffer), warm=("resident",))
    full, read, warm = (np.array(rounds[name]) for name in ("streamed", "read", "resident"))
    per_round = (warm + read - full) / warm
    low, middle, high = np.percentile(per_round, [25, 50, 75])
    return {"overlap": float(np.clip(middle, 0.0, 1.0)),
            "overlap_quartiles": [float(low), float(high)],
            "compute_to_bytes": float(np.median(warm / read)), "bytes": streamed.nbytes,
            "steps": OVERLAP_STEPS, "repeats": repeats}
