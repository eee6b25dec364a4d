"""The N:M format contract: masks, the three encodings, compressed tensors, files, corruption."""

import itertools
import json
import math

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compression import formats as F
from compression.formats import NMTensor, Pattern


@st.composite
def patterns(draw, max_m=32):
    m = draw(st.integers(2, max_m))
    n = draw(st.integers(1, m - 1))
    return Pattern(n, m)


@st.composite
def weights_and_patterns(draw, max_m=32):
    p = draw(patterns(max_m))
    rows = draw(st.integers(1, 5))
    blocks = draw(st.integers(0, 4))
    tail = draw(st.integers(0, p.m - 1))
    cols = blocks * p.m + tail
    if cols == 0:
        cols = p.m
    seed = draw(st.integers(0, 2**32 - 1))
    # Integer-valued scores make ties frequent, which exercises the tie-break.
    scores = np.random.default_rng(seed).integers(-3, 4, size=(rows, cols)).astype(np.float64)
    weight = np.random.default_rng(seed + 1).standard_normal((rows, cols))
    return p, scores, weight


def brute_force_mask(scores, p, tail):
    """Reference: per block, sort (-score, index) and keep the first N; tail per policy."""
    rows, cols = scores.shape
    mask = np.zeros_like(scores, dtype=bool)
    full = cols // p.m
    for r in range(rows):
        for b in range(full + (1 if cols % p.m else 0)):
            idx = list(range(b * p.m, min(cols, (b + 1) * p.m)))
            if len(idx) < p.m and tail == "dense":
                mask[r, idx] = True
                continue
            best = sorted(idx, key=lambda j: (-scores[r, j], j))[: p.n]
            mask[r, best] = True
    return mask


# ---------------------------------------------------------------- patterns and costs


def test_pattern_costs_match_the_closed_forms():
    for n, m in [(1, 2), (2, 4), (4, 8), (8, 16), (16, 32), (16, 256), (3, 7)]:
        p = Pattern(n, m)
        c = math.comb(m, n)
        assert p.configurations == c
        assert p.bits_per_element("rank") == math.ceil(math.log2(c)) / m
        assert p.bits_per_element("index") == n * math.ceil(math.log2(m)) / m
        assert p.bits_per_element("bitmask") == 1.0


def test_published_figures():
    assert F.pattern_summary("2:4")["configurations"] == 6
    assert F.pattern_summary("2:4")["rank_bits_per_element"] == 0.75
    assert F.pattern_summary("8:16")["configurations"] == 12870
    assert F.pattern_summary("8:16")["rank_bits_per_element"] == 0.875
    assert F.pattern_summary("16:32")["configurations"] == 601080390
    assert F.pattern_summary("16:32")["rank_bits_per_element"] == 0.9375
    assert F.pattern_summary("2:4")["index_bits_per_element"] == 1.0  # NVIDIA 2:4 metadata


@pytest.mark.parametrize("text", ["8:4", "0:4", "4:4", "a:b", "8", "", "1:257", "-1:4", "2:4:8"])
def test_invalid_pattern_strings_raise_value_error(text):
    with pytest.raises(ValueError, match="invalid pattern"):
        Pattern.parse(text)


def test_unknown_encoding_and_tail_raise():
    with pytest.raises(ValueError, match="unknown encoding 'huffman'"):
        Pattern(2, 4).bits_per_element("huffman")
    with pytest.raises(ValueError, match="unknown tail policy"):
        F.nm_mask(np.ones((2, 8)), "2:4", tail="drop")


# ---------------------------------------------------------------- masks


@settings(max_examples=150, deadline=None)
@given(weights_and_patterns(), st.sampled_from(F.TAIL_POLICIES))
def test_mask_is_exactly_nm_and_matches_brute_force(case, tail):
    p, scores, _ = case
    mask = F.nm_mask(scores, p, tail)
    F.check_nm_mask(mask, p, tail)
    np.testing.assert_array_equal(mask, brute_force_mask(scores, p, tail))


def test_mask_keeps_the_highest_scores():
    scores = np.array([[0.1, 5.0, -2.0, 3.0, 9.0, 8.0, 7.0, 1.0]])
    mask = F.nm_mask(scores, "2:4")
    np.testing.assert_array_equal(mask, [[False, True, False, True, True, True, False, False]])


def test_mask_rejects_nan_and_bad_shapes():
    with pytest.raises(ValueError, match="NaN"):
        F.nm_mask(np.array([[1.0, np.nan, 0.0, 2.0]]), "2:4")
    with pytest.raises(ValueError, match="2-D"):
        F.nm_mask(np.ones(8), "2:4")


