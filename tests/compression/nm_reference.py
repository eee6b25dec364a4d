"""Brute-force references shared by the pruning tests."""

import numpy as np
import torch


def brute_force_nm(scores, n, m):
    """Keep the ``n`` largest scores of every ``m`` consecutive ones in each row (ties: first)."""
    keep = np.zeros(scores.shape, dtype=bool)
    for row in range(scores.shape[0]):
        for start in range(0, scores.shape[1], m):
            block = scores[row, start : start + m]
            keep[row, start + np.argsort(-block, kind="stable")[:n]] = True
    return keep


def linear_inputs(module, call, names=lambda name: True):
    """Each ``torch.nn.Linear`` in ``module`` whose name passes ``names``: its inputs
    ``[tokens, in]`` (float64, concatenated over calls) while ``call()`` runs."""
    seen, handles = {}, []
    for name, linear in module.named_modules():
        if isinstance(linear, torch.nn.Linear) and names(name):
            def hook(mod, args, name=name):
                x = args[0].detach().reshape(-1, mod.in_features).double().numpy()
                seen[name] = np.concatenate([seen[name], x]) if name in seen else x
            handles.append(linear.register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            call()
    finally:
        for handle in handles:
            handle.remove()
    return seen


def dense_inputs(model, calib):
    """Each decoder linear's inputs ``[tokens, in]`` (float64) in one unpruned forward."""
    return linear_inputs(model, lambda: model(torch.from_numpy(calib), use_cache=False),
                         lambda name: ".layers." in name)
