"""`nmsim`: one console script; each subcommand lives in `nmsim/commands/<name>.py`.

A subcommand module defines ``register(subparsers)``, which adds its parser and sets
``func(args) -> int``. User errors (``ValueError``, ``OSError``) become one line on stderr and exit
code 2; set ``NMSIM_DEBUG=1`` for the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# Subcommand modules under nmsim.commands, in the order `nmsim --help` lists them.
COMMANDS = ("formats", "prune", "export", "simulate", "sweep", "report", "bench", "validate")

EXIT_USAGE = 2
# Timing commands get thread pools that sleep when idle, set before numpy, torch and Numba load:
# on 2 cores a pool's spinning workers (libgomp's, OpenBLAS's) otherwise steal the cores from the
# next candidate timed (measured: a Numba N:M GEMV took 3.7 ms alone, ~8 ms when alternated
# with numpy and torch). Variables already set are kept.
TIMING_COMMANDS = ("bench", "validate")
TIMING_ENVIRONMENT = {"OMP_WAIT_POLICY": "PASSIVE", "NUMBA_THREADING_LAYER": "workqueue",
                      "OPENBLAS_THREAD_TIMEOUT": "4"}


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage dump) and exit code 2."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="nmsim",
        description="N:M structured-sparsity workbench: formats, pruning, kernels, simulation.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in COMMANDS:
        importlib.import_module(f"nmsim.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    if words and words[0] in TIMING_COMMANDS:
        for name, value in TIMING_ENVIRONMENT.items():
            os.environ.setdefault(name, value)
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError) as exc:
        if os.environ.get("NMSIM_DEBUG"):
            raise
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"nmsim {args.command}: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("nmsim: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
