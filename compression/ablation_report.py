"""Markdown report and chart of the ablation (``reports/compression/ablation/``), from its CSVs.

Rows are found by configuration key (:func:`compression.ablation.row_key` of the run list under
the default protocol), not by label, so a row measured under another protocol is not compared.
Every verdict is a paired bootstrap interval over the evaluation windows
(:mod:`compression.uncertainty`); an interval that includes zero reads "not distinguishable".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from compression.ablation import (
    CSV_NAME,
    FINETUNE_STEPS,
    SIDE_CAR,
    WINDOWS_NAME,
    Protocol,
    run_rows,
    runs,
)
from compression.uncertainty import (
    RESAMPLES,
    SEED,
    Interval,
    difference_verdict,
    paired_difference,
    perplexity_interval,
)

FULL = "8:16 full, no FT"
FULL_FT = f"8:16 full (SparseGPT +EQ +VC +side-car {SIDE_CAR} +FT{FINETUNE_STEPS})"


@dataclass
class Table:
    """The finished rows (by label of the run list) and their per-window NLL sums."""

    rows: pd.DataFrame  # indexed by label
    nll: dict[str, np.ndarray]
    tokens: np.ndarray
    protocol: Protocol

    @classmethod
    def read(cls, out_dir: Path, protocol: Protocol | None = None) -> Table:
        protocol = protocol or Protocol()
        table = pd.read_csv(out_dir / CSV_NAME)
        windows = pd.read_csv(out_dir / WINDOWS_NAME)
        labels = {key: label for run in runs() for label, key, _ in run_rows(run, protocol)}
        table = table[table["key"].isin(labels)].drop_duplicates("key")
        table = table.assign(label=table["key"].map(labels)).set_index("label")
        nll, tokens = {}, None
        for label, key in zip(table.index, table["key"], strict=True):
            mine = windows[windows["key"] == key].sort_values("window")
            nll[label] = mine["nll"].to_numpy()
            tokens = mine["tokens"].to_numpy() if tokens is None else tokens
        return cls(table, nll, tokens, protocol)

    def has(self, *labels: str) -> bool:
        return all(label in self.rows.index for label in labels)

    def ppl(self, label: str) -> Interval:
        return perplexity_interval(self.nll[label], self.tokens)

    def diff(self, base: str, other: str) -> Interval:
        """ppl(other) / ppl(base) - 1, paired over the windows."""
        return paired_difference(self.nll[base], self.nll[other], self.tokens)

    def net(self, base: str, other: str, control_base: str, control_other: str) -> Interval:
        """(ppl(other)/ppl(base)) / (ppl(control_other)/ppl(control_base)) - 1: a change net of
        the same change on the control, paired over the windows (the log-ratios subtract)."""
        return paired_difference(self.nll[base] + self.nll[control_other],
                                 self.nll[other] + self.nll[control_base], self.tokens)


def pct(interval: Interval) -> str:
    return (f"{interval.estimate * 100:+.2f}% [{interval.low * 100:+.2f}, "
            f"{interval.high * 100:+.2f}]")


def compare(table: Table, base: str, other: str, what: str, lower: str = "perplexity lower",
            higher: str = "perplexity higher") -> str:
    """One verdict line: ``other`` against ``base`` (``lower`` / ``higher`` name what a
    distinguishable change means), or which rows are missing."""
    if not table.has(base, other):
        missing = "; ".join(label for label in (base, other) if not table.has(label))
        return f"- {what}: **not measured** (not run: {missing})."
    diff = table.diff(base, other)
    word = {"lower": lower, "higher": higher, "not distinguishable": "not distinguishable"}[
        difference_verdict(diff)]
    return (f"- {what}: {table.ppl(base).estimate:.2f} -> {table.ppl(other).estimate:.2f}, "
            f"{pct(diff)}: **{word}**.")


def share_lines(table: Table, full: str, removed: dict[str, str], plain: str) -> list[str]:
    """Each component's share: the perplexity rise when it alone is removed, and that rise's
    log-ratio as a fraction of the whole log-ratio from ``plain`` to ``full``."""
    lines = [compare(table, full, label, f"without {what}", "it hurts: removing it lowers "
                     "perplexity", "it helps: removing it raises perplexity")
             for what, label in removed.items()]
    if not table.has(full, plain):
        return lines
    total = np.log(table.ppl(plain).estimate / table.ppl(full).estimate)
    lines.append(f"- Whole recipe against {plain}: {table.ppl(plain).estimate:.2f} -> "
                 f"{table.ppl(full).estimate:.2f} ({pct(table.diff(plain, full))}).")
    for what, label in removed.items():
        if table.has(label) and total > 0:
            part = np.log(table.ppl(label).estimate / table.ppl(full).estimate) / total
            lines.append(f"  - {what}: {part * 100:.0f}% of that log-perplexity gap (leave-"
                         "one-out shares need not add to 100%: the components interact).")
    return lines


def _removed(pattern: str, suffix: str = "") -> dict[str, str]:
    return {"equalization": f"{pattern} full, no EQ{suffix}",
            "variance correction": f"{pattern} full, no VC{suffix}",
            f"side-car {SIDE_CAR}": f"{pattern} full, no side-car{suffix}",
            "SparseGPT (Wanda in its place)": f"{pattern} full, Wanda for SparseGPT{suffix}"}


def leave_one_out_section(table: Table) -> list[str]:
    lines = ["## Leave-one-out (8:16)", "",
             (f"Reference: the full recipe before its fine-tune ({FULL}); each line removes one "
             "component (paired difference, 95% interval)."), ""]
    lines += share_lines(table, FULL, _removed("8:16"), "8:16 SparseGPT")
    lines.append(compare(table, FULL, FULL_FT, f"with the {FINETUNE_STEPS}-step fine-tune"))
    ft = f" +FT{FINETUNE_STEPS}"
    if any(table.has(label) for label in _removed("8:16", ft).values()):
        lines += ["", "With the fine-tune on every row:", ""]
        lines += share_lines(table, FULL_FT, _removed("8:16", ft), "8:16 SparseGPT")
    full_24 = FULL.replace("8:16", "2:4")
    lines += ["", "## Leave-one-out (2:4)", ""]
    lines += share_lines(table, full_24, _removed("2:4"), "2:4 SparseGPT")
    lines.append(compare(table, full_24, FULL_FT.replace("8:16", "2:4"),
                         f"with the {FINETUNE_STEPS}-step fine-tune"))
    return lines


def finetune_section(table: Table) -> list[str]:
    dense_ft = f"dense +FT{FINETUNE_STEPS} (control)"
    lines = ["## Fine-tune control", "",
             (f"The dense model fine-tuned like the pruned one ({FINETUNE_STEPS} steps, AdamW lr "
             "1e-5, batch 2, on the calibration windows of the validation split): what the "
             "training text alone gives."), "",
             compare(table, "dense", dense_ft, "dense model, fine-tuned"),
             compare(table, FULL, FULL_FT, "full 8:16 recipe, fine-tuned")]
    if table.has("dense", dense_ft, FULL, FULL_FT):
        net = table.net(FULL, FULL_FT, "dense", dense_ft)
        words = {"lower": "gains beyond the control's", "higher": "gains less than the control",
                 "not distinguishable": "not distinguishable from the control's"}
        lines.append(f"- Pruned model's fine-tune change net of the dense control's: {pct(net)}:"
                     f" **{words[difference_verdict(net)]}**.")
    else:
        lines.append("- Net fine-tune gain: **not measured** (needs the four rows above).")
    return lines


def iso_section(table: Table) -> list[str]:
    side = f"8:16 SparseGPT +side-car {SIDE_CAR}"
    rows = [("8:16 SparseGPT", side, "side-car added (more weights kept)"),
            ("9:16 SparseGPT (iso-count)", side, ("8:16 + side-car against 9:16 (same kept "
             "count)")),
            ("11:16 SparseGPT (iso-bits, fp32 side-car)", side, ("8:16 + fp32 side-car "
             "against 11:16 (about the same stored bits)")),
            (side, f"{side} fp16", "side-car values in fp16 instead of fp32"),
            ("10:16 SparseGPT (iso-bits, fp16 side-car)", f"{side} fp16", ("8:16 + fp16 "
             "side-car against 10:16 (about the same stored bits)")),
            (FULL, "8:16 full, no FT, side-car fp16", "full recipe, side-car in fp16")]
    lines = ["## Iso-count and iso-storage", "",
             ("Each side-car row beside the plain N:M pattern with the same kept fraction or the "
             "same stored bits per weight (columns kept and bits/weight in the table; SparseGPT, "
             "no other correction, no fine-tune)."), ""]
    return lines + [compare(table, base, other, what) for base, other, what in rows]


def propagation_section(table: Table) -> list[str]:
    rows = [("8:16 Wanda", "8:16 Wanda, sequential propagation", "Wanda"),
            ("8:16 SparseGPT", "8:16 SparseGPT, sequential propagation", "SparseGPT")]
    lines = ["## Sequential propagation (`--propagate sequential`) against the default", "",
             ("The default (`pruned`) observes a whole decoder layer dense, prunes it, and runs "
              "it again for the next layer's inputs; `sequential` prunes q/k/v, o_proj, gate/up "
              "and down in turn inside one forward, so o_proj, gate/up and down are observed on "
              "the outputs of already-pruned groups (half the calibration matmuls)."), ""]
    return lines + [compare(table, base, other, what) for base, other, what in rows]


def vc_section(table: Table) -> list[str]:
    variants = [("8:16 full, no VC", FULL, "variance matched (the recipe's), against none"),
                (FULL, "8:16 full, no FT, VC mean+var", "mean and variance matched"),
                (FULL, "8:16 full, no FT, VC least-squares", "least-squares gain"),
                (FULL, "8:16 full, no FT, VC output projections only",
                 "only o_proj and down_proj corrected"),
                ("8:16 full, no VC", "8:16 full, no FT, VC least-squares",
                 "least-squares gain against none"),
                ("8:16 Wanda", "8:16 Wanda +VC", "after Wanda: variance matched"),
                ("8:16 Wanda", "8:16 Wanda +VC least-squares", "after Wanda: least-squares")]
    lines = ["## Variance-correction variants", "",
             ("Inside the full recipe before its fine-tune (against the recipe's own variance "
             "matching, or against no correction), and after Wanda alone. The least-squares "
             "gain a_i = <y_i, y'_i> / <y'_i, y'_i> over the calibration tokens is the scale "
             "that minimises the output error; matching the variance instead scales pruning "
             "noise up with the signal."), ""]
    return lines + [compare(table, base, other, what) for base, other, what in variants]


def _cell(value, fmt: str) -> str:
    return "" if value is None or pd.isna(value) else format(value, fmt)


def markdown_table(table: Table) -> str:
    """Every finished row in run order, with its interval and its paired change against the
    full recipe before fine-tune."""
    head = ("| row | kept | bits/weight | FT steps | perplexity [95% CI] | vs full recipe "
            "(no FT) | prune s | FT s | eval s |\n|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for label, row in table.rows.iterrows():
        ppl = table.ppl(label)
        versus = (pct(table.diff(FULL, label)) if table.has(FULL) and label != FULL else "")
        lines.append(f"| {label} | {row['kept_fraction']:.4f} | "
                     f"{_cell(row['stored_bits_per_weight'], '.3f')} | {row['finetune_steps']} | "
                     f"{ppl.estimate:.2f} [{ppl.low:.2f}, {ppl.high:.2f}] | {versus} | "
                     f"{_cell(row['prune_s'], '.0f')} | {_cell(row['finetune_s'], '.0f')} | "
                     f"{row['eval_s']:.0f} |")
    return "\n".join(lines)


def plot(table: Table, stem: Path) -> None:
    """Left: perplexity of every finished row with its 95% interval; right: its paired change
    against the full recipe before fine-tune (where the leave-one-out verdicts are read)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(table.rows.index)
    colours = [{"leave-one-out": "C0", "fine-tune control": "C2", "iso": "C1",
                "vc-variants": "C3"}.get(g, "C7") for g in table.rows["group"]]
    fig, axes = plt.subplots(1, 2, sharey=True, figsize=(11, 0.38 * len(labels) + 1.6))
    panels = [([table.ppl(label) for label in labels], 1.0, "perplexity (95% bootstrap CI)")]
    if table.has(FULL):
        panels.append(([table.diff(FULL, label) for label in labels], 100.0,
                       f"change vs {FULL}, % (paired 95% CI)"))
    for ax, (intervals, scale, title) in zip(axes, panels, strict=False):
        estimate = np.array([i.estimate for i in intervals]) * scale
        errors = np.array([[i.estimate - i.low for i in intervals],
                           [i.high - i.estimate for i in intervals]]) * scale
        ax.barh(range(len(labels)), estimate, xerr=errors, capsize=3, color=colours)
        ax.set_xlabel(title)
        ax.axvline(0, color="black", linewidth=0.6)
    axes[0].set_yticks(range(len(labels)), labels, fontsize=8)
    axes[0].invert_yaxis()
    fig.suptitle(f"SmolLM2-135M ablation ({len(table.tokens)} WikiText-2 test windows)")
    fig.tight_layout()
    for suffix in (".png", ".svg"):
        fig.savefig(stem.with_suffix(suffix), dpi=120)
    plt.close(fig)


