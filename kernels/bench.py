"""`nmsim bench kernels`: N:M Numba kernels against the best dense baseline on LLaMa-2-7B shapes.

For every (shape, dtype, batch) group, the dense baselines (Numba dense, torch.matmul, numpy for
float32) and every sparse variant (pattern x encoding) are timed in the same rounds - warm-up
rounds first, then ``repeats`` rounds, each giving every candidate an untimed call and
:data:`CALLS_PER_ROUND` timed ones (:func:`time_round_robin`) - so machine noise hits them alike;
each figure is the median over rounds of the per-round median. The bytes bound is dense weight
bytes / compressed weight bytes (kept values + metadata with row padding + dense tail): what a purely memory-bound kernel could
gain. ``fraction_of_bound`` = speedup / bound.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from functools import partial

import numba
import numpy as np
import torch
from tqdm import tqdm

from compression import formats as F
from kernels.cpu import DensePlan, prepare
from kernels.numba_nm import threads

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


def _activations(cols: int, batch: int, seed: int) -> np.ndarray:
    """float32 activations, ``[in]`` for batch 1 and ``[in, batch]`` otherwise, never zero."""
    rng = np.random.default_rng(seed)
    shape = (cols,) if batch == 1 else (cols, batch)
    return (rng.uniform(0.5, 1.5, shape) * rng.choice([-1.0, 1.0], shape)).astype(np.float32)


# Timed calls per candidate per round, after one untimed call.
CALLS_PER_ROUND = 5


def time_round_robin(candidates: dict[str, Callable], repeats: int, warmup: int) -> dict:
    """Median seconds per call of each candidate, timed in rounds.

    Each round gives every candidate in turn one untimed call and then :data:`CALLS_PER_ROUND`
    timed back-to-back calls; a candidate's figure is the median over rounds of its per-round median. The untimed
    call matters: numpy's OpenBLAS, torch's OpenMP and Numba each keep a thread pool whose
    workers spin for a while after a call, and on 2 cores the previous candidate's spinning
    workers slowed the first call of the next one by up to 2x (measured: a Numba N:M GEMV alone
    took 3.7 ms, strictly alternated with numpy and torch 7-10 ms). Rounds still interleave the
    candidates, so machine noise hits them alike.
    """
    samples = {name: [] for name in candidates}
    for round_index in range(warmup + repeats):
        for name, fn in candidates.items():
            fn()
            times = []
            for _ in range(CALLS_PER_ROUND):
                start = time.perf_counter()
                fn()
                times.append(time.perf_counter() - start)
            if round_index >= warmup:
                samples[name].append(float(np.median(times)))
    return {name: float(np.median(times)) for name, times in samples.items()}


def bench_kernels(shapes: Iterable[tuple[int, int]] = LLAMA2_7B_SHAPES,
                  patterns: Iterable[str] = PATTERNS, encodings: Iterable[str] = ENCODINGS,
                  batches: Iterable[int] = BATCHES, dtypes: Iterable[str] = DTYPES,
                  repeats: int = 7, warmup: int = 2, seed: int = 0,
                  progress: bool = True, simd: Iterable[str] = ("auto",)) -> list[dict]:
    """One record per (shape, pattern, encoding, batch, dtype) and per distinct kernel the
    ``simd`` caps select at that batch (``kernels.cpu.prepare``: ``gemv_path`` at batch 1,
    ``gemm_path`` above); see the module docstring."""
    patterns = [F.Pattern.parse(p) for p in patterns]
    encodings = [F.check_encoding(e) for e in encodings]
    dtypes = [str(F.value_dtype_name(F.value_dtype(d))) for d in dtypes]
    batches = [int(b) for b in batches]
    simd = list(dict.fromkeys(simd))
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats} and {warmup}")
    if any(b < 1 for b in batches):
        raise ValueError(f"batch sizes must be >= 1, got {batches}")
    groups = [(s, d, b) for s in shapes for d in dtypes for b in batches]
    records = []
    bar = tqdm(total=len(groups), desc="bench kernels", disable=not progress, unit="group")
    for shape in shapes:
        weight = np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)
        masks = {p: F.nm_mask(np.abs(weight), p) for p in patterns}
        for dtype in dtypes:
            plans = [(str(p), e, prepare(F.NMTensor.from_dense(weight, masks[p], p, e,
                                                               dtype=dtype), simd=cap))
                     for p in patterns for e in encodings for cap in simd]
            dense_bytes = weight.size * F.value_dtype(dtype).itemsize
            for batch in batches:
                x = _activations(shape[1], batch, seed=1)
                dense = _dense_baselines(weight, dtype, batch)
                timed = {}  # one plan per (pattern, encoding, kernel run at this batch)
                for pattern, encoding, plan in plans:
                    path = plan.gemv_path if batch == 1 else plan.gemm_path
                    timed.setdefault((pattern, encoding, path), plan)
                sparse = {key: partial(plan, x) for key, plan in timed.items()}
                medians = time_round_robin({**dense, **sparse}, repeats, warmup)
                best_name = min(dense, key=medians.get)
                io_bytes = 4 * (shape[1] + shape[0]) * batch  # float32 activations in, out
                for (pattern, encoding, path), plan in timed.items():
                    sparse_s = medians[(pattern, encoding, path)]
                    speedup = medians[best_name] / sparse_s
                    bound = dense_bytes / plan.nbytes
                    records.append({
                        "shape": list(shape), "pattern": pattern, "encoding": encoding,
                        "decoder": plan.decoder,
                        "kernel": path,
                        "batch": batch, "dtype": dtype,
                        "dense_s": medians[best_name], "dense_baseline": best_name,
                        "dense_all_s": {name: medians[name] for name in dense},
                        "sparse_s": sparse_s, "speedup": speedup, "bound": bound,
                        "fraction_of_bound": speedup / bound,
                        "sparse_gb_s": (plan.nbytes + io_bytes) / sparse_s / 1e9,
                        "dense_gb_s": (dense_bytes + io_bytes) / medians[best_name] / 1e9,
                        "weight_bytes_dense": dense_bytes, "weight_bytes_sparse": plan.nbytes,
                        "repeats": repeats, "warmup": warmup, "calls": CALLS_PER_ROUND,
                        "threads": threads(), "torch_threads": torch.get_num_threads(),
                        **thread_pool_settings(),
                    })
                bar.update()
    bar.close()
    return records


def bench_rank_decoders(shape=(11008, 4096), patterns=("2:4", "8:16"), repeats: int = 7,
                        warmup: int = 2, seed: int = 0) -> list[dict]:
    """GEMV time of the rank LUT vs the unranking decoder (float32, batch 1), round-robin."""
    weight = np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)
    x = _activations(shape[1], 1, seed=1)
    candidates = {}
    for p in patterns:
        tensor = F.NMTensor.from_dense(weight, F.nm_mask(np.abs(weight), p), p, "rank",
                                       dtype="float32")
        for decoder in ("rank-lut", "rank-unrank"):
            candidates[(p, decoder)] = partial(prepare(tensor, decoder), x)
    medians = time_round_robin(candidates, repeats, warmup)
    return [{"shape": list(shape), "pattern": p, "decoder": d, "seconds": s, "repeats": repeats}
            for (p, d), s in medians.items()]


def markdown_table(records: list[dict]) -> str:
    """The records as a Markdown table (times in ms)."""
    lines = [("| shape | pattern | encoding | batch | dtype | dense ms (best) | sparse ms | "
              "speedup | bound | of bound | sparse GB/s |"),
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        lines.append(
            f"| {r['shape'][0]}x{r['shape'][1]} | {r['pattern']} | {r['encoding']} "
            f"({r['decoder']}, {r['kernel']}) | {r['batch']} | {r['dtype']} | "
            f"{r['dense_s'] * 1e3:.2f} ({r['dense_baseline']}) | {r['sparse_s'] * 1e3:.2f} | "
            f"{r['speedup']:.2f} | {r['bound']:.2f} | {r['fraction_of_bound']:.0%} | {r['sparse_gb_s']:.1f} |")
    return "\n".join(lines) + "\n"


def plot_speedups(records: list[dict], path) -> None:
    """Bar chart per (dtype, batch): measured speedup next to the bytes bound, per shape/variant.

    Written to a temporary file and renamed, so a failed plot leaves nothing half-written.
    """
    import os

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(r["dtype"], r["batch"]) for r in records})
    fig, axes = plt.subplots(len(panels), 1, figsize=(12, 4.5 * len(panels)), squeeze=False)
    for ax, (dtype, batch) in zip(axes[:, 0], panels, strict=True):
        rows = [r for r in records if (r["dtype"], r["batch"]) == (dtype, batch)]
        labels = [f"{r['shape'][0]}x{r['shape'][1]}\n{r['pattern']} {r['encoding']}" for r in rows]
        xs = np.arange(len(rows))
        ax.bar(xs - 0.2, [r["bound"] for r in rows], 0.4, label="bytes bound", color="#bbbbbb")
        ax.bar(xs + 0.2, [r["speedup"] for r in rows], 0.4, label="measured", color="#1f77b4")
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks(xs, labels, fontsize=6, rotation=90)
        ax.set_ylabel("speedup over best dense")
        ax.set_title(f"{dtype} values, batch {batch}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    tmp = f"{path}.tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
