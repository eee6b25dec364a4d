"""`nmsim bench kernels` and `nmsim validate`: output contract, closed-form bytes bound, errors."""

import json
import subprocess
import sys
from functools import partial

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nm_kernels import simd_nm
from nmsim.cli import main


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "nmsim", *args], capture_output=True, text=True,
                          check=False)


def test_bench_kernels_json_records(capsys, tmp_path):
    table = tmp_path / "cpu.md"
    assert main(["bench", "kernels", "--shape", "32x64", "--pattern", "2:4", "--encoding",
                 "rank", "--encoding", "index", "--batch", "1", "--batch", "3", "--dtype",
                 "float32", "--repeats", "2", "--warmup", "0", "--json",
                 "--markdown", str(table)]) == 0
    records = json.loads(capsys.readouterr().out)
    assert len(records) == 4
    # Closed form per row of 64 fp32 inputs: dense 256 B; 2:4 keeps 32 values (128 B) plus
    # 16 blocks x 3 rank bits = 6 B, or 32 x 2 index bits = 8 B.
    bounds = {"rank": 256 / 134, "index": 256 / 136}
    for r in records:
        assert {"shape", "pattern", "encoding", "batch", "dtype", "speedup", "bound",
                "fraction_of_bound"} <= set(r)
        assert r["shape"] == [32, 64] and r["pattern"] == "2:4" and r["dtype"] == "float32"
        assert r["bound"] == pytest.approx(bounds[r["encoding"]])
        # the speedup and the share of the read are medians of each round's paired figure
        rounds = {k: np.array(v) for k, v in r["rounds_s"].items()}
        assert r["speedup"] == pytest.approx(np.median(rounds["dense"] / rounds["sparse"]))
        assert r["fraction_of_bound"] == pytest.approx(r["speedup"] / r["bound"])
        assert r["dense_s"] == min(r["dense_all_s"].values())
        assert {"numpy", "torch.matmul", "numba-dense"} == set(r["dense_all_s"])
        # GB/s counts the compressed weight, x and y; the read bandwidth comes from the same
        # rounds and is one figure per (shape, dtype, batch) group.
        io = 4 * (32 + 64) * r["batch"]
        assert r["gb_s"] == pytest.approx((r["weight_bytes_sparse"] + io) / r["sparse_s"] / 1e9)
        read_bytes = r["read_bandwidth_gb_s"] * 1e9 * np.median(rounds["read"])
        assert r["fraction_of_read_bandwidth"] == pytest.approx(np.median(
            (r["weight_bytes_sparse"] + io) / rounds["sparse"] / (read_bytes / rounds["read"])))
        roof_s = (r["weight_bytes_sparse"] + io) / (r["read_bandwidth_gb_s"] * 1e9)
        if r["batch"] == 1:
            assert r["roofline"] == "bytes" and r["roofline_s"] == pytest.approx(roof_s)
        else:  # the larger of the bytes and FLOP times (the kept multiply-adds only)
            flops_s = 2 * 32 * 64 * 0.5 * r["batch"] / (r["peak_gflops"] * 1e9)
            assert r["roofline_s"] == pytest.approx(max(roof_s, flops_s))
            assert r["roofline"] == ("bytes" if roof_s >= flops_s else "flops")
        # the figures' quartiles over the two rounds are ordered
        for field in ("speedup", "fraction_of_read_bandwidth", "gb_s"):
            low, high = r[f"{field}_quartiles"]
            assert 0 < low <= high
        # each round's times, from which the medians and the quartiles come
        assert all(len(rounds[k]) == 2 for k in ("sparse", "dense", "read"))
        assert np.median(rounds["sparse"]) == pytest.approx(r["sparse_s"])
        assert np.median(rounds["dense"]) == pytest.approx(r["dense_s"])
        assert r["speedup_quartiles"] == pytest.approx(np.percentile(
            rounds["dense"] / rounds["sparse"], [25, 75]))
    for batch in (1, 3):
        assert len({r["read_bandwidth_gb_s"] for r in records if r["batch"] == batch}) == 1
    assert table.read_text().count("| 32x64 | 2:4 |") == 4


