"""Decoder and operand-mux circuits (accel_sim/rtl): bit-exact against compression.formats in
Amaranth's simulator, cycle by cycle against the timing the simulator charges, and synthesized
with Yosys (small circuits only; skipped with a reason when yosys is absent)."""

import csv
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from accel_sim import area
from accel_sim.decoders import DECODER_MODELS, decoder_model
from accel_sim.rtl.harness import simulate_decoder
from accel_sim.rtl.muxes import OperandMuxCircuit
from accel_sim.rtl.synth import NANGATE45_CELLS, fit_area_model, synthesize, yosys_path
from compression import formats as F
from compression.formats import Pattern

SYNTH_CSV = Path(__file__).resolve().parents[2] / "reports" / "area" / "synthesis.csv"
# Rank ROMs simulated here: the Amaranth simulator compiles one case per word.
MAX_SIM_ROM_WORDS = 1000


@st.composite
def streams(draw, encoding):
    """A compressed tensor of a random N:M pattern (M <= 32), its supported-pattern set (the
    pattern alone or with up to two others, one datapath) and a tail policy."""
    m = draw(st.integers(2, 32))
    n = draw(st.integers(1, m - 1))
    p = Pattern(n, m)
    others = draw(st.lists(st.tuples(st.integers(2, 32), st.integers(1, 31)), max_size=2))
    supported = tuple(dict.fromkeys([p] + [Pattern(min(k, mm - 1), mm) for mm, k in others]))
    rows = draw(st.integers(1, 2))
    cols = draw(st.integers(1, 3)) * m + draw(st.integers(0, m - 1))
    tail = draw(st.sampled_from(F.TAIL_POLICIES))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    w = rng.standard_normal((rows, cols))
    t = F.NMTensor.from_dense(w, F.nm_mask(rng.random((rows, cols)), p, tail), p,
                              encoding=encoding, tail=tail, dtype="float32")
    return t, supported


def _check_decoder(kind: str, tensor, supported):
    model = decoder_model(kind)
    p = tensor.pattern
    rows, blocks = tensor.shape[0], tensor.geometry.blocks
    fields = model.fields(tensor.metadata, p, rows, blocks).reshape(rows * blocks, -1)
    trace = simulate_decoder(model.circuit(supported), fields, p)
    want = tensor.positions.reshape(-1, p.n).astype(np.int64)  # the format's own decode
    assert np.array_equal(trace.positions[:, :p.n], want)
    assert not trace.positions[:, p.n:].any()  # slots beyond the running N stay zero
    assert set(trace.latencies.tolist()) == {model.latency_cycles(p, supported)}
    if len(trace.taken) > 1:
        rate = model.blocks_per_cycle(p)
        assert set(trace.intervals.tolist()) == {1 if math.isinf(rate) else round(1 / rate)}


@pytest.mark.parametrize("kind", ["direct", "popcount", "rank_pipeline", "rank_serial"])
@settings(max_examples=12, deadline=None)
@given(data=st.data())
def test_decoder_circuit_matches_format_and_charged_timing(kind, data):
    tensor, supported = data.draw(streams(DECODER_MODELS[kind].encoding))
    _check_decoder(kind, tensor, supported)


@settings(max_examples=12, deadline=None)
@given(streams("rank"))
def test_rank_rom_circuit_matches_format(case):
    tensor, supported = case
    if sum(p.configurations for p in supported) > MAX_SIM_ROM_WORDS:
        supported = (tensor.pattern,)
    if tensor.pattern.configurations > MAX_SIM_ROM_WORDS:
        tensor = F.NMTensor.from_dense(
            np.ones((1, 8)), F.nm_mask(np.arange(8.0)[None], "3:4"), "3:4", encoding="rank")
        supported = (tensor.pattern,)
    _check_decoder("rank_rom", tensor, supported)


@pytest.mark.parametrize("names", [("2:4",), ("8:16",), ("2:4", "4:8", "8:16", "16:32")])
@pytest.mark.parametrize("kind", ["popcount", "rank_pipeline", "rank_serial"])
def test_default_sweep_datapaths_decode_every_pattern(kind, names):
    supported = tuple(Pattern.parse(p) for p in names)
    rng = np.random.default_rng(7)
    for p in supported:
        w = rng.standard_normal((2, 3 * p.m + 1))
        t = F.NMTensor.from_dense(w, F.nm_mask(np.abs(w), p, "pad"), p,
                                  encoding=DECODER_MODELS[kind].encoding, tail="pad")
        _check_decoder(kind, t, supported)


