"""The Pareto front (min area, max throughput) against an O(n^2) brute-force definition."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from accel_sim.sweep.report import pareto_front


def brute_force_front(cost, value):
    n = len(cost)
    return np.array([
        not any(cost[j] <= cost[i] and value[j] >= value[i]
                and (cost[j] < cost[i] or value[j] > value[i]) for j in range(n))
        for i in range(n)], dtype=bool)


# Small integer grids make ties (equal cost or equal value) common.
coords = st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), min_size=1, max_size=40)


@settings(max_examples=200, deadline=None)
@given(coords)
def test_front_matches_brute_force_with_ties(pairs):
    cost, value = (np.array(c, dtype=float) for c in zip(*pairs))
    np.testing.assert_array_equal(pareto_front(cost, value), brute_force_front(cost, value))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.floats(0.01, 1e3), st.floats(0, 1e4)), min_size=1, max_size=60))
def test_front_matches_brute_force_floats(pairs):
    cost, value = (np.array(c) for c in zip(*pairs))
    np.testing.assert_array_equal(pareto_front(cost, value), brute_force_front(cost, value))
