"""What to keep: pruning targets, importance scores, unstructured and salient masks.

N:M selection itself is :func:`compression.formats.nm_mask` (N kept of every M along the input
dimension); this module adds the unstructured reference at the same density and the salient
(outlier) side-car selection. Scores are ``[out, in]``, higher = more important.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from compression.formats import Pattern, nm_mask

METHODS = ("magnitude", "wanda", "sparsegpt")
# Which activations calibrate each layer (compression.pipeline.PruneConfig.propagate).
PROPAGATE = ("pruned", "dense", "sequential")
# Precision of the observing forward (PruneConfig.observe_dtype).
OBSERVE_DTYPES = ("float32", "bfloat16")
_UNSTRUCTURED_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")


@dataclass(frozen=True)
class Target:
    """A sparsity target: an N:M pattern, or unstructured with a kept ``density``."""

    pattern: Pattern | None
    density: float

    @classmethod
    def parse(cls, text: str) -> Target:
        """``"N:M"`` (N kept of every M) or ``"P%"`` (unstructured, P percent pruned)."""
        match = _UNSTRUCTURED_RE.match(str(text))
        if match:
            pruned = float(match.group(1)) / 100
            if not 0 < pruned < 1:
                raise ValueError(f"invalid pattern '{text}': unstructured sparsity must be "
                                 "strictly between 0% and 100%")
            return cls(None, 1 - pruned)
        pattern = Pattern.parse(text)
        return cls(pattern, pattern.density)

    @property
    def structured(self) -> bool:
        return self.pattern is not None

    def __str__(self) -> str:
        return str(self.pattern) if self.pattern else f"{round((1 - self.density) * 100, 4):g}%"


@dataclass(frozen=True)
class Salient:
    """A salient side-car: structured ``K:L`` (e.g. 16:256), or ``count_like`` it, unstructured.

    ``unstructured`` keeps, per layer and anywhere in it, as many weights as the structured
    ``pattern`` would (``fraction`` overrides that with a fixed share of the layer).
    """

    pattern: Pattern | None
    unstructured: bool = False
    fraction: float | None = None

    @classmethod
    def parse(cls, text: str, unstructured: bool = False) -> Salient:
        """``"K:L"``, or with ``unstructured`` also ``"P%"`` / a fraction such as ``0.0625``."""
        if not unstructured:
            return cls(Pattern.parse(text))
        text = str(text).strip()
        if ":" in text:
            return cls(Pattern.parse(text), unstructured=True)
        try:
            fraction = float(text[:-1]) / 100 if text.endswith("%") else float(text)
        except ValueError:
            raise ValueError(f"invalid unstructured salient share '{text}': expected K:L, P% or "
                             "a fraction") from None
        if not 0 < fraction < 1:
            raise ValueError(f"unstructured salient share must be in (0, 1), got {text}")
        return cls(None, unstructured=True, fraction=fraction)

    def check_against(self, bulk: Target) -> None:
        """A structured side-car must tile the bulk's blocks: L a multiple of M."""
        structured = self.pattern and not self.unstructured and bulk.structured
        if structured and self.pattern.m % bulk.pattern.m:
            raise ValueError(f"salient pattern {self.pattern}: L={self.pattern.m} is not a "
                             f"multiple of the bulk pattern's M={bulk.pattern.m}")

    def __str__(self) -> str:
        if not self.unstructured:
            return str(self.pattern)
        return f"unstructured({self.pattern})" if self.pattern else f"unstructured({self.fraction:g})"


def magnitude_scores(weight: np.ndarray) -> np.ndarray:
    """|W|."""
    return np.abs(weight)


def wanda_scores(weight: np.ndarray, input_norm: np.ndarray) -> np.ndarray:
    """Wanda: |W_ij| * ||X_j||_2, the input feature's L2 norm over calibration tokens."""
    return np.abs(weight) * input_norm[None, :]


def topk_mask(scores: np.ndarray, kept: int, axis: int | None) -> np.ndarray:
    """Keep the ``kept`` highest scores per row (``axis=1``) or in the whole matrix (``None``).

    Ties go to the lower flat index, like :func:`nm_mask`, so masks are deterministic.
    """
    flat = scores if axis == 1 else scores.reshape(1, -1)
    order = np.argsort(-flat, axis=1, kind="stable")[:, :kept]
    mask = np.zeros(flat.shape, dtype=bool)
    np.put_along_axis(mask, order, True, axis=1)
    return mask.reshape(scores.shape)


def unstructured_mask(scores: np.ndarray, density: float, per_row: bool = True) -> np.ndarray:
    """Keep round(density * in) per row (``per_row``), or round(density * size) in the matrix."""
    if per_row:
        return topk_mask(scores, round(density * scores.shape[1]), axis=1)
    return topk_mask(scores, round(density * scores.size), axis=None)


def bulk_mask(scores: np.ndarray, target: Target, per_row: bool = True) -> np.ndarray:
    """The bulk mask for ``target``: N:M via formats.nm_mask (dense tail), or unstructured."""
    if target.structured:
        return nm_mask(scores, target.pattern)
    return unstructured_mask(scores, target.density, per_row)


def salient_count(shape: tuple[int, int], salient: Salient) -> int:
    """How many weights of a ``shape`` layer the side-car holds."""
    rows, cols = shape
    if salient.fraction is not None:
        return round(salient.fraction * rows * cols)
    p = salient.pattern
    full, tail = divmod(cols, p.m)
    return rows * (full * p.n + min(p.n, tail))


def salient_mask(scores: np.ndarray, salient: Salient) -> np.ndarray:
    """The side-car's positions: K:L with a padded tail (formats ``tail="pad"``), or the same
    count (see :func:`salient_count`) of the highest scores anywhere in the layer."""
    if not salient.unstructured:
        return nm_mask(scores, salient.pattern, tail="pad")
    return topk_mask(scores, salient_count(scores.shape, salient), axis=None)
