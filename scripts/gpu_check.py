"""The one prepared GPU check for the Triton N:M kernel (written for an NVIDIA H200; < 8 minutes).

Run from the repository root:  PYTHONPATH=. python scripts/gpu_check.py [--out reports/kernels]

1. Correctness on LLaMa-2-7B shapes (4096x4096, 11008x4096, 4096x11008), patterns 2:4 / 4:8 /
   8:16 / 16:32, rank and index metadata, fp16 and bf16 values (bf16 tl.dot is only trustworthy
   on a GPU), batch 1 and 16: max |y - ref| / (|W| @ |x|) against a float64 reference.
2. Timing (triton.testing.do_bench, median ms) of the Triton kernel against torch.matmul
   (cuBLAS) on the same dense fp16 weight and, for 2:4, torch's to_sparse_semi_structured
   (cuSPARSELt/CUTLASS), batch 1, 16 and 64; a few block configs are tried per case and the best
   is reported with its config. Bytes bound = dense bytes / compressed bytes.
   Each time also becomes achieved HBM bandwidth (compressed or dense weight + x + y bytes per
   second) as a fraction of the device's own copy bandwidth, measured first in the same run
   (:func:`copy_bandwidth_gb_s`: a device-to-device copy of a buffer the size of the largest
   dense weight, read + write bytes), the GPU counterpart of ``nmsim bench kernels``'
   ``fraction_of_read_bandwidth``.
3. Writes a Markdown table to OUT/gpu_h200.md (and the records to OUT/gpu_h200.json).

Stops adding cases once the time budget (default 7 minutes) is spent and says so in the report.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

SHAPES = ((4096, 4096), (11008, 4096), (4096, 11008))
PATTERNS = ("2:4", "4:8", "8:16", "16:32")
BLOCK_CONFIGS = ((16, 128, 16), (32, 128, 16), (32, 256, 16), (64, 64, 64), (64, 128, 64))
TOLERANCE = 1e-4  # fp32 accumulation over <= 11008 products of exact fp16/bf16 operands


def copy_bandwidth_gb_s(device, nbytes: int, bench) -> float:
    """Copy bandwidth of ``device`` in GB/s: ``nbytes`` read plus ``nbytes`` written per
    ``dst.copy_(src)``, timed by ``bench(fn) -> ms`` (``triton.testing.do_bench`` on a GPU)."""
    src = torch.ones(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    return achieved_gb_s(2 * nbytes, bench(lambda: dst.copy_(src)))


def achieved_gb_s(nbytes: int, ms: float) -> float:
    """GB/s of ``nbytes`` moved in ``ms`` milliseconds."""
    return nbytes / (ms * 1e-3) / 1e9


def io_bytes(shape, batch: int, value_bytes: int = 2, out_bytes: int = 4) -> int:
    """Activation (fp16) and output (fp32 for the Triton kernel; fp16 from cuBLAS's fp16 matmul)
    bytes of one ``[out, in] @ [in, batch]``."""
    return (value_bytes * shape[1] + out_bytes * shape[0]) * batch


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("reports/kernels"))
    parser.add_argument("--budget-s", type=float, default=420.0)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device; this script needs a GPU", file=sys.stderr)
        return 2
    os.environ.pop("TRITON_INTERPRET", None)
    from triton.testing import do_bench

    from compression import formats as F
    from nm_kernels.triton_nm import TritonNMPlan

    start = time.monotonic()
    device = torch.device("cuda")
    name = torch.cuda.get_device_name()
    correctness, timing, skipped = [], [], []
    rng = np.random.default_rng(0)

    def over_budget() -> bool:
        return time.monotonic() - start > args.budget_s

    largest = max(rows * cols for rows, cols in SHAPES) * 2  # fp16 dense weight bytes
    copy_gb_s = copy_bandwidth_gb_s(device, largest, do_bench)

    for shape in SHAPES:
        dense = rng.standard_normal(shape).astype(np.float32)
        for pattern in PATTERNS:
            mask = F.nm_mask(np.abs(dense), pattern)
            for encoding in ("rank", "index"):
                for dtype in ("float16", "bfloat16"):
                    if over_budget():
                        skipped.append(f"{shape} {pattern} {encoding} {dtype}")
                        continue
                    weight = F.NMTensor.from_dense(dense, mask, pattern, encoding, dtype=dtype)
                    plan = TritonNMPlan(weight, device)
                    w_ref = torch.from_numpy(weight.to_dense(np.float64)).to(device)
                    for batch in (1, 16):
                        x = torch.randn(shape[1], batch, device=device).to(plan.bulk.dtype)
                        y = plan(x).double()
                        ref = w_ref @ x.double()
                        scale = w_ref.abs() @ x.double().abs()
                        error = float(((y - ref).abs() / scale.clamp_min(1e-30)).max())
                        correctness.append({"shape": list(shape), "pattern": pattern,
                                            "encoding": encoding, "dtype": dtype,
                                            "batch": batch, "max_relative_error": error,
                                            "ok": error <= TOLERANCE})
                    if dtype != "float16":
                        continue
                    w_dense = torch.from_numpy(weight.to_dense(np.float32)).to(device).half()
                    semi = None
                    if pattern == "2:4":
                        try:
                            from torch.sparse import to_sparse_semi_structured
                            semi = to_sparse_semi_structured(w_dense)
                        except (RuntimeError, ValueError, NotImplementedError) as exc:
                            # an unsupported build or architecture: record why
                            semi = f"n/a ({type(exc).__name__}: {str(exc)[:60]})"
                    for batch in (1, 16, 64):
                        if over_budget():
                            skipped.append(f"timing {shape} {pattern} {encoding} b{batch}")
                            continue
                        x = torch.randn(shape[1], batch, device=device, dtype=torch.float16)
                        out = torch.empty(shape[0], batch, device=device)
                        dense_ms = do_bench(lambda: torch.matmul(w_dense, x))  # noqa: B023
                        best = min(((do_bench(lambda: plan(x, out, blocks)), blocks)  # noqa: B023
                                    for blocks in BLOCK_CONFIGS), key=lambda t: t[0])
                        triton_gb_s = achieved_gb_s(weight.nbytes + io_bytes(shape, batch),
                                                    best[0])
                        cublas_gb_s = achieved_gb_s(
                            w_dense.numel() * 2 + io_bytes(shape, batch, out_bytes=2), dense_ms)
                        record = {"shape": list(shape), "pattern": pattern,
                                  "encoding": encoding, "batch": batch, "cublas_ms": dense_ms,
                                  "triton_ms": best[0], "blocks": list(best[1]),
                                  "speedup_vs_cublas": dense_ms / best[0],
                                  "bound": w_dense.numel() * 2 / weight.nbytes,
                                  "triton_gb_s": triton_gb_s, "cublas_gb_s": cublas_gb_s,
                                  "copy_gb_s": copy_gb_s,
                                  "triton_fraction_of_copy": triton_gb_s / copy_gb_s,
                                  "cublas_fraction_of_copy": cublas_gb_s / copy_gb_s}
                        if isinstance(semi, str):
                            record["semi_structured_ms"] = semi
                        elif semi is not None:
                            # cuSPARSELt needs the dense operand's columns padded to 8.
                            xp = torch.nn.functional.pad(x, (0, (-batch) % 8))
                            record["semi_structured_ms"] = do_bench(
                                lambda: torch.mm(semi, xp))  # noqa: B023
                        timing.append(record)
    elapsed = time.monotonic() - start
    _write(args.out, name, correctness, timing, skipped, elapsed, copy_gb_s)
    bad = [c for c in correctness if not c["ok"]]
    print(f"gpu_check: {len(correctness) - len(bad)}/{len(correctness)} correctness cases ok, "
          f"{len(timing)} timings, {elapsed:.0f} s; report in {args.out}/gpu_h200.md")
    return 1 if bad else 0


def _write(out: Path, device_name, correctness, timing, skipped, elapsed, copy_gb_s) -> None:
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"# Triton N:M kernel on {device_name}", "",
             (f"`PYTHONPATH=. python scripts/gpu_check.py` ({elapsed:.0f} s). Times: "
             "triton.testing.do_bench medians; Triton time is the best of "
             f"{len(BLOCK_CONFIGS)} block configs (BLOCK_R, BLOCK_K, BLOCK_B). Device copy "
             f"bandwidth (read + write of a {max(r * c for r, c in SHAPES) * 2 / 1e6:.0f} MB "
             f"buffer, same run): {copy_gb_s:.0f} GB/s; \"of copy\" = achieved GB/s (weight + x "
             "+ y bytes / time) over it."), "",
             "## Timing (fp16 values, fp32 accumulation)", "",
             ("| shape | pattern | encoding | batch | cuBLAS ms | cuBLAS of copy | Triton ms | "
              "Triton GB/s | Triton of copy | blocks | speedup | bytes bound | "
              "2:4 semi-structured ms |"), "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for t in timing:
        semi = t.get("semi_structured_ms", "")
        semi = f"{semi:.4f}" if isinstance(semi, float) else semi
        lines.append(f"| {t['shape'][0]}x{t['shape'][1]} | {t['pattern']} | {t['encoding']} | "
                     f"{t['batch']} | {t['cublas_ms']:.4f} | {t['cublas_fraction_of_copy']:.0%} | "
                     f"{t['triton_ms']:.4f} | {t['triton_gb_s']:.0f} | "
                     f"{t['triton_fraction_of_copy']:.0%} | "
                     f"{tuple(t['blocks'])} | {t['speedup_vs_cublas']:.2f} | {t['bound']:.2f} | "
                     f"{semi} |")
    lines += ["", f"## Correctness (tolerance {TOLERANCE:g} of |W| @ |x|)", "",
              "| shape | pattern | encoding | dtype | batch | max rel. error | ok |",
              "|---|---|---|---|---|---|---|"]
    for c in correctness:
        lines.append(f"| {c['shape'][0]}x{c['shape'][1]} | {c['pattern']} | {c['encoding']} | "
                     f"{c['dtype']} | {c['batch']} | {c['max_relative_error']:.2e} | "
                     f"{'ok' if c['ok'] else 'FAIL'} |")
    if skipped:
        lines += ["", f"Skipped for the time budget: {'; '.join(skipped)}"]
    (out / "gpu_h200.md").write_text("\n".join(lines) + "\n")
    (out / "gpu_h200.json").write_text(json.dumps(
        {"device": device_name, "copy_gb_s": copy_gb_s, "correctness": correctness,
         "timing": timing,
         "skipped": skipped, "elapsed_s": elapsed}, indent=2))


if __name__ == "__main__":
    sys.exit(main())
