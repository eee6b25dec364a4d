"""Calibration statistics of a linear layer's inputs and the two cheap corrections built on them.

* :class:`InputStats` accumulates, over calibration tokens x (rows of ``[tokens, in]``), the count
  n, sum x, X^T X and max |x_j|: enough for the Wanda norms, the SparseGPT Hessian, and the exact
  mean and variance of any output ``y = W x``.
* :func:`variance_correction`: per output channel, rescale the pruned weight so that its output
  variance over the calibration tokens equals the dense layer's (or by the least-squares gain).
* :func:`equalization_scales` / :func:`equalize`: SmoothQuant-like per-input-channel scales,
  folded into the preceding RMSNorm so that the dense function is unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class InputStats:
    """Running moments of a linear layer's inputs (float64).

    While there are fewer tokens than features, the inputs themselves are kept too (``rows``,
    fp32 ``[tokens, in]``, no larger than X^T X): quadratic forms w^T X^T X w then cost
    tokens x in per row instead of in x in (what makes a few calibration windows cheap on
    7B-sized layers).

    ``gram_needed=False`` (Wanda, which needs only the input norms): X^T X, the largest cost of a
    calibration pass (tokens x in^2 per linear group), is not accumulated; the sums of squares
    give the norms, and the first ``features`` tokens are kept as ``rows``, a sample on which
    :meth:`quadratic` (the per-linear output error of ``layer_stats.csv``) is computed.
    """

    features: int
    gram_needed: bool = True
    count: int = 0
    total: torch.Tensor = field(init=False)
    gram: torch.Tensor | None = field(init=False)  # X^T X
    sumsq: torch.Tensor = field(init=False)  # diag(X^T X) in float64, without the gram
    absmax: torch.Tensor = field(init=False)
    rows: torch.Tensor | None = field(init=False)

    def __post_init__(self) -> None:
        self.total = torch.zeros(self.features, dtype=torch.float64)
        self.gram = (torch.zeros(self.features, self.features, dtype=torch.float64)
                     if self.gram_needed else None)
        self.sumsq = torch.zeros(self.features, dtype=torch.float64)
        self.absmax = torch.zeros(self.features, dtype=torch.float64)
        self.rows = torch.zeros(0, self.features)

    def add(self, x: torch.Tensor) -> None:
        """Add a batch of inputs ``[..., in]``."""
        x = x.detach().reshape(-1, self.features).to(torch.float32)
        self.count += x.shape[0]
        if not self.gram_needed:
            if len(self.rows) < self.features:
                self.rows = torch.cat([self.rows, x[: self.features - len(self.rows)]])
        elif self.rows is not None:
            self.rows = torch.cat([self.rows, x]) if self.count < self.features else None
        self.total += x.sum(0, dtype=torch.float64)
        if self.gram is not None:
            self.gram += (x.T @ x).to(torch.float64)
        else:  # per batch in fp32, like the Gram's matmul; across batches in float64
            self.sumsq += torch.linalg.vector_norm(x, dim=0).square().to(torch.float64)
        self.absmax = torch.maximum(self.absmax, x.abs().amax(0).to(torch.float64))

    @property
    def mean(self) -> torch.Tensor:
        return self.total / self.count

    @property
    def covariance(self) -> torch.Tensor:
        mean = self.mean
        return self.gram / self.count - torch.outer(mean, mean)

    @property
    def norms(self) -> torch.Tensor:
        """||X_j||_2 over all tokens (the Wanda input norm)."""
        return torch.sqrt(torch.diag(self.gram) if self.gram is not None else self.sumsq)

    def rescale(self, scales: torch.Tensor) -> None:
        """Statistics of ``x / scales`` (what the layer sees after :func:`equalize`)."""
        s = scales.to(torch.float64)
        self.total /= s
        if self.gram is not None:
            self.gram /= torch.outer(s, s)
        else:
            self.sumsq /= s * s
        self.absmax /= s
        if self.rows is not None:
            self.rows = (self.rows.to(torch.float64) / s).to(torch.float32)

    def quadratic(self, weight: torch.Tensor) -> torch.Tensor:
        """sum_t ||W x_t||^2 = sum_o w_o^T X^T X w_o (float64), from the rows while kept (over
        the sample of rows without X^T X)."""
        w = weight.to(torch.float64)
        if self.rows is not None:
            return (self.rows.to(torch.float64) @ w.T).square().sum()
        return torch.einsum("oi,ij,oj->", w, self.gram, w)


def output_moments(weight: torch.Tensor, stats: InputStats) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance over calibration tokens of each output of ``y = W x`` (exact)."""
    w = weight.to(torch.float64)
    mean = w @ stats.mean
    variance = torch.einsum("oi,ij,oj->o", w, stats.covariance, w)
    return mean, variance.clamp_min(0)


