"""The SmolLM2-135M pruning experiment behind ``reports/compression/[screen/]smollm2-135m.*``.

    PYTHONPATH=. python -m compression.experiment [--eval-windows W] [--calib-samples C]

Rows: dense; 2:4, 4:8, 8:16, 16:32 and 50% unstructured with magnitude, Wanda and SparseGPT; then
for 2:4 and 8:16: Wanda + variance correction, Wanda + equalization (alpha 0.5), Wanda + salient
16:256 structured, Wanda + salient unstructured with the same count, and the combination
SparseGPT + equalization + variance correction + salient 16:256 (optionally fine-tuned). The model
is loaded once; each row starts again from the dense weights. Rows already in the CSV are kept
(the run resumes), so a long run can be stopped and restarted.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import torch

from compression.criteria import METHODS, Salient, Target
from compression.experiment_grid import Grid, GridRow, RowConfig, grid_path
from compression.formats import bits_per_element
from compression.job import DataConfig, peak_rss_mib, prune_and_evaluate
from compression.perplexity import perplexity
from compression.report import WINDOWS_SUFFIX, write_report
from workloads.loading import SMOLLM2_NAME, load_model

REPORT_DIR = Path(__file__).resolve().parent.parent / "reports" / "compression"
PATTERNS = ("2:4", "4:8", "8:16", "16:32", "50%")


@dataclass(frozen=True)
class Row:
    label: str
    group: str
    config: object  # PruneConfig, or None for the dense model
    finetune_steps: int = 0

    @property
    def key(self) -> RowConfig:
        """The configuration the CSV records for this row (and the report finds it by)."""
        if self.config is None:
            return RowConfig("dense", "dense")
        recipe = self.config.describe()
        return RowConfig(pattern=recipe["pattern"], method=recipe["method"],
                         salient=recipe["salient"],
                         variance_correction=recipe["variance_correction"],
                         equalize_alpha=recipe["equalize_alpha"],
                         finetune_steps=self.finetune_steps)


def grid(finetune_steps: int = 0) -> list[Row]:
    """The experiment's rows, in run order (cheapest first within each group)."""
    from compression.pipeline import PruneConfig

    rows = [Row("dense", "dense", None)]
    # The headline patterns first, so a run cut short still answers the method's claims.
    for pattern in ("2:4", "8:16"):
        rows += [Row(f"{pattern} {method}", "methods", PruneConfig(Target.parse(pattern), method))
                 for method in METHODS]
    for pattern in ("2:4", "8:16"):
        target = Target.parse(pattern)
        rows += [
            Row(f"{pattern} wanda +VC", "corrections",
                PruneConfig(target, "wanda", variance_correction=True)),
            Row(f"{pattern} wanda +EQ0.5", "corrections",
                PruneConfig(target, "wanda", equalize_alpha=0.5)),
            # Wanda's and SparseGPT's scores are invariant to W diag(s), X diag(s)^-1; |W| is not.
            Row(f"{pattern} magnitude +EQ0.5", "corrections",
                PruneConfig(target, "magnitude", equalize_alpha=0.5)),
            Row(f"{pattern} wanda +salient 16:256", "salient",
                PruneConfig(target, "wanda", salient=Salient.parse("16:256"))),
            Row(f"{pattern} wanda +salient unstructured(16:256)", "salient",
                PruneConfig(target, "wanda", salient=Salient.parse("16:256", unstructured=True))),
            Row(f"{pattern} sparsegpt +EQ0.5 +VC +salient 16:256", "combination",
                PruneConfig(target, "sparsegpt", salient=Salient.parse("16:256"),
                            variance_correction=True, equalize_alpha=0.5)),
        ]
    for pattern in ("4:8", "16:32", "50%"):
        rows += [Row(f"{pattern} {method}", "methods", PruneConfig(Target.parse(pattern), method))
                 for method in METHODS]
    if finetune_steps:
        for pattern in ("2:4", "8:16"):
            rows.append(Row(f"{pattern} sparsegpt +EQ0.5 +VC +salient 16:256 +FT{finetune_steps}",
                            "combination",
                            PruneConfig(Target.parse(pattern), "sparsegpt",
                                        salient=Salient.parse("16:256"),
                                        variance_correction=True, equalize_alpha=0.5),
                            finetune_steps))
    return rows


def recorded_grid(finetune_steps: int = 0) -> Grid:
    """:func:`grid` as data, as :func:`run` writes it beside the CSV for the report."""
    return Grid(finetune_steps, tuple(GridRow(row.label, row.group, row.key)
                                      for row in grid(finetune_steps)))


