"""The prune output is streamed: each layer reaches disk and leaves memory before the next is
pruned, and what is read back equals the in-memory compression bit for bit."""

import gc
import json
import weakref

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from compression import pipeline, prune_output
from compression.criteria import Salient, Target
from compression.job import prune_and_evaluate
from compression.pipeline import PruneConfig, compress_model, prune_model
from compression.prune_output import OutputWriter
from nmsim.cli import main
from workloads.loading import LoadedModel, save_random_llama


def calib_windows(vocab, count=4, seqlen=32):
    return np.random.default_rng(0).integers(0, vocab, (count, seqlen))


@pytest.fixture(scope="module")
def three_layer_folder(tmp_path_factory):
    return save_random_llama(tmp_path_factory.mktemp("three") / "llama", seed=1, layers=3)


def test_each_layer_is_on_disk_and_out_of_memory_before_the_next_is_pruned(
        three_layer_folder, tmp_path, monkeypatch):
    from workloads.loading import load_model

    loaded = load_model(three_layer_folder)
    built = []  # a weak reference to every SparseWeight the pipeline builds
    seen = []  # per prune_weight call: (live SparseWeights, layer files on disk)
    compress_weight, prune_weight = pipeline.compress_weight, pipeline.prune_weight

    def spy_compress(*args, **kwargs):
        sparse, stored = compress_weight(*args, **kwargs)
        built.append(weakref.ref(sparse))
        return sparse, stored

    def spy_prune(*args, **kwargs):
        gc.collect()
        files = sorted(p.name for p in (writer.staging / "layers").glob("*[0-9].safetensors"))
        seen.append((sum(ref() is not None for ref in built), files))
        return prune_weight(*args, **kwargs)

    monkeypatch.setattr(pipeline, "compress_weight", spy_compress)
    monkeypatch.setattr(pipeline, "prune_weight", spy_prune)
    cfg = PruneConfig(Target.parse("2:4"), "wanda")
    calib = calib_windows(loaded.model.config.vocab_size)
    with OutputWriter(tmp_path / "out") as writer:
        metrics, records = prune_and_evaluate(loaded, cfg, calib, None, progress=False,
                                              writer=writer)
        writer.commit(records, metrics)
    per_layer = 7
    assert len(seen) == 3 * per_layer
    for call, (live, files) in enumerate(seen):
        layer = call // per_layer
        assert live == 0  # no earlier layer's compressed weights are still referenced
        assert files == [f"{i:05d}.safetensors" for i in range(layer)]
    assert len(list((tmp_path / "out" / "layers").iterdir())) == 6


@pytest.mark.parametrize("dtype, release", [(torch.float16, False), (torch.float32, False),
                                            (torch.float16, True)])
def test_streamed_folder_equals_the_in_memory_compression_bit_for_bit(tiny_folder, tmp_path,
                                                                      dtype, release):
    from workloads.loading import load_model

    cfg = PruneConfig(Target.parse("2:4"), "sparsegpt", Salient.parse("8:32"),
                      variance_correction=True, match_mean=True)

    def fresh():
        loaded = load_model(tiny_folder)
        loaded.model.to(dtype)
        return loaded

    reference_model = fresh().model
    calib = calib_windows(reference_model.config.vocab_size)
    outcome = prune_model(reference_model, calib, cfg, progress=False)
    reference = compress_model(reference_model, outcome, cfg)

    streamed = fresh()
    with OutputWriter(tmp_path / "out") as writer:
        metrics, records = prune_and_evaluate(streamed, cfg, calib, None, progress=False,
                                              writer=writer, release_layers=release)
        writer.commit(records, metrics)
    loaded = prune_output.load_compressed(tmp_path / "out")
    dense = fresh().model
    masks, biases = prune_output.load_masks(tmp_path / "out")
    assert set(loaded) == set(reference) == set(biases)
    for name, ref in reference.items():
        for part in ("bulk", "salient"):
            for key, array in getattr(ref, part).arrays().items():
                got = getattr(loaded[name], part).arrays()[key]
                assert got.dtype == array.dtype
                np.testing.assert_array_equal(got.view(np.uint8), array.view(np.uint8))
        np.testing.assert_array_equal(masks[name], outcome.masks[name].bulk)
        np.testing.assert_array_equal(masks[f"{name}.salient"], outcome.masks[name].salient)
        module = streamed.model.get_submodule(name)
        if release:  # the written layers were not kept: the fp16 model is still the dense one
            assert torch.equal(module.weight, dense.get_submodule(name).weight)
            continue
        stored = torch.from_numpy(loaded[name].to_dense()).to(dtype)
        assert torch.equal(module.weight.detach(), stored)  # the evaluated weight is the stored one
        np.testing.assert_array_equal(biases[name], module.bias.detach().float().numpy())
        assert torch.equal(module.weight.detach(), reference_model.get_submodule(name).weight)
    assert metrics["compressed_bits_per_weight"] == pytest.approx(
        8 * sum(w.nbytes for w in reference.values())
        / sum(w.shape[0] * w.shape[1] for w in reference.values()))


