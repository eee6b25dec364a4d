"""Hostile inputs against every command: each exits 2 with exactly one line on stderr, writes
nothing, and leaves every file that was there byte for byte as it was (SHA-256 before/after).

Commands run in-process (``nmsim.cli.main``) in a fresh copy of the assets folder (conftest.py).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3

import pytest
from hostile_helpers import snapshot

from compression import formats
from nmsim.cli import main

# ---------------------------------------------------------------------------- setups


def _rewrite_meta(path, mutate):
    """Rewrite a compressed file's safetensors metadata with ``mutate(meta)`` (arrays kept)."""
    from safetensors import safe_open
    from safetensors.numpy import save_file

    with safe_open(str(path), framework="numpy") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - not a dict
        meta = dict(f.metadata())
    save_file(tensors, str(path), metadata=mutate(meta))


def _header(value):
    """Replace the nmsim header with ``value`` (JSON), keeping its checksum consistent."""
    def mutate(meta):
        return formats.header_metadata(value) if isinstance(value, dict) else {
            **meta, "nmsim": json.dumps(value)}
    return lambda d: _rewrite_meta(d / "w.safetensors", mutate)


def _tensors(value):
    def mutate(meta):
        header = json.loads(meta["nmsim"])
        header["tensors"] = value
        return formats.header_metadata(header)
    return lambda d: _rewrite_meta(d / "w.safetensors", mutate)


def _flip(where):
    """Flip one bit: in the stored arrays (near the end) or inside the JSON header."""
    def setup(d):
        path = d / "w.safetensors"
        data = bytearray(path.read_bytes())
        if where == "values":
            data[len(data) - 100] ^= 0x10
        else:  # the pattern's N in the header: "8:16" becomes "9:16"
            data[data.index(b"8:16")] ^= 0x01
        path.write_bytes(bytes(data))
    return setup


def _index(mutate):
    def setup(d):
        path = d / "prune" / "index.json"
        index = json.loads(path.read_text())
        mutate(index)
        path.write_text(json.dumps(index))
    return setup


def _entry(**changes):
    return _index(lambda i: i["layers"][0].update(changes))


def _drop_compressed(index):
    del index["layers"][0]["compressed"]


def _truncate(d):
    path = d / "w.safetensors"
    path.write_bytes(path.read_bytes()[:-500])


MASKS = ["simulate", "--workload", "smollm2-135m", "--layers", "1", "--seq", "16",
         "--allow-partial-masks", "--masks"]
SWEEP = ["sweep", "--spec", "spec_ok.yaml", "--quiet", "--workers", "1"]
KERNELS = ["bench", "kernels", "--shape", "16x32", "--pattern", "2:4", "--batch", "1",
           "--dtype", "float32", "--encoding", "rank", "--repeats", "1", "--warmup", "0"]

