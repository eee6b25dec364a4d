"""`nmsim report RESULTS --out DIR`: summary.md, results.csv, PNG charts and an HTML page."""

from __future__ import annotations

from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("report", help="write the report of a sweep results database")
    p.add_argument("results", type=Path, help="results database written by `nmsim sweep`")
    p.add_argument("--out", type=Path, required=True,
                   help="report folder: new, empty or an earlier nmsim report (its files are "
                        "replaced; other files are kept)")
    p.add_argument("--compression", action="append", default=[], metavar="DIR_OR_FILE",
                   help="metrics.json, prune output folder or CSV (model, pattern, perplexity) "
                        "to join; repeatable")
    p.set_defaults(func=run)


def run(args) -> int:
    from accel_sim.sweep.report import write_report  # pandas/matplotlib only when reporting

    files = write_report(args.results, args.out, compression=args.compression)
    print(f"report: {args.out}/ ({', '.join(f.name for f in files)})")
    return 0
