"""`nmsim bench TARGET`: benchmarks whose figures go into issue notes and reports."""

from __future__ import annotations

import json
from pathlib import Path

from compression.format_bench import bench_formats
from compression.formats import ENCODINGS, VALUE_DTYPES, Pattern
from workloads.files import staged_file, written_by_us


def register(sub) -> None:
    p = sub.add_parser("bench", help="run a benchmark")
    targets = p.add_subparsers(dest="target", required=True, parser_class=type(p))
    f = targets.add_parser("formats", help="encode/decode speed of each metadata encoding")
    f.add_argument("--pattern", default="8:16", metavar="N:M")
    f.add_argument("--shape", default="11008x4096", help="OUTxIN (default LLaMa-2-7B MLP)")
    f.add_argument("--repeats", type=int, default=5)
    f.add_argument("--json", action="store_true")
    f.set_defaults(func=run_formats)
    k = targets.add_parser("kernels", help="Numba N:M kernels vs the best dense baseline")
    k.add_argument("--shape", action="append", metavar="OUTxIN",
                   help="weight shape (repeatable; default: LLaMa-2-7B 4096x4096, 11008x4096, "
                        "4096x11008)")
    k.add_argument("--pattern", action="append", metavar="N:M",
                   help="repeatable; default 2:4 4:8 8:16 16:32")
    k.add_argument("--encoding", action="append", choices=ENCODINGS,
                   help="repeatable; default rank index")
    k.add_argument("--batch", action="append", type=int, help="repeatable; default 1 8 64")
    k.add_argument("--dtype", action="append", choices=tuple(VALUE_DTYPES),
                   help="value dtype (repeatable; default float32 float16)")
    k.add_argument("--simd", action="append", choices=("auto", "avx2", "scalar"),
                   help="vector path cap (GEMV and GEMM), timed side by side (repeatable; "
                        "default auto: the widest this CPU runs)")
    k.add_argument("--repeats", type=int, default=7, help="timed rounds (median reported)")
    k.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    k.add_argument("--threads", type=int, help="Numba and torch threads (default: all cores)")
    k.add_argument("--warm-cache", action="store_true",
                   help="time calls back to back, without evicting the caches before each "
                        "(a weight near the last-level cache's size then reads partly from it)")
    k.add_argument("--rank-decoders", action="store_true",
                   help="instead: time the rank LUT vs unranking decoder (GEMV, fp32)")
    k.add_argument("--markdown", type=Path, metavar="FILE", help="also write a Markdown table")
    k.add_argument("--plot", type=Path, metavar="PNG",
                   help="also write a chart of GB/s against the read bandwidth")
    k.add_argument("--json", action="store_true")
    k.set_defaults(func=run_kernels)


# Largest weight a benchmark takes: 2**28 elements (1 GiB in float32; LLaMa-2-70B's largest
# linear is 28672 x 8192 = 2**27.8). Beyond it the benchmark would run out of memory mid-way.
MAX_SHAPE_ELEMENTS = 1 << 28


def _parse_shape(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isascii() and p.strip().isdigit() for p in parts):
        raise ValueError(f"invalid shape '{text}': expected OUTxIN, e.g. 11008x4096")
    rows, cols = (int(p) for p in parts)
    if rows <= 0 or cols <= 0:
        raise ValueError(f"invalid shape '{text}': sizes must be positive")
    if rows * cols > MAX_SHAPE_ELEMENTS:
        raise ValueError(f"shape '{text}' has {rows * cols:.3g} elements, more than the "
                         f"{MAX_SHAPE_ELEMENTS:.3g} a benchmark takes")
    return rows, cols


def _check_output_file(path: Path | None, flag: str) -> None:
    """A file the benchmark will write: its folder must exist, and an existing file is replaced
    only when an earlier run of this benchmark wrote it (its table header or PNG tag)."""
    if path is None:
        return
    if not path.parent.is_dir():
        raise ValueError(f"{flag} {path}: folder {path.parent} does not exist")
    if path.is_dir():
        raise ValueError(f"{flag} {path} is a folder")
    if path.exists() and not _written_by_bench(path, flag):
        raise ValueError(f"{flag} {path} exists and was not written by nmsim bench kernels; "
                         "left untouched - choose another name")


