"""Layer-wise pruning of a tiny LLaMa-2-structured model: masks, side-cars, stored weights."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from compression.criteria import Salient, Target
from compression.finetune import finetune
from compression.formats import CSRTensor, NMTensor, check_nm_mask
from compression.perplexity import perplexity
from compression.pipeline import PruneConfig, compress_model, prune_model


def calib_windows(vocab, count=4, seqlen=32, seed=0):
    return np.random.default_rng(seed).integers(0, vocab, (count, seqlen))


def linear_weights(model):
    return {n: m.weight.detach().float().clone() for n, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and ".layers." in n}


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
@pytest.mark.parametrize("pattern", ["2:4", "8:16"])
def test_prune_model_makes_valid_nm_masks_and_stores_what_it_evaluates(tiny_model, method,
                                                                        pattern):
    model = tiny_model()
    dense = linear_weights(model)
    cfg = PruneConfig(Target.parse(pattern), method)
    outcome = prune_model(model, calib_windows(model.config.vocab_size), cfg, progress=False)
    compressed = compress_model(model, outcome, cfg)
    assert set(compressed) == set(dense) == set(outcome.masks)
    for name, sparse in compressed.items():
        mask = outcome.masks[name].bulk
        check_nm_mask(mask, pattern)
        stored = model.get_submodule(name).weight.detach().float().numpy()
        np.testing.assert_array_equal(sparse.to_dense(), stored)
        assert (stored[~mask] == 0).all()
        if method != "sparsegpt":  # no reconstruction: kept values are the dense ones (fp16)
            np.testing.assert_array_equal(stored[mask], dense[name].numpy()[mask])
    if method == "magnitude":  # magnitude alone needs no calibration
        prune_model(tiny_model(), None, cfg, progress=False)


def test_sparsegpt_beats_wanda_on_calibration_reconstruction(tiny_model):
    calib = calib_windows(tiny_model().config.vocab_size, count=8)
    errors = {}
    for method in ("wanda", "sparsegpt"):
        outcome = prune_model(tiny_model(), calib, PruneConfig(Target.parse("2:4"), method),
                              progress=False)
        # layer 0 sees identical (embedding) inputs under both methods: a like-for-like check
        errors[method] = [r["relative_output_error"] for r in outcome.records if r["layer"] == 0]
    assert all(s < w for s, w in zip(errors["sparsegpt"], errors["wanda"]))


def test_salient_side_car_adds_the_dense_outliers(tiny_model):
    model = tiny_model()
    dense = linear_weights(model)
    for unstructured in (False, True):
        model = tiny_model()
        cfg = PruneConfig(Target.parse("2:4"), "wanda",
                          Salient.parse("8:32", unstructured=unstructured))
        outcome = prune_model(model, calib_windows(model.config.vocab_size), cfg, progress=False)
        compressed = compress_model(model, outcome, cfg)
        for name, sparse in compressed.items():
            sal = outcome.masks[name].salient
            assert isinstance(sparse.salient, CSRTensor if unstructured else NMTensor)
            if not unstructured:
                check_nm_mask(sal, "8:32", tail="pad")
                assert sparse.salient.encoding == "index" and sparse.salient.dtype == "float32"
            np.testing.assert_array_equal(sparse.salient.to_dense()[sal], dense[name].numpy()[sal])
            assert sal.sum() == sal.shape[0] * sal.shape[1] // 4
            union = sparse.to_dense() != 0
            assert not (union & ~outcome.masks[name].union).any()


def test_unstructured_target_keeps_the_density_and_has_no_nm_form(tiny_model):
    model = tiny_model()
    cfg = PruneConfig(Target.parse("50%"), "wanda")
    outcome = prune_model(model, calib_windows(model.config.vocab_size), cfg, progress=False)
    assert compress_model(model, outcome, cfg) == {}
    for mask in outcome.masks.values():
        assert (mask.bulk.sum(1) == mask.bulk.shape[1] // 2).all()


def test_variance_correction_and_equalization_change_only_what_they_should(tiny_model):
    calib = calib_windows(tiny_model().config.vocab_size)
    plain = prune_model(tiny_model(), calib, PruneConfig(Target.parse("2:4"), "wanda"),
                        progress=False)
    model = tiny_model()
    corrected = prune_model(model, calib, PruneConfig(Target.parse("2:4"), "wanda",
                                                      variance_correction=True), progress=False)
    name = "model.layers.0.self_attn.q_proj"  # layer 0: same inputs, so the same mask
    np.testing.assert_array_equal(plain.masks[name].bulk, corrected.masks[name].bulk)
    model = tiny_model()
    norm_before = model.model.layers[0].input_layernorm.weight.detach().clone()
    prune_model(model, calib, PruneConfig(Target.parse("2:4"), "wanda", equalize_alpha=0.5),
                progress=False)
    assert not torch.equal(model.model.layers[0].input_layernorm.weight, norm_before)
    assert model.model.layers[0].input_layernorm.weight.dtype == torch.float16


def test_config_rejects_bad_recipes():
    with pytest.raises(ValueError, match="method"):
        PruneConfig(Target.parse("2:4"), "random")
    with pytest.raises(ValueError, match="multiple"):
        PruneConfig(Target.parse("3:5"), "wanda", Salient.parse("16:256"))
    with pytest.raises(ValueError, match="alpha"):
        PruneConfig(Target.parse("2:4"), "wanda", equalize_alpha=2.0)
    with pytest.raises(ValueError, match="part of variance correction"):
        PruneConfig(Target.parse("2:4"), "wanda", match_mean=True)
    with pytest.raises(ValueError, match="calibration"):
        prune_model(None, None, PruneConfig(Target.parse("2:4"), "wanda"))


@torch.no_grad()
def test_perplexity_matches_a_float64_reference(tiny_model):
    model = tiny_model().float()
    windows = calib_windows(model.config.vocab_size, count=3, seqlen=20, seed=1)
    got = perplexity(model, windows, batch_size=2, progress=False)
    nll = 0.0
    for window in windows:
        ids = torch.from_numpy(window[None])
        logp = F.log_softmax(model(ids).logits[0].double(), dim=-1)
        nll -= sum(float(logp[t, window[t + 1]]) for t in range(len(window) - 1))
    tokens = 3 * 19
    assert got["predicted_tokens"] == tokens and got["windows"] == 3 and got["seqlen"] == 20
    assert got["perplexity"] == pytest.approx(math.exp(nll / tokens), rel=1e-6)


def test_finetune_keeps_masks_and_lowers_the_loss(tiny_model):
    model = tiny_model().float()
    calib = calib_windows(model.config.vocab_size, count=2, seqlen=16)
    cfg = PruneConfig(Target.parse("2:4"), "magnitude")
    outcome = prune_model(model, None, cfg, progress=False)
    masks = {n: m.union for n, m in outcome.masks.items()}
    losses = finetune(model, masks, calib, steps=12, lr=3e-3, batch_size=2, progress=False)
    assert losses[-1] < losses[0]
    for name, mask in masks.items():
        weight = model.get_submodule(name).weight.detach().numpy()
        assert (weight[~mask] == 0).all()
        check_nm_mask(mask, "2:4")
    assert not any(p.requires_grad for p in model.parameters())
    with pytest.raises(ValueError, match="fp32"):
        finetune(tiny_model(), masks, calib, steps=1)


@torch.no_grad()
def test_variance_correction_matches_the_dense_output_moments(tiny_model):
    """Layer 0's q_proj sees the same inputs pruned or not: its outputs' per-channel variance
    (and, with mean matching, mean) over the calibration tokens equal the dense layer's."""
    dense = tiny_model().float()
    calib = calib_windows(dense.config.vocab_size)
    name = "model.layers.0.self_attn.q_proj"
    inputs = []
    handle = dense.get_submodule(name).register_forward_pre_hook(
        lambda mod, args: inputs.append(args[0].reshape(-1, args[0].shape[-1])))
    dense(torch.from_numpy(calib), use_cache=False)
    handle.remove()
    x = torch.cat(inputs).double()
    reference = x @ dense.get_submodule(name).weight.double().T
    for match_mean in (False, True):
        model = tiny_model().float()
        prune_model(model, calib, PruneConfig(Target.parse("2:4"), "wanda",
                                              variance_correction=True, match_mean=match_mean),
                    progress=False)
        linear = model.get_submodule(name)
        out = x @ linear.weight.double().T
        if match_mean:
            out = out + linear.bias.double()
        else:
            assert linear.bias is None
        torch.testing.assert_close(out.var(0), reference.var(0), rtol=1e-4, atol=0)
        means_match = torch.allclose(out.mean(0), reference.mean(0), rtol=1e-4, atol=1e-6)
        assert means_match == match_mean


