"""Bootstrap intervals against the exact bootstrap distribution (all n^n resamples of a few
windows, brute force) and the analytic variance of a resampled mean."""

import itertools

import numpy as np
import pytest

from compression.uncertainty import difference_verdict, paired_difference, perplexity_interval


def exact_distribution(statistic, windows):
    """Every resample of ``windows`` indices (each equally likely) and its statistic."""
    return np.array([statistic(np.array(idx))
                     for idx in itertools.product(range(windows), repeat=windows)])


def assert_percentiles(interval, exact, level=0.95, slack=0.01):
    tail = (1 - level) / 2
    assert np.mean(exact < interval.low) <= tail + slack
    assert np.mean(exact <= interval.low) >= tail - slack
    assert np.mean(exact > interval.high) <= tail + slack
    assert np.mean(exact >= interval.high) >= tail - slack


@pytest.mark.parametrize("seed", [0, 1])
def test_perplexity_interval_matches_the_exact_bootstrap(seed):
    rng = np.random.default_rng(seed)
    nll = rng.uniform(100, 400, 5)
    tokens = rng.integers(60, 120, 5).astype(float)
    got = perplexity_interval(nll, tokens, resamples=100_000, seed=seed)
    exact = exact_distribution(lambda i: np.exp(nll[i].sum() / tokens[i].sum()), 5)
    assert got.estimate == pytest.approx(np.exp(nll.sum() / tokens.sum()), rel=1e-12)
    assert_percentiles(got, exact)


def test_paired_difference_matches_the_exact_bootstrap():
    rng = np.random.default_rng(4)
    tokens = np.full(5, 511.0)
    a = rng.uniform(1500, 2000, 5)
    b = a * rng.uniform(0.9, 1.2, 5)
    got = paired_difference(a, b, tokens, resamples=100_000)
    exact = exact_distribution(
        lambda i: np.exp((b[i].sum() - a[i].sum()) / tokens[i].sum()) - 1, 5)
    assert got.estimate == pytest.approx(np.exp((b.sum() - a.sum()) / tokens.sum()) - 1)
    assert_percentiles(got, exact)


def test_interval_width_matches_the_analytic_variance_of_the_mean():
    """Equal tokens T per window: log ppl* = mean of the drawn nll / T, whose bootstrap variance
    is the population variance of nll / T over n windows; the interval is +-1.96 sd for large n."""
    rng = np.random.default_rng(5)
    n, t = 600, 511.0
    nll = rng.normal(3.4 * t, 0.4 * t, n)
    got = perplexity_interval(nll, np.full(n, t))
    sd = np.sqrt(np.var(nll / t) / n)
    assert np.log(got.high) - np.log(got.low) == pytest.approx(2 * 1.959964 * sd, rel=0.05)
    assert (got.resamples, got.seed, got.level) == (10_000, 0, 0.95)


def test_paired_verdicts():
    rng = np.random.default_rng(6)
    tokens = np.full(50, 511.0)
    a = rng.uniform(1500, 2000, 50)
    same = paired_difference(a, a, tokens)
    assert (same.low, same.estimate, same.high) == (0.0, 0.0, 0.0)
    assert same.includes_zero
    shifted = paired_difference(a, a + 0.01 * tokens, tokens)  # +0.01 nats on every token
    assert shifted.low == pytest.approx(np.expm1(0.01)) == shifted.high
    assert not shifted.includes_zero and shifted.low > 0
    noisy = paired_difference(a, a + rng.normal(0, 200, 50), tokens)
    assert noisy.includes_zero
    lower = paired_difference(a, a - 0.02 * tokens, tokens)
    assert not lower.includes_zero and lower.high < 0
    verdicts = [difference_verdict(d) for d in (same, shifted, noisy, lower)]
    assert verdicts == ["not distinguishable", "higher", "not distinguishable", "lower"]


def test_bad_window_data_is_refused():
    with pytest.raises(ValueError, match="same length"):
        perplexity_interval([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="at least one token"):
        perplexity_interval([1.0, 2.0], [1.0, 0.0])


def test_perplexity_records_each_windows_nll_sum(tiny_model):
    import torch

    from compression.perplexity import perplexity

    model = tiny_model().float()
    windows = np.random.default_rng(7).integers(0, 300, (3, 16))
    got = perplexity(model, windows, batch_size=2, progress=False)
    with torch.no_grad():
        logits = model(torch.from_numpy(windows)).logits.double()
    logp = torch.log_softmax(logits[:, :-1], -1)
    want = -logp.gather(-1, torch.from_numpy(windows[:, 1:, None])).squeeze(-1).sum(1)
    np.testing.assert_allclose(got["window_nll"], want.numpy(), rtol=1e-5)
    assert got["window_tokens"] == [15, 15, 15]
    assert got["mean_nll"] == pytest.approx(want.sum().item() / 45, rel=1e-5)