def test_check_mask_names_the_bad_block():
    mask = F.nm_mask(np.arange(16.0).reshape(2, 8), "2:4")
    mask[1, 5] = ~mask[1, 5]
    with pytest.raises(ValueError, match="row 1 block 1"):
        F.check_nm_mask(mask, "2:4")


# ---------------------------------------------------------------- encodings


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(patterns(max_m=64), st.integers(1, 4), st.integers(1, 6), st.sampled_from(F.ENCODINGS),
       st.integers(0, 2**32 - 1))
def test_metadata_round_trip(p, rows, blocks, encoding, seed):
    rng = np.random.default_rng(seed)
    positions = np.sort(rng.permuted(np.tile(np.arange(p.m), (rows * blocks, 1)), axis=1)[:, : p.n],
                        axis=1).reshape(rows, blocks, p.n)
    packed = F.encode_metadata(positions, p, encoding)
    assert packed.dtype == np.uint8
    assert packed.shape == (rows, math.ceil(blocks * p.bits_per_block(encoding) / 8))
    np.testing.assert_array_equal(F.decode_metadata(packed, p, encoding, rows, blocks), positions)


def test_rank_is_the_colex_combinatorial_number():
    """Rank r = sum C(c_i, i) enumerates all C(M,N) blocks exactly once, in colex order."""
    for p in [Pattern(2, 4), Pattern(3, 7), Pattern(4, 8)]:
        combos = list(itertools.combinations(range(p.m), p.n))
        colex = sorted(combos, key=lambda c: tuple(reversed(c)))
        positions = np.array(colex).reshape(1, len(colex), p.n)
        ranks = F.rank_encode(positions, p)
        np.testing.assert_array_equal(ranks.reshape(-1), np.arange(len(colex)))
        np.testing.assert_array_equal(F.rank_lut(p), np.array(colex))


def test_wide_ranks_use_exact_integers():
    """16:128 has ranks wider than 64 bits; the Python-int path must still round-trip."""
    p = Pattern(16, 128)
    assert p.rank_bits > 64
    rng = np.random.default_rng(3)
    positions = np.sort(rng.permuted(np.tile(np.arange(128), (6, 1)), axis=1)[:, :16],
                        axis=1).reshape(2, 3, 16)
    positions[0, 0] = np.arange(112, 128)  # the largest rank, C(128,16) - 1
    packed = F.encode_metadata(positions, p, "rank")
    np.testing.assert_array_equal(F.decode_metadata(packed, p, "rank", 2, 3), positions)
    assert F.rank_encode(positions[:1, :1], p)[0, 0] == math.comb(128, 16) - 1


def test_bit_layout_is_lsb_first_and_row_aligned():
    """2:4 index: positions (1,3) and (0,2) -> fields 1,3,0,2 at 2 bits each, LSB first."""
    positions = np.array([[[1, 3], [0, 2]], [[0, 1], [2, 3]]])
    packed = F.encode_metadata(positions, "2:4", "index")
    assert packed.tolist() == [[1 | 3 << 2 | 0 << 4 | 2 << 6], [0 | 1 << 2 | 2 << 4 | 3 << 6]]
    # 2:4 rank: C(1,1)+C(3,2)=4 and C(0,1)+C(2,2)=1, 3 bits each -> 4 | 1 << 3
    assert F.encode_metadata(positions[:1], "2:4", "rank").tolist() == [[4 | 1 << 3]]
    assert F.encode_metadata(positions[:1], "2:4", "bitmask").tolist() == [[0b0101_1010]]


# ---------------------------------------------------------------- corruption


def _packed(encoding, rows=2, blocks=3, seed=0):
    p = Pattern(8, 16)
    rng = np.random.default_rng(seed)
    positions = np.sort(rng.permuted(np.tile(np.arange(p.m), (rows * blocks, 1)), axis=1)[:, : p.n],
                        axis=1).reshape(rows, blocks, p.n)
    return F.encode_metadata(positions, p, encoding), positions


def test_rank_out_of_range_raises():
    p = Pattern(2, 4)  # 6 configurations in 3 bits: 6 and 7 are invalid
    packed = F.pack_fields(np.array([[0, 7]], dtype=np.uint64), 3)
    with pytest.raises(ValueError, match=r"rank 7 .* out of range .* C\(4,2\) = 6"):
        F.decode_metadata(packed, p, "rank", 1, 2)


def test_rank_out_of_range_raises_for_14_bit_ranks():
    packed = F.pack_fields(np.array([[12870]], dtype=np.uint64), 14)
    with pytest.raises(ValueError, match="out of range"):
        F.decode_metadata(packed, "8:16", "rank", 1, 1)