VC_GAINS = ("variance", "least-squares")


def variance_correction(dense: torch.Tensor, pruned: torch.Tensor, stats: InputStats,
                        match_mean: bool = False, gain: str = "variance"
                        ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-output-channel rescale of a pruned weight; returns (corrected weight, bias or None).

    With mean mu and variance var over calibration tokens of output i, for the dense weight W and
    the pruned W', ``gain`` chooses the scale a_i of the corrected row a_i W'_i:

    * ``variance``: a_i = sqrt(var(W x)_i / var(W' x)_i)  (a_i = 1 where var(W' x)_i = 0), so the
      output variance matches the dense layer's;
    * ``least-squares``: the a_i that minimises sum_t (W x - a W' x)_i^2 (with ``match_mean``,
      the centred version a_i = cov(W x, W' x)_i / var(W' x)_i). Unlike matching the variance,
      it never raises the calibration output error: pruning noise uncorrelated with the dense
      output shrinks the gain instead of being amplified.

    With ``match_mean`` a bias b_i = mu(W x)_i - a_i mu(W' x)_i makes the means match too
    (LLaMa's linears have no bias, so the bias would have to be added to the module).
    """
    if gain not in VC_GAINS:
        raise ValueError(f"unknown variance-correction gain '{gain}': choose one of "
                         f"{', '.join(VC_GAINS)}")
    dense_mean, dense_var = output_moments(dense, stats)
    pruned_mean, pruned_var = output_moments(pruned, stats)
    if gain == "variance":
        ratio = torch.where(pruned_var > 0, dense_var / pruned_var.clamp_min(1e-300),
                            torch.ones_like(pruned_var))
        scale = torch.sqrt(ratio)
    else:
        w, p = dense.to(torch.float64), pruned.to(torch.float64)
        second = stats.covariance if match_mean else stats.gram / stats.count
        cross = torch.einsum("oi,ij,oj->o", w, second, p)
        power = torch.einsum("oi,ij,oj->o", p, second, p)
        scale = torch.where(power > 0, cross / power.clamp_min(1e-300), torch.ones_like(power))
    corrected = (pruned.to(torch.float64) * scale[:, None]).to(pruned.dtype)
    bias = (dense_mean - scale * pruned_mean).to(pruned.dtype) if match_mean else None
    return corrected, bias


def equalization_scales(weights: list[torch.Tensor], stats: InputStats, alpha: float,
                        floor: float = 1e-5) -> torch.Tensor:
    """SmoothQuant-like scales s_j = max|X_j|^alpha / max|W_:,j|^(1 - alpha).

    ``weights`` are all the linears fed by the same input (their rows concatenated for the max);
    X_j is that input's channel j over calibration tokens. Scales are clamped below at ``floor``;
    a channel that never fires (max|X_j| = 0) keeps s_j = 1.
    """
    if not 0 <= alpha <= 1:
        raise ValueError(f"equalization alpha must be in [0, 1], got {alpha}")
    w_max = torch.cat([w.detach().abs().to(torch.float64) for w in weights]).amax(0)
    x_max = stats.absmax
    scales = x_max.pow(alpha) / w_max.clamp_min(floor).pow(1 - alpha)
    scales = torch.where(x_max > 0, scales.clamp_min(floor), torch.ones_like(scales))
    return scales


@torch.no_grad()
def equalize(norm: torch.nn.Module, linears: list[torch.nn.Linear], scales: torch.Tensor) -> None:
    """W' = W diag(s) for every linear fed by ``norm``; the RMSNorm gain becomes g / s.

    RMSNorm(x) = g * x / rms(x) is linear in g, so dividing g by s and multiplying the next
    weights' input columns by s leaves the dense function unchanged.
    """
    s = scales.to(torch.float64)
    norm.weight.copy_((norm.weight.to(torch.float64) / s).to(norm.weight.dtype))
    for linear in linears:
        linear.weight.copy_((linear.weight.to(torch.float64) * s[None, :])
                            .to(linear.weight.dtype))
