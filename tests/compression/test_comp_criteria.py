"""Masks: unstructured top-k, salient side-cars and targets, against brute force."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compression.criteria import (
    Salient,
    Target,
    bulk_mask,
    salient_count,
    salient_mask,
    topk_mask,
    unstructured_mask,
    wanda_scores,
)
from compression.formats import check_nm_mask, nm_mask

shapes = st.tuples(st.integers(1, 12), st.integers(1, 300))


@settings(max_examples=30, deadline=None)
@given(shapes, st.integers(0, 2**31 - 1), st.floats(0.05, 0.95))
def test_unstructured_row_mask_keeps_the_top_of_each_row(shape, seed, density):
    scores = np.random.default_rng(seed).standard_normal(shape)
    mask = unstructured_mask(scores, density, per_row=True)
    want = round(density * shape[1])
    assert (mask.sum(axis=1) == want).all()
    for row, keep in zip(scores, mask):
        if keep.any() and (~keep).any():
            assert row[keep].min() >= row[~keep].max()


@settings(max_examples=30, deadline=None)
@given(shapes, st.integers(0, 2**31 - 1), st.floats(0.05, 0.95))
def test_unstructured_layer_mask_is_a_global_threshold(shape, seed, density):
    scores = np.random.default_rng(seed).standard_normal(shape)
    mask = unstructured_mask(scores, density, per_row=False)
    assert mask.sum() == round(density * scores.size)
    if mask.any() and (~mask).any():
        assert scores[mask].min() >= scores[~mask].max()


def test_topk_breaks_ties_towards_the_lower_index():
    assert topk_mask(np.zeros((1, 5)), 2, axis=1).tolist() == [[True, True, False, False, False]]


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 6), st.integers(1, 700), st.integers(0, 2**31 - 1),
       st.sampled_from(["16:256", "8:256", "32:256", "2:8"]))
def test_salient_structured_is_formats_padded_nm_and_unstructured_matches_its_count(
        rows, cols, seed, text):
    scores = np.abs(np.random.default_rng(seed).standard_normal((rows, cols)))
    structured = salient_mask(scores, Salient.parse(text))
    np.testing.assert_array_equal(structured, nm_mask(scores, text, tail="pad"))
    check_nm_mask(structured, text, tail="pad")
    free = salient_mask(scores, Salient.parse(text, unstructured=True))
    assert free.sum() == structured.sum() == salient_count((rows, cols), Salient.parse(text))
    # Unstructured is the best set of that size, so its total score is at least the structured one.
    assert scores[free].sum() >= scores[structured].sum() - 1e-9


def test_salient_fraction_and_percent():
    assert Salient.parse("6.25%", unstructured=True).fraction == pytest.approx(0.0625)
    assert salient_count((4, 256), Salient.parse("0.0625", unstructured=True)) == 64
    with pytest.raises(ValueError, match="share"):
        Salient.parse("abc", unstructured=True)
    with pytest.raises(ValueError, match="share"):
        Salient.parse("150%", unstructured=True)


def test_targets_parse_and_reject_bad_text():
    assert Target.parse("8:16").density == 0.5 and Target.parse("8:16").structured
    assert Target.parse("50%").density == pytest.approx(0.5)
    assert not Target.parse("50%").structured
    for bad in ("8:4", "0:4", "a:b", "100%", "0%", "x%"):
        with pytest.raises(ValueError):
            Target.parse(bad)


def test_salient_l_must_be_a_multiple_of_bulk_m():
    Salient.parse("16:256").check_against(Target.parse("8:16"))
    with pytest.raises(ValueError, match="not a multiple"):
        Salient.parse("16:256").check_against(Target.parse("2:3"))
    Salient.parse("16:256", unstructured=True).check_against(Target.parse("2:3"))


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_wanda_scores_and_bulk_mask(seed):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((5, 32)).astype(np.float32)
    x = rng.standard_normal((40, 32))
    norm = np.sqrt((x**2).sum(0))
    scores = wanda_scores(w, norm.astype(np.float32))
    np.testing.assert_allclose(scores, np.abs(w.astype(np.float64)) * norm, rtol=1e-6)
    np.testing.assert_array_equal(bulk_mask(scores, Target.parse("2:4")), nm_mask(scores, "2:4"))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_wanda_mask_is_invariant_to_equalizing_rescale(seed):
    """W diag(s) with inputs X diag(s)^-1 leaves |W_ij| ||X_j|| unchanged: the reason the
    experiment measures equalization with magnitude pruning too."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((8, 64))
    x = rng.standard_normal((100, 64))
    s = rng.uniform(0.1, 10, 64)
    plain = nm_mask(wanda_scores(w, np.linalg.norm(x, axis=0)), "2:4")
    scaled = nm_mask(wanda_scores(w * s, np.linalg.norm(x / s, axis=0)), "2:4")
    np.testing.assert_array_equal(plain, scaled)
    assert not np.array_equal(nm_mask(np.abs(w), "2:4"), nm_mask(np.abs(w * s), "2:4"))
