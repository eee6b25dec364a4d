"""Calibration and fine-tune windows never come from the evaluation (test) text: the span share
against a brute-force reference, and `nmsim prune` refusing test text under any name."""

import shutil

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compression.leakage import share_in_test
from nmsim.cli import main


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(2, 6), st.integers(8, 20))
def test_span_share_matches_brute_force(seed, span, width):
    rng = np.random.default_rng(seed)
    test_ids = rng.integers(0, 5, 60)  # a small vocabulary: many spans recur by chance
    windows = np.stack([rng.integers(0, 5, width), test_ids[10 : 10 + width],
                        np.concatenate([test_ids[:width // 2], rng.integers(0, 5, width - width // 2)])])
    known = {tuple(test_ids[i : i + span]) for i in range(len(test_ids) - span + 1)}
    want = [np.mean([tuple(w[i : i + span]) in known for i in range(width - span + 1)])
            for w in windows]
    np.testing.assert_allclose(share_in_test(windows, test_ids, span), want)


def test_prune_refuses_calibration_from_the_test_text(tiny_folder, text_files, tmp_path, capsys):
    copy = tmp_path / "renamed.txt"
    shutil.copyfile(text_files / "eval.txt", copy)
    for calib in (text_files / "eval.txt", copy):
        args = ["prune", "--model", str(tiny_folder), "--pattern", "2:4", "--method", "wanda",
                "--calib", str(calib), "--eval", str(text_files / "eval.txt"), "--seqlen", "32",
                "--calib-samples", "4", "--finetune-steps", "2", "--out", str(tmp_path / "run")]
        assert main(args) == 2
        errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
        assert len(errors) == 1 and "comes from the evaluation (test) text" in errors[0]
        assert sorted(p.name for p in tmp_path.iterdir()) == ["renamed.txt"]


def test_fine_tune_text_from_the_test_split_is_refused(tiny_folder, text_files):
    """DataConfig.finetune checks its own text, not only the calibration windows."""
    from compression.job import DataConfig
    from workloads.loading import load_model

    tokenizer = load_model(tiny_folder).tokenizer
    data = DataConfig(str(text_files / "calib.txt"), str(text_files / "eval.txt"), 4, 32, 32,
                      finetune_path=str(text_files / "eval.txt"))
    with pytest.raises(ValueError, match="fine-tune window 0 of 4 comes from the evaluation"):
        data.finetune(tokenizer)
    other = DataConfig(str(text_files / "calib.txt"), str(text_files / "eval.txt"), 4, 32, 32,
                       finetune_path=str(text_files / "calib.txt"))
    assert other.finetune(tokenizer).shape == (4, 32)
    np.testing.assert_array_equal(DataConfig(str(text_files / "calib.txt"),
                                             str(text_files / "eval.txt"), 4, 32, 32)
                                  .finetune(tokenizer), other.calibration(tokenizer))
