"""The sweep report's tables and sentences (summary.md and report.html), computed from the
results frame of :mod:`accel_sim.sweep.report`.

Each table comes with a note that says what it holds fixed and how its numbers were measured;
every per-design table carries every swept field. Rows are sorted by explicit keys.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from accel_sim.sweep.report import (
    DESIGN_FIELDS,
    ENERGY_COLUMNS,
    WORKLOAD_COLUMNS,
    energy_parts,
    has_energy,
    held_fields,
    objectives_of,
    pareto_set,
    sort_points,
    swept_fields,
)

FIGURES = ["area_mm2", "effective_tflops", "tops_per_mm2", "tops_per_w", "energy_j",
           "pj_per_mac", "speedup_vs_dense", "bytes_per_weight", "decode_stall_share",
           "dominant_stall", "perplexity", "recipe"]
NO_ENERGY = ("The results carry no energy columns (" + ", ".join(ENERGY_COLUMNS) + "): the "
             "simulator that produced them has no energy model, so TOPS/W, energy per pass and "
             "the energy breakdown are n/a and the Pareto set is taken without TOPS/W.")
PAIR = ("2:4", "8:16")  # the method's claim: 8:16 (plus a side-car) against the industry's 2:4


def _ok(frame: pd.DataFrame) -> pd.DataFrame:
    ok = frame[frame["status"] == "ok"]
    ok.attrs.update(frame.attrs)
    return ok


def workload_groups(ok: pd.DataFrame):
    """(title, rows) per workload setting, in sorted order."""
    cols = [c for c in WORKLOAD_COLUMNS if c in ok.columns and ok[c].notna().any()]
    for key, group in ok.groupby(cols, dropna=False, sort=True):
        title = " ".join(f"{c}={v}" for c, v in zip(cols, key) if pd.notna(v) and c != "workload")
        group.attrs.update(ok.attrs)
        yield f"{key[0]} {title}", group


def _columns(frame: pd.DataFrame, *groups) -> list[str]:
    cols = [c for group in groups for c in group if c in frame.columns]
    return list(dict.fromkeys(cols))


def design_label(row, fields) -> str:
    """A short name of a design from its swept fields (pattern, support, metadata, count...)."""
    if row.get("support") == "dense":
        return "dense"
    parts = []
    for f in fields:
        value = row.get(f)
        if f in ("mux_style",):
            parts.append(f"{value} mux")
        elif f == "num_decoders":
            parts.append(f"x{value} dec")
        elif f == "salient_lanes":
            parts.append(f"{value} lanes" if value else "")
        elif f == "salient":
            parts.append(f"+{value}" if value != "none" else "")
        elif f == "support" and str(value).startswith("flexible"):
            parts.append("flexible")
        elif f != "encoding" or value != "rank":
            parts.append(f"{f}={value}" if f not in DESIGN_FIELDS else str(value))
    return " ".join(p for p in parts if p)


# ------------------------------------------------------------------------------------------
# Tables
# ------------------------------------------------------------------------------------------


def tables(frame: pd.DataFrame, metrics: pd.DataFrame) -> dict[str, tuple[pd.DataFrame, str]]:
    """The report's tables by title, each with its note."""
    ok = _ok(frame)
    swept = swept_fields(ok)
    out = {}
    for title, group in workload_groups(ok):
        out[f"Pareto set - {title}"] = pareto_table(group, swept)
    for title, group in workload_groups(ok):
        out[f"Best TOPS/mm2 per datapath, encoding and side-car - {title}"] = \
            best_table(group, swept)
    out["Decoder stall share by decoders per core"] = decoder_stall_table(ok)
    out["Area breakdown (mm2) per datapath"] = breakdown_table(ok, "area")
    out["Energy breakdown (J per pass) per datapath"] = breakdown_table(ok, "energy")
    out["Accuracy join: measured recipes and the designs that run them"] = \
        accuracy_table(ok, metrics)
    out["The method's claim on hardware terms: 8:16 vs 2:4"] = claim_table(ok, metrics)
    if {"llama2-7b", "llama2-13b"} <= set(ok["workload"]):
        out["Memory-matched: sparse LLaMa-2-13B vs dense LLaMa-2-7B"] = memory_matched(ok)
    out["Dominant stall cause (points per phase and pattern)"] = dominant_stalls(ok)
    errors = frame[frame["status"] == "error"]
    if not errors.empty:
        out["Failed points (first 20)"] = (errors[_columns(errors, WORKLOAD_COLUMNS, swept,
                                                             ["error"])].head(20), "")
    return out


