"""nmsim's systolic template against SCALE-Sim 3.0.0: the real tool on tiny cases (its venv is
built once under ~/.cache/nmsim; skipped with the reason when PyPI is out of reach), and always
against SCALE-Sim's closed form, which scripts/scalesim_parity.py checks against the tool on
44 cases (reports/validation/scalesim.md). Plus SCALE-Sim's files through `nmsim simulate`."""

import csv
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from accel_sim import scalesim_io
from accel_sim.scalesim_ref import (
    ParityCase,
    run_nmsim,
    run_scalesim,
    scalesim_compute_cycles,
    scalesim_python,
)
from nmsim.cli import main

TINY = (
    ParityCase("ws_dense", "ws", 4, 4, 7, 9, 10),
    ParityCase("os_dense", "os", 4, 8, 9, 5, 11),
    ParityCase("is_dense", "is", 8, 4, 6, 10, 13),
    ParityCase("ws_2of4_tail", "ws", 4, 4, 5, 6, 19, "2:4"),
    ParityCase("ws_1of4_tail", "ws", 8, 4, 3, 5, 23, "1:4"),
)


@pytest.fixture(scope="module")
def scalesim_results(tmp_path_factory):
    """SCALE-Sim's and nmsim's reports on the TINY cases, or a skip with the reason."""
    python, reason = scalesim_python(timeout_s=900)
    if python is None:
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("scalesim")
    files = [case.write(folder / case.label) for case in TINY]
    refs = run_scalesim(python, files, folder / "runs", timeout_s=900)
    return [(case, ref["rows"][0], run_nmsim(*paths, repeats=1)["rows"][0])
            for case, paths, ref in zip(TINY, files, refs)]


def test_compute_cycles_equal_the_real_scalesim(scalesim_results):
    for case, theirs, mine in scalesim_results:
        their_compute = theirs["total_cycles"] - theirs["stall_cycles"]
        assert mine["Compute Cycles"] == their_compute, case
        # the closed form the fallback test uses is SCALE-Sim's, checked here on the tool
        assert scalesim_compute_cycles(case.dataflow, case.rows, case.cols, case.m, case.n,
                                       case.k, case.pattern) == their_compute, case
        assert mine["Mapping Efficiency %"] == pytest.approx(theirs["mapping_efficiency"]), case
        if case.pattern is None:  # dense, CALC: no stall in either tool, same totals
            assert mine["Total Cycles"] == theirs["total_cycles"], case
            assert mine["Overall Util %"] == pytest.approx(theirs["overall_util"]), case


@settings(max_examples=40, deadline=None)
@given(dataflow=st.sampled_from(["ws", "os", "is"]), rows=st.sampled_from([4, 8, 16, 32]),
       cols=st.integers(2, 40), m=st.integers(1, 300), n=st.integers(1, 300),
       k=st.integers(1, 600), pattern=st.sampled_from([None, None, "1:4", "2:4", "4:8", "2:8"]))
def test_compute_cycles_equal_scalesims_closed_form(tmp_path_factory, dataflow, rows, cols, m,
                                                    n, k, pattern):
    """SCALE-Sim runs N:M on weight-stationary arrays only (its OS and IS stop on the
    compressed filter's shape), so the other dataflows are drawn dense."""
    if dataflow != "ws":
        pattern = None
    case = ParityCase("h", dataflow, rows, cols, m, n, k, pattern)
    files = case.write(tmp_path_factory.mktemp("case"))
    mine = run_nmsim(*files, repeats=1)["rows"][0]
    assert mine["Compute Cycles"] == scalesim_compute_cycles(dataflow, rows, cols, m, n, k,
                                                             pattern)
    if pattern is None:
        assert mine["Stall Cycles"] == 0
    else:  # the operand mux's select latency, once: SCALE-Sim does not charge metadata
        kept, block = (int(x) for x in pattern.split(":"))
        assert mine["Decode Stall Cycles"] == math.ceil(math.log2(block - kept + 1))


# ---------------------------------------------------------------- nmsim simulate on SCALE-Sim files


def write_inputs(tmp_path, cfg_text=None, topo_text=None):
    cfg, topo = tmp_path / "scale.cfg", tmp_path / "topo.csv"
    cfg.write_text(cfg_text if cfg_text is not None else
                   scalesim_io.scalesim_config_text("demo", 8, 8, "ws", sparsity=True))
    topo.write_text(topo_text if topo_text is not None else
                    "Layer, M, N, K, Sparsity,\nq, 20, 30, 40,\nk, 7, 9, 100, 2:4,\n")
    return cfg, topo


