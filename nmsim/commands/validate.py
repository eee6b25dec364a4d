"""`nmsim validate`: kernels against the simulator - same outputs, and predicted vs measured speed.

(a) The same compressed weights go through the simulator's functional mode
(``accel_sim.functional.functional_matmul``, metadata read by its decoder models) and through
each kernel; outputs must agree within the float32-accumulation tolerance.
(b) This CPU's read bandwidth (a streaming read timed in the same rounds as the kernels) and
each kernel's multiply-add rate on a cache-resident slice of the weight (its decode cost, with
the fixed cost of each call fitted out against a slice 32 times smaller; that cost, paid once by
the full-size call, is the preset's launch overhead) are measured,
``accel_sim.config.host_cpu_preset`` turns them into simulator presets, and the simulator's
predicted speedup of each pattern over dense (batch-1 GEMV) is printed next to the Numba
kernels' measured one (error = predicted / measured - 1), with how close each side is to its
ridge and the range the speedup spans between full and no overlap of transfers and arithmetic.
How much of each side's DRAM transfers its arithmetic hides is the Execution-Cache-Memory
model's (:func:`accel_sim.simulate.ecm_overlap`): the bytes its load instructions read
(``nm_kernels.cpu.gemv_load_bytes``) at one core's measured L1 load rate
(``nm_kernels.hostperf.core_load_gb_s``) times the cores overlap the transfers only by the
share a load-bound streaming loop shows on this host, measured in the same run
(``nm_kernels.hostperf.load_transfer_overlap``).
"""

from __future__ import annotations

import json
import os

from compression.formats import ENCODINGS
from nmsim.commands.bench import _parse_shape

PATTERNS = ("2:4", "4:8", "8:16", "16:32")


