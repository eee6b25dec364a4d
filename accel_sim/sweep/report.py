"""Sweep reports: a results store -> summary.md, results.csv, charts (SVG + PNG), one HTML page.

The report answers the method's question: what accuracy does each N:M design buy per mm2, per
watt and per second? Figures per design point come straight from the simulator's workload result
(and its energy model, when the results carry one); derived columns are:

* ``tops_per_mm2`` = effective (dense-equivalent) TFLOP/s / area in mm2;
* ``speedup_vs_dense`` = total cycles of the point's dense twin / the point's total cycles;
* ``decode_stall_share`` = cycles stalled on metadata decoders / total cycles;
* ``flop_per_dram_byte`` = dense-equivalent FLOPs / DRAM bytes (the roofline's intensity);
* ``perplexity`` / ``recipe``: the best measured recipe for the point's model, pattern and
  side-car, joined from compression metrics (:func:`load_compression_metrics`).

Every table and the CSV are sorted by explicit keys and carry no timings or absolute paths of this
machine, so two clones of one commit write byte-identical ``summary.md`` and ``results.csv``.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np
import pandas as pd

from accel_sim.output_folder import SWEEP_REPORT, OutputFolder, check_output_folder
from accel_sim.sweep.spec import POINT_FIELDS, baseline_twin, point_identity, point_key
from accel_sim.sweep.store import open_store

PACKAGE_ROOT = Path(__file__).resolve().parents[2]
WORKLOAD_COLUMNS = ["workload", "phase", "seq", "batch", "kv_len"]
# Hardware fields that define the N:M support itself, in the order tables show them.
DESIGN_FIELDS = ["support", "pattern", "encoding", "decoder", "mux_style"]
# Scalar energy figures of a result (accel_sim.energy), and the prefix of its breakdown columns.
ENERGY_COLUMNS = ["energy_j", "pj_per_mac", "tops_per_w", "average_power_w"]
ENERGY_PART_PREFIX = "energy_"
# What the Pareto set optimises: column -> "min" or "max".
OBJECTIVES = {"perplexity": "min", "tops_per_mm2": "max", "tops_per_w": "max",
              "effective_tflops": "max"}
# Columns that are bookkeeping of one run on one machine: kept out of results.csv.
RUN_COLUMNS = ["elapsed_s", "finished_at"]


# ------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------


def load_results(db_path: str | Path) -> pd.DataFrame:
    """One row per stored point: workload, design fields, figures and derived columns.

    ``frame.attrs["hw_fields"]`` lists the hardware fields the points override (what a spec can
    sweep), ``frame.attrs["stale_points"]`` the results of older simulator versions left out."""
    with open_store(db_path, create=False) as store:
        records, cycles_by_key, hw_fields = [], {}, set()
        for row in store.rows():
            point, result = row["point"], row["result"] or {}
            cycles_by_key[row["key"]] = result.get("total_cycles")
            hw_fields.update(point["hw"])
            records.append(_record(row, point, result))
    frame = pd.DataFrame.from_records(records)
    if frame.empty:
        raise ValueError(f"{db_path} holds no results yet")
    frame = _latest_simulator(frame)
    for col in DESIGN_FIELDS:  # results of a stand-in evaluator carry no resolved design
        if col not in frame.columns:
            frame[col] = "n/a"
    for col in ("seq", "batch", "kv_len"):
        frame[col] = frame[col].astype("Int64")
    frame["speedup_vs_dense"] = frame["twin_key"].map(cycles_by_key) / frame.get("total_cycles")
    frame["is_baseline"] = frame["twin_key"] == frame["key"]
    frame = sort_points(frame.drop(columns=["twin_key", "identity"]))
    frame.attrs["hw_fields"] = sorted(hw_fields - {"supported_patterns"})
    return frame


def _record(row: dict, point: dict, result: dict) -> dict:
    record = {"key": row["key"], "identity": point_identity(point), "status": row["status"],
              "error": row["error"], "simulator": point.get("simulator"),
              "finished_at": row["finished_at"], "hardware": point.get("hardware"),
              "real_masks": "masks" in point,
              "twin_key": point_key(baseline_twin(point)) if point.get("baseline") else None,
              "elapsed_s": row["elapsed_s"]}
    record.update({c: point.get(c) for c in WORKLOAD_COLUMNS})
    record.update({f: point.get(f) or "none" for f in POINT_FIELDS})
    record.update({f: ",".join(map(str, v)) if isinstance(v, list) else v
                   for f, v in point["hw"].items()})
    record.update(result.get("config", {}))
    record.update(_figures(result))
    return record


def _latest_simulator(frame: pd.DataFrame) -> pd.DataFrame:
    """Only the points of the simulator version that finished last (one store may hold several
    versions after the code changed), and of each point only the result for the latest contents
    of its input files; ``frame.attrs["stale_points"]`` counts the rest."""
    total = len(frame)
    if frame["simulator"].dropna().nunique() > 1:
        latest = frame.loc[frame["finished_at"][frame["simulator"].notna()].idxmax(), "simulator"]
        frame = frame[frame["simulator"].isna() | (frame["simulator"] == latest)]
    frame = frame.sort_values(["finished_at", "key"], kind="stable").drop_duplicates(
        "identity", keep="last").copy()
    frame.attrs["stale_points"] = total - len(frame)
    return frame


def _figures(result: dict) -> dict:
    if not result:
        return {}
    stalls = result.get("stall_cycles", {}) or {}
    dram = result.get("dram_bytes") or {}
    total = result.get("total_cycles")
    area, tflops, seconds = (result.get(k) for k in ("area_mm2", "effective_tflops", "seconds"))
    dram_total = sum(dram.values()) if dram else None
    figures = {
        "total_cycles": total, "seconds": seconds, "area_mm2": area, "effective_tflops": tflops,
        "tops_per_mm2": tflops / area if area and tflops is not None else None,
        "utilization": result.get("utilization"),
        "bytes_per_weight": result.get("bytes_per_weight"),
        "dominant_stall": max(stalls, key=stalls.get)
        if stalls and max(stalls.values()) > 0 else "none",
        "decode_stall_share": stalls.get("decode", 0.0) / total if total else None,
        "dense_peak_tflops": result.get("dense_peak_tflops"),
        "sparse_peak_tflops": result.get("sparse_peak_tflops"),
        "dram_bytes_total": dram_total, "dram_gb_s": result.get("dram_gb_s"),
        "flop_per_dram_byte": tflops * 1e12 * seconds / dram_total
        if dram_total and tflops is not None and seconds else None,
    }
    figures.update({f"stall_{k}": v for k, v in stalls.items()})
    figures.update({f"dram_bytes_{k}": v for k, v in dram.items()})
    figures.update({f"area_{k}": v for k, v in (result.get("area_breakdown_mm2") or {}).items()
                    if k != "total"})
    figures.update(energy_figures(result))
    return figures


def energy_figures(result: dict) -> dict:
    """The energy columns of a result: the scalars of :data:`ENERGY_COLUMNS` and one
    ``energy_<component>_<action>_j`` column per breakdown entry, read from a nested
    ``energy_breakdown_j`` ({component: {action: J}}), else from columns already flat."""
    figures = {c: result[c] for c in ENERGY_COLUMNS if result.get(c) is not None}
    for component, value in (result.get("energy_breakdown_j") or {}).items():
        if isinstance(value, dict):
            figures.update({f"energy_{component}_{action}_j": joules
                            for action, joules in value.items()})
        else:
            figures[f"energy_{component}_j"] = value
    if not result.get("energy_breakdown_j"):  # flat columns only when there is no nested one,
        figures.update({k: v for k, v in result.items()  # so no part is counted twice
                        if _is_energy_part(k) and isinstance(v, (int, float))})
    return figures


def _is_energy_part(column: str) -> bool:
    return (column.startswith(ENERGY_PART_PREFIX) and column.endswith("_j")
            and column not in ENERGY_COLUMNS)


def energy_parts(frame: pd.DataFrame) -> list[str]:
    """The breakdown columns (``energy_<component>_<action>_j``) present, sorted by name."""
    return sorted(c for c in frame.columns if _is_energy_part(c))


def has_energy(frame: pd.DataFrame) -> bool:
    return "energy_j" in frame.columns and frame["energy_j"].notna().any()


def _sort_key(column: pd.Series) -> pd.Series:
    """Sort key for DataFrame.sort_values: patterns by M then N, dense before fixed before
    flexible support, everything else as it is."""
    if column.name == "pattern":
        return column.map(_pattern_sort_key)
    if column.name == "support":
        return column.map(lambda v: (0 if v == "dense" else 1 if v == "fixed" else 2, str(v)))
    if column.dtype == object:
        return column.astype(str)
    return column


def _pattern_sort_key(text) -> int:
    """dense first, then N:M by M then N, anything else last."""
    parts = str(text).split(":")
    if len(parts) == 2 and all(p.isdigit() for p in parts):
        return int(parts[1]) * 1000 + int(parts[0])
    return -1 if text == "dense" else 10**9


def sort_points(frame: pd.DataFrame, extra=()) -> pd.DataFrame:
    """Rows by workload, then design fields, then every other swept field, then the key."""
    keys = [c for c in [*extra, *WORKLOAD_COLUMNS, *DESIGN_FIELDS, *POINT_FIELDS,
                        *sorted(frame.attrs.get("hw_fields", ())), "key"]
            if c in frame.columns]
    keys = list(dict.fromkeys(keys))
    attrs = dict(frame.attrs)
    out = frame.sort_values(keys, key=_sort_key, kind="stable", na_position="first")
    out.attrs.update(attrs)
    return out.reset_index(drop=True)


def _designs(frame: pd.DataFrame) -> pd.DataFrame:
    """The points other than dense twins (whose n/a fields would count as one more value)."""
    if "is_baseline" not in frame.columns or frame["is_baseline"].all():
        return frame
    out = frame[~frame["is_baseline"].astype(bool)]
    out.attrs.update(frame.attrs)
    return out


def swept_fields(frame: pd.DataFrame) -> list[str]:
    """Design and point fields that take more than one value among the designs (dense twins
    aside), in table order: every one of them appears in every per-design table."""
    frame = _designs(frame)
    candidates = [*DESIGN_FIELDS, *[f for f in frame.attrs.get("hw_fields", ())
                                    if f not in DESIGN_FIELDS], *POINT_FIELDS]
    return [c for c in dict.fromkeys(candidates)
            if c in frame.columns and frame[c].nunique(dropna=True) > 1]


def held_fields(frame: pd.DataFrame) -> dict:
    """Design fields with one value only among the designs (dense twins aside)."""
    frame = _designs(frame)
    fields = dict.fromkeys((*DESIGN_FIELDS, *frame.attrs.get("hw_fields", ())))
    return {f: frame[f].dropna().iloc[0] for f in fields
            if f in frame.columns and frame[f].nunique(dropna=True) == 1}


# ------------------------------------------------------------------------------------------
# Accuracy join
# ------------------------------------------------------------------------------------------


def display_path(path: str | Path) -> str:
    """A path as the report prints it: relative to the package root when inside it (the same in
    every clone), as given otherwise."""
    resolved = Path(path).resolve()
    return resolved.relative_to(PACKAGE_ROOT).as_posix() if resolved.is_relative_to(PACKAGE_ROOT) \
        else str(path)


def salient_kind(value) -> str:
    """A metrics entry's side-car as the sweep names it: ``none``, ``16:256``, ...."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "none"
    text = str(value).strip()
    return "none" if text.lower() in ("", "none", "false", "0", "nan") else text