def test_per_layer_csv_has_scalesims_columns_and_closed_form_cycles(tmp_path, capsys):
    cfg, topo = write_inputs(tmp_path)
    out = tmp_path / "layers.csv"
    assert main(["simulate", "--scalesim-config", str(cfg), "--topology", str(topo),
                 "--per-layer-csv", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [r["Layer name"] for r in rows] == ["q", "k"]
    for row, (m, n, k, pattern) in zip(rows, [(20, 30, 40, None), (7, 9, 100, "2:4")]):
        assert float(row["Compute Cycles"]) == scalesim_compute_cycles("ws", 8, 8, m, n, k,
                                                                       pattern)
        assert float(row["Total Cycles"]) == pytest.approx(
            float(row["Compute Cycles"]) + float(row["Stall Cycles"]))
        assert row["Pattern"] == (pattern or "dense")
    assert rows[1]["Encoding"] == "index" and float(rows[1]["Metadata Bytes"]) > 0
    # SCALE-Sim's mapping efficiency: 40 x 30 stationary weights over 5 x 4 folds of 64 PEs
    assert float(rows[0]["Mapping Efficiency %"]) == pytest.approx(100 * 1200 / (20 * 64))
    assert "q" in capsys.readouterr().out


def test_sparsity_column_is_ignored_without_sparsity_support(tmp_path, capsys):
    cfg, topo = write_inputs(tmp_path, scalesim_io.scalesim_config_text("d", 8, 8, "ws"))
    assert main(["simulate", "--json", "--scalesim-config", str(cfg), "--topology",
                 str(topo)]) == 0
    layers = json.loads(capsys.readouterr().out)["layers"]
    assert layers[1]["Pattern"] == "dense"
    assert layers[1]["Compute Cycles"] == scalesim_compute_cycles("ws", 8, 8, 7, 9, 100)


GOOD_CFG = scalesim_io.scalesim_config_text("demo", 8, 8, "os")
BAD_CONFIGS = [
    (GOOD_CFG.replace("ArrayHeight : 8\n", ""), "ArrayHeight", None),
    (GOOD_CFG.replace("ArrayWidth : 8", "ArrayWidth : eight"), "ArrayWidth", 6),
    (GOOD_CFG.replace("IfmapSramSzkB : 1024", "IfmapSramSzkB : 0"), "IfmapSramSzkB", 7),
    (GOOD_CFG.replace("Dataflow : os", "Dataflow : rs"), "Dataflow", 14),
    (GOOD_CFG.replace("InterfaceBandwidth : CALC", "InterfaceBandwidth : USER").replace(
        "Bandwidth : 10", "Bandwidth : fast"), "Bandwidth", 13),
]
BAD_TOPOLOGIES = [
    ("Layer, M, N, K,\nq, 20, 30,\n", "expected name, M, N, K", 2),
    ("Layer, M, N, K,\nq, 20, 30, 40,\nk, 7, x, 100,\n", "N must be a positive integer", 3),
    ("Layer, M, N, K,\nq, 0, 30, 40,\n", "M must be a positive integer", 2),
    ("Layer, M, N, K,\nq, 20, 30, 40, 4:2,\n", "sparsity", 2),
    ("Layer, M, N, K,\n\n", "no layers", 2),
]


def run_bad(tmp_path, capsys, cfg_text=None, topo_text=None):
    cfg, topo = write_inputs(tmp_path, cfg_text, topo_text)
    out = tmp_path / "layers.csv"
    code = main(["simulate", "--scalesim-config", str(cfg), "--topology", str(topo),
                 "--per-layer-csv", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1
    assert not out.exists() and not (tmp_path / "layers.csv.tmp").exists()
    return err, cfg, topo


@pytest.mark.parametrize(("text", "word", "line"), BAD_CONFIGS)
def test_a_bad_config_is_one_line_naming_file_and_line(tmp_path, capsys, text, word, line):
    err, cfg, _ = run_bad(tmp_path, capsys, cfg_text=text)
    assert word in err and str(cfg) in err
    if line is not None:
        assert f"{cfg}:{line}:" in err
        assert word in text.splitlines()[line - 1]


@pytest.mark.parametrize(("text", "words", "line"), BAD_TOPOLOGIES)
def test_a_bad_topology_is_one_line_naming_file_and_line(tmp_path, capsys, text, words, line):
    err, _, topo = run_bad(tmp_path, capsys, cfg_text=GOOD_CFG, topo_text=text)
    assert words in err and f"{topo}:{line}:" in err


def test_a_file_nmsim_did_not_write_is_not_overwritten(tmp_path, capsys):
    cfg, topo = write_inputs(tmp_path)
    mine = tmp_path / "notes.csv"
    mine.write_text("my,own,data\n")
    code = main(["simulate", "--scalesim-config", str(cfg), "--topology", str(topo),
                 "--per-layer-csv", str(mine)])
    assert code == 2 and "not written by nmsim" in capsys.readouterr().err
    assert mine.read_text() == "my,own,data\n"


def test_topology_without_config_is_refused(tmp_path, capsys):
    _, topo = write_inputs(tmp_path)
    assert main(["simulate", "--topology", str(topo)]) == 2
    assert "--scalesim-config" in capsys.readouterr().err
