"""The results store: one SQLite database (WAL) per sweep, one row per design point.

Rows are keyed by :func:`accel_sim.sweep.spec.point_key` and written in their own transaction as
each point finishes, so a sweep killed at any moment (even SIGKILL) keeps every finished point and
a restart skips them. A point whose evaluation raised is stored with ``status = 'error'`` and its
message. The full result dict is kept zlib-compressed (a 10,000-point sweep stays small); the
headline figures are also plain columns for quick queries.

An existing file is only ever opened after it has been recognised, read-only, as an nmsim sweep
store (SQLite ``application_id`` and schema version): a corrupt or foreign database raises a
:class:`ValueError` and is never written to.
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
import time
import zlib
from pathlib import Path
from typing import Self

# SQLite application_id marking our databases: the ASCII bytes "NMSW".
APPLICATION_ID = 0x4E4D5357
SCHEMA_VERSION = 2  # 2: runs.spec_text (version 1 stores are upgraded when opened)
_PAGE_SIZE = 16384

_SCHEMA = """
CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    started_at REAL NOT NULL,
    spec_name TEXT NOT NULL,
    spec_source TEXT NOT NULL,
    engine TEXT NOT NULL,
    spec_text TEXT
);
CREATE TABLE points (
    key TEXT PRIMARY KEY,
    point TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('ok', 'error')),
    total_cycles REAL,
    area_mm2 REAL,
    effective_tflops REAL,
    result BLOB,
    error TEXT,
    elapsed_s REAL NOT NULL,
    run_id INTEGER NOT NULL REFERENCES runs(id),
    finished_at REAL NOT NULL
);
"""


class SweepStore:
    """An open results database. Use :func:`open_store`; close it (or use ``with``) when done."""

    def __init__(self, path: Path, conn: sqlite3.Connection):
        self.path = path
        self._conn = conn

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._conn.close()

    def start_run(self, spec_name: str, spec_source: str, engine: str,
                  spec_text: str | None = None) -> int:
        """Record a run; ``spec_text`` (the spec's YAML) lets a result be traced and rerun."""
        with self._conn:
            cur = self._conn.execute(
                "INSERT INTO runs (started_at, spec_name, spec_source, engine, spec_text) "
                "VALUES (?,?,?,?,?)", (time.time(), spec_name, spec_source, engine, spec_text))
        return int(cur.lastrowid)

    def finished_keys(self, include_errors: bool = True) -> set[str]:
        """Keys already stored (optionally only the successful ones)."""
        sql = "SELECT key FROM points" + ("" if include_errors else " WHERE status = 'ok'")
        return {row[0] for row in self._conn.execute(sql)}

    def put(self, key: str, point: dict, result: dict | None, error: str | None,
            elapsed_s: float, run_id: int) -> None:
        """Store one finished point (replacing an earlier error for the same key)."""
        if error is None:
            try:  # NaN or infinity is never a result: it would be stored as NULL and pass as ok
                text = json.dumps(result, separators=(",", ":"), allow_nan=False)
            except ValueError:
                result, error = None, "ValueError: the result holds NaN or infinite figures"
        ok = error is None
        blob = zlib.compress(text.encode(), 6) if ok else None
        figures = [result.get(k) if ok else None
                   for k in ("total_cycles", "area_mm2", "effective_tflops")]
        with self._conn:
            self._conn.execute(
                "INSERT OR REPLACE INTO points (key, point, status, total_cycles, area_mm2, "
                "effective_tflops, result, error, elapsed_s, run_id, finished_at) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (key, json.dumps(point, sort_keys=True), "ok" if ok else "error", *figures,
                 blob, error, elapsed_s, run_id, time.time()))

    def count(self) -> dict[str, int]:
        rows = self._conn.execute("SELECT status, COUNT(*) FROM points GROUP BY status")
        return {"ok": 0, "error": 0, **dict(rows.fetchall())}

    def rows(self):
        """Yield every stored point as a dict: key, point, status, result, error, run_id, ..."""
        cur = self._conn.execute(
            "SELECT key, point, status, result, error, elapsed_s, run_id, finished_at "
            "FROM points ORDER BY rowid")
        for key, point, status, blob, error, elapsed, run_id, finished in cur:
            try:
                point = json.loads(point)
                result = json.loads(zlib.decompress(blob)) if blob is not None else None
            except (zlib.error, ValueError, TypeError) as exc:
                raise ValueError(f"{self.path}: the stored result of point {key} is corrupt "
                                 f"({type(exc).__name__}: {exc}); run the sweep with a new --db"
                                 ) from None
            yield {"key": key, "point": point, "status": status, "result": result,
                   "error": error, "elapsed_s": elapsed, "run_id": run_id,
                   "finished_at": finished}


def open_store(path: str | Path, create: bool = True) -> SweepStore:
    """Open (or, with ``create``, make) a results database; refuse anything that is not ours."""
    path = Path(path)
    if not path.exists() and not create:
        raise ValueError(f"no such results database: {path}")
    folder = path.parent if path.parent != Path("") else Path(".")
    if folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"results database folder {folder} is read-only (SQLite needs to write "
                         "its journal beside the database) - choose another --db or copy it")
    if not path.exists():
        _create(path)
    version = _check_existing(path)
    conn = sqlite3.connect(path, timeout=60)
    if version == 1:  # add the spec text column of version 2; the stored points are unchanged
        with conn:
            conn.execute("ALTER TABLE runs ADD COLUMN spec_text TEXT")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    conn.execute("PRAGMA journal_mode = WAL")
    # In WAL mode, NORMAL survives a killed process (not a power cut) without an fsync per point.
    conn.execute("PRAGMA synchronous = NORMAL")
    return SweepStore(path, conn)


def _create(path: Path) -> None:
    """Make an empty store at ``path``: built under a temporary name, then hard-linked into
    place, so a second sweep creating the same database at once never sees it half-made."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".new", dir=path.parent)
    os.close(fd)
    try:
        conn = sqlite3.connect(tmp)
        try:
            # A stored point is ~2 KB: on 4 KB pages only one fits and half of each page is wasted.
            conn.execute(f"PRAGMA page_size = {_PAGE_SIZE}")
            with conn:
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                conn.executescript(_SCHEMA)
            conn.execute("PRAGMA journal_mode = WAL")
        finally:
            conn.close()
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another sweep made it first: use theirs
    finally:
        os.unlink(tmp)


def _check_existing(path: Path) -> int:
    """Read-only check that ``path`` is an intact nmsim sweep store; returns its version."""
    if not path.is_file():
        raise ValueError(f"results database {path} is not a file")
    try:
        conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True, timeout=60)
        try:
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            check = conn.execute("PRAGMA quick_check").fetchone()[0] \
                if app_id == APPLICATION_ID else "ok"
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise ValueError(f"{path} is corrupt or not an SQLite database ({exc}); "
                         "left untouched") from None
    if app_id != APPLICATION_ID or not {"runs", "points"} <= tables:
        raise ValueError(f"{path} is not an nmsim sweep results database (foreign SQLite file); "
                         "left untouched - choose another --db")
    if version not in (1, SCHEMA_VERSION):
        raise ValueError(f"{path} has results schema version {version}; this build reads "
                         f"versions 1 and {SCHEMA_VERSION}; left untouched")
    if check != "ok":
        raise ValueError(f"{path} failed SQLite's integrity check ({check}); left untouched")
    return version