def register(sub) -> None:
    p = sub.add_parser("validate", help="kernels vs the simulator: outputs and speedups")
    p.add_argument("--pattern", action="append", metavar="N:M", help="repeatable; default "
                   "2:4 4:8 8:16 16:32")
    p.add_argument("--encoding", action="append", choices=ENCODINGS,
                   help="repeatable; default rank index")
    p.add_argument("--check-shape", default="64x200",
                   help="OUTxIN for the output check (default 64x200: tails for M=16, 32)")
    p.add_argument("--speed-shape", default="11008x4096", help="OUTxIN of the timed GEMV")
    p.add_argument("--speed-encoding", action="append", choices=ENCODINGS,
                   help="repeatable; default rank index")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--resident-threads", type=int, default=1, metavar="N",
                   help="threads that time the cache-resident slice (default 1: one core's "
                   "rate, times the GEMV's threads)")
    p.add_argument("--skip-speed", action="store_true", help="only the output check (a)")
    p.add_argument("--no-triton", action="store_true", help="leave the Triton kernel out of (a)")
    p.add_argument("--json", action="store_true")
    g = p.add_argument_group("published GPU measurements (instead of the kernel checks)")
    g.add_argument("--published", action="store_true", help="simulate every row of the "
                   "published A100/H100 table and report the errors")
    g.add_argument("--table", default=None, metavar="FILE",
                   help="published-measurement CSV (default validation/published_gpu.csv)")
    g.add_argument("--out", default=None, metavar="DIR", help="report folder (default "
                   "reports/validation; with --preset or --datasheet-only only when given)")
    g.add_argument("--preset", action="append", default=[], metavar="GPU=PRESET_OR_FILE",
                   help="simulate GPU's rows on another design (repeatable)")
    g.add_argument("--datasheet-only", action="store_true", help="reset the calibrated fields "
                   "(sustained clock, HBM fraction, launch, operand delivery, tiles, split-K)")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.published:
        return _published(args)
    check_shape, speed_shape = _parse_shape(args.check_shape), _parse_shape(args.speed_shape)
    if args.repeats < 1:  # all options checked before the slow imports and the checks
        raise ValueError(f"--repeats must be at least 1, got {args.repeats}")
    from nm_kernels.numba_nm import check_thread_count

    check_thread_count(args.resident_threads, "--resident-threads")
    import torch

    if not torch.cuda.is_available():  # the Triton kernel then runs in its CPU interpreter
        os.environ.setdefault("TRITON_INTERPRET", "1")
    from accel_sim.functional import functional_matmul
    from nm_kernels.validate import compare_kernels

    patterns = args.pattern or PATTERNS
    encodings = args.encoding or ("rank", "index")
    checks = compare_kernels(functional_matmul, patterns, encodings,
                             ("float32", "float16", "bfloat16"), check_shape,
                             triton=not args.no_triton)
    speed = [] if args.skip_speed else _predicted_vs_measured(
        patterns, args.speed_encoding or ("rank", "index"), speed_shape, args.repeats,
        args.resident_threads)
    failed = [c for c in checks if not c["ok"]]
    if args.json:
        print(json.dumps({"outputs": checks, "speedups": speed}, indent=2))
        return 1 if failed else 0
    print(f"(a) kernels vs accel_sim.functional_matmul on {args.check_shape}, batch "
          f"{checks[0]['batch']}, tail dense: max |y - ref| / (|W| @ |x|), tolerance "
          f"{checks[0]['tolerance']:g}")
    for c in checks:
        print(f"  {c['pattern']:>6} {c['encoding']:>7} {c['dtype']:>8} {c['kernel']:>31}  "
              f"{c['max_relative_error']:.2e}  {'ok' if c['ok'] else 'FAIL'}")
    if speed:
        from nm_kernels.bench import with_quartiles

        host = speed[0]["host"]
        print(f"(b) host preset: {host['bandwidth_gb_s']:.1f} GB/s read, {host['cores']} "
              f"threads (compute throughput {host['thread_scaling']:.2f}x one thread's), "
              f"multiply-add rate of each kernel on a {host['resident_rows']}-row "
              f"cache-resident slice on {host['resident_threads']} thread(s), scaled to "
              f"{host['cores']} (per-call cost fitted out with a "
              f"{host['resident_rows_small']}-row one, and charged once per GEMV); GEMV "
              f"{args.speed_shape} batch 1 "
              f"float16 values, median of {args.repeats} round-robin rounds, "
              f"{speed[0]['cache']} caches; 'no decode' = both "
              f"at the "
              f"{host['peak_gflops']:.0f} GFLOP/s fp32 matmul peak")
        print(f"  {'pattern':>7} {'encoding':>8} {'resident GFLOP/s':>16} {'predicted':>9} "
              f"{'measured (quartiles)':>20} {'error (quartiles)':>17} {'no decode':>9} "
              f"{'error':>7} {'time error: sparse':>18} {'dense':>6} "
              f"{'compute/bytes: sparse':>21} {'dense':>5} {'overlap: sparse':>15} {'dense':>5} "
              f"{'at ' + format(host['memory_compute_overlap'], 'g'):>7} "
              f"{'no-overlap range':>16}  baseline")
        for s in speed:
            measured = with_quartiles(s["measured_speedup"], s["measured_speedup_quartiles"],
                                      "{:.2f}", "..")
            error = with_quartiles(s["relative_error"], s["relative_error_quartiles"],
                                   "{:+.0%}", "..")
            print(f"  {s['pattern']:>7} {s['encoding']:>8} "
                  f"{s['host']['sparse_gflops_resident']:>7.1f} / "
                  f"{s['host']['dense_gflops_resident']:<6.1f} "
                  f"{s['predicted_speedup']:>9.2f} "
                  f"{measured:>20} {error:>17} "
                  f"{s['predicted_without_decode']:>9.2f} "
                  f"{s['error_without_decode']:>+7.0%} {s['sparse_time_error']:>+18.0%} "
                  f"{s['dense_time_error']:>+6.0%} {s['sparse_compute_to_bytes']:>21.2f} "
                  f"{s['dense_compute_to_bytes']:>5.2f} {s['sparse_overlap']:>15.2f} "
                  f"{s['dense_overlap']:>5.2f} {s['error_at_preset_overlap']:>+7.0%} "
                  f"{'{:.2f}-{:.2f}'.format(*s['overlap_speedup_range']):>13} "
                  f"{'in' if s['measured_in_overlap_range'] else 'out':>3}  "
                  f"{s['dense_baseline']}")
        print("  compute/bytes: each side's simulated multiply-add time over its DRAM time "
              "(near 1: at the ridge, where their overlap matters most); overlap: the share "
              "of the shorter hidden under the longer, from the Execution-Cache-Memory model "
              "(the side's load instructions, its loaded bytes at "
              f"{host['core_load_gb_s']:.0f} GB/s per core, overlap its DRAM transfers "
              f"only by {host['load_transfer_overlap']:.2f}, the share a load-bound "
              "streaming loop showed in this run); at "
              f"{host['memory_compute_overlap']:g}: the error with the host preset's one "
              "overlap for every kernel instead; no-overlap range: the speedup "
              "if one side overlapped nothing and the other everything, and whether the "
              "measured one lies in it")
        if host["resident_threads"] < host["cores"] and (
                host["thread_scaling"] < SHARED_CORE_SCALING * host["cores"]):
            print(f"  note: {host['cores']} threads reached only {host['thread_scaling']:.2f}x "
                  f"one thread's compute throughput: they share cores, and the slice's rate "
                  f"on {host['resident_threads']} thread(s) scaled to {host['cores']} overstates "
                  f"kernels bound by the core's units (docs/validation.md, Zen 1 host)")
    if failed:
        print(f"{len(failed)} output check(s) failed")
    return 1 if failed else 0


