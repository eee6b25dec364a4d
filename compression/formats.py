"""The compressed N:M format: the one definition shared by pruning, kernels and simulator.

Conventions (see DESIGN.md, "The format contract"):

* A weight is ``W[out, in]``. Blocks run along the reduction (``in``, K) dimension: each row is
  cut into groups of M consecutive input elements and exactly **N are kept** (N = kept, M = group
  size; some public pruning code uses N for the number zeroed - not here).
* Tail policy when ``in`` is not a multiple of M (``t = in % M`` trailing columns):

  - ``"dense"`` (default): the t tail columns are kept in full and stored densely in
    ``tail_values[out, t]``; the metadata covers only the ``in // M`` full blocks.
  - ``"pad"``: the tail is a last block padded with M - t masked positions that never win against a
    real one. It is encoded like any block (exactly N kept), so hardware sees uniform blocks; kept
    padding positions hold 0 and are dropped by :meth:`NMTensor.to_dense`. A tail with t < N keeps
    all of its t elements.

  Nothing in the tail is ever dropped silently.
* Metadata encodings (all bit-packed, least significant bit first), each one :class:`Encoding`
  object in ``ENCODING_REGISTRY`` (field layout, bits per block, encode, decode, limits); adding
  an encoding is adding one subclass there:

  - ``rank``: each block's kept positions c_1 < ... < c_N as one combinatorial-number-system rank
    r = sum_i C(c_i, i) (colex order), 0 <= r < C(M, N), in ceil(log2 C(M, N)) bits per block.
  - ``index``: each kept element's position in its block, ascending within the block, in
    ceil(log2 M) bits (NVIDIA's 2:4 sparse metadata is this with 2 bits).
  - ``bitmask``: M bits per block, bit j set when position j is kept.
  - ``rle``: per kept element, the positions skipped since the previous kept one of its block
    (Sparseloop's run-length encoding), in ceil(log2(M-N+1)) bits.

* Bit layout: the metadata is a ``uint8`` array ``[out, row_bytes]``. Row r holds its fields in
  order, field f at bits ``[f*b, (f+1)*b)`` of the row, bit i of a row being bit ``i % 8`` of byte
  ``i // 8`` (numpy ``packbits(bitorder="little")``). Each row starts on a byte boundary, so rows
  decode independently (row-parallel kernels, per-row DMA); unused bits at the end of a row are 0.
  The exact payload is :func:`bits_per_element`; the at most 7 padding bits a row are extra.
* Kept values: ``values[out, blocks * N]``, block after block, ascending position within a block,
  in float32, float16 or bfloat16 (numpy dtype from ``ml_dtypes``).
* Salient side-car: a second, sparser pattern (e.g. 16:256) of full-precision outliers is an
  :class:`NMTensor` of its own (``tail="pad"``, ``index`` offsets), an unstructured one a
  :class:`CSRTensor`; :class:`SparseWeight` adds it to the N:M bulk.
* Files: safetensors, with a versioned JSON header under the metadata key ``"nmsim"`` and its
  XXH3-64 checksum under ``"nmsim-xxh3"``; each part's header lists the checksum of each of its
  arrays (``"checksums": {"values": "<16 hex>", ...}``), checked on every load (version 2;
  version 1 files, which have none, still load).

Every malformed input raises :class:`FormatError` (a ``ValueError``) naming the problem.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import ml_dtypes
import numpy as np
import xxhash

from workloads.files import staged_file

FORMAT_NAME = "nmsim-nm-compressed"
# Version 2 adds an XXH3-64 checksum of every stored array and of the header; version 1 files
# (no checksums) still load, unverified.
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
HEADER_KEY = "nmsim"
HEADER_CHECKSUM_KEY = "nmsim-xxh3"
MAX_M = 256
TAIL_POLICIES = ("dense", "pad")
VALUE_DTYPES = {
    "float32": np.dtype(np.float32),
    "float16": np.dtype(np.float16),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
}
# Rank LUT (the "ROM" decoder) is used when C(M, N) is at most this many configurations.
_RANK_LUT_MAX_CONFIGS = 1 << 20
# Ranks wider than this many bits do not fit a uint64: they take the (slow) Python-int path
# here, and no decoder datapath (simulator, kernels) reads them.
UINT64_RANK_BITS = 63


class FormatError(ValueError):
    """A malformed pattern, encoding, shape, metadata stream or file."""


# --------------------------------------------------------------------------------------------
# Patterns and bit costs
# --------------------------------------------------------------------------------------------


# ASCII digits only: int() would read other scripts' digits too ("２:４").
_PATTERN_RE = re.compile(r"^\s*([0-9]{1,4})\s*:\s*([0-9]{1,4})\s*$", re.ASCII)


@dataclass(frozen=True, order=True)
class Pattern:
    """An N:M pattern: in every group of M consecutive input elements, N are kept."""

    n: int
    m: int

    def __post_init__(self) -> None:
        if not (isinstance(self.n, int) and isinstance(self.m, int)):
            raise FormatError(f"invalid pattern {self.n}:{self.m}: N and M must be integers")
        if not 1 <= self.n < self.m <= MAX_M:
            raise FormatError(
                f"invalid pattern '{self.n}:{self.m}': need 1 <= N < M <= {MAX_M} "
                "(N kept in every group of M)"
            )

    @classmethod
    def parse(cls, text: str | Pattern) -> Pattern:
        """Parse ``"N:M"`` (e.g. ``"8:16"``)."""
        if isinstance(text, Pattern):
            return text
        match = _PATTERN_RE.match(str(text))
        if not match:
            raise FormatError(f"invalid pattern '{text}': expected N:M with integers, e.g. 8:16")
        return cls(int(match.group(1)), int(match.group(2)))

    def __str__(self) -> str:
        return f"{self.n}:{self.m}"

    @property
    def density(self) -> float:
        return self.n / self.m

    @property
    def configurations(self) -> int:
        """Number of distinct blocks, C(M, N)."""
        return math.comb(self.m, self.n)

    @property
    def has_rank_lut(self) -> bool:
        """Whether :func:`rank_lut` builds a table for this pattern (C(M, N) <= 2**20)."""
        return self.configurations <= _RANK_LUT_MAX_CONFIGS

    @property
    def index_bits(self) -> int:
        """Bits of one kept element's position, ceil(log2 M)."""
        return max(1, (self.m - 1).bit_length())

    @property
    def rank_bits(self) -> int:
        """Bits of one block's rank, ceil(log2 C(M, N))."""
        return max(1, (self.configurations - 1).bit_length())

    def field_bits(self, encoding: str) -> int:
        """Width of one metadata field of ``encoding`` (see :class:`Encoding`)."""
        return encoding_of(encoding).field_bits(self)

    def fields_per_block(self, encoding: str) -> int:
        return encoding_of(encoding).fields_per_block(self)

    def bits_per_block(self, encoding: str) -> int:
        return encoding_of(encoding).bits_per_block(self)

    def bits_per_element(self, encoding: str) -> float:
        """Exact metadata bits per dense element (payload, without row padding)."""
        return self.bits_per_block(encoding) / self.m


