"""Triton N:M kernel under TRITON_INTERPRET=1 (see conftest.py) against a float64 reference.

fp16 only: bf16 tl.dot is wrong in the interpreter; scripts/gpu_check.py covers bf16 on a GPU.
"""

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kern_helpers import assert_close, compressed, nonzero, reference

from compression import formats as F
from nm_kernels.triton_nm import TritonNMPlan


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=st.sampled_from([("2:4", "index"), ("2:4", "rank"), ("8:16", "rank"),
                             ("8:16", "index"), ("16:32", "rank"), ("3:7", "rank")]),
       rows=st.integers(1, 40), blocks=st.integers(0, 3), tail_width=st.integers(0, 40),
       tail=st.sampled_from(["dense", "pad"]), batch=st.integers(1, 20),
       seed=st.integers(0, 2**32 - 1))
def test_matches_float64_reference(case, rows, blocks, tail_width, tail, batch, seed):
    pattern, encoding = case
    p = F.Pattern.parse(pattern)
    cols = blocks * p.m + tail_width % p.m or p.m
    rng = np.random.default_rng(seed)
    weight = compressed(rng, rows, cols, p, encoding, tail, "float16")
    x = nonzero(rng, (cols, batch)).astype(np.float16)
    out = torch.full((rows, batch), float("nan"))
    y = TritonNMPlan(weight)(torch.from_numpy(x), out=out).numpy()
    assert_close(y, reference(weight, x), weight, x, rtol=1e-5)


def test_salient_side_car_is_added():
    rng = np.random.default_rng(5)
    bulk = compressed(rng, 20, 70, "8:16", "rank", "dense", "float16")
    salient = compressed(rng, 20, 70, "2:32", "index", "pad", "float16")
    x = nonzero(rng, (70, 3)).astype(np.float16)
    y = TritonNMPlan(F.SparseWeight(bulk, salient))(torch.from_numpy(x)).numpy()
    weight = F.SparseWeight(bulk, salient)
    ref = weight.to_dense(np.float64) @ x.astype(np.float64)
    scale = (np.abs(bulk.to_dense(np.float64)) + np.abs(salient.to_dense(np.float64))) @ np.abs(x)
    np.testing.assert_array_less(np.abs(y - ref), 1e-5 * scale)


def test_bad_input_is_rejected_before_launch():
    rng = np.random.default_rng(0)
    weight = compressed(rng, 4, 32, "2:4", "index", "dense", "float16")
    plan = TritonNMPlan(weight)
    out = torch.full((4, 2), float("nan"))
    bad = {
        "does not match": torch.ones(31, 2, dtype=torch.float16),
        "dtype": torch.ones(32, 2, dtype=torch.float32),
        "contiguous": torch.ones(2, 32, dtype=torch.float16).T,
        "2-D": torch.ones(32, dtype=torch.float16),
    }
    for message, x in bad.items():
        with pytest.raises(ValueError, match=message):
            plan(x, out=out)
        assert torch.isnan(out).all()
    with pytest.raises(ValueError, match="float16 or bfloat16"):
        TritonNMPlan(compressed(rng, 4, 32, "2:4", "index", "dense", "float32"))
    with pytest.raises(ValueError, match="rank and index"):
        TritonNMPlan(compressed(rng, 4, 32, "2:4", "bitmask", "dense", "float16"))
    corrupt = compressed(rng, 4, 32, "2:4", "index", "dense", "float16")
    corrupt.metadata[1, 0] = 0b0101  # kept positions 1, 1: a duplicate index
    with pytest.raises(ValueError, match="duplicate"):
        TritonNMPlan(corrupt)