@pytest.mark.parametrize("fields, problem", [([1, 0], "unsorted"), ([2, 2], "duplicate")])
def test_unsorted_or_duplicate_indices_raise(fields, problem):
    packed = F.pack_fields(np.array([fields], dtype=np.uint64), 2)
    with pytest.raises(ValueError, match=problem):
        F.decode_metadata(packed, "2:4", "index", 1, 1)


def test_index_beyond_block_raises():
    packed = F.pack_fields(np.array([[0, 6]], dtype=np.uint64), 3)  # 2:5 has positions 0..4
    with pytest.raises(ValueError, match="out of range"):
        F.decode_metadata(packed, "2:5", "index", 1, 1)


def test_bitmask_with_wrong_popcount_raises():
    packed, _ = _packed("bitmask")
    packed[1, 2] ^= 0b100
    with pytest.raises(ValueError, match="popcount"):
        F.decode_metadata(packed, "8:16", "bitmask", 2, 3)


@pytest.mark.parametrize("encoding", F.ENCODINGS)
def test_truncated_stream_raises(encoding):
    packed, _ = _packed(encoding)
    with pytest.raises(ValueError, match="truncated"):
        F.decode_metadata(packed[:, :-1], "8:16", encoding, 2, 3)
    with pytest.raises(ValueError, match="truncated"):
        F.decode_metadata(packed[:1], "8:16", encoding, 2, 3)


def test_nonzero_padding_bits_raise():
    packed, _ = _packed("rank", rows=1, blocks=1)  # 14 bits in 2 bytes: 2 padding bits
    packed[0, 1] |= 0x80
    with pytest.raises(ValueError, match="padding bits"):
        F.decode_metadata(packed, "8:16", "rank", 1, 1)


# ---------------------------------------------------------------- compressed tensors


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(weights_and_patterns(), st.sampled_from(F.ENCODINGS), st.sampled_from(F.TAIL_POLICIES),
       st.sampled_from(list(F.VALUE_DTYPES)))
def test_tensor_round_trip(case, encoding, tail, dtype):
    p, scores, weight = case
    mask = F.nm_mask(scores, p, tail)
    t = NMTensor.from_dense(weight, mask, p, encoding, tail, dtype)
    expected = np.where(mask, weight, 0).astype(F.value_dtype(dtype)).astype(np.float64)
    np.testing.assert_array_equal(t.to_dense(np.float64), expected)
    np.testing.assert_array_equal(t.mask(), mask)
    assert t.dtype == dtype


def test_pad_tail_shorter_than_n_keeps_every_tail_element():
    weight = np.arange(1.0, 11.0).reshape(1, 10)  # 8:16 is wider than the whole row
    mask = F.nm_mask(weight, "4:8", tail="pad")
    assert mask[0, 8:].all() and mask[0, :8].sum() == 4
    t = NMTensor.from_dense(weight, mask, "4:8", "index", "pad", "float32")
    np.testing.assert_array_equal(t.to_dense(), np.where(mask, weight, 0))
    assert t.values.shape == (1, 8)


def test_nonzero_value_at_padding_position_raises():
    weight = np.arange(1.0, 11.0).reshape(1, 10)
    t = NMTensor.from_dense(weight, F.nm_mask(weight, "4:8", "pad"), "4:8", "index", "pad",
                            "float32")
    values = t.values.copy()
    values[0, -1] = 1.0  # the last kept slot of the tail block is a padding position
    with pytest.raises(ValueError, match="padding position"):
        NMTensor(t.shape, t.pattern, t.encoding, t.tail, values, t.metadata, t.tail_values)


def test_tensor_shape_mismatches_raise():
    w = np.random.default_rng(0).standard_normal((4, 16))
    t = NMTensor.from_dense(w, F.nm_mask(np.abs(w), "2:4"), "2:4")
    with pytest.raises(ValueError, match="values shape"):
        NMTensor((4, 20), t.pattern, t.encoding, t.tail, t.values, t.metadata, t.tail_values)
    with pytest.raises(ValueError, match="does not match mask"):
        NMTensor.from_dense(w, F.nm_mask(np.abs(w), "2:4")[:, :8], "2:4")
    with pytest.raises(ValueError, match="unsupported value dtype"):
        NMTensor.from_dense(w, F.nm_mask(np.abs(w), "2:4"), "2:4", dtype="int8")