def check_encoding(encoding: str) -> str:
    """``encoding`` if it names a registered :class:`Encoding`, else a :class:`FormatError`."""
    encoding_of(encoding)
    return encoding


def encoding_of(encoding: str) -> Encoding:
    """The registered :class:`Encoding` named ``encoding``."""
    try:
        return ENCODING_REGISTRY[encoding]
    except (KeyError, TypeError):
        raise FormatError(f"unknown encoding '{encoding}': choose one of "
                          f"{', '.join(ENCODINGS)}") from None


def check_tail(tail: str) -> str:
    if tail not in TAIL_POLICIES:
        raise FormatError(f"unknown tail policy '{tail}': choose one of {', '.join(TAIL_POLICIES)}")
    return tail


def value_dtype(name: str | np.dtype) -> np.dtype:
    """The numpy dtype for a value dtype name (float32, float16, bfloat16)."""
    for key, dtype in VALUE_DTYPES.items():
        if name == key or (not isinstance(name, str) and np.dtype(name) == dtype):
            return dtype
    raise FormatError(f"unsupported value dtype '{name}': choose one of {', '.join(VALUE_DTYPES)}")


def value_dtype_name(dtype: np.dtype) -> str:
    for key, known in VALUE_DTYPES.items():
        if np.dtype(dtype) == known:
            return key
    raise FormatError(f"unsupported value dtype '{dtype}': choose one of {', '.join(VALUE_DTYPES)}")


def bits_per_element(pattern: str | Pattern, encoding: str) -> float:
    """Exact metadata bits per dense element of ``pattern`` under ``encoding``."""
    return Pattern.parse(pattern).bits_per_element(encoding)


def pattern_summary(pattern: str | Pattern) -> dict:
    """One record of metadata costs for a pattern (what ``nmsim formats`` prints)."""
    p = Pattern.parse(pattern)
    return {
        "pattern": str(p),
        "n": p.n,
        "m": p.m,
        "density": p.density,
        "configurations": p.configurations,
        **{f"{name}_bits_per_element": p.bits_per_element(name) for name in ENCODINGS},
    }