# Compute scaling below this share of the thread count says the threads share cores.
SHARED_CORE_SCALING = 0.8


# Dense bytes of the cache-resident slice whose kernel rate carries the CPU's decode cost into
# the host preset: 4 MiB stays in this host's 32 MiB L3 (and other hosts' L2 + L3) between calls.
RESIDENT_BYTES = 4 << 20


def _predicted_vs_measured(patterns, encodings, shape, repeats,
                           resident_threads: int = 1) -> list[dict]:
    """Simulated (host preset) and measured batch-1 speedup of each pattern over dense.

    All measured in the same round-robin rounds: the streaming read (the preset's DRAM
    bandwidth) and the full-size GEMVs (what is predicted), each call after a cache eviction
    (``nm_kernels.bench.time_round_robin``), and the same kernels on ``resident_threads``
    threads on a cache-resident slice of the weight (their kept-value rate when DRAM does not
    bind, with the per-call cost fitted out, x cores / resident_threads: the preset's
    multiply-add rate, the CPU's decode cost, and its fixed cost per call, which the full-size
    call pays once). Each
    prediction is the simulator's dense time over its sparse time, dense and sparse each on the
    host preset of its own rate and per-call cost.
    ``predicted_without_decode`` is the old preset (both at the torch.matmul peak)."""
    from accel_sim.config import HOST_MEMORY_COMPUTE_OVERLAP
    from nm_kernels import hostperf
    from nm_kernels.bench import PEAK_MATMUL_SIZE, bench_kernels
    from nm_kernels.numba_nm import threads

    measured = bench_kernels([shape], patterns, encodings, [1], ["float16"], repeats=repeats,
                             resident_bytes=RESIDENT_BYTES, resident_threads=resident_threads)
    cores, peak = threads(), hostperf.matmul_gflops(PEAK_MATMUL_SIZE)
    # the in-core load rate of all cores: one core's, like the resident rates, times the cores;
    # and how much of a load-bound loop's time this host hides under its DRAM transfers
    core_load = hostperf.core_load_gb_s()
    load_probe = hostperf.load_transfer_overlap(measured[0]["weight_bytes_dense"], repeats)
    results = []
    for record in measured:
        bandwidth = record["read_bandwidth_gb_s"]
        # The slice's rate on resident_threads threads, scaled to the GEMV's threads.
        scale = cores / resident_threads
        dense_gflops = 2 * scale * record["dense_resident_values_per_s"] / 1e9
        sparse_gflops = 2 * scale * record["resident_values_per_s"] / 1e9
        # the fixed cost of one call, fitted out of the resident slices: the full-size call
        # pays it once (the simulator's per-kernel launch overhead)
        overheads_us = (1e6 * record["dense_resident_call_overhead_s"],
                        1e6 * record["resident_call_overhead_s"])
        inputs = (shape, bandwidth, cores, record["pattern"], record["encoding"], dense_gflops,
                  sparse_gflops, overheads_us)
        dense, sparse, loads_s, overlaps = ecm_sides(
            inputs, (record["load_bytes_dense"], record["load_bytes_sparse"]), core_load,
            load_probe["overlap"])
        dense_s, sparse_s = dense["seconds"], sparse["seconds"]
        predicted = dense_s / sparse_s
        # the same prediction at the host preset's one overlap for every kernel
        fixed = _simulated_seconds(*inputs)
        predicted_fixed = fixed[0]["seconds"] / fixed[1]["seconds"]
        # The speedup if either side overlapped none of its transfers with its arithmetic and
        # the other all: the range the preset's one overlap figure spans, widest where a side
        # sits at its ridge.
        overlap_range = [_with_full_overlap(dense) / _without_overlap(sparse),
                         _without_overlap(dense) / _with_full_overlap(sparse)]
        peak_dense, peak_sparse = _simulated_seconds(
            shape, bandwidth, cores, record["pattern"], record["encoding"], peak, peak)
        without = peak_dense["seconds"] / peak_sparse["seconds"]
        host = {"bandwidth_gb_s": bandwidth, "peak_gflops": peak, "cores": cores,
                "memory_compute_overlap": HOST_MEMORY_COMPUTE_OVERLAP,
                "core_load_gb_s": core_load,
                "load_transfer_overlap": load_probe["overlap"],
                "load_transfer_overlap_probe": load_probe,
                "resident_threads": resident_threads,
                "thread_scaling": record["thread_scaling"],
                "dense_gflops_resident": dense_gflops, "sparse_gflops_resident": sparse_gflops,
                "resident_rows": record["resident_rows"],
                "resident_rows_small": record["resident_rows_small"],
                "sparse_call_overhead_s": record["resident_call_overhead_s"],
                "dense_call_overhead_s": record["dense_resident_call_overhead_s"]}
        results.append({"pattern": record["pattern"], "encoding": record["encoding"],
                        "kernel": record["kernel"], "shape": list(shape),
                        "predicted_speedup": predicted, "measured_speedup": record["speedup"],
                        "relative_error": predicted / record["speedup"] - 1,
                        # how far the measured speedup moved between rounds: an error inside
                        # this spread is not told apart from the machine's noise (the
                        # speedup's quartiles mapped through predicted / q - 1)
                        "measured_speedup_quartiles": record["speedup_quartiles"],
                        "relative_error_quartiles": [
                            predicted / q - 1 for q in record["speedup_quartiles"][::-1]],
                        # each side's time, so that an error can be traced to dense or sparse
                        "predicted_dense_s": dense_s, "measured_dense_s": record["dense_s"],
                        "dense_time_error": dense_s / record["dense_s"] - 1,
                        "predicted_sparse_s": sparse_s, "measured_sparse_s": record["sparse_s"],
                        "sparse_time_error": sparse_s / record["sparse_s"] - 1,
                        # how far each side is from its ridge: compute over bytes time
                        "dense_compute_to_bytes": dense["compute_s"] / dense["bytes_s"],
                        "sparse_compute_to_bytes": sparse["compute_s"] / sparse["bytes_s"],
                        "overlap_speedup_range": overlap_range,
                        # the Execution-Cache-Memory overlap of each side: its loads' time at
                        # the cores' load rate overlaps its DRAM transfers only by the host's
                        # load_transfer_overlap
                        "dense_load_s": loads_s[0], "sparse_load_s": loads_s[1],
                        "dense_overlap": overlaps[0], "sparse_overlap": overlaps[1],
                        "predicted_at_preset_overlap": predicted_fixed,
                        "error_at_preset_overlap": predicted_fixed / record["speedup"] - 1,
                        "measured_in_overlap_range": bool(
                            overlap_range[0] <= record["speedup"] <= overlap_range[1]),
                        "predicted_without_decode": without,
                        "error_without_decode": without / record["speedup"] - 1,
                        "dense_baseline": record["dense_baseline"], "cache": record["cache"],
                        "host": host})
    return results