def _written_by_bench(path: Path, flag: str) -> bool:
    from nm_kernels.bench import PLOT_SOFTWARE, TABLE_HEADER

    if flag == "--plot":
        return written_by_us(path, png_software=PLOT_SOFTWARE)
    return written_by_us(path, first_line=TABLE_HEADER)


def _check_kernel_args(args) -> None:
    """Every option of `bench kernels`, before anything is timed."""
    for name in ("repeats", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name} must be at least 1, got {value}")
    if args.warmup < 0:
        raise ValueError(f"--warmup must be at least 0, got {args.warmup}")
    if any(b < 1 for b in args.batch or ()):
        raise ValueError(f"--batch values must be at least 1, got {args.batch}")
    for text in args.pattern or ():
        Pattern.parse(text)
    _check_output_file(args.markdown, "--markdown")
    _check_output_file(args.plot, "--plot")


def run_formats(args) -> int:
    if args.repeats < 1:
        raise ValueError(f"--repeats must be at least 1, got {args.repeats}")
    records = bench_formats(args.pattern, _parse_shape(args.shape), args.repeats)
    if args.json:
        print(json.dumps(records, indent=2, allow_nan=False))
        return 0
    r0 = records[0]
    print(f"{r0['pattern']} on {r0['shape'][0]}x{r0['shape'][1]}, median of {r0['repeats']} "
          f"after a warm-up (mask from |W|: {r0['mask_s']:.3f} s)")
    print(f"{'encoding':>8}  {'bits/elem':>9}  {'bytes':>10}  {'encode s':>8}  {'decode s':>8}"
          f"  {'load s':>7}  {'no check s':>10}")
    for r in records:
        print(f"{r['encoding']:>8}  {r['bits_per_element']:>9.4f}  {r['metadata_bytes']:>10}  "
              f"{r['encode_s']:>8.3f}  {r['decode_s']:>8.3f}  {r['load_s']:>7.3f}  "
              f"{r['load_unverified_s']:>10.3f}")
    print("load: the float16 compressed file read and validated, with and without the "
          "checksums, timed alternately")
    return 0


def run_kernels(args) -> int:
    _check_kernel_args(args)
    from nm_kernels import bench

    shapes = [_parse_shape(s) for s in args.shape] if args.shape else bench.LLAMA2_7B_SHAPES
    if args.threads is not None:
        bench.set_threads(args.threads)
    if args.rank_decoders:
        records = [r for shape in shapes
                   for r in bench.bench_rank_decoders(shape, args.pattern or ("2:4", "8:16"),
                                                      args.repeats, args.warmup)]
        if args.json:
            print(json.dumps(records, indent=2, allow_nan=False))
            return 0
        print(f"rank decoders, GEMV fp32 batch 1, median of {args.repeats} round-robin rounds")
        for r in records:
            print(f"{r['shape'][0]}x{r['shape'][1]}  {r['pattern']:>6}  {r['decoder']:>12}  "
                  f"{r['seconds'] * 1e3:8.2f} ms")
        return 0
    records = bench.bench_kernels(
        shapes, args.pattern or bench.PATTERNS, args.encoding or bench.ENCODINGS,
        args.batch or bench.BATCHES, args.dtype or bench.DTYPES, args.repeats, args.warmup,
        simd=args.simd or ("auto",), cold_cache=not args.warm_cache)
    table = bench.markdown_table(records)
    if args.markdown:
        with staged_file(args.markdown) as staged:
            staged.write_text(table)
    if args.plot:
        bench.plot_bandwidth(records, args.plot)
    if args.json:
        print(json.dumps(records, indent=2, allow_nan=False))
    else:
        scaling = [r["thread_scaling"] for r in records]
        print(f"median of {args.repeats} round-robin rounds after {args.warmup} warm-up; "
              f"{records[0]['threads']} Numba threads (compute throughput {min(scaling):.2f}-"
              f"{max(scaling):.2f}x one thread's), {records[0]['torch_threads']} torch "
              f"threads; {records[0]['cache']} caches")
        print(table, end="")
    return 0
