"""Numba N:M kernels against a float64 reference: patterns, decoders, dtypes, tails, batches."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kern_helpers import assert_close, compressed, nonzero, reference

from compression import formats as F
from nm_kernels import numba_nm as K
from nm_kernels import simd_nm
from nm_kernels.cpu import (
    DensePlan,
    check_activations,
    default_decoder,
    gemv_load_bytes,
    gemv_lookup_table,
    prepare,
)

# (pattern, encoding, decoder, dtype): each compiles its own kernels, so the set is chosen to
# cover every decoder, dtype, field width class and an odd M instead of drawing all products.
CASES = [
    ("2:4", "index", "direct", "float32"),
    ("2:4", "rank", "rank_rom", "float16"),
    ("8:16", "rank", "rank_rom", "float32"),
    ("8:16", "rank", "rank_pipeline", "float16"),
    ("8:16", "index", "direct", "bfloat16"),
    ("16:32", "rank", "rank_pipeline", "float32"),
    ("4:8", "bitmask", "popcount", "float32"),
    ("3:7", "rank", "rank_rom", "float32"),
]
SETTINGS = settings(max_examples=12, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize(("pattern", "encoding", "decoder", "dtype"), CASES)
@SETTINGS
@given(rows=st.integers(1, 70), blocks=st.integers(0, 5), tail_width=st.integers(0, 40),
       tail=st.sampled_from(["dense", "pad"]), batch=st.sampled_from([1, 2, 5, 64]),
       seed=st.integers(0, 2**32 - 1))
def test_matches_float64_reference(pattern, encoding, decoder, dtype, rows, blocks, tail_width,
                                   tail, batch, seed):
    p = F.Pattern.parse(pattern)
    cols = blocks * p.m + tail_width % p.m or p.m
    rng = np.random.default_rng(seed)
    weight = compressed(rng, rows, cols, p, encoding, tail, dtype)
    x = nonzero(rng, (cols,) if batch == 1 else (cols, batch))
    plan = prepare(weight, decoder)
    assert plan.decoder == decoder
    out = np.full((rows,) + x.shape[1:], np.nan, dtype=np.float32)
    y = plan(x, out=out)
    assert y is out
    assert_close(y, reference(weight, x), weight, x, rtol=1e-5)


def _walked_load_bytes(weight: F.NMTensor, path: str, table: np.ndarray,
                       paired: bool = False) -> int:
    """The x and table bytes a batch-1 kernel loads, walked block by block through each row as
    the kernels' loops take them (simd_nm: whole groups of eight kept values through the
    vector step, the blocks left over and the padded one through scalar code, then the dense
    tail; ``paired``: rows two by two within each row chunk, their groups sharing x), plus the
    compressed weight."""
    p, geo = weight.pattern, weight.geometry
    geometry = simd_nm.group_geometry(p)
    blocks = geo.full_blocks + (1 if geo.blocks > geo.full_blocks else 0)
    entry = table[0].nbytes if table.shape[0] > 16 else 0
    group_bytes, block = 0, 0
    while path != "scalar" and geometry is not None:
        if geometry.blocks_per_group:
            if block + geometry.blocks_per_group > geo.full_blocks:
                break
            block += geometry.blocks_per_group
            new_groups = 1
        else:
            if block >= geo.full_blocks:
                break
            block += 1
            new_groups = geometry.groups_per_block
        for _ in range(new_groups):
            if path == "avx2-table":
                group_bytes += 2 * (16 + table.itemsize)
            elif path == "avx512-pair":
                group_bytes += (128 + 2 * entry) / 2
            else:
                group_bytes += 4 * geometry.window + entry
    scalar_bytes = 4 * p.n * (blocks - block) + 4 * geo.dense_tail_width
    total = weight.nbytes
    for start in range(0, weight.shape[0], K.ROW_CHUNK):
        r, end = start, min(weight.shape[0], start + K.ROW_CHUNK)
        while r < end:
            together = 2 if paired and r + 1 < end else 1
            total += group_bytes + together * scalar_bytes
            r += together
    return int(total)


@pytest.mark.parametrize(("pattern", "encoding"), [("2:4", "index"), ("2:4", "rank"),
                                                   ("8:16", "rank"), ("16:32", "index"),
                                                   ("4:16", "index"), ("3:7", "rank")])
@settings(max_examples=10, deadline=None)
@given(rows=st.integers(1, 9), blocks=st.integers(0, 9), tail_width=st.integers(0, 40),
       tail=st.sampled_from(["dense", "pad"]), dtype=st.sampled_from(["float32", "float16"]))
def test_gemv_load_bytes_match_a_walk_through_the_kernels_loops(pattern, encoding, rows, blocks,
                                                                tail_width, tail, dtype):
    p = F.Pattern.parse(pattern)
    cols = blocks * p.m + tail_width % p.m or p.m
    weight = compressed(np.random.default_rng(0), rows, cols, p, encoding, tail, dtype)
    plan = prepare(weight)
    part = plan.bulk
    assert plan.gemv_load_bytes == _walked_load_bytes(weight, plan.gemv_path,
                                                      part.gemv_scalars[2])
    # never less than the weight and one x per kept value or tail column
    assert plan.gemv_load_bytes >= weight.nbytes + 4 * rows * (
        weight.values.shape[1] + weight.geometry.dense_tail_width)


@settings(max_examples=10, deadline=None)
@given(rows=st.integers(1, 150), blocks=st.integers(2, 9), dtype=st.sampled_from(
    ["float32", "float16", "bfloat16"]), encoding=st.sampled_from(["index", "rank"]))
def test_gemv_load_bytes_of_the_avx512_pair_step_share_x_between_paired_rows(rows, blocks, dtype,
                                                                           encoding):
    # Counted for an AVX-512 host on any host: half-precision rows go two by two within each
    # row chunk (ROW_CHUNK 64, so 150 rows leave an odd one in the last chunk), float32 alone.
    p = F.Pattern(8, 16)
    weight = compressed(np.random.default_rng(1), rows, blocks * p.m + 5, p, encoding, "dense",
                        dtype)
    decoder = default_decoder(p, encoding)
    table = gemv_lookup_table(p, encoding, decoder, "avx512-pair",
                              K.F32 if dtype == "float32" else K.F16_BITS)
    counted = gemv_load_bytes(weight, "avx512-pair", decoder)
    assert counted == _walked_load_bytes(weight, "avx512-pair", table,
                                         paired=dtype != "float32")


def test_dense_gemv_loads_every_value_and_all_of_x_per_row():
    weight = np.ones((7, 33), dtype=np.float16)
    assert DensePlan(weight).gemv_load_bytes == 7 * 33 * (2 + 4)


@pytest.mark.parametrize("salient_kind", ["nm", "nm-vector", "csr", "nm-vector-on-scalar"])
@SETTINGS
@given(rows=st.integers(1, 40), blocks=st.integers(1, 3), batch=st.sampled_from([1, 3, 11]),
       seed=st.integers(0, 2**32 - 1))
def test_salient_side_car_is_added(salient_kind, rows, blocks, batch, seed):
    """The side-car accumulates into the bulk's output: scalar 4:32, vector-path 2:4 or CSR,
    and a vector-path 2:4 side-car on a scalar-path 4:32 bulk (x then padded for the side-car
    alone)."""
    rng = np.random.default_rng(seed)
    cols = blocks * 32 + 5
    bulk_pattern = "4:32" if salient_kind == "nm-vector-on-scalar" else "8:16"
    bulk = compressed(rng, rows, cols, bulk_pattern, "rank", "dense", "float16")
    if salient_kind == "nm":
        salient = compressed(rng, rows, cols, "4:32", "index", "pad", "float32")
    elif salient_kind in ("nm-vector", "nm-vector-on-scalar"):
        salient = compressed(rng, rows, cols, "2:4", "index", "dense", "float32")
    else:
        salient = F.CSRTensor.from_dense(nonzero(rng, (rows, cols)), rng.random((rows, cols)) < 0.1)
    weight = F.SparseWeight(bulk, salient)
    x = nonzero(rng, (cols,) if batch == 1 else (cols, batch))
    y = prepare(weight)(x, out=np.full((rows,) + x.shape[1:], np.nan, dtype=np.float32))
    ref = weight.to_dense(np.float64) @ x.astype(np.float64)
    scale = (np.abs(bulk.to_dense(np.float64)) + np.abs(salient.to_dense(np.float64))) @ np.abs(x)
    np.testing.assert_array_less(np.abs(y - ref), 1e-5 * scale)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("batch", [1, 7])
@pytest.mark.parametrize("shape", [(37, 53), (9, 2 * K.DENSE_SLICE + 77)])
def test_dense_baseline_matches_reference(dtype, batch, shape):
    """Rows shorter than one streamed slice, and rows of two slices and a part."""
    rng = np.random.default_rng(3)
    rows, cols = shape
    weight = nonzero(rng, shape).astype(F.value_dtype(dtype))
    x = nonzero(rng, (cols,) if batch == 1 else (cols, batch))
    y = DensePlan(weight)(x, out=np.full((rows,) + x.shape[1:], np.nan, np.float32))
    ref = weight.astype(np.float64) @ x.astype(np.float64)
    np.testing.assert_allclose(y, ref, rtol=0, atol=1e-5 * (np.abs(weight.astype(np.float64))
                                                            @ np.abs(x)).max())


def test_half_widening_is_exact_for_every_bit_pattern():
    """All 65536 float16 bit patterns (subnormals, +-inf, NaN) widen to float32 exactly."""
    halves = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16)
    y = DensePlan(halves.reshape(-1, 1))(np.ones(1, np.float32))
    np.testing.assert_array_equal(y, halves.astype(np.float32))  # NaN == NaN here


def test_half_widening_without_the_hardware_conversion_is_exact_too():
    """A process compiling for a generic CPU (``NUMBA_CPU_NAME=generic``: no F16C assumed)
    takes the integer rebias, and it widens every bit pattern as the hardware path does."""
    script = ("import numpy as np\n"
              "from nm_kernels import numba_nm as K\n"
              "from nm_kernels.cpu import DensePlan\n"
              "assert not K.HARDWARE_HALF\n"
              "h = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16)\n"
              "y = DensePlan(h.reshape(-1, 1))(np.ones(1, np.float32))\n"
              "np.testing.assert_array_equal(y, h.astype(np.float32))\n"
              # the generic CPU prefetches ahead of each slice: across rows, clamped at the end
              "assert K.DENSE_AHEAD_BYTES == K.DENSE_PREFETCH_BYTES > 0\n"
              "w = np.random.default_rng(0).standard_normal((9, 3 * K.DENSE_SLICE + 5))\n"
              "x = np.random.default_rng(1).standard_normal(w.shape[1]).astype(np.float32)\n"
              "y = DensePlan(w.astype(np.float32))(x)\n"
              "ref = w.astype(np.float32).astype(np.float64) @ x\n"
              "np.testing.assert_allclose(y, ref, rtol=0, atol=1e-5 * (np.abs(w) @ np.abs(x)).max())\n")
    env = {**os.environ, "NUMBA_CPU_NAME": "generic",
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]


def test_dense_prefetch_is_off_only_on_the_cpus_measured_faster_without(monkeypatch):
    monkeypatch.setattr(K.numba_config, "CPU_NAME", None)
    for cpu, expected in (("znver1", 0), ("znver4", K.DENSE_PREFETCH_BYTES),
                          ("skylake-avx512", K.DENSE_PREFETCH_BYTES)):
        monkeypatch.setattr(K.llvm_binding, "get_host_cpu_name", lambda cpu=cpu: cpu)
        assert K.dense_prefetch_bytes() == expected
    # compiling for a named CPU, the host's name does not matter
    monkeypatch.setattr(K.numba_config, "CPU_NAME", "znver1")
    assert K.dense_prefetch_bytes() == 0
    monkeypatch.setattr(K.numba_config, "CPU_NAME", "generic")
    assert K.dense_prefetch_bytes() == K.DENSE_PREFETCH_BYTES


# ------------------------------------------------------------------ bad input


@pytest.fixture
def weight():
    return compressed(np.random.default_rng(0), 6, 32, "8:16", "rank", "dense", "float32")


def test_shape_dtype_and_layout_errors_before_any_kernel(weight):
    plan = prepare(weight)
    out = np.full((6, 2), np.nan, np.float32)
    bad_inputs = {
        "does not match the weight": np.ones((31, 2), np.float32),
        "must be float32": np.ones((32, 2), np.float64),
        "C-contiguous": np.ones((2, 32), np.float32).T,
        "[in] or [in, batch]": np.ones((32, 2, 1), np.float32),
        "numpy array": [1.0] * 32,
    }
    for message, x in bad_inputs.items():
        with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
            plan(x, out=out)
        assert np.isnan(out).all(), "a kernel ran before the input was rejected"
    with pytest.raises(ValueError, match="out must be"):
        plan(np.ones((32, 2), np.float32), out=np.zeros((6, 3), np.float32))
    with pytest.raises(ValueError, match="empty batch"):
        check_activations(np.ones((32, 0), np.float32), 32)


def test_corrupt_metadata_is_rejected_when_prepared(weight):
    weight.metadata[2, 0] = 0xFF  # row 2's first 14-bit rank becomes 16383 >= C(16, 8) = 12870
    weight.metadata[2, 1] |= 0x3F
    with pytest.raises(ValueError, match="out of range"):
        prepare(weight)
    truncated = compressed(np.random.default_rng(1), 4, 32, "2:4", "index", "dense", "float32")
    truncated.metadata = truncated.metadata[:, :-1]
    with pytest.raises(ValueError, match="truncated"):
        prepare(truncated)


def test_decoder_must_fit_the_encoding(weight):
    with pytest.raises(ValueError, match="cannot read rank metadata"):
        prepare(weight, decoder="direct")
