"""`nmsim bench kernels`: N:M Numba kernels against the best dense baseline on LLaMa-2-7B shapes.

For every (shape, dtype, batch) group, the dense baselines (Numba dense, torch.matmul, numpy for
float32) and every sparse variant (pattern x encoding) are timed in the same rounds - warm-up
rounds first, then ``repeats`` rounds, each giving every candidate an untimed call and
:data:`CALLS_PER_ROUND` timed ones (:func:`time_round_robin`) - so machine noise hits them alike;
each time is the median over rounds of the per-round median. The speedup and the share of the
read bandwidth are the medians over the rounds of each round's figure, the kernel, the best
dense baseline and the read of one round paired (a host that drifts between rounds then
moves both sides of a ratio alike; the ratio of two series' medians, used until 2026-12-05,
can take its numerator and denominator from rounds far apart: 1.31 where the paired
quartiles were 1.01-1.17). They and GB/s come with their quartiles over the rounds
(``speedup_quartiles``, ``fraction_of_read_bandwidth_quartiles``, ``gb_s_quartiles``; the
times per round in ``rounds_s``), which say how far a figure moved with the machine in this
run: on a shared host two kernels whose quartiles overlap are not told apart by it. The bytes
bound is dense weight bytes / compressed weight bytes (kept values + metadata with row padding
+ dense tail): what a purely memory-bound kernel could gain. ``fraction_of_bound`` = speedup /
bound.

The same rounds also time a parallel streaming read of a buffer the size of the dense weight
(:func:`stream_read`, the same Numba threads): the machine's own read bandwidth in this run;
and a compute-bound loop on one thread and on all of them (:func:`compute_probe`):
``thread_scaling``, the throughput all threads reach over one thread's, about the thread count
where each thread has a core to itself and less where threads share one core's units (on the
Zen 1 KVM guest it moved between 1.0 and 2.0 from minute to minute, as the host placed its two
vCPUs on one core or two).
Each kernel's ``gb_s`` (weight + activation + output bytes per second) is reported as a
``fraction_of_read_bandwidth``, so a kernel is judged against the memory system, not against
whichever dense library happens to stream fastest. Batched groups (batch > 1) also time a
float32 ``torch.matmul`` of :data:`PEAK_MATMUL_SIZE` cubed, the FLOP roof, and say which roof
binds each kernel (``roofline``: ``"bytes"`` or ``"flops"``).

Every full-size call (kernels, dense baselines, the read; not the FLOP roof's matmul, nor the
cache-resident slices below) starts with cold caches: an untimed
streaming read of :data:`EVICT_CACHE_MULTIPLE` times the last-level cache runs before it
(``cache: "cold"``). Timed back to back instead (``cold_cache=False``, ``cache: "warm"``), a
compressed weight not much larger than the last-level cache is partly read from it again on the
next call, which no decode step of a real model, streaming every layer in turn, gets: on the
32 MiB-L3 host a 50 MB read takes 1.17-1.30x as long cold as warm, while a 90 MB one (the
dense float16 weight of 11008x4096) takes as long either way.

With ``resident_bytes`` the same rounds also time every kernel and dense baseline on the first
rows of the weight, as many as fit ``resident_bytes`` of dense values (a slice that stays in
cache between calls): the rate at which each kernel retires kept values when DRAM does not bind
(its decode, gather and multiply-add instructions; on ``resident_threads`` threads, by default
one: the rate of one core), a measurement independent of the full-size speedup
(``resident_s``, ``resident_values_per_s``, ``dense_resident_values_per_s``). Each timed call repeats the slice product up to the work of
one full-size call, so every product pays the kernel's fixed per-call cost (dispatch, waking the
thread pool: under Numba's workqueue layer a third of a 4 MiB product on the 2-core host). The
same number of products of a slice 32 times smaller, timed the same way, is mostly that cost:
each candidate's time is fitted as ``calls * (overhead + values / rate)`` through both slices
(``resident_call_overhead_s``), and the rate is what the full-size call, which pays the
overhead once, runs at.

Batch-1 records also carry the bytes each call's load instructions read (``load_bytes_sparse``,
``load_bytes_dense``: weight, the x each step loads, table entries; from any cache or memory),
the in-core loads of ``nmsim validate``'s Execution-Cache-Memory overlap.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from functools import cache, partial
from pathlib import Path

import numba
import numpy as np
import pandas as pd
import torch
from numba import njit, prange
from tqdm import tqdm

from compression import formats as F
from compression import markdown
from nm_kernels.cpu import DensePlan, dense_gemv_load_bytes, prepare
from nm_kernels.numba_nm import check_thread_count, threads
from workloads.files import staged_file

LLAMA2_7B_SHAPES = ((4096, 4096), (11008, 4096), (4096, 11008))
PATTERNS = ("2:4", "4:8", "8:16", "16:32")
ENCODINGS = ("rank", "index")
BATCHES = (1, 8, 64)
DTYPES = ("float32", "float16")
_TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def set_threads(count: int) -> None:
    """Use ``count`` threads in the Numba kernels and in torch's dense baseline."""
    if not 1 <= count <= numba.config.NUMBA_NUM_THREADS:
        raise ValueError(f"--threads must be in 1..{numba.config.NUMBA_NUM_THREADS}, got {count}")
    numba.set_num_threads(count)
    torch.set_num_threads(count)