def run(out_dir: Path, data: DataConfig, finetune_steps: int, only: list[str] | None) -> Path:
    """Run every row not yet in the CSV, appending each result as it finishes.

    A fine-tuned row whose un-fine-tuned twin is also pending is pruned once: the twin's figure
    is measured before the fine-tune (same masks, same weights) and written first.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / "smollm2-135m.csv"
    recorded_grid(finetune_steps).write(grid_path(csv_path))
    done = set(pd.read_csv(csv_path)["label"]) if csv_path.is_file() else set()
    rows = [r for r in grid(finetune_steps) if r.label not in done
            and (not only or any(part in r.label for part in only))]
    if not rows:
        return csv_path
    twins = {r.label: t for r in rows if r.finetune_steps for t in rows
             if not t.finetune_steps and t.config == r.config}
    rows = [r for r in rows if r not in twins.values()]
    loaded = load_model(SMOLLM2_NAME)
    dense_state = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    calib = data.calibration(loaded.tokenizer)
    windows, split_windows = data.evaluation_and_split(loaded.tokenizer)

    def append(row: Row, metrics: dict) -> None:
        record = flatten(row, metrics, data, split_windows)
        print(json.dumps(record), flush=True)
        pd.DataFrame([record]).to_csv(csv_path, mode="a", header=not csv_path.is_file(),
                                      index=False)
        if "window_nll" in metrics:  # the report's bootstrap intervals resample these
            per_window = csv_path.with_name(csv_path.stem + WINDOWS_SUFFIX)
            pd.DataFrame({"label": row.label, "window": range(len(metrics["window_nll"])),
                          "nll": metrics["window_nll"], "tokens": metrics["window_tokens"]}
                         ).to_csv(per_window, mode="a", header=not per_window.is_file(),
                                  index=False)

    for row in rows:
        loaded.model.load_state_dict(dense_state)
        twin = twins.get(row.label)
        print(f"== {row.label}" + (f" (and {twin.label})" if twin else ""), flush=True)
        if row.config is None:
            metrics = {"model": loaded.name, "pattern": "dense", "method": "dense",
                       **perplexity(loaded.model, windows), "timings": {}}
        else:
            metrics, _ = prune_and_evaluate(loaded, row.config, calib, windows,
                                            row.finetune_steps,
                                            eval_before_finetune=twin is not None)
        if twin is not None:
            timings = {"prune_s": metrics["timings"]["prune_s"]}
            append(twin, {**metrics, **metrics["before_finetune"], "timings": timings})
        append(row, metrics)
    return csv_path


def flatten(row: Row, metrics: dict, data: DataConfig, split_windows: int) -> dict:
    """One CSV record; ``split_windows`` is how many windows the whole test split holds."""
    pattern = row.key.pattern
    structured = ":" in pattern
    return {
        "label": row.label, "group": row.group, **asdict(row.key),
        "perplexity": metrics["perplexity"], "mean_nll": metrics["mean_nll"],
        "seqlen": metrics["seqlen"], "windows": metrics["windows"],
        "split_windows": split_windows,
        "predicted_tokens": metrics["predicted_tokens"],
        "rank_metadata_bits_per_element": bits_per_element(pattern, "rank") if structured
        else None,
        "stored_bits_per_weight": metrics.get("compressed_bits_per_weight"),
        "kept_fraction": metrics.get("kept_fraction", 1.0),
        "prune_s": metrics["timings"].get("prune_s"),
        "finetune_s": metrics["timings"].get("finetune_s"),
        "eval_s": metrics["eval_seconds"],
        "calib_samples": data.calib_samples if row.config is not None else None,
        "calib_seqlen": data.calib_seqlen if row.config is not None else None,
        "peak_rss_mib": peak_rss_mib(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPORT_DIR)
    parser.add_argument("--eval-windows", type=int, default=None,
                        help="first W windows of the test split (default: all)")
    parser.add_argument("--seqlen", type=int, default=512)
    parser.add_argument("--calib-samples", type=int, default=128)
    parser.add_argument("--calib-seqlen", type=int, default=512)
    parser.add_argument("--finetune-steps", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (1 is fastest on a crowded machine)")
    parser.add_argument("--only", nargs="+", action="extend", metavar="TEXT",
                        help="run only rows whose label contains one of these texts")
    parser.add_argument("--report-only", action="store_true", help="rebuild md/png from the CSV")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    data = DataConfig(calib_samples=args.calib_samples, calib_seqlen=args.calib_seqlen,
                      eval_seqlen=args.seqlen, eval_windows=args.eval_windows)
    csv_path = args.out / "smollm2-135m.csv"
    if args.report_only:
        for needed in (csv_path, grid_path(csv_path)):
            if not needed.is_file():
                parser.error(f"--report-only: {needed} does not exist (run the experiment first)")
    else:
        csv_path = run(args.out, data, args.finetune_steps, args.only)
    command_file = csv_path.with_suffix(".command")
    if not args.report_only:
        argv_text = " ".join(sys.argv[1:] if argv is None else argv)
        command_file.write_text(f"PYTHONPATH=. python -m compression.experiment {argv_text}\n")
    write_report(csv_path, command_file.read_text().strip())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