def pareto_table(group: pd.DataFrame, swept: list[str]) -> tuple[pd.DataFrame, str]:
    objectives = objectives_of(group)
    front = group[pareto_set(group, objectives)]
    first = next(iter(objectives))
    front = sort_points(front).sort_values(first, ascending=objectives[first] == "min",
                                           kind="stable")
    left_out = [c for c in ("perplexity", "tops_per_w") if c not in objectives]
    why = {"perplexity": "no measured perplexity for this workload",
           "tops_per_w": "no energy columns in the results"}
    note = (f"Designs no other design beats on every one of: "
            f"{', '.join(f'{c} ({how})' for c, how in objectives.items())}; "
            f"{len(front)} of {len(group)} designs"
            + (" (the dense twin included)." if group["is_baseline"].any() else ".")
            + "".join(f" Without {c}: {why[c]}." for c in left_out))
    return front[_columns(front, swept, FIGURES)], note


def best_table(group: pd.DataFrame, swept: list[str]) -> tuple[pd.DataFrame, str]:
    keys = _columns(group, ["support", "pattern", "encoding", "salient"])
    best = (sort_points(group).sort_values("tops_per_mm2", ascending=False, kind="stable")
            .groupby(keys, dropna=False, sort=False).head(1))
    best.attrs.update(group.attrs)
    within = [f for f in swept if f not in keys]
    note = ("One row per datapath, encoding and side-car: the design with the highest TOPS/mm2 "
            f"among the values of {', '.join(within) or 'no other field'} it was swept over.")
    return sort_points(best)[_columns(best, swept, FIGURES)], note


