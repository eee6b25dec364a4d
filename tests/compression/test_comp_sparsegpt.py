"""SparseGPT against an independent float64 OBS reference with explicit inverse Hessians."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from compression.criteria import Target
from compression.formats import check_nm_mask, nm_mask
from compression.sparsegpt import sparsegpt_prune


def reference_obs(w, h, pattern, damp):
    """Textbook sequential OBS: at column j, F = {j, ...}; H_F^-1 inverted from scratch."""
    w = w.astype(np.float64).copy()
    h = h + damp * np.mean(np.diag(h)) * np.eye(len(h))
    cols = w.shape[1]
    inv_diag = np.array([np.linalg.inv(h[k:, k:])[0, 0] for k in range(cols)])
    pruned = np.zeros(w.shape, dtype=bool)
    for j in range(cols):
        if j % pattern.m == 0:
            scores = w[:, j : j + pattern.m] ** 2 / inv_diag[j : j + pattern.m]
            pruned[:, j : j + pattern.m] = ~nm_mask(scores, pattern)
        h_inv = np.linalg.inv(h[j:, j:])
        err = np.where(pruned[:, j], w[:, j], 0.0) / h_inv[0, 0]
        w[:, j:] -= err[:, None] * h_inv[0][None, :]
        w[pruned[:, j], j] = 0.0
    return w, ~pruned


def layer_problem(seed, rows, cols, tokens=None):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((tokens or 4 * cols, cols)) * rng.uniform(0.2, 3.0, cols)
    w = rng.standard_normal((rows, cols)).astype(np.float32)
    return w, x.T @ x, x


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 6), st.sampled_from(["2:4", "4:8", "1:4"]),
       st.sampled_from([4, 8, 16]), st.integers(2, 6))
def test_matches_reference_obs(seed, rows, text, blocksize, blocks):
    target = Target.parse(text)
    w, h, _ = layer_problem(seed, rows, target.pattern.m * blocks)
    got, keep = sparsegpt_prune(torch.from_numpy(w), torch.from_numpy(h), target,
                                blocksize=blocksize, damp=0.01)
    want_w, want_keep = reference_obs(w, h, target.pattern, 0.01)
    np.testing.assert_array_equal(keep.numpy(), want_keep)
    check_nm_mask(keep.numpy(), text)
    np.testing.assert_allclose(got.numpy(), want_w, atol=2e-3 * np.abs(w).max())
    assert (got.numpy()[~want_keep] == 0).all()


def output_error(w_new, w, x):
    return float(((x @ (w_new.astype(np.float64) - w).T) ** 2).sum())


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from(["2:4", "8:16", "50%", "70%"]))
def test_reconstruction_beats_zeroing_the_same_mask(seed, text):
    w, h, x = layer_problem(seed, 8, 64)
    got, keep = sparsegpt_prune(torch.from_numpy(w), torch.from_numpy(h), Target.parse(text),
                                blocksize=32, damp=1e-4)
    keep = keep.numpy()
    assert keep.mean() == pytest.approx(Target.parse(text).density, abs=1 / 64)
    naive = np.where(keep, w, 0)
    assert output_error(got.numpy(), w, x) < output_error(naive, w, x)


def test_forbidden_positions_are_pruned_and_dead_inputs_dropped():
    w, h, _ = layer_problem(3, 6, 32)
    h[5, :] = h[:, 5] = 0  # input 5 never fires
    forbidden = np.zeros(w.shape, dtype=bool)
    forbidden[:, [0, 9, 17]] = True
    got, keep = sparsegpt_prune(torch.from_numpy(w), torch.from_numpy(h), Target.parse("2:4"),
                                torch.from_numpy(forbidden), blocksize=8)
    keep = keep.numpy()
    assert not keep[forbidden].any()
    assert (got.numpy()[:, 5] == 0).all()
    check_nm_mask(keep, "2:4")


def test_unstructured_rows_may_differ_but_blocks_hold_the_density():
    w, h, _ = layer_problem(7, 16, 64)
    w[:8] *= 10  # rows with larger weights keep more
    _, keep = sparsegpt_prune(torch.from_numpy(w), torch.from_numpy(h), Target.parse("50%"),
                              blocksize=16)
    keep = keep.numpy()
    for start in range(0, 64, 16):
        assert keep[:, start : start + 16].sum() == 16 * 16 // 2
    assert keep[:8].sum() > keep[8:].sum()
