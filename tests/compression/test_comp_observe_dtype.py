"""A bfloat16 observing forward (``PruneConfig.observe_dtype``): the forward that collects each
layer's input statistics runs its matmuls under CPU autocast; the propagating forward, masks and
pruned weights stay fp32. Reference, layer by layer: the finished pruned model run in fp32 up to
the layer's input, then the layer's *dense* weights under autocast, float64 norms of what its
linears receive, brute-force N:M selection."""

import numpy as np
import pytest
import torch
from nm_reference import brute_force_nm, linear_inputs

from compression.criteria import Target
from compression.pipeline import PruneConfig, prune_model


class _Stop(Exception):
    pass


def layer_input(model, index, calib):
    """(hidden states, keyword arguments) that decoder layer ``index`` receives (fp32)."""
    seen = {}

    def hook(module, args, kwargs):
        seen["hidden"] = args[0] if args else kwargs.pop("hidden_states")
        seen["kwargs"] = {k: v for k, v in kwargs.items() if k != "hidden_states"}
        raise _Stop
    handle = model.model.layers[index].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            model(torch.from_numpy(calib), use_cache=False)
    except _Stop:
        pass
    finally:
        handle.remove()
    return seen["hidden"], seen["kwargs"]


def autocast_inputs(layer, hidden, kwargs):
    """Each linear's inputs ``[tokens, in]`` (float64) when ``layer`` runs under bf16 autocast."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return linear_inputs(layer, lambda: layer(hidden, **kwargs))


@pytest.mark.parametrize("pattern", ["2:4", "8:16"])
def test_bf16_observation_masks_equal_brute_force_on_an_autocast_dense_layer(tiny_model, pattern):
    calib = np.random.default_rng(11).integers(0, 300, (6, 48))
    dense = tiny_model().float()
    pruned = tiny_model().float()
    cfg = PruneConfig(Target.parse(pattern), "wanda", observe_dtype="bfloat16")
    masks = prune_model(pruned, calib, cfg, progress=False).masks
    n, m = cfg.target.pattern.n, cfg.target.pattern.m
    for index in range(len(dense.model.layers)):
        hidden, kwargs = layer_input(pruned, index, calib)  # fp32 through the pruned layers
        inputs = autocast_inputs(dense.model.layers[index], hidden, kwargs)
        for name, x in inputs.items():
            full = f"model.layers.{index}.{name}"
            weight = dense.get_submodule(full).weight.detach().double().numpy()
            scores = np.abs(weight) * np.linalg.norm(x, axis=0)[None, :]
            np.testing.assert_array_equal(masks[full].bulk, brute_force_nm(scores, n, m), full)


def test_bf16_observation_keeps_fp32_weights_and_mostly_agrees_with_fp32(tiny_model):
    calib = np.random.default_rng(12).integers(0, 300, (6, 48))
    dense = tiny_model().float()
    runs, seen = {}, {}
    for dtype in ("float32", "bfloat16"):
        model = tiny_model().float()
        o_proj = model.model.layers[0].self_attn.o_proj
        seen[dtype] = set()
        o_proj.register_forward_pre_hook(lambda mod, args, s=seen[dtype]: s.add(args[0].dtype))
        cfg = PruneConfig(Target.parse("8:16"), "wanda", observe_dtype=dtype)
        runs[dtype] = (model, prune_model(model, calib, cfg, progress=False).masks)
    # o_proj receives bf16 attention in the observing forward, fp32 in the propagating one.
    assert seen == {"float32": {torch.float32}, "bfloat16": {torch.bfloat16, torch.float32}}
    model, masks = runs["bfloat16"]
    agree = [float((masks[n].bulk == runs["float32"][1][n].bulk).mean()) for n in masks]
    assert np.mean(agree) >= 0.97
    for name, mask in masks.items():
        weight = model.get_submodule(name).weight
        assert weight.dtype == torch.float32  # Wanda does not reconstruct: W * mask exactly
        expected = dense.get_submodule(name).weight.detach() * torch.from_numpy(mask.bulk)
        torch.testing.assert_close(weight.detach(), expected, rtol=0, atol=0)


def test_observe_dtype_is_validated_and_absent_from_fp32_descriptions():
    fp32 = PruneConfig(Target.parse("8:16"), "wanda")
    assert "observe_dtype" not in fp32.describe()  # committed rows' keys predate the field
    assert PruneConfig(Target.parse("8:16"), "wanda",
                       observe_dtype="bfloat16").describe()["observe_dtype"] == "bfloat16"
    with pytest.raises(ValueError, match="unknown observe dtype 'float8'"):
        PruneConfig(Target.parse("8:16"), "wanda", observe_dtype="float8")
    for propagate in ("dense", "sequential"):
        with pytest.raises(ValueError, match="needs --propagate pruned"):
            PruneConfig(Target.parse("8:16"), "wanda", propagate=propagate,
                        observe_dtype="bfloat16")
