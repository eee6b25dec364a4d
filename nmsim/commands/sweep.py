"""`nmsim sweep [--spec FILE]`: run a design-space sweep into a results store, then report it."""

from __future__ import annotations

from pathlib import Path

DEFAULT_DB = Path("runs/default.sqlite")
DEFAULT_OUT = Path("reports/default")


def register(sub) -> None:
    p = sub.add_parser("sweep", help="run a design-space sweep (default: the embedded spec)")
    p.add_argument("--spec", help="sweep spec YAML (default: the embedded default spec)")
    p.add_argument("--db", type=Path,
                   help=f"results database, resumed if it exists (default {DEFAULT_DB}, or "
                        "runs/<spec name>.sqlite)")
    p.add_argument("--out", type=Path,
                   help=f"report folder (default {DEFAULT_OUT}, or reports/<spec name>): new, "
                        "empty or an earlier nmsim report")
    p.add_argument("--workers", type=int, default=None,
                   help="local worker processes (default: the CPUs available)")
    p.add_argument("--dask", metavar="SCHEDULER_ADDRESS",
                   help="run on a dask.distributed cluster, e.g. tcp://host:8786")
    p.add_argument("--chunk", type=int, default=None, help="points per task (default: auto)")
    p.add_argument("--retry-errors", action="store_true",
                   help="evaluate again the points stored with an error")
    p.add_argument("--compression", action="append", default=[], metavar="DIR_OR_FILE",
                   help="compression metrics to join in the report (repeatable)")
    p.add_argument("--masks", metavar="DIR",
                   help="real masks: `nmsim prune --out` folder(s) under DIR, matched to points "
                        "by pattern, for the spec's masks workload (default smollm2-135m)")
    p.add_argument("--allow-partial-masks", action="store_true",
                   help="masks that cover only some decoder layers: run the rest as uniform N:M "
                        "(counted per point) instead of refusing")
    p.add_argument("--energy-table", metavar="FILE",
                   help="energy reference table (docs/energy.md) instead of the spec's "
                        "energy_table or the packaged default")
    p.add_argument("--no-report", action="store_true", help="only fill the results database")
    p.add_argument("--max-points", type=int, default=None,
                   help="refuse specs with more design points than this (default 100,000)")
    p.add_argument("--dry-run", action="store_true",
                   help="validate the spec and print the number of points; run nothing")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _check_options(args) -> None:
    from accel_sim.sweep.engine import check_workers

    for name in ("workers", "chunk", "max_points"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if args.workers is not None:
        check_workers(args.workers)


def run(args) -> int:
    # Imported here so that other subcommands do not pay for pandas/matplotlib/dask.
    from accel_sim.output_folder import SWEEP_REPORT, check_output_folder
    from accel_sim.sweep.spec import MAX_POINTS, load_spec, with_energy_table, with_masks

    _check_options(args)
    spec = load_spec(args.spec, max_points=args.max_points or MAX_POINTS)
    if args.masks:
        spec = with_masks(spec, args.masks, allow_partial=args.allow_partial_masks)
    if args.energy_table:
        spec = with_energy_table(spec, args.energy_table)
    points = spec.points()
    if args.dry_run:
        print(f"spec {spec.name} ({spec.source}): {len(points)} points "
              f"({len(spec.hardware_settings())} hardware settings x "
              f"{len(spec.workload_settings())} workload settings, plus baseline twins)")
        return 0
    default = spec.source == "<default>"
    db = args.db or (DEFAULT_DB if default else Path("runs") / f"{spec.name}.sqlite")
    out = args.out or (DEFAULT_OUT if default else Path("reports") / spec.name)
    if not args.no_report:  # refuse a user's folder before hours of simulation, not after
        check_output_folder(out, SWEEP_REPORT)
    from accel_sim.sweep.engine import connect_dask, run_spec
    from accel_sim.sweep.report import write_report
    from accel_sim.sweep.store import open_store

    if args.dask:  # a wrong address fails here, before a database is created
        connect_dask(args.dask).close()
    with open_store(db) as store:
        stats = run_spec(spec, store, workers=args.workers, dask_address=args.dask,
                         chunk_size=args.chunk, retry_errors=args.retry_errors,
                         progress=not args.quiet)
    print(f"sweep {spec.name}: {stats.total} points, {stats.skipped} already stored, "
          f"{stats.computed} computed ({stats.errors} errors) on {stats.engine} in "
          f"{stats.wall_s:.1f} s -> {db}")
    if not args.no_report:
        files = write_report(db, out, compression=args.compression or spec.compression)
        print(f"report: {out}/ ({', '.join(f.name for f in files)})")
    return 0