def decoder_stall_table(ok: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Median (max) share of cycles stalled on decoders, over workloads, per decoder count."""
    sparse = ok[~ok["is_baseline"] & (ok.get("salient", "none") == "none")]
    if sparse.empty or "num_decoders" not in sparse.columns:
        return pd.DataFrame(), ("No decoder count was swept on sparse designs without a "
                                "side-car in these results.")
    keys = _columns(sparse, ["phase", "support", "pattern", "encoding", "decoder"])
    stats = sparse.groupby(keys + ["num_decoders"], sort=True)["decode_stall_share"].agg(
        ["median", "max"])
    cells = stats.apply(lambda r: f"{100 * r['median']:.1f} ({100 * r['max']:.1f})", axis=1)
    table = cells.unstack("num_decoders").reset_index()
    table.columns = [f"{c} decoders/core" if isinstance(c, (int, np.integer)) else c
                     for c in table.columns]
    workloads = sorted(sparse["workload"].unique())
    note = ("Percent of total cycles stalled on metadata decoders, median (max) over the "
            f"workloads {', '.join(workloads)}; designs without a salient side-car (held fixed).")
    return sort_points(table), note


def _reference_value(column: pd.Series):
    """The value a breakdown holds a swept field at: the most common, ties to the largest."""
    counts = column.value_counts()
    return max(counts.index[counts == counts.max()])


def breakdown_table(ok: pd.DataFrame, kind: str) -> tuple[pd.DataFrame, str]:
    """Area (mm2) or energy (J per pass, one reference workload) per distinct datapath, holding
    every other swept field at a stated value."""
    if kind == "energy" and not has_energy(ok):
        return pd.DataFrame(), NO_ENERGY
    parts = (energy_parts(ok) if kind == "energy"
             else sorted(c for c in ok.columns if c.startswith("area_") and c != "area_mm2"))
    if not parts:
        return pd.DataFrame(), f"The results carry no {kind} breakdown."
    rows, held = ok, {}
    if kind == "energy":
        rows, held = _reference_case(ok)
    by = _columns(rows, ["support", "pattern", "encoding", "decoder", "salient_lanes",
                         "salient"])
    sparse = rows[rows["support"] != "dense"]
    for f in [f for f in swept_fields(sparse) if f not in by]:
        held[f] = _reference_value(sparse[f])
        sparse = sparse[sparse[f] == held[f]]
    table = pd.concat([rows[rows["support"] == "dense"].head(1), sparse])
    table = sort_points(table).drop_duplicates(by)
    labels = [design_label(r, by) for r in table.to_dict("records")]
    out = table[parts].fillna(0.0)
    out = out.loc[:, (out != 0).any()]
    out.columns = [c.removeprefix("area_").removeprefix("energy_").removesuffix("_j")
                   for c in out.columns]
    out.insert(0, "design", labels)
    out["total"] = out.drop(columns="design").sum(axis=1)
    fixed = "; ".join(f"{k} = {v}" for k, v in held.items()) or "nothing else"
    unit = "mm2 (area model)" if kind == "area" else "J per forward pass (energy model)"
    return out.reset_index(drop=True), f"Components in {unit}. Held fixed: {fixed}."


def _reference_case(ok: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """The workload setting a breakdown or comparison shows: the first (in sorted order) with a
    measured perplexity, else the first of all."""
    measured = ok[ok["perplexity"].notna()] if "perplexity" in ok.columns else ok.iloc[0:0]
    pool = measured if not measured.empty else ok
    first = sort_points(pool).iloc[0]
    cols = [c for c in WORKLOAD_COLUMNS if c in ok.columns and pd.notna(first[c])]
    rows = ok[(ok[cols] == first[cols]).all(axis=1)]
    rows.attrs.update(ok.attrs)
    return rows, {c: first[c] for c in cols}


def accuracy_table(ok: pd.DataFrame, metrics: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Each measured recipe with the best design that runs it per phase, or why none does."""
    models = set(ok["workload"].astype(str).str.lower())
    rows = []
    for m in metrics[metrics["model"].isin(models)].to_dict("records"):
        runs = ok[(ok["workload"].str.lower() == m["model"]) & (ok["pattern"] == m["pattern"])
                  & (ok["salient"] == m["salient"])]
        row = {"model": m["model"], "pattern": m["pattern"], "side-car": m["salient"],
               "perplexity": m["perplexity"], "recipe": m["recipe"],
               "hardware": _why_no_design(ok, m) if runs.empty else "simulated"}
        for phase, g in runs.groupby("phase", sort=True):
            b = g.sort_values("tops_per_mm2", ascending=False, kind="stable").iloc[0]
            row[f"{phase} TOPS/mm2"] = b["tops_per_mm2"]
            row[f"{phase} TFLOP/s"] = b["effective_tflops"]
            if "tops_per_w" in g.columns:
                row[f"{phase} TOPS/W"] = b["tops_per_w"]
        rows.append(row)
    table = pd.DataFrame(rows)
    note = ("Best (lowest) perplexity per model, pattern and side-car among the measured "
            "recipes (methods, corrections, fine-tuning all run on the same hardware); hardware "
            "figures of the design with the best TOPS/mm2 that runs it.")
    return (sort_points(table, ["model"]) if rows else table), note


def _why_no_design(ok: pd.DataFrame, m: dict) -> str:
    if ":" not in m["pattern"] and m["pattern"] != "dense":
        return "not N:M (unstructured sparsity): no N:M datapath runs it"
    if m["salient"].startswith("unstructured"):
        return ("not simulated: an unstructured side-car's per-tile load depends on where its "
                "outliers fall, which only real masks give (nmsim sweep --masks); the salient "
                "lanes would take it as a coordinate list")
    if m["pattern"] not in set(ok["pattern"]):
        return "pattern not in this sweep"
    return f"side-car {m['salient']} not in this sweep at {m['pattern']}"


def claim_table(ok: pd.DataFrame, metrics: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """8:16 against 2:4 on the same terms: metadata bits, then area, throughput and energy of the
    fixed datapaths with the same encoding and decoder, then perplexity."""
    from compression.formats import bits_per_element

    case, held = _reference_case(ok)
    fixed = case[(case["support"] == "fixed") & (case["salient"] == "none")]
    if "num_decoders" in fixed.columns and not fixed.empty:
        held["num_decoders"] = _reference_value(fixed["num_decoders"])
        fixed = fixed[fixed["num_decoders"] == held["num_decoders"]]
    rows = [_pair_row(f"metadata bits/element ({enc})", [bits_per_element(p, enc) for p in PAIR],
                      "compression.formats")
            for enc in sorted(fixed["encoding"].dropna().unique())]
    figures = [("area_mm2", "area (mm2)"), ("effective_tflops", "TFLOP/s")]
    if has_energy(ok):
        figures += [("energy_j", "energy per pass (J)"), ("pj_per_mac", "pJ per MAC"),
                    ("tops_per_w", "TOPS/W")]
    for (enc, dec), g in fixed.groupby(["encoding", "decoder"], sort=True):
        pair = [g[g["pattern"] == p] for p in PAIR]
        if all(len(p) for p in pair):
            rows += [_pair_row(f"{what}, {enc}/{dec}", [p[col].iloc[0] for p in pair],
                               "simulation") for col, what in figures]
    if not has_energy(ok):
        rows.append({"quantity": "energy per pass", "2:4": np.nan, "8:16": np.nan,
                     "8:16 / 2:4": np.nan, "how": "n/a: no energy columns in the results"})
    for salient in ("none", "16:256"):
        ppl = [metrics[(metrics["pattern"] == p) & (metrics["salient"] == salient)]
               ["perplexity"].min() for p in PAIR]
        rows.append(_pair_row(f"perplexity (best recipe, side-car {salient})", ppl,
                              "joined compression report" if not np.isnan(ppl).all()
                              else "n/a: no measured recipe joined"))
    where = ", ".join(f"{k} {v}" for k, v in held.items())
    note = f"Fixed 2:4 and fixed 8:16 datapaths without a side-car; held fixed: {where}."
    return pd.DataFrame(rows), note


def _pair_row(quantity: str, values, how: str) -> dict:
    a, b = (float(v) for v in values)
    return {"quantity": quantity, "2:4": a, "8:16": b,
            "8:16 / 2:4": b / a if a and not np.isnan(a) else np.nan, "how": how}


def model_weight_gb(arch_name: str, bytes_per_weight: float, dense_bytes: float) -> float:
    """Weight storage of a model: its linears (layers and lm_head, which the simulator runs
    sparse) at ``bytes_per_weight``, the embedding table dense at ``dense_bytes``."""
    from workloads.models import LAYER_WEIGHTS, get_arch

    arch = get_arch(arch_name)
    linears = arch.layers * sum(n * k for n, k in map(arch.weight_shape, LAYER_WEIGHTS)) \
        + arch.vocab * arch.hidden
    return (linears * bytes_per_weight + arch.vocab * arch.hidden * dense_bytes) / 1e9


def memory_matched(ok: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Per phase: LLaMa-2-13B under each pattern (its best TOPS/mm2 design without a side-car)
    against the dense LLaMa-2-7B on the same grid: weight storage, throughput, time per pass."""
    rows = []
    plain = ok[ok["salient"] == "none"]
    for phase, group in plain.groupby("phase", sort=True):
        dense7 = group[(group["workload"] == "llama2-7b") & group["is_baseline"]]
        if dense7.empty:
            continue
        d7 = dense7.iloc[0]
        dense_bytes = d7["bytes_per_weight"]
        for pattern, g13 in group[group["workload"] == "llama2-13b"].groupby("pattern"):
            b = sort_points(g13).sort_values("tops_per_mm2", ascending=False,
                                             kind="stable").iloc[0]
            rows.append({
                "phase": phase, "13B pattern": pattern,
                "13B design": b["support"] if b["support"] == "dense"
                else f"{b['support']} {b['encoding']}",
                "13B weight GB": model_weight_gb("llama2-13b", b["bytes_per_weight"],
                                                 dense_bytes),
                "7B dense weight GB": model_weight_gb("llama2-7b", dense_bytes, dense_bytes),
                "13B TFLOP/s": b["effective_tflops"], "7B dense TFLOP/s": d7["effective_tflops"],
                "13B pass time / 7B dense": b["total_cycles"] / d7["total_cycles"],
            })
    table = pd.DataFrame(rows)
    if rows:
        table = table.rename(columns={"13B pattern": "pattern"})
        table = sort_points(table).rename(columns={"pattern": "13B pattern"})
    note = ("A 13B model pruned N:M stores about as many bytes as a dense 7B (pruned linears "
            "incl. lm_head at the design's bytes/weight, embeddings dense). Pass time: simulated "
            "cycles of one forward pass on the same grid. Perplexity n/a: no LLaMa-2 checkpoint "
            "is reachable here.")
    return table, note


def dominant_stalls(ok: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    counts = ok.groupby(["phase", "pattern", "dominant_stall"], sort=True).size()
    table = counts.unstack("dominant_stall", fill_value=0).reset_index()
    table.columns.name = None
    return sort_points(table), "Points whose largest stall is each cause (all workloads)."


# ------------------------------------------------------------------------------------------
# Sentences
# ------------------------------------------------------------------------------------------


def sections(frame: pd.DataFrame, tables_: dict, join_notes: list[str]) -> dict[str, list[str]]:
    ok = _ok(frame)
    measured = sorted(ok.loc[ok["perplexity"].notna(), "workload"].unique()) \
        if "perplexity" in ok.columns else []
    without = sorted(set(ok["workload"]) - set(measured))
    accuracy = list(join_notes)
    if without:
        accuracy.append(f"Perplexity n/a (no measured recipe) for: {', '.join(without)}; their "
                        "rows carry hardware figures only.")
    return {"Setup": describe(frame), "Accuracy and energy": accuracy + [
        "Energy: " + ("per-action energy from the simulator's energy model (energy_j, "
                      "pj_per_mac, tops_per_w, average_power_w and the breakdown columns)."
                      if has_energy(ok) else NO_ENERGY)],
        "Headlines": headlines(ok, tables_)}


def describe(frame: pd.DataFrame) -> list[str]:
    counts = frame["status"].value_counts()
    ok = _ok(frame)
    stale = frame.attrs.get("stale_points", 0)
    swept = swept_fields(ok)
    values = "; ".join(f"{f}: {', '.join(map(str, sorted(ok[f].dropna().astype(str).unique())))}"
                       for f in swept)
    held = held_fields(ok)
    lines = [(f"{len(frame)} design points: {counts.get('ok', 0)} simulated, "
              f"{counts.get('error', 0)} failed (stored with their error)"
              + (f"; {stale} points of an older simulator version left out." if stale else ".")),
             f"Base preset(s): {', '.join(sorted(map(str, frame['hardware'].unique())))}.",
             f"Swept fields (each a column of every per-design table): {values or 'none'}.",
             "Fields the spec sets to one value: "
             + ("; ".join(f"{k} = {v}" for k, v in held.items()) or "none") + "."]
    for (w, ph), g in ok.groupby(["workload", "phase"], sort=True):
        params = ", ".join(f"{c} {sorted(g[c].dropna().astype(int).unique().tolist())}"
                           for c in ("seq", "batch", "kv_len") if g[c].notna().any())
        lines.append(f"{w} {ph}: {params}; all GEMMs of one forward pass (accel_sim "
                     f"simulate_workload){'; real masks' if g['real_masks'].any() else ''}.")
    lines.append("TOPS/mm2 = effective dense-equivalent TFLOP/s / area; speedup = dense-twin "
                 "cycles / cycles; bytes/weight = values + metadata per dense element "
                 "(compression.formats); decode_stall_share = decoder-stall cycles / cycles.")
    return lines


def headlines(ok: pd.DataFrame, tables_: dict) -> list[str]:
    """Findings computed from the results: Pareto sets, the 8:16 vs 2:4 claim, side-car cost,
    where decoders bind."""
    lines = []
    for title, (table, _) in tables_.items():
        if title.startswith("Pareto set - "):
            labels = sorted({design_label(r, swept_fields(ok)) for r in table.to_dict("records")})
            shown = "; ".join(labels[:6]) + (f"; and {len(labels) - 6} more"
                                             if len(labels) > 6 else "")
            lines.append(f"{title.removeprefix('Pareto set - ')}: Pareto set of "
                         f"{len(table)} designs: {shown}.")
    lines += _claim_lines(tables_["The method's claim on hardware terms: 8:16 vs 2:4"][0])
    lines += _sidecar_lines(ok)
    decode_bound = ok[ok["dominant_stall"] == "decode"]
    where = ", ".join(f"{d} decoder(s)/core: {n}" for d, n in
                      decode_bound.groupby("num_decoders").size().items()) \
        if "num_decoders" in ok.columns and len(decode_bound) else ""
    lines.append(f"Metadata decoders are the dominant stall in {len(decode_bound)} of {len(ok)} "
                 f"points{' (' + where + ')' if where else ''}.")
    return lines


def _claim_lines(claim: pd.DataFrame) -> list[str]:
    """The claim in one line: rank metadata, the rank_pipeline datapath, perplexity."""
    shown = [r for r in claim.to_dict("records") if not np.isnan(r["8:16 / 2:4"])
             and ("(rank)" in r["quantity"] or "rank/rank_pipeline" in r["quantity"]
                  or r["quantity"].startswith("perplexity"))]
    parts = [f"{r['quantity']}: 2:4 {r['2:4']:.4g}, 8:16 {r['8:16']:.4g} "
             f"(x{r['8:16 / 2:4']:.3f})" for r in shown]
    return ["8:16 vs 2:4 - " + "; ".join(parts) + "."] if parts else []


def _sidecar_lines(ok: pd.DataFrame) -> list[str]:
    """What the 16:256 side-car costs (area, time) and buys (perplexity) on fixed designs."""
    out = []
    fixed = ok[ok["support"] == "fixed"]
    if "salient" not in fixed.columns or fixed["salient"].nunique() < 2:
        return out
    for pattern, g in fixed.groupby("pattern", sort=False):
        with_car, plain = g[g["salient"] != "none"], g[g["salient"] == "none"]
        if with_car.empty or plain.empty:
            continue
        area = with_car["area_mm2"].min() / plain["area_mm2"].min() - 1
        keys = [c for c in ("workload", "phase", "encoding", "decoder", "num_decoders")
                if c in g.columns]
        paired = with_car.merge(plain, on=keys, suffixes=("_car", "_plain"))
        slow = (paired["total_cycles_car"] / paired["total_cycles_plain"]).median() - 1
        ppl = [g.loc[g["salient"] == s, "perplexity"].min() for s in ("none", "16:256")]
        bought = (f", perplexity {ppl[0]:.4g} -> {ppl[1]:.4g}" if not np.isnan(ppl).any()
                  else "")
        out.append(f"16:256 side-car on fixed {pattern}: +{100 * area:.1f}% area (128 salient "
                   f"lanes/core), median +{100 * slow:.1f}% cycles per pass{bought}.")
    return out


def fmt(table: pd.DataFrame) -> pd.DataFrame:
    """Floats to 4 significant digits, missing values as n/a."""
    return table.map(lambda v: "n/a" if v is None or (isinstance(v, float) and np.isnan(v))
                     else f"{v:.4g}" if isinstance(v, float) else v)


def markdown(sections_: dict, tables_: dict, charts: dict) -> str:
    out = ["# Design-space sweep", ""]
    for heading, lines in sections_.items():
        out += [f"## {heading}", "", *(f"- {line}" for line in lines), ""]
    out += ["## Charts", "", "Each chart also as SVG (same name, .svg).", "",
            *(f"![{caption}]({name})" for name, caption in charts.items()), "",
            "Full per-point figures: `results.csv`.", ""]
    for title, (table, note) in tables_.items():
        out += [f"## {title}", ""]
        if note:
            out += [note, ""]
        out += [fmt(table).to_markdown(index=False) if not table.empty else "_(no rows)_", ""]
    return "\n".join(out)
