"""A sweep killed with SIGKILL resumes without recomputing; Dask gives the local results."""

import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

from accel_sim.sweep.engine import run_spec
from accel_sim.sweep.evaluate import SYNTHETIC_DELAY_ENV
from accel_sim.sweep.spec import parse_spec
from accel_sim.sweep.store import open_store

SLOW_SPEC = textwrap.dedent("""\
    name: killme
    evaluator: synthetic
    hardware: flexible-nm
    workloads: [llama2-7b]
    phases: {decode: {batch: [1, 2, 3, 4]}}
    axes: {num_decoders: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]}
    """)
TOTAL = 4 * 20


def stored_rows(db):
    """(key -> (run_id, finished_at)) read without the store, as an outside observer."""
    if not db.exists():
        return {}
    conn = sqlite3.connect(db, timeout=30)
    try:
        return {k: (r, f) for k, r, f in
                conn.execute("SELECT key, run_id, finished_at FROM points")}
    except sqlite3.OperationalError:  # schema not created yet
        return {}
    finally:
        conn.close()


def sweep_cmd(spec, db, *extra):
    return [sys.executable, "-m", "nmsim", "sweep", "--spec", str(spec), "--db", str(db),
            "--no-report", "--workers", "2", "--chunk", "1", *extra]


def test_sigkill_mid_sweep_then_resume_recomputes_nothing_finished(tmp_path):
    spec = tmp_path / "killme.yaml"
    spec.write_text(SLOW_SPEC)
    db = tmp_path / "r.sqlite"
    env = {**os.environ, SYNTHETIC_DELAY_ENV: "0.1"}
    proc = subprocess.Popen(sweep_cmd(spec, db, "--quiet"), env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(stored_rows(db)) < 12 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its pool workers, no clean-up
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    before = stored_rows(db)
    assert 12 <= len(before) < TOTAL, "the kill must land mid-sweep"

    out = subprocess.run(sweep_cmd(spec, db), env=env, capture_output=True, text=True,
                         check=False)
    assert out.returncode == 0, out.stderr
    assert f"{TOTAL} points, {len(before)} already stored, {TOTAL - len(before)} computed " \
           "(0 errors)" in out.stdout
    after = stored_rows(db)
    assert len(after) == TOTAL
    assert {k: after[k] for k in before} == before  # finished rows untouched (run, timestamp)
    assert len({run for run, _ in after.values()}) == 2
    # The tqdm bar shows elapsed<remaining (ETA) and the rate.
    assert re.search(r"\d\d:\d\d<\d\d:\d\d, +[\d.]+pt/s\]", out.stderr), out.stderr[-300:]


SMALL_REAL_SPEC = textwrap.dedent("""\
    name: dask-check
    hardware: flexible-nm
    workloads: [smollm2-135m]
    phases:
      prefill: {seq: 64}
      decode: {batch: 2, kv_len: 64}
    axes:
      pattern: [2:4, 8:16]
      metadata:
        - {encoding: rank, decoder: rank_pipeline}
        - {encoding: bitmask, decoder: popcount}
      num_decoders: [2, 32]
    baseline: {pattern: dense, supported_patterns: []}
    """)


def _without_wall_time(value):
    """Simulated figures only: wall-clock measurements differ from run to run by nature."""
    if isinstance(value, dict):
        return {k: _without_wall_time(v) for k, v in value.items() if not k.endswith("wall_s")}
    if isinstance(value, list):
        return [_without_wall_time(v) for v in value]
    return value


def test_dask_local_cluster_equals_local_run(tmp_path):
    distributed = pytest.importorskip("distributed")
    spec = parse_spec(SMALL_REAL_SPEC)
    with open_store(tmp_path / "local.sqlite") as store:
        local = run_spec(spec, store, workers=2, progress=False)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            open_store(tmp_path / "dask.sqlite") as store:
        remote = run_spec(spec, store, dask_address=cluster.scheduler_address, progress=False)
    assert remote.engine.startswith("dask:tcp://")
    assert local.computed == remote.computed == len(spec.points())
    with open_store(tmp_path / "local.sqlite") as a, open_store(tmp_path / "dask.sqlite") as b:
        rows_a = {r["key"]: r for r in a.rows()}
        rows_b = {r["key"]: r for r in b.rows()}
    assert rows_a.keys() == rows_b.keys()
    for key, ra in rows_a.items():
        rb = rows_b[key]
        assert (ra["status"], ra["point"]) == (rb["status"], rb["point"]) == ("ok", ra["point"])
        assert _without_wall_time(ra["result"]) == _without_wall_time(rb["result"])
