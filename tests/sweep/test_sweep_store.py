"""The SQLite results store: round trip, resume bookkeeping, refusing corrupt or foreign files."""

import sqlite3
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from accel_sim.sweep.spec import point_key
from accel_sim.sweep.store import open_store

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.text(max_size=8)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=4),
    max_leaves=20,
)


@settings(max_examples=25, deadline=None)
@given(result=st.dictionaries(st.text(max_size=10), json_values, max_size=6),
       point=st.dictionaries(st.text(max_size=10), json_values, max_size=4))
def test_results_round_trip_exactly(tmp_path_factory, result, point):
    db = tmp_path_factory.mktemp("store") / "r.sqlite"
    with open_store(db) as store:
        run = store.start_run("t", "<t>", "local:1")
        store.put(point_key(point), point, result, None, 0.5, run)
    with open_store(db, create=False) as store:
        (row,) = list(store.rows())
    assert (row["key"], row["point"], row["result"], row["status"]) == (
        point_key(point), point, result, "ok")


def test_errors_are_stored_and_can_be_replaced(tmp_path):
    db = tmp_path / "r.sqlite"
    with open_store(db) as store:
        run = store.start_run("t", "<t>", "local:1")
        store.put("a", {"x": 1}, {"total_cycles": 5}, None, 0.1, run)
        store.put("b", {"x": 2}, None, "ValueError: boom", 0.1, run)
        assert store.count() == {"ok": 1, "error": 1}
        assert store.finished_keys() == {"a", "b"}
        assert store.finished_keys(include_errors=False) == {"a"}
        store.put("b", {"x": 2}, {"total_cycles": 7}, None, 0.1, run)
        assert store.count() == {"ok": 2, "error": 0}
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        blob = conn.execute("SELECT result FROM points WHERE key='b'").fetchone()[0]
    assert zlib.decompress(blob) == b'{"total_cycles":7}'


def test_point_key_is_canonical():
    a = {"hw": {"pattern": "2:4", "encoding": "rank"}, "workload": "w"}
    b = {"workload": "w", "hw": {"encoding": "rank", "pattern": "2:4"}}
    assert point_key(a) == point_key(b)
    assert point_key(a) != point_key({**a, "workload": "v"})


def _snapshot(path):
    return path.read_bytes()


def test_corrupt_database_is_refused_and_untouched(tmp_path):
    db = tmp_path / "r.sqlite"
    db.write_bytes(b"this is not sqlite at all" * 100)
    before = _snapshot(db)
    with pytest.raises(ValueError, match="corrupt or not an SQLite database"):
        open_store(db)
    assert _snapshot(db) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.sqlite"]


def test_foreign_database_is_refused_and_untouched(tmp_path):
    db = tmp_path / "other.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE points (key TEXT)")
        conn.execute("INSERT INTO points VALUES ('mine')")
    conn.close()
    before = _snapshot(db)
    with pytest.raises(ValueError, match="not an nmsim sweep results database"):
        open_store(db)
    assert _snapshot(db) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.sqlite"]


def test_damaged_page_fails_integrity_check(tmp_path):
    db = tmp_path / "r.sqlite"
    with open_store(db) as store:
        run = store.start_run("t", "<t>", "local:1")
        for i in range(300):
            store.put(f"k{i}", {"i": i}, {"total_cycles": i, "pad": "x" * 200}, None, 0.0, run)
    with sqlite3.connect(db) as conn:  # fold the WAL into the main file, then damage a page
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("PRAGMA journal_mode = DELETE")
    conn.close()
    data = bytearray(db.read_bytes())
    page = 4096
    assert len(data) > 4 * page
    data[3 * page:4 * page] = b"\xff" * page
    db.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt|integrity"):
        open_store(db)
    assert db.read_bytes() == bytes(data)


def test_missing_database_with_create_false(tmp_path):
    with pytest.raises(ValueError, match="no such results database"):
        open_store(tmp_path / "nope.sqlite", create=False)
    assert not (tmp_path / "nope.sqlite").exists()