def load_compression_metrics(paths) -> pd.DataFrame:
    """Best (lowest) perplexity per (model, pattern, side-car) from compression outputs.

    Accepts ``metrics.json`` files or the ``nmsim prune --out`` folders holding them (keys
    ``model``, ``pattern``, ``perplexity``, optional ``salient``), and CSV files with ``pattern``
    and ``perplexity`` columns (the model from a ``model`` column, else the file name, e.g.
    ``smollm2-135m.csv``). Several recipes for one key (methods, corrections, fine-tuning) keep
    the best, with its label: all run on the same hardware."""
    rows = []
    for path in map(Path, paths):
        for entry in _metric_entries(path):
            rows.append({"model": str(entry["model"]).lower(), "pattern": str(entry["pattern"]),
                         "salient": salient_kind(entry.get("salient")),
                         "perplexity": float(entry["perplexity"]),
                         "recipe": entry.get("label") or entry.get("method") or "",
                         "seqlen": entry.get("seqlen"), "windows": entry.get("windows"),
                         "split_windows": entry.get("split_windows"),
                         "source": display_path(path)})
    columns = ["model", "pattern", "salient", "perplexity", "recipe", "seqlen", "windows",
               "split_windows", "source"]
    if not rows:
        return pd.DataFrame(columns=columns)
    table = pd.DataFrame.from_records(rows, columns=columns).sort_values(
        ["perplexity", "recipe"], kind="stable")
    best = table.groupby(["model", "pattern", "salient"], sort=False).head(1)
    return best.sort_values(["model", "pattern", "salient"], key=_sort_key,
                            kind="stable").reset_index(drop=True)