def test_speedup_and_read_share_pair_each_rounds_kernel_baseline_and_read():
    # The machine's speed moves 4x between rounds; the kernel streams at exactly the read's
    # rate in every round and takes 1/3, 1, 1/2, 1/2 of the best baseline's time. Paired per
    # round: speedups 3, 1, 2, 2 (median 2, quartiles 1.75-2.25) and a read share of exactly 1.
    # The ratio of the two series' medians would say 1.6, and unpaired shares would spread
    # from 0.25 to 4.
    from nm_kernels.bench import _GroupFigures, with_quartiles

    machine = np.array([1.0, 4.0, 2.0, 3.0])
    read_bytes, kernel_bytes = 1000, 500
    sparse = kernel_bytes * machine
    rounds = {"read": list(read_bytes * machine), "sparse": list(sparse),
              "dense": list(sparse * [3, 1, 2, 2]), "slow dense": list(9 * sparse),
              "compute-1": [1.0] * 4, "compute-all": [1.0] * 4}
    rounds[("2:4", "index", "k")] = rounds.pop("sparse")
    medians = {name: float(np.median(times)) for name, times in rounds.items()}
    group = _GroupFigures((4, 8), "float32", 1, 128, medians,
                          {"dense": None, "slow dense": None}, read_bytes, rounds=rounds)
    assert group.io_bytes > 0  # x and y count: the plan's bytes are kernel_bytes less them

    class Plan:
        nbytes, decoder = kernel_bytes - group.io_bytes, "direct"
        gemv_load_bytes = 3 * nbytes

    record = group.record("2:4", "index", "k", Plan, 4, 0)
    # batch 1: the loads' bytes of the kernel (its plan's) and of the dense GEMV (values, x)
    assert record["load_bytes_sparse"] == Plan.gemv_load_bytes
    assert record["load_bytes_dense"] == 128 + 4 * 8 * 4
    assert medians["dense"] / medians[("2:4", "index", "k")] == pytest.approx(1.6)
    assert record["speedup"] == pytest.approx(2.0)
    assert record["speedup_quartiles"] == pytest.approx([1.75, 2.25])
    assert record["fraction_of_bound"] == pytest.approx(2.0 / record["bound"])
    assert record["fraction_of_read_bandwidth"] == pytest.approx(1.0)
    assert record["fraction_of_read_bandwidth_quartiles"] == pytest.approx([1.0, 1.0])
    # GB/s per round is 1e-9 / machine: 1, 1/4, 1/2, 1/3 -> quartiles (linear) 5/16 and 5/8
    assert record["gb_s_quartiles"] == pytest.approx([0.3125e-9, 0.625e-9])
    assert record["gb_s"] == pytest.approx(1e-9 / 2.5)  # bytes over the median time
    record["fraction_of_read_bandwidth_quartiles"] = [0.68, 0.754]
    cell = with_quartiles(record["fraction_of_read_bandwidth"],
                          record["fraction_of_read_bandwidth_quartiles"], "{:.0%}")
    assert cell == "100% (68-75%)"
    assert with_quartiles(-0.06, [-0.12, 0.03], "{:+.0%}", "..") == "-6% (-12..+3%)"
    assert with_quartiles(2.0, [], "{:.2f}") == "2.00"  # without rounds: the figure alone
    # without rounds (figures from medians alone) the speedup is the ratio of the medians
    plain = _GroupFigures((4, 8), "float32", 1, 128, medians,
                          {"dense": None, "slow dense": None}, read_bytes)
    assert plain.record("2:4", "index", "k", Plan, 4, 0)["speedup"] == pytest.approx(1.6)


