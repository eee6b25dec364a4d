"""SparseGPT: layer-wise OBS pruning with reconstruction (Frantar & Alistarh, 2023, arXiv:2301.00774).

For a linear layer ``y = W x`` with calibration Hessian ``H = X X^T`` (plus damping), the columns
are processed left to right. Pruning weight ``w_q`` of a row is compensated on the row's not yet
processed columns ``F`` by ``delta = -(w_q / [H_F^-1]_qq) [H_F^-1]_q,:`` (the optimal brain
surgeon update); the sequence of ``H_F^-1`` is read off the upper Cholesky factor ``U`` of
``H^-1`` (row q of U, scaled by U_qq). Columns go in blocks of ``blocksize`` with lazy updates of
the rest. The mask is chosen on the fly from ``w^2 / U_qq^2``: per group of M columns through
:func:`compression.formats.nm_mask` for N:M, or, unstructured, the lowest scores of each column
block (whole block, so rows keep different counts).
"""

from __future__ import annotations

import numpy as np
import torch

from compression.criteria import Target
from compression.formats import nm_mask


def inverse_hessian_factor(hessian: torch.Tensor, damp: float) -> torch.Tensor:
    """Upper Cholesky factor of ``(H + damp * mean(diag H) * I)^-1`` (float64)."""
    h = hessian.to(torch.float64).clone()
    idx = torch.arange(h.shape[0])
    h[idx, idx] += damp * torch.mean(torch.diag(h))
    inverse = torch.cholesky_inverse(torch.linalg.cholesky(h))
    return torch.linalg.cholesky(inverse, upper=True)


def hessian_factor(hessian: torch.Tensor, damp: float = 0.01
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(dead inputs, fp32 upper Cholesky factor of the damped H^-1) for ``X X^T`` ``[in, in]``.

    Dead inputs (zero Hessian diagonal) get a unit diagonal. Linears that share their input
    (q/k/v, gate/up) share this factor: compute it once per input.
    """
    h = hessian.detach().to(torch.float64).clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    return dead, inverse_hessian_factor(h, damp).to(torch.float32)


def sparsegpt_prune(weight: torch.Tensor, hessian: torch.Tensor | None, target: Target,
                    forbidden: torch.Tensor | None = None, blocksize: int = 128,
                    damp: float = 0.01, factor: tuple[torch.Tensor, torch.Tensor] | None = None,
                    keep: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Prune ``weight[out, in]`` to ``target`` with OBS updates; returns (new weight, keep mask).

    ``hessian`` is ``X X^T`` of the layer's calibration inputs ``[in, in]`` (or ``factor``, its
    :func:`hessian_factor`, already computed); ``forbidden`` marks positions the bulk may not
    keep (the salient side-car's): they are always pruned and their value compensated. Dead
    inputs (zero Hessian diagonal) are pruned. A tail of ``in % M`` columns is kept dense, as
    formats' default tail policy. ``keep`` (bool ``[out, in]``) fixes the mask instead of choosing
    it (masks reused from another run): only the reconstruction runs.
    """
    rows, cols = weight.shape
    w = weight.detach().to(torch.float32).clone()
    dead, u = factor if factor is not None else hessian_factor(hessian, damp)
    w[:, dead] = 0.0
    pattern = target.pattern
    if pattern is not None:
        blocksize = max(blocksize, pattern.m) // pattern.m * pattern.m
        dense_from = cols - cols % pattern.m
    forbid = (torch.zeros(rows, cols, dtype=torch.bool) if forbidden is None
                else forbidden.to(torch.bool))
    pruned = torch.zeros(rows, cols, dtype=torch.bool)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        w1 = w[:, i1:i2].clone()
        u1 = u[i1:i2, i1:i2]
        d1 = torch.diag(u1)
        err1 = torch.zeros_like(w1)
        pruned1 = torch.zeros_like(w1, dtype=torch.bool)
        if keep is not None:
            pruned1 = ~keep[:, i1:i2].to(torch.bool)
        elif pattern is None:
            scores = w1**2 / d1[None, :] ** 2
            scores[forbid[:, i1:i2]] = -1.0
            drop = round((1 - target.density) * scores.numel())
            if drop:
                order = torch.argsort(scores.flatten(), stable=True)[:drop]
                pruned1.view(-1)[order] = True
        for i in range(i2 - i1):
            col = i1 + i
            if keep is None and pattern is not None and col % pattern.m == 0 and col < dense_from:
                span = slice(i, i + pattern.m)
                scores = (w1[:, span] ** 2 / d1[None, span] ** 2).to(torch.float64)
                scores[forbid[:, col : col + pattern.m]] = -np.inf
                pruned1[:, span] = ~torch.from_numpy(nm_mask(scores.numpy(), pattern))
            column = w1[:, i]
            kept = torch.where(pruned1[:, i], 0.0, column)
            err = (column - kept) / u1[i, i]
            w1[:, i:] -= err[:, None] * u1[i, i:][None, :]
            w1[:, i] = kept
            err1[:, i] = err
        w[:, i1:i2] = w1
        pruned[:, i1:i2] = pruned1
        w[:, i2:] -= err1 @ u[i1:i2, i2:]
    return w, ~pruned
