"""Wanda's calibration pass without X^T X: the norms and the sampled output error against float64
numpy, and masks that agree with the X^T X path (>= 99.9%, the issue's bar for a precision change)."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from compression.corrections import InputStats
from compression.criteria import Target
from compression.pipeline import PruneConfig, prune_model


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 12),
       st.lists(st.integers(1, 30), min_size=1, max_size=4), st.booleans())
def test_norms_and_sampled_quadratic_without_gram_match_numpy(seed, features, sizes, rescaled):
    rng = np.random.default_rng(seed)
    parts = [rng.standard_normal((n, features)) * rng.uniform(0.1, 4, features) for n in sizes]
    stats = InputStats(features, gram_needed=False)
    for part in parts:
        stats.add(torch.from_numpy(part.astype(np.float32)))
    x = np.concatenate(parts).astype(np.float32).astype(np.float64)
    assert stats.gram is None and stats.count == len(x)
    scales = rng.uniform(0.5, 2, features)
    if rescaled:
        stats.rescale(torch.from_numpy(scales))
        x = x / scales
    np.testing.assert_allclose(stats.norms, np.linalg.norm(x, axis=0), rtol=1e-5)
    w = rng.standard_normal((3, features))
    sample = x[:features]  # the first `features` tokens
    assert float(stats.quadratic(torch.from_numpy(w))) == pytest.approx(
        np.sum((sample @ w.T) ** 2), rel=1e-5)


@pytest.mark.parametrize("pattern", ["2:4", "8:16", "50%"])
def test_wanda_masks_without_gram_agree_with_the_gram_path(tiny_model, monkeypatch, pattern):
    calib = np.random.default_rng(3).integers(0, 300, (8, 64))
    cfg = PruneConfig(Target.parse(pattern), "wanda")
    assert not cfg.needs_gram
    light = prune_model(tiny_model(), calib, cfg, progress=False).masks
    monkeypatch.setattr(PruneConfig, "needs_gram", property(lambda self: True))
    full = prune_model(tiny_model(), calib, cfg, progress=False).masks
    same = sum(int((light[n].bulk == full[n].bulk).sum()) for n in full)
    total = sum(full[n].bulk.size for n in full)
    assert same / total >= 0.999