def test_time_rounds_keeps_each_rounds_time_in_round_order(monkeypatch):
    # A fake clock: each call of the candidate takes 9 s in the warm-up round, then 3, 1 and
    # 2 s; the rounds must come back as 3, 1, 2 (not sorted, not pooled).
    from types import SimpleNamespace

    from nm_kernels import bench

    clock, calls = [0.0], []
    seconds = [9.0, 3.0, 1.0, 2.0]

    def candidate():
        calls.append(None)
        clock[0] += seconds[(len(calls) - 1) // (1 + bench.CALLS_PER_ROUND)]

    monkeypatch.setattr(bench, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    assert bench.time_rounds({"c": candidate}, repeats=3, warmup=1) == {"c": [3.0, 1.0, 2.0]}
    calls.clear()
    assert bench.time_round_robin({"c": candidate}, repeats=3, warmup=1) == {"c": 2.0}


def test_bench_kernels_times_each_distinct_simd_path(capsys):
    assert main(["bench", "kernels", "--shape", "16x64", "--pattern", "2:4", "--pattern", "1:4",
                 "--encoding", "index", "--batch", "1", "--batch", "3", "--dtype", "float32",
                 "--simd", "auto", "--simd", "avx2", "--simd", "scalar", "--simd", "avx2",
                 "--repeats", "1", "--warmup", "0", "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    vector = (["avx2-group"] if simd_nm.available() else [])
    table = (["avx2-table"] if simd_nm.available() else [])
    expected = {"2:4": set(table + (["avx512-pair"] if simd_nm.wide_available() else [])),
                "1:4": set(vector)}
    for pattern, paths in expected.items():
        batch1 = [r["kernel"] for r in records if r["pattern"] == pattern and r["batch"] == 1]
        assert sorted(batch1) == sorted(paths | {"scalar"}), pattern
        batch3 = [r["kernel"] for r in records if r["pattern"] == pattern and r["batch"] == 3]
        gemm = set(vector + (["avx512-group"] if simd_nm.wide_available() else []))
        assert sorted(batch3) == sorted(gemm | {"scalar"}), pattern


def test_validate_outputs_agree_with_the_simulator(capsys):
    assert main(["validate", "--skip-speed", "--pattern", "4:8", "--encoding", "index",
                 "--check-shape", "24x44", "--json"]) == 0
    checks = json.loads(capsys.readouterr().out)["outputs"]
    kernels = {c["kernel"] for c in checks}
    vector = ["avx2-group"] if simd_nm.available() else []
    gemv = (["avx512-pair"] if simd_nm.wide_available() else []) + vector + ["scalar"]
    gemm = (["avx512-group"] if simd_nm.wide_available() else []) + vector + ["scalar"]
    assert {"triton", *(f"numba/direct gemv/{p}" for p in gemv),
            *(f"numba/direct gemm/{p}" for p in gemm)} <= kernels
    assert {c["dtype"] for c in checks} == {"float32", "float16", "bfloat16"}
    assert all(c["ok"] and c["max_relative_error"] <= c["tolerance"] for c in checks)


def test_bench_kernels_plot_is_written_and_replaced_only_when_ours(tmp_path, capsys):
    import matplotlib.pyplot as plt

    chart, table = tmp_path / "gbs.png", tmp_path / "gbs.md"
    args = ["bench", "kernels", "--shape", "16x32", "--pattern", "2:4", "--encoding", "index",
            "--batch", "1", "--dtype", "float32", "--repeats", "1", "--warmup", "0"]
    for _ in range(2):  # the second run replaces the first run's files
        assert main([*args, "--plot", str(chart), "--markdown", str(table)]) == 0
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gbs.md", "gbs.png"]
    foreign = tmp_path / "mine.png"  # a PNG that some other program wrote
    plt.figure().savefig(foreign)
    before = foreign.read_bytes()
    assert main([*args, "--plot", str(foreign)]) == 2
    assert "not written by" in capsys.readouterr().err
    assert foreign.read_bytes() == before


def test_stream_read_reads_every_word():
    from nm_kernels.bench import read_buffer, stream_read

    buffer = read_buffer(3 * 2**18 + 5)  # an odd word count: the vector loop leaves a remainder
    buffer[:] = np.arange(buffer.size, dtype=np.uint64)
    assert buffer.nbytes >= 3 * 2**18 + 5
    assert int(stream_read(buffer)) == buffer.size * (buffer.size - 1) // 2


def test_cold_candidates_are_timed_right_after_an_eviction_and_warm_ones_never():
    from nm_kernels.bench import CALLS_PER_ROUND, time_round_robin

    log = []
    candidates = {"cold": lambda: log.append("cold"), "warm": lambda: log.append("warm")}
    medians = time_round_robin(candidates, repeats=2, warmup=1,
                               evict=lambda: log.append("evict"), warm=["warm"])
    assert set(medians) == {"cold", "warm"}
    # per round: an untimed call, then every timed call of "cold" right after an eviction
    one_round = (["cold"] + ["evict", "cold"] * CALLS_PER_ROUND
                 + ["warm"] * (1 + CALLS_PER_ROUND))
    assert log == one_round * 3


def _fake_cache_folder(root, caches):
    for i, (level, kind, size) in enumerate(caches):
        index = root / f"index{i}"
        index.mkdir(parents=True)
        for name, text in (("level", level), ("type", kind), ("size", size)):
            (index / name).write_text(f"{text}\n")
    return root


def test_last_level_cache_is_the_largest_data_cache_linux_lists(tmp_path):
    from nm_kernels.bench import last_level_cache_bytes

    zen1 = _fake_cache_folder(tmp_path / "a", [(1, "Data", "32K"), (1, "Instruction", "64K"),
                                               (2, "Unified", "512K"), (3, "Unified", "8192K")])
    assert last_level_cache_bytes(zen1) == 8 * 2**20
    # an instruction cache, however large, is never what a data stream evicts
    odd = _fake_cache_folder(tmp_path / "b", [(1, "Instruction", "4M"), (2, "Data", "2M"),
                                              (3, "Unified", "1G"), (2, "Unified", "garbage")])
    assert last_level_cache_bytes(odd) == 2**30


def test_last_level_cache_without_sysfs_falls_back(tmp_path, monkeypatch):
    from nm_kernels import bench

    monkeypatch.setattr(bench.os, "sysconf_names", {})
    assert bench.last_level_cache_bytes(tmp_path / "missing") == bench.FALLBACK_CACHE_BYTES
    monkeypatch.setattr(bench.os, "sysconf_names", {"SC_LEVEL3_CACHE_SIZE": 1,
                                                    "SC_LEVEL2_CACHE_SIZE": 2})
    monkeypatch.setattr(bench.os, "sysconf", {"SC_LEVEL3_CACHE_SIZE": 96 << 20,
                                              "SC_LEVEL2_CACHE_SIZE": 1 << 20}.get)
    assert bench.last_level_cache_bytes(tmp_path / "missing") == 96 << 20


def test_bench_kernels_records_say_whether_caches_were_evicted():
    from nm_kernels.bench import EVICT_CACHE_MULTIPLE, bench_kernels, last_level_cache_bytes

    llc = last_level_cache_bytes()
    assert llc > 0 and isinstance(llc, int)
    args = ([(16, 64)], ["2:4"], ["index"], [1], ["float32"])
    cold = bench_kernels(*args, repeats=1, warmup=0, progress=False)
    warm = bench_kernels(*args, repeats=1, warmup=0, progress=False, cold_cache=False)
    assert cold[0]["cache"] == "cold" and cold[0]["evict_bytes"] >= EVICT_CACHE_MULTIPLE * llc
    assert warm[0]["cache"] == "warm" and warm[0]["evict_bytes"] == 0


def test_bench_kernels_warm_cache_flag_reaches_the_records(capsys, tmp_path):
    table = tmp_path / "warm.md"
    args = ["bench", "kernels", "--shape", "16x64", "--pattern", "2:4", "--encoding", "index",
            "--batch", "1", "--dtype", "float32", "--repeats", "1", "--warmup", "0"]
    assert main([*args, "--json", "--warm-cache", "--markdown", str(table)]) == 0
    assert {r["cache"] for r in json.loads(capsys.readouterr().out)} == {"warm"}
    assert table.read_text().splitlines()[2].endswith("| warm |")
    assert main(args) == 0
    assert "cold caches" in capsys.readouterr().out


@pytest.mark.parametrize("args", [
    ["bench", "kernels", "--shape", "12x"],
    ["bench", "kernels", "--shape", "32x64", "--pattern", "8:4"],
    ["bench", "kernels", "--shape", "32x64", "--batch", "0"],
    ["bench", "kernels", "--shape", "32x64", "--repeats", "0"],
    ["bench", "kernels", "--shape", "32x64", "--threads", "0"],
    ["bench", "kernels", "--shape", "32x64", "--dtype", "int8"],
    ["validate", "--check-shape", "0x5"],
])
def test_bad_input_is_one_line_and_exit_2(args):
    out = run_cli(*args)
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1 and "error" in out.stderr


def test_bench_kernels_times_a_cache_resident_slice():
    import numba
    import torch

    from nm_kernels.bench import bench_kernels

    threads = (numba.get_num_threads(), torch.get_num_threads())
    # 8 KiB of float32 rows of 128 inputs is 16 rows (and a small slice of 8); each timed call
    # runs 64 / 16 = 4 products of either on one thread; the pools are restored after.
    records = bench_kernels([(64, 128)], ["2:4", "16:32"], ["index"], [1], ["float32"],
                            repeats=1, warmup=0, progress=False, resident_bytes=8192)
    for r in records:
        assert (r["resident_rows"], r["resident_rows_small"], r["resident_calls"]) == (16, 8, 4)
        kept_a, kept_b = 16 * 128 * 0.5, 8 * 128 * 0.5  # kept values per product
        rate, overhead = r["resident_values_per_s"], r["resident_call_overhead_s"]
        assert rate > 0 and overhead >= 0
        if overhead > 0:  # the fit passes through both measured slices
            assert r["resident_s"] == pytest.approx(4 * (overhead + kept_a / rate))
            assert r["resident_small_s"] == pytest.approx(4 * (overhead + kept_b / rate))
        else:  # fallback: the large slice's plain rate
            assert rate == pytest.approx(4 * kept_a / r["resident_s"])
        best = r["resident_dense_baseline"]
        assert r["dense_resident_values_per_s"] > 0 and best in r["resident_dense_all_s"]
    assert (numba.get_num_threads(), torch.get_num_threads()) == threads
    plain = bench_kernels([(64, 128)], ["2:4"], ["index"], [1], ["float32"], repeats=1,
                          warmup=0, progress=False)
    assert "resident_s" not in plain[0]


def test_compute_probe_does_the_multiply_adds_it_times():
    # Against the same recurrence in float32 numpy (fastmath may fuse the multiply-add: one
    # rounding fewer per step), summed per job in float64.
    from nm_kernels.bench import PROBE_LANES, compute_probe

    for jobs, passes in ((1, 0), (1, 7), (3, 50)):
        expected = 0.0
        for job in range(jobs):
            lanes = np.full(PROBE_LANES, np.float32(job + 1))
            for _ in range(passes):
                lanes = lanes * np.float32(0.999999) + np.float32(1e-6)
            expected += float(lanes.astype(np.float64).sum())
        assert compute_probe(jobs, passes) == pytest.approx(expected, rel=1e-6)


def test_thread_scaling_is_one_thread_time_over_all_threads_time(monkeypatch):
    # Each probe call gives every thread one job: all threads as fast as one thread on one
    # job is full scaling (the thread count); twice as slow is half of it.
    from nm_kernels import bench

    monkeypatch.setattr(bench, "threads", lambda: 2)
    for one, all_threads, scaling in ((1.0, 1.0, 2.0), (1.0, 2.0, 1.0), (0.01, 0.0125, 1.6)):
        medians = {"read": 1.0, "compute-1": one, "compute-all": all_threads, "dense": 1.0}
        group = bench._GroupFigures((16, 64), "float32", 1, 0, medians, {"dense": None}, 1)
        assert group.thread_scaling == pytest.approx(scaling)
    monkeypatch.undo()
    records = bench.bench_kernels([(16, 64)], ["2:4"], ["index"], [1], ["float32"], repeats=1,
                                  warmup=0, progress=False, cold_cache=False)
    # one probe job per thread: never more than the threads' worth, noise aside
    assert 0 < records[0]["thread_scaling"] <= 1.5 * bench.threads()


def _record_pools(seen: list) -> None:
    import numba
    import torch

    seen.append((numba.get_num_threads(), torch.get_num_threads()))


def test_resident_slice_runs_on_the_threads_asked_for():
    import numba
    import torch

    from nm_kernels.bench import _on_threads, bench_kernels

    pools = (numba.get_num_threads(), torch.get_num_threads())
    for count in range(1, numba.get_num_threads() + 1):
        seen = []
        _on_threads(partial(_record_pools, seen), 3, count)
        assert seen == [(count, count)] * 3
        assert (numba.get_num_threads(), torch.get_num_threads()) == pools
    records = bench_kernels([(64, 128)], ["2:4"], ["index"], [1], ["float32"], repeats=1,
                            warmup=0, progress=False, resident_bytes=8192,
                            resident_threads=pools[0])
    assert records[0]["resident_threads"] == pools[0]
    from nm_kernels import bench

    def timed(*args, **kwargs):
        raise AssertionError("timing started before the arguments were checked")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bench, "time_rounds", timed)
        patch.setattr(bench, "time_round_robin", timed)
        patch.setattr(bench, "eviction_buffer", timed)
        for bad in (0, pools[0] + 1):
            with pytest.raises(ValueError, match="resident_threads"):
                bench_kernels([(64, 128)], ["2:4"], ["index"], [1], ["float32"],
                              resident_bytes=8192, resident_threads=bad)


@settings(max_examples=60, deadline=None)
@given(overhead=st.floats(0, 1e-3), rate=st.floats(1e8, 1e11),
       rows=st.sampled_from([16, 64, 512]), total=st.integers(16, 20000),
       batch=st.sampled_from([1, 2, 8]))
def test_resident_fit_recovers_a_known_overhead_and_rate(overhead, rate, rows, total, batch):
    # Times generated from a known per-call overhead and rate (the model the fit assumes), with
    # both slices running the same number of products per timed call, must give both back, for
    # the kernel (kept values) and for the faster of two dense baselines; a pair whose overhead
    # would come out negative falls back to the large slice's plain rate.
    from nm_kernels.bench import _GroupFigures, _resident_slices

    cols, shape = 4096, (max(total, rows), 4096)
    slices = _resident_slices(shape, "float16", rows * cols * 2)
    assert slices == (rows, max(8, rows // 32 // 8 * 8))
    calls = -(-shape[0] // rows)  # products per timed call, both slices
    rates = {"2:4 kernel": (rate, 0.5), "slow dense": (rate / 3, 1.0), "fast dense": (rate, 1.0)}
    medians = {"read": 1.0, "compute-1": 1.0, "compute-all": 1.0, "slow dense": 1.0,
               "fast dense": 1.0}
    for r in slices:
        for name, (value_rate, density) in rates.items():
            key = ("2:4", "index", "k") if name == "2:4 kernel" else (name,)
            values = r * cols * batch * density
            medians[("resident", r, *key)] = calls * (overhead + values / value_rate)
    group = _GroupFigures(shape, "float16", batch, 0, medians,
                          {"slow dense": None, "fast dense": None}, 1, slices)
    record = group._resident("2:4", "index", "k")
    assert record["resident_values_per_s"] == pytest.approx(rate, rel=1e-6)
    assert record["resident_call_overhead_s"] == pytest.approx(overhead, rel=1e-6, abs=1e-12)
    assert record["resident_dense_baseline"] == "fast dense"
    assert record["dense_resident_values_per_s"] == pytest.approx(rate, rel=1e-6)
    # a small slice faster than its share of the large one's time: negative overhead
    large = medians[("resident", slices[0], "2:4", "index", "k")]
    medians[("resident", slices[1], "2:4", "index", "k")] = 0.5 * large * slices[1] / slices[0]
    fitted_rate, fitted_overhead, *_ = group._fit(("2:4", "index", "k"), 0.5)
    assert fitted_overhead == 0.0
    assert fitted_rate == pytest.approx(calls * slices[0] * cols * batch / 2 / large)


def test_validate_predicts_from_the_roofline_of_the_measured_rates(capsys):
    # The prediction must be the Execution-Cache-Memory time of the figures measured in the
    # same rounds: dense and sparse seconds each the larger of multiply-adds / the kernel's
    # cache-resident rate and (the unhidden share of loaded bytes / the cores' load rate +
    # DRAM bytes / read bandwidth); the simulator adds only pipeline fill and DRAM latency.
    assert main(["validate", "--pattern", "2:4", "--encoding", "index", "--check-shape",
                 "24x44", "--speed-shape", "512x1024", "--speed-encoding", "index",
                 "--repeats", "1", "--no-triton", "--json"]) == 0
    (s,) = json.loads(capsys.readouterr().out)["speedups"]
    host, values = s["host"], 512 * 1024
    bandwidth = host["bandwidth_gb_s"] * 1e9
    sparse_bytes = values / 2 * 2 + values / 2 * 2 / 8  # fp16 kept values + 2-bit indices
    # each side's two roofs, from the closed forms (x and y add 0.3% of bytes here)
    roofs = {"dense": (2 * values / (host["dense_gflops_resident"] * 1e9), 2 * values / bandwidth),
             "sparse": (values / (host["sparse_gflops_resident"] * 1e9),
                        sparse_bytes / bandwidth)}
    load_rate = host["cores"] * host["core_load_gb_s"] * 1e9
    # dense: every row loads its fp16 values and all of x (float32)
    assert s["dense_load_s"] == pytest.approx(values * (2 + 4) / load_rate)
    assert s["sparse_load_s"] > sparse_bytes / load_rate
    hidden = host["load_transfer_overlap"]  # measured in the run by the load-bound probe
    assert 0 <= hidden <= 1 and host["load_transfer_overlap_probe"]["overlap"] == hidden
    ecm = {side: max(compute_s, (1 - hidden) * s[f"{side}_load_s"] + bytes_s)
           for side, (compute_s, bytes_s) in roofs.items()}
    # each side's simulated time: its ECM time (never less than its roofline) plus its
    # measured per-call cost (paid once); fill and latency add a few microseconds, a sizeable
    # share at this small shape (measured +10-16%)
    overheads = {side: s["host"][f"{side}_call_overhead_s"] for side in ("dense", "sparse")}
    for side, (compute_s, bytes_s) in roofs.items():
        assert overheads[side] >= 0
        # at most the shorter roof shows (the overlap is a share of it)
        expected = min(ecm[side], compute_s + bytes_s)
        assert (expected * 0.99 + overheads[side] <= s[f"predicted_{side}_s"]
                <= 1.5 * expected + overheads[side])
        assert s[f"{side}_compute_to_bytes"] == pytest.approx(compute_s / bytes_s, rel=0.02)
        assert 0 <= s[f"{side}_overlap"] <= 1
    assert s["predicted_speedup"] == pytest.approx(s["predicted_dense_s"] / s["predicted_sparse_s"])
    assert s["relative_error"] == pytest.approx(s["predicted_speedup"] / s["measured_speedup"]
                                                - 1)
    assert s["error_at_preset_overlap"] == pytest.approx(
        s["predicted_at_preset_overlap"] / s["measured_speedup"] - 1)
    # one round: its speedup is the measured one, and so are both quartiles
    assert s["measured_speedup_quartiles"] == pytest.approx([s["measured_speedup"]] * 2)
    assert s["relative_error_quartiles"] == pytest.approx([s["relative_error"]] * 2)
    # each side's error against its own measured time, and the speedup is their ratio
    assert s["measured_speedup"] == pytest.approx(s["measured_dense_s"] / s["measured_sparse_s"])
    for side in ("dense", "sparse"):
        assert s[f"{side}_time_error"] == pytest.approx(
            s[f"predicted_{side}_s"] / s[f"measured_{side}_s"] - 1)
    assert s["cache"] == "cold"  # what is predicted: GEMVs that stream their weight from DRAM
    # each side hides its `overlap` of the shorter roof: full overlap takes the rest off, none
    # adds the hidden part back
    full = {side: s[f"predicted_{side}_s"] - (1 - s[f"{side}_overlap"]) * min(r)
            for side, r in roofs.items()}
    low = full["dense"] / (full["sparse"] + min(roofs["sparse"]))
    high = (full["dense"] + min(roofs["dense"])) / full["sparse"]
    assert s["overlap_speedup_range"] == pytest.approx([low, high], rel=0.02)
    assert low <= s["predicted_speedup"] * (1 + 1e-9) and s["predicted_speedup"] < high * (
        1 + 1e-9)
    assert s["measured_in_overlap_range"] == (low <= s["measured_speedup"] <= high)


@pytest.mark.parametrize("resident_threads", [1, 2])
def test_validate_scales_the_resident_rate_to_the_gemv_threads(monkeypatch, resident_threads):
    # A rate measured on all of the GEMV's threads enters the preset as it is; a one-thread
    # rate is multiplied by the threads (each thread assumed to have a core of its own).
    import numba

    from nm_kernels import bench, hostperf
    from nmsim.commands import validate

    monkeypatch.setattr(numba, "get_num_threads", lambda: 2)
    asked = {}

    def fake_bench(*args, **kwargs):
        asked.update(kwargs)
        return [{"pattern": "2:4", "encoding": "index", "kernel": "k", "speedup": 1.0,
                 "speedup_quartiles": [0.9, 1.1], "read_bandwidth_gb_s": 20.0,
                 "dense_resident_values_per_s": 3e9,
                 "resident_values_per_s": 1e9, "dense_resident_call_overhead_s": 0.0,
                 "resident_call_overhead_s": 0.0, "resident_rows": 16,
                 "resident_rows_small": 8, "dense_s": 1e-3, "sparse_s": 1e-3,
                 "dense_baseline": "numba-dense", "cache": "cold", "thread_scaling": 1.5,
                 "load_bytes_dense": 64 * 128 * 6, "load_bytes_sparse": 64 * 128 * 3,
                 "weight_bytes_dense": 64 * 128 * 2}]

    monkeypatch.setattr(bench, "bench_kernels", fake_bench)
    monkeypatch.setattr(hostperf, "matmul_gflops", lambda size: 100.0)
    monkeypatch.setattr(hostperf, "core_load_gb_s", lambda: 50.0)
    monkeypatch.setattr(hostperf, "load_transfer_overlap",
                        lambda nbytes, repeats: {"overlap": 0.3})
    (s,) = validate._predicted_vs_measured(["2:4"], ["index"], (64, 128), 1, resident_threads)
    assert asked["resident_threads"] == resident_threads
    host = s["host"]
    assert (host["cores"], host["resident_threads"]) == (2, resident_threads)
    assert host["thread_scaling"] == 1.5  # reported, not used: it cannot tell kernels apart
    assert host["dense_gflops_resident"] == pytest.approx(2 * 3e9 * 2 / resident_threads / 1e9)
    assert host["sparse_gflops_resident"] == pytest.approx(2 * 1e9 * 2 / resident_threads / 1e9)


def test_cache_ab_script_times_each_candidate_warm_and_cold():
    import os
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "scripts/cache_ab.py", "--shape", "16x64", "--case",
                          "2:4/index/float32", "--read-mb", "1", "--rounds", "1"],
                         capture_output=True, text=True, check=False, cwd=root,
                         env={**os.environ, "PYTHONPATH": str(root)})
    assert out.returncode == 0, out.stderr
    rows = [line for line in out.stdout.splitlines() if "cold/warm" in line]
    # the read, the dense GEMV and the N:M GEMV, each with a warm and a cold time
    assert len(rows) == 3 and any("2:4/index/float32" in r for r in rows)


def _vector_throughput():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "scripts" / "vector_throughput.py"
    spec = importlib.util.spec_from_file_location("vector_throughput", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not simd_nm.available(), reason="x86 CPU with AVX2 needed")
@given(trips=st.integers(1, 300), copies=st.integers(1, 8))
@settings(max_examples=15, deadline=None)
def test_vector_throughput_loop_runs_its_body_once_per_trip(trips, copies):
    """The timed loop runs its body exactly ``trips`` times on the buffer it is given: a body
    of ``copies`` memory increments leaves ``copies x trips`` in the first word (the figure
    each timing divides by)."""
    vt = _vector_throughput()
    buffer = np.zeros(vt.BUFFER_BYTES // 8, dtype=np.int64)
    engine, run = vt.compile_loop(["addq $$1, (%rsi)"] * copies)
    run(trips, buffer.ctypes.data)
    del engine
    assert buffer[0] == copies * trips and not buffer[1:].any()


@pytest.mark.skipif(not simd_nm.available(), reason="x86 CPU with AVX2 needed")
def test_vector_throughput_reports_each_case_this_cpu_runs():
    vt = _vector_throughput()
    features = vt.host_features()
    clock_ghz, results = vt.measure(iterations=2000, repeats=1)
    runnable = [c.name for c in vt.CASES if set(c.features) <= features]
    assert [name for name, _ in results] == runnable and "vpermilps ymm (variable)" in runnable
    assert clock_ghz > 0 and all(np.isfinite(cycles) and cycles > 0 for _, cycles in results)
    if "avx512f" not in features:
        assert not any("zmm" in name for name, _ in results)


def test_vector_throughput_rejects_a_zero_count():
    import os
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "scripts/vector_throughput.py", "--iterations", "0"],
                         capture_output=True, text=True, check=False, cwd=root,
                         env={**os.environ, "PYTHONPATH": str(root)})
    assert out.returncode == 2 and "--iterations and --repeats must be at least 1" in out.stderr


def test_fit_host_overlap_remakes_each_recorded_prediction():
    # Re-evaluated at the overlap it was made with, a recorded prediction comes back as
    # recorded (the fit script's errors are the simulator's, not an approximation of it):
    # the Zen 1 runs of 6e09734 were made at the host preset's overlap.
    import importlib.util
    from pathlib import Path

    from accel_sim.config import HOST_MEMORY_COMPUTE_OVERLAP

    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("fit_host_overlap",
                                                  root / "scripts" / "fit_host_overlap.py")
    fit = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fit)
    report = json.loads((root / fit.ZEN1[1]).read_text())
    (group,) = [g for g in report["sets"] if g["commit"] == "6e09734"]
    records = group["runs"][0][:3]
    assert all(r["host"]["memory_compute_overlap"] == HOST_MEMORY_COMPUTE_OVERLAP
               for r in records)
    remade = fit.errors(records, HOST_MEMORY_COMPUTE_OVERLAP)
    assert remade == pytest.approx([r["relative_error"] for r in records], rel=1e-9, abs=1e-12)
    # Runs of 1e8746f were predicted with each side's ECM overlap, from the load bytes and
    # load rate they record, no load hidden under the transfers; the fixed-overlap figure
    # is kept beside it.
    report = json.loads((root / fit.ZEN1[2]).read_text())
    records = report["sets"][0]["runs"][0][:3]
    assert fit.ecm_errors(records, None, 0.0) == pytest.approx(
        [r["relative_error"] for r in records], rel=1e-9, abs=1e-12)
    assert fit.errors(records, HOST_MEMORY_COMPUTE_OVERLAP) == pytest.approx(
        [r["error_at_preset_overlap"] for r in records], rel=1e-9, abs=1e-12)


@given(passes=st.integers(0, 5), size=st.integers(0, 300))
@settings(max_examples=20, deadline=None)
def test_core_load_probe_reads_every_value_on_every_pass(passes, size):
    # The load rate divides passes x bytes by the time: the probe must read all of them (small
    # integers, so the fastmath sum is exact in any order).
    from nm_kernels import hostperf

    values = (np.arange(size) % 7).astype(np.float32)
    assert hostperf.l1_sum(values, passes) == passes * int(values.sum())


def test_core_load_rate_is_a_finite_positive_rate(monkeypatch):
    from nm_kernels import hostperf

    monkeypatch.setattr(hostperf, "LOAD_PROBE_BYTES", 1 << 20)
    rate = hostperf.core_load_gb_s(repeats=2)
    assert np.isfinite(rate) and rate > 0


@given(rows=st.integers(1, 5), chunks=st.integers(1, 4), steps=st.integers(1, 4),
       repeats=st.integers(1, 3))
@settings(max_examples=15, deadline=None)
def test_load_transfer_probe_touches_every_element(rows, chunks, steps, repeats):
    # v = v * v / 2 + 1/2 keeps 1.0 at 1.0: the sum counts every element the loop read, each
    # repeat, whatever the threads' split
    from nm_kernels import hostperf

    values = np.ones((rows, chunks * hostperf.OVERLAP_CHUNK), dtype=np.float32)
    assert hostperf.l1_stream(values, steps, repeats) == values.size * repeats


@pytest.mark.parametrize(("streamed", "expected"), [(5.0, 0.25), (6.0, 0.0), (3.0, 0.75),
                                                   (1.0, 1.0), (4.5, 0.375)])
def test_load_transfer_overlap_inverts_the_ecm_time_of_the_probe(monkeypatch, streamed,
                                                                  expected):
    # A load-bound loop of 4 s resident and a 2 s read that streams in `streamed` s hid
    # (4 + 2 - streamed) / 4 of its loads under the read (ECM: streamed = (1 - share) x 4 + 2),
    # clipped to [0, 1]; each round's figure, then their median.
    from nm_kernels import bench, hostperf

    seen = {}

    def fake_rounds(candidates, repeats, warmup, evict=None, warm=()):
        seen.update(names=set(candidates), warm=set(warm), repeats=repeats)
        return {"streamed": [streamed, 99.0, streamed], "read": [2.0, 2.0, 2.0],
                "resident": [4.0, 4.0, 4.0]}

    monkeypatch.setattr(bench, "time_rounds", fake_rounds)
    monkeypatch.setattr(bench, "eviction_buffer", lambda: bench.read_buffer(64))
    probe = hostperf.load_transfer_overlap(1 << 20, 3)
    assert probe["overlap"] == pytest.approx(expected)
    assert seen == {"names": {"streamed", "read", "resident"}, "warm": {"resident"},
                    "repeats": 3}
    assert probe["compute_to_bytes"] == pytest.approx(2.0)
    assert probe["bytes"] >= 1 << 20
