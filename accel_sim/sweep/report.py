"""Sweep reports: a results store -> summary.md, results.csv, PNG charts and one HTML page.

Figures per design point come straight from the simulator's workload result; derived columns are:

* ``tops_per_mm2`` = effective (dense-equivalent) TFLOP/s / area in mm2;
* ``speedup_vs_dense`` = total cycles of the point's dense twin (the spec's ``baseline``
  overrides applied to the same point) / the point's total cycles;
* ``bytes_per_weight``: stored bytes per dense weight element, values plus metadata, from
  :mod:`compression.formats` (recorded by the evaluator);
* ``dominant_stall``: the stall cause with the most cycles (``none`` when there are no stalls).

Compression metrics (perplexity per pattern) are joined when given: ``metrics.json`` files from
``nmsim prune --out DIR`` or CSV files with ``model``, ``pattern`` and ``perplexity`` columns.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from accel_sim.output_folder import SWEEP_REPORT, OutputFolder, check_output_folder
from accel_sim.sweep.spec import baseline_twin, point_identity, point_key
from accel_sim.sweep.store import open_store

WORKLOAD_COLUMNS = ["workload", "phase", "seq", "batch", "kv_len"]
# Hardware fields that define the N:M support itself (what the area breakdown compares).
DESIGN_FIELDS = ["pattern", "support", "encoding", "decoder", "mux_style"]
ACCURACY_TITLE = "Accuracy vs throughput vs area (best TOPS/mm2 design per pattern)"
MEMORY_MATCHED_TITLE = "Memory-matched: sparse LLaMa-2-13B vs dense LLaMa-2-7B"
NOTES = {
    ACCURACY_TITLE: "Perplexity comes only from measured compression results joined with "
    "`--compression` (the best pruning method per model and pattern, with its seqlen and window "
    "count). LLaMa-2 checkpoints cannot be reached from this machine, so LLaMa-2 perplexities "
    "are n/a, not invented.",
    MEMORY_MATCHED_TITLE: "The comparison the method is known for: a 13B model pruned N:M "
    "stores about as many bytes as a dense 7B (weight GB: pruned linears incl. lm_head at the "
    "design's bytes/weight, embeddings dense). Pass time is simulated cycles of one forward pass "
    "on the same grid. The perplexity columns stay n/a until LLaMa-2 results are joined.",
}
CHARTS = {
    "area_vs_throughput.png": "Area vs effective throughput, Pareto front marked",
    "speedup_by_pattern.png": "Speedup over the dense twin by pattern, per workload and phase",
    "area_breakdown.png": "Area breakdown per N:M design (stacked, mm2)",
    "accuracy_vs_throughput.png": "Accuracy vs throughput vs area (compression metrics joined)",
}


# ------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------


def load_results(db_path: str | Path) -> pd.DataFrame:
    """One row per stored point: workload, hardware overrides, figures and derived columns."""
    with open_store(db_path, create=False) as store:
        records = []
        cycles_by_key = {}
        for row in store.rows():
            point, result = row["point"], row["result"] or {}
            cycles_by_key[row["key"]] = result.get("total_cycles")
            record = {"key": row["key"], "identity": point_identity(point),
                      "status": row["status"], "error": row["error"],
                      "simulator": point.get("simulator"), "finished_at": row["finished_at"],
                      "hardware": point.get("hardware"), "real_masks": "masks" in point,
                      "twin_key": point_key(baseline_twin(point)) if point.get("baseline")
                      else None,
                      "elapsed_s": row["elapsed_s"]}
            record.update({c: point.get(c) for c in WORKLOAD_COLUMNS})
            record.update({f: ",".join(map(str, v)) if isinstance(v, list) else v
                           for f, v in point["hw"].items()})
            record.update(result.get("config", {}))
            record.update(_figures(result))
            records.append(record)
    frame = pd.DataFrame.from_records(records)
    if frame.empty:
        raise ValueError(f"{db_path} holds no results yet")
    # Points finish in pool order; sorting by key makes a regenerated report diff-stable.
    frame = _latest_simulator(frame).sort_values("key", kind="stable").reset_index(drop=True)
    for col in ("seq", "batch", "kv_len"):
        frame[col] = frame[col].astype("Int64")
    twin_cycles = frame["twin_key"].map(cycles_by_key)
    frame["speedup_vs_dense"] = twin_cycles / frame.get("total_cycles")
    frame["is_baseline"] = frame["twin_key"] == frame["key"]
    return frame.drop(columns=["twin_key", "identity"])


def _latest_simulator(frame: pd.DataFrame) -> pd.DataFrame:
    """Only the points of the simulator version that finished last (one store may hold several
    versions after the code changed), and of each point only the result for the latest contents
    of its input files; ``frame.attrs["stale_points"]`` counts the rest."""
    total = len(frame)
    if frame["simulator"].dropna().nunique() > 1:
        latest = frame.loc[frame["finished_at"][frame["simulator"].notna()].idxmax(), "simulator"]
        frame = frame[frame["simulator"].isna() | (frame["simulator"] == latest)]
    frame = frame.sort_values("finished_at", kind="stable").drop_duplicates("identity",
                                                                            keep="last").copy()
    frame.attrs["stale_points"] = total - len(frame)
    return frame


def _figures(result: dict) -> dict:
    if not result:
        return {}
    stalls = result.get("stall_cycles", {}) or {}
    dominant = max(stalls, key=stalls.get) if stalls and max(stalls.values()) > 0 else "none"
    area = result.get("area_mm2")
    tflops = result.get("effective_tflops")
    figures = {
        "total_cycles": result.get("total_cycles"),
        "area_mm2": area,
        "effective_tflops": tflops,
        "tops_per_mm2": tflops / area if area and tflops is not None else None,
        "utilization": result.get("utilization"),
        "bytes_per_weight": result.get("bytes_per_weight"),
        "dominant_stall": dominant,
    }
    figures.update({f"stall_{k}": v for k, v in stalls.items()})
    figures.update({f"dram_{k}": v for k, v in (result.get("dram_bytes") or {}).items()})
    figures.update({f"area_{k}": v for k, v in (result.get("area_breakdown_mm2") or {}).items()
                    if k != "total"})
    return figures


def pareto_front(cost, value) -> np.ndarray:
    """Boolean mask of points not dominated: no other has cost <= and value >=, one strictly.

    Ties (identical cost and value) are all kept. O(n log n): sort by cost, then by value
    descending, and keep each point whose value beats every cheaper point's.
    """
    cost = np.asarray(cost, dtype=float)
    value = np.asarray(value, dtype=float)
    order = np.lexsort((-value, cost))
    front = np.zeros(len(cost), dtype=bool)
    best = -np.inf
    best_cost = None
    for i in order:
        if value[i] > best:
            front[i] = True
            best, best_cost = value[i], cost[i]
        elif value[i] == best and cost[i] == best_cost:
            front[i] = True
    return front


def _has_salient(value) -> bool:
    """Whether a metrics entry's ``salient`` field names a side-car (empty/NaN/None: none)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return False
    return str(value).strip().lower() not in ("", "none", "false", "0")


