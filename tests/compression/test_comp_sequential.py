"""Group-by-group pruning in one forward per layer (``propagate="sequential"``): its masks must
equal a reference that re-runs the whole (partly pruned) layer before each group of linears and
chooses that group's masks from float64 statistics (brute-force N:M for Wanda, SparseGPT on the
float64 Gram), and it must refuse a layer whose forward is not LLaMa's two residual blocks."""

import numpy as np
import pytest
import torch
from nm_reference import brute_force_nm

from compression.criteria import Target
from compression.pipeline import PruneConfig, prune_model
from compression.sparsegpt import sparsegpt_prune
from workloads.models import LINEAR_GROUPS


def group_inputs(model, calib, module_name):
    """``[tokens, in]`` float64 inputs of one linear in a full forward of the current model."""
    seen = []
    module = model.get_submodule(module_name)
    handle = module.register_forward_pre_hook(
        lambda mod, args: seen.append(args[0].detach().reshape(-1, mod.in_features).double()))
    with torch.no_grad():
        model(torch.from_numpy(calib), use_cache=False)
    handle.remove()
    return torch.cat(seen).numpy()


def reference_masks(model, calib, method, target):
    """Group by group, layer by layer, each group's inputs from a whole forward of the model as
    pruned so far (slow and obviously right)."""
    masks = {}
    for index in range(len(model.model.layers)):
        for _, names in LINEAR_GROUPS:
            prefix = f"model.layers.{index}."
            x = group_inputs(model, calib, prefix + names[0])
            for name in names:
                linear = model.get_submodule(prefix + name)
                weight = linear.weight.detach().double()
                if method == "wanda":
                    scores = np.abs(weight.numpy()) * np.linalg.norm(x, axis=0)[None, :]
                    keep = brute_force_nm(scores, target.pattern.n, target.pattern.m)
                    new = torch.from_numpy(np.where(keep, weight.numpy(), 0.0))
                else:
                    new, keep = sparsegpt_prune(weight.float(), torch.from_numpy(x.T @ x), target)
                    keep = keep.numpy()
                with torch.no_grad():
                    linear.weight.copy_(new.to(linear.weight.dtype))
                masks[prefix + name] = keep
    return masks


@pytest.mark.parametrize(("method", "pattern"), [("wanda", "2:4"), ("wanda", "8:16"),
                                                 ("sparsegpt", "2:4")])
def test_sequential_masks_equal_group_by_group_reference(tiny_model, method, pattern):
    calib = np.random.default_rng(8).integers(0, 300, (6, 48))
    cfg = PruneConfig(Target.parse(pattern), method, propagate="sequential",
                      value_dtype="float32")
    masks = prune_model(tiny_model().float(), calib, cfg, progress=False, batch_size=2).masks
    reference = reference_masks(tiny_model().float(), calib, method, cfg.target)
    assert set(masks) == set(reference)
    for name, keep in reference.items():
        np.testing.assert_array_equal(masks[name].bulk, keep, name)


def test_sequential_outputs_are_the_pruned_layer_s(tiny_model):
    """What a layer hands on to the next equals the finished pruned model's forward, with the
    corrections that add biases (mean matching) and change norm gains (equalization)."""
    calib = np.random.default_rng(9).integers(0, 300, (6, 32))
    cfg = PruneConfig(Target.parse("2:4"), "wanda", variance_correction=True, match_mean=True,
                      equalize_alpha=0.5, propagate="sequential", value_dtype="float32")
    model = tiny_model().float()
    seen = []
    handle = model.model.layers[-1].register_forward_pre_hook(
        lambda mod, args: seen.append(args[0].detach().clone()))
    prune_model(model, calib, cfg, progress=False, batch_size=2)
    propagated = torch.cat(seen[:3])  # three batches of two windows, each run once
    with torch.no_grad():
        model(torch.from_numpy(calib), use_cache=False)
    handle.remove()
    assert len(seen) == 4
    assert model.model.layers[0].self_attn.o_proj.bias is not None  # mean matching's bias
    torch.testing.assert_close(propagated, seen[3], rtol=1e-4, atol=1e-5)


def test_sequential_refuses_a_layer_with_other_residuals(tiny_model):
    model = tiny_model().float()
    layer = model.model.layers[0]
    plain = layer.forward
    layer.forward = lambda *args, **kwargs: 2 * plain(*args, **kwargs)
    calib = np.random.default_rng(10).integers(0, 300, (2, 16))
    with pytest.raises(ValueError, match="LLaMa decoder layer"):
        prune_model(model, calib, PruneConfig(Target.parse("2:4"), "wanda",
                                              propagate="sequential"), progress=False)
