"""The GPU mechanisms of the simulator against closed forms and brute force: memory stalls that
name bandwidth or latency, shared-memory operand delivery, library-tile selection with split-K,
launch overhead, the sustained clock and the non-GEMM kernels of a decode step."""

import math

import pytest

from accel_sim.config import HardwareConfig, load_hardware
from accel_sim.mapping import WeightInfo, build_mapping
from accel_sim.simulate import (gemm_candidates, run_candidate, select_candidate,
                                simulate_elementwise, simulate_gemm, simulate_workload)
from compression.formats import Pattern
from workloads.models import GEMM, elementwise_ops, gemms

IDEAL_MEMORY = {"dram_bandwidth_gb_s": 1e12, "dram_latency_ns": 0.0}


def one_core(**extra) -> HardwareConfig:
    """One 16x8x8 tensor core at 1 GHz (cycles = ns), 100 GB/s (100 B/cycle)."""
    base = {"num_cores": 1, "array_rows": 16, "array_cols": 8, "dot_width": 8,
            "clock_ghz": 1.0, "tile_k": 64, "weight_buffer_kib": 64, "act_buffer_kib": 64,
            "out_buffer_kib": 64, "dram_bandwidth_gb_s": 100.0, "dram_latency_ns": 2000.0}
    return HardwareConfig(**{**base, **extra})


def stalls_add_up(result) -> bool:
    parts = result.busy_cycles_per_run + sum(result.stall_per_run.values())
    return parts == pytest.approx(result.cycles_per_run, rel=1e-9)


def test_a_decode_with_too_few_loads_in_flight_is_latency_bound():
    """Two buffer stages keep at most two ~1 KiB loads in flight against 2000 cycles of
    latency: 16x the bandwidth changes the time by < 1%, zero latency at least halves it, and
    the stall says memory_latency."""
    gemv = GEMM("decode", 1, 8, 4096, 1, "w")
    hw = one_core(buffer_stages=2)
    base = simulate_gemm(hw, gemv)
    wide = simulate_gemm(hw.replace(dram_bandwidth_gb_s=1600.0), gemv)
    no_latency = simulate_gemm(hw.replace(dram_latency_ns=0.0), gemv)
    assert abs(wide.cycles_per_run / base.cycles_per_run - 1) < 0.01
    assert no_latency.cycles_per_run <= 0.5 * base.cycles_per_run
    stalls = base.stall_per_run
    assert max(stalls, key=stalls.get) == "memory_latency"
    assert stalls["memory_latency"] > 0.9 * base.cycles_per_run
    # Little's law: 64 k-steps, two in flight, each waiting one latency
    steps = 4096 // hw.tile_k
    assert base.cycles_per_run == pytest.approx(steps / 2 * hw.dram_latency_cycles, rel=0.03)
    assert stalls_add_up(base)


def test_a_gemv_with_enough_loads_in_flight_is_bandwidth_bound():
    gemv = GEMM("decode", 1, 512, 4096, 1, "w")
    hw = one_core(buffer_stages=8, dram_latency_ns=500.0, dram_bandwidth_gb_s=20.0)
    base = simulate_gemm(hw, gemv)
    wide = simulate_gemm(hw.replace(dram_bandwidth_gb_s=320.0), gemv)
    stalls = base.stall_per_run
    assert max(stalls, key=stalls.get) == "memory_bandwidth"
    assert wide.cycles_per_run < 0.3 * base.cycles_per_run
    weight_bytes = 512 * 4096 * 2
    assert base.cycles_per_run == pytest.approx(weight_bytes / hw.dram_bytes_per_cycle, rel=0.05)
    assert stalls_add_up(base)


def operand_bytes(tm, tn, k, pattern, mma_m, mma_n, value_bytes=2):
    """Shared-memory bytes of a tm x tn tile over k, counted independently: activations
    (tm x k) and weights (tn x kept, plus 2-bit indices per kept value) written once, then read
    once per warp tile that uses them."""
    kept = k if pattern is None else k * pattern.n // pattern.m
    meta = 0 if pattern is None else tn * kept * pattern.index_bits / 8
    acts = tm * k * value_bytes
    weights = tn * kept * value_bytes + meta
    return acts * (1 + math.ceil(tn / mma_n)) + weights * (1 + math.ceil(tm / mma_m))


@pytest.mark.parametrize("pattern", [None, "2:4"])
def test_operand_delivery_bound_gemm_takes_its_shared_memory_bytes(pattern):
    """With a slow shared memory (16 B/cycle) a one-tile GEMM's time is its operand bytes over
    that bandwidth, and the stall says operand_delivery; 2:4 saves only the weight bytes, so it
    gains far less than 2x."""
    p = None if pattern is None else Pattern.parse(pattern)
    hw = one_core(operand_bytes_per_cycle=16.0, mma_tile_m=16, mma_tile_n=8, **IDEAL_MEMORY)
    if p is not None:
        hw = hw.replace(pattern=pattern, supported_patterns=[pattern], num_decoders=64)
    gemm = GEMM("g", 64, 64, 4096, 1, "w")
    result = simulate_gemm(hw, gemm)
    expected = operand_bytes(result.tile[0], result.tile[1], 4096, p, 16, 8) / 16.0
    assert result.cycles_per_run == pytest.approx(expected, rel=0.01)
    stalls = result.stall_per_run
    assert max(stalls, key=stalls.get) == "operand_delivery"
    if p is not None:
        dense = simulate_gemm(hw.run_at("dense"), gemm)
        speedup = dense.cycles_per_run / result.cycles_per_run
        independent = operand_bytes(*result.tile[:2], 4096, None, 16, 8) / operand_bytes(
            *result.tile[:2], 4096, p, 16, 8)
        assert speedup == pytest.approx(independent, rel=0.02)
        assert speedup < 1.6


