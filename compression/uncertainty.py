"""Confidence intervals for perplexity by the bootstrap over evaluation windows.

The evaluation windows are the sampling unit (tokens inside a window are not independent): a
resample draws as many windows as were evaluated, with replacement, and recomputes
perplexity = exp(sum of the drawn windows' NLL sums / sum of their predicted tokens). The 95%
interval is the 2.5th and 97.5th percentiles of the resampled statistic (percentile bootstrap,
Efron & Tibshirani 1993, ch. 13). Two rows evaluated on the same windows are compared *paired*:
each resample draws the same windows for both, so window-to-window variation of difficulty,
shared by the two, cancels in their difference. A difference whose interval includes zero is
"not distinguishable".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RESAMPLES = 10_000
SEED = 0
LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """A point estimate and its bootstrap interval (how it was made: resamples, seed, level)."""

    estimate: float
    low: float
    high: float
    resamples: int
    seed: int
    level: float

    @property
    def includes_zero(self) -> bool:
        return self.low <= 0 <= self.high


def _check(nll: np.ndarray, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    nll, tokens = np.asarray(nll, np.float64), np.asarray(tokens, np.float64)
    if nll.ndim != 1 or nll.shape != tokens.shape or len(nll) < 2:
        raise ValueError(f"per-window NLL sums and token counts must be two 1-D arrays of the "
                         f"same length >= 2, got {nll.shape} and {tokens.shape}")
    if (tokens <= 0).any():
        raise ValueError("every window must predict at least one token")
    return nll, tokens


def _draws(windows: int, resamples: int, seed: int) -> np.ndarray:
    """``[resamples, windows]`` counts: how often each window is drawn in each resample."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(windows, np.full(windows, 1 / windows), size=resamples)


def _interval(estimate: float, values: np.ndarray, resamples: int, seed: int,
              level: float) -> Interval:
    low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return Interval(estimate, float(low), float(high), resamples, seed, level)


def perplexity_interval(nll, tokens, resamples: int = RESAMPLES, seed: int = SEED,
                        level: float = LEVEL) -> Interval:
    """Perplexity of per-window NLL sums and token counts, with its bootstrap interval."""
    nll, tokens = _check(nll, tokens)
    counts = _draws(len(nll), resamples, seed)
    values = np.exp((counts @ nll) / (counts @ tokens))
    return _interval(float(np.exp(nll.sum() / tokens.sum())), values, resamples, seed, level)


def paired_difference(nll_a, nll_b, tokens, resamples: int = RESAMPLES, seed: int = SEED,
                      level: float = LEVEL) -> Interval:
    """Relative perplexity difference ppl(b) / ppl(a) - 1 of two rows on the same windows
    (``tokens`` per window, shared), with its paired bootstrap interval."""
    nll_a, tokens = _check(nll_a, tokens)
    nll_b, _ = _check(nll_b, tokens)
    counts = _draws(len(nll_a), resamples, seed)
    drawn_tokens = counts @ tokens
    values = np.exp((counts @ nll_b - counts @ nll_a) / drawn_tokens) - 1
    estimate = float(np.exp((nll_b.sum() - nll_a.sum()) / tokens.sum()) - 1)
    return _interval(estimate, values, resamples, seed, level)


def difference_verdict(diff: Interval) -> str:
    """"not distinguishable" when the interval includes zero, else which side is lower."""
    if diff.includes_zero:
        return "not distinguishable"
    return "lower" if diff.high < 0 else "higher"