@torch.no_grad()
def test_variance_correction_scope_rescales_only_the_output_projections(tiny_model):
    """Magnitude masks do not depend on the inputs, so with the correction confined to o_proj
    and down_proj every other linear equals the uncorrected prune, and each corrected row is a
    positive multiple of its uncorrected row."""
    calib = calib_windows(tiny_model().config.vocab_size)
    pruned = {}
    for scope in (None, "output-projections"):
        model = tiny_model().float()
        cfg = (PruneConfig(Target.parse("2:4"), "magnitude") if scope is None else
               PruneConfig(Target.parse("2:4"), "magnitude", variance_correction=True,
                           vc_scope=scope))
        prune_model(model, calib, cfg, progress=False)
        pruned[scope] = linear_weights(model)
    changed = set()
    for name, plain in pruned[None].items():
        scoped = pruned["output-projections"][name]
        if torch.equal(scoped, plain):
            continue
        changed.add(name.split(".", 3)[3])
        ratio = scoped[plain != 0] / plain[plain != 0]
        rows = torch.nonzero(plain != 0)[:, 0]
        for row in rows.unique():
            torch.testing.assert_close(ratio[rows == row], ratio[rows == row][0].expand(
                int((rows == row).sum())), rtol=1e-5, atol=0)
        assert (scoped[plain == 0] == 0).all() and (ratio > 0).all()
    assert changed == {"self_attn.o_proj", "mlp.down_proj"}


def test_dense_fine_tune_trains_every_decoder_linear_and_nothing_else(tiny_model):
    from compression.finetune import decoder_linears, finetune_dense

    model = tiny_model().float()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    losses = finetune_dense(model, calib_windows(model.config.vocab_size), 3, lr=1e-3,
                            progress=False)
    assert len(losses) == 3
    trained = {f"{name}.weight" for name in decoder_linears(model)}
    assert len(trained) == 7 * model.config.num_hidden_layers
    for name, param in model.named_parameters():
        assert torch.equal(param, before[name]) != (name in trained), name
