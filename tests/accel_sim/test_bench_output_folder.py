"""``python -m accel_sim.bench --out`` never costs a user a file: a folder it did not write is
refused before any benchmark runs, and the committed report folder is one it may refresh."""

from pathlib import Path

import pytest

from accel_sim import bench
from accel_sim.output_folder import BENCH_REPORT, check_output_folder

REPO = Path(__file__).resolve().parents[2]


def _poison(*_args, **_kwargs):
    raise AssertionError("a benchmark ran although the output folder is refused")


@pytest.mark.parametrize("name", ["notes.txt", "summary.md"])
def test_user_folder_is_refused_before_benchmarks_and_left_intact(tmp_path, monkeypatch, capsys,
                                                                 name):
    for function in ("bench_speed", "bench_area", "bench_patterns", "bench_decoders"):
        monkeypatch.setattr(bench, function, _poison)
    user = tmp_path / "documents"
    user.mkdir()
    (user / name).write_text("the user's own words")
    assert bench.main(["--out", str(user)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "did not write" in error
    assert [p.name for p in user.iterdir()] == [name]
    assert (user / name).read_text() == "the user's own words"


def test_a_file_given_as_out_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "bench_speed", _poison)
    target = tmp_path / "report"
    target.write_text("keep")
    with pytest.raises(ValueError, match="not a folder"):
        bench.write_report(target)
    assert target.read_text() == "keep"


def test_committed_report_folder_is_marked_as_this_benchmark():
    folder = REPO / "reports" / "accel_sim"
    listed = check_output_folder(folder, BENCH_REPORT)
    present = sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    assert sorted(listed) == present