def ecm_sides(inputs: tuple, load_bytes: tuple[int, int], core_load_gb_s: float,
              load_overlap: float) -> tuple[dict, dict, tuple, tuple]:
    """Dense and sparse sides (:func:`_simulated_seconds` of ``inputs``) at each side's
    Execution-Cache-Memory overlap (:func:`accel_sim.simulate.ecm_overlap`): its loads
    (``load_bytes``: dense, sparse) at ``core_load_gb_s`` per core times the cores, of which the
    host hides ``load_overlap`` under its transfers, against its simulated compute and DRAM
    times at full overlap. Also returns the loads' seconds and the two overlaps."""
    from accel_sim.simulate import ecm_overlap

    cores = inputs[2]
    loads_s = tuple(b / (cores * core_load_gb_s * 1e9) for b in load_bytes)
    full = _simulated_seconds(*inputs, overlap=1.0)
    overlaps = tuple(ecm_overlap(side["compute_s"], side["bytes_s"], load_s, load_overlap)
                     for side, load_s in zip(full, loads_s, strict=True))
    dense, sparse = _simulated_seconds(*inputs, overlap=overlaps)
    return dense, sparse, loads_s, overlaps


def _simulated_seconds(shape, bandwidth_gb_s, cores, pattern, encoding, dense_gflops,
                       sparse_gflops, overheads_us=(0.0, 0.0),
                       overlap: float | tuple | None = None) -> tuple[dict, dict]:
    """Dense and sparse batch-1 GEMV on host presets of the given multiply-add rates and
    per-call costs (``overheads_us``: dense, sparse) and ``overlap`` of transfers and
    multiply-adds (``memory_compute_overlap``: one for both, a (dense, sparse) pair, or by
    default the host preset's). Each side:
    ``seconds`` (the simulated time), ``compute_s`` (the multiply-add units' busy time),
    ``bytes_s`` (its DRAM bytes at the bandwidth) and ``exposed_s`` (what the partial overlap
    added), the simulator's own figures."""
    from accel_sim.config import HOST_MEMORY_COMPUTE_OVERLAP, host_cpu_preset
    from accel_sim.simulate import simulate_gemm
    from workloads.models import GEMM

    gemm = GEMM("validate", 1, shape[0], shape[1], 1, "validate")
    overlap = HOST_MEMORY_COMPUTE_OVERLAP if overlap is None else overlap
    dense_overlap, sparse_overlap = overlap if isinstance(overlap, tuple) else (overlap, overlap)

    def side(hw) -> dict:
        result = simulate_gemm(hw, gemm)
        hertz = result.clock_ghz * 1e9
        return {"seconds": result.total_cycles / hertz,
                "compute_s": result.busy_cycles_per_run * result.count / hertz,
                "bytes_s": (sum(result.dram_bytes_per_run.values()) * result.count
                            / (bandwidth_gb_s * 1e9)),
                "exposed_s": result.stall_per_run["partial_overlap"] * result.count / hertz}

    dense = host_cpu_preset(bandwidth_gb_s, dense_gflops, cores=cores, dtype="fp16",
                            call_overhead_us=overheads_us[0],
                            memory_compute_overlap=dense_overlap)
    sparse = host_cpu_preset(bandwidth_gb_s, sparse_gflops, cores=cores, dtype="fp16",
                             call_overhead_us=overheads_us[1],
                             memory_compute_overlap=sparse_overlap).replace(
        pattern=pattern, supported_patterns=(pattern,), encoding=encoding)
    return side(dense), side(sparse)


