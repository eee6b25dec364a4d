"""Shared test helpers: random compressed weights, non-zero activations, a float64 reference."""

import numpy as np

from compression import formats as F


def nonzero(rng, shape) -> np.ndarray:
    """float32 values in +-[0.5, 1.5): never zero, so a dropped term always shows."""
    return (rng.uniform(0.5, 1.5, shape) * rng.choice([-1.0, 1.0], shape)).astype(np.float32)


def compressed(rng, rows, cols, pattern, encoding, tail, dtype) -> F.NMTensor:
    weight = nonzero(rng, (rows, cols))
    mask = F.nm_mask(rng.random((rows, cols)), pattern, tail)
    return F.NMTensor.from_dense(weight, mask, pattern, encoding, tail, dtype)


def reference(weight, x) -> np.ndarray:
    """float64 W @ x from the format's own dense expansion (independent of the kernels)."""
    return weight.to_dense(np.float64) @ x.astype(np.float64)


def assert_close(y, ref, weight, x, rtol) -> None:
    """|y - ref| <= rtol * (|W| @ |x|): the float32-accumulation error scale of each output."""
    scale = np.abs(weight.to_dense(np.float64)) @ np.abs(x.astype(np.float64))
    assert np.isfinite(y).all(), "kernel left unwritten (NaN) outputs"
    np.testing.assert_array_less(np.abs(y - ref), rtol * scale + 1e-30)
