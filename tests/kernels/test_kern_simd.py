"""The AVX2 and AVX-512 group GEMVs (nm_kernels.simd_nm) against a float64 reference and the
scalar kernel."""

import itertools
import math
import os
import subprocess
import sys
from pathlib import Path

import numba
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kern_helpers import assert_close, compressed, nonzero, reference
from numba import njit

from compression import formats as F
from nm_kernels import simd_nm
from nm_kernels.cpu import prepare

# Window 16 (1:2 .. 8:16) and 32 (1:4, 4:16, 16:32) geometries; rank only where a group table
# exists (G * bits <= 16).
CASES = [
    ("2:4", "rank", "float32"),  # AVX-512: rank keys read as index keys (rank_transcodes)
    ("2:4", "rank", "float16"),  # AVX-512 half precision: unranked in lanes (vpermd)
    ("1:2", "rank", "bfloat16"),  # the same with one kept value per block
    ("4:8", "rank", "float16"),
    ("8:16", "rank", "bfloat16"),
    ("8:16", "rank", "float32"),  # AVX-512: the folded half mask table (rank_folds)
    ("1:2", "rank", "float32"),
    ("1:4", "rank", "float16"),
    # Index keys read as raw words: one per pair (1:2, 2:4), two joined (4:8, 8:16).
    ("1:2", "index", "float16"),
    ("2:4", "index", "bfloat16"),
    ("4:8", "index", "float16"),
    ("8:16", "index", "float32"),
    ("1:4", "index", "float32"),  # raw words on the eight-lane step: window 32
    ("2:8", "index", "float16"),
    ("4:16", "index", "float32"),
    ("16:32", "index", "float16"),
    # No group table (C(32, N) too large): the split-unrank pre-pass into position bytes.
    ("16:32", "rank", "float32"),
    ("8:32", "rank", "float16"),
]
SETTINGS = settings(max_examples=15, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

needs_avx2 = pytest.mark.skipif(not simd_nm.available(), reason="CPU without AVX2/FMA")
needs_avx512 = pytest.mark.skipif(not simd_nm.wide_available(), reason="CPU without AVX-512F")


def _is_half_density(p: F.Pattern) -> bool:
    """The patterns whose two groups of eight fill a 32-input window: M = 2N, N | 16."""
    return p.m == 2 * p.n and 16 % p.n == 0


def _grouped_weight(rng, pattern, encoding, dtype, rows, groups, extra, tail_width, tail):
    """A random weight whose rows hold ``groups`` whole groups of eight kept values, then
    ``extra`` leftover blocks (fewer than a group) and a tail of ``tail_width % M`` columns."""
    p = F.Pattern.parse(pattern)
    per_group = 8 // p.n if p.n <= 8 else 0
    blocks = groups * per_group + extra % per_group if per_group else groups // (p.n // 8)
    cols = blocks * p.m + tail_width % p.m or p.m
    return compressed(rng, rows, cols, p, encoding, tail, dtype)


@needs_avx2
@pytest.mark.parametrize(("pattern", "encoding", "dtype"), CASES)
@SETTINGS
@given(rows=st.integers(1, 70), groups=st.integers(0, 20), extra=st.integers(0, 15),
       tail_width=st.integers(0, 40), tail=st.sampled_from(["dense", "pad"]),
       seed=st.integers(0, 2**32 - 1))
def test_group_gemv_matches_float64_and_scalar(pattern, encoding, dtype, rows, groups, extra,
                                               tail_width, tail, seed):
    """Every vector path this CPU runs: up to 20 groups of eight kept values (main-loop trips
    of 4 groups or 4 pairs and the single-group remainder), leftover blocks (blocks not a
    multiple of 8/N), padded and dense tails."""
    rng = np.random.default_rng(seed)
    weight = _grouped_weight(rng, pattern, encoding, dtype, rows, groups, extra, tail_width,
                             tail)
    cols = weight.shape[1]
    x = nonzero(rng, (cols,))
    scalar = prepare(weight, simd="scalar")
    assert scalar.gemv_path == "scalar"
    y_scalar = scalar(x, out=np.full(rows, np.nan, np.float32))
    wide = (simd_nm.wide_available() and _is_half_density(weight.pattern)
            and not (encoding == "rank" and simd_nm.split_unrank_supported(weight.pattern)))
    avx2 = "avx2-table" if pattern == "2:4" else "avx2-group"
    for simd, path in [("avx2", avx2), ("auto", "avx512-pair" if wide else avx2)]:
        plan = prepare(weight, simd=simd)
        assert plan.gemv_path == path
        y = plan(x, out=np.full(rows, np.nan, np.float32))
        assert_close(y, reference(weight, x), weight, x, rtol=1e-5)
        assert_close(y, y_scalar.astype(np.float64), weight, x, rtol=2e-5)


@needs_avx2
@pytest.mark.parametrize(("pattern", "encoding", "dtype"), CASES)
@SETTINGS
@given(rows=st.integers(1, 40), groups=st.integers(0, 12), extra=st.integers(0, 15),
       tail_width=st.integers(0, 40), tail=st.sampled_from(["dense", "pad"]),
       batch=st.integers(2, 140), shift=st.integers(0, 15), seed=st.integers(0, 2**32 - 1))
def test_group_gemm_matches_float64_and_scalar(pattern, encoding, dtype, rows, groups, extra,
                                               tail_width, tail, batch, shift, seed):
    """Batches from 2 to 140: passes of 64, 32, 16 and 8 columns, x padded by zero columns
    to a multiple of 8 (the plan returns only the asked columns); leftover blocks, padded and
    dense tails as in the GEMV test; x starting ``shift`` floats past a cache line (the plan
    copies it onto one unless shift is 0)."""
    rng = np.random.default_rng(seed)
    weight = _grouped_weight(rng, pattern, encoding, dtype, rows, groups, extra, tail_width,
                             tail)
    cols = weight.shape[1]
    buffer = np.empty(cols * batch + 32, np.float32)
    first = -buffer.ctypes.data % 64 // 4 + shift
    x = buffer[first:first + cols * batch].reshape(cols, batch)
    x[...] = nonzero(rng, (cols, batch))
    assert x.ctypes.data % 64 == 4 * shift
    scalar = prepare(weight, simd="scalar")
    assert scalar.gemm_path == "scalar"
    y_scalar = scalar(x, out=np.full((rows, batch), np.nan, np.float32))
    widest = "avx512-group" if simd_nm.wide_available() else "avx2-group"
    for simd, path in [("avx2", "avx2-group"), ("auto", widest)]:
        plan = prepare(weight, simd=simd)
        assert plan.gemm_path == path
        y = plan(x, out=np.full((rows, batch), np.nan, np.float32))
        assert_close(y, reference(weight, x), weight, x, rtol=1e-5)
        assert_close(y, y_scalar.astype(np.float64), weight, x, rtol=2e-5)


@pytest.mark.parametrize("pattern", ["1:2", "2:4", "4:8", "8:16"])
def test_group_mask_table_matches_decoded_ranks(pattern):
    """Every valid key's mask has exactly the window bits of the format's own decoding of its
    G ranks; keys holding an impossible rank map to 0."""
    p = F.Pattern.parse(pattern)
    masks = simd_nm.group_mask_table(p)
    bits = p.field_bits("rank")
    per = 8 // p.n
    count = math.comb(p.m, p.n)
    rng = np.random.default_rng(3)
    ranks = rng.integers(0, count, size=(300, per))
    positions = np.stack([F.rank_lut(p)[ranks[:, j]] for j in range(per)], axis=1)
    metadata = F.encode_metadata(positions, p, "rank")
    keys = [int.from_bytes(row.tobytes(), "little") & ((1 << per * bits) - 1) for row in metadata]
    decoded = F.decode_metadata(metadata, p, "rank", len(metadata), per)
    window = decoded + np.arange(per)[None, :, None] * p.m
    expected = [sum(1 << int(c) for c in row.ravel()) for row in window]
    np.testing.assert_array_equal(masks[keys].astype(np.int64), expected)
    if count < 1 << bits:  # a first field holding rank C(M, N) cannot occur
        assert masks[count] == 0


@pytest.mark.parametrize("pattern", ["1:4", "4:16", "16:32", "3:7"])
def test_group_mask_table_refuses_other_windows(pattern):
    with pytest.raises(ValueError, match="16-input window"):
        simd_nm.group_mask_table(F.Pattern.parse(pattern))


@pytest.mark.parametrize("encoding", ["index", "rank"])
def test_table_offsets_point_at_the_inputs_each_block_keeps(encoding):
    """Every pair of valid 2:4 blocks: its metadata key, as the format packs it, finds the x
    table entry holding exactly the inputs the two blocks keep, in the order of their kept
    values; built from a random x, the entry holds those inputs' values."""
    p = F.Pattern.parse("2:4")
    offsets = simd_nm.table_offsets(p, encoding)
    block = [tuple(int(k) for k in row) for row in F.rank_lut(p)]
    subsets = np.array([[*a, *(4 + k for k in b)] for a in block for b in block])
    rng = np.random.default_rng(7)
    x = rng.standard_normal(24).astype(np.float32)
    table = simd_nm.build_x_table(x, F.rank_lut(p).astype(np.int64), 3, 4)
    run = subsets.size
    assert table.shape == (3 * run,)
    for first, second in itertools.product(itertools.combinations(range(4), 2), repeat=2):
        mask = np.zeros((1, 8), dtype=bool)
        mask[0, list(first)] = True
        mask[0, [4 + k for k in second]] = True
        dense = np.where(mask, 1.0, 0.0)
        weight = F.NMTensor.from_dense(dense, mask, p, encoding, "dense", "float32")
        key = int.from_bytes(weight.metadata[0].tobytes(), "little")
        entry = int(offsets[key]) // 4
        assert list(subsets[entry]) == [*first, *(4 + k for k in second)]
        for pair in range(3):
            held = table[pair * run + 4 * entry:pair * run + 4 * entry + 4]
            np.testing.assert_array_equal(held, x[pair * 8 + subsets[entry]])


@pytest.mark.parametrize("pattern", ["4:8", "1:2", "2:8"])
def test_table_helpers_refuse_other_patterns(pattern):
    """The x table's layout (one 8-byte word per block, four floats per entry, uint8 offsets)
    holds for 2:4 only; anything else is refused, not built wrong."""
    p = F.Pattern.parse(pattern)
    with pytest.raises(ValueError, match="2:4 only"):
        simd_nm.table_offsets(p, "index")
    with pytest.raises(ValueError, match="2:4 only"):
        simd_nm.table_dot(p.n, p.m, p.field_bits("index"), simd_nm.INDEX, 0)


@needs_avx2
def test_table_gemv_is_taken_for_2_4_read_by_index_or_rom_only():
    """The x table path serves 2:4 index and rank-ROM metadata; the unranking decoder, other
    patterns and AVX-512 hosts (auto) keep their own paths."""
    rng = np.random.default_rng(8)
    for pattern, encoding, decoder, avx2 in [("2:4", "index", None, "avx2-table"),
                                             ("2:4", "rank", "rank_rom", "avx2-table"),
                                             ("2:4", "rank", "rank_pipeline", "scalar"),
                                             ("4:8", "index", None, "avx2-group"),
                                             ("1:2", "rank", None, "avx2-group")]:
        weight = compressed(rng, 3, 64, pattern, encoding, "dense", "float32")
        plan = prepare(weight, decoder=decoder, simd="avx2")
        assert plan.gemv_path == avx2, (pattern, encoding, decoder)
        if simd_nm.wide_available() and avx2 != "scalar":
            assert prepare(weight, decoder=decoder).gemv_path == "avx512-pair"


@needs_avx512
def test_simd_choice_caps_the_path():
    rng = np.random.default_rng(4)
    for pattern, encoding, auto in [("2:4", "rank", "avx512-pair"), ("16:32", "index",
                                                                     "avx512-pair"),
                                    ("1:4", "rank", "avx2-group"),
                                    ("4:16", "index", "avx2-group")]:
        weight = compressed(rng, 3, 128, pattern, encoding, "dense", "float32")
        assert prepare(weight).gemv_path == auto, pattern
        avx2 = "avx2-table" if pattern == "2:4" else "avx2-group"
        assert prepare(weight, simd="avx2").gemv_path == avx2, pattern
        assert prepare(weight, simd="scalar").gemv_path == "scalar", pattern


def test_unknown_simd_choice_is_refused():
    weight = compressed(np.random.default_rng(5), 3, 32, "2:4", "index", "dense", "float32")
    with pytest.raises(ValueError, match="simd must be one of"):
        prepare(weight, simd="avx1024")


@pytest.mark.parametrize("pattern", ["1:2", "2:4", "4:8", "8:16", "1:4"])
def test_group_table_matches_decoded_ranks(pattern):
    """Every valid key's table row equals the format's own decoding of those G ranks."""
    p = F.Pattern.parse(pattern)
    table = simd_nm.group_position_table(p)
    geometry = simd_nm.group_geometry(p)
    bits = p.field_bits("rank")
    count = math.comb(p.m, p.n)
    per = geometry.blocks_per_group
    rng = np.random.default_rng(0)
    ranks = rng.integers(0, count, size=(200, per))
    positions = np.stack([F.rank_lut(p)[ranks[:, j]] for j in range(per)], axis=1)
    # One group per row, packed by the format; the key is the row's first G * bits bits.
    metadata = F.encode_metadata(positions, p, "rank")
    keys = [int.from_bytes(row.tobytes(), "little") & ((1 << per * bits) - 1) for row in metadata]
    decoded = F.decode_metadata(metadata, p, "rank", len(metadata), per)
    expected = (decoded + np.arange(per)[None, :, None] * p.m).reshape(len(keys), -1)
    entries = table[keys].astype(np.int64)
    np.testing.assert_array_equal(entries & 0x7F, expected)
    # Bit 7 (the sign) repeats the register-select bit of each position (the blend reads it as a sign).
    np.testing.assert_array_equal(entries < 0, (expected & geometry.select_bit) != 0)
    # The GEMM's transcoding table: the same group's bits as the format writes index metadata.
    index_bits = p.field_bits("index")
    index_rows = F.encode_metadata(positions, p, "index")
    index_keys = [int.from_bytes(row.tobytes(), "little") & ((1 << 8 * index_bits) - 1)
                  for row in index_rows]
    np.testing.assert_array_equal(simd_nm.group_index_table(p)[keys], index_keys)


@pytest.mark.parametrize("pattern", ["1:2", "2:4"])
def test_lane_unrank_matches_the_formats_decoder(pattern):
    """The pair step's in-lane unranking (:func:`simd_nm.lane_unrank_table`, indexed by
    ``rank | j << bits``) gives the positions the format's own decoder gives, for random pairs
    of groups packed by the format; and only 1:2 and 2:4 take it."""
    p = F.Pattern.parse(pattern)
    assert simd_nm.rank_unranks_in_lanes(p)
    bits, blocks = p.field_bits("rank"), 2 * (8 // p.n)  # a pair: two groups of 8 / N blocks
    rng = np.random.default_rng(1)
    ranks = rng.integers(0, math.comb(p.m, p.n), size=(300, blocks))
    positions = np.stack([F.rank_lut(p)[ranks[:, b]] for b in range(blocks)], axis=1)
    metadata = F.encode_metadata(positions, p, "rank")
    words = np.array([int.from_bytes(row[:4].tobytes(), "little") for row in metadata])
    table = simd_nm.lane_unrank_table(p)
    lanes = np.arange(16)
    fields = (words[:, None] >> (lanes // p.n * bits)) & ((1 << bits) - 1)
    window = table[fields | (lanes % p.n) << bits] + lanes // p.n * p.m
    decoded = F.decode_metadata(metadata, p, "rank", len(metadata), blocks)
    np.testing.assert_array_equal(window, (decoded + np.arange(blocks)[None, :, None] * p.m)
                                  .reshape(len(words), -1))
    others = ["4:8", "8:16", "16:32", "1:4", "2:8", "3:4"]
    assert not any(simd_nm.rank_unranks_in_lanes(F.Pattern.parse(o)) for o in others)


def test_geometry_covers_exactly_the_16_and_32_windows():
    """A pattern is supported iff 8 kept values span whole blocks (or lie in one) of 16/32."""
    for n, m in itertools.combinations(range(1, 65), 2):
        p = F.Pattern(n, m)
        geometry = simd_nm.group_geometry(p)
        if n <= 8 and 8 % n == 0:
            window = 8 // n * m
        elif n % 8 == 0:
            window = m
        else:
            window = None
        assert (geometry is not None) == (window in (16, 32)), p
        if geometry is not None:
            assert geometry.window == window
            assert geometry.pairs_fill_32 == _is_half_density(p), p


@needs_avx2
def test_unsupported_combinations_stay_scalar():
    rng = np.random.default_rng(1)
    for pattern, encoding, decoder in [("8:16", "rank", "rank_pipeline"), ("4:8", "bitmask", None),
                                       ("3:7", "rank", None), ("4:16", "rank", None)]:
        weight = compressed(rng, 5, 64, pattern, encoding, "dense", "float32")
        assert prepare(weight, decoder).gemv_path == "scalar", (pattern, encoding)


def test_non_host_numba_target_takes_the_scalar_path(monkeypatch):
    """A portable Numba target (NUMBA_CPU_NAME=generic) may lack AVX2: never emit it then."""
    monkeypatch.setattr(numba.config, "CPU_NAME", "generic")
    assert not simd_nm.available()
    assert not simd_nm.wide_available()
    weight = compressed(np.random.default_rng(2), 5, 64, "8:16", "rank", "dense", "float32")
    assert prepare(weight).gemv_path == "scalar"


@needs_avx2
@pytest.mark.parametrize("pattern", ["16:32", "8:32"])
def test_rank_without_a_table_takes_the_group_loop(pattern):
    """Rank metadata whose C(M, N) table cannot exist is unranked by the split pre-pass and
    runs the AVX2 group loop (GEMV and GEMM), unless the caller caps it to scalar."""
    weight = compressed(np.random.default_rng(6), 3, 96, pattern, "rank", "dense", "float32")
    plan = prepare(weight)
    assert (plan.decoder, plan.gemv_path, plan.gemm_path) == (
        "rank_pipeline", "avx2-group",
        "avx512-group" if simd_nm.wide_available() else "avx2-group")
    assert prepare(weight, simd="scalar").gemv_path == "scalar"


@needs_avx2
@pytest.mark.parametrize("pattern", ["16:32", "8:32"])
def test_split_unrank_tables_match_the_format(pattern):
    """The upper-half costs are C(c, s); the lower-half subset table inverts the format's rank
    encoder for every subset size; the byte tables give each set bit's block position and the
    popcount."""
    p = F.Pattern.parse(pattern)
    low_masks, low_offsets, byte_positions, byte_counts, high_costs = (
        simd_nm.split_unrank_tables(p))
    half = simd_nm.SPLIT_HALF
    for c, s in itertools.product(range(half, p.m), range(1, half + 1)):
        assert high_costs[c - half, s - 1] == (math.comb(c, s) if s <= p.n else 0), (c, s)
    rng = np.random.default_rng(7)
    for k in range(1, half):
        subsets = np.sort(np.stack([rng.choice(half, k, replace=False) for _ in range(50)]),
                          axis=1)
        ranks = F.rank_encode(subsets, F.Pattern(k, half)).astype(np.int64)
        expected = np.left_shift(1, subsets).sum(axis=1)
        np.testing.assert_array_equal(low_masks[low_offsets[k] + ranks], expected)
    assert low_masks[low_offsets[0]] == 0 and low_masks[low_offsets[half]] == 0xFFFF
    assert low_masks.size == 2**half + 1 and low_masks[-1] == 0  # one spare entry
    for j, value in [(0, 0b10110001), (3, 0xFF), (2, 0)]:
        kept = [8 * j + bit for bit in range(8) if value >> bit & 1]
        packed = byte_positions[j, value].tobytes()
        assert list(packed[:len(kept)]) == kept
        assert byte_counts[value] == len(kept)


def test_rank_24_of_32_takes_a_working_path():
    """24:32 has no rank LUT and more kept values than the split-unrank tables hold: it must
    not be sent down that path (it once was, and failed building the tables)."""
    assert not simd_nm.split_unrank_supported(F.Pattern(24, 32))
    weight = compressed(np.random.default_rng(3), 5, 96, "24:32", "rank", "dense", "float32")
    x = np.random.default_rng(4).standard_normal(96).astype(np.float32)
    assert_close(prepare(weight)(x), reference(weight, x), weight, x, 1e-5)


def _unrank_rows(row_decoder):
    @njit
    def decode(metadata, blocks, n, bits, field_mask, tables):
        out = np.zeros((metadata.shape[0], simd_nm.split_unrank_buffer_bytes(blocks, n)),
                       dtype=np.uint8)
        state = np.empty((3, simd_nm.SPLIT_BLOCKS), dtype=np.int32)
        for r in range(metadata.shape[0]):
            row_decoder(metadata[r], blocks, n, bits, field_mask, tables, state, out[r])
        return out
    return decode


@needs_avx2
@pytest.mark.parametrize("pattern", ["16:32", "8:32"])
@pytest.mark.parametrize("blocks", [1, 31, 33, 70])
def test_split_unrank_rows_equal_the_format(pattern, blocks):
    """Both position writers (byte tables; vpcompressb where the host has AVX-512 VBMI2) give
    the format's own decoding of random ranks, extremes included, for row lengths that leave
    partial batches of :data:`simd_nm.SPLIT_BLOCKS` blocks."""
    p = F.Pattern.parse(pattern)
    rng = np.random.default_rng(blocks)
    ranks = rng.integers(0, math.comb(p.m, p.n), size=(5, blocks))
    ranks[0, :2] = [0, math.comb(p.m, p.n) - 1][:blocks]
    bits = p.field_bits("rank")
    metadata = F.pack_fields(ranks.astype(np.uint64), bits)
    expected = F.decode_metadata(metadata, p, "rank", 5, blocks).reshape(5, -1)
    padded = np.pad(metadata, ((0, 0), (0, 8)))  # the kernels read fields as unaligned u64
    args = (padded, blocks, p.n, bits, np.uint64((1 << bits) - 1),
            simd_nm.split_unrank_tables(p))
    decoders = [simd_nm._split_unrank_row_bytes]
    if simd_nm.split_unrank_row is simd_nm._split_unrank_row_vbmi2:
        decoders.append(simd_nm._split_unrank_row_vbmi2)
    for decoder in decoders:
        decoded = _unrank_rows(decoder)(*args)
        np.testing.assert_array_equal(decoded[:, : blocks * p.n], expected, decoder.__name__)


@needs_avx2
@pytest.mark.parametrize(("pattern", "encoding"), [("8:16", "index"), ("2:4", "rank"),
                                                   ("16:32", "rank")])
@pytest.mark.parametrize("batch", [8, 24, 64])
def test_group_gemm_crosses_k_slices(pattern, encoding, batch):
    """Inputs wide enough that every batch walks several K-slices of x
    (simd_nm.GEMM_SLICE_X_BYTES) and a row count that leaves a partial row chunk."""
    rng = np.random.default_rng(batch)
    weight = compressed(rng, 70, 4096, pattern, encoding, "dense", "float32")
    x = nonzero(rng, (4096, batch))
    assert 4 * batch * 4096 > 2 * simd_nm.GEMM_SLICE_X_BYTES
    y = prepare(weight)(x, out=np.full((70, batch), np.nan, np.float32))
    assert_close(y, reference(weight, x), weight, x, rtol=1e-5)


@settings(max_examples=40, deadline=None)
@given(shift=st.integers(0, 15), batch=st.integers(1, 40), cols=st.integers(1, 70))
def test_gemm_operand_is_on_a_cache_line_and_padded(shift, batch, cols):
    """The GEMM passes receive x on a 64-byte boundary with its batch padded by zero columns to
    a multiple of simd_nm.GEMM_BATCH_MULTIPLE: an x that already is both is passed as it is,
    any other is copied (same values) into one."""
    from nm_kernels.cpu import _gemm_operand

    buffer = np.empty(cols * batch + 32, np.float32)
    first = -buffer.ctypes.data % 64 // 4 + shift
    x = buffer[first:first + cols * batch].reshape(cols, batch)
    x[...] = np.arange(1, x.size + 1, dtype=np.float32).reshape(x.shape)
    moved = _gemm_operand(x)
    step = simd_nm.GEMM_BATCH_MULTIPLE
    assert moved.ctypes.data % 64 == 0
    assert moved.shape == (cols, -(-batch // step) * step)
    assert (moved is x) == (shift == 0 and batch % step == 0)
    np.testing.assert_array_equal(moved[:, :batch], x)
    assert not moved[:, batch:].any()
    assert moved.flags.c_contiguous and moved.dtype == np.float32


def test_group_gemm_refuses_a_batch_off_its_multiple():
    """Called directly (not through NMPlan, which pads), the group GEMM refuses a batch that
    its passes would leave partly uncomputed instead of returning those columns unset."""
    rng = np.random.default_rng(0)
    weight = compressed(rng, 8, 64, "2:4", "index", "dense", "float32")
    plan = prepare(weight)
    if plan.gemm_path == "scalar":
        pytest.skip("no group GEMM on this CPU")
    gemm = plan.bulk.kernels[1]
    x = nonzero(rng, (64, 12))
    with pytest.raises(ValueError, match=simd_nm.GEMM_BATCH_MESSAGE):
        gemm(*plan.bulk.arrays, x, np.empty((8, 12), np.float32), *plan.bulk.gemm_scalars, 0)


CACHE_PROBE = """
import numba
import numpy as np
from compression import formats as F
from nm_kernels.cpu import prepare
rng = np.random.default_rng(0)
p = F.Pattern.parse(PATTERN)
dense = rng.standard_normal((16, 64)).astype(np.float32)
weight = F.NMTensor.from_dense(dense, F.nm_mask(np.abs(dense), p, "dense"), p, ENCODING,
                               "dense", DTYPE)
plan = prepare(weight)
plan(np.ones(64, np.float32))
plan(np.ones((64, 8), np.float32))
gemv, gemm = plan.bulk.kernels
print(sum(k.stats.cache_misses[s] for k in (gemv, gemm) for s in k.stats.cache_misses))
"""


@needs_avx2
@pytest.mark.parametrize(("pattern", "encoding", "dtype"),
                         [("2:4", "index", "float16"), ("8:16", "rank", "float32")])
def test_a_second_process_loads_the_kernels_from_numba_s_disk_cache(tmp_path, pattern,
                                                                     encoding, dtype):
    """A kernel whose closure Numba cannot key (an inner jitted helper, say) compiles again in
    every process, seconds per call of the CLI: the second process must miss nothing."""
    probe = CACHE_PROBE.replace("PATTERN", repr(pattern)).replace(
        "ENCODING", repr(encoding)).replace("DTYPE", repr(dtype))
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path),
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    misses = [int(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                                 env=env, check=True).stdout.split()[-1]) for _ in range(2)]
    assert misses[0] > 0, "the first process should have compiled (an empty cache)"
    assert misses[1] == 0


@given(key=st.integers(0, 2**32 - 1))
@settings(max_examples=200, deadline=None)
def test_nibble_spread_steps_put_field_i_in_byte_i(key):
    word = key
    for shift, mask in simd_nm.NIBBLE_SPREAD_STEPS:
        word = ((word | (word << shift)) & mask) & (2**64 - 1)
    assert list(word.to_bytes(8, "little")) == [(key >> (4 * i)) & 15 for i in range(8)]


@needs_avx2
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("spread", [True, False])
def test_eight_lane_step_spreads_or_shifts_8_16_fields_alike(monkeypatch, dtype, spread):
    """The 8:16 index step with its fields spread by scalar code (the SPREAD_NIBBLES_CPUS
    path) and with the variable shift, whichever this CPU takes by default, against float64:
    rows of 1-13 groups (main-loop trips and the single-group remainder)."""
    from nm_kernels import numba_nm as K

    cpus = {K.target_cpu_name()} if spread else set()
    monkeypatch.setattr(simd_nm, "SPREAD_NIBBLES_CPUS", frozenset(cpus))
    kind = {"float32": K.F32, "float16": K.F16_BITS}[dtype]
    dot = simd_nm.group_dot.__wrapped__(8, 16, 4, simd_nm.INDEX, kind, False)

    @njit
    def row_dots(values, meta, x, table, groups):
        out = np.empty(values.shape[0], np.float32)
        for r in range(values.shape[0]):
            out[r] = dot(values[r], meta[r], x, table, groups)
        return out

    rng = np.random.default_rng(7)
    for groups in (1, 4, 5, 13):
        weight = compressed(rng, 9, 16 * groups, F.Pattern(8, 16), "index", "dense", dtype)
        values = np.ascontiguousarray(weight.values)
        values = values if dtype == "float32" else values.view(np.uint16)
        x = nonzero(rng, (16 * groups,))
        y = row_dots(values, K.kernel_metadata(weight.metadata), x,
                     np.zeros((1, simd_nm.LANES), np.uint8), groups)
        assert_close(y, reference(weight, x), weight, x, rtol=1e-5)
