"""Random designs from the sweepable fields: every result respects the physics (peak, stall
sum, lower bounds), or the design is refused with a ValueError that names a field."""

import re

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from accel_sim.config import DECODERS_FOR_ENCODING, SWEEPABLE_FIELDS, load_hardware
from accel_sim.simulate import simulate_gemm
from workloads.models import GEMM

PATTERNS = ["2:4", "4:8", "8:16", "16:32"]


@st.composite
def designs(draw):
    encoding = draw(st.sampled_from(sorted(DECODERS_FOR_ENCODING)))
    template = draw(st.sampled_from(["tensor_core", "systolic"]))
    supported = draw(st.lists(st.sampled_from(PATTERNS), min_size=1, max_size=4, unique=True))
    return {
        "template": template,
        "dataflow": draw(st.sampled_from(["ws", "os", "is"])),
        "dot_width": 1 if template == "systolic" else draw(st.sampled_from([1, 4, 8, 16])),
        "array_rows": draw(st.sampled_from([4, 8, 16, 32])),
        "array_cols": draw(st.sampled_from([4, 8, 16])),
        "num_cores": draw(st.integers(1, 8)),
        "supported_patterns": supported,
        "pattern": draw(st.sampled_from(["dense", *supported])),
        "encoding": encoding,
        "decoder": draw(st.sampled_from(["auto", *DECODERS_FOR_ENCODING[encoding]])),
        "num_decoders": draw(st.integers(1, 16)),
        "mux_style": draw(st.sampled_from(["full", "sorted"])),
        "dtype": draw(st.sampled_from(["int8", "fp8", "fp16", "bf16"])),
        "dram_bandwidth_gb_s": draw(st.sampled_from([10.0, 100.0, 1000.0])),
        "dram_latency_ns": draw(st.sampled_from([0.0, 100.0, 600.0])),
        "weight_buffer_kib": draw(st.sampled_from([1, 8, 64, 256])),
        "act_buffer_kib": draw(st.sampled_from([1, 8, 64, 256])),
        "out_buffer_kib": draw(st.sampled_from([1, 8, 64, 256])),
        "buffer_stages": draw(st.integers(2, 4)),
        "double_buffered": draw(st.booleans()),
        "tile_k": draw(st.sampled_from([32, 64, 96, 256])),
        "operand_bytes_per_cycle": draw(st.sampled_from([0.0, 16.0, 128.0])),
        "launch_overhead_us": draw(st.sampled_from([0.0, 2.0])),
        "sustained_clock_ghz": draw(st.sampled_from([None, 1.0])),
        "dram_efficiency": draw(st.sampled_from([1.0, 0.7])),
        "max_split_k": draw(st.sampled_from([1, 4])),
    }


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(overrides=designs(), m=st.integers(1, 300), n=st.integers(1, 300),
       k=st.integers(1, 600))
# Found by hypothesis: a 4:8 dense tail of 7 weights on a 4-row weight-stationary array did 24.5
# cycles of useful MACs in a 24-cycle fold (negative compute stall).
@example(overrides={"template": "systolic", "dataflow": "ws", "dot_width": 1,
                    "array_rows": 4, "array_cols": 4, "num_cores": 1,
                    "supported_patterns": ["2:4", "4:8"], "pattern": "4:8",
                    "encoding": "bitmask", "decoder": "auto", "num_decoders": 1,
                    "mux_style": "full", "dtype": "int8", "dram_bandwidth_gb_s": 10.0,
                    "dram_latency_ns": 0.0, "weight_buffer_kib": 1, "act_buffer_kib": 1,
                    "out_buffer_kib": 1, "buffer_stages": 2, "double_buffered": False,
                    "tile_k": 32},
         m=14, n=55, k=7)
def test_random_designs_obey_the_physics_or_name_the_field(overrides, m, n, k):
    assert set(overrides) <= set(SWEEPABLE_FIELDS)
    base = load_hardware("flexible-nm")
    try:
        hw = base.replace(**overrides)
        result = simulate_gemm(hw, GEMM("g", m, n, k, 1, "w"))
    except ValueError as exc:
        fields = "|".join(SWEEPABLE_FIELDS + ("array_rows", "rank"))
        assert re.search(fields, str(exc)), str(exc)
        return
    total = result.cycles_per_run
    parts = result.busy_cycles_per_run + sum(result.stall_per_run.values())
    assert parts == pytest.approx(total, rel=1e-9)
    assert all(v >= -1e-9 for v in result.stall_per_run.values())
    assert result.effective_tflops <= hw.sparse_peak_tflops() * (1 + 1e-9)
    assert 0 < result.utilization <= 1 + 1e-9
    moved = sum(result.dram_bytes_per_run.values())
    assert total >= moved / hw.dram_bytes_per_cycle - 1e-6
    # the analytical cross-check is a lower bound (the tile selection's branch and bound)
    assert result.analytical_cycles_per_run <= total * (1 + 1e-9)
