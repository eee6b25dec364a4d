"""Run-length metadata (``rle``, Sparseloop's RLE) end to end: format, decoder model and its
circuit, area, energy hook, Numba kernel, simulator - each against an independent reference."""

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accel_sim.config import load_hardware
from accel_sim.decoders import decoder_model
from accel_sim.functional import functional_matmul
from accel_sim.rtl.harness import simulate_decoder
from accel_sim.rtl.synth import synthesize, yosys_path
from accel_sim.simulate import simulate_gemm
from compression import formats as F
from compression.formats import FormatError, Pattern
from nm_kernels.cpu import prepare
from workloads.models import GEMM

SETTINGS = settings(max_examples=25, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@st.composite
def patterns(draw, max_m=40):
    m = draw(st.integers(2, max_m))
    return Pattern(draw(st.integers(1, m - 1)), m)


@st.composite
def masks(draw):
    """A pattern and an exactly-N:M keep mask [rows, blocks * M] drawn position by position."""
    p = draw(patterns())
    rows, blocks = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    kept = [sorted(draw(st.permutations(range(p.m)))[: p.n]) for _ in range(rows * blocks)]
    mask = np.zeros((rows * blocks, p.m), dtype=bool)
    for b, cols in enumerate(kept):
        mask[b, cols] = True
    return p, mask.reshape(rows, blocks * p.m)


def brute_force_runs(mask_row: np.ndarray, p: Pattern) -> list[int]:
    """Walk each block element by element, counting pruned positions before each kept one."""
    runs = []
    for start in range(0, len(mask_row), p.m):
        zeros = 0
        for kept in mask_row[start:start + p.m]:
            if kept:
                runs.append(zeros)
                zeros = 0
            else:
                zeros += 1
    return runs


@SETTINGS
@given(masks())
def test_rle_round_trips_against_brute_force(case):
    p, mask = case
    rows, cols = mask.shape
    blocks = cols // p.m
    positions = np.array([[np.flatnonzero(mask[r, b * p.m:(b + 1) * p.m])
                           for b in range(blocks)] for r in range(rows)])
    packed = F.encode_metadata(positions, p, "rle")
    bits = math.ceil(math.log2(p.m - p.n + 1)) if p.m - p.n > 1 else 1
    fields = F.unpack_fields(packed, blocks * p.n, bits)
    for r in range(rows):
        assert fields[r].tolist() == brute_force_runs(mask[r], p)
    np.testing.assert_array_equal(F.decode_metadata(packed, p, "rle", rows, blocks), positions)
    assert F.bits_per_element(p, "rle") == bits * p.n / p.m


def test_rle_rejects_runs_that_skip_more_than_m_minus_n():
    p = Pattern(2, 4)  # runs of 2 bits; (2, 1) skips 3 > 2 positions
    packed = F.pack_fields(np.array([[2, 1]], dtype=np.uint64), 2)
    with pytest.raises(FormatError, match="skip 3 positions"):
        F.decode_metadata(packed, p, "rle", 1, 1)
    with pytest.raises(FormatError, match="prefix-sum decoder"):
        decoder_model("prefix_sum").decode(packed, p, 1, 1)


@SETTINGS
@given(masks(), st.sampled_from(["dense", "pad"]), st.data())
def test_decoder_model_reads_what_formats_decodes(case, tail, data):
    p, mask = case
    rows, cols = mask.shape
    extra = data.draw(st.integers(0, p.m - 1))  # a tail
    weight = np.random.default_rng(cols).standard_normal((rows, cols + extra))
    full = F.nm_mask(np.abs(weight), p, tail)
    full[:, :cols] = mask
    t = F.NMTensor.from_dense(weight, full, p, "rle", tail, "float32")
    got = decoder_model("prefix_sum").decode(t.metadata, p, rows, t.geometry.blocks)
    np.testing.assert_array_equal(got, t.positions)
    x = np.random.default_rng(1).standard_normal((cols + extra, 3))
    np.testing.assert_allclose(functional_matmul(F.SparseWeight(t), x),
                               t.to_dense(np.float64) @ x, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("names", [("2:4",), ("1:4",), ("8:16",), ("2:4", "4:8", "8:16", "16:32"),
                                   ("3:4", "1:2")])
def test_circuit_matches_format_and_charged_timing(names):
    supported = tuple(map(Pattern.parse, names))
    model = decoder_model("prefix_sum")
    rng = np.random.default_rng(3)
    for p in supported:
        w = rng.standard_normal((2, 3 * p.m + 1))
        t = F.NMTensor.from_dense(w, F.nm_mask(np.abs(w), p, "pad"), p, "rle", "pad")
        fields = model.fields(t.metadata, p, 2, t.geometry.blocks).reshape(-1, p.n)
        trace = simulate_decoder(model.circuit(supported), fields, p)
        np.testing.assert_array_equal(trace.positions[:, :p.n], t.positions.reshape(-1, p.n))
        assert not trace.positions[:, p.n:].any()
        # Kogge-Stone over N_max slots: ceil(log2 N_max) registered levels, one block a cycle
        n_max = max(q.n for q in supported)
        assert set(trace.latencies.tolist()) == {math.ceil(math.log2(n_max))}
        assert model.latency_cycles(p, supported) == math.ceil(math.log2(n_max))
        assert set(trace.intervals.tolist()) == {1}


@pytest.mark.skipif(yosys_path() is None, reason="yosys is not installed")
def test_area_model_is_within_its_fit_error_of_synthesis():
    supported = (Pattern(4, 8),)
    synthesized = synthesize(decoder_model("prefix_sum").circuit(supported)).area_um2
    assert decoder_model("prefix_sum").logic_um2_45(supported) == pytest.approx(
        synthesized, rel=0.2)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 16])