def test_fine_tuned_run_writes_every_layer_after_training(tiny_model, tmp_path):
    model = tiny_model().float()
    loaded = LoadedModel(model, None, "tiny", "test")
    cfg = PruneConfig(Target.parse("2:4"), "magnitude")
    calib = calib_windows(model.config.vocab_size, count=2, seqlen=16)
    with OutputWriter(tmp_path / "out") as writer:
        metrics, records = prune_and_evaluate(loaded, cfg, calib, None, finetune_steps=2,
                                              progress=False, writer=writer)
        writer.commit(records, metrics)
    weights = prune_output.load_compressed(tmp_path / "out")
    assert len(weights) == 14 and "finetune_s" in metrics["timings"]
    for name, weight in weights.items():  # stored after training: equal to the model's weight
        np.testing.assert_array_equal(weight.to_dense(),
                                      model.get_submodule(name).weight.detach().numpy())


def test_figure_before_fine_tune_is_that_of_the_same_prune_without_one(tiny_model):
    """One prune serves both rows: the pre-fine-tune perplexity equals a prune-only run's."""
    cfg = PruneConfig(Target.parse("2:4"), "wanda", salient=Salient.parse("4:16"))
    vocab = tiny_model().config.vocab_size
    calib, windows = calib_windows(vocab, count=2, seqlen=16), calib_windows(vocab, 3, 16)
    plain, _ = prune_and_evaluate(LoadedModel(tiny_model().float(), None, "tiny", "test"), cfg,
                                  calib, windows, progress=False)
    tuned, _ = prune_and_evaluate(LoadedModel(tiny_model().float(), None, "tiny", "test"), cfg,
                                  calib, windows, finetune_steps=3, progress=False,
                                  eval_before_finetune=True)
    assert tuned["before_finetune"]["perplexity"] == pytest.approx(plain["perplexity"], rel=1e-6)
    assert tuned["perplexity"] != pytest.approx(plain["perplexity"], rel=1e-6)
    assert "eval_before_finetune_s" in tuned["timings"]
    with pytest.raises(ValueError, match="before the fine-tune"):
        prune_and_evaluate(LoadedModel(tiny_model().float(), None, "tiny", "test"), cfg, calib,
                           None, finetune_steps=1, progress=False, eval_before_finetune=True)


@settings(max_examples=25, deadline=None)
@given(rows=st.integers(1, 9), cols=st.integers(1, 40), seed=st.integers(0, 2**16))
def test_bit_packed_masks_round_trip(tmp_path_factory, rows, cols, seed):
    rng = np.random.default_rng(seed)
    masks = {"a": rng.random((rows, cols)) < 0.5, "a.salient": rng.random((rows, cols)) < 0.1}
    bias = {"a": rng.standard_normal(rows).astype(np.float32)}
    out = tmp_path_factory.mktemp("masks") / "out"
    with OutputWriter(out) as writer:
        writer.add_layer(0, {}, masks, bias)
        writer.commit([], {})
    got, got_bias = prune_output.load_masks(out)
    assert set(got) == set(masks) and got["a"].dtype == bool
    for name, mask in masks.items():
        np.testing.assert_array_equal(got[name], mask)
    np.testing.assert_array_equal(got_bias["a"], bias["a"])
    assert prune_output.compressed_files(out) == [] and prune_output.bulk_pattern(out) is None


def test_an_error_inside_the_writer_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), OutputWriter(tmp_path / "out") as writer:
        writer.add_layer(0, {}, {"a": np.ones((2, 3), bool)}, {})
        raise RuntimeError("pruning failed")
    assert list(tmp_path.iterdir()) == []
    index = {"format": prune_output.OUTPUT_FORMAT, "version": 99, "layers": []}
    (tmp_path / "index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="version 99 is not supported"):
        prune_output.read_index(tmp_path)


def test_cli_mean_matching_is_recorded_and_stored(tiny_folder, text_files, tmp_path):
    out = tmp_path / "vc"
    assert main(["prune", "--model", str(tiny_folder), "--pattern", "2:4", "--method", "wanda",
                 "--variance-correction", "mean-var", "--calib", str(text_files / "calib.txt"),
                 "--seqlen", "32", "--calib-samples", "4", "--no-eval", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["variance_correction"] and metrics["variance_correction_match_mean"]
    _, biases = prune_output.load_masks(out)
    assert len(biases) == 14 and all(np.isfinite(b).all() for b in biases.values())
    with pytest.raises(SystemExit) as exit_info:
        main(["prune", "--model", str(tiny_folder), "--pattern", "2:4",
              "--variance-correction", "mean", "--out", str(tmp_path / "bad")])
    assert exit_info.value.code == 2 and not (tmp_path / "bad").exists()
