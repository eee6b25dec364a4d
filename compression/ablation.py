"""Ablation of the best N:M recipe on SmolLM2-135M, behind ``reports/compression/ablation/``.

    PYTHONPATH=. python -m compression.ablation run [--worker I/K] [--only TEXT ... | --label LABEL ...]
        [--eval-windows N] [--out DIR]
    PYTHONPATH=. python -m compression.ablation report [--eval-windows N] [--out DIR]

The full recipe is SparseGPT + equalization (alpha 0.5) + variance correction + structured
16:256 side-car + a 50-step fine-tune. Runs, in priority order: the full recipe (measured before
and after its fine-tune, one prune), the dense model and its fine-tune control (same steps, data
and learning rate), the recipe without each component in turn, iso-count (9:16) and iso-storage
(plain N:M of the same stored bits) companions of the side-car, fp16 side-car values, variance
correction variants, then the 2:4 ablation.

Every finished row is appended to ``ablation.csv`` (its per-window NLL sums to
``ablation-windows.csv``) under a key that hashes its whole configuration (recipe, fine-tune
steps, data protocol), so a re-run skips rows already measured and a changed protocol measures
them afresh. ``--worker I/K`` runs every K-th run starting at I, so K processes share the queue.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from compression.criteria import Salient, Target
from compression.job import DataConfig, peak_rss_mib, prune_and_evaluate
from compression.pipeline import PruneConfig

OUT_DIR = Path(__file__).resolve().parent.parent / "reports" / "compression" / "ablation"
CSV_NAME = "ablation.csv"
WINDOWS_NAME = "ablation-windows.csv"
FINETUNE_STEPS = 50
SIDE_CAR = "16:256"


@dataclass(frozen=True)
class Protocol:
    """How every row is measured (part of each row's key)."""

    calib_samples: int = 8
    calib_seqlen: int = 512
    eval_seqlen: int = 512
    eval_windows: int = 16  # evenly spaced over the test split
    finetune_steps: int = FINETUNE_STEPS
    calib_path: str | None = None  # None: the shared validation split
    eval_path: str | None = None  # None: the shared test split

    def data(self) -> DataConfig:
        return DataConfig(self.calib_path, self.eval_path, calib_samples=self.calib_samples,
                          calib_seqlen=self.calib_seqlen, eval_seqlen=self.eval_seqlen)


@dataclass(frozen=True)
class Run:
    """One prune (or the dense model): ``label`` is its final row; with a fine-tune,
    ``before`` labels the row measured on the same pruned model before the fine-tune."""

    label: str
    group: str
    config: PruneConfig | None
    finetune: bool = False
    before: str | None = None


def recipe(pattern: str, method: str = "sparsegpt", equalize: bool = True, vc: bool = True,
           salient: bool = True, **options) -> PruneConfig:
    """The full recipe at ``pattern``, with components switched off by keyword."""
    return PruneConfig(Target.parse(pattern), method,
                       Salient.parse(SIDE_CAR) if salient else None,
                       variance_correction=vc, equalize_alpha=0.5 if equalize else None,
                       **options)


def plain(pattern: str, **options) -> PruneConfig:
    return recipe(pattern, equalize=False, vc=False, salient=False, **options)


def _leave_one_out(pattern: str, finetune: bool) -> list[Run]:
    ft = f" +FT{FINETUNE_STEPS}" if finetune else ""
    variants = [("no EQ", {"equalize": False}), ("no VC", {"vc": False}),
                ("no side-car", {"salient": False}), ("Wanda for SparseGPT", {"method": "wanda"})]
    return [Run(f"{pattern} full, {what}{ft}", "leave-one-out", recipe(pattern, **change),
                finetune, f"{pattern} full, {what}" if finetune else None)
            for what, change in variants]


def runs() -> list[Run]:
    """Every run, in priority order (the fine-tunes, four times a plain row's cost, after the
    un-fine-tuned leave-one-out and the iso rows)."""
    full = f"8:16 full (SparseGPT +EQ +VC +side-car {SIDE_CAR} +FT{FINETUNE_STEPS})"
    return [
        Run("8:16 full, no FT", "leave-one-out", recipe("8:16")),
        *_leave_one_out("8:16", finetune=False),
        Run("8:16 SparseGPT", "iso", plain("8:16")),
        Run("9:16 SparseGPT (iso-count)", "iso", plain("9:16")),
        Run(f"8:16 SparseGPT +side-car {SIDE_CAR}", "iso",
            recipe("8:16", equalize=False, vc=False)),
        Run(f"dense +FT{FINETUNE_STEPS} (control)", "fine-tune control", None, True, "dense"),
        Run(full, "leave-one-out", recipe("8:16"), True, "8:16 full, no FT"),
        Run("11:16 SparseGPT (iso-bits, fp32 side-car)", "iso", plain("11:16")),
        Run(f"8:16 SparseGPT +side-car {SIDE_CAR} fp16", "iso",
            recipe("8:16", equalize=False, vc=False, salient_dtype="float16")),
        Run("8:16 full, no FT, VC least-squares", "vc-variants",
            recipe("8:16", vc_gain="least-squares")),
        Run("8:16 full, no FT, VC mean+var", "vc-variants", recipe("8:16", match_mean=True)),
        Run("8:16 full, no FT, VC output projections only", "vc-variants",
            recipe("8:16", vc_scope="output-projections")),
        Run("10:16 SparseGPT (iso-bits, fp16 side-car)", "iso", plain("10:16")),
        Run("8:16 full, no FT, side-car fp16", "iso", recipe("8:16", salient_dtype="float16")),
        Run("8:16 Wanda", "vc-variants", PruneConfig(Target.parse("8:16"), "wanda")),
        Run("8:16 Wanda +VC", "vc-variants",
            PruneConfig(Target.parse("8:16"), "wanda", variance_correction=True)),
        Run("8:16 Wanda +VC least-squares", "vc-variants",
            PruneConfig(Target.parse("8:16"), "wanda", variance_correction=True,
                        vc_gain="least-squares")),
        *_leave_one_out("8:16", finetune=True),
        Run(full.replace("8:16", "2:4"), "leave-one-out", recipe("2:4"), True, "2:4 full, no FT"),
        *_leave_one_out("2:4", finetune=False),
        Run("2:4 SparseGPT", "iso", plain("2:4")),
        Run("8:16 Wanda, sequential propagation", "propagation",
            PruneConfig(Target.parse("8:16"), "wanda", propagate="sequential")),
        Run("8:16 SparseGPT, sequential propagation", "propagation",
            plain("8:16", propagate="sequential")),
    ]


def data_identity(described: dict) -> dict:
    """The data description with each text file named by its contents (SHA-256), not its path,
    so a row measured in one clone is found in another and an edited file is a new row."""
    identity = dict(described)
    for field in ("calib_path", "eval_path", "finetune_path"):
        if identity.get(field):
            with open(identity[field], "rb") as handle:
                identity[field] = hashlib.file_digest(handle, "sha256").hexdigest()
    return identity


def row_key(config: PruneConfig | None, finetune_steps: int, protocol: Protocol) -> str:
    """A short hash of everything that decides a row's numbers."""
    content = {"recipe": None if config is None else config.describe(),
               "finetune_steps": finetune_steps,
               "protocol": {**protocol.__dict__, "finetune_steps": None, "calib_path": None,
                            "eval_path": None},
               "data": data_identity(protocol.data().describe())}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


def run_rows(run: Run, protocol: Protocol) -> list[tuple[str, str, int]]:
    """(label, key, fine-tune steps) of each row a run yields."""
    rows = []
    if run.before is not None or not run.finetune:
        rows.append((run.before or run.label, row_key(run.config, 0, protocol), 0))
    if run.finetune:
        steps = protocol.finetune_steps
        rows.append((run.label, row_key(run.config, steps, protocol), steps))
    return rows


def evaluation_subset(split: np.ndarray, count: int) -> np.ndarray:
    """Indices of ``count`` windows evenly spaced over a split of ``len(split)`` windows
    (first and last included; deterministic, so every row sees the same windows)."""
    total = len(split)
    if not 2 <= count <= total:
        raise ValueError(f"evaluation subset must hold 2..{total} windows, got {count}")
    return np.unique(np.linspace(0, total - 1, count).round().astype(int))


@contextmanager
def _locked(path: Path):
    """An exclusive lock beside ``path`` (several workers append to the same CSV files)."""
    with open(path.parent / f".{path.name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def finished_keys(out_dir: Path) -> set[str]:
    csv_path = out_dir / CSV_NAME
    return set(pd.read_csv(csv_path)["key"]) if csv_path.is_file() else set()


def append_row(out_dir: Path, record: dict, window_nll: list, window_tokens: list,
               window_index: np.ndarray) -> None:
    """Append one finished row and its per-window NLL sums (under the lock)."""
    csv_path, windows_path = out_dir / CSV_NAME, out_dir / WINDOWS_NAME
    with _locked(csv_path):
        pd.DataFrame({"key": record["key"], "window": window_index, "nll": window_nll,
                      "tokens": window_tokens}).to_csv(
            windows_path, mode="a", header=not windows_path.is_file(), index=False)
        pd.DataFrame([record]).to_csv(csv_path, mode="a", header=not csv_path.is_file(),
                                      index=False)


def _record(run: Run, label: str, key: str, steps: int, metrics: dict, protocol: Protocol,
            split_windows: int) -> dict:
    """One CSV row: the configuration (also whole, as JSON) and how it measured."""
    cfg = {} if run.config is None else run.config.describe()
    timings = metrics.get("timings", {})
    return {"key": key, "label": label, "group": run.group,
            "pattern": cfg.get("pattern", "dense"), "method": cfg.get("method", "dense"),
            "salient": cfg.get("salient"), "salient_dtype": cfg.get("salient_dtype"),
            "variance_correction": cfg.get("variance_correction", False),
            "vc_match_mean": cfg.get("variance_correction_match_mean", False),
            "vc_gain": cfg.get("variance_correction_gain"),
            "vc_scope": cfg.get("variance_correction_scope"),
            "equalize_alpha": cfg.get("equalize_alpha"), "finetune_steps": steps,
            "perplexity": metrics["perplexity"], "mean_nll": metrics["mean_nll"],
            "windows": metrics["windows"], "split_windows": split_windows,
            "seqlen": metrics["seqlen"], "predicted_tokens": metrics["predicted_tokens"],
            "stored_bits_per_weight": metrics.get("compressed_bits_per_weight"),
            "kept_fraction": metrics.get("kept_fraction", 1.0),
            "prune_s": timings.get("prune_s"), "finetune_s": timings.get("finetune_s"),
            "eval_s": metrics["eval_seconds"], "calib_samples": protocol.calib_samples,
            "calib_seqlen": protocol.calib_seqlen, "peak_rss_mib": peak_rss_mib(),
            "config": json.dumps({"recipe": cfg or None, "finetune_steps": steps,
                                  "protocol": protocol.__dict__}, sort_keys=True)}


def _measure(run: Run, loaded, calib: np.ndarray, tune: np.ndarray, windows: np.ndarray,
             steps: int, before: bool) -> list[dict]:
    """Metrics of the rows of ``run`` on a freshly loaded model: the one before the fine-tune
    (only if ``before``), then the fine-tuned one (if the run fine-tunes)."""
    from compression.finetune import finetune_dense
    from compression.perplexity import perplexity

    if run.config is None:
        out = [{**perplexity(loaded.model, windows, progress=False), "timings": {}}]
        if run.finetune:
            start = time.perf_counter()
            finetune_dense(loaded.model, tune, steps, progress=False)
            finetune_s = time.perf_counter() - start
            out.append({**perplexity(loaded.model, windows, progress=False),
                        "timings": {"finetune_s": finetune_s}})
        return out if before else out[1:]
    metrics, _ = prune_and_evaluate(loaded, run.config, calib, windows,
                                    steps if run.finetune else 0, progress=False,
                                    eval_before_finetune=run.finetune and before,
                                    finetune_windows=tune)
    if "before_finetune" not in metrics:
        return [metrics]
    first = {**metrics, **metrics["before_finetune"],
             "timings": {"prune_s": metrics["timings"]["prune_s"]}}
    return [first, metrics]


def select_runs(worker: tuple[int, int] = (0, 1), only: list[str] | None = None,
                labels: list[str] | None = None) -> list[Run]:
    """This worker's share of the runs: those whose label contains one of ``only``, or exactly
    the ``labels`` in the order given (``only`` matches substrings, so "8:16 full, no EQ" also
    selects its fine-tuned run)."""
    share = [r for i, r in enumerate(runs()) if i % worker[1] == worker[0]]
    if labels:
        by_label = {r.label: r for r in share}
        unknown = [label for label in labels if label not in {r.label for r in runs()}]
        if unknown:
            raise ValueError(f"unknown ablation run {unknown[0]!r} (see `ablation.runs()`)")
        return [by_label[label] for label in labels if label in by_label]
    return [r for r in share if not only or any(part in r.label for part in only)]


def run_all(out_dir: Path, protocol: Protocol, worker: tuple[int, int] = (0, 1),
            only: list[str] | None = None, model: str | None = None,
            labels: list[str] | None = None) -> int:
    """Measure every pending run of this worker's share; returns how many rows it appended."""
    import torch

    from workloads import text
    from workloads.loading import SMOLLM2_NAME, load_model

    pending = select_runs(worker, only, labels)
    out_dir.mkdir(parents=True, exist_ok=True)
    done = finished_keys(out_dir)
    pending = [r for r in pending if any(k not in done for _, k, _ in run_rows(r, protocol))]
    if not pending:
        return 0
    data = protocol.data()
    loaded = load_model(model or SMOLLM2_NAME)
    calib = data.calibration(loaded.tokenizer)
    tune = data.finetune(loaded.tokenizer, calib)
    split = text.eval_windows(text.tokenize(loaded.tokenizer,
                                            data.eval_path or text.default_path("eval")),
                              protocol.eval_seqlen)
    index = evaluation_subset(split, protocol.eval_windows)
    appended = 0
    for number, run in enumerate(pending):
        print(f"== {run.label}", flush=True)
        if number:  # every run starts from the dense weights
            loaded = load_model(model or SMOLLM2_NAME)
        if next(loaded.model.parameters()).dtype != torch.float32:
            loaded.model.to(torch.float32)  # the fine-tune trains in fp32 (SmolLM2 already is)
        done = finished_keys(out_dir)
        rows = [row for row in run_rows(run, protocol) if row[1] not in done]
        before = rows[0][2] == 0
        measured = _measure(run, loaded, calib, tune, split[index], protocol.finetune_steps,
                            before)
        for (label, key, steps), metrics in zip(rows, measured, strict=True):
            record = _record(run, label, key, steps, metrics, protocol, len(split))
            append_row(out_dir, record, metrics["window_nll"], metrics["window_tokens"], index)
            print(json.dumps({k: v for k, v in record.items() if k != "config"}), flush=True)
            appended += 1
    return appended


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("run", "report"))
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    parser.add_argument("--worker", default="0/1", help="I/K: run every K-th run from I")
    choose = parser.add_mutually_exclusive_group()
    choose.add_argument("--only", nargs="+", action="extend", metavar="TEXT",
                        help="only runs whose label contains one of these texts")
    choose.add_argument("--label", nargs="+", action="extend", metavar="LABEL",
                        help="exactly these runs, in this order")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--eval-windows", type=int, default=Protocol.eval_windows,
                        help="test windows per row, evenly spaced (595: the whole WikiText-2 "
                             "test split at 512 tokens); part of every row's key")
    args = parser.parse_args(argv)
    protocol = Protocol(eval_windows=args.eval_windows)
    if args.action == "report":
        from compression.ablation_report import write_report

        print(write_report(args.out, protocol))
        return 0
    import torch

    torch.set_num_threads(args.threads)
    index, count = (int(part) for part in args.worker.split("/"))
    if not 0 <= index < count:
        parser.error(f"--worker {args.worker}: I must be in [0, K)")
    try:
        select_runs((index, count), args.only, args.label)
    except ValueError as error:
        parser.error(str(error))
    appended = run_all(args.out, protocol, (index, count), args.only, labels=args.label)
    print(f"{appended} rows appended to {args.out / CSV_NAME}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