# (id, argv, setup(folder) or None, a word the one error line must hold)
CASES = [
    # formats
    ("formats-unicode-digits", ["formats", "--pattern", "２:４"], None, "invalid pattern"),
    ("formats-m-too-large", ["formats", "--pattern", "300:400"], None, "invalid pattern"),
    ("formats-trailing-junk", ["formats", "--pattern", "2:4x"], None, "invalid pattern"),
    # prune: all rejected before a model loads
    ("prune-finetune-negative", ["prune", "--model", "nowhere", "--pattern", "2:4",
                                 "--finetune-steps", "-5", "--out", "p"], None, "finetune-steps"),
    ("prune-seqlen-zero", ["prune", "--model", "nowhere", "--pattern", "2:4", "--seqlen", "0",
                           "--out", "p"], None, "seqlen"),
    ("prune-calib-zero", ["prune", "--model", "nowhere", "--pattern", "2:4", "--calib-samples",
                          "0", "--out", "p"], None, "calib-samples"),
    ("prune-windows-zero", ["prune", "--model", "nowhere", "--pattern", "2:4",
                            "--eval-windows", "0", "--out", "p"], None, "eval-windows"),
    ("prune-out-existing-file", ["prune", "--model", "nowhere", "--pattern", "2:4",
                                 "--out", "a_file.txt"], None, "already exists"),
    ("prune-out-existing-folder", ["prune", "--model", "nowhere", "--pattern", "2:4",
                                   "--out", "user"], None, "already exists"),
    ("prune-equalize-nan", ["prune", "--model", "nowhere", "--pattern", "2:4", "--equalize",
                            "nan", "--no-eval", "--out", "p"], None, "equalize"),
    ("prune-bad-pattern", ["prune", "--model", "nowhere", "--pattern", "9:4", "--out", "p"],
     None, "pattern"),
    # export
    ("export-not-a-prune-output", ["export", "user", "--out", "e"], None, "user"),
    ("export-missing-folder", ["export", "nowhere", "--out", "e"], None, "nowhere"),
    ("export-out-not-empty", ["export", "user", "--out", "user"], None, "user"),
    # simulate: sizes
    ("simulate-seq-1e12", ["simulate", "--seq", "1000000000000"], None, "seq"),
    ("simulate-seq-1e9", ["simulate", "--seq", "1000000000"], None, "seq"),
    ("simulate-seq-zero", ["simulate", "--seq", "0"], None, "seq"),
    ("simulate-batch-negative", ["simulate", "--batch", "-1"], None, "batch"),
    ("simulate-kv-zero", ["simulate", "--phase", "decode", "--kv-len", "0"], None, "kv_len"),
    ("simulate-layers-zero", ["simulate", "--layers", "0"], None, "layers"),
    ("simulate-too-many-steps", ["simulate", "--workload", "smollm2-135m", "--seq", "262144",
                                 "--max-steps", "1000"], None, "wave-steps"),
    ("simulate-unicode-pattern", ["simulate", "--pattern", "２:４"], None, "pattern"),
    # simulate: hardware files
    ("hw-nan-bandwidth", ["simulate", "--hw", "nan_bw.yaml"], None, "dram_bandwidth_gb_s"),
    ("hw-tiny-bandwidth", ["simulate", "--hw", "tiny_bw.yaml"], None, "dram_bandwidth_gb_s"),
    ("hw-inf-clock", ["simulate", "--hw", "inf_clock.yaml"], None, "clock_ghz"),
    ("hw-negative-cores", ["simulate", "--hw", "neg_cores.yaml"], None, "num_cores"),
    ("hw-absurd-cores", ["simulate", "--hw", "huge_cores.yaml"], None, "num_cores"),
    ("hw-bool-rows", ["simulate", "--hw", "bool_rows.yaml"], None, "array_rows"),
    ("hw-string-clock", ["simulate", "--hw", "str_clock.yaml"], None, "clock_ghz"),
    ("hw-duplicate-key", ["simulate", "--hw", "dup_key.yaml"], None, "duplicate key"),
    ("hw-top-level-list", ["simulate", "--hw", "list.yaml"], None, "mapping"),
    ("hw-binary", ["simulate", "--hw", "binary.yaml"], None, "binary.yaml"),
    ("hw-alias-bomb", ["simulate", "--hw", "bomb.yaml"], None, "aliases"),
    ("hw-unicode-pattern", ["simulate", "--hw", "unicode_pattern.yaml"], None, "pattern"),
    # simulate: compressed files and prune folders
    ("masks-header-list", [*MASKS, "w.safetensors"], _header([1, 2]), "JSON object"),
    ("masks-header-null", [*MASKS, "w.safetensors"], _header(None), "JSON object"),
    ("masks-header-string", [*MASKS, "w.safetensors"], _header("x"), "JSON object"),
    ("masks-header-no-format", [*MASKS, "w.safetensors"], _header({"version": 2}), "format"),
    ("masks-tensors-list", [*MASKS, "w.safetensors"], _tensors([1]), "tensors"),
    ("masks-part-list", [*MASKS, "w.safetensors"], _tensors({"w": {"bulk": [1]}}), "bulk"),
    ("masks-kind-unknown", [*MASKS, "w.safetensors"], _tensors({"w": {"bulk": {"kind": "x"}}}),
     "kind"),
    ("masks-shape-junk", [*MASKS, "w.safetensors"], _tensors({"w": {"bulk": {
        "kind": "nm", "shape": 7, "pattern": "2:4", "encoding": "rank", "tail": "dense",
        "dtype": "float16", "checksums": {}}}}), "tensor 'w/bulk'"),
    ("masks-flipped-value-bit", [*MASKS, "w.safetensors"], _flip("values"), "checksum"),
    ("masks-flipped-header-bit", [*MASKS, "w.safetensors"], _flip("header"), "checksum"),
    ("masks-truncated", [*MASKS, "w.safetensors"], _truncate, "w.safetensors"),
    ("index-layers-dict", [*MASKS, "prune"], _index(lambda i: i.update(layers={"a": 1})),
     "layers"),
    ("index-layers-ints", [*MASKS, "prune"], _index(lambda i: i.update(layers=[1, 2])),
     "layers[0]"),
    ("index-entry-no-compressed", [*MASKS, "prune"], _index(_drop_compressed), "layers[0]"),
    ("index-entry-escapes", [*MASKS, "prune"], _entry(compressed="../w.safetensors"),
     "outside"),
    ("index-entry-absolute", [*MASKS, "prune"], _entry(compressed="/etc/passwd"), "relative"),
    ("masks-partial-refused", ["simulate", "--workload", "smollm2-135m", "--masks", "prune"],
     None, "--allow-partial-masks"),
    # sweep: specs
    ("spec-name-absolute", [*SWEEP[:1], "--spec", "spec_name_abs.yaml"], None, "name"),
    ("spec-name-dot", ["sweep", "--spec", "spec_name_dot.yaml"], None, "name"),
    ("spec-name-parent", ["sweep", "--spec", "spec_name_up.yaml"], None, "name"),
    ("spec-name-space", ["sweep", "--spec", "spec_space_name.yaml"], None, "name"),
    ("spec-workloads-nested", ["sweep", "--spec", "spec_workloads_nested.yaml"], None,
     "workloads[0]"),
    ("spec-duplicate-axis", ["sweep", "--spec", "spec_dup_axis.yaml"], None, "duplicate key"),
    ("spec-duplicate-field", ["sweep", "--spec", "spec_dup_top.yaml"], None, "duplicate key"),
    ("spec-inf-axis", ["sweep", "--spec", "spec_inf_axis.yaml"], None, "clock_ghz"),
    ("spec-nan-axis", ["sweep", "--spec", "spec_nan_axis.yaml"], None, "dram_bandwidth_gb_s"),
    ("spec-huge-seq", ["sweep", "--spec", "spec_huge_seq.yaml"], None, "seq"),
    ("spec-zero-batch", ["sweep", "--spec", "spec_zero_batch.yaml"], None, "batch"),
    ("spec-ten-million-points", ["sweep", "--spec", "spec_ten_million.yaml"], None,
     "--max-points"),
    ("spec-alias-bomb", ["sweep", "--spec", "spec_bomb.yaml"], None, "aliases"),
    ("spec-a-list", ["sweep", "--spec", "spec_list.yaml"], None, "mapping"),
    ("spec-bad-yaml", ["sweep", "--spec", "spec_bad_yaml.yaml"], None, "YAML"),
    ("spec-too-deep", ["sweep", "--spec", "spec_deep.yaml"], None, "deep"),
    ("spec-missing-hardware", ["sweep", "--spec", "spec_hw_missing.yaml"], None, "hardware"),
    ("spec-partial-masks", ["sweep", "--spec", "spec_partial_masks.yaml"], None,
     "allow-partial-masks"),
    ("sweep-max-points-zero", [*SWEEP, "--max-points", "0"], None, "max-points"),
    # sweep: outputs, databases, workers, cluster
    ("sweep-out-file", [*SWEEP, "--out", "a_file.txt"], None, "not a folder"),
    ("sweep-out-user-folder", [*SWEEP, "--out", "user"], None, "did not write"),
    ("sweep-out-runs", [*SWEEP, "--db", "new.sqlite", "--out", "runs"], None, "did not write"),
    ("sweep-out-other-kind", [*SWEEP, "--out", "other_kind"], None, "something-else"),
    ("sweep-db-foreign", [*SWEEP, "--db", "foreign.sqlite"], None, "foreign"),
    ("sweep-db-folder", [*SWEEP, "--db", "user"], None, "not a file"),
    ("sweep-workers-huge", [*SWEEP[:4], "--workers", "100000"], None, "--workers"),
    ("sweep-workers-zero", [*SWEEP[:4], "--workers", "0"], None, "--workers"),
    ("sweep-chunk-zero", [*SWEEP, "--chunk", "0"], None, "--chunk"),
    ("sweep-dask-closed-port", [*SWEEP, "--dask", "tcp://127.0.0.1:9"], None, "Dask"),
    ("sweep-dask-bad-address", [*SWEEP, "--dask", "not an address"], None, "--dask"),
    # report
    ("report-out-user-folder", ["report", "runs/tiny.sqlite", "--out", "user"], None,
     "did not write"),
    ("report-out-db-folder", ["report", "runs/tiny.sqlite", "--out", "runs"], None,
     "did not write"),
    ("report-out-file", ["report", "runs/tiny.sqlite", "--out", "a_file.txt"], None,
     "not a folder"),
    ("report-out-cwd", ["report", "runs/tiny.sqlite", "--out", "."], None, "did not write"),
    ("report-out-other-kind", ["report", "runs/tiny.sqlite", "--out", "other_kind"], None,
     "something-else"),
    ("report-corrupt-blob", ["report", "corrupt_blob.sqlite", "--out", "r"], None, "corrupt"),
    ("report-foreign-db", ["report", "foreign.sqlite", "--out", "r"], None, "foreign"),
    ("report-missing-db", ["report", "nowhere.sqlite", "--out", "r"], None, "no such"),
    ("report-garbage-db", ["report", "a_file.txt", "--out", "r"], None, "not an SQLite"),
    # bench and validate: every option checked before anything is timed
    ("bench-formats-huge-shape", ["bench", "formats", "--shape", "100000x100000"], None,
     "elements"),
    ("bench-formats-zero-shape", ["bench", "formats", "--shape", "0x64"], None, "positive"),
    ("bench-formats-junk-shape", ["bench", "formats", "--shape", "1x2x3"], None, "OUTxIN"),
    ("bench-formats-repeats-zero", ["bench", "formats", "--repeats", "0"], None, "repeats"),
    ("bench-kernels-markdown-dir", [*KERNELS, "--markdown", "missing/dir/x.md"], None,
     "does not exist"),
    ("bench-kernels-plot-dir", [*KERNELS, "--plot", "missing/x.png"], None, "does not exist"),
    ("bench-kernels-markdown-folder", [*KERNELS, "--markdown", "user"], None, "folder"),
    ("bench-kernels-markdown-user-file", [*KERNELS, "--markdown", "a_file.txt"], None,
     "not written by"),
    ("bench-kernels-plot-user-file", [*KERNELS, "--plot", "a_file.txt"], None, "not written by"),
    ("bench-kernels-repeats-zero", [*KERNELS[:-4], "--repeats", "0"], None, "repeats"),
    ("bench-kernels-threads-zero", [*KERNELS, "--threads", "0"], None, "threads"),
    ("bench-kernels-batch-zero", [*KERNELS[:6], "--batch", "0"], None, "batch"),
    ("bench-kernels-huge-shape", ["bench", "kernels", "--shape", "100000x100000"], None,
     "elements"),
    ("validate-zero-shape", ["validate", "--check-shape", "0x4"], None, "positive"),
    ("validate-repeats-zero", ["validate", "--repeats", "0"], None, "repeats"),
    ("validate-huge-shape", ["validate", "--speed-shape", "100000x100000"], None, "elements"),
    ("validate-resident-threads-zero", ["validate", "--resident-threads", "0"], None,
     "resident-threads"),
    ("validate-resident-threads-too-many", ["validate", "--resident-threads", "4096"], None,
     "resident-threads"),
]


