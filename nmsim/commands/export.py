"""`nmsim export`: write a prune output as a model folder that transformers (and vLLM) load."""

from __future__ import annotations

import time
from pathlib import Path

from compression.export import export


def register(sub) -> None:
    p = sub.add_parser("export", help="write a pruned model as a Hugging Face folder "
                                      "(safetensors, tokenizer, compressed-tensors sparsity)")
    p.add_argument("prune_dir", type=Path, metavar="PRUNE_DIR", help="an `nmsim prune` output")
    p.add_argument("--out", required=True, type=Path, help="new or empty output folder")
    p.add_argument("--model", help="base model, if it moved since the prune (default: the one "
                                   "recorded in PRUNE_DIR/metrics.json)")
    p.set_defaults(func=run)


def run(args) -> int:
    start = time.perf_counter()
    summary = export(args.prune_dir, args.out, args.model)
    print(f"{summary['model']} {summary['pattern']} (side-car {summary['salient']}): global "
          f"sparsity {summary['global_sparsity']:.4f}; export {time.perf_counter() - start:.1f} s "
          f"-> {summary['out']}")
    return 0
