"""The ablation runner: its evaluation subset, configuration keys, and resuming a stopped run."""

import numpy as np
import pandas as pd
import pytest

from compression import ablation
from compression.ablation import Protocol, evaluation_subset, recipe, row_key, run_all


@pytest.mark.parametrize("total, count", [(595, 48), (595, 595), (10, 2), (7, 5)])
def test_evaluation_subset_is_evenly_spaced_over_the_split(total, count):
    index = evaluation_subset(np.zeros((total, 4)), count)
    assert len(index) == count and index[0] == 0 and index[-1] == total - 1
    gaps = np.diff(index)
    assert (gaps > 0).all() and gaps.max() - gaps.min() <= 1


def test_evaluation_subset_refuses_impossible_counts():
    with pytest.raises(ValueError, match="2..10"):
        evaluation_subset(np.zeros((10, 4)), 11)


def test_row_key_follows_the_configuration_not_the_label():
    base = row_key(recipe("8:16"), 0, Protocol())
    assert base == row_key(recipe("8:16"), 0, Protocol())
    others = [row_key(recipe("8:16", vc=False), 0, Protocol()),
              row_key(recipe("8:16", salient_dtype="float16"), 0, Protocol()),
              row_key(recipe("8:16"), 50, Protocol()),
              row_key(recipe("8:16"), 0, Protocol(eval_windows=Protocol().eval_windows + 1)),
              row_key(recipe("8:16"), 0, Protocol(calib_samples=Protocol().calib_samples + 1)),
              row_key(None, 0, Protocol())]
    assert len({base, *others}) == len(others) + 1


def test_row_key_names_data_files_by_content_not_path(tmp_path):
    """A row measured in one clone is found in another; an edited data file is a new row."""
    texts = {"calib": "calibration text\n" * 50, "eval": "test text\n" * 50}
    paths = {}
    for place in ("clone_a", "clone_b"):
        for kind, text in texts.items():
            (tmp_path / place).mkdir(exist_ok=True)
            paths[place, kind] = tmp_path / place / f"{kind}.txt"
            paths[place, kind].write_text(text)

    def key(place):
        return row_key(recipe("8:16"), 0, Protocol(calib_path=paths[place, "calib"],
                                                   eval_path=paths[place, "eval"]))

    assert key("clone_a") == key("clone_b")
    paths["clone_b", "eval"].write_text(texts["eval"] + "one more line\n")
    assert key("clone_a") != key("clone_b")


def test_every_committed_row_is_found_from_this_clone():
    """The committed rows' keys match the run list here (wherever this clone lives), so
    ``python -m compression.ablation report`` rebuilds the committed report."""
    from compression.ablation import OUT_DIR, run_rows, runs

    committed = pd.read_csv(OUT_DIR / "ablation.csv", dtype={"key": str})
    known = {key for run in runs() for _, key, _ in run_rows(run, Protocol())}
    assert set(committed["key"]) <= known


def test_every_run_label_is_unique_and_leave_one_out_removes_one_component():
    runs = ablation.runs()
    labels = [row for run in runs for row, _, _ in ablation.run_rows(run, Protocol())]
    keys = [key for run in runs for _, key, _ in ablation.run_rows(run, Protocol())]
    assert len(set(labels)) == len(set(keys))  # one label per configuration, shared by reruns
    full = recipe("8:16").describe()
    for run in runs:
        if run.group == "leave-one-out" and run.config.target.pattern.m == 16:
            changed = {k for k, v in run.config.describe().items() if full[k] != v}
            assert len(changed) <= 1, (run.label, changed)


def tiny_protocol(text_files):
    return Protocol(calib_samples=4, calib_seqlen=32, eval_seqlen=32, eval_windows=4,
                    finetune_steps=2, calib_path=str(text_files / "calib.txt"),
                    eval_path=str(text_files / "eval.txt"))


