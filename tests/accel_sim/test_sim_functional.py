"""Decoder models read formats' metadata bit for bit; functional_matmul equals a float64
dense reference."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from accel_sim.decoders import DECODER_MODELS, decoder_model, rank_rom
from accel_sim.functional import decoded_positions, functional_matmul
from compression import formats as F
from compression.formats import FormatError, Pattern


@st.composite
def compressed(draw, encodings=F.ENCODINGS):
    m = draw(st.integers(2, 32))
    n = draw(st.integers(1, m - 1))
    p = Pattern(n, m)
    rows = draw(st.integers(1, 6))
    cols = draw(st.integers(1, 4)) * m + draw(st.integers(0, m - 1))
    tail = draw(st.sampled_from(F.TAIL_POLICIES))
    encoding = draw(st.sampled_from(encodings))
    seed = draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((rows, cols))
    t = F.NMTensor.from_dense(w, F.nm_mask(rng.random((rows, cols)), p, tail), p,
                              encoding=encoding, tail=tail, dtype="float32")
    return t, rng


@settings(max_examples=60, deadline=None)
@given(compressed())
def test_every_decoder_reads_formats_metadata_bit_for_bit(case):
    tensor, _ = case
    for kind, model in DECODER_MODELS.items():
        if model.encoding != tensor.encoding:
            continue
        if kind == "rank_rom" and tensor.pattern.configurations > 50_000:
            continue  # the ROM table itself is enumerated; keep it small here
        assert np.array_equal(decoded_positions(tensor, kind), tensor.positions), kind


@settings(max_examples=40, deadline=None)
@given(compressed(), st.integers(1, 5))
def test_functional_matmul_equals_float64_dense_reference(case, batch):
    tensor, rng = case
    x = rng.standard_normal((tensor.shape[1], batch))
    reference = tensor.to_dense(np.float64) @ x
    y = functional_matmul(tensor, x)
    np.testing.assert_allclose(y, reference, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("salient_kind", ["nm", "csr"])
def test_functional_matmul_adds_the_salient_side_car(salient_kind):
    rng = np.random.default_rng(1)
    w = rng.standard_normal((8, 512))
    bulk = F.NMTensor.from_dense(w, F.nm_mask(np.abs(w), "8:16"), "8:16", encoding="rank",
                                 dtype="float32")
    residual = w - bulk.to_dense(np.float64)
    if salient_kind == "nm":
        side = F.NMTensor.from_dense(residual, F.nm_mask(np.abs(residual), "16:256", "pad"),
                                     "16:256", encoding="index", tail="pad", dtype="float32")
    else:
        keep = np.abs(residual) > np.quantile(np.abs(residual), 0.97)
        side = F.CSRTensor.from_dense(residual, keep)
    weight = F.SparseWeight(bulk, side)
    x = rng.standard_normal((512, 3))
    np.testing.assert_allclose(functional_matmul(weight, x), weight.to_dense(np.float64) @ x,
                               rtol=1e-12, atol=1e-12)


def test_rank_rom_is_colex_and_complete():
    rom = rank_rom(Pattern(2, 4))
    # colex order of 2-subsets of {0..3}: {0,1},{0,2},{1,2},{0,3},{1,3},{2,3}
    expected = [[0, 1], [0, 2], [1, 2], [0, 3], [1, 3], [2, 3]]
    assert [list(np.flatnonzero(row)) for row in rom] == expected


def test_decoders_reject_malformed_fields():
    p = Pattern(2, 4)
    with pytest.raises(FormatError, match="popcount"):
        decoder_model("popcount").decode_fields(np.array([[[1, 1, 1, 0]]]), p)
    with pytest.raises(FormatError, match="out of range"):
        decoder_model("rank_pipeline").decode_fields(np.array([[[6]]], dtype=np.uint64), p)
    with pytest.raises(ValueError, match="reads 'rank'"):
        t = F.NMTensor.from_dense(np.ones((1, 4)), np.array([[1, 1, 0, 0]], bool), p,
                                  encoding="index")
        decoded_positions(t, "rank_pipeline")
    with pytest.raises(ValueError, match=r"x must be \[k=4"):
        functional_matmul(t, np.ones((5, 1)))