def load_compression_metrics(paths) -> pd.DataFrame:
    """Best (lowest) perplexity per (model, pattern) from compression outputs.

    Accepts ``metrics.json`` files or the ``nmsim prune --out`` folders holding them (keys
    ``model``, ``pattern``, ``perplexity``), and CSV files with ``pattern`` and ``perplexity``
    columns (the model from a ``model`` column, else the file name, e.g. ``smollm2-135m.csv``).
    Several rows for one pattern (methods, corrections) keep the best, with its label. Rows with
    a salient side-car are left out: the swept designs carry no side-car, so their perplexity
    would belong to a different (larger) weight than the one simulated.
    """
    rows = []
    for path in map(Path, paths):
        if path.is_dir():
            path = path / "metrics.json"
        if not path.is_file():
            raise ValueError(f"no compression metrics at {path}")
        if path.suffix == ".csv":
            table = pd.read_csv(path)
            missing = {"pattern", "perplexity"} - set(table.columns)
            if missing:
                raise ValueError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
            if "model" not in table.columns:
                table = table.assign(model=path.stem)
            entries = table.to_dict("records")
        else:
            try:
                data = json.loads(path.read_text())
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}: not valid JSON ({exc})") from None
            entries = data if isinstance(data, list) else [data]
            for entry in entries:
                missing = {"model", "pattern", "perplexity"} - set(entry)
                if missing:
                    raise ValueError(f"{path}: missing key(s) {', '.join(sorted(missing))}")
        for entry in entries:
            if _has_salient(entry.get("salient")):
                continue
            rows.append({"model": str(entry["model"]).lower(), "pattern": str(entry["pattern"]),
                         "perplexity": float(entry["perplexity"]),
                         "method": entry.get("label") or entry.get("method") or "",
                         "seqlen": entry.get("seqlen"), "windows": entry.get("windows"),
                         "source": str(path)})
    if not rows:
        return pd.DataFrame(columns=["model", "pattern", "perplexity", "method", "seqlen",
                                     "windows", "source"])
    table = pd.DataFrame.from_records(rows).sort_values("perplexity")
    return table.groupby(["model", "pattern"], sort=True).head(1).reset_index(drop=True)


