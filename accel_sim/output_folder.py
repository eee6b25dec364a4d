"""Output folders that never cost a user a file: new, or marked as ours by an earlier run.

A folder the tool writes (``nmsim report --out``, ``nmsim sweep --out``,
``python -m accel_sim.bench --out``) must either not exist,
be an empty directory, or hold the marker file :data:`MARKER` left by an earlier run of the same
kind; anything else (a user's folder, a file, the database's own folder) is refused with a
``ValueError``. The marker lists the files that run wrote, so a re-run replaces exactly those and
leaves every other file alone.

Files are built in a hidden staging folder *inside* the target and moved into place one by one
with ``os.replace`` (atomic on one filesystem): a reader never sees a half-written file, and a
failed run leaves the earlier run's files (or, for a new folder, nothing at all).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Self

MARKER = ".nmsim-output.json"
# Kinds of output folder (a folder is only ever reused by a run of its own kind).
SWEEP_REPORT = "sweep-report"
BENCH_REPORT = "simulator-bench"  # python -m accel_sim.bench --out
_STAGING_PREFIX = ".nmsim-staging-"


def check_output_folder(path: str | Path, kind: str) -> list[str]:
    """Refuse ``path`` unless it is new, empty, or marked ``kind``; return the files the earlier
    run listed in its marker (empty for a new folder)."""
    path = Path(path)
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise ValueError(f"output folder {path} exists and is not a folder; left untouched - "
                         "choose a new --out")
    if not path.exists():
        return []
    marker = path / MARKER
    if not marker.is_file():
        if any(path.iterdir()):
            raise ValueError(f"output folder {path} already holds files that nmsim did not write "
                             f"(no {MARKER}); left untouched - choose a new or empty --out")
        return []
    try:
        record = json.loads(marker.read_text())
        files = [str(f) for f in record["files"]]
        marked_kind = record["kind"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"output folder {path}: unreadable {MARKER} ({exc}); left untouched"
                         ) from None
    if marked_kind != kind:
        raise ValueError(f"output folder {path} holds a '{marked_kind}' output, not a '{kind}'; "
                         "left untouched - choose another --out")
    return [f for f in files if "/" not in f and f not in ("", ".", "..", MARKER)]


class OutputFolder:
    """Stage files for ``path`` and move them in on :meth:`commit` (use as a context manager).

    ``staging`` is the folder to write into. Leaving the block without a commit removes the
    staging folder, and the target too when this run created it and it is still empty.
    """

    def __init__(self, path: str | Path, kind: str):
        self.path = Path(path)
        self.kind = kind
        self.previous = check_output_folder(self.path, kind)
        self.created = not self.path.exists()
        self.path.mkdir(parents=True, exist_ok=True)
        self.staging = Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=self.path))
        self.staging.chmod(0o755)  # mkdtemp makes it private; reports are meant to be shared

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)
        if self.created and self.path.is_dir() and not any(self.path.iterdir()):
            self.path.rmdir()

    def commit(self) -> list[Path]:
        """Move every staged file into place, drop the earlier run's files this run did not
        write again, and write the marker; returns the written files."""
        names = sorted(p.name for p in self.staging.iterdir() if p.is_file())
        for name in names:
            os.replace(self.staging / name, self.path / name)
        for stale in set(self.previous) - set(names):
            (self.path / stale).unlink(missing_ok=True)
        marker_tmp = self.staging / MARKER
        marker_tmp.write_text(json.dumps({"tool": "nmsim", "kind": self.kind, "files": names},
                                         indent=1) + "\n")
        os.replace(marker_tmp, self.path / MARKER)
        return [self.path / name for name in names]
