"""`nmsim bench TARGET`: benchmarks whose figures go into issue notes and reports."""

from __future__ import annotations

import json

from compression.format_bench import bench_formats


def register(sub) -> None:
    p = sub.add_parser("bench", help="run a benchmark")
    targets = p.add_subparsers(dest="target", required=True, parser_class=type(p))
    f = targets.add_parser("formats", help="encode/decode speed of each metadata encoding")
    f.add_argument("--pattern", default="8:16", metavar="N:M")
    f.add_argument("--shape", default="11008x4096", help="OUTxIN (default LLaMa-2-7B MLP)")
    f.add_argument("--repeats", type=int, default=5)
    f.add_argument("--json", action="store_true")
    f.set_defaults(func=run_formats)


def _parse_shape(text: str) -> tuple[int, int]:
    try:
        rows, cols = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"invalid shape '{text}': expected OUTxIN, e.g. 11008x4096") from None
    if rows <= 0 or cols <= 0:
        raise ValueError(f"invalid shape '{text}': sizes must be positive")
    return rows, cols


def run_formats(args) -> int:
    if args.repeats < 1:
        raise ValueError(f"--repeats must be at least 1, got {args.repeats}")
    records = bench_formats(args.pattern, _parse_shape(args.shape), args.repeats)
    if args.json:
        print(json.dumps(records, indent=2))
        return 0
    r0 = records[0]
    print(f"{r0['pattern']} on {r0['shape'][0]}x{r0['shape'][1]}, median of {r0['repeats']} "
          f"after a warm-up (mask from |W|: {r0['mask_s']:.3f} s)")
    print(f"{'encoding':>8}  {'bits/elem':>9}  {'bytes':>10}  {'encode s':>8}  {'decode s':>8}")
    for r in records:
        print(f"{r['encoding']:>8}  {r['bits_per_element']:>9.4f}  {r['metadata_bytes']:>10}  "
              f"{r['encode_s']:>8.3f}  {r['decode_s']:>8.3f}")
    return 0
