"""The AVX2 group GEMV (kernels.simd_nm) against a float64 reference and the scalar kernel."""

import itertools
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kern_helpers import assert_close, compressed, nonzero, reference

from compression import formats as F
from kernels import simd_nm
from kernels.cpu import prepare

# Window 16 (1:2 .. 8:16) and 32 (1:4, 4:16, 16:32) geometries; rank only where a group table
# exists (G * bits <= 16).
CASES = [
    ("2:4", "rank", "float32"),
    ("4:8", "rank", "float16"),
    ("8:16", "rank", "bfloat16"),
    ("1:2", "rank", "float32"),
    ("1:4", "rank", "float16"),
    ("2:4", "index", "bfloat16"),
    ("8:16", "index", "float32"),
    ("4:16", "index", "float32"),
    ("16:32", "index", "float16"),
]
SETTINGS = settings(max_examples=15, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

needs_avx2 = pytest.mark.skipif(not simd_nm.available(), reason="CPU without AVX2/FMA")


@needs_avx2
@pytest.mark.parametrize(("pattern", "encoding", "dtype"), CASES)
@SETTINGS
@given(rows=st.integers(1, 70), blocks=st.integers(0, 9), tail_width=st.integers(0, 40),
       tail=st.sampled_from(["dense", "pad"]), seed=st.integers(0, 2**32 - 1))
def test_group_gemv_matches_float64_and_scalar(pattern, encoding, dtype, rows, blocks,
                                               tail_width, tail, seed):
    """Leftover blocks (blocks not a multiple of 8/N), padded and dense tails included."""
    p = F.Pattern.parse(pattern)
    cols = blocks * p.m + tail_width % p.m or p.m
    rng = np.random.default_rng(seed)
    weight = compressed(rng, rows, cols, p, encoding, tail, dtype)
    x = nonzero(rng, (cols,))
    plan = prepare(weight)
    assert plan.gemv_path == "avx2-group"
    y = plan(x, out=np.full(rows, np.nan, np.float32))
    assert_close(y, reference(weight, x), weight, x, rtol=1e-5)
    scalar = prepare(weight, simd=False)
    assert scalar.gemv_path == "scalar"
    y_scalar = scalar(x, out=np.full(rows, np.nan, np.float32))
    assert_close(y, y_scalar.astype(np.float64), weight, x, rtol=2e-5)


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


@needs_avx2
def test_unsupported_combinations_stay_scalar():
    rng = np.random.default_rng(1)
    for pattern, encoding, decoder in [("8:16", "rank", "rank-unrank"), ("4:8", "bitmask", None),
                                       ("3:7", "rank", None), ("16:32", "rank", None)]:
        weight = compressed(rng, 5, 64, pattern, encoding, "dense", "float32")
        assert prepare(weight, decoder).gemv_path == "scalar", (pattern, encoding)


def test_non_host_numba_target_takes_the_scalar_path(monkeypatch):
    """A portable Numba target (NUMBA_CPU_NAME=generic) may lack AVX2: never emit it then."""
    monkeypatch.setattr(simd_nm.numba_config, "CPU_NAME", "generic")
    simd_nm.available.cache_clear()
    try:
        assert not simd_nm.available()
        weight = compressed(np.random.default_rng(2), 5, 64, "8:16", "rank", "dense", "float32")
        assert prepare(weight).gemv_path == "scalar"
    finally:
        simd_nm.available.cache_clear()