def test_csr_and_sparse_weight_sum():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((6, 40))
    salient_mask = F.nm_mask(np.abs(w), "2:16", tail="pad")
    salient = F.CSRTensor.from_dense(w, salient_mask)
    rest = np.where(salient_mask, 0, w)
    bulk = NMTensor.from_dense(rest, F.nm_mask(np.abs(rest), "4:8"), "4:8", "rank",
                               dtype="float32")
    sw = F.SparseWeight(bulk, salient)
    expected = np.where(F.nm_mask(np.abs(rest), "4:8"), rest, 0) + np.where(salient_mask, w, 0)
    np.testing.assert_allclose(sw.to_dense(np.float64), expected, rtol=1e-6)


def test_csr_validation():
    with pytest.raises(ValueError, match="unsorted or duplicated"):
        F.CSRTensor((1, 4), np.array([0, 2]), np.array([3, 1], np.int32),
                    np.ones(2, np.float32))
    with pytest.raises(ValueError, match="out of range"):
        F.CSRTensor((1, 4), np.array([0, 1]), np.array([4], np.int32), np.ones(1, np.float32))


# ---------------------------------------------------------------- files


def _example(dtype="bfloat16"):
    rng = np.random.default_rng(2)
    w = rng.standard_normal((8, 37))
    bulk = NMTensor.from_dense(w, F.nm_mask(np.abs(w), "8:16"), "8:16", "rank", "dense", dtype)
    side_mask = F.nm_mask(np.abs(w), "4:32", "pad")
    side = NMTensor.from_dense(w, side_mask, "4:32", "index", "pad", "float32")
    return {"layers.0.mlp.up_proj": F.SparseWeight(bulk, side), "plain": bulk}


@pytest.mark.parametrize("dtype", list(F.VALUE_DTYPES))
def test_save_load_round_trip(tmp_path, dtype):
    weights = _example(dtype)
    F.save(tmp_path / "w.safetensors", weights)
    loaded = F.load(tmp_path / "w.safetensors")
    assert set(loaded) == set(weights)
    for name, weight in weights.items():
        np.testing.assert_array_equal(loaded[name].to_dense(), weight.to_dense())
    assert loaded["plain"].salient is None
    assert loaded["layers.0.mlp.up_proj"].bulk.values.dtype == F.value_dtype(dtype)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]  # no staging file


def _rewrite(path, mutate):
    """Rewrite a saved file with its tensors and header changed by ``mutate(tensors, header)``."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open is not iterable
        header = json.loads(f.metadata()["nmsim"])
    mutate(tensors, header)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path),
              metadata=F.header_metadata(header))


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda t, h: h.update(version=99), "version 99"),
        (lambda t, h: h.update(format="other"), "unknown format"),
        (lambda t, h: h["tensors"]["plain"]["bulk"].update(shape=[8, 64]), "values shape"),
        (lambda t, h: h["tensors"]["plain"]["bulk"].update(pattern="9:4"), "invalid pattern"),
        (lambda t, h: h["tensors"]["plain"]["bulk"].update(encoding="zip"), "unknown encoding"),
        (lambda t, h: t.update({"plain/bulk/metadata": t["plain/bulk/metadata"][:, :-1]}),
         "truncated"),
        (lambda t, h: t.pop("plain/bulk/tail_values"), "missing tail_values"),
        (lambda t, h: t.update({"plain/bulk/metadata": t["plain/bulk/metadata"] | 0xFF}),
         "out of range|padding"),
    ],
)
def test_corrupt_files_raise(tmp_path, mutate, message):
    path = tmp_path / "w.safetensors"
    F.save(path, _example("float16"))
    _rewrite(path, mutate)
    with pytest.raises(ValueError, match=message):
        F.load(path)


def test_garbage_and_foreign_files_raise(tmp_path):
    path = tmp_path / "junk.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        F.load(path)
    from safetensors.numpy import save_file

    save_file({"x": np.zeros(3, np.float32)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(ValueError, match="no nmsim header"):
        F.load(tmp_path / "foreign.safetensors")
    with pytest.raises(ValueError, match="no such"):
        F.load(tmp_path / "missing.safetensors")


def test_bfloat16_values_are_real_bfloat16():
    t = _example("bfloat16")["plain"]
    assert t.values.dtype == ml_dtypes.bfloat16


def test_shared_binomial_table():
    table = F.binomial_table("8:16")
    assert table.shape == (16, 9) and table.dtype == np.uint64 and not table.flags.writeable
    assert all(int(table[c, i]) == math.comb(c, i) for c in range(16) for i in range(9))
    with pytest.raises(ValueError, match="63"):
        F.binomial_table("16:128")