# ------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------


def write_report(db_path: str | Path, out_dir: str | Path, compression=()) -> list[Path]:
    """Write the report folder: new, empty, or an earlier report (see accel_sim.output_folder).

    Files are staged inside the folder and moved in one by one; a user's own files are kept."""
    check_output_folder(out_dir, SWEEP_REPORT)  # before any work: a refused folder costs nothing
    frame = load_results(db_path)
    metrics = load_compression_metrics(compression)
    with OutputFolder(out_dir, SWEEP_REPORT) as folder:
        tmp = folder.staging
        charts = _write_charts(frame, metrics, tmp)
        tables = _tables(frame, metrics)
        ok = frame[frame["status"] == "ok"]
        ok.drop(columns=["error"]).to_csv(tmp / "results.csv", index=False)
        if (frame["status"] == "error").any():
            frame[frame["status"] == "error"].to_csv(tmp / "errors.csv", index=False)
        (tmp / "summary.md").write_text(_markdown(frame, tables, charts))
        (tmp / "report.html").write_text(_html(frame, tables, charts, tmp))
        return folder.commit()


def _design_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in DESIGN_FIELDS if c in frame.columns]


def _workload_groups(frame: pd.DataFrame):
    ok = frame[frame["status"] == "ok"]
    cols = [c for c in WORKLOAD_COLUMNS if c in ok.columns and ok[c].notna().any()]
    for key, group in ok.groupby(cols, dropna=False, sort=True):
        title = " ".join(f"{c}={v}" for c, v in zip(cols, key) if pd.notna(v) and c != "workload")
        yield f"{key[0]} {title}", group