# --------------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BlockGeometry:
    """How a row of ``in_features`` splits into encoded blocks and a tail under a policy."""

    in_features: int
    pattern: Pattern
    tail: str

    @property
    def full_blocks(self) -> int:
        return self.in_features // self.pattern.m

    @property
    def tail_width(self) -> int:
        return self.in_features % self.pattern.m

    @property
    def blocks(self) -> int:
        """Blocks carried in the metadata (a padded tail counts as one)."""
        return self.full_blocks + (1 if self.tail == "pad" and self.tail_width else 0)

    @property
    def dense_tail_width(self) -> int:
        return self.tail_width if self.tail == "dense" else 0

    def row_bytes(self, encoding: str) -> int:
        return -(-self.blocks * self.pattern.bits_per_block(encoding) // 8)


def _check_shape(shape) -> tuple[int, int]:
    try:
        rows, cols = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise FormatError(f"shape must be (out, in), got {shape!r}") from None
    if rows <= 0 or cols <= 0:
        raise FormatError(f"shape must be positive (out, in), got {shape!r}")
    return rows, cols


# --------------------------------------------------------------------------------------------
# Masks
# --------------------------------------------------------------------------------------------


def nm_mask(scores: np.ndarray, pattern: str | Pattern, tail: str = "dense") -> np.ndarray:
    """Boolean mask keeping the N highest-scoring of every M consecutive inputs of each row.

    ``scores`` is ``[out, in]`` (higher = more important). Ties go to the lower input index, so the
    mask is deterministic. The tail follows ``tail`` (module docstring): all kept for ``"dense"``,
    the top min(N, t) for ``"pad"``.
    """
    p = Pattern.parse(pattern)
    check_tail(tail)
    scores = np.asarray(scores)
    if scores.dtype == ml_dtypes.bfloat16:
        scores = scores.astype(np.float32)
    if scores.ndim != 2:
        raise FormatError(f"scores must be 2-D [out, in], got shape {scores.shape}")
    _check_shape(scores.shape)
    if not np.issubdtype(scores.dtype, np.number):
        raise FormatError(f"scores must be numeric, got dtype {scores.dtype}")
    if not np.issubdtype(scores.dtype, np.floating):
        scores = scores.astype(np.float64)
    if np.isnan(scores).any():
        raise FormatError("scores contain NaN; a mask needs a total order")
    rows, cols = scores.shape
    geo = BlockGeometry(cols, p, tail)
    if cols == geo.blocks * p.m:  # no tail, or nothing to pad: the scores themselves
        work = np.ascontiguousarray(scores)
    else:
        work = np.full((rows, geo.blocks * p.m), -np.inf, dtype=scores.dtype)
        used = min(cols, geo.blocks * p.m)
        work[:, :used] = scores[:, :used]
    blocks = work.reshape(rows, geo.blocks, p.m)
    # Keep everything above the N-th largest score, then the lowest-index ties equal to it.
    # Padding (-inf) loses to every real element and, among itself, keeps the lowest index too.
    nth = np.partition(blocks, p.m - p.n, axis=-1)[..., p.m - p.n, None]
    above = blocks > nth
    ties = blocks == nth
    need = p.n - np.count_nonzero(above, axis=-1)
    block_mask = above | ties
    # Only blocks with more ties than places left need the lowest-index rule (rare for real
    # scores, so the cumulative count runs on those blocks alone).
    crowded = np.nonzero(np.count_nonzero(ties, axis=-1) > need)
    if crowded[0].size:
        tied = ties[crowded]
        first = np.cumsum(tied, axis=-1, dtype=np.int16) <= need[crowded][:, None]
        block_mask[crowded] = above[crowded] | (tied & first)
    mask = np.ones((rows, cols), dtype=bool)
    mask[:, : geo.full_blocks * p.m] = block_mask[:, : geo.full_blocks].reshape(rows, -1)
    if tail == "pad" and geo.tail_width:
        mask[:, geo.full_blocks * p.m :] = block_mask[:, -1, : geo.tail_width]
    return mask


def check_nm_mask(mask: np.ndarray, pattern: str | Pattern, tail: str = "dense") -> None:
    """Raise unless ``mask`` keeps exactly N of every M (and its tail follows the policy)."""
    p = Pattern.parse(pattern)
    check_tail(tail)
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.dtype != bool:
        raise FormatError(f"mask must be a 2-D bool array, got {mask.dtype} {mask.shape}")
    rows, cols = _check_shape(mask.shape)
    geo = BlockGeometry(cols, p, tail)
    full = np.count_nonzero(
        mask[:, : geo.full_blocks * p.m].reshape(rows, geo.full_blocks, p.m), axis=-1)
    bad = np.argwhere(full != p.n)
    if bad.size:
        r, b = bad[0]
        raise FormatError(
            f"mask is not {p}: row {r} block {b} keeps {full[r, b]} of {p.m} "
            f"({len(bad)} bad blocks)"
        )
    if geo.tail_width:
        kept = np.count_nonzero(mask[:, geo.full_blocks * p.m :], axis=-1)
        want = geo.tail_width if tail == "dense" else min(p.n, geo.tail_width)
        bad_rows = np.flatnonzero(kept != want)
        if bad_rows.size:
            raise FormatError(
                f"mask tail of row {bad_rows[0]} keeps {kept[bad_rows[0]]} of {geo.tail_width}, "
                f"tail policy '{tail}' needs {want}"
            )


# --------------------------------------------------------------------------------------------
# Bit packing (row-aligned, LSB first)
# --------------------------------------------------------------------------------------------


def pack_fields(fields: np.ndarray, bits: int) -> np.ndarray:
    """Pack ``fields[rows, k]`` (unsigned, < 2**bits, bits <= 64) into ``uint8[rows, row_bytes]``."""
    rows, k = fields.shape
    row_bytes = -(-k * bits // 8)
    if bits in (8, 16, 32, 64):  # whole bytes: a little-endian view is the layout
        return fields.astype(f"<u{bits // 8}").view(np.uint8).reshape(rows, row_bytes)
    if 8 % bits == 0:  # several fields per byte
        per_byte = 8 // bits
        padded = np.zeros((rows, row_bytes * per_byte), dtype=np.uint8)
        padded[:, :k] = fields
        groups = padded.reshape(rows, row_bytes, per_byte)
        out = groups[..., 0].copy()
        for j in range(1, per_byte):
            out |= groups[..., j] << np.uint8(j * bits)
        return out
    fields = fields.astype(np.uint64, copy=False)
    bit_planes = np.empty((rows, k, bits), dtype=np.uint8)
    for b in range(bits):
        np.bitwise_and(np.right_shift(fields, np.uint64(b)), np.uint64(1), out=bit_planes[..., b],
                       casting="unsafe")
    return np.packbits(bit_planes.reshape(rows, k * bits), axis=-1, bitorder="little")


def unpack_fields(packed: np.ndarray, k: int, bits: int) -> np.ndarray:
    """Inverse of :func:`pack_fields`: ``uint64[rows, k]``. Raises if padding bits are set."""
    rows = packed.shape[0]
    if bits in (8, 16, 32, 64) or 8 % bits == 0:
        if bits >= 8:
            fields = packed.view(f"<u{bits // 8}").astype(np.uint64)
        else:
            per_byte = 8 // bits
            field_mask = np.uint8((1 << bits) - 1)
            groups = np.empty((rows, packed.shape[1], per_byte), dtype=np.uint8)
            for j in range(per_byte):
                np.bitwise_and(packed >> np.uint8(j * bits), field_mask, out=groups[..., j])
            fields = groups.reshape(rows, -1)
        if fields[:, k:].any():
            row = int(np.flatnonzero(fields[:, k:].any(axis=-1))[0])
            raise FormatError(f"metadata row {row} has non-zero padding bits after its last field")
        return fields[:, :k].astype(np.uint64)
    bit_rows = np.unpackbits(packed, axis=-1, bitorder="little")
    if bit_rows[:, k * bits :].any():
        row = int(np.flatnonzero(bit_rows[:, k * bits :].any(axis=-1))[0])
        raise FormatError(f"metadata row {row} has non-zero padding bits after its last field")
    planes = bit_rows[:, : k * bits].reshape(rows, k, bits)
    fields = np.zeros((rows, k), dtype=np.uint64)
    for b in range(bits):
        fields |= planes[..., b].astype(np.uint64) << np.uint64(b)
    return fields


# --------------------------------------------------------------------------------------------
# Rank encoding (combinatorial number system)
# --------------------------------------------------------------------------------------------


@lru_cache(maxsize=64)
def _binomial_table(m: int, n: int, big: bool) -> np.ndarray:
    """C(c, i) for 0 <= c < m, 0 <= i <= n, as uint64 or Python ints (object)."""
    table = np.array([[math.comb(c, i) for i in range(n + 1)] for c in range(m)],
                     dtype=object if big else np.uint64)
    table.setflags(write=False)
    return table


def binomial_table(pattern: str | Pattern) -> np.ndarray:
    """``uint64[M, N+1]`` of C(c, i): the one table that rank encoders, unranking decoders and
    kernels share. Only for patterns whose ranks fit 63 bits (all with M <= 64)."""
    p = Pattern.parse(pattern)
    if _rank_is_big(p):
        raise FormatError(f"{p} ranks need {p.rank_bits} bits; the uint64 binomial table "
                          f"holds at most {UINT64_RANK_BITS}")
    return _binomial_table(p.m, p.n, False)


def _rank_is_big(p: Pattern) -> bool:
    return p.rank_bits > UINT64_RANK_BITS


def rank_encode(positions: np.ndarray, pattern: Pattern) -> np.ndarray:
    """Ranks of blocks given sorted kept positions ``[..., N]`` (uint64, or object if > 63 bits)."""
    big = _rank_is_big(pattern)
    table = _binomial_table(pattern.m, pattern.n, big)
    order = np.arange(1, pattern.n + 1)
    return table[positions, order].sum(axis=-1, dtype=object if big else np.uint64)


def _rank_unrank(ranks: np.ndarray, pattern: Pattern) -> np.ndarray:
    """Greedy colex unranking, vectorised over blocks: one step per candidate position."""
    n, m = pattern.n, pattern.m
    big = _rank_is_big(pattern)
    table = _binomial_table(m, n, big)
    remaining = ranks.astype(object if big else np.uint64, copy=True)
    slot = np.full(ranks.shape, n, dtype=np.int64)  # next kept element to find (1-based)
    positions = np.zeros(ranks.shape + (n,), dtype=np.int64)
    flat_pos = positions.reshape(-1, n)
    flat_rem = remaining.reshape(-1)
    flat_slot = slot.reshape(-1)
    for c in range(m - 1, -1, -1):
        active = flat_slot > 0
        cost = table[c][flat_slot]
        take = active & np.asarray(cost <= flat_rem, dtype=bool)
        idx = np.flatnonzero(take)
        flat_pos[idx, flat_slot[idx] - 1] = c
        flat_rem[idx] = flat_rem[idx] - cost[idx]
        flat_slot[idx] -= 1
    return positions


@lru_cache(maxsize=16)
def rank_lut(pattern: Pattern) -> np.ndarray:
    """All C(M, N) blocks' sorted positions by rank, ``uint8[C, N]`` (the ROM decoder's table)."""
    if not pattern.has_rank_lut:
        raise FormatError(
            f"rank LUT for {pattern} would hold {pattern.configurations} entries; "
            f"use the unranking decoder"
        )
    lut = _rank_unrank(np.arange(pattern.configurations, dtype=np.uint64), pattern)
    lut = lut.astype(np.uint8 if pattern.m <= 256 else np.uint16)
    lut.setflags(write=False)
    return lut


def rank_decode(ranks: np.ndarray, pattern: Pattern) -> np.ndarray:
    """Sorted kept positions ``int64[..., N]`` from ranks; raises on rank >= C(M, N)."""
    limit = pattern.configurations
    too_big = np.flatnonzero(np.asarray(ranks >= limit, dtype=bool).reshape(-1))
    if too_big.size:
        bad = ranks.reshape(-1)[too_big[0]]
        raise FormatError(
            f"rank {bad} at block {too_big[0]} is out of range for {pattern} "
            f"(must be < C({pattern.m},{pattern.n}) = {limit})"
        )
    if limit <= _RANK_LUT_MAX_CONFIGS:
        return rank_lut(pattern)[ranks.astype(np.int64)].astype(np.int64)
    return _rank_unrank(ranks, pattern)


def _pack_big_fields(fields: np.ndarray, bits: int) -> np.ndarray:
    """Row-aligned packing for fields wider than 64 bits (Python ints; slow path)."""
    rows, k = fields.shape
    row_bytes = -(-k * bits // 8)
    out = np.zeros((rows, row_bytes), dtype=np.uint8)
    for r in range(rows):
        acc = 0
        for f in range(k - 1, -1, -1):
            acc = (acc << bits) | int(fields[r, f])
        out[r] = np.frombuffer(acc.to_bytes(row_bytes, "little"), dtype=np.uint8)
    return out


def _unpack_big_fields(packed: np.ndarray, k: int, bits: int) -> np.ndarray:
    rows = packed.shape[0]
    fields = np.empty((rows, k), dtype=object)
    mask = (1 << bits) - 1
    for r in range(rows):
        acc = int.from_bytes(packed[r].tobytes(), "little")
        for f in range(k):
            fields[r, f] = acc & mask
            acc >>= bits
        if acc:
            raise FormatError(f"metadata row {r} has non-zero padding bits after its last field")
    return fields


# --------------------------------------------------------------------------------------------
# Encode / decode metadata
# --------------------------------------------------------------------------------------------


class Encoding:
    """One metadata encoding: its field layout, exact bit cost, encoder and decoder.

    A block's metadata is ``fields_per_block`` fields of ``field_bits`` bits, packed by
    :func:`pack_fields` (row-aligned, LSB first). Subclasses give the layout and the two
    conversions between sorted kept positions and fields; packing and the checks of the
    decoded positions are shared. ``max_field_bits`` is the widest field a decoder datapath of
    this encoding reads (``None``: no limit); ``description`` is one line for ``nmsim formats``.
    """

    name = ""
    description = ""
    max_field_bits: int | None = None

    def field_bits(self, p: Pattern) -> int:
        raise NotImplementedError

    def fields_per_block(self, p: Pattern) -> int:
        return 1

    def bits_per_block(self, p: Pattern) -> int:
        return self.field_bits(p) * self.fields_per_block(p)

    def hardware_fields(self, p: Pattern) -> tuple[int, int]:
        """(fields per block, bits per field) as a decoder circuit reads them."""
        return self.fields_per_block(p), self.field_bits(p)

    def to_fields(self, positions: np.ndarray, p: Pattern) -> np.ndarray:
        """Fields ``[rows, blocks, fields_per_block]`` of checked positions ``[rows, blocks, N]``."""
        raise NotImplementedError

    def from_fields(self, fields: np.ndarray, p: Pattern) -> np.ndarray:
        """Checked sorted positions ``int64[rows, blocks, N]`` from fields (raises on bad ones)."""
        raise NotImplementedError

    def encode(self, positions: np.ndarray, p: Pattern) -> np.ndarray:
        fields = self.to_fields(positions, p).reshape(positions.shape[0], -1)
        return pack_fields(fields, self.field_bits(p))

    def unpack(self, metadata: np.ndarray, p: Pattern, rows: int, blocks: int) -> np.ndarray:
        """The hardware fields ``[rows, blocks, k]`` of a checked-shape metadata stream."""
        per_block, bits = self.hardware_fields(p)
        return unpack_fields(metadata, blocks * per_block, bits).reshape(rows, blocks, per_block)

    def decode(self, metadata: np.ndarray, p: Pattern, rows: int, blocks: int) -> np.ndarray:
        return self.from_fields(self.unpack(metadata, p, rows, blocks), p)


class RankEncoding(Encoding):
    """The block's colex rank r = sum_i C(c_i, i), ceil(log2 C(M, N)) bits per block."""

    name = "rank"
    description = "ceil(log2 C(M,N)) bits/block"
    max_field_bits = UINT64_RANK_BITS

    def field_bits(self, p):
        return p.rank_bits

    def to_fields(self, positions, p):
        return rank_encode(positions.astype(np.int64), p)[..., None]

    def from_fields(self, fields, p):
        return rank_decode(fields[..., 0], p)

    def encode(self, positions, p):
        if not _rank_is_big(p):
            return super().encode(positions, p)
        return _pack_big_fields(self.to_fields(positions, p)[..., 0], p.rank_bits)

    def unpack(self, metadata, p, rows, blocks):
        if not _rank_is_big(p):
            return super().unpack(metadata, p, rows, blocks)
        return _unpack_big_fields(metadata, blocks, p.rank_bits).reshape(rows, blocks, 1)


class IndexEncoding(Encoding):
    """Each kept element's position, ceil(log2 M) bits, ascending within the block."""

    name = "index"
    description = "ceil(log2 M) bits/kept element"

    def field_bits(self, p):
        return p.index_bits

    def fields_per_block(self, p):
        return p.n

    def to_fields(self, positions, p):
        return positions

    def from_fields(self, fields, p):
        positions = fields.astype(np.int64)
        _check_positions(positions, p)
        return positions


class BitmaskEncoding(Encoding):
    """M bits per block, bit j set when position j is kept (read as M one-bit fields)."""

    name = "bitmask"
    description = "M bits/block"

    def field_bits(self, p):
        return p.m

    def hardware_fields(self, p):
        return p.m, 1  # one field per mask bit keeps M > 64 in range

    def encode(self, positions, p):
        rows, blocks, _ = positions.shape
        bits = np.zeros((rows, blocks, p.m), dtype=np.uint8)
        np.put_along_axis(bits, positions.astype(np.int64), 1, axis=-1)
        return np.packbits(bits.reshape(rows, blocks * p.m), axis=-1, bitorder="little")

    def unpack(self, metadata, p, rows, blocks):
        bit_rows = np.unpackbits(metadata, axis=-1, bitorder="little")
        if bit_rows[:, blocks * p.m :].any():
            raise FormatError("bitmask metadata has non-zero padding bits after the last block")
        return bit_rows[:, : blocks * p.m].reshape(rows, blocks, p.m)

    def from_fields(self, fields, p):
        bits = np.asarray(fields).astype(bool)
        counts = np.count_nonzero(bits, axis=-1)
        bad = np.argwhere(counts != p.n)
        if bad.size:
            r, b = bad[0]
            raise FormatError(
                f"bitmask of row {r} block {b} has popcount {counts[r, b]}, {p} needs {p.n}"
            )
        return _kept_positions(bits, p.n)


class RunLengthEncoding(Encoding):
    """Run-length encoding of skipped positions, per block (Sparseloop's "RLE" format: each
    nonzero carries the number of zeros since the previous nonzero; Y. N. Wu, P.-A. Tsai,
    A. Parashar, V. Sze, J. S. Emer, "Sparseloop: An Analytical Approach to Sparse Tensor
    Accelerator Modeling", MICRO 2022). Kept element k stores c_k - c_{k-1} - 1 (c_{-1} = -1):
    the pruned positions skipped since the previous kept one of its block. A block skips M - N
    positions in all, so each run fits a fixed ceil(log2(M-N+1)) bits; runs restart at every
    block, so blocks (and rows) decode independently."""

    name = "rle"
    description = "ceil(log2(M-N+1)) bits/kept element (zeros skipped since the previous kept)"

    def field_bits(self, p):
        return max(1, (p.m - p.n).bit_length())

    def fields_per_block(self, p):
        return p.n

    def to_fields(self, positions, p):
        previous = np.concatenate([np.full(positions.shape[:-1] + (1,), -1, np.int64),
                                   positions[..., :-1].astype(np.int64)], axis=-1)
        return positions.astype(np.int64) - previous - 1

    def from_fields(self, fields, p):
        positions = np.cumsum(np.asarray(fields, dtype=np.int64) + 1, axis=-1) - 1
        bad = np.argwhere(positions[..., -1] >= p.m)
        if bad.size:
            r, b = bad[0][:2]
            raise FormatError(f"run lengths of row {r} block {b} skip "
                              f"{positions[r, b, -1] + 1 - p.n} positions; {p} skips "
                              f"{p.m - p.n}")
        return positions


# The registry: every encoding the project knows, by name (add one here, and nowhere else in
# this module). ``ENCODINGS`` is the tuple of names that CLIs, configs and tests offer.
ENCODING_REGISTRY: dict[str, Encoding] = {
    e.name: e for e in (RankEncoding(), IndexEncoding(), BitmaskEncoding(),
                        RunLengthEncoding())}
ENCODINGS = tuple(ENCODING_REGISTRY)


def encode_metadata(positions: np.ndarray, pattern: str | Pattern, encoding: str) -> np.ndarray:
    """Pack sorted kept positions ``[rows, blocks, N]`` into ``uint8[rows, row_bytes]``."""
    p = Pattern.parse(pattern)
    codec = encoding_of(encoding)
    positions = np.asarray(positions)
    if positions.ndim != 3 or positions.shape[2] != p.n:
        raise FormatError(f"positions must be [rows, blocks, {p.n}], got {positions.shape}")
    _check_positions(positions, p)
    return codec.encode(positions, p)


def decode_metadata(
    metadata: np.ndarray, pattern: str | Pattern, encoding: str, rows: int, blocks: int
) -> np.ndarray:
    """Unpack and validate metadata into sorted kept positions ``int64[rows, blocks, N]``."""
    p = Pattern.parse(pattern)
    codec = encoding_of(encoding)
    metadata = np.asarray(metadata)
    want = (rows, -(-blocks * codec.bits_per_block(p) // 8))
    if metadata.dtype != np.uint8 or metadata.ndim != 2:
        raise FormatError(f"metadata must be a 2-D uint8 array, got {metadata.dtype} "
                          f"{metadata.shape}")
    if metadata.shape != want:
        kind = "truncated" if metadata.size < want[0] * want[1] else "oversized"
        raise FormatError(
            f"metadata stream {kind}: shape {metadata.shape}, {p} {encoding} with {rows} rows of "
            f"{blocks} blocks needs {want}"
        )
    return codec.decode(metadata, p, rows, blocks)


def _kept_positions(keep: np.ndarray, n: int) -> np.ndarray:
    """Ascending kept positions ``int64[rows, blocks, N]`` of a ``bool[rows, blocks, M]`` keep
    array that holds exactly N per block (row-major nonzero order is ascending per block)."""
    rows, blocks, m = keep.shape
    flat = np.flatnonzero(keep).reshape(rows * blocks, n)
    flat -= (np.arange(rows * blocks, dtype=np.int64) * m)[:, None]  # minus each block's start
    return flat.reshape(rows, blocks, n)


def _check_positions(positions: np.ndarray, p: Pattern) -> None:
    if positions.size == 0:
        return
    if positions.min() < 0 or positions.max() >= p.m:
        raise FormatError(f"index out of range for {p}: positions must lie in [0, {p.m})")
    if p.n > 1:
        steps = np.diff(positions, axis=-1)
        bad = np.argwhere(steps <= 0)
        if bad.size:
            r, b = bad[0][:2]
            what = "duplicate" if steps[tuple(bad[0])] == 0 else "unsorted"
            raise FormatError(
                f"{what} indices in row {r} block {b}: {positions[r, b].tolist()} "
                "(kept positions must be strictly ascending)"
            )


# --------------------------------------------------------------------------------------------
# Compressed tensors
# --------------------------------------------------------------------------------------------


@dataclass
class NMTensor:
    """A weight ``[out, in]`` in compressed N:M form.

    ``values[out, blocks*N]`` holds the kept values, ``metadata[out, row_bytes]`` their positions
    in ``encoding``, ``tail_values[out, t]`` the dense tail (``tail="dense"``; width 0 otherwise).
    Construction validates everything; use :meth:`from_dense` to build one from a weight and mask.
    """

    shape: tuple[int, int]
    pattern: Pattern
    encoding: str
    tail: str
    values: np.ndarray
    metadata: np.ndarray
    tail_values: np.ndarray
    _positions: np.ndarray | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.shape = _check_shape(self.shape)
        self.pattern = Pattern.parse(self.pattern)
        check_encoding(self.encoding)
        check_tail(self.tail)
        rows = self.shape[0]
        geo = self.geometry
        dtype = value_dtype(self.values.dtype)
        if self.values.shape != (rows, geo.blocks * self.pattern.n):
            raise FormatError(
                f"values shape {self.values.shape} does not match {self.pattern} on "
                f"{self.shape}: expected {(rows, geo.blocks * self.pattern.n)}"
            )
        if self.tail_values.shape != (rows, geo.dense_tail_width):
            raise FormatError(
                f"tail_values shape {self.tail_values.shape} does not match tail policy "
                f"'{self.tail}' on {self.shape}: expected {(rows, geo.dense_tail_width)}"
            )
        if self.tail_values.dtype != dtype:
            raise FormatError(
                f"tail_values dtype {self.tail_values.dtype} differs from values dtype {dtype}"
            )
        positions = decode_metadata(self.metadata, self.pattern, self.encoding, rows, geo.blocks)
        if self.tail == "pad" and geo.tail_width:
            padded = positions[:, -1, :] >= geo.tail_width
            last_vals = self.values[:, -self.pattern.n :].astype(np.float32)
            if (padded & (last_vals != 0)).any():
                raise FormatError("non-zero value stored at a padding position of the tail block")
        # Cached at one byte per kept element (M <= 256): the int64 decode would cost 8 bytes.
        self._positions = positions.astype(np.uint8)

    @property
    def geometry(self) -> BlockGeometry:
        return BlockGeometry(self.shape[1], self.pattern, self.tail)

    @property
    def dtype(self) -> str:
        return value_dtype_name(self.values.dtype)

    @property
    def positions(self) -> np.ndarray:
        """Decoded kept positions within each block, ``uint8[out, blocks, N]``."""
        return self._positions

    @property
    def nbytes(self) -> int:
        """Bytes stored: values + metadata (with row padding) + dense tail."""
        return self.values.nbytes + self.metadata.nbytes + self.tail_values.nbytes

    @classmethod
    def from_dense(
        cls,
        weight: np.ndarray,
        mask: np.ndarray,
        pattern: str | Pattern,
        encoding: str = "rank",
        tail: str = "dense",
        dtype: str = "float16",
    ) -> NMTensor:
        """Compress ``weight[out, in]`` keeping ``mask`` (exactly N:M, see :func:`nm_mask`)."""
        p = Pattern.parse(pattern)
        check_encoding(encoding)
        check_tail(tail)
        vdtype = value_dtype(dtype)
        weight = np.asarray(weight)
        mask = np.asarray(mask)
        if weight.shape != mask.shape:
            raise FormatError(f"weight shape {weight.shape} does not match mask {mask.shape}")
        check_nm_mask(mask, p, tail)
        rows, cols = weight.shape
        geo = BlockGeometry(cols, p, tail)
        width = geo.blocks * p.m
        if cols == width:  # no tail or padding: work on the arrays themselves
            w = np.ascontiguousarray(weight.astype(vdtype, copy=False))
            k = np.ascontiguousarray(mask)
        else:
            w = np.zeros((rows, width), dtype=vdtype)
            k = np.zeros((rows, width), dtype=bool)
            used = min(cols, width)
            w[:, :used] = weight[:, :used].astype(vdtype)
            k[:, :used] = mask[:, :used]
        if tail == "pad" and geo.tail_width and geo.tail_width < p.n:
            # Fill the tail block up to N with the first padding positions (value 0).
            pad_cols = np.arange(cols, cols + p.n - geo.tail_width)
            k[:, pad_cols] = True
        positions = _kept_positions(k.reshape(rows, geo.blocks, p.m), p.n)
        values = np.take_along_axis(w.reshape(rows, geo.blocks, p.m), positions, axis=-1)
        metadata = encode_metadata(positions, p, encoding)
        tail_values = np.ascontiguousarray(
            weight[:, cols - geo.dense_tail_width :].astype(vdtype)
            if geo.dense_tail_width
            else np.zeros((rows, 0), dtype=vdtype)
        )
        return cls(
            (rows, cols), p, encoding, tail, values.reshape(rows, -1), metadata, tail_values
        )

    def to_dense(self, dtype=np.float32) -> np.ndarray:
        """The dense ``[out, in]`` weight (zeros where pruned)."""
        rows, cols = self.shape
        geo = self.geometry
        p = self.pattern
        dense = np.zeros((rows, geo.blocks, p.m), dtype=dtype)
        vals = self.values.astype(dtype).reshape(rows, geo.blocks, p.n)
        np.put_along_axis(dense, self._positions, vals, axis=-1)
        dense = dense.reshape(rows, geo.blocks * p.m)[:, : min(cols, geo.blocks * p.m)]
        if geo.dense_tail_width:
            dense = np.concatenate([dense, self.tail_values.astype(dtype)], axis=1)
        return np.ascontiguousarray(dense)

    def mask(self) -> np.ndarray:
        """The boolean keep-mask ``[out, in]`` (dense tail all kept, padding dropped)."""
        rows, cols = self.shape
        geo = self.geometry
        keep = np.zeros((rows, geo.blocks, self.pattern.m), dtype=bool)
        np.put_along_axis(keep, self._positions, True, axis=-1)
        keep = keep.reshape(rows, -1)[:, : min(cols, geo.blocks * self.pattern.m)]
        if geo.dense_tail_width:
            keep = np.concatenate([keep, np.ones((rows, geo.dense_tail_width), bool)], axis=1)
        return keep

    def header(self) -> dict:
        return {
            "kind": "nm",
            "shape": list(self.shape),
            "pattern": str(self.pattern),
            "encoding": self.encoding,
            "tail": self.tail,
            "dtype": self.dtype,
        }

    def arrays(self) -> dict[str, np.ndarray]:
        return {"values": self.values, "metadata": self.metadata, "tail_values": self.tail_values}

    @classmethod
    def from_arrays(cls, header: dict, arrays: dict[str, np.ndarray]) -> NMTensor:
        _require_keys(header, ("shape", "pattern", "encoding", "tail", "dtype"), "nm header")
        _require_keys(arrays, ("values", "metadata", "tail_values"), "nm tensor")
        dtype = value_dtype(header["dtype"])
        for name in ("values", "tail_values"):
            if arrays[name].dtype != dtype:
                raise FormatError(f"{name} dtype {arrays[name].dtype} differs from header "
                                  f"dtype {header['dtype']}")
        return cls(tuple(header["shape"]), Pattern.parse(header["pattern"]), header["encoding"],
                   header["tail"], arrays["values"], arrays["metadata"], arrays["tail_values"])


@dataclass
class CSRTensor:
    """Unstructured sparse ``[out, in]`` (the unstructured salient baseline): CSR, fp32 values."""

    shape: tuple[int, int]
    indptr: np.ndarray  # int64[out + 1]
    indices: np.ndarray  # int32[nnz], strictly ascending within a row
    values: np.ndarray  # float32[nnz]

    def __post_init__(self) -> None:
        self.shape = _check_shape(self.shape)
        rows, cols = self.shape
        if self.indptr.shape != (rows + 1,) or self.indptr[0] != 0:
            raise FormatError(f"CSR indptr must have {rows + 1} entries starting at 0")
        if (np.diff(self.indptr) < 0).any():
            raise FormatError("CSR indptr is not non-decreasing")
        nnz = int(self.indptr[-1])
        if self.indices.shape != (nnz,) or self.values.shape != (nnz,):
            raise FormatError(f"CSR indices/values must hold indptr[-1] = {nnz} entries, got "
                              f"{self.indices.shape} and {self.values.shape}")
        if self.values.dtype != np.float32:
            raise FormatError(f"CSR values must be float32, got {self.values.dtype}")
        if nnz and (self.indices.min() < 0 or self.indices.max() >= cols):
            raise FormatError(f"CSR column index out of range [0, {cols})")
        row_of = np.repeat(np.arange(rows), np.diff(self.indptr))
        same_row = row_of[1:] == row_of[:-1]
        if (same_row & (np.diff(self.indices) <= 0)).any():
            raise FormatError("CSR column indices are unsorted or duplicated within a row")

    @classmethod
    def from_dense(cls, weight: np.ndarray, mask: np.ndarray) -> CSRTensor:
        weight = np.asarray(weight)
        if weight.shape != np.shape(mask):
            raise FormatError(f"weight shape {weight.shape} does not match mask {np.shape(mask)}")
        rows, cols = np.nonzero(mask)
        indptr = np.zeros(weight.shape[0] + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=weight.shape[0]), out=indptr[1:])
        return cls(weight.shape, indptr, cols.astype(np.int32),
                   weight[rows, cols].astype(np.float32))

    @property
    def nbytes(self) -> int:
        return self.indptr.nbytes + self.indices.nbytes + self.values.nbytes

    def to_dense(self, dtype=np.float32) -> np.ndarray:
        dense = np.zeros(self.shape, dtype=dtype)
        rows = np.repeat(np.arange(self.shape[0]), np.diff(self.indptr))
        dense[rows, self.indices] = self.values.astype(dtype)
        return dense

    def header(self) -> dict:
        return {"kind": "csr", "shape": list(self.shape)}

    def arrays(self) -> dict[str, np.ndarray]:
        return {"indptr": self.indptr, "indices": self.indices, "values": self.values}

    @classmethod
    def from_arrays(cls, header: dict, arrays: dict[str, np.ndarray]) -> CSRTensor:
        _require_keys(header, ("shape",), "csr header")
        _require_keys(arrays, ("indptr", "indices", "values"), "csr tensor")
        return cls(tuple(header["shape"]), arrays["indptr"], arrays["indices"], arrays["values"])


@dataclass
class SparseWeight:
    """W = B + S: an N:M bulk ``B`` plus an optional salient side-car ``S`` (N:M or CSR)."""

    bulk: NMTensor
    salient: NMTensor | CSRTensor | None = None

    def __post_init__(self) -> None:
        if self.salient is not None and tuple(self.salient.shape) != tuple(self.bulk.shape):
            raise FormatError(f"salient side-car shape {self.salient.shape} differs from the "
                              f"bulk's {self.bulk.shape}")

    @property
    def shape(self) -> tuple[int, int]:
        return self.bulk.shape

    @property
    def nbytes(self) -> int:
        return self.bulk.nbytes + (self.salient.nbytes if self.salient is not None else 0)

    def to_dense(self, dtype=np.float32) -> np.ndarray:
        dense = self.bulk.to_dense(dtype)
        if self.salient is not None:
            dense += self.salient.to_dense(dtype)
        return dense


# --------------------------------------------------------------------------------------------
# safetensors I/O
# --------------------------------------------------------------------------------------------

# Part kinds a file may hold, by their header "kind".
_KINDS = {"nm": NMTensor, "csr": CSRTensor}


def _require_keys(mapping: dict, keys, what: str) -> None:
    missing = [k for k in keys if k not in mapping]
    if missing:
        raise FormatError(f"{what} is missing {', '.join(missing)}")


def _to_torch(array: np.ndarray):
    """A torch tensor owning a copy (safetensors refuses tensors that share memory)."""
    import torch

    if array.dtype == ml_dtypes.bfloat16:
        return torch.from_numpy(np.array(array).view(np.uint16)).view(torch.bfloat16)
    return torch.from_numpy(np.array(array))


def _from_torch(tensor) -> np.ndarray:
    import torch

    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.uint16).numpy().view(ml_dtypes.bfloat16)
    return tensor.numpy()


def array_checksum(array: np.ndarray) -> str:
    """XXH3-64 of an array's bytes (C order) as 16 hex digits: the per-tensor checksum of a file.

    It catches storage corruption (flipped bits, truncation, shuffled blocks); it is not a
    defence against deliberate tampering. XXH3 is chosen for speed: ~8 GB/s here against ~1 GB/s
    for zlib's CRC-32, so checking every load stays a small part of it (``nmsim bench formats``).
    """
    return xxhash.xxh3_64_hexdigest(np.ascontiguousarray(array).reshape(-1).view(np.uint8))


def header_metadata(header: dict) -> dict[str, str]:
    """The safetensors metadata of a file: the nmsim JSON header and its checksum."""
    text = json.dumps(header)
    return {HEADER_KEY: text, HEADER_CHECKSUM_KEY: xxhash.xxh3_64_hexdigest(text.encode())}


def save(path: str | Path, weights: dict[str, SparseWeight | NMTensor]) -> None:
    """Write named compressed weights to one safetensors file (atomically: temp file + rename),
    with a checksum of every stored array and of the header."""
    from safetensors.torch import save_file

    path = Path(path)
    header: dict[str, dict] = {}
    tensors = {}
    for name, weight in weights.items():
        if "/" in name:
            raise FormatError(f"tensor name '{name}' must not contain '/'")
        weight = weight if isinstance(weight, SparseWeight) else SparseWeight(weight)
        parts = {"bulk": weight.bulk, "salient": weight.salient}
        header[name] = {}
        for part, tensor in parts.items():
            if tensor is None:
                continue
            arrays = tensor.arrays()
            header[name][part] = {**tensor.header(),
                                  "checksums": {key: array_checksum(a)
                                                for key, a in arrays.items()}}
            for key, array in arrays.items():
                tensors[f"{name}/{part}/{key}"] = _to_torch(array)
    meta = header_metadata({"format": FORMAT_NAME, "version": FORMAT_VERSION, "tensors": header})
    with staged_file(path) as staged:
        save_file(tensors, str(staged), metadata=meta)


def _open(path: Path):
    from safetensors import safe_open

    if not path.is_file():
        raise FormatError(f"no such compressed-weight file: {path}")
    try:
        return safe_open(str(path), framework="pt")
    except Exception as exc:  # noqa: BLE001 - safetensors raises assorted types for corrupt files
        raise FormatError(f"{path} is not a readable safetensors file: {exc}") from None


def parse_header(path: str | Path, meta: dict | None) -> dict:
    """The checked nmsim header from a file's safetensors metadata; any malformed field (wrong
    type, unknown kind, a header whose checksum does not match) is a :class:`FormatError`."""
    meta = meta if isinstance(meta, dict) else {}
    text = meta.get(HEADER_KEY)
    if not isinstance(text, str):
        raise FormatError(f"{path} has no nmsim header: not a compressed N:M file")
    try:
        header = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise FormatError(f"{path}: nmsim header is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise FormatError(f"{path}: nmsim header must be a JSON object, got "
                          f"{type(header).__name__}")
    if header.get("format") != FORMAT_NAME:
        raise FormatError(f"{path}: unknown format {header.get('format')!r}")
    if header.get("version") not in READABLE_VERSIONS:
        raise FormatError(f"{path}: format version {header.get('version')!r} is not "
                          f"supported (this build reads versions "
                          f"{', '.join(map(str, READABLE_VERSIONS))})")
    checked = header["version"] >= 2
    if checked and meta.get(HEADER_CHECKSUM_KEY) != xxhash.xxh3_64_hexdigest(text.encode()):
        raise FormatError(f"{path}: the nmsim header fails its checksum: the file is corrupt")
    tensors = header.get("tensors", {})
    if not isinstance(tensors, dict):
        raise FormatError(f"{path}: nmsim header 'tensors' must be an object of tensor names")
    for name, parts in tensors.items():
        if not isinstance(parts, dict) or "bulk" not in parts:
            raise FormatError(f"{path}: tensor '{name}' has no bulk part")
        for part, part_header in parts.items():
            if part not in ("bulk", "salient") or not isinstance(part_header, dict):
                raise FormatError(f"{path}: tensor '{name}/{part}' is not a bulk or salient "
                                  "part description")
            if part_header.get("kind") not in _KINDS:
                raise FormatError(f"{path}: tensor '{name}/{part}' has unknown kind "
                                  f"{part_header.get('kind')!r}")
            sums = part_header.get("checksums")
            if checked and not (isinstance(sums, dict) and
                                all(isinstance(v, str) for v in sums.values())):
                raise FormatError(f"{path}: tensor '{name}/{part}' has no checksums")
    return header


def read_header(path: str | Path) -> dict:
    """The checked nmsim header of a file written by :func:`save` (``tensors``: name -> part ->
    kind, shape, pattern, ...), without reading its arrays."""
    path = Path(path)
    with _open(path) as handle:
        return parse_header(path, handle.metadata())


def load(path: str | Path, verify: bool = True) -> dict[str, SparseWeight]:
    """Read and fully validate a file written by :func:`save`; with ``verify`` (always, except
    to measure its cost) every array must match its stored checksum (version 1 files have
    none)."""
    path = Path(path)
    with _open(path) as handle:
        header = parse_header(path, handle.metadata())
        keys = set(handle.keys())
        result = {}
        for name, parts in header.get("tensors", {}).items():
            built = {}
            for part, part_header in parts.items():
                prefix = f"{name}/{part}/"
                arrays = {k[len(prefix):]: _from_torch(handle.get_tensor(k))
                          for k in keys if k.startswith(prefix)}
                try:
                    built[part] = _KINDS[part_header["kind"]].from_arrays(part_header, arrays)
                except (FormatError, TypeError, ValueError, KeyError, IndexError,
                        OverflowError) as exc:
                    raise FormatError(f"{path}: tensor '{name}/{part}': {exc}") from None
                if verify and "checksums" in part_header:
                    _verify(path, f"{name}/{part}", part_header["checksums"], arrays)
            result[name] = SparseWeight(built["bulk"], built.get("salient"))
        return result


def _verify(path: Path, where: str, sums: dict, arrays: dict[str, np.ndarray]) -> None:
    for key in sorted(set(sums) | set(arrays)):
        if key not in arrays or key not in sums or array_checksum(arrays[key]) != sums[key]:
            raise FormatError(f"{path}: tensor '{where}/{key}' fails its checksum: the stored "
                              "data is corrupt")
