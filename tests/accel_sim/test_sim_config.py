"""Hardware configs: presets reproduce published peaks; validation names the field."""

import dataclasses

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from accel_sim.config import (
    PRESETS,
    SWEEPABLE_FIELDS,
    HardwareConfig,
    host_cpu_preset,
    load_hardware,
    save_hardware,
)

# Published fp16 tensor-core peaks, dense / 2:4 sparse, TFLOP/s (NVIDIA A100 and H100 SXM
# whitepapers); TPU v1: 92 int8 TOPS (Jouppi et al., ISCA 2017).
PUBLISHED_PEAKS = {"a100-like": (312, 624), "h100-like": (989, 1979), "dense": (312, 312),
                   "tpu-v1-like": (92, 92)}


@pytest.mark.parametrize("name", sorted(PUBLISHED_PEAKS))
def test_presets_reproduce_published_peaks(name):
    hw = load_hardware(name)
    dense, sparse = PUBLISHED_PEAKS[name]
    assert hw.dense_peak_tflops == pytest.approx(dense, rel=0.005)
    assert hw.sparse_peak_tflops() == pytest.approx(sparse, rel=0.005)


def test_required_presets_exist_and_load():
    assert {"dense", "a100-like", "h100-like", "flexible-nm"} <= set(PRESETS)
    for name in PRESETS:
        assert load_hardware(name).name == name


def test_sweepable_fields_are_fields_and_replace_validates():
    names = {f.name for f in dataclasses.fields(HardwareConfig)}
    assert set(SWEEPABLE_FIELDS) <= names
    hw = load_hardware("flexible-nm")
    assert hw.replace(num_decoders=2).num_decoders == 2
    with pytest.raises(ValueError, match="bogus_field"):
        hw.replace(bogus_field=1)
    with pytest.raises(ValueError, match="num_cores"):
        hw.replace(num_cores=0)
    with pytest.raises(ValueError, match="decoder 'popcount' cannot read 'rank'"):
        hw.replace(decoder="popcount")
    with pytest.raises(ValueError, match="rank_rom cannot hold 16:32"):
        hw.replace(decoder="rank_rom")
    assert hw.replace(supported_patterns="2:4 8:16").supported_patterns == ("2:4", "8:16")


def test_run_at_refuses_patterns_the_design_lacks():
    a100 = load_hardware("a100-like")
    with pytest.raises(ValueError, match="8:16 is not supported"):
        a100.run_at("8:16")
    assert a100.run_at("dense").run_pattern is None
    flexible = load_hardware("flexible-nm")
    assert str(flexible.run_at("16:32").run_pattern) == "16:32"


def test_yaml_round_trip_and_unknown_keys(tmp_path):
    hw = load_hardware("systolic-nm").replace(num_decoders=3)
    path = tmp_path / "hw.yaml"
    save_hardware(hw, path)
    assert load_hardware(path) == hw
    data = yaml.safe_load(path.read_text())
    data["clock_mhz"] = 900
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match="clock_mhz"):
        load_hardware(path)
    with pytest.raises(ValueError, match="not a preset"):
        load_hardware(tmp_path / "missing.yaml")


def test_every_validation_problem_is_listed():
    with pytest.raises(ValueError) as info:
        HardwareConfig(array_rows=0, clock_ghz=-1, dtype="fp64")
    message = str(info.value)
    for field in ("array_rows", "clock_ghz", "dtype"):
        assert field in message


def test_host_cpu_preset_describes_the_measurement():
    hw = host_cpu_preset(bandwidth_gb_s=20.0, peak_gflops=96.0, clock_ghz=3.0, cores=2)
    assert hw.dense_peak_tflops * 1e3 == pytest.approx(96.0)
    assert hw.dram_bandwidth_gb_s == 20.0 and not hw.is_sparse
    with pytest.raises(ValueError, match="positive"):
        host_cpu_preset(bandwidth_gb_s=0, peak_gflops=1)


@given(overhead_us=st.floats(0.0, 5000.0), gflops=st.floats(0.5, 200.0))
@settings(max_examples=25, deadline=None)
def test_host_cpu_preset_charges_its_call_overhead_once_per_gemv(overhead_us, gflops):
    # The measured per-call cost is the simulator's launch overhead: a GEMV (one kernel, no
    # split) takes exactly that much longer than on the same preset without it.
    from accel_sim.simulate import simulate_gemm
    from workloads.models import GEMM

    gemm = GEMM("gemv", 1, 2048, 1024, 1, "w")

    def seconds(hw):
        result = simulate_gemm(hw, gemm)
        return result.total_cycles / (result.clock_ghz * 1e9)

    plain = host_cpu_preset(bandwidth_gb_s=30.0, peak_gflops=gflops, cores=2)
    paying = host_cpu_preset(bandwidth_gb_s=30.0, peak_gflops=gflops, cores=2,
                             call_overhead_us=overhead_us)
    assert seconds(paying) - seconds(plain) == pytest.approx(overhead_us * 1e-6, abs=1e-9)
    assert paying.launch_overhead_us == overhead_us


def test_host_cpu_preset_refuses_a_negative_call_overhead():
    with pytest.raises(ValueError, match="call_overhead_us"):
        host_cpu_preset(bandwidth_gb_s=20.0, peak_gflops=96.0, call_overhead_us=-1.0)