def thread_pool_settings() -> dict:
    """How the thread pools behaved while timing (see ``nmsim.cli.TIMING_ENVIRONMENT``)."""
    return {"numba_threading_layer": numba.threading_layer(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset"),
            "openblas_thread_timeout": os.environ.get("OPENBLAS_THREAD_TIMEOUT", "unset")}


def _dense_baselines(weight: np.ndarray, dtype: str, batch: int) -> dict[str, Callable]:
    """Dense ``W @ x`` candidates in ``dtype``; each returns its output (float32 x for numba)."""
    typed = weight.astype(F.value_dtype(dtype))
    numba_dense = DensePlan(typed)
    x32 = _activations(weight.shape[1], batch, seed=1)
    w_torch = torch.from_numpy(typed.view(np.uint16)).view(_TORCH_DTYPES[dtype]) \
        if dtype == "bfloat16" else torch.from_numpy(typed)
    x_torch = torch.from_numpy(x32).to(_TORCH_DTYPES[dtype])
    candidates = {
        "numba-dense": partial(numba_dense, x32),
        "torch.matmul": partial(torch.matmul, w_torch, x_torch),
    }
    if dtype == "float32":
        candidates["numpy"] = partial(np.matmul, typed, x32)
    return candidates


# Side of the float32 torch.matmul whose rate is the FLOP roof of batched groups (measured on
# this 2-core host: 1024 reaches the same GFLOP/s as 2048 in an eighth of the time).
PEAK_MATMUL_SIZE = 1024


@njit(parallel=True, cache=True)
def stream_read(words):
    """Sum of a uint64 buffer as one ``prange`` reduction: a pure streaming read (integer adds
    vectorise without fastmath, so the loads, not the adds, bound it).

    An earlier form summed 256 KiB chunks in an inner ``range`` loop; on an AVX-512 Zen 4
    guest it read 7.8-8.3 GB/s (its loop is vectorised too; the cause was not found) where
    this form reads 25-33 GB/s and numpy's dense GEMV streamed 28 GB/s in the same run, so
    every kernel showed about 200% "of read" and the host preset ran at a third of the
    machine's bandwidth."""
    total = np.uint64(0)
    for i in prange(words.shape[0]):
        total += words[i]
    return total


# Floats each job of the compute probe updates per pass (512 B, held in L1: the probe is bound
# by a core's own vector and load/store units, never by a cache level or memory that two cores
# share), and its passes per call (10-20 ms on one thread of the Zen 1 guest). Both probe
# calls run in every (shape, dtype, batch) group: about 1.5 s per group there.
PROBE_LANES = 128
PROBE_PASSES = 1_000_000


@njit(parallel=True, fastmath=True, cache=True)
def compute_probe(jobs, passes):
    """``jobs`` independent jobs over the thread pool, each ``passes`` multiply-adds of every
    float of its own L1-resident array; a checksum comes back so that nothing is optimised
    away. One job on one thread against one job per thread on all threads, timed in the same
    rounds, gives ``thread_scaling``."""
    sums = np.zeros(jobs)
    for job in prange(jobs):
        lanes = np.full(PROBE_LANES, np.float32(job + 1))
        for _ in range(passes):
            for j in range(PROBE_LANES):
                lanes[j] = lanes[j] * np.float32(0.999999) + np.float32(1e-6)
        sums[job] = lanes.sum()
    return sums.sum()


def read_buffer(nbytes: int) -> np.ndarray:
    """A written (so backed by real pages) uint64 buffer of at least ``nbytes``."""
    return np.ones(-(-nbytes // 8), dtype=np.uint64)


def _activations(cols: int, batch: int, seed: int) -> np.ndarray:
    """float32 activations, ``[in]`` for batch 1 and ``[in, batch]`` otherwise, never zero."""
    rng = np.random.default_rng(seed)
    shape = (cols,) if batch == 1 else (cols, batch)
    return (rng.uniform(0.5, 1.5, shape) * rng.choice([-1.0, 1.0], shape)).astype(np.float32)


# Timed calls per candidate per round, after one untimed call.
CALLS_PER_ROUND = 5

# The eviction buffer is this many times the last-level cache: one streaming read of it leaves
# none of the previous call's lines there (measured on the 2-core Zen 4 guest, 32 MiB L3: after a
# read of 96 MB, 40-180 MB buffers all stream at 33-34 GB/s; back to back, a 50 MB buffer
# streams at 38-43 GB/s and a 40 MB one at 46-53, the L3 keeping part of it between calls).
EVICT_CACHE_MULTIPLE = 3


# Linux lists CPU 0's caches here, one ``index*`` folder each (``level``, ``type``, ``size``).
CPU_CACHE_FOLDER = Path("/sys/devices/system/cpu/cpu0/cache")
FALLBACK_CACHE_BYTES = 32 << 20


def _cache_size_bytes(text: str) -> int:
    """Bytes of a sysfs cache size such as ``8192K``, ``32M`` or ``65536``."""
    text = text.strip()
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:].upper(), 1)
    return int(text[:-1] if scale > 1 else text) * scale


def last_level_cache_bytes(folder: Path = CPU_CACHE_FOLDER) -> int:
    """The largest data or unified CPU cache Linux lists for CPU 0 (the L3 on x86), else the
    largest glibc reports through ``os.sysconf`` where this Python exposes its names, else
    :data:`FALLBACK_CACHE_BYTES`.

    sysfs comes first because some Python builds expose no ``SC_LEVEL*_CACHE_SIZE`` names (the
    pyenv 3.11.7 of these hosts has none), which left every host at the fallback: right for
    the 32 MiB-L3 Zen 4 guest, 4x too much for the 8 MiB-L3 Zen 1 one, and too little for any
    host with a larger L3, whose "cold" calls would then have been partly warm."""
    sizes = []
    for index in folder.glob("index*"):
        try:
            if (index / "type").read_text().strip() != "Instruction":
                sizes.append(_cache_size_bytes((index / "size").read_text()))
        except (OSError, ValueError):
            continue
    if not sizes:
        sizes = [os.sysconf(name) for name in ("SC_LEVEL3_CACHE_SIZE", "SC_LEVEL2_CACHE_SIZE")
                 if name in os.sysconf_names]
    return max([size for size in sizes if size > 0], default=FALLBACK_CACHE_BYTES)


def eviction_buffer() -> np.ndarray:
    """A buffer :data:`EVICT_CACHE_MULTIPLE` times the last-level cache: :func:`stream_read` of
    it leaves the caches holding none of what ran before."""
    return read_buffer(EVICT_CACHE_MULTIPLE * last_level_cache_bytes())


def time_round_robin(candidates: dict, repeats: int, warmup: int,
                     evict: Callable[[], object] | None = None, warm: Iterable = ()) -> dict:
    """Median seconds per call of each candidate over the rounds of :func:`time_rounds`."""
    rounds = time_rounds(candidates, repeats, warmup, evict, warm)
    return {name: float(np.median(times)) for name, times in rounds.items()}


def time_rounds(candidates: dict, repeats: int, warmup: int,
                evict: Callable[[], object] | None = None, warm: Iterable = ()) -> dict:
    """Seconds per call of each candidate in each of ``repeats`` rounds (a list per name,
    in round order, so that two candidates' figures of one round can be paired).

    Each round gives every candidate in turn one untimed call and then :data:`CALLS_PER_ROUND`
    timed back-to-back calls, whose median is its figure for the round. The untimed
    call matters: numpy's OpenBLAS, torch's OpenMP and Numba each keep a thread pool whose
    workers spin for a while after a call, and on 2 cores the previous candidate's spinning
    workers slowed the first call of the next one by up to 2x (measured: a Numba N:M GEMV alone
    took 3.7 ms, strictly alternated with numpy and torch 7-10 ms). Rounds still interleave the
    candidates, so machine noise hits them alike.

    With ``evict``, it runs untimed before every timed call of each candidate not in ``warm``,
    so that call starts with cold caches, as a layer's weights do when a model's decode step
    streams all of them (back to back, a weight not much larger than the last-level cache is
    partly re-read from it).
    """
    warm = set(warm)
    samples = {name: [] for name in candidates}
    for round_index in range(warmup + repeats):
        for name, fn in candidates.items():
            fn()
            cold = evict is not None and name not in warm
            times = []
            for _ in range(CALLS_PER_ROUND):
                if cold:
                    evict()
                start = time.perf_counter()
                fn()
                times.append(time.perf_counter() - start)
            if round_index >= warmup:
                samples[name].append(float(np.median(times)))
    return samples


def bench_kernels(shapes: Iterable[tuple[int, int]] = LLAMA2_7B_SHAPES,
                  patterns: Iterable[str] = PATTERNS, encodings: Iterable[str] = ENCODINGS,
                  batches: Iterable[int] = BATCHES, dtypes: Iterable[str] = DTYPES,
                  repeats: int = 7, warmup: int = 2, seed: int = 0,
                  progress: bool = True, simd: Iterable[str] = ("auto",),
                  resident_bytes: int = 0, cold_cache: bool = True,
                  resident_threads: int = 1) -> list[dict]:
    """One record per (shape, pattern, encoding, batch, dtype) and per distinct kernel the
    ``simd`` caps select at that batch (``nm_kernels.cpu.prepare``: ``gemv_path`` at batch 1,
    ``gemm_path`` above); see the module docstring (``resident_bytes``: the cache-resident
    slice timed beside each kernel, 0 times none; ``resident_threads``: the threads it runs
    on; ``cold_cache``: evict the caches before every full-size call)."""
    patterns = [F.Pattern.parse(p) for p in patterns]
    encodings = [F.check_encoding(e) for e in encodings]
    dtypes = [str(F.value_dtype_name(F.value_dtype(d))) for d in dtypes]
    batches = [int(b) for b in batches]
    simd = list(dict.fromkeys(simd))
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats} and {warmup}")
    if any(b < 1 for b in batches):
        raise ValueError(f"batch sizes must be >= 1, got {batches}")
    check_thread_count(resident_threads, "resident_threads")
    groups = [(s, d, b) for s in shapes for d in dtypes for b in batches]
    evict_buffer = eviction_buffer() if cold_cache else read_buffer(0)
    evict = partial(stream_read, evict_buffer) if cold_cache else None
    records = []
    bar = tqdm(total=len(groups), desc="bench kernels", disable=not progress, unit="group")
    for shape in shapes:
        weight = np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)
        masks = {p: F.nm_mask(np.abs(weight), p) for p in patterns}
        for dtype in dtypes:
            plans = _plans(weight, masks, encodings, dtype, simd)
            dense_bytes = weight.size * F.value_dtype(dtype).itemsize
            slices = _resident_slices(shape, dtype, resident_bytes)
            resident_plans = {rows: _plans(weight[:rows], {p: m[:rows] for p, m in masks.items()},
                                           encodings, dtype, simd) for rows in slices}
            buffer = read_buffer(dense_bytes)
            for batch in batches:
                x = _activations(shape[1], batch, seed=1)
                dense = _dense_baselines(weight, dtype, batch)
                timed = {}  # one plan per (pattern, encoding, kernel run at this batch)
                for pattern, encoding, plan in plans:
                    path = plan.gemv_path if batch == 1 else plan.gemm_path
                    timed.setdefault((pattern, encoding, path), plan)
                sparse = {key: partial(plan, x) for key, plan in timed.items()}
                resident = {key: fn for rows, plans_of_slice in resident_plans.items()
                            for key, fn in _resident_candidates(
                                weight[:rows], plans_of_slice, dtype, batch, x,
                                -(-shape[0] // slices[0]), resident_threads).items()}
                roofs = {"read": partial(stream_read, buffer),
                         "compute-1": partial(_on_threads, partial(compute_probe, 1,
                                                                   PROBE_PASSES), 1, 1),
                         "compute-all": partial(compute_probe, threads(), PROBE_PASSES)}
                if batch > 1:
                    roofs["matmul"] = partial(torch.matmul, *_peak_operands())
                # the FLOP roof and the cache-resident slices measure what runs when memory
                # does not bind: those stay warm
                rounds = time_rounds({**roofs, **dense, **sparse, **resident}, repeats,
                                     warmup, evict,
                                     warm=[*resident, "matmul", "compute-1", "compute-all"])
                medians = {name: float(np.median(times)) for name, times in rounds.items()}
                group = _GroupFigures(shape, dtype, batch, dense_bytes, medians, dense,
                                      buffer.nbytes, slices, evict_buffer.nbytes,
                                      resident_threads, rounds)
                records += [group.record(pattern, encoding, path, plan, repeats, warmup)
                            for (pattern, encoding, path), plan in timed.items()]
                bar.update()
    bar.close()
    return records


def _plans(weight, masks, encodings, dtype, simd) -> list[tuple]:
    """(pattern, encoding, plan) of every pattern in ``masks`` x encoding x SIMD cap."""
    return [(str(p), e, prepare(F.NMTensor.from_dense(weight, mask, p, e, dtype=dtype),
                                simd=cap))
            for p, mask in masks.items() for e in encodings for cap in simd]


def _resident_slices(shape, dtype: str, resident_bytes: int) -> tuple[int, ...]:
    """Rows of the two cache-resident slices, largest first: as many rows of dense values as
    fit ``resident_bytes`` (a multiple of 16, at least 16, at most the weight's rows) and
    1/32 as many (a multiple of 8, at least 8; only the first when the weight is too short for
    two); none when ``resident_bytes`` is 0."""
    if resident_bytes <= 0:
        return ()
    per_row = shape[1] * F.value_dtype(dtype).itemsize
    rows = min(shape[0], max(16, resident_bytes // per_row // 16 * 16))
    small = max(8, rows // 32 // 8 * 8)
    return (rows, small) if small < rows else (rows,)


def _resident_candidates(weight, plans, dtype: str, batch: int, x, calls: int,
                         thread_count: int = 1) -> dict:
    """The dense baselines and each plan's kernel on a cache-resident slice, keyed
    ``("resident", rows, name)`` and ``("resident", rows, pattern, encoding, path)``, on
    ``thread_count`` threads.

    One thread gives the rate of one core without the cost of waking a second thread for each
    small call (on a loaded machine a parallel region waits until both threads get a core, and
    the slice's short calls paid that wait 22 times where the full-size call paid it once).
    All of the GEMV's threads give the rate they reach together, which is not the one-thread
    rate times the threads where threads share a core's execution units (see
    ``nmsim validate --resident-threads``).
    Each timed call runs ``calls`` products back to back, as much work as one full-size call,
    so that a resident and a full-size call are as likely to lose the core to another process.
    """
    if not plans:
        return {}
    dense = {("resident", len(weight), name): partial(_on_threads, fn, calls, thread_count)
             for name, fn in _dense_baselines(weight, dtype, batch).items()}
    kernels = {("resident", len(weight), pattern, encoding,
                plan.gemv_path if batch == 1 else plan.gemm_path):
               partial(_on_threads, partial(plan, x), calls, thread_count)
               for pattern, encoding, plan in plans}
    return {**dense, **kernels}


def _on_threads(fn: Callable, calls: int, count: int) -> None:
    """``calls`` calls of ``fn`` with the Numba and torch pools at ``count`` threads."""
    numba_threads, torch_threads = numba.get_num_threads(), torch.get_num_threads()
    numba.set_num_threads(count)
    torch.set_num_threads(count)
    try:
        for _ in range(calls):
            fn()
    finally:
        numba.set_num_threads(numba_threads)
        torch.set_num_threads(torch_threads)


@cache
def _peak_operands() -> tuple:
    rng = torch.Generator().manual_seed(0)
    return tuple(torch.randn(PEAK_MATMUL_SIZE, PEAK_MATMUL_SIZE, generator=rng)
                 for _ in range(2))


class _GroupFigures:
    """The roofs and dense baselines of one (shape, dtype, batch) group, and its records."""

    def __init__(self, shape, dtype, batch, dense_bytes, medians, dense, read_bytes,
                 resident_rows=(), evict_bytes=0, resident_threads=1, rounds=None):
        self.resident_threads = resident_threads
        self.rounds = rounds or {}
        self.read_bytes = read_bytes
        self.shape, self.dtype, self.batch, self.dense_bytes = shape, dtype, batch, dense_bytes
        self.evict_bytes = evict_bytes
        self.resident_rows = resident_rows
        self.medians = medians
        self.dense_names = list(dense)
        self.best = min(dense, key=medians.get)
        self.read_gb_s = read_bytes / medians["read"] / 1e9
        # all threads' compute throughput over one thread's (one probe job per thread)
        self.thread_scaling = threads() * medians["compute-1"] / medians["compute-all"]
        self.peak_gflops = (2 * PEAK_MATMUL_SIZE**3 / medians["matmul"] / 1e9
                            if "matmul" in medians else None)
        self.io_bytes = 4 * (shape[0] + shape[1]) * batch  # float32 activations in, out

    def _roofline(self, weight_bytes: int, density: float) -> dict:
        """Time at the read bandwidth vs at the matmul FLOP rate (multiply-adds kept only)."""
        bytes_s = (weight_bytes + self.io_bytes) / (self.read_gb_s * 1e9)
        if self.peak_gflops is None:
            return {"roofline": "bytes", "roofline_s": bytes_s}
        flops_s = 2 * self.shape[0] * self.shape[1] * density * self.batch / (
            self.peak_gflops * 1e9)
        return {"roofline": "bytes" if bytes_s >= flops_s else "flops",
                "roofline_s": max(bytes_s, flops_s), "peak_gflops": self.peak_gflops}

    def _fit(self, key: tuple, density: float) -> tuple[float, float, float, float]:
        """(values per second, seconds per product, seconds of the large and of the small
        slice's timed call) of one candidate, fitted through both slices (the same number of
        products each) as ``calls * (overhead + values / rate)``. One slice, or a noisy pair
        that gives a negative overhead or rate, falls back to the large slice with no overhead
        (the rate then includes it, erring slow)."""
        rows_a, rows_b = (*self.resident_rows, self.resident_rows[0])[:2]
        values_per_row = self.shape[1] * self.batch * density
        calls = -(-self.shape[0] // rows_a)
        t_a, t_b = (self.medians[("resident", r, *key)] for r in (rows_a, rows_b))
        per_value = overhead = -1.0
        if rows_b != rows_a:  # two products, two unknowns
            per_value = (t_a - t_b) / (calls * values_per_row * (rows_a - rows_b))
            overhead = t_b / calls - rows_b * values_per_row * per_value
        if per_value <= 0 or overhead < 0:
            per_value, overhead = t_a / (calls * rows_a * values_per_row), 0.0
        return 1 / per_value, overhead, t_a, t_b

    def _resident(self, pattern, encoding, path) -> dict:
        """Multiply-adds per second of ``resident_threads`` threads on a cache-resident slice
        with the per-call cost fitted out: the kernel's (kept values) and the fastest dense
        baseline's (all values); empty without slices."""
        if not self.resident_rows:
            return {}
        rate, overhead, resident_s, small_s = self._fit((pattern, encoding, path),
                                                        F.Pattern.parse(pattern).density)
        dense_fits = {name: self._fit((name,), 1.0) for name in self.dense_names}
        best = max(dense_fits, key=lambda name: dense_fits[name][0])
        return {"resident_rows": self.resident_rows[0], "resident_threads": self.resident_threads,
                "resident_rows_small": self.resident_rows[-1],
                "resident_calls": -(-self.shape[0] // self.resident_rows[0]),
                "resident_s": resident_s, "resident_small_s": small_s,
                "resident_values_per_s": rate,
                "resident_call_overhead_s": overhead,
                "resident_dense_all_s": {name: fit[2] for name, fit in dense_fits.items()},
                "resident_dense_baseline": best,
                "dense_resident_values_per_s": dense_fits[best][0],
                "dense_resident_call_overhead_s": dense_fits[best][1]}

    def _paired(self, key, figure: Callable[[float, float, float], float],
                unpaired: float) -> tuple[float, list]:
        """(median, [25th, 75th] percentile) over the rounds of ``figure(sparse_s, dense_s,
        read_s)``, each round's three times paired (the best dense baseline's);
        (``unpaired``, []) without rounds."""
        names = (key, self.best, "read")
        if not all(name in self.rounds for name in names):
            return unpaired, []
        per_round = [figure(*times) for times in zip(*(self.rounds[n] for n in names),
                                                     strict=True)]
        low, middle, high = np.percentile(per_round, [25, 50, 75])
        return float(middle), [float(low), float(high)]

    def _round_times(self, key) -> dict:
        """Each round's seconds of the kernel, the best dense baseline and the read, in round
        order ({} without rounds)."""
        names = {"sparse": key, "dense": self.best, "read": "read"}
        if not all(name in self.rounds for name in names.values()):
            return {}
        return {label: list(self.rounds[name]) for label, name in names.items()}

    def _load_bytes(self, plan) -> dict:
        """At batch 1, the bytes the kernel's and the dense GEMV's loads read per call
        (:func:`nm_kernels.cpu.gemv_load_bytes`; dense: every row its values and all of x)."""
        if self.batch != 1:
            return {}
        return {"load_bytes_sparse": plan.gemv_load_bytes,
                "load_bytes_dense": dense_gemv_load_bytes(
                    *self.shape, F.value_dtype(self.dtype).itemsize)}

    def record(self, pattern, encoding, path, plan, repeats, warmup) -> dict:
        key = (pattern, encoding, path)
        sparse_s = self.medians[key]
        dense_s = self.medians[self.best]
        kernel_bytes = plan.nbytes + self.io_bytes
        gb_s = kernel_bytes / sparse_s / 1e9
        speedup, speedup_quartiles = self._paired(
            key, lambda sparse, dense, read: dense / sparse, dense_s / sparse_s)
        fraction, fraction_quartiles = self._paired(
            key, lambda sparse, dense, read: kernel_bytes / sparse / (self.read_bytes / read),
            gb_s / self.read_gb_s)
        _, gb_s_quartiles = self._paired(
            key, lambda sparse, dense, read: kernel_bytes / sparse / 1e9, gb_s)
        bound = self.dense_bytes / plan.nbytes
        dense_gb_s = {name: (self.dense_bytes + self.io_bytes) / self.medians[name] / 1e9
                      for name in self.dense_names}
        density = F.Pattern.parse(pattern).density
        roof = self._roofline(plan.nbytes, density)
        dense_roof = self._roofline(self.dense_bytes, 1.0)
        return {
            "shape": list(self.shape), "pattern": pattern, "encoding": encoding,
            "decoder": plan.decoder, "kernel": path, "batch": self.batch, "dtype": self.dtype,
            "dense_s": dense_s, "dense_baseline": self.best,
            "dense_all_s": {name: self.medians[name] for name in self.dense_names},
            "sparse_s": sparse_s, "rounds_s": self._round_times(key),
            "speedup": speedup, "speedup_quartiles": speedup_quartiles, "bound": bound,
            "fraction_of_bound": speedup / bound,
            "gb_s": gb_s, "gb_s_quartiles": gb_s_quartiles,
            "read_bandwidth_gb_s": self.read_gb_s,
            "fraction_of_read_bandwidth": fraction,
            "fraction_of_read_bandwidth_quartiles": fraction_quartiles,
            "dense_gb_s": dense_gb_s[self.best], "dense_all_gb_s": dense_gb_s,
            **roof, "fraction_of_roofline": roof["roofline_s"] / sparse_s,
            "dense_roofline": dense_roof["roofline"], **self._resident(pattern, encoding, path),
            "roofline_speedup": dense_roof["roofline_s"] / roof["roofline_s"],
            "weight_bytes_dense": self.dense_bytes, "weight_bytes_sparse": plan.nbytes,
            **self._load_bytes(plan),
            "repeats": repeats, "warmup": warmup, "calls": CALLS_PER_ROUND,
            "cache": "cold" if self.evict_bytes else "warm", "evict_bytes": self.evict_bytes,
            "threads": threads(), "torch_threads": torch.get_num_threads(),
            "thread_scaling": self.thread_scaling,
            **thread_pool_settings(),
        }


def bench_rank_decoders(shape=(11008, 4096), patterns=("2:4", "8:16"), repeats: int = 7,
                        warmup: int = 2, seed: int = 0) -> list[dict]:
    """GEMV time of the rank LUT vs the unranking decoder (float32, batch 1), round-robin."""
    weight = np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)
    x = _activations(shape[1], 1, seed=1)
    candidates = {}
    for p in patterns:
        tensor = F.NMTensor.from_dense(weight, F.nm_mask(np.abs(weight), p), p, "rank",
                                       dtype="float32")
        for decoder in ("rank_rom", "rank_pipeline"):
            candidates[(p, decoder)] = partial(prepare(tensor, decoder), x)
    medians = time_round_robin(candidates, repeats, warmup)
    return [{"shape": list(shape), "pattern": p, "decoder": d, "seconds": s, "repeats": repeats}
            for (p, d), s in medians.items()]


def with_quartiles(value: float, quartiles, form: str, sep: str = "-") -> str:
    """``value`` in ``form``, followed by its quartiles over the rounds where there are two:
    ``72% (68-75%)``; ``sep`` ``..`` for signed figures: ``-6% (-12..+3%)``."""
    text = form.format(value)
    if quartiles is not None and len(quartiles) == 2:
        low, high = (form.format(q) for q in quartiles)
        text += f" ({low.rstrip('%')}{sep}{high})"
    return text


def markdown_table(records: list[dict]) -> str:
    """The records as a Markdown table (times in ms; GB/s also as a share of the read
    bandwidth measured in the same rounds; that share and the speedup with their quartiles
    over the rounds; the threads' compute throughput over one thread's, same rounds; caches
    cold or warm at each timed call)."""
    cells = pd.DataFrame({
        "shape": [f"{r['shape'][0]}x{r['shape'][1]}" for r in records],
        "pattern": [r["pattern"] for r in records],
        "encoding": [f"{r['encoding']} ({r['decoder']}, {r['kernel']})" for r in records],
        "batch": [str(r["batch"]) for r in records], "dtype": [r["dtype"] for r in records],
        "dense ms (best)": [f"{r['dense_s'] * 1e3:.2f} ({r['dense_baseline']})" for r in records],
        "dense GB/s": [f"{r['dense_gb_s']:.1f}" for r in records],
        "read GB/s": [f"{r['read_bandwidth_gb_s']:.1f}" for r in records],
        "thread scaling": [f"{r['thread_scaling']:.2f}x" for r in records],
        "sparse ms": [f"{r['sparse_s'] * 1e3:.2f}" for r in records],
        "GB/s": [f"{r['gb_s']:.1f}" for r in records],
        "of read (quartiles)": [
            with_quartiles(r["fraction_of_read_bandwidth"],
                           r.get("fraction_of_read_bandwidth_quartiles"), "{:.0%}")
            for r in records],
        "speedup (quartiles)": [with_quartiles(r["speedup"], r.get("speedup_quartiles"),
                                               "{:.2f}") for r in records],
        "bound": [f"{r['bound']:.2f}" for r in records],
        "of bound": [f"{r['fraction_of_bound']:.0%}" for r in records],
        "roofline": [str(r["roofline"]) for r in records],
        "caches": [r["cache"] for r in records]})
    return markdown.markdown_table(cells) + "\n"


PLOT_SOFTWARE = "nmsim bench kernels"  # PNG tEXt tag: marks a chart this benchmark wrote
TABLE_HEADER = "| shape | pattern | encoding |"  # how every table of markdown_table begins


def plot_bandwidth(records: list[dict], path) -> None:
    """Bar chart per (dtype, batch): GB/s of every dense baseline and sparse kernel (error
    bars: the kernel's quartiles over the rounds), with the read bandwidth measured in the
    same rounds as a line over each shape's bars (160 dpi).

    Written to a temporary file and renamed, so a failed plot leaves nothing half-written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    panels = sorted({(r["dtype"], r["batch"]) for r in records})
    fig, axes = plt.subplots(len(panels), 1, figsize=(12, 4.8 * len(panels)), squeeze=False)
    for ax, (dtype, batch) in zip(axes[:, 0], panels, strict=True):
        rows = [r for r in records if (r["dtype"], r["batch"]) == (dtype, batch)]
        labels, values, colors, read_lines, spreads = [], [], [], [], []
        for shape in dict.fromkeys(tuple(r["shape"]) for r in rows):
            group = [r for r in rows if tuple(r["shape"]) == shape]
            first = len(values)
            for name, gb_s in group[0]["dense_all_gb_s"].items():
                labels.append(f"{shape[0]}x{shape[1]}\n{name}")
                values.append(gb_s)
                spreads.append((0.0, 0.0))
                colors.append("#999999")
            for r in group:
                labels.append(f"{shape[0]}x{shape[1]}\n{r['pattern']} {r['encoding']}"
                              f"\n{r['kernel']}")
                values.append(r["gb_s"])
                low, high = r.get("gb_s_quartiles") or (r["gb_s"], r["gb_s"])
                # GB/s over the median time can fall outside the quartiles of two rounds
                spreads.append((max(0.0, r["gb_s"] - low), max(0.0, high - r["gb_s"])))
                colors.append("#1f77b4")
            read_lines.append((first - 0.4, len(values) - 0.6, group[0]["read_bandwidth_gb_s"]))
        xs = np.arange(len(values))
        ax.bar(xs, values, 0.7, color=colors, yerr=np.array(spreads).T, capsize=2,
               error_kw={"elinewidth": 0.8, "ecolor": "#333333"})
        for i, (lo, hi, read) in enumerate(read_lines):
            ax.hlines(read, lo, hi, colors="#d62728", linewidth=2,
                      label="read bandwidth (same rounds)" if i == 0 else None)
            ax.hlines(0.85 * read, lo, hi, colors="#d62728", linewidth=1, linestyles="dashed",
                      label="85% of it" if i == 0 else None)
        handles, _ = ax.get_legend_handles_labels()
        handles += [Patch(color="#999999", label="dense baselines"),
                    Patch(color="#1f77b4", label="N:M kernels")]
        ax.set_xticks(xs, labels, fontsize=6, rotation=90)
        ax.set_ylabel("GB/s (weight + x + y bytes / time)")
        ax.set_title(f"{dtype} values, batch {batch}, {rows[0]['cache']} caches")
        # Outside the axes, right of them: inside it hid the first bars.
        ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.005, 1.0))
    fig.tight_layout()
    with staged_file(path) as staged:
        fig.savefig(staged, dpi=160, format="png", metadata={"Software": PLOT_SOFTWARE})
    plt.close(fig)
