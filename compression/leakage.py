"""Calibration (and fine-tune) windows must not come from the evaluation (test) text.

A window *comes from* the test text when most of its token spans of ``SPAN`` tokens occur
verbatim in the test token stream (spans compared by a 64-bit polynomial hash). Distinct
articles share short phrases, not half of their 32-token spans, so the check tells the test
split from the validation split while catching the test split under any file name, a copy, or
a file that contains it.
"""

from __future__ import annotations

import numpy as np

SPAN = 32
SHARE = 0.5  # a window with more than this share of its spans in the test text comes from it
_BASE = np.uint64(1_000_003)


def span_hashes(ids: np.ndarray, span: int) -> np.ndarray:
    """Hashes of every run of ``span`` consecutive tokens of each row of ``ids`` (``[rows, n]``
    -> ``[rows, n - span + 1]``), a polynomial in the token ids modulo 2^64."""
    ids = np.atleast_2d(np.asarray(ids)).astype(np.uint64)
    count = ids.shape[1] - span + 1
    hashes = np.zeros((ids.shape[0], count), np.uint64)
    with np.errstate(over="ignore"):
        for k in range(span):
            hashes = hashes * _BASE + ids[:, k : k + count]
    return hashes


def share_in_test(windows: np.ndarray, test_ids: np.ndarray, span: int = SPAN) -> np.ndarray:
    """Per calibration window, the share of its ``span``-token runs found in the test stream."""
    span = min(span, windows.shape[1], len(test_ids))
    known = span_hashes(test_ids, span)[0]
    return np.isin(span_hashes(windows, span), known).mean(axis=1)


def check_not_from_test(windows: np.ndarray, test_ids: np.ndarray, what: str = "calibration"
                        ) -> None:
    """One-line ValueError when any window comes from the test text (see the module docstring)."""
    share = share_in_test(windows, test_ids)
    leaked = np.flatnonzero(share > SHARE)
    if leaked.size:
        first = leaked[0]
        raise ValueError(f"{what} window {first} of {len(windows)} comes from the evaluation "
                         f"(test) text ({share[first]:.0%} of its {min(SPAN, windows.shape[1])}-"
                         f"token spans occur there; {leaked.size} such windows): calibrate and "
                         "fine-tune on other text, e.g. the validation split")
