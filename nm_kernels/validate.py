"""`nmsim validate`, kernel side: the same compressed weights through a reference and each kernel.

Layering keeps the simulator out of this package: the caller passes the reference
(``accel_sim.functional.functional_matmul``) and compares predicted speedups itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from compression import formats as F
from nm_kernels import numba_nm as K
from nm_kernels.cpu import prepare, usable_decoders

# Error budget per output, relative to sum_k |W[r, k] x[k]|: every kernel accumulates in
# float32 over the same stored values (2**-24 per add, a few hundred adds with headroom).
RELATIVE_TOLERANCE = 1e-5


def _triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def compare_kernels(reference: Callable[[F.SparseWeight, np.ndarray], np.ndarray],
                    patterns: Iterable[str], encodings: Iterable[str], dtypes: Iterable[str],
                    shape: tuple[int, int] = (64, 200), batch: int = 12, tail: str = "dense",
                    seed: int = 0, triton: bool = True) -> list[dict]:
    """Max relative error of each kernel against ``reference(weight, x)`` (float64 ``[out, b]``).

    The default batch of 12 runs the vector GEMM on x padded to 16 columns (one 16-column pass,
    four zero columns) and the scalar GEMM on 12.

    Activations are rounded through float16 first, so the Triton kernel (fp16 operands) and the
    float32 kernels see identical inputs. Triton runs on float16/bfloat16 values, rank and index
    metadata; on a CPU through the interpreter, which mis-computes bf16 ``tl.dot`` (skipped).
    """
    rng = np.random.default_rng(seed)
    cols = shape[1]
    dense = rng.standard_normal(shape).astype(np.float32)
    x = rng.standard_normal((cols, batch)).astype(np.float16).astype(np.float32)
    x[x == 0] = 1.0  # a zero input would hide a dropped weight
    run_triton = triton and _triton_available()
    if run_triton:
        import torch

        from nm_kernels.triton_nm import TritonNMPlan
        device = "cuda" if torch.cuda.is_available() else "cpu"
    records = []
    for pattern in map(F.Pattern.parse, patterns):
        mask = F.nm_mask(np.abs(dense), pattern, tail)
        for encoding in encodings:
            for dtype in dtypes:
                weight = F.SparseWeight(F.NMTensor.from_dense(dense, mask, pattern, encoding,
                                                              tail, dtype))
                ref = np.asarray(reference(weight, x), dtype=np.float64)
                scale = np.abs(weight.to_dense(np.float64)) @ np.abs(x.astype(np.float64))
                # kernel name -> (output, the reference columns it computed)
                outputs = {}
                for decoder in usable_decoders(pattern, encoding):
                    # Every kernel this CPU runs: batch-1 GEMVs (AVX-512 pairs, the 2:4 x
                    # table, AVX2 groups, scalar) and GEMMs (AVX-512 and AVX2 group passes,
                    # scalar).
                    for simd in ("auto", "avx2", "scalar"):
                        plan = prepare(weight, decoder, simd)
                        outputs[f"numba/{decoder} gemm/{plan.gemm_path}"] = (plan(x), np.s_[:])
                        outputs[f"numba/{decoder} gemv/{plan.gemv_path}"] = (
                            plan(np.ascontiguousarray(x[:, 0]))[:, None], np.s_[:1])
                triton_reads = any(K.KERNEL_DECODERS[d].triton
                                   for d in K.kernel_decoders(encoding))
                if run_triton and triton_reads and (
                        dtype == "float16" or (dtype == "bfloat16" and device == "cuda")):
                    plan = TritonNMPlan(weight, device)
                    xt = torch.from_numpy(x).to(device=device, dtype=plan.bulk.dtype)
                    outputs["triton"] = (plan(xt).cpu().numpy(), np.s_[:])
                for kernel, (y, columns) in outputs.items():
                    error = float(np.max(np.abs(y - ref[:, columns])
                                         / np.maximum(scale[:, columns], 1e-30)))
                    records.append({"pattern": str(pattern), "encoding": encoding,
                                    "dtype": dtype, "kernel": kernel, "shape": list(shape),
                                    "batch": batch, "tail": tail, "max_relative_error": error,
                                    "tolerance": RELATIVE_TOLERANCE,
                                    "ok": bool(error <= RELATIVE_TOLERANCE)})
    return records
