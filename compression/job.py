"""One pruning run end to end: load, calibrate, prune, (fine-tune), compress, evaluate, write.

Used by ``nmsim prune`` and by the experiment. Output folder (written to a temporary sibling
folder, renamed at the end, so a failed run leaves nothing behind):

* ``compressed.safetensors``: the pruned linears in the shared format (``formats.save``; names are
  module names without ``.weight``); only for an N:M bulk (an unstructured bulk has no N:M form);
* ``masks.safetensors``: bool keep masks, ``NAME`` (bulk) and ``NAME.salient``;
* ``layer_stats.csv``: per linear: shape, kept fraction, salient count, relative output error
  ||(W - W') X||^2 / ||W X||^2 on the calibration inputs;
* ``metrics.json``: perplexity (seqlen, windows), recipe, timings, peak RSS.
"""

from __future__ import annotations

import json
import resource
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compression import formats
from compression.finetune import finetune
from compression.perplexity import perplexity
from compression.pipeline import PruneConfig, compress_model, prune_model
from workloads import text
from workloads.loading import LoadedModel


@dataclass(frozen=True)
class DataConfig:
    """Where calibration and evaluation text come from and how it is cut."""

    calib_path: str | None = None
    eval_path: str | None = None
    calib_samples: int = 128
    calib_seqlen: int = 512
    eval_seqlen: int = 512
    eval_windows: int | None = None  # None: the whole split
    seed: int = 0

    def check_files(self, calib: bool, evaluation: bool) -> None:
        """Fail early (before a model loads) on a missing, unreadable or empty text file."""
        if calib:
            text.read_text(self.calib_path or text.default_path("calib"))
        if evaluation:
            text.read_text(self.eval_path or text.default_path("eval"))

    def calibration(self, tokenizer) -> np.ndarray:
        path = self.calib_path or text.default_path("calib")
        ids = text.tokenize(tokenizer, path)
        return text.calibration_windows(ids, self.calib_samples, self.calib_seqlen, self.seed)

    def evaluation(self, tokenizer) -> np.ndarray:
        path = self.eval_path or text.default_path("eval")
        return text.eval_windows(text.tokenize(tokenizer, path), self.eval_seqlen,
                                 self.eval_windows)

    def describe(self) -> dict:
        return {"calib_path": str(self.calib_path or text.default_path("calib")),
                "eval_path": str(self.eval_path or text.default_path("eval")),
                "calib_samples": self.calib_samples, "calib_seqlen": self.calib_seqlen,
                "seed": self.seed}


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (MiB; ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bits_per_weight(compressed: dict[str, formats.SparseWeight]) -> float | None:
    """Stored bits (values + metadata + tails + side-car) per dense weight element."""
    if not compressed:
        return None
    elements = sum(w.shape[0] * w.shape[1] for w in compressed.values())
    return 8 * sum(w.nbytes for w in compressed.values()) / elements


def prune_and_evaluate(loaded: LoadedModel, cfg: PruneConfig, calib: np.ndarray | None,
                       windows: np.ndarray | None, finetune_steps: int = 0,
                       progress: bool = True) -> tuple[dict, dict, object]:
    """Prune ``loaded.model`` in place; returns (metrics, compressed weights, prune outcome)."""
    timings = {}
    start = time.perf_counter()
    outcome = prune_model(loaded.model, calib if cfg.needs_calibration else None, cfg,
                          progress=progress)
    timings["prune_s"] = time.perf_counter() - start
    losses = []
    if finetune_steps:
        if calib is None:
            raise ValueError("--finetune-steps needs calibration text")
        start = time.perf_counter()
        losses = finetune(loaded.model, {n: m.union for n, m in outcome.masks.items()}, calib,
                          finetune_steps, progress=progress)
        timings["finetune_s"] = time.perf_counter() - start
    start = time.perf_counter()
    compressed = compress_model(loaded.model, outcome, cfg)
    timings["compress_s"] = time.perf_counter() - start
    metrics = {"model": loaded.name, "source": loaded.source, **cfg.describe(),
               "finetune_steps": finetune_steps,
               "finetune_loss_first_last": [losses[0], losses[-1]] if losses else None,
               "compressed_bits_per_weight": bits_per_weight(compressed),
               "kept_fraction": float(np.mean([r["kept_fraction"] for r in outcome.records])),
               "timings": timings}
    if windows is not None:
        metrics.update(perplexity(loaded.model, windows, progress=progress))
    metrics["peak_rss_mib"] = peak_rss_mib()
    return metrics, compressed, outcome


def write_outputs(out: Path, metrics: dict, compressed: dict, outcome) -> None:
    """Write the output folder atomically (temporary sibling folder, then rename)."""
    import pandas as pd
    import torch
    from safetensors.torch import save_file

    out = Path(out)
    if out.exists():
        raise ValueError(f"output folder {out} already exists")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        if compressed:
            formats.save(staging / "compressed.safetensors", compressed)
        masks = {}
        for name, mask in outcome.masks.items():
            masks[name] = torch.from_numpy(mask.bulk)
            if mask.salient is not None:
                masks[f"{name}.salient"] = torch.from_numpy(mask.salient)
        save_file(masks, str(staging / "masks.safetensors"))
        pd.DataFrame(outcome.records).to_csv(staging / "layer_stats.csv", index=False)
        (staging / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