def _metric_entries(path: Path) -> list[dict]:
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
        return table.to_dict("records")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    entries = data if isinstance(data, list) else [data]
    for entry in entries:
        missing = {"model", "pattern", "perplexity"} - set(entry)
        if missing:
            raise ValueError(f"{path}: missing key(s) {', '.join(sorted(missing))}")
    return entries


def load_join(paths) -> tuple[pd.DataFrame, list[str]]:
    """The metrics of the files that exist, and one sentence per file (or for none) that says
    what was joined: a missing file is stated in the report, never silently skipped."""
    paths = [Path(p) for p in paths]
    found = [p for p in paths if p.exists()]
    notes = [f"Accuracy join: `{display_path(p)}` not found - perplexity is n/a for every "
             "design it would have covered." for p in paths if not p.exists()]
    if not paths:
        notes.append("Accuracy join: no compression metrics given (`--compression` or the "
                     "spec's `compression`) - perplexity is n/a for every design.")
    metrics = load_compression_metrics(found)
    for path in found:
        rows = metrics[metrics["source"] == display_path(path)]
        whole = (rows["windows"] == rows["split_windows"]).all() and rows["windows"].notna().all()
        extent = (f"whole split ({int(rows['windows'].iloc[0])} windows of "
                  f"{int(rows['seqlen'].iloc[0])} tokens)" if whole and len(rows)
                  else "evaluation windows as listed")
        notes.append(f"Accuracy join: {len(rows)} best recipes per (model, pattern, side-car) "
                     f"from `{display_path(path)}`, {extent}.")
    return metrics, notes


