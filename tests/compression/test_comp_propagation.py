"""One forward per layer (``propagate="dense"``): every layer calibrated on the dense model's
activations. Its masks must equal those computed from a single forward of the unpruned model
(float64 statistics, brute-force N:M selection / SparseGPT on the float64 Gram)."""

import numpy as np
import pytest
import torch
from nm_reference import brute_force_nm, dense_inputs

from compression.criteria import Target
from compression.pipeline import PruneConfig, prune_model
from compression.sparsegpt import sparsegpt_prune


@pytest.mark.parametrize("pattern", ["2:4", "8:16"])
def test_dense_propagation_wanda_masks_equal_one_dense_forward(tiny_model, pattern):
    calib = np.random.default_rng(5).integers(0, 300, (6, 48))
    reference_model = tiny_model().float()
    inputs = dense_inputs(reference_model, calib)
    cfg = PruneConfig(Target.parse(pattern), "wanda", propagate="dense")
    masks = prune_model(tiny_model().float(), calib, cfg, progress=False).masks
    n, m = cfg.target.pattern.n, cfg.target.pattern.m
    assert set(masks) == set(inputs)
    for name, x in inputs.items():
        weight = reference_model.get_submodule(name).weight.detach().double().numpy()
        scores = np.abs(weight) * np.linalg.norm(x, axis=0)[None, :]
        np.testing.assert_array_equal(masks[name].bulk, brute_force_nm(scores, n, m), name)


def test_dense_propagation_sparsegpt_masks_equal_one_dense_forward(tiny_model):
    calib = np.random.default_rng(6).integers(0, 300, (6, 48))
    reference_model = tiny_model().float()
    inputs = dense_inputs(reference_model, calib)
    cfg = PruneConfig(Target.parse("2:4"), "sparsegpt", propagate="dense")
    masks = prune_model(tiny_model().float(), calib, cfg, progress=False).masks
    for name, x in inputs.items():
        weight = reference_model.get_submodule(name).weight.detach().float()
        _, keep = sparsegpt_prune(weight, torch.from_numpy(x.T @ x), cfg.target)
        np.testing.assert_array_equal(masks[name].bulk, keep.numpy(), name)


def test_pruned_propagation_differs_from_dense_after_the_first_layer(tiny_model):
    """The default protocol really re-runs the pruned layer: layer 0 agrees, later ones differ."""
    calib = np.random.default_rng(7).integers(0, 300, (6, 48))
    runs = {p: prune_model(tiny_model().float(), calib,
                           PruneConfig(Target.parse("2:4"), "wanda", propagate=p),
                           progress=False).masks for p in ("pruned", "dense")}
    first = [n for n in runs["dense"] if n.startswith("model.layers.0.")]
    later = [n for n in runs["dense"] if not n.startswith("model.layers.0.")]
    assert all((runs["pruned"][n].bulk == runs["dense"][n].bulk).all() for n in first)
    assert any((runs["pruned"][n].bulk != runs["dense"][n].bulk).any() for n in later)


def test_unknown_propagation_is_refused():
    with pytest.raises(ValueError, match="unknown propagation"):
        PruneConfig(Target.parse("2:4"), "wanda", propagate="sideways")