@pytest.fixture
def workdir(assets, tmp_path, monkeypatch):
    folder = tmp_path / "w"
    shutil.copytree(assets, folder)
    monkeypatch.chdir(folder)
    return folder


@pytest.mark.parametrize("argv, setup, needle", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_hostile_input_is_one_line_exit_2_and_touches_nothing(argv, setup, needle, workdir,
                                                              capsys):
    if setup is not None:
        setup(workdir)
    before = snapshot(workdir)
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, captured.err
    assert len(lines) == 1, captured.err
    assert needle in lines[0]
    assert "Traceback" not in captured.err
    assert snapshot(workdir) == before  # nothing changed, nothing half-written left


def test_case_ids_are_unique_and_cover_every_command():
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids)) >= 60
    from nmsim.cli import COMMANDS

    assert {c[1][0] for c in CASES} == set(COMMANDS)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_database_folder_is_named_as_such(workdir, capsys):
    os.chmod(workdir / "runs", 0o555)
    try:
        assert main(["report", "runs/tiny.sqlite", "--out", "r"]) == 2
    finally:
        os.chmod(workdir / "runs", 0o755)
    assert "read-only" in capsys.readouterr().err


def test_corrupt_blob_fixture_is_a_valid_store_with_one_bad_row(assets):
    """The corrupt-blob case fails on the blob, not on the database (a meaningful case)."""
    with sqlite3.connect(assets / "corrupt_blob.sqlite") as conn:
        assert conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT COUNT(*) FROM points").fetchone()[0] == 2
    conn.close()