GPU_SHAPES = [(1, 4096, 4096), (16, 4096, 11008), (512, 768, 3072), (2048, 2048, 2048)]


@pytest.mark.parametrize("m,n,k", GPU_SHAPES)
def test_tile_selection_picks_the_fastest_candidate(m, n, k):
    """Brute force: every (library tile, split-K) candidate simulated; the selection is within
    its stated tolerance of the fastest, and exactly the fastest with tolerance 0."""
    hw = load_hardware("a100-like").run_at("dense")
    info = WeightInfo(None)
    candidates = gemm_candidates(hw, GEMM("g", m, n, k, 1, "w"), info)
    assert len(candidates) > 1
    totals = [run_candidate(hw, c, info, True, None).cycles + c.overhead(hw)
              for c in candidates]
    best = min(totals)
    for tolerance in (0.0, 0.05):
        chosen, run = select_candidate(hw, candidates, info, tolerance=tolerance)
        total = run.cycles + chosen.overhead(hw)
        assert total <= best * (1 + tolerance) + 1e-6
    exact, run = select_candidate(hw, candidates, info, tolerance=0.0)
    assert run.cycles + exact.overhead(hw) == pytest.approx(best, rel=1e-12)
    # the analytical bound the branch and bound relies on holds for every candidate
    for cand, total in zip(candidates, totals):
        assert cand.bound(hw) <= total * (1 + 1e-9)


def test_split_k_rescues_a_gemv_with_few_tiles():
    """A GEMV of 512 outputs fills 4 of 108 SMs with 128-wide tiles; splitting k puts more loads
    in flight, and the selection takes it."""
    hw = load_hardware("a100-like").run_at("dense")
    gemv = GEMM("g", 1, 512, 8192, 1, "w")
    result = simulate_gemm(hw, gemv)
    unsplit = simulate_gemm(hw.replace(max_split_k=1), gemv)
    assert result.split_k > 1
    assert result.cycles_per_run < 0.7 * unsplit.cycles_per_run


def test_launch_overhead_is_added_once_per_kernel():
    gemm = GEMM("g", 256, 1024, 1024, 1, "w")
    hw = one_core(**IDEAL_MEMORY)
    plain = simulate_gemm(hw, gemm)
    launched = simulate_gemm(hw.replace(launch_overhead_us=4.0), gemm)
    assert launched.cycles_per_run - plain.cycles_per_run == pytest.approx(4000.0)
    assert launched.stall_per_run["launch"] == pytest.approx(4000.0)
    # a grouped GEMM (the heads of one layer) is one launch for all its runs
    grouped = GEMM("heads", 16, 64, 128, 8, None, 8)
    a = simulate_gemm(hw, grouped)
    b = simulate_gemm(hw.replace(launch_overhead_us=4.0), grouped)
    assert b.total_cycles - a.total_cycles == pytest.approx(4000.0)


def test_sustained_clock_slows_compute_but_not_dram():
    compute = GEMM("c", 512, 512, 4096, 1, "w")
    stream = GEMM("s", 1, 8192, 8192, 1, "w")
    hw = load_hardware("a100-like").run_at("dense").replace(sustained_clock_ghz=None,
                                                            launch_overhead_us=0.0)
    slow = hw.replace(sustained_clock_ghz=hw.clock_ghz / 2)

    def seconds(design, gemm, **over):
        r = simulate_gemm(design.replace(**over), gemm)
        return r.total_cycles / (design.run_clock_ghz * 1e9)
    ideal = dict(IDEAL_MEMORY)
    assert seconds(slow, compute, **ideal) == pytest.approx(2 * seconds(hw, compute, **ideal),
                                                            rel=0.01)
    assert seconds(slow, stream) == pytest.approx(seconds(hw, stream), rel=0.05)
    assert slow.dense_peak_tflops == hw.dense_peak_tflops  # the peak stays the datasheet's


def test_decode_step_non_gemm_kernels():
    """Each non-GEMM kernel costs one launch, one latency and its bytes; the workload total is
    the GEMMs plus these kernels."""
    hw = load_hardware("a100-like").run_at("dense")
    ops = elementwise_ops("llama2-7b", "decode", seq=100, batch=2)
    kv = next(op for op in ops if op.name == "kv_cache_write")
    assert kv.bytes_moved == 2 * 2 * (2 * 4096) * 2 and kv.count == 32  # read + write k and v
    one = simulate_elementwise(hw, kv)
    expected = hw.launch_cycles + hw.dram_latency_cycles + kv.bytes_moved / \
        hw.dram_bytes_per_cycle
    assert one.cycles_per_run == pytest.approx(expected)
    assert stalls_add_up(one)
    layer = gemms("llama2-7b", "decode", seq=100, batch=2)
    plain = simulate_workload(hw, layer)
    full = simulate_workload(hw, layer, elementwise=ops)
    extra = sum(simulate_elementwise(hw, op).total_cycles for op in ops)
    assert full.total_cycles == pytest.approx(plain.total_cycles + extra)
    record = full.to_dict()
    assert sum(record["stall_cycles"].values()) + record["busy_cycles"] == pytest.approx(
        record["total_cycles"])


def test_library_tile_that_does_not_fit_is_refused():
    hw = one_core(library_tiles=["512x512"])
    with pytest.raises(ValueError, match="library_tiles"):
        simulate_gemm(hw, GEMM("g", 64, 64, 64, 1, "w"))
    with pytest.raises(ValueError, match="does not fit"):
        build_mapping(hw, 64, 64, 64, WeightInfo(None), tile=(512, 512))
