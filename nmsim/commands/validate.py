"""`nmsim validate`: kernels against the simulator - same outputs, and predicted vs measured speed.

(a) The same compressed weights go through the simulator's functional mode
(``accel_sim.functional.functional_matmul``, metadata read by its decoder models) and through
each kernel; outputs must agree within the float32-accumulation tolerance.
(b) This CPU's read bandwidth (a streaming read timed in the same rounds as the kernels) and
matmul peak are measured, ``accel_sim.config.host_cpu_preset``
turns them into a simulator preset, and the simulator's predicted speedup of each pattern over
dense (batch-1 GEMV) is printed next to the Numba kernels' measured one.
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
    p.add_argument("--speed-encoding", default="rank", choices=ENCODINGS)
    p.add_argument("--repeats", type=int, default=7)
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
    import torch

    if not torch.cuda.is_available():  # the Triton kernel then runs in its CPU interpreter
        os.environ.setdefault("TRITON_INTERPRET", "1")
    from accel_sim.functional import functional_matmul
    from kernels.validate import compare_kernels

    patterns = args.pattern or PATTERNS
    encodings = args.encoding or ("rank", "index")
    checks = compare_kernels(functional_matmul, patterns, encodings,
                             ("float32", "float16", "bfloat16"), check_shape,
                             triton=not args.no_triton)
    speed = [] if args.skip_speed else _predicted_vs_measured(
        patterns, args.speed_encoding, speed_shape, args.repeats)
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
        host = speed[0]["host"]
        print(f"(b) host preset: {host['bandwidth_gb_s']:.1f} GB/s read, "
              f"{host['peak_gflops']:.0f} GFLOP/s fp32 matmul, {host['cores']} cores; GEMV "
              f"{args.speed_shape} batch 1 float16 values, {args.speed_encoding} metadata, "
              f"median of {args.repeats} round-robin rounds")
        print(f"  {'pattern':>7} {'predicted':>9} {'measured':>8} {'error':>7}  baseline")
        for s in speed:
            print(f"  {s['pattern']:>7} {s['predicted_speedup']:>9.2f} "
                  f"{s['measured_speedup']:>8.2f} {s['relative_error']:>+7.0%}  "
                  f"{s['dense_baseline']}")
    if failed:
        print(f"{len(failed)} output check(s) failed")
    return 1 if failed else 0


def _predicted_vs_measured(patterns, encoding, shape, repeats) -> list[dict]:
    """Simulated (host preset) and measured batch-1 speedup of each pattern over dense."""
    from accel_sim.config import host_cpu_preset
    from accel_sim.simulate import simulate_gemm
    from kernels import hostperf
    from kernels.bench import bench_kernels
    from kernels.numba_nm import threads
    from workloads.models import GEMM

    measured = bench_kernels([shape], patterns, [encoding], [1], ["float16"], repeats=repeats)
    # The preset's DRAM bandwidth is the streaming read timed in the same rounds as the kernels.
    host = {"bandwidth_gb_s": measured[0]["read_bandwidth_gb_s"],
            "peak_gflops": hostperf.matmul_gflops(), "cores": threads()}
    hw = host_cpu_preset(host["bandwidth_gb_s"], host["peak_gflops"], cores=host["cores"],
                         dtype="fp16")
    gemm = GEMM("validate", 1, shape[0], shape[1], 1, "validate")
    dense_cycles = simulate_gemm(hw, gemm).total_cycles
    results = []
    for record in measured:
        p = record["pattern"]
        sparse_hw = hw.replace(pattern=p, supported_patterns=(p,), encoding=encoding)
        predicted = dense_cycles / simulate_gemm(sparse_hw, gemm).total_cycles
        results.append({"pattern": p, "encoding": encoding, "shape": list(shape),
                        "predicted_speedup": predicted, "measured_speedup": record["speedup"],
                        "relative_error": record["speedup"] / predicted - 1,
                        "dense_baseline": record["dense_baseline"], "host": host})
    return results


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
    out = args.out or (None if args.preset or args.datasheet_only else "reports/validation")
    label = os.path.relpath(table) if not os.path.relpath(table).startswith("..") else table
    written = P.write_report(records, summary, out, str(label), seconds) if out else []
    if not args.json:
        for path in written:
            print(f"wrote {path}")
        print(f"{len(records)} rows in {time.perf_counter() - start:.1f} s")
    return 0