def _with_full_overlap(side: dict) -> float:
    """The side's time had its DRAM transfers and its multiply-adds overlapped fully (the
    roofline)."""
    return side["seconds"] - side["exposed_s"]


def _without_overlap(side: dict) -> float:
    """The side's time had its DRAM transfers and its multiply-adds not overlapped at all."""
    return _with_full_overlap(side) + min(side["compute_s"], side["bytes_s"])


def _published(args) -> int:
    """`--published`: the simulator against the published-measurement table."""
    import time

    from accel_sim import published as P
    from accel_sim.config import load_hardware

    start = time.perf_counter()
    table = args.table or P.DEFAULT_TABLE
    gpus, designs = dict(P.GPU_PRESETS), {}
    for item in args.preset:
        gpu, _, hw = item.partition("=")
        if gpu not in gpus or not hw:
            raise ValueError(f"--preset {item!r}: expected GPU=PRESET_OR_FILE with GPU one of "
                             f"{', '.join(gpus)}")
        designs[gpus[gpu]] = load_hardware(hw)
    out = args.out or (None if args.preset or args.datasheet_only else "reports/validation")
    if out:
        P.check_report_folder(out)  # before any simulation
    rows = P.load_table(table)
    presets = {name: designs.get(name) or load_hardware(name) for name in gpus.values()}
    if args.datasheet_only:
        presets = {name: P.datasheet_only(hw) for name, hw in presets.items()}
    records = P.validate_table(rows, presets)
    summary = P.summarize(records)
    seconds = time.perf_counter() - start
    if args.json:
        print(json.dumps({"rows": records, "summary": summary}, indent=2))
    else:
        print(f"{'id':<9}{'gpu':<6}{'kind':<7}{'pattern':<8}{'metric':<17}{'measured':>10}"
              f"{'predicted':>11}{'error':>8}  half      scope")
        for r in records:
            print(f"{r['id']:<9}{r['gpu']:<6}{r['kind']:<7}{r['pattern']:<8}{r['metric']:<17}"
                  f"{P._fmt(r['measured']):>10}{P._fmt(r['predicted']):>11}"
                  f"{P._pct(r['error']):>8}  {r['half']:<9} {r['scope'][:60]}")
        for s in summary:
            print(f"median |error| {s['pattern']:>5} {s['half']:<8}: "
                  f"{P._pct(s['median_abs_error']).lstrip('+')} over {s['rows']} scored rows")
    label = os.path.relpath(table) if not os.path.relpath(table).startswith("..") else table
    written = P.write_report(records, summary, out, str(label), seconds) if out else []
    if not args.json:
        for path in written:
            print(f"wrote {path}")
        print(f"{len(records)} rows in {time.perf_counter() - start:.1f} s")
    return 0