def not_run(table: Table) -> list[str]:
    labels = [label for run in runs() for label, _, _ in run_rows(run, table.protocol)]
    return [label for label in dict.fromkeys(labels) if not table.has(label)]


def protocol_text(table: Table, windows: np.ndarray) -> list[str]:
    p = table.protocol
    split = int(table.rows["split_windows"].iloc[0])
    return [
        "## How it was measured", "",
        (f"- Model SmolLM2-135M (fp32). Calibration: {p.calib_samples} windows x "
        f"{p.calib_seqlen} tokens drawn (seed 0) from the WikiText-2 validation split; the "
        f"fine-tune ({p.finetune_steps} steps, AdamW lr 1e-5, batch 2) trains on the same "
        "windows. Both are refused in code when they come from the test text "
        "(`DataConfig.calibration`, `DataConfig.finetune`)."),
        (f"- Evaluation: **all {split} test-split windows** of {p.eval_seqlen} tokens, the "
         "same for every row." if len(windows) == split else
         f"- Evaluation: **{len(windows)} of the {split} test-split windows** of "
         f"{p.eval_seqlen} tokens, evenly spaced (windows {', '.join(map(str, windows))}), the "
         "same for every row. **Not the whole split**: on this machine (2 cores shared by "
         "seven sessions, this job at nice 19 with one thread per process) a whole-split row "
         "took 25-60 min, so the ~25 rows would have needed a day; the intervals below are "
         "those of this subset, so they are wider than whole-split ones would be."),
        (f"- Intervals: percentile bootstrap over the evaluation windows, {RESAMPLES:,} "
        f"resamples, seed {SEED}; differences are paired (the same windows drawn for both "
        "rows) and a difference whose 95% interval includes zero is **not distinguishable**."),
        ("- Each row starts from the freshly loaded dense model; rows are keyed by the hash of "
        "their configuration (recipe, fine-tune steps, protocol) and the runner resumes."),
        ("- Absolute perplexities of pruned rows are not those of "
         "`reports/compression/smollm2-135m.md` (128 calibration windows, whole split): fewer "
         "calibration windows give SparseGPT a noisier Hessian"
         + (" (its dense row is measured on these same windows)." if len(windows) == split
            else ", and the subset is not the split.") + " Compare rows within this table."),
        ("- Timings (prune s, FT s, eval s) are wall seconds on a 2-core machine shared with "
         "other jobs: they say little about the code's speed."), ""]


