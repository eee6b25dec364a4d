"""Perplexity with the standard protocol: the text's tokens concatenated, cut into non-overlapping
windows of ``seqlen`` (the trailing partial window dropped), each window scored independently,
perplexity = exp(mean token NLL over every predicted token of every window).

Each window's NLL sum and predicted-token count are kept too (``window_nll``, ``window_tokens``):
what :mod:`compression.uncertainty` resamples for confidence intervals."""

from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm


@torch.no_grad()
def perplexity(model, windows: np.ndarray, batch_size: int = 1, progress: bool = True) -> dict:
    """Perplexity of ``model`` on ``windows[count, seqlen]``; returns the figures and the setup."""
    count, seqlen = windows.shape
    window_nll, window_tokens = [], []
    start = time.perf_counter()
    for first in tqdm(range(0, count, batch_size), desc="perplexity", unit="batch",
                      disable=not progress):
        ids = torch.from_numpy(windows[first : first + batch_size])
        logits = model(ids, use_cache=False).logits[:, :-1].to(torch.float32)
        targets = ids[:, 1:]
        for row_logits, row_targets in zip(logits, targets, strict=True):
            window_nll.append(float(F.cross_entropy(row_logits, row_targets, reduction="sum")
                                    .to(torch.float64)))
            window_tokens.append(row_targets.numel())
    tokens = sum(window_tokens)
    mean_nll = math.fsum(window_nll) / tokens
    return {"perplexity": math.exp(mean_nll), "mean_nll": mean_nll, "seqlen": seqlen,
            "windows": count, "predicted_tokens": tokens,
            "eval_seconds": time.perf_counter() - start,
            "window_nll": window_nll, "window_tokens": window_tokens}
