"""Brute-force references shared by the pruning tests."""

import numpy as np


def brute_force_nm(scores, n, m):
    """Keep the ``n`` largest scores of every ``m`` consecutive ones in each row (ties: first)."""
    keep = np.zeros(scores.shape, dtype=bool)
    for row in range(scores.shape[0]):
        for start in range(0, scores.shape[1], m):
            block = scores[row, start : start + m]
            keep[row, start + np.argsort(-block, kind="stable")[:n]] = True
    return keep