@settings(max_examples=20, deadline=None)
@given(streams("index"), st.integers(1, 16))
def test_full_and_sorted_muxes_pick_the_kept_operand(case, width):
    tensor, _ = case
    p = tensor.pattern
    positions = tensor.positions.reshape(-1, p.n)[:2].tolist()
    rng = np.random.default_rng(width)
    operands = rng.integers(0, 1 << width, size=p.m).tolist()
    full = OperandMuxCircuit(p.m, width)
    window = p.m - p.n + 1
    sorted_ = OperandMuxCircuit(window, width)
    cases = []
    for block in positions:
        for slot, pos in enumerate(block):
            assert 0 <= pos - slot < window  # the sorted mux's claim
            cases.append((full, operands, pos, operands[pos]))
            cases.append((sorted_, operands[slot:slot + window], pos - slot, operands[pos]))
    _run_muxes(cases, width)


def _run_muxes(cases, width):
    from amaranth.sim import Simulator

    for circuit, operands, sel, want in cases:
        packed = sum(v << (i * width) for i, v in enumerate(operands))
        got = []

        async def bench(ctx, circuit=circuit, packed=packed, sel=sel, got=got):
            ctx.set(circuit.operands, packed)
            ctx.set(circuit.sel, sel)
            got.append(ctx.get(circuit.out))

        sim = Simulator(circuit)
        sim.add_testbench(bench)
        sim.run()
        assert got == [want]


needs_yosys = pytest.mark.skipif(yosys_path() is None,
                                 reason="yosys not installed (make yosys / apt-get install yosys)")


@needs_yosys
def test_synthesized_small_circuits_have_their_structural_registers():
    two = synthesize(OperandMuxCircuit(2, 8))
    assert two.flip_flops == 0 and two.area_um2 > 0
    # A 2:1 mux of 8 bits is 8 one-bit 2:1 muxes: at most one MUX2_X1 cell's area per bit.
    assert two.area_um2 <= 8 * dict(NANGATE45_CELLS.values())["MUX2_X1"] + 1e-9
    rom = synthesize(decoder_model("rank_rom").circuit((Pattern(2, 4),)))
    assert rom.flip_flops == 2 * 2 + 1  # the output register (N x log2 M) + valid
    direct = synthesize(decoder_model("direct").circuit((Pattern(2, 4),)))
    assert direct.cells == {}  # wires only
    wide = synthesize(OperandMuxCircuit(4, 8))
    assert wide.area_um2 > two.area_um2 and wide.depth > two.depth


def _committed_rows():
    if not SYNTH_CSV.exists():
        pytest.skip(f"{SYNTH_CSV} not generated (python -m accel_sim.rtl.synth)")
    rows = []
    with SYNTH_CSV.open() as fh:
        for r in csv.DictReader(fh):
            cells = {name: int(r[name]) for name, _ in NANGATE45_CELLS.values() if int(r[name])}
            rows.append({"circuit": r["circuit"], "patterns": r["patterns"],
                         "inputs": int(r["inputs"]) if r["inputs"] else "",
                         "width": int(r["width"]) if r["width"] else "",
                         "area_um2": float(r["area_um2"]), "cells": cells,
                         "flip_flops": int(r["flip_flops"])})
    return rows


def test_committed_synthesis_table_is_cells_times_nangate_areas():
    areas = dict(NANGATE45_CELLS.values())
    for row in _committed_rows():
        assert row["area_um2"] == pytest.approx(
            sum(n * areas[c] for c, n in row["cells"].items()), abs=0.01)
        assert row["flip_flops"] == row["cells"].get("DFF_X1", 0)


def test_area_model_constants_are_the_fit_to_the_committed_table():
    fit = fit_area_model(_committed_rows())
    for kind, coef in fit["decoders"].items():
        assert decoder_model(kind).area_fit_um2 == pytest.approx(coef, rel=1e-3)
    assert area.MUX_FIT_UM2 == pytest.approx(fit["mux"], rel=1e-3)