def join_accuracy(frame: pd.DataFrame, metrics: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with ``perplexity`` and ``recipe`` of its (workload, pattern, side-car)."""
    lookup = {(r["model"], r["pattern"], r["salient"]): (r["perplexity"], r["recipe"])
              for r in metrics.to_dict("records")}
    keys = zip(frame["workload"].astype(str).str.lower(), frame["pattern"].astype(str),
               frame["salient"].astype(str))
    found = [lookup.get(k, (np.nan, "not measured")) for k in keys]
    out = frame.assign(perplexity=[f[0] for f in found], recipe=[f[1] for f in found])
    out.attrs.update(frame.attrs)
    return out


# ------------------------------------------------------------------------------------------
# Pareto sets
# ------------------------------------------------------------------------------------------


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


def pareto_set(table: pd.DataFrame, objectives: dict[str, str]) -> np.ndarray:
    """Boolean mask of rows no other row dominates on ``objectives`` ({column: "min"|"max"}):
    at least as good on every objective and better on one. Ties are all kept."""
    if table.empty:
        return np.zeros(0, dtype=bool)
    values = np.column_stack([table[c].to_numpy(float) * (1 if how == "min" else -1)
                              for c, how in objectives.items()])  # all minimised
    no_worse = (values[None, :, :] <= values[:, None, :]).all(axis=2)  # [i, j]: j <= i
    better = (values[None, :, :] < values[:, None, :]).any(axis=2)
    return ~(no_worse & better).any(axis=1)


def objectives_of(group: pd.DataFrame) -> dict[str, str]:
    """The objectives every row of ``group`` has a value for."""
    return {c: how for c, how in OBJECTIVES.items()
            if c in group.columns and group[c].notna().all()}


# ------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------


def write_report(db_path: str | Path, out_dir: str | Path, compression=()) -> list[Path]:
    """Write the report folder: new, empty, or an earlier report (see accel_sim.output_folder).

    Files are staged inside the folder and moved in one by one; a user's own files are kept."""
    from accel_sim.sweep import report_text
    from accel_sim.sweep.report_charts import write_charts

    check_output_folder(out_dir, SWEEP_REPORT)  # before any work: a refused folder costs nothing
    frame = load_results(db_path)
    metrics, join_notes = load_join(compression)
    frame = join_accuracy(frame, metrics)
    with OutputFolder(out_dir, SWEEP_REPORT) as folder:
        tmp = folder.staging
        ok = frame[frame["status"] == "ok"]
        charts = write_charts(ok, tmp)
        tables = report_text.tables(frame, metrics)
        sections = report_text.sections(frame, tables, join_notes)
        results_csv(ok).to_csv(tmp / "results.csv", index=False)
        if (frame["status"] == "error").any():
            results_csv(frame[frame["status"] == "error"]).to_csv(tmp / "errors.csv",
                                                                  index=False)
        (tmp / "summary.md").write_text(report_text.markdown(sections, tables, charts))
        (tmp / "report.html").write_text(_html(sections, tables, charts, tmp))
        return folder.commit()


def results_csv(frame: pd.DataFrame) -> pd.DataFrame:
    """The per-point table as written: run bookkeeping (wall times, timestamps) left out, and an
    error column only where points failed."""
    drop = RUN_COLUMNS + ([] if (frame["status"] == "error").any() else ["error"])
    return frame.drop(columns=[c for c in drop if c in frame.columns])


_LOAD_CHECK = """<script>
window.addEventListener('load', function () {
  var imgs = Array.from(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute('data-images-loaded', ok + '/' + imgs.length);
});
</script>"""


def _html(sections: dict, tables: dict, charts: dict, folder: Path) -> str:
    from accel_sim.sweep.report_text import fmt

    parts = [("<!DOCTYPE html><html><head><meta charset='utf-8'><title>nmsim sweep report"
             "</title><style>body{font-family:sans-serif;margin:2em;max-width:1200px}"
             "table{border-collapse:collapse;font-size:12px;margin-bottom:1.5em}"
             "td,th{border:1px solid #bbb;padding:2px 6px;text-align:right}"
             "img{max-width:100%}</style>"), _LOAD_CHECK, "</head><body>",
             "<h1>Design-space sweep</h1>"]
    for heading, lines in sections.items():
        parts.append(f"<h2>{html.escape(heading)}</h2><ul>")
        parts += [f"<li>{html.escape(line)}</li>" for line in lines]
        parts.append("</ul>")
    parts.append("<h2>Charts</h2>")
    for name, caption in charts.items():
        data = base64.b64encode((folder / name).read_bytes()).decode()
        parts.append(f"<figure><img alt='{html.escape(caption)}' "
                     f"src='data:image/png;base64,{data}'><figcaption>{html.escape(caption)}"
                     "</figcaption></figure>")
    for title, (table, note) in tables.items():
        parts.append(f"<h2>{html.escape(title)}</h2>")
        if note:
            parts.append(f"<p>{html.escape(note)}</p>")
        parts.append(fmt(table).to_html(index=False, border=0, na_rep="n/a")
                     if not table.empty else "<p>(no rows)</p>")
    parts.append("</body></html>")
    return "\n".join(parts)
