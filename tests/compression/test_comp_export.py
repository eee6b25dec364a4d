"""`nmsim export`: the folder transformers loads computes the pruned model's logits exactly, its
compressed-tensors description reads back, its masks drive `nmsim prune --masks-from`, and bad
input is one line, exit 2, nothing written."""

import json

import numpy as np
import pytest
import torch

from compression import prune_output
from compression.criteria import Salient, Target
from compression.job import prune_and_evaluate
from compression.pipeline import PruneConfig
from compression.prune_output import OutputWriter
from compression.sparsegpt import sparsegpt_prune
from nmsim.cli import main
from workloads.loading import load_model, save_random_llama

RECIPES = {
    "2:4 wanda": PruneConfig(Target.parse("2:4"), "wanda"),
    "8:16 magnitude": PruneConfig(Target.parse("8:16"), "magnitude"),
    "4:8 sparsegpt, 16:64 side-car, mean-var, equalized": PruneConfig(
        Target.parse("4:8"), "sparsegpt", Salient.parse("16:64"), variance_correction=True,
        match_mean=True, equalize_alpha=0.5),
}


def pruned_in_memory(folder, cfg, out):
    """Prune the tiny model with the recipe, written to ``out``; the pruned model in memory."""
    loaded = load_model(folder)
    calib = np.random.default_rng(0).integers(0, loaded.model.config.vocab_size, (4, 32))
    with OutputWriter(out) as writer:
        metrics, records = prune_and_evaluate(loaded, cfg, calib, None, progress=False,
                                              writer=writer)
        writer.commit(records, metrics)
    return loaded.model


@pytest.mark.parametrize("name", list(RECIPES))
def test_exported_model_computes_the_pruned_models_logits(tiny_folder, tmp_path, name):
    from compressed_tensors.config import DenseSparsityConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = RECIPES[name]
    pruned = pruned_in_memory(tiny_folder, cfg, tmp_path / "pruned")
    assert main(["export", str(tmp_path / "pruned"), "--out", str(tmp_path / "hf")]) == 0
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    ids = torch.from_numpy(np.random.default_rng(1).integers(0, 300, (2, 24)))
    with torch.no_grad():
        assert torch.equal(exported(ids).logits, pruned(ids).logits)
    assert AutoTokenizer.from_pretrained(tmp_path / "hf")("The tower")["input_ids"]
    description = json.loads((tmp_path / "hf" / "config.json").read_text())["quantization_config"]
    assert description["quant_method"] == "compressed-tensors"
    sparsity = DenseSparsityConfig.model_validate(description["sparsity_config"])
    if cfg.salient is None:  # every tiny dimension is a multiple of M: exactly N of M kept
        assert sparsity.sparsity_structure == str(cfg.target)
        assert sparsity.global_sparsity == pytest.approx(1 - cfg.target.density)
    else:
        assert sparsity.sparsity_structure == "unstructured"
        zeros = [float((m.weight == 0).float().mean()) for n, m in exported.named_modules()
                 if n.startswith("model.layers.") and isinstance(m, torch.nn.Linear)]
        assert sparsity.global_sparsity == pytest.approx(np.mean(zeros), abs=0.02)


def test_masks_from_an_export_are_reused_exactly(tiny_folder, text_files, tmp_path):
    pruned_in_memory(tiny_folder, RECIPES["2:4 wanda"], tmp_path / "wanda")
    assert main(["export", str(tmp_path / "wanda"), "--out", str(tmp_path / "hf")]) == 0
    for method in ("magnitude", "sparsegpt"):
        out = tmp_path / method
        assert main(["prune", "--model", str(tiny_folder), "--pattern", "2:4", "--method",
                     method, "--calib", str(text_files / "calib.txt"), "--eval",
                     str(text_files / "eval.txt"), "--seqlen", "32",
                     "--calib-samples", "4", "--no-eval", "--masks-from", str(tmp_path / "hf"),
                     "--out", str(out)]) == 0
        want, _ = prune_output.load_masks(tmp_path / "wanda")
        got, _ = prune_output.load_masks(out)
        assert want.keys() == got.keys()
        assert all(np.array_equal(want[n], got[n]) for n in want)


def test_sparsegpt_with_its_own_mask_fixed_reconstructs_the_same_weight():
    rng = np.random.default_rng(2)
    x = torch.from_numpy(rng.standard_normal((256, 48)).astype(np.float32))
    w = torch.from_numpy(rng.standard_normal((12, 48)).astype(np.float32))
    chosen, keep = sparsegpt_prune(w, x.T @ x, Target.parse("2:4"), blocksize=16)
    fixed, same = sparsegpt_prune(w, x.T @ x, Target.parse("2:4"), blocksize=16, keep=keep)
    assert torch.equal(same, keep) and torch.equal(fixed, chosen)


def export_error(args, capsys):
    assert main(args) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1
    return errors[0]


def test_export_bad_input_is_one_line_and_writes_nothing(tiny_folder, tmp_path, capsys):
    (tmp_path / "plain").mkdir()
    message = export_error(["export", str(tmp_path / "plain"), "--out", str(tmp_path / "a")],
                           capsys)
    assert "not a prune output" in message and not (tmp_path / "a").exists()
    pruned_in_memory(tiny_folder, PruneConfig(Target.parse("50%"), "magnitude"),
                     tmp_path / "unstructured")
    message = export_error(["export", str(tmp_path / "unstructured"), "--out",
                            str(tmp_path / "b")], capsys)
    assert "unstructured bulk" in message and not (tmp_path / "b").exists()
    pruned_in_memory(tiny_folder, RECIPES["2:4 wanda"], tmp_path / "ok")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    message = export_error(["export", str(tmp_path / "ok"), "--out", str(tmp_path / "full")],
                           capsys)
    assert "not an empty folder" in message
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full", "ok", "plain", "unstructured"]


@pytest.mark.parametrize("case", ["other model", "other shape", "other pattern",
                                  "not a checkpoint"])
def test_masks_from_a_mismatched_checkpoint_is_refused(tiny_folder, text_files, tmp_path, capsys,
                                                       case):
    pruned_in_memory(tiny_folder, RECIPES["2:4 wanda"], tmp_path / "masks")
    model, pattern, source = str(tiny_folder), "2:4", tmp_path / "masks"
    if case == "other model":  # same shapes, another model
        model = str(save_random_llama(tmp_path / "other" / "another-llama", seed=1))
    elif case == "other shape":  # same name, another shape
        model = str(save_random_llama(tmp_path / "other" / tiny_folder.name, hidden=32))
    elif case == "other pattern":
        pattern = "4:8"
    else:
        source = tiny_folder
    before = sorted(p.name for p in tmp_path.iterdir())
    message = export_error(["prune", "--model", model, "--pattern", pattern, "--method",
                            "magnitude", "--no-eval", "--masks-from", str(source), "--out",
                            str(tmp_path / "run")], capsys)
    assert message.startswith("nmsim prune: error:")
    assert {"other model": "not another-llama", "other shape": "the model's weight", "other pattern": "the recipe asks",
            "not a checkpoint": "neither an nmsim export"}[case] in message
    assert sorted(p.name for p in tmp_path.iterdir()) == before
