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


def dense_inputs(model, calib):
    """Each decoder linear's inputs ``[tokens, in]`` (float64) in one unpruned forward."""
    seen, handles = {}, []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and ".layers." in name:
            def hook(mod, args, name=name):
                x = args[0].detach().reshape(-1, mod.in_features).double().numpy()
                seen[name] = np.concatenate([seen[name], x]) if name in seen else x
            handles.append(module.register_forward_pre_hook(hook))
    with torch.no_grad():
        model(torch.from_numpy(calib), use_cache=False)
    for handle in handles:
        handle.remove()
    return seen
