"""Benchmarks and reference figures of the simulator: ``python -m accel_sim.bench --out DIR``.

Writes ``DIR/summary.md`` (tables), ``DIR/bench.json`` (every figure) and PNG charts:

* speed: one LLaMa-2-7B decoder layer (7 weight GEMMs, prefill 2048) on flexible-nm at 8:16, and
  all 80 layers of LLaMa-2-70B prefill 2048 (+ attention and lm_head); wall seconds as the median
  of ``--repeats`` runs after one warm-up, and simulated cycles per wall second; the same layer
  through the full event path (no steady-state extrapolation) for comparison;
* area: the breakdown of dense, fixed 2:4 (a100-like) and flexible N:M designs on one grid;
* patterns: a 7B layer at each pattern of the flexible design, prefill and decode;
* decoders: decode stalls against decoders per core for each rank decoder.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import matplotlib
import pandas as pd

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from compression.markdown import markdown_table
from workloads.models import gemms

from .area import area_breakdown
from .config import load_hardware
from .output_folder import BENCH_REPORT, OutputFolder, check_output_folder
from .simulate import simulate_workload


def _timed(fn, repeats: int):
    """(result, median wall s, all wall s, median CPU s of this process) after a warm-up; CPU
    time is the less noisy figure on a shared machine."""
    fn()  # warm-up
    walls, cpus, result = [], [], None
    for _ in range(repeats):
        start, cpu = time.perf_counter(), time.process_time()
        result = fn()
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
    return result, statistics.median(walls), walls, statistics.median(cpus)


def bench_speed(repeats: int) -> list[dict]:
    hw = load_hardware("flexible-nm")
    layer = [g for g in gemms("llama2-7b", "prefill", seq=2048, layers=1, lm_head=False)
             if g.weight_name]
    # (label, design, gemms, steady-state extrapolation, reuse of equal-shape GEMMs)
    cases = [
        ("llama2-7b 1 layer, 7 weight GEMMs, prefill 2048, 8:16", hw, layer, True, False),
        ("same, full event path (no extrapolation)", hw, layer, False, False),
        ("llama2-70b 80 layers + attention + lm_head, prefill 2048, 8:16", hw,
         gemms("llama2-70b", "prefill", seq=2048), True, False),
        ("llama2-70b 80 x 9 per-layer GEMMs + lm_head, each simulated, prefill 2048", hw,
         gemms("llama2-70b", "prefill", seq=2048, per_layer=True), True, False),
        ("llama2-70b decode batch 16, KV 4096, 80 layers, 8:16", hw,
         gemms("llama2-70b", "decode", batch=16, kv_len=4096), True, False),
    ]
    out = []
    for label, design, gemm_list, steady, reuse in cases:
        result, wall, walls, cpu = _timed(
            lambda d=design, g=gemm_list, s=steady, r=reuse: simulate_workload(
                d, g, steady_state=s, reuse=r), repeats)
        record = result.to_dict()
        out.append({
            "case": label, "gemms": len(gemm_list), "wall_s_median": wall, "wall_s_all": walls,
            "cpu_s_median": cpu,
            "simulated_cycles": record["total_cycles"],
            "cycles_per_wall_second": record["total_cycles"] / wall,
            "simulated_steps": record["simulated_steps"],
            "extrapolated_steps": record["skipped_steps"],
            "effective_tflops": record["effective_tflops"],
        })
    return out


AREA_DESIGNS = {
    "dense": ("dense", {}),
    "fixed 2:4 (a100-like)": ("a100-like", {}),
    "fixed 2:4, rank ROM": ("a100-like", {"encoding": "rank", "decoder": "rank_rom"}),
    "flexible, rank pipeline": ("flexible-nm", {}),
    "flexible, rank serial": ("flexible-nm", {"decoder": "rank_serial"}),
    "flexible, bitmask popcount": ("flexible-nm", {"encoding": "bitmask",
                                                   "decoder": "popcount"}),
    "flexible, index, full mux": ("flexible-nm", {"encoding": "index", "decoder": "direct",
                                                  "mux_style": "full"}),
    "flexible to 8:16, rank ROM": ("flexible-nm", {"decoder": "rank_rom",
                                                   "supported_patterns": ["2:4", "4:8",
                                                                          "8:16"]}),
}


def bench_area() -> list[dict]:
    rows = []
    for label, (preset, overrides) in AREA_DESIGNS.items():
        hw = load_hardware(preset).replace(**overrides)
        rows.append({"design": label, **area_breakdown(hw)})
    return rows


def bench_patterns() -> list[dict]:
    base = load_hardware("flexible-nm")
    rows = []
    for phase, kwargs in (("prefill", {"seq": 2048}), ("decode", {"batch": 16, "kv_len": 2048})):
        layer = gemms("llama2-7b", phase, layers=1, lm_head=False, **kwargs)
        dense = simulate_workload(base.run_at("dense"), layer).to_dict()
        for pattern in ("dense", "2:4", "4:8", "8:16", "16:32"):
            r = dense if pattern == "dense" else simulate_workload(base.run_at(pattern),
                                                                   layer).to_dict()
            rows.append({
                "phase": phase, "pattern": pattern, "cycles": r["total_cycles"],
                "effective_tflops": r["effective_tflops"],
                "speedup_over_dense": dense["total_cycles"] / r["total_cycles"],
                "utilization": r["utilization"],
                **{f"stall_{k}": v / r["total_cycles"] for k, v in r["stall_cycles"].items()},
                "dram_mib": r["dram_bytes_total"] / 2**20,
            })
    return rows


def bench_decoders() -> list[dict]:
    base = load_hardware("flexible-nm")
    layer = [g for g in gemms("llama2-7b", "prefill", seq=2048, layers=1, lm_head=False)
             if g.weight_name]
    rows = []
    for decoder in ("rank_pipeline", "rank_serial"):
        for count in (1, 2, 4, 8, 16, 32):
            hw = base.replace(decoder=decoder, num_decoders=count)
            r = simulate_workload(hw, layer).to_dict()
            rows.append({"decoder": decoder, "decoders_per_core": count,
                         "decode_stall_fraction": r["stall_cycles"]["decode"] / r["total_cycles"],
                         "effective_tflops": r["effective_tflops"],
                         "decoder_area_mm2": r["area_breakdown_mm2"]["decoders"]})
    return rows


def _plot_area(rows, path):
    parts = [k for k in rows[0] if k not in ("design", "total")]
    fig, ax = plt.subplots(figsize=(10, 4.8))
    bottom = [0.0] * len(rows)
    for part in parts:
        values = [r[part] for r in rows]
        ax.barh([r["design"] for r in rows], values, left=bottom, label=part)
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.set_xlabel("area, mm2 (whole chip, 7 nm)")
    ax.set_title("Area breakdown: dense vs fixed 2:4 vs flexible N:M (108 SMs x 1024 MAC)")
    ax.legend(fontsize=7, loc="lower right")
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_patterns(rows, path):
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, phase in zip(axes, ("prefill", "decode")):
        sel = [r for r in rows if r["phase"] == phase]
        ax.bar([r["pattern"] for r in sel], [r["speedup_over_dense"] for r in sel])
        ax.set_title(f"LLaMa-2-7B layer, {phase}")
        ax.set_ylabel("speedup over dense (same design)")
    fig.suptitle("flexible-nm: speedup by pattern")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_decoders(rows, path):
    fig, ax = plt.subplots(figsize=(6, 4))
    for decoder in sorted({r["decoder"] for r in rows}):
        sel = [r for r in rows if r["decoder"] == decoder]
        ax.plot([r["decoders_per_core"] for r in sel],
                [r["decode_stall_fraction"] for r in sel], marker="o", label=decoder)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("rank decoders per SM")
    ax.set_ylabel("decode stall / total cycles")
    ax.set_title("8:16, LLaMa-2-7B layer prefill 2048")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _table(rows, columns, fmt="{:.3g}") -> str:
    """``columns`` of ``rows`` (dicts) as Markdown, floats written with ``fmt``."""
    cells = pd.DataFrame(rows, columns=columns, dtype=object).map(
        lambda v: fmt.format(v) if isinstance(v, float) else str(v))
    return markdown_table(cells)


def write_report(out: Path, repeats: int = 3) -> dict:
    """Run every benchmark and write the report into ``out``: a new or empty folder, or an earlier
    run's (``accel_sim.output_folder``); any other folder is refused before the benchmarks run."""
    check_output_folder(out, BENCH_REPORT)
    data = {"speed": bench_speed(repeats), "area": bench_area(), "patterns": bench_patterns(),
            "decoders": bench_decoders(), "repeats": repeats}
    with OutputFolder(out, BENCH_REPORT) as folder:
        tmp = folder.staging
        (tmp / "bench.json").write_text(json.dumps(data, indent=2))
        _plot_area(data["area"], tmp / "area_breakdown.png")
        _plot_patterns(data["patterns"], tmp / "patterns.png")
        _plot_decoders(data["decoders"], tmp / "decoders.png")
        area_cols = ["design"] + [k for k in data["area"][0] if k != "design"]
        summary = [
            "# accel_sim reference figures",
            "",
            "Generated by `PYTHONPATH=. python -m accel_sim.bench --out reports/accel_sim`.",
            (f"Wall times: median of {repeats} runs after one warm-up, on the shared 2-core "
             "development machine (noisy); cycles are simulated cycles."),
            "",
            "## Speed",
            "",
            _table(data["speed"], ["case", "gemms", "wall_s_median", "cpu_s_median",
                                   "simulated_cycles",
                                   "cycles_per_wall_second", "simulated_steps",
                                   "extrapolated_steps", "effective_tflops"]),
            "",
            "## Area (mm2, whole chip)",
            "",
            _table(data["area"], area_cols),
            "",
            "![area](area_breakdown.png)",
            "",
            "## Patterns on flexible-nm (one LLaMa-2-7B layer incl. attention)",
            "",
            ("Prefill: 2048 tokens; decode: batch 16 at KV length 2048. Stall columns are "
             "fractions of the total cycles."),
            "",
            _table(data["patterns"], list(data["patterns"][0])),
            "",
            "![patterns](patterns.png)",
            "",
            "## Rank decoders per SM (8:16, 7B layer weight GEMMs, prefill 2048)",
            "",
            _table(data["decoders"], list(data["decoders"][0])),
            "",
            "![decoders](decoders.png)",
            "",
        ]
        (tmp / "summary.md").write_text("\n".join(summary))
        folder.commit()
    return data


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="reports/accel_sim")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    try:
        data = write_report(Path(args.out), args.repeats)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for row in data["speed"]:
        print(f"{row['wall_s_median']:8.3f} s wall {row['cpu_s_median']:8.3f} s cpu  "
              f"{row['cycles_per_wall_second']:.3g} cycles/s  {row['case']}")
    print(f"wrote {args.out}/summary.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
