"""The engine on the synthetic test evaluator: every point once, errors stored, pool == inline."""

import pytest

from accel_sim.sweep.engine import run_points
from accel_sim.sweep.evaluate import synthetic_evaluate
from accel_sim.sweep.spec import point_key
from accel_sim.sweep.store import open_store


def synthetic_points(n, failing=()):
    return [{"evaluator": "synthetic", "label": i, **({"fail": True} if i in failing else {})}
            for i in range(n)]


def stored(db):
    with open_store(db, create=False) as store:
        return {r["key"]: r for r in store.rows()}


@pytest.mark.parametrize("workers", [1, 2])
def test_every_point_once_with_errors_kept(tmp_path, workers):
    points = synthetic_points(37, failing={3, 20})
    db = tmp_path / "r.sqlite"
    with open_store(db) as store:
        stats = run_points(points, store, workers=workers, chunk_size=4, progress=False)
    assert (stats.total, stats.computed, stats.skipped, stats.errors) == (37, 37, 0, 2)
    rows = stored(db)
    assert set(rows) == {point_key(p) for p in points}
    for p in points:
        row = rows[point_key(p)]
        if p.get("fail"):
            assert row["status"] == "error" and row["result"] is None
            assert row["error"].startswith("ValueError: synthetic failure")
        else:
            assert row["status"] == "ok" and row["result"] == synthetic_evaluate(p)
    with open_store(db) as store:
        again = run_points(points, store, workers=workers, progress=False)
        assert (again.computed, again.skipped) == (0, 37)
        retried = run_points(points, store, workers=workers, retry_errors=True, progress=False)
        assert (retried.computed, retried.errors) == (2, 2)
    assert {k: r["run_id"] for k, r in stored(db).items() if r["status"] == "ok"} == {
        k: r["run_id"] for k, r in rows.items() if r["status"] == "ok"}


def test_new_points_only_are_computed(tmp_path):
    db = tmp_path / "r.sqlite"
    with open_store(db) as store:
        run_points(synthetic_points(10), store, workers=1, progress=False)
        stats = run_points(synthetic_points(15), store, workers=2, progress=False)
    assert (stats.computed, stats.skipped) == (5, 10)
    assert len(stored(db)) == 15


def test_bad_worker_count(tmp_path):
    with open_store(tmp_path / "r.sqlite") as store, pytest.raises(ValueError, match="workers"):
        run_points(synthetic_points(2), store, workers=-1, progress=False)
