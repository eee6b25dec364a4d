"""`nmsim prune` end to end on the tiny model, and its bad-input contract (exit 2, nothing left)."""

import json

import numpy as np
import pandas as pd
import pytest

from compression import formats, prune_output
from nmsim.cli import main


def prune_args(folder, text_files, out, *extra):
    return ["prune", "--model", str(folder), "--calib", str(text_files / "calib.txt"),
            "--eval", str(text_files / "eval.txt"), "--seqlen", "32", "--calib-samples", "4",
            "--out", str(out), *extra]


def test_prune_writes_the_contract_folder(tiny_folder, text_files, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(prune_args(tiny_folder, text_files, out, "--pattern", "2:4", "--method",
                           "sparsegpt", "--salient", "16:256", "--variance-correction",
                           "--equalize", "0.5"))
    assert code == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == [
        "index.json", "layer_stats.csv", "layers", "metrics.json"]
    assert sorted(p.name for p in (out / "layers").iterdir()) == [
        "00000.masks.safetensors", "00000.safetensors", "00001.masks.safetensors",
        "00001.safetensors"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["pattern"] == "2:4" and metrics["method"] == "sparsegpt"
    assert metrics["seqlen"] == 32 and metrics["windows"] >= 1
    assert np.isfinite(metrics["perplexity"]) and metrics["peak_rss_mib"] > 0
    assert metrics["salient"] == "16:256" and metrics["equalize_alpha"] == 0.5
    assert metrics["variance_correction"] and not metrics["variance_correction_match_mean"]
    assert {"load_s", "prune_s", "write_s", "eval_s"} <= set(metrics["timings"])
    weights = prune_output.load_compressed(out)
    masks, biases = prune_output.load_masks(out)
    assert biases == {}
    assert "model.layers.0.self_attn.q_proj" in weights
    for name, weight in weights.items():
        np.testing.assert_array_equal(weight.bulk.mask(), masks[name])
        assert weight.salient.pattern == formats.Pattern(16, 256)
        np.testing.assert_array_equal(weight.salient.mask(), masks[f"{name}.salient"])
    stats = pd.read_csv(out / "layer_stats.csv")
    assert len(stats) == len(weights) and (stats["relative_output_error"] >= 0).all()
    assert not list(tmp_path.glob(".run.*"))


def test_magnitude_without_eval_needs_no_text(tiny_folder, tmp_path):
    out = tmp_path / "mag"
    assert main(["prune", "--model", str(tiny_folder), "--pattern", "8:16", "--method",
                 "magnitude", "--no-eval", "--out", str(out)]) == 0
    assert "perplexity" not in json.loads((out / "metrics.json").read_text())


@pytest.mark.parametrize("change, message", [
    ({"--model": "missing-folder"}, "neither"),
    ({"--pattern": "8:4"}, "invalid pattern"),
    ({"--pattern": "3:5", "--salient": "16:256"}, "not a multiple"),
    ({"--calib": "empty.txt"}, "empty"),
    ({"--eval": "short.txt"}, "too short"),
    ({"--calib": "nowhere.txt"}, "does not exist"),
    ({"--equalize": "1.5"}, "alpha"),
    ({"--variance-correction": "var", "--vc-gain": "median"}, "unknown variance-correction gain"),
    ({"--vc-scope": "output-projections"}, "needs variance correction"),
    ({"--salient-dtype": "float16"}, "side-car value dtype"),
    ({"--salient-unstructured": "16:256", "--salient-dtype": "float16"}, "side-car value dtype"),
    ({"--observe-dtype": "bfloat16", "--propagate": "dense"},
     "a bfloat16 observing forward needs --propagate pruned"),
    ({"--finetune-steps": "1", "--finetune-data": "eval.txt"},
     "fine-tune window 0 of 4 comes from the evaluation (test) text"),
])
def test_bad_input_exits_2_and_leaves_nothing(tiny_folder, text_files, tmp_path, capsys, change,
                                              message):
    out = tmp_path / "run"
    args = prune_args(tiny_folder, text_files, out, "--pattern", "2:4")
    for flag, value in change.items():
        if value.endswith(".txt"):
            value = str(text_files / value)
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    assert main(args) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0].startswith("nmsim prune: error:")
    assert message in errors[0]
    assert list(tmp_path.iterdir()) == []


def test_figure_before_fine_tune_needs_a_fine_tune(tiny_folder, text_files, tmp_path, capsys):
    args = prune_args(tiny_folder, text_files, tmp_path / "run", "--pattern", "2:4",
                      "--eval-before-finetune")
    assert main(args) == 2
    assert "needs --finetune-steps" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_existing_output_folder_is_refused(tiny_folder, text_files, tmp_path, capsys):
    (tmp_path / "run").mkdir()
    assert main(prune_args(tiny_folder, text_files, tmp_path / "run", "--pattern", "2:4")) == 2
    assert "already exists" in capsys.readouterr().err


def test_fp16_side_car_and_least_squares_correction_are_recorded_and_stored(
        tiny_folder, text_files, tmp_path, capsys):
    """The side-car's values are stored in fp16 (half the fp32 payload), and the options reach
    the recorded configuration."""
    runs = {}
    for dtype in ("float32", "float16"):
        out = tmp_path / dtype
        code = main(prune_args(tiny_folder, text_files, out, "--pattern", "8:16", "--salient",
                               "16:64", "--salient-dtype", dtype, "--variance-correction",
                               "--vc-gain", "least-squares", "--vc-scope",
                               "output-projections", "--no-eval"))
        assert code == 0, capsys.readouterr().err
        runs[dtype] = out
    metrics = json.loads((runs["float16"] / "metrics.json").read_text())
    assert metrics["salient_dtype"] == "float16"
    assert metrics["variance_correction_gain"] == "least-squares"
    assert metrics["variance_correction_scope"] == "output-projections"
    wide, half = (prune_output.load_compressed(runs[d]) for d in ("float32", "float16"))
    for name, weight in half.items():
        side, side32 = weight.salient, wide[name].salient
        assert side.values.dtype == np.float16 and side32.values.dtype == np.float32
        assert side32.nbytes - side.nbytes == 2 * side.values.size
        np.testing.assert_array_equal(side.mask(), side32.mask())