def test_energy_actions_count_the_prefix_additions(n):
    # Count the additions of a Kogge-Stone prefix sum by running one, plus the run + 1 steps.
    adds, step = 0, 1
    while step < n:
        adds += n - step
        step *= 2
    pattern = Pattern(n, 2 * n)
    actions = decoder_model("prefix_sum").energy_actions(pattern)
    width = math.ceil(math.log2(2 * n))  # bits of a position in a block of 2n
    assert actions["adder_bit"] == (adds + n - 1) * width
    assert set(actions) <= {"adder_bit", "comparator_bit", "register_bit", "rom_read_bit"}


@SETTINGS
@given(masks(), st.sampled_from(["float32", "float16", "bfloat16"]), st.integers(1, 9))
def test_numba_kernel_matches_float64_numpy(case, dtype, batch):
    p, mask = case
    rows, cols = mask.shape
    rng = np.random.default_rng(rows * cols + batch)
    weight = rng.standard_normal((rows, cols + 1)).astype(np.float32)
    full = np.ones((rows, cols + 1), dtype=bool)
    full[:, :cols] = mask
    t = F.NMTensor.from_dense(weight, full, p, "rle", "dense", dtype)
    plan = prepare(t)
    assert plan.decoder == "prefix_sum"
    x = rng.standard_normal((cols + 1, batch)).astype(np.float32)
    dense = t.to_dense(np.float64)
    scale = np.abs(dense) @ np.abs(x.astype(np.float64)) + 1e-30
    assert np.max(np.abs(plan(x) - dense @ x) / scale) < 1e-5
    gemv = plan(np.ascontiguousarray(x[:, 0]))
    assert np.max(np.abs(gemv - dense @ x[:, 0]) / scale[:, 0]) < 1e-5


def test_simulator_charges_rle_metadata_at_its_bits():
    # 3:4 keeps three of four: a run fits 1 bit (index needs 2), so the metadata traffic halves.
    hw = load_hardware("a100-like").replace(pattern="3:4", supported_patterns=["3:4"])
    gemm = GEMM("gemv", 1, 512, 4096, 1, "w")
    rle = simulate_gemm(hw.replace(encoding="rle", decoder="auto"), gemm)
    index = simulate_gemm(hw.replace(encoding="index", decoder="direct"), gemm)
    assert rle.dram_bytes_per_run["metadata"] == pytest.approx(
        index.dram_bytes_per_run["metadata"] / 2)
    assert rle.dram_bytes_per_run["values"] == index.dram_bytes_per_run["values"]


def test_config_takes_rle_with_its_decoder_only():
    hw = load_hardware("a100-like").replace(encoding="rle", decoder="auto")
    assert hw.decoder_kind == "prefix_sum"
    with pytest.raises(ValueError, match="cannot read 'rle' metadata"):
        hw.replace(decoder="rank_rom")
