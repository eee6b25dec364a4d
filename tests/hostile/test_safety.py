"""What the tool does right where the hostile cases refuse: reports re-run into their own folder
keep a user's files, results follow file contents, checksums catch every flipped bit, one YAML
loader for all files, concurrent database creation, and sweep workers that die with their parent.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from hostile_helpers import MASK_WEIGHT, SYNTHETIC_SPEC, write_compressed
from hypothesis import given, settings
from hypothesis import strategies as st

from accel_sim.config import PRESET_DIR, HardwareConfig, from_dict, load_hardware
from accel_sim.output_folder import MARKER
from accel_sim.sweep.engine import run_spec
from accel_sim.sweep.evaluate import simulator_version
from accel_sim.sweep.spec import parse_spec
from accel_sim.sweep.store import open_store
from accel_sim.yaml_io import YamlError, load_yaml
from compression import formats
from nmsim.cli import main

REPO = Path(__file__).resolve().parents[2]


def _sweep(tmp_path, spec_text, **options):
    spec = parse_spec(spec_text, str(tmp_path / "spec.yaml"))
    with open_store(tmp_path / "r.sqlite") as store:
        return run_spec(spec, store, workers=1, progress=False, **options)


def test_report_rerun_replaces_only_its_own_files(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _sweep(tmp_path, SYNTHETIC_SPEC)
    assert main(["report", "r.sqlite", "--out", "rep"]) == 0
    written = json.loads((tmp_path / "rep" / MARKER).read_text())["files"]
    assert {"summary.md", "results.csv", "report.html"} <= set(written)
    (tmp_path / "rep" / "mine.txt").write_text("keep me")
    (tmp_path / "rep" / "summary.md").write_text("stale")
    assert main(["report", "r.sqlite", "--out", "rep"]) == 0
    assert (tmp_path / "rep" / "mine.txt").read_text() == "keep me"
    assert (tmp_path / "rep" / "summary.md").read_text() != "stale"
    assert sorted(p.name for p in (tmp_path / "rep").iterdir()) == sorted(
        [*written, MARKER, "mine.txt"])  # no staging folder left behind


def test_report_into_an_empty_folder_is_allowed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _sweep(tmp_path, SYNTHETIC_SPEC)
    (tmp_path / "empty").mkdir()
    assert main(["report", "r.sqlite", "--out", "empty"]) == 0
    assert (tmp_path / "empty" / MARKER).is_file()


def test_editing_a_hardware_file_recomputes_its_points(tmp_path):
    hw = tmp_path / "hw.yaml"
    hw.write_text((PRESET_DIR / "flexible-nm.yaml").read_text())
    spec = SYNTHETIC_SPEC.replace("hardware: flexible-nm", f"hardware: {hw}")
    first = _sweep(tmp_path, spec)
    assert (first.computed, first.skipped) == (2, 0)
    assert _sweep(tmp_path, spec).skipped == 2  # same contents: nothing recomputed
    hw.write_text(hw.read_text().replace("clock_ghz: 1.41", "clock_ghz: 2.0"))
    again = _sweep(tmp_path, spec)
    assert (again.computed, again.skipped) == (2, 0)
    with open_store(tmp_path / "r.sqlite") as store:
        texts = [r[0] for r in store._conn.execute("SELECT spec_text FROM runs")]
    assert texts == [spec, spec]  # each run records the spec it ran


def test_simulate_json_is_enough_to_reproduce_the_run(capsys):
    assert main(["simulate", "--json", "--workload", "smollm2-135m", "--layers", "1", "--seq",
                 "32", "--hw", "dense"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["simulator_version"] == simulator_version()
    assert from_dict(record["hardware_config"]) == load_hardware("dense")


def test_unquoted_pattern_in_a_hardware_file_is_the_pattern(tmp_path):
    text = (PRESET_DIR / "flexible-nm.yaml").read_text()
    quoted = tmp_path / "q.yaml"
    quoted.write_text(text + "\npattern: '4:8'\n" if "\npattern:" not in text else
                      text.replace("\npattern: ", "\npattern: '4:8' #"))
    bare = tmp_path / "b.yaml"
    bare.write_text(quoted.read_text().replace("'4:8'", "4:8"))
    assert load_hardware(bare).pattern == "4:8"
    assert load_hardware(bare) == load_hardware(quoted)


def test_padded_pattern_is_the_same_design_point():
    spec = parse_spec(SYNTHETIC_SPEC.replace('["2:4", "4:8"]', '["2:4", " 2:4", "2 : 4"]'))
    assert [p["hw"]["pattern"] for p in spec.points()] == ["2:4"]


def _flip_bit(path: Path, position: int) -> None:
    data = bytearray(path.read_bytes())
    data[position // 8] ^= 1 << (position % 8)
    path.write_bytes(bytes(data))


@settings(max_examples=40, deadline=None)
@given(fraction=st.floats(0, 1, exclude_max=True))
def test_every_flipped_bit_of_a_compressed_file_is_an_error(tmp_path_factory, fraction):
    """Any single-bit flip anywhere in the file: a FormatError, never a silent load."""
    path = tmp_path_factory.mktemp("flip") / "w.safetensors"
    write_compressed(path)
    _flip_bit(path, int(fraction * path.stat().st_size * 8))
    with pytest.raises(formats.FormatError):
        formats.load(path)


def test_version_1_files_still_load(tmp_path):
    from safetensors import safe_open
    from safetensors.numpy import save_file

    path = tmp_path / "w.safetensors"
    write_compressed(path)
    reference = formats.load(path)[MASK_WEIGHT].to_dense()
    with safe_open(str(path), framework="numpy") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - not a dict
        header = json.loads(f.metadata()["nmsim"])
    header["version"] = 1
    for parts in header["tensors"].values():
        for part in parts.values():
            del part["checksums"]
    save_file(tensors, str(path), metadata={"nmsim": json.dumps(header)})
    np.testing.assert_array_equal(formats.load(path)[MASK_WEIGHT].to_dense(), reference)


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                     lambda kids: st.lists(kids, max_size=3)
                     | st.dictionaries(st.text(max_size=6), kids, max_size=3), max_leaves=12)
_header_keys = st.sampled_from(["format", "version", "tensors", "bulk", "salient", "kind",
                                "shape", "pattern", "checksums"])


@settings(max_examples=150, deadline=None)
@given(meta=st.dictionaries(st.sampled_from(["nmsim", "nmsim-xxh3", "x"]),
                            st.text(max_size=20) | _json.map(json.dumps), max_size=3),
       header=st.dictionaries(_header_keys, _json, max_size=5),
       tensors=st.dictionaries(st.text(max_size=4), st.dictionaries(_header_keys, _json)))
def test_header_parser_fuzz_only_raises_format_errors(meta, header, tensors):
    """Random metadata, and near-valid headers with random parts: a checked header or a
    FormatError, nothing else."""
    near = {"format": formats.FORMAT_NAME, "version": 2, **header, "tensors": tensors}
    for candidate in (meta, formats.header_metadata(near)):
        try:
            parsed = formats.parse_header("f", candidate)
        except formats.FormatError:
            continue
        assert isinstance(parsed["tensors"], dict)


@settings(max_examples=200, deadline=None)
@given(fields=st.dictionaries(st.sampled_from(sorted(HardwareConfig.__dataclass_fields__)),
                              _json, max_size=6))
def test_hardware_loader_fuzz_only_raises_value_errors(fields, tmp_path_factory):
    """Random field values through the YAML file path: a valid config or a ValueError."""
    import yaml

    path = tmp_path_factory.mktemp("hw") / "hw.yaml"
    try:
        path.write_text(yaml.safe_dump(fields))
    except yaml.YAMLError:
        return
    try:
        hw = load_hardware(path)
    except ValueError:
        return
    assert all(np.isfinite([hw.clock_ghz, hw.dram_bandwidth_gb_s]))


@settings(max_examples=150, deadline=None)
@given(spec=st.dictionaries(st.sampled_from(["name", "hardware", "workloads", "phases", "axes",
                                             "baseline", "masks", "evaluator", "skip_invalid",
                                             "compression"]),
                            _json, max_size=6))
def test_spec_loader_fuzz_only_raises_value_errors(spec):
    text = json.dumps({"evaluator": "synthetic", "hardware": "flexible-nm", **spec})
    try:
        parse_spec(text)
    except ValueError:
        pass


@settings(max_examples=100, deadline=None)
@given(text=st.text(alphabet="ab:&*[]{}-,\n 0123456789!'\"", max_size=60))
def test_yaml_loader_fuzz_only_raises_yaml_errors(text):
    try:
        load_yaml(text, "fuzz")
    except YamlError:
        pass


def _create_store(path, barrier):
    barrier.wait()
    with open_store(path) as store:
        store.start_run("t", "<t>", "local:1")


def test_concurrent_sweeps_creating_one_database_both_succeed(tmp_path):
    ctx = multiprocessing.get_context("fork")
    for attempt in range(5):
        path = tmp_path / f"db{attempt}.sqlite"
        barrier = ctx.Barrier(4)
        procs = [ctx.Process(target=_create_store, args=(path, barrier)) for _ in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert [p.exitcode for p in procs] == [0, 0, 0, 0]
        with open_store(path) as store:
            assert store._conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 4
    assert not list(tmp_path.glob(".*.new"))  # no temporary file left behind


def test_sigkilled_sweep_leaves_no_worker_alive(tmp_path):
    (tmp_path / "s.yaml").write_text(SYNTHETIC_SPEC.replace(
        'pattern: ["2:4", "4:8"]', f"num_decoders: {list(range(1, 200))}"))
    env = {**os.environ, "PYTHONPATH": str(REPO), "NMSIM_SYNTHETIC_DELAY_S": "0.2"}
    proc = subprocess.Popen([sys.executable, "-m", "nmsim", "sweep", "--spec", "s.yaml",
                             "--workers", "2", "--quiet", "--no-report"], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parent = psutil.Process(proc.pid)
    deadline = time.monotonic() + 120
    workers = []
    while len(workers) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
        workers = parent.children(recursive=True)
    assert len(workers) >= 2, "the sweep never started its pool"
    time.sleep(1.0)  # workers busy on points
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    _, alive = psutil.wait_procs(workers, timeout=15)
    for survivor in alive:  # do not leave them running when the check fails
        survivor.kill()
    assert not alive, [p.pid for p in alive]