def _tables(frame: pd.DataFrame, metrics: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The summary tables, by title."""
    tables = {}
    design = _design_columns(frame)
    hw_cols = [c for c in _hw_columns(frame) if c not in design]
    summary_keys = [c for c in ("pattern", "support", "encoding") if c in frame.columns]
    for title, group in _workload_groups(frame):
        best = (group.sort_values("tops_per_mm2", ascending=False)
                .groupby(summary_keys, dropna=False, sort=True).head(1)
                .sort_values(summary_keys, key=_pattern_order))
        cols = design + hw_cols + ["area_mm2", "effective_tflops", "tops_per_mm2",
                                   "speedup_vs_dense", "bytes_per_weight", "dominant_stall"]
        tables[f"Per pattern and encoding (best TOPS/mm2 design) - {title}"] = best[
            [c for c in cols if c in best.columns]]
        front = group[pareto_front(group["area_mm2"], group["effective_tflops"])]
        tables[f"Pareto front (min area, max TFLOP/s) - {title}"] = front.sort_values("area_mm2")[
            [c for c in design + hw_cols + ["area_mm2", "effective_tflops", "tops_per_mm2"]
             if c in front.columns]]
    if any(c.startswith("area_") and c != "area_mm2" for c in frame.columns):
        tables["Area breakdown (mm2) per N:M datapath"] = \
            area_breakdown_table(frame).reset_index(names="design")
    stalls = frame[frame["status"] == "ok"].groupby(
        ["phase"] + design[:1] + ["dominant_stall"], dropna=False).size()
    tables["Dominant stall cause (points per phase and pattern)"] = (
        stalls.unstack("dominant_stall", fill_value=0).reset_index())
    tables.update(_accuracy_tables(frame, metrics))
    errors = frame[frame["status"] == "error"]
    if not errors.empty:
        tables["Failed points (first 20)"] = errors[
            [c for c in WORKLOAD_COLUMNS + design + ["error"] if c in errors.columns]].head(20)
    return tables


def _hw_columns(frame: pd.DataFrame) -> list[str]:
    """Columns that came from the points' hardware overrides (in spec order of appearance)."""
    skip = {"key", "status", "error", "hardware", "real_masks", "elapsed_s", "is_baseline",
            "simulator", "finished_at",
            "supported_patterns", *WORKLOAD_COLUMNS}  # supported_patterns: shown as "support"
    figures = {"total_cycles", "area_mm2", "effective_tflops", "tops_per_mm2", "utilization",
               "bytes_per_weight", "dominant_stall", "speedup_vs_dense"}
    return [c for c in frame.columns if c not in skip and c not in figures
            and not c.startswith(("stall_", "dram_", "area_"))
            and frame[c].nunique(dropna=True) > 1]


def _accuracy_tables(frame: pd.DataFrame, metrics: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Accuracy x throughput x area per pattern, and the memory-matched 13B-sparse vs 7B-dense."""
    ok = frame[(frame["status"] == "ok") & frame["pattern"].notna()] \
        if "pattern" in frame.columns else frame.iloc[0:0]
    tables = {}
    if ok.empty:
        return tables
    best = (ok.sort_values("tops_per_mm2", ascending=False)
            .groupby(["workload", "phase", "pattern"], sort=True).head(1))
    joined = best[["workload", "phase", "pattern", "effective_tflops", "area_mm2",
                   "tops_per_mm2", "bytes_per_weight"]].copy()
    ppl = {(r["model"], str(r["pattern"])): r["perplexity"] for r in metrics.to_dict("records")}
    how = {(r["model"], str(r["pattern"])): f"{r['method']} (seqlen {r['seqlen']}, "
           f"{r['windows']} windows)" for r in metrics.to_dict("records")}
    cases = list(zip(joined["workload"], joined["pattern"].astype(str)))
    joined["perplexity"] = [ppl.get(c, np.nan) for c in cases]
    joined["pruning (best)"] = [how.get(c, "not measured") for c in cases]
    tables[ACCURACY_TITLE] = joined
    if {"llama2-7b", "llama2-13b"} <= set(ok["workload"]):
        tables[MEMORY_MATCHED_TITLE] = _memory_matched(ok, ppl)
    return tables


def model_weight_gb(arch_name: str, bytes_per_weight: float, dense_bytes: float) -> float:
    """Weight storage of a model: its linears (layers and lm_head, which the simulator runs
    sparse) at ``bytes_per_weight``, the embedding table dense at ``dense_bytes``."""
    from workloads.models import ARCHITECTURES, LAYER_WEIGHTS

    arch = ARCHITECTURES[arch_name]
    linears = arch.layers * sum(n * k for n, k in map(arch.weight_shape, LAYER_WEIGHTS)) \
        + arch.vocab * arch.hidden
    return (linears * bytes_per_weight + arch.vocab * arch.hidden * dense_bytes) / 1e9


def _memory_matched(ok: pd.DataFrame, ppl: dict) -> pd.DataFrame:
    """Per phase: LLaMa-2-13B under each pattern (its best TOPS/mm2 design) against the dense
    LLaMa-2-7B on the same grid: weight storage, throughput, time per pass, perplexity."""
    rows = []
    for phase, group in ok.groupby("phase"):
        dense7 = group[(group["workload"] == "llama2-7b") & group["is_baseline"]]
        if dense7.empty:
            continue
        d7 = dense7.sort_values("tops_per_mm2", ascending=False).iloc[0]
        dense_bytes = d7["bytes_per_weight"]
        for pattern, g13 in group[group["workload"] == "llama2-13b"].groupby("pattern"):
            b = g13.sort_values("tops_per_mm2", ascending=False).iloc[0]
            rows.append({
                "phase": phase, "13B pattern": pattern,
                "13B design": b["support"] if b["support"] == "dense"
                else f"{b['support']} {b['encoding']}",
                "13B weight GB": model_weight_gb("llama2-13b", b["bytes_per_weight"],
                                                 dense_bytes),
                "7B dense weight GB": model_weight_gb("llama2-7b", dense_bytes, dense_bytes),
                "13B TFLOP/s": b["effective_tflops"], "7B dense TFLOP/s": d7["effective_tflops"],
                "13B pass time / 7B dense": b["total_cycles"] / d7["total_cycles"],
                "13B perplexity": ppl.get(("llama2-13b", str(pattern)), np.nan),
                "7B dense perplexity": ppl.get(("llama2-7b", "dense"), np.nan),
            })
    table = pd.DataFrame(rows)
    return table.sort_values(["phase", "13B pattern"], key=_pattern_order) if rows else table


# ------------------------------------------------------------------------------------------
# Charts
# ------------------------------------------------------------------------------------------


def _write_charts(frame: pd.DataFrame, metrics: pd.DataFrame, out: Path) -> dict[str, str]:
    charts = {}
    groups = list(_workload_groups(frame))
    if not groups:
        return charts
    _area_vs_throughput(groups, out / "area_vs_throughput.png")
    charts["area_vs_throughput.png"] = CHARTS["area_vs_throughput.png"]
    if frame["speedup_vs_dense"].notna().any():
        _speedup_by_pattern(frame, out / "speedup_by_pattern.png")
        charts["speedup_by_pattern.png"] = CHARTS["speedup_by_pattern.png"]
    if any(c.startswith("area_") and c != "area_mm2" for c in frame.columns):
        _area_breakdown(frame, out / "area_breakdown.png")
        charts["area_breakdown.png"] = CHARTS["area_breakdown.png"]
    if not metrics.empty:
        _accuracy_chart(frame, metrics, out / "accuracy_vs_throughput.png")
        charts["accuracy_vs_throughput.png"] = CHARTS["accuracy_vs_throughput.png"]
    return charts


def _pattern_colors(frame: pd.DataFrame) -> dict:
    patterns = sorted(frame["pattern"].dropna().astype(str).unique(), key=_pattern_sort_key) \
        if "pattern" in frame.columns else []
    cmap = plt.get_cmap("tab10")
    return {p: cmap(i % 10) for i, p in enumerate(patterns)}


def _pattern_order(column: pd.Series) -> pd.Series:
    """Sort key for DataFrame.sort_values: patterns by M then N, other columns as they are."""
    return column.map(_pattern_sort_key) if column.name == "pattern" else column


def _pattern_sort_key(text: str) -> int:
    """dense first, then N:M by M then N, anything else last."""
    parts = str(text).split(":")
    if len(parts) == 2 and all(p.isdigit() for p in parts):
        return int(parts[1]) * 1000 + int(parts[0])
    return -1 if text == "dense" else 10**9


def _area_vs_throughput(groups, path: Path) -> None:
    cols = min(2, len(groups))
    rows = -(-len(groups) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 4.5 * rows), squeeze=False)
    colors = _pattern_colors(pd.concat([g for _, g in groups]))
    for ax, (title, group) in zip(axes.flat, groups):
        for pattern in colors:
            sub = group[group["pattern"].astype(str) == pattern]
            ax.scatter(sub["area_mm2"], sub["effective_tflops"], s=14, alpha=0.7,
                       color=colors.get(pattern), label=str(pattern))
        front = group[pareto_front(group["area_mm2"], group["effective_tflops"])]
        front = front.sort_values("area_mm2")
        ax.step(front["area_mm2"], front["effective_tflops"], where="post", color="black",
                linewidth=1.2, label="Pareto front")
        ax.scatter(front["area_mm2"], front["effective_tflops"], s=40, facecolors="none",
                   edgecolors="black")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("area (mm2)")
        ax.set_ylabel("effective TFLOP/s (dense-equivalent)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(groups):]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=7, title="pattern", title_fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _speedup_by_pattern(frame: pd.DataFrame, path: Path) -> None:
    ok = frame[(frame["status"] == "ok") & frame["speedup_vs_dense"].notna()
               & ~frame["is_baseline"]]
    ok = ok.assign(case=ok["workload"] + " " + ok["phase"])
    patterns = sorted(ok["pattern"].astype(str).unique(), key=_pattern_sort_key)
    cases = sorted(ok["case"].unique())
    fig, ax = plt.subplots(figsize=(max(7, 1.6 * len(patterns) + 2), 4.5))
    width = 0.8 / max(1, len(cases))
    for i, case in enumerate(cases):
        sub = ok[ok["case"] == case].groupby(ok["pattern"].astype(str))["speedup_vs_dense"]
        med, low, high = sub.median(), sub.min(), sub.max()
        x = np.array([patterns.index(p) for p in med.index]) + (i - (len(cases) - 1) / 2) * width
        ax.bar(x, med.values, width, label=case,
               yerr=[med.values - low.values, high.values - med.values], capsize=2)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(patterns)), patterns)
    ax.set_xlabel("pattern (N kept of M)")
    ax.set_ylabel("speedup over dense twin (median, min-max)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def area_breakdown_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Area components (mm2) per distinct N:M datapath, with the dense twin first.

    A flexible datapath has the same area whatever pattern it runs, so it appears once; fields
    outside the N:M design (decoder count, array, buffers, ...) are held at their most common
    value so that the bars differ only in what N:M support costs.
    """
    ok = frame[frame["status"] == "ok"]
    parts = [c for c in ok.columns if c.startswith("area_") and c != "area_mm2"]
    dense = ok[ok["support"] == "dense"] if "support" in ok.columns else ok.iloc[0:0]
    sparse = ok.drop(dense.index)
    for col in [c for c in _hw_columns(sparse) if c not in DESIGN_FIELDS]:
        narrowed = sparse[sparse[col] == sparse[col].mode().iloc[0]]
        sparse = narrowed if not narrowed.empty else sparse
    labels = [
        " ".join(str(v) for v in (
            r.get("support") if r.get("support") != "fixed" else f"fixed {r.get('pattern')}",
            r.get("encoding"), r.get("decoder"), f"{r.get('mux_style')} mux") if v)
        for r in sparse.to_dict("records")]
    order = np.argsort([0 if str(lab).startswith("fixed") else 1 for lab in labels],
                       kind="stable")
    table = pd.concat([
        dense.head(1).assign(design="dense").set_index("design")[parts],
        sparse.assign(design=labels).iloc[order].groupby("design", sort=False)[parts].first(),
    ])
    table.columns = [c.removeprefix("area_") for c in table.columns]
    return table.loc[:, (table.fillna(0) != 0).any()]


def _area_breakdown(frame: pd.DataFrame, path: Path) -> None:
    table = area_breakdown_table(frame)
    labels = list(table.index)
    fig, ax = plt.subplots(figsize=(11, 0.35 * len(table) + 2))
    left = np.zeros(len(table))
    cmap = plt.get_cmap("tab20")
    for i, comp in enumerate(table.columns):
        vals = table[comp].fillna(0).to_numpy()
        ax.barh(labels, vals, left=left, color=cmap(i % 20), label=comp)
        left += vals
    ax.set_xlabel("area (mm2)")
    ax.invert_yaxis()
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _accuracy_chart(frame: pd.DataFrame, metrics: pd.DataFrame, path: Path) -> None:
    tables = _accuracy_tables(frame, metrics)
    joined = next(iter(tables.values())).dropna(subset=["perplexity"])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    if joined.empty:
        ax.text(0.5, 0.5, "no perplexity matches a swept workload and pattern",
                ha="center", va="center", transform=ax.transAxes)
    else:
        sc = ax.scatter(joined["effective_tflops"], joined["perplexity"],
                        s=30 + 200 * joined["area_mm2"] / joined["area_mm2"].max(),
                        c=joined["area_mm2"], cmap="viridis")
        for _, r in joined.iterrows():
            ax.annotate(f"{r['workload']} {r['phase']} {r['pattern']}",
                        (r["effective_tflops"], r["perplexity"]), fontsize=7)
        fig.colorbar(sc, label="area (mm2)")
    ax.set_xlabel("effective TFLOP/s")
    ax.set_ylabel("perplexity (lower is better)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------------------
# Text
# ------------------------------------------------------------------------------------------


def _fmt(table: pd.DataFrame) -> pd.DataFrame:
    """Floats to 4 significant digits, missing values as n/a."""
    return table.map(lambda v: "n/a" if v is None or (isinstance(v, float) and np.isnan(v))
                     else f"{v:.4g}" if isinstance(v, float) else v)


def _describe(frame: pd.DataFrame) -> list[str]:
    counts = frame["status"].value_counts()
    ok = frame[frame["status"] == "ok"]
    stale = frame.attrs.get("stale_points", 0)
    lines = [(f"{len(frame)} design points: {counts.get('ok', 0)} simulated, "
             f"{counts.get('error', 0)} failed (stored with their error)"
             + (f"; {stale} points of an older simulator version left out." if stale else ".")),
             (f"Hardware: base preset(s) {', '.join(sorted(map(str, frame['hardware'].unique())))}"
             f"; varied fields: {', '.join(_hw_columns(frame)) or 'none'}.")]
    for (w, ph), g in ok.groupby(["workload", "phase"]):
        params = ", ".join(f"{c} {sorted(g[c].dropna().astype(int).unique().tolist())}"
                           for c in ("seq", "batch", "kv_len") if g[c].notna().any())
        lines.append(f"{w} {ph}: {params}; all GEMMs of one forward pass (accel_sim "
                     f"simulate_workload){'; real masks' if g['real_masks'].any() else ''}.")
    lines.append("TOPS/mm2 = effective dense-equivalent TFLOP/s / area; speedup = dense-twin "
                 "cycles / cycles; bytes/weight = values + metadata per dense element "
                 "(compression.formats).")
    return lines


def _headlines(frame: pd.DataFrame) -> list[str]:
    """A few findings computed from the results (best design, cost of N:M support, stalls)."""
    lines = []
    for title, group in _workload_groups(frame):
        best = group.loc[group["tops_per_mm2"].idxmax()]
        design = " ".join(dict.fromkeys(str(best.get(c)) for c in DESIGN_FIELDS
                                        if c in best and best.get(c) != "n/a"))
        speedup = best.get("speedup_vs_dense")
        vs = f", {speedup:.2f}x its dense twin" if pd.notna(speedup) else ""
        lines.append(f"{title}: best TOPS/mm2 is {design} ({best['tops_per_mm2']:.3g} TOPS/mm2, "
                     f"{best['effective_tflops']:.3g} TFLOP/s, {best['area_mm2']:.1f} mm2{vs}).")
    if any(c.startswith("area_") and c != "area_mm2" for c in frame.columns):
        totals = area_breakdown_table(frame).sum(axis=1)
        fixed24 = totals[totals.index.str.startswith("fixed 2:4")]
        flexible = totals[totals.index.str.startswith("flexible")]
        if "dense" in totals.index and not fixed24.empty and not flexible.empty:
            dense = totals["dense"]
            lines.append(
                f"Area of N:M support over dense ({dense:.1f} mm2): cheapest fixed 2:4 "
                f"+{100 * (fixed24.min() / dense - 1):.1f}% ({fixed24.idxmin()}), cheapest "
                f"flexible +{100 * (flexible.min() / dense - 1):.1f}% ({flexible.idxmin()}), "
                f"i.e. flexibility costs +{100 * (flexible.min() / fixed24.min() - 1):.1f}% over "
                "fixed 2:4.")
    ok = frame[frame["status"] == "ok"]
    decode_bound = ok[ok["dominant_stall"] == "decode"]
    if len(ok):
        where = ", ".join(
            f"{p} with {int(d)} decoders ({n})" for (p, d), n in
            decode_bound.groupby(["pattern", "num_decoders"]).size().items()) \
            if "num_decoders" in ok.columns and len(decode_bound) else ""
        lines.append(f"Metadata decoders are the dominant stall in {len(decode_bound)} of "
                     f"{len(ok)} points{': ' + where if where else ''}.")
    return lines


def _markdown(frame: pd.DataFrame, tables: dict, charts: dict) -> str:
    out = ["# Design-space sweep", "", *(f"- {line}" for line in _describe(frame)), "",
           "## Headlines", "", *(f"- {line}" for line in _headlines(frame)), "",
           "## Charts", "", *(f"![{caption}]({name})" for name, caption in charts.items()), "",
           "Full per-point figures: `results.csv`.", ""]
    for title, table in tables.items():
        out += [f"## {title}", "", _fmt(table).to_markdown(index=False) if not table.empty
                else "_(no rows)_", ""]
        if title in NOTES:
            out += [NOTES[title], ""]
    return "\n".join(out)


_LOAD_CHECK = """<script>
window.addEventListener('load', function () {
  var imgs = Array.from(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute('data-images-loaded', ok + '/' + imgs.length);
});
</script>"""


def _html(frame: pd.DataFrame, tables: dict, charts: dict, folder: Path) -> str:
    parts = [("<!DOCTYPE html><html><head><meta charset='utf-8'><title>nmsim sweep report"
             "</title><style>body{font-family:sans-serif;margin:2em;max-width:1200px}"
             "table{border-collapse:collapse;font-size:12px;margin-bottom:1.5em}"
             "td,th{border:1px solid #bbb;padding:2px 6px;text-align:right}"
             "img{max-width:100%}</style>"), _LOAD_CHECK, "</head><body>",
             "<h1>Design-space sweep</h1><ul>"]
    parts += [f"<li>{html.escape(line)}</li>" for line in _describe(frame)]
    parts.append("</ul><h2>Headlines</h2><ul>")
    parts += [f"<li>{html.escape(line)}</li>" for line in _headlines(frame)]
    parts.append("</ul>")
    parts.append("<h2>Charts</h2>")
    for name, caption in charts.items():
        data = base64.b64encode((folder / name).read_bytes()).decode()
        parts.append(f"<figure><img alt='{html.escape(caption)}' "
                     f"src='data:image/png;base64,{data}'><figcaption>{html.escape(caption)}"
                     "</figcaption></figure>")
    for title, table in tables.items():
        parts.append(f"<h2>{html.escape(title)}</h2>")
        parts.append(_fmt(table).to_html(index=False, border=0, na_rep="n/a")
                     if not table.empty else "<p>(no rows)</p>")
        if title in NOTES:
            parts.append(f"<p>{html.escape(NOTES[title])}</p>")
    parts.append("</body></html>")
    return "\n".join(parts)
