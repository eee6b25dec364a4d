"""One pruning run end to end: load, calibrate, prune, (fine-tune), compress, evaluate, write.

Used by ``nmsim prune`` and by the experiment. Each decoder layer is compressed as soon as it is
pruned and streamed to an :class:`compression.prune_output.OutputWriter` (the output folder's
layout is documented there), so memory stays near the model plus one layer.
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass

import numpy as np

from compression.finetune import finetune
from compression.leakage import check_not_from_test
from compression.perplexity import perplexity
from compression.pipeline import CompressedLayer, PruneConfig, compress_pruned, prune_model
from compression.prune_output import OutputWriter
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
    finetune_path: str | None = None  # None: fine-tune on the calibration windows


    def check_files(self, calib: bool, evaluation: bool, finetune: bool = False) -> None:
        """Fail early (before a model loads) on a missing, unreadable or empty text file."""
        if calib:
            text.read_text(self.calib_path or text.default_path("calib"))
        if finetune and self.finetune_path:
            text.read_text(self.finetune_path)
        if evaluation:
            text.read_text(self.eval_path or text.default_path("eval"))

    def calibration(self, tokenizer) -> np.ndarray:
        """Calibration windows (also the fine-tune's), refused when they come from the
        evaluation text (:func:`compression.leakage.check_not_from_test`)."""
        path = self.calib_path or text.default_path("calib")
        ids = text.tokenize(tokenizer, path)
        windows = text.calibration_windows(ids, self.calib_samples, self.calib_seqlen, self.seed)
        test = self.eval_path or text.DEFAULT_WIKITEXT_DIR / text.EVAL_FILE
        if self.eval_path or test.is_file():  # without any test text there is none to leak
            check_not_from_test(windows, text.tokenize(tokenizer, test))
        return windows

    def finetune(self, tokenizer, calib: np.ndarray | None = None) -> np.ndarray:
        """Fine-tune windows (``calib_samples`` x ``calib_seqlen``): the calibration windows
        (``calib`` if already cut), or windows of ``finetune_path``; either way refused when
        they come from the evaluation text."""
        if self.finetune_path is None:
            return self.calibration(tokenizer) if calib is None else calib
        ids = text.tokenize(tokenizer, self.finetune_path)
        windows = text.calibration_windows(ids, self.calib_samples, self.calib_seqlen, self.seed)
        test = self.eval_path or text.default_path("eval")
        check_not_from_test(windows, text.tokenize(tokenizer, test), what="fine-tune")
        return windows

    def evaluation(self, tokenizer) -> np.ndarray:
        return self.evaluation_and_split(tokenizer)[0]

    def evaluation_and_split(self, tokenizer) -> tuple[np.ndarray, int]:
        """The evaluation windows, and how many windows the whole split holds (one tokenization)."""
        ids = text.tokenize(tokenizer, self.eval_path or text.default_path("eval"))
        windows = text.eval_windows(ids, self.eval_seqlen, self.eval_windows)
        return windows, len(ids) // self.eval_seqlen

    def describe(self) -> dict:
        return {"calib_path": str(self.calib_path or text.default_path("calib")),
                "eval_path": str(self.eval_path or text.default_path("eval")),
                "calib_samples": self.calib_samples, "calib_seqlen": self.calib_seqlen,
                "seed": self.seed, "finetune_path": self.finetune_path}


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (MiB; ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _LayerTally:
    """A layer sink: counts stored bytes per weight and forwards each layer to the writer."""

    def __init__(self, writer: OutputWriter | None):
        self.writer = writer
        self.stored_bytes = 0
        self.elements = 0
        self.write_s = 0.0

    def __call__(self, layer: CompressedLayer) -> None:
        self.stored_bytes += sum(w.nbytes for w in layer.weights.values())
        self.elements += sum(w.shape[0] * w.shape[1] for w in layer.weights.values())
        if self.writer is not None:
            start = time.perf_counter()
            self.writer.add_layer(layer.index, layer.weights, layer.bool_masks(), layer.biases,
                                  layer.gains)
            self.write_s += time.perf_counter() - start

    @property
    def bits_per_weight(self) -> float | None:
        """Stored bits (values + metadata + tails + side-car) per dense weight element."""
        return 8 * self.stored_bytes / self.elements if self.elements else None


def prune_and_evaluate(loaded: LoadedModel, cfg: PruneConfig, calib: np.ndarray | None,
                       windows: np.ndarray | None, finetune_steps: int = 0,
                       progress: bool = True, writer: OutputWriter | None = None,
                       release_layers: bool = False, eval_before_finetune: bool = False,
                       fixed_masks: dict | None = None,
                       finetune_windows: np.ndarray | None = None) -> tuple[dict, list[dict]]:
    """Prune ``loaded.model`` in place, each compressed layer streamed to ``writer`` (if any);
    returns (metrics, per-linear records). ``release_layers``: the run only writes, so written
    layers leave memory (see :func:`prune_model`); not with evaluation or fine-tuning.
    ``eval_before_finetune``: also measure the pruned model before its fine-tune, so one prune
    gives both figures (``metrics["before_finetune"]``). ``fixed_masks``: reuse these masks
    (see :func:`compression.pipeline.prune_model`). ``finetune_windows``: what the fine-tune
    trains on (default: ``calib``; :meth:`DataConfig.finetune` checks it)."""
    finetune_windows = calib if finetune_windows is None else finetune_windows
    if finetune_steps and finetune_windows is None:
        raise ValueError("--finetune-steps needs calibration text")
    if eval_before_finetune and (not finetune_steps or windows is None):
        raise ValueError("evaluating before the fine-tune needs --finetune-steps and evaluation")
    if release_layers and (windows is not None or finetune_steps or writer is None):
        raise ValueError("releasing layers is only for a written run without evaluation or "
                         "fine-tuning")
    timings = {}
    tally = _LayerTally(writer)
    start = time.perf_counter()
    # Fine-tuning changes every layer after pruning: compress only once it is done.
    outcome = prune_model(loaded.model, calib if cfg.needs_calibration else None, cfg,
                          progress=progress, sink=None if finetune_steps else tally,
                          release=release_layers, fixed_masks=fixed_masks)
    timings["prune_s"] = time.perf_counter() - start
    losses = []
    before = perplexity(loaded.model, windows, progress=progress) if eval_before_finetune else None
    if finetune_steps:
        start = time.perf_counter()
        losses = finetune(loaded.model, {n: m.union for n, m in outcome.masks.items()},
                          finetune_windows, finetune_steps, progress=progress)
        timings["finetune_s"] = time.perf_counter() - start
        start = time.perf_counter()
        compress_pruned(loaded.model, outcome, cfg, tally)
        timings["compress_s"] = time.perf_counter() - start
    if writer is not None:
        timings["write_s"] = tally.write_s
    metrics = {"model": loaded.name, "source": loaded.source, **cfg.describe(),
               "finetune_steps": finetune_steps,
               "finetune_loss_first_last": [losses[0], losses[-1]] if losses else None,
               "compressed_bits_per_weight": tally.bits_per_weight,
               "kept_fraction": float(np.mean([r["kept_fraction"] for r in outcome.records])),
               "timings": timings}
    if before is not None:
        metrics["before_finetune"] = before
        timings["eval_before_finetune_s"] = before["eval_seconds"]
    if windows is not None:
        metrics.update(perplexity(loaded.model, windows, progress=progress))
        timings["eval_s"] = metrics["eval_seconds"]
    metrics["peak_rss_mib"] = peak_rss_mib()
    return metrics, outcome.records