def test_select_runs_by_exact_label_keeps_the_given_order():
    labels = ["8:16 full, no EQ +FT50", "dense +FT50 (control)", "8:16 full, no EQ"]
    assert [r.label for r in ablation.select_runs(labels=labels)] == labels
    # A substring selects every run containing it: the plain row and its fine-tuned twin.
    assert {r.label for r in ablation.select_runs(only=["8:16 full, no EQ"])} == set(labels) - {
        "dense +FT50 (control)"}
    # Worker shares of an exact list partition it.
    shares = [ablation.select_runs((i, 3), labels=labels) for i in range(3)]
    assert sorted(r.label for share in shares for r in share) == sorted(labels)


@pytest.mark.parametrize("flags", [["--label", "8:16 nonsense"],
                                   ["--label", "8:16 nonsense", "--label", "dense"]])
def test_unknown_label_is_refused_before_any_work(flags, tmp_path, capsys, monkeypatch):
    """A repeated ``--label`` adds to the list (it once kept only the last one)."""
    monkeypatch.setattr(ablation, "run_all", lambda *args, **kwargs: pytest.fail("it ran"))
    with pytest.raises(SystemExit) as stop:
        ablation.main(["run", "--out", str(tmp_path / "out"), *flags])
    assert stop.value.code == 2 and "unknown ablation run '8:16 nonsense'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def measured(tiny_folder, text_files, tmp_path_factory):
    """Four rows of the tiny model: dense and its fine-tune, no-EQ and its fine-tune."""
    out = tmp_path_factory.mktemp("ablation") / "out"
    protocol = tiny_protocol(text_files)
    appended = [run_all(out, protocol, only=["dense"], model=str(tiny_folder)),
                run_all(out, protocol, only=["dense"], model=str(tiny_folder)),
                run_all(out, protocol, only=["8:16 full, no EQ"], model=str(tiny_folder))]
    return out, protocol, appended


def test_run_all_appends_each_row_once_and_resumes(measured):
    out, _, appended = measured
    # Resumed: nothing again; the no-EQ row is measured once though two runs yield it.
    assert appended == [2, 0, 2]
    table = pd.read_csv(out / ablation.CSV_NAME)
    assert sorted(table["label"]) == ["8:16 full, no EQ", "8:16 full, no EQ +FT50", "dense",
                                      "dense +FT50 (control)"]
    assert table["key"].is_unique and (table["windows"] == 4).all()
    windows = pd.read_csv(out / ablation.WINDOWS_NAME)
    for row in table.itertuples():
        mine = windows[windows["key"] == row.key]
        assert mine["tokens"].sum() == row.predicted_tokens
        assert mine["nll"].sum() / row.predicted_tokens == pytest.approx(row.mean_nll, rel=1e-12)
    dense, tuned = (table.set_index("label").loc[name] for name in
                    ("dense", "dense +FT50 (control)"))
    assert tuned["finetune_steps"] == 2 and dense["finetune_steps"] == 0
    assert tuned["perplexity"] != dense["perplexity"]


def test_report_figures_follow_the_per_window_sums(measured):
    from compression.ablation_report import Table, write_report

    out, protocol, _ = measured
    table = Table.read(out, protocol)
    nll = {label: table.nll[label].astype(np.float64) for label in table.rows.index}
    tokens = table.tokens.astype(np.float64)
    for label, row in table.rows.iterrows():
        assert table.ppl(label).estimate == pytest.approx(row["perplexity"], rel=1e-12)
    dense, tuned = "dense", "dense +FT50 (control)"
    base, other = "8:16 full, no EQ", "8:16 full, no EQ +FT50"
    expected = np.exp((nll[other].sum() - nll[base].sum()
                       - (nll[tuned].sum() - nll[dense].sum())) / tokens.sum()) - 1
    net = table.net(base, other, dense, tuned)
    assert net.estimate == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert net.low <= net.estimate <= net.high
    text = write_report(out, protocol).read_text()
    assert "| dense +FT50 (control) | 1.0000 |" in text
    assert "- 8:16 full, no FT\n" in text  # listed under rows not run
    assert "- dense model, fine-tuned: " in text
    assert (out / "ablation.png").is_file() and (out / "ablation.svg").is_file()