@pytest.mark.parametrize("gflops", [0.3, 2.5, 50.0])
def test_host_cpu_preset_compute_bound_time_is_values_over_the_rate(gflops):
    # With DRAM far faster than the multiply-adds, a GEMV's simulated seconds must be its
    # multiply-adds (kept ones for 2:4) at the given rate, whatever lanes and clock express it,
    # also below one lane at clock_ghz (a CPU kernel's rate with its decode cost).
    from accel_sim.simulate import simulate_gemm
    from workloads.models import GEMM

    gemm = GEMM("gemv", 1, 512, 1024, 1, "w")
    for pattern, kept in ((None, 1.0), ("2:4", 0.5)):
        hw = host_cpu_preset(bandwidth_gb_s=1e6, peak_gflops=gflops, cores=2)
        if pattern:
            hw = hw.replace(pattern=pattern, supported_patterns=(pattern,), encoding="index")
        result = simulate_gemm(hw, gemm)
        seconds = result.total_cycles / (result.clock_ghz * 1e9)
        assert seconds == pytest.approx(512 * 1024 * kept * 2 / (gflops * 1e9), rel=0.05)


@given(overlap=st.floats(0.0, 1.0), gflops=st.floats(2.0, 200.0),
       bandwidth=st.floats(5.0, 100.0))
@settings(max_examples=30, deadline=None)
def test_partial_overlap_adds_the_hidden_share_of_the_shorter_roof(overlap, gflops, bandwidth):
    # A GEMV on a host preset: its multiply-adds take 2 x values / rate, its bytes (fp16
    # weight, x and y) bytes / bandwidth, both closed forms. Full overlap is their maximum (plus
    # fill and latency); an overlap below 1 adds exactly (1 - overlap) x their minimum, booked
    # as the "partial_overlap" stall so that stalls and busy cycles still add up to the total.
    from accel_sim.simulate import simulate_gemm
    from workloads.models import GEMM

    rows, cols = 1024, 2048
    gemm = GEMM("gemv", 1, rows, cols, 1, "w")
    compute_s = 2 * rows * cols / (gflops * 1e9)
    bytes_s = 2 * (rows * cols + rows + cols) / (bandwidth * 1e9)

    def run(share):
        hw = host_cpu_preset(bandwidth_gb_s=bandwidth, peak_gflops=gflops, cores=2,
                             memory_compute_overlap=share)
        result = simulate_gemm(hw, gemm)
        return result, result.total_cycles / (result.clock_ghz * 1e9)

    full, full_s = run(1.0)
    partial, partial_s = run(overlap)
    assert full.stall_per_run["partial_overlap"] == 0
    assert partial_s - full_s == pytest.approx((1 - overlap) * min(compute_s, bytes_s), rel=1e-3)
    assert partial.stall_per_run["partial_overlap"] / (partial.clock_ghz * 1e9) == pytest.approx(
        partial_s - full_s, rel=1e-9)
    assert (sum(partial.stall_per_run.values()) + partial.busy_cycles_per_run
            == pytest.approx(partial.cycles_per_run))


@given(gflops=st.floats(2.0, 200.0), bandwidth=st.floats(5.0, 100.0),
       load_share=st.floats(0.0, 1.0), hidden=st.floats(0.0, 1.0))
@settings(max_examples=30, deadline=None)
def test_ecm_overlap_gives_the_execution_cache_memory_time(gflops, bandwidth, load_share, hidden):
    # The Execution-Cache-Memory model (Treibig and Hager 2010): a core whose load
    # instructions (here a share of its compute time, as loads are part of that work) overlap
    # its DRAM transfers only by `hidden` takes max(compute, (1 - hidden) x loads + transfer)
    # (hidden = 0 as published). A host GEMV simulated at ecm_overlap of its closed-form roofs
    # must take that, plus what full overlap adds (fill, latency), never more than
    # compute + transfer.
    from accel_sim.simulate import ecm_overlap, simulate_gemm
    from workloads.models import GEMM

    rows, cols = 1024, 2048
    gemm = GEMM("gemv", 1, rows, cols, 1, "w")
    compute_s = 2 * rows * cols / (gflops * 1e9)
    bytes_s = 2 * (rows * cols + rows + cols) / (bandwidth * 1e9)
    load_s = load_share * compute_s

    def seconds(share):
        hw = host_cpu_preset(bandwidth_gb_s=bandwidth, peak_gflops=gflops, cores=2,
                             memory_compute_overlap=share)
        result = simulate_gemm(hw, gemm)
        return result.total_cycles / (result.clock_ghz * 1e9)

    overlap = ecm_overlap(compute_s, bytes_s, load_s, hidden)
    assert 0.0 <= overlap <= 1.0
    ecm_s = min(max(compute_s, (1 - hidden) * load_s + bytes_s), compute_s + bytes_s)
    extra = seconds(1.0) - max(compute_s, bytes_s)  # fill and latency
    assert seconds(overlap) - extra == pytest.approx(ecm_s, rel=1e-3)
    # no loads, or all hidden: the roofline; loads as long as the compute and none hidden: no
    # overlap at all
    assert ecm_overlap(compute_s, bytes_s, 0.0) == 1.0
    assert ecm_overlap(compute_s, bytes_s, load_s, 1.0) == 1.0
    assert ecm_overlap(compute_s, bytes_s, compute_s) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("overlap", [-0.1, 1.5, float("nan")])
def test_memory_compute_overlap_must_be_a_share(overlap):
    with pytest.raises(ValueError, match="memory_compute_overlap"):
        HardwareConfig(memory_compute_overlap=overlap)


def test_memory_compute_overlap_reads_from_yaml(tmp_path):
    path = tmp_path / "cpu.yaml"
    path.write_text("name: cpu\nmemory_compute_overlap: 0.6\n")
    assert load_hardware(str(path)).memory_compute_overlap == 0.6
    assert load_hardware("a100-like").memory_compute_overlap == 1.0  # GPU presets: the roofline
