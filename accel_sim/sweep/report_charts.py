"""The sweep report's charts, each written as PNG (160 dpi) and SVG beside it.

Perplexity against TOPS/W and TOPS/mm2 with the Pareto front, stacked area and energy breakdowns
per datapath, a roofline with every design's point, and the decoder stall share against decoders
per core. Legends sit outside the axes and figures are saved with a tight bounding box, so no label
is clipped; SVG ids are salted with a constant and carry no date, so reruns write the same bytes.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

DPI = 160
MARKERS = {"none": "o"}  # side-car -> marker; any other side-car gets "^"
CAPTIONS = {
    "perplexity_vs_efficiency.png": "Perplexity vs TOPS/W and vs TOPS/mm2 (measured recipes), "
                                    "Pareto front marked",
    "energy_breakdown.png": "Energy per forward pass by component and action, per datapath",
    "area_breakdown.png": "Area by component, per datapath (mm2)",
    "roofline.png": "Roofline: every design's throughput against its DRAM intensity",
    "decoder_stalls.png": "Decoder stall share vs decoders per core",
}


def write_charts(ok: pd.DataFrame, out: Path) -> dict[str, str]:
    """Draw every chart the results allow into ``out``; returns {png name: caption}."""
    plt.rcParams["svg.hashsalt"] = "nmsim-sweep-report"
    draws = {"perplexity_vs_efficiency.png": perplexity_chart,
             "energy_breakdown.png": lambda f: breakdown_chart(f, "energy"),
             "area_breakdown.png": lambda f: breakdown_chart(f, "area"),
             "roofline.png": roofline_chart, "decoder_stalls.png": decoder_chart}
    charts = {}
    for name, draw in draws.items():
        fig = draw(ok) if not ok.empty else None
        if fig is None:
            continue
        fig.savefig(out / name, dpi=DPI, bbox_inches="tight", metadata={"Software": None})
        fig.savefig((out / name).with_suffix(".svg"), bbox_inches="tight",
                    metadata={"Date": None, "Creator": None})
        plt.close(fig)
        charts[name] = CAPTIONS[name]
    return charts


def _pattern_colors(patterns) -> dict:
    from accel_sim.sweep.report import _pattern_sort_key

    cmap = plt.get_cmap("tab10")
    ordered = sorted({str(p) for p in patterns}, key=_pattern_sort_key)
    return {p: cmap(i % 10) for i, p in enumerate(ordered)}


def perplexity_chart(ok: pd.DataFrame):
    """Perplexity (lower is better) against TOPS/W and TOPS/mm2, one row of panels per phase."""
    from accel_sim.sweep.report import has_energy, pareto_front

    joined = ok[ok["perplexity"].notna()] if "perplexity" in ok.columns else ok.iloc[0:0]
    if joined.empty:
        return None
    phases = sorted(joined["phase"].unique())
    metrics = [("tops_per_w", "TOPS/W (dense-equivalent)"), ("tops_per_mm2", "TOPS/mm2")]
    fig, axes = plt.subplots(len(phases), 2, figsize=(11, 4.2 * len(phases)), squeeze=False)
    colors = _pattern_colors(joined["pattern"])
    for row, phase in zip(axes, phases):
        group = joined[joined["phase"] == phase]
        for ax, (col, label) in zip(row, metrics):
            ax.set_title(f"{group['workload'].iloc[0]} {phase}", fontsize=9)
            ax.set_ylabel("perplexity (whole split, lower is better)")
            ax.set_xlabel(label)
            if col == "tops_per_w" and not has_energy(group):
                ax.text(0.5, 0.5, "n/a: the results carry no energy columns",
                        ha="center", va="center", transform=ax.transAxes)
                continue
            for (pattern, salient), g in group.groupby(["pattern", "salient"], sort=True):
                ax.scatter(g[col], g["perplexity"], s=18, alpha=0.75, color=colors[pattern],
                           marker=MARKERS.get(salient, "^"),
                           label=pattern if salient == "none" else f"{pattern} +{salient}")
            front = group[pareto_front(group["perplexity"], group[col])]
            front = front.sort_values(["perplexity", col])
            # The boundary of what the front dominates (lower perplexity, higher efficiency).
            ax.step(front[col], front["perplexity"], where="pre", color="black",
                    linewidth=1.0, label="Pareto front")
            ax.scatter(front[col], front["perplexity"], s=60, facecolors="none",
                       edgecolors="black", linewidths=1.0)
            ax.grid(alpha=0.3)
    axes[0, 1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.tight_layout()
    return fig


def breakdown_chart(ok: pd.DataFrame, kind: str):
    """Stacked horizontal bars of :func:`report_text.breakdown_table`, one per datapath."""
    from accel_sim.sweep.report_text import breakdown_table

    table, note = breakdown_table(ok, kind)
    if table.empty:
        return None
    parts = [c for c in table.columns if c not in ("design", "total")]
    fig, ax = plt.subplots(figsize=(10, 0.32 * len(table) + 1.8))
    left = np.zeros(len(table))
    cmap = plt.get_cmap("tab20")
    for i, part in enumerate(parts):
        values = table[part].to_numpy(float)
        ax.barh(table["design"], values, left=left, color=cmap(i % 20), label=part)
        left += values
    ax.set_xlabel("area (mm2)" if kind == "area" else "energy per forward pass (J)")
    ax.set_title("held fixed: " + note.split("Held fixed: ")[-1].rstrip("."), fontsize=8)
    ax.invert_yaxis()
    ax.tick_params(axis="y", labelsize=8)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def roofline_chart(ok: pd.DataFrame):
    """Effective TFLOP/s against dense-equivalent FLOP per DRAM byte, with the compute ceilings
    (dense and sparse peaks) and the DRAM ceiling when the results carry the bandwidth."""
    points = ok[ok["flop_per_dram_byte"].notna()] if "flop_per_dram_byte" in ok.columns \
        else ok.iloc[0:0]
    if points.empty:
        return None
    phases = sorted(points["phase"].unique())
    fig, axes = plt.subplots(1, len(phases), figsize=(6 * len(phases), 4.6), squeeze=False)
    workloads = sorted(points["workload"].unique())
    cmap = plt.get_cmap("tab10")
    for ax, phase in zip(axes[0], phases):
        group = points[points["phase"] == phase]
        for i, w in enumerate(workloads):
            g = group[group["workload"] == w]
            ax.scatter(g["flop_per_dram_byte"], g["effective_tflops"], s=12, alpha=0.6,
                       color=cmap(i % 10), label=w)
        _ceilings(ax, group)
        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):  # plain numbers at 1-2-5 steps: no crowded labels
            axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            axis.set_minor_formatter(NullFormatter())
        ax.set_title(phase, fontsize=9)
        ax.set_xlabel("dense-equivalent FLOP per DRAM byte")
        ax.set_ylabel("effective TFLOP/s (dense-equivalent)")
        ax.grid(alpha=0.3, which="both")
    axes[0, -1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.tight_layout()
    return fig


def _ceilings(ax, group: pd.DataFrame) -> None:
    x = np.geomspace(group["flop_per_dram_byte"].min() / 2, group["flop_per_dram_byte"].max() * 2)
    bandwidth = group["dram_gb_s"].max() if "dram_gb_s" in group.columns else np.nan
    memory_roof = x * bandwidth / 1e3 if pd.notna(bandwidth) else np.full_like(x, np.inf)
    peaks = {"dense": group["dense_peak_tflops"].max(), "sparse": group["sparse_peak_tflops"].max()}
    for (label, peak), style in zip(peaks.items(), ("--", ":")):
        if pd.notna(peak):
            ax.plot(x, np.minimum(memory_roof, peak), style, color="gray", linewidth=1.2,
                    label=f"{label} roof: {peak:.0f} TFLOP/s"
                    + (f", {bandwidth:.0f} GB/s" if pd.notna(bandwidth) else ""))


def decoder_chart(ok: pd.DataFrame):
    """Median decoder-stall share over workloads against decoders per core, one line per pattern
    and decoder on the fixed datapaths without a side-car (flexible ones when no fixed one was
    swept; the table lists both); one panel per phase."""
    sparse = ok[(ok["support"] != "dense") & (ok.get("salient", "none") == "none")]
    kind = "fixed" if (sparse["support"] == "fixed").any() else "flexible"
    fixed = sparse[sparse["support"].str.startswith(kind)]
    if fixed.empty or "num_decoders" not in fixed.columns or fixed["num_decoders"].nunique() < 2:
        return None
    phases = sorted(fixed["phase"].unique())
    fig, axes = plt.subplots(1, len(phases), figsize=(6 * len(phases), 4.6), squeeze=False,
                             sharey=True)
    decoders = sorted(fixed["decoder"].astype(str).unique())
    from accel_sim.sweep.report import _pattern_sort_key

    patterns = sorted(fixed["pattern"].astype(str).unique(), key=_pattern_sort_key)
    cmap, styles = plt.get_cmap("tab10"), ["-", "--", "-.", ":"]
    for ax, phase in zip(axes[0], phases):
        group = fixed[fixed["phase"] == phase]
        for pattern in patterns:
            for decoder in decoders:
                g = group[(group["pattern"] == pattern) & (group["decoder"] == decoder)]
                if g.empty:
                    continue
                series = g.groupby("num_decoders", sort=True)["decode_stall_share"].median()
                ax.plot(series.index, 100 * series.to_numpy(), marker="o", markersize=3,
                        color=cmap(decoders.index(decoder) % 10),
                        linestyle=styles[patterns.index(pattern) % len(styles)],
                        label=f"{kind} {pattern} {decoder}")
        ticks = sorted(group["num_decoders"].unique())
        ax.set_xscale("log", base=2)
        ax.set_xticks(ticks, [str(v) for v in ticks])
        ax.set_title(f"{phase} ({kind} datapaths, no side-car)", fontsize=9)
        ax.set_xlabel("metadata decoders per core")
        ax.set_ylabel("cycles stalled on decoders (%, median over workloads)")
        ax.grid(alpha=0.3)
    axes[0, -1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.tight_layout()
    return fig