def write_report(out_dir: Path, protocol: Protocol | None = None) -> Path:
    """Write ``ablation.md`` and the chart from the CSVs in ``out_dir`` (rows of ``protocol``,
    by default the runner's)."""
    out_dir = Path(out_dir)
    if not (out_dir / CSV_NAME).is_file():
        raise ValueError(f"{out_dir / CSV_NAME} does not exist: run the ablation first")
    table = Table.read(out_dir, protocol)
    if table.rows.empty:
        raise ValueError(f"{out_dir / CSV_NAME} holds no row of the current run list")
    windows = pd.read_csv(out_dir / WINDOWS_NAME)["window"].unique()
    plot(table, out_dir / "ablation")
    missing = not_run(table)
    lines = ["# Ablation of the best N:M recipe (SmolLM2-135M, WikiText-2)", "",
             ("Generated by `PYTHONPATH=. python -m compression.ablation report` from "
             f"`{CSV_NAME}` and `{WINDOWS_NAME}` (rows appended by `python -m "
             "compression.ablation run`)."), "", *protocol_text(table, windows),
             "## Rows", "", markdown_table(table), "", "![ablation](ablation.png)", "",
             *leave_one_out_section(table), "", *finetune_section(table), "",
             *iso_section(table), "", *vc_section(table), "", *propagation_section(table), "",
             "## Rows not run", "",
             *([f"- {label}" for label in missing] or ["- none"]), ""]
    path = out_dir / "ablation.md"
    path.write_text("\n".join(lines))
    return path
