"""AVX2 and AVX-512 group kernels for the batch-1 N:M GEMV: kept values against an x window.

The scalar GEMV (:mod:`nm_kernels.numba_nm`) spends 3-4 cycles per kept element on a field read, an
address and a scalar ``x[position]`` load; the memory-bound bytes bound needs about one. Here the
row's kept values are taken eight at a time (one ``<8 x float>``): their positions form an
``<8 x i32>`` inside a *window* of 16 or 32 consecutive inputs held in two or four registers, and
``vpermps`` (``llvm.x86.avx2.permps``) gathers ``x`` at those positions from registers, with
blends choosing the register by bits 3 and 4 of the position (2:4, 4:8 and 1:2 use two in-lane
``vpermilps`` instead). One FMA per eight values follows; the loop runs four groups per trip into
four accumulators and prefetches values and metadata :data:`GEMV_PREFETCH_BYTES` ahead. Zen 3's
memory ``vgatherdps`` is microcoded and measured slower than scalar code, so the gather stays in
registers.

Which patterns: eight kept values must cover whole blocks or lie inside one block, and the window
they index must be 16 or 32 inputs wide (:func:`group_geometry`): 1:2, 2:4, 4:8, 8:16 (window 16),
1:4, 2:8, 4:16, 8:32, 16:32 (window 32). Positions come from

* index metadata: the group's eight fields are one bit slice of the row (8 x ceil(log2 M) <= 40
  bits), split across lanes with vector shifts; no table;
* rank metadata: the group's G consecutive rank fields (G = 8 / N blocks, <= 16 bits together)
  index a table of eight int8 window positions per key (:func:`group_position_table`, built
  from :func:`compression.formats.rank_lut`, at most 128 KiB) whose sign bit is the blend's
  register select, so a position vector costs one sign-extending load.

A trip's keys are read at constant bit offsets from one byte-aligned start when its keys fill
whole bytes (2:4, 4:8, 8:16 rank: 48 or 56 bits per four), not with per-group shift arithmetic.

AVX-512 (:func:`wide_available`) widens the 50% patterns (1:2, 2:4, 4:8, 8:16, 16:32), whose two
consecutive groups index one 32-input window, to *pairs*: sixteen kept values per step in one
``<16 x float>``. Index positions of both groups are joined and one ``vpermt2ps`` gathers ``x``
from the window's two registers; rank keys read a 16-bit window mask per group
(:func:`group_mask_table`) and ``vcompressps`` packs each group's ``x``, or, for 1:2 and 2:4
(:func:`rank_transcodes`), read their index key (:func:`group_index_table`) and take the index
step; half-precision 1:2 and 2:4 pairs unrank their fields in the lanes instead
(:func:`rank_unranks_in_lanes`: one ``vpermd`` of a 16-entry table, no load per group).
Half-precision values run two rows per loop, sharing its ``x`` loads. Measured on Zen 5
(11008x4096 float32, one thread): 8-13% less time than the AVX2 step.

The loop over a row's groups is written in LLVM IR (a Numba ``@intrinsic``) because Numba has no
vector types; the caller handles leftover blocks, padded tails and dense tails with scalar code.
Only x86 CPUs with AVX2 take this path (:func:`available`); :func:`gemv_path` picks the step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache, partial

import llvmlite.binding as llvm_binding
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from compression import formats as F
from nm_kernels import numba_nm as K

LANES = 8
# The widest rank key a position table is built for: 2**16 keys x 8 bytes = 512 KiB, half of
# Zen 3's 1 MiB L2 per core.
MAX_TABLE_KEY_BITS = 16
WINDOWS = (16, 32)
# Groups per main-loop trip, each with its own accumulator (a power of two).
UNROLL = 4
# AVX-512 pairs (two groups, 16 kept values) per main-loop trip, each with its own accumulator;
# measured 3-5% faster than 2 for rank metadata on Zen 5, equal for index.
PAIR_UNROLL = 4
# Software prefetch distance in bytes of values for the GEMM passes (all cache levels). Measured
# on 11008x4096, one thread: Zen 3 float32, +10-20% over none, flat between 1 and 8 KiB; Zen 5,
# 8 KiB took 30-40% less time than 2 KiB and 16 KiB no less, for float32 and float16 alike.
PREFETCH_BYTES = 8192
# The batch-1 GEMV's prefetch: GEMV_PREFETCH_BYTES of values (and the metadata) ahead, into L2
# only (``prefetcht1``, LLVM locality 2). Into L1 as well (``prefetcht0``), the streamed lines
# evicted what the loop looks up at random, the rank mask table (8-32 KiB) and ``x`` (16-44
# KiB), from Zen 4's 32 KiB L1. Measured on a 2-core Zen 4 guest (11008x4096 and 4096x11008,
# 2 threads, both kernels in one process, interleaved rounds, reports/kernels/cpu.md): new/old
# time 0.52-1.05, median 0.73, over 47 pattern/encoding/dtype/shape cases in four runs; 16 KiB
# 0-10% less than 8 KiB, 64 KiB no better. The GEMM passes keep PREFETCH_BYTES into L1 (L2
# was 3-16% slower for index at batch 8 and 64).
GEMV_PREFETCH_BYTES = 16384
GEMV_PREFETCH_LOCALITY = 2
# The eight-lane step's four-bit index fields in a 16-input window (8:16) spread into bytes
# with scalar shifts, ORs and masks, then widened (vpmovzxbd), instead of one variable shift
# (vpsrlvd): on the CPUs named here that shift occupies the unit both vpermps of the step
# need, 4 cycles each (scripts/vector_throughput.py on a Zen 1 guest: a vpermps and a vpsrlvd
# take 8 cycles together, a vpermps and a vpmovzxbd 4). Measured there (2026-12-05, the step
# alone over 16 resident rows, float32: 11.5 -> 8.3 cycles per group; full size, 2 threads,
# cold, scripts/simd_ab.py, 9 rounds, new/old time): 8:16 index float32 0.74 (0.66-0.82) on
# 11008x4096 and 0.81 (0.78-0.94) on 4096x11008, float16 0.89 and 0.86; 4:16 (window 32,
# four vpermps) 1.03, so it keeps the shift.
SPREAD_NIBBLES_CPUS = frozenset({"znver1"})
# (left shift, mask) steps moving field i of a 32-bit key from bit 4i to byte i of 64 bits
NIBBLE_SPREAD_STEPS = ((16, 0x0000FFFF0000FFFF), (8, 0x00FF00FF00FF00FF),
                       (4, 0x0F0F0F0F0F0F0F0F))


# What ``simd=`` may ask of :func:`gemv_path`: the widest path available, AVX2 at most, or none.
SIMD_CHOICES = ("auto", "avx2", "scalar")


@cache
def _host_features() -> frozenset:
    return frozenset(k for k, v in llvm_binding.get_host_cpu_features().items() if v)


def available() -> bool:
    """True when Numba compiles for this host and its features include AVX2 and FMA.

    ``NUMBA_CPU_NAME`` set to anything but ``host`` (portable caches, e.g. ``generic``) makes
    Numba target a CPU that may lack them, so the scalar kernels are used then.
    """
    return K.compiles_for_host() and {"avx2", "fma"} <= _host_features()


def wide_available() -> bool:
    """True when the AVX2 path is available and the host also has AVX-512F (16-lane pairs)."""
    return available() and "avx512f" in _host_features()


@dataclass(frozen=True)
class GroupGeometry:
    """How eight kept values of a row map onto blocks and an ``x`` window."""

    n: int
    m: int
    window: int  # inputs indexed by one group's positions
    blocks_per_group: int  # 8 / N when N <= 8, else 0 (a block spans N / 8 groups)
    groups_per_block: int  # N / 8 when N >= 8, else 0

    @property
    def lane_pairs(self) -> bool:
        """Lanes 0-3 index inputs 0-7 and lanes 4-7 inputs 8-15 (two or more blocks in a window
        of 16): two in-lane vpermilps on [x0:4 | x8:12], [x4:8 | x12:16] gather then."""
        return self.window == 16 and self.blocks_per_group >= 2

    @property
    def select_bit(self) -> int:
        """The position bit that picks the first-level register (bit 2 for lane pairs, else 3)."""
        return 4 if self.lane_pairs else 8

    @property
    def pairs_fill_32(self) -> bool:
        """Two consecutive groups (16 kept values) index one window of 32 inputs: the 50%
        patterns 1:2, 2:4, 4:8, 8:16 (two windows of 16) and 16:32 (one block). One AVX-512
        ``vpermt2ps`` over two ``<16 x float>`` registers then gathers all sixteen."""
        return (self.window == 16 and self.blocks_per_group > 0) or (
            self.window == 32 and self.groups_per_block == 2)

    def lane_offset(self, lane: int) -> int:
        """Window offset of the block lane ``lane`` of a group belongs to."""
        return (lane // self.n) * self.m if self.blocks_per_group else 0


def group_geometry(pattern: F.Pattern) -> GroupGeometry | None:
    """The group layout for ``pattern``, or None when eight values do not fit a 16/32 window."""
    n, m = pattern.n, pattern.m
    if n <= LANES and LANES % n == 0:
        window = LANES // n * m
        geometry = GroupGeometry(n, m, window, LANES // n, 0)
    elif n % LANES == 0:
        geometry = GroupGeometry(n, m, m, 0, n // LANES)
    else:
        return None
    return geometry if geometry.window in WINDOWS else None


def supports(pattern: F.Pattern, encoding: str) -> bool:
    """Whether the group kernel can read ``pattern`` with ``encoding`` metadata on this CPU."""
    geometry = group_geometry(pattern)
    if geometry is None or not available():
        return False
    if encoding == "index":
        return True
    if encoding == "rank":
        return (geometry.blocks_per_group > 0
                and geometry.blocks_per_group * pattern.field_bits("rank") <= MAX_TABLE_KEY_BITS
                and pattern.has_rank_lut)
    return False


def gemv_path(pattern: F.Pattern, encoding: str, decoder: str, simd: str = "auto") -> str:
    """The batch-1 kernel for ``pattern`` with ``encoding`` metadata read by ``decoder``:
    ``"avx512-pair"`` (16 kept values per step), ``"avx2-table"`` (2:4 through an x table of
    block combinations, :func:`nm_table_gemv`), ``"avx2-group"`` (8 per step) or ``"scalar"``.

    Rank metadata without a group table (M = 32: 8:32, 16:32) is unranked row by row into
    position bytes (:func:`split_unrank_row`) and then takes the AVX2 group loop.

    ``simd`` (:data:`SIMD_CHOICES`) caps it: ``"auto"`` takes the widest this CPU runs,
    ``"avx2"`` stops at the AVX2 paths (``"avx2-table"`` for 2:4, else ``"avx2-group"``)
    and ``"scalar"`` keeps the scalar kernel.
    """
    if simd not in SIMD_CHOICES:
        raise ValueError(f"simd must be one of {', '.join(SIMD_CHOICES)}, got {simd!r}")
    if simd == "scalar":
        return "scalar"
    entry = K.KERNEL_DECODERS.get(decoder)
    if entry is None or not entry.simd or entry.encoding != encoding:
        return "scalar"
    if entry.code == K.RANK_UNRANK:  # the split-unrank pre-pass feeds the eight-lane group loop
        return "avx2-group" if split_unrank_supported(pattern) else "scalar"
    if not supports(pattern, encoding):
        return "scalar"
    if simd == "auto" and wide_available() and group_geometry(pattern).pairs_fill_32:
        return "avx512-pair"
    return "avx2-table" if table_gemv_supported(pattern, entry.code) else "avx2-group"


def rank_transcodes(pattern: F.Pattern) -> bool:
    """True when the AVX-512 GEMV reads rank keys through :func:`group_index_table` and the
    index pair step (one ``vpermt2ps`` per pair) rather than :func:`group_mask_table` and two
    ``vcompressps``: where a group's index key is at most 16 bits (1:2, 2:4), so that table
    is no larger than the mask table."""
    geometry = group_geometry(pattern)
    return (geometry is not None and geometry.pairs_fill_32 and geometry.blocks_per_group > 0
            and LANES * pattern.field_bits("index") <= 16)


def rank_unranks_in_lanes(pattern: F.Pattern) -> bool:
    """True when the AVX-512 GEMV's pair step unranks its rank fields in the vector lanes: a
    pair's fields are one byte-aligned word of at most 32 bits, and a field and the kept
    value's number in its block index a 16-entry position table (one ``vpermd``) - 1:2 and 2:4
    (``rank | j << 3``: C(4, 2) x 2 = 12 entries). No table load per group.

    Taken for half-precision values only. Old (:func:`rank_transcodes`) and new in one
    process (Zen 4 guest, 2 threads, 11-15 rounds, ``scripts/simd_ab.py``, 2026-12-04), new
    time / old: 2:4 float16 0.86 and 0.88 (11008x4096), 0.79 and 0.85 (4096x11008); bfloat16
    0.65 / 0.91; 1:2 float16 0.81 / 0.94; 2:4 float32 1.14, 1.06 / 1.12, 1.01, so float32
    keeps the index-key table."""
    geometry = group_geometry(pattern)
    if geometry is None or not geometry.pairs_fill_32 or not geometry.blocks_per_group:
        return False
    bits, n = pattern.field_bits("rank"), pattern.n
    pair_bits = 2 * geometry.blocks_per_group * bits
    return (pattern.has_rank_lut and n & (n - 1) == 0
            and (1 << bits) * n <= 2 * LANES and pair_bits % 8 == 0 and pair_bits <= 32)


def lane_unrank_table(pattern: F.Pattern) -> np.ndarray:
    """``int32[16]``: entry ``rank | j << bits`` is the position in its block of the j-th kept
    value of the block whose rank field is ``rank`` (:func:`compression.formats.rank_lut`);
    ranks that cannot occur map to 0."""
    bits = pattern.field_bits("rank")
    lut = F.rank_lut(pattern).astype(np.int32)  # [C(M, N), N]
    table = np.zeros(2 * LANES, dtype=np.int32)
    for j in range(pattern.n):
        table[(j << bits) + np.arange(lut.shape[0])] = lut[:, j]
    return table


def rank_folds(pattern: F.Pattern, kind: int) -> bool:
    """True when the AVX-512 GEMV reads a half-size :func:`group_mask_table` (``folded``):
    float32 values of one-block groups at N = M/2 (8:16). The complement of the subset of
    colex rank r has rank C(M, N) - 1 - r and the complement mask, so the table keeps the
    lower half of the ranks (12.6 KiB instead of 25 for 8:16) and a key in the upper half
    reads its complement's entry inverted. Old and new in one process (Zen 4 guest, 2
    threads, 11008x4096 and 4096x11008, ``scripts/simd_ab.py``, 2026-12-04): float32
    0.66-0.91x the time in five of six runs (1.14x in one); float16, whose step is bound by
    its instructions rather than L1 misses, 1.07-1.28x, so it keeps the whole table."""
    geometry = group_geometry(pattern)
    return (kind == K.F32 and geometry is not None and geometry.blocks_per_group == 1
            and pattern.m == 2 * pattern.n)


def gemv_table(pattern: F.Pattern, path: str, kind: int) -> np.ndarray:
    """The rank table the GEMV on ``path`` (:func:`gemv_path`) reads for values of ``kind``."""
    if path == "avx512-pair":
        if rank_transcodes(pattern):
            return group_index_table(pattern)
        return group_mask_table(pattern, folded=rank_folds(pattern, kind))
    return group_position_table(pattern)


# TABLE_GEMV: the 2:4 GEMV without vector shuffles. Each pair of blocks (8 inputs, 4 kept
# values) has C(4, 2)**2 = 36 possible kept subsets; the GEMV first writes, once per call, an x
# table holding for every pair of blocks the four inputs each subset keeps (576 bytes per 8
# inputs: 288 KiB for 4096 inputs, 792 KiB for 11008). A group of eight kept values is then two
# 16-byte loads from that table at offsets a 64-256 entry table gives for its two pairs' keys,
# and one FMA. The AVX2 group step instead gathers x with two variable in-lane permutes, a
# shift and a blend, which on Zen 1 (256-bit operations as two halves) bound it at about 12
# cycles per group; the table step takes about 8.5. Measured on the 2-core Zen 1 guest
# (11008x4096 and 4096x11008 float32 index, 2 threads, cold, a prototype against the group
# kernel in one process, 9 rounds, 2026-12-05): 5.1 against 7.6 ms and 5.3 against 7.7 ms,
# 75% and 73% of the read bandwidth against 50%. AVX-512 hosts keep their pair step, which
# was not measured against this one.
TABLE_BLOCKS = 2  # blocks per table entry: four kept values, one 16-byte load

TABLE_PATTERN = F.Pattern(2, 4)  # the one pattern whose subsets fit a table (4:8: 70**2 each)


def table_gemv_supported(pattern: F.Pattern, decoder_code: int) -> bool:
    """True for 2:4 read from index fields or through the rank ROM (not the unranking
    decoder, whose hardware model the ROM comparison is about)."""
    return pattern == TABLE_PATTERN and decoder_code in (INDEX, RANK)


def _check_table_pattern(pattern: F.Pattern) -> None:
    if pattern != TABLE_PATTERN:
        raise ValueError(f"the x-table GEMV is built for {TABLE_PATTERN} only, not {pattern}")


@cache
def table_offsets(pattern: F.Pattern, encoding: str) -> np.ndarray:
    """``uint8``: a pair of blocks' metadata key (two blocks' rank fields, or their four index
    fields) to the float offset of its entry in the pair's run of the x table; keys no valid
    block gives map to 0."""
    _check_table_pattern(pattern)
    lut = F.rank_lut(pattern).astype(np.int64)
    count = lut.shape[0]
    bits = pattern.field_bits(encoding)
    offsets = np.zeros(1 << (TABLE_BLOCKS * pattern.n * bits if encoding == "index"
                             else TABLE_BLOCKS * bits), dtype=np.uint8)
    for r0 in range(count):
        for r1 in range(count):
            if encoding == "rank":
                key = r0 | r1 << bits
            else:
                fields = list(lut[r0]) + list(lut[r1])
                key = sum(int(f) << (i * bits) for i, f in enumerate(fields))
            offsets[key] = (r0 * count + r1) * TABLE_BLOCKS * pattern.n
    offsets.setflags(write=False)
    return offsets


@njit(cache=True)
def build_x_table(x, block_positions, pairs, m):
    """The x table of TABLE_GEMV for the first ``pairs`` pairs of 2:4 blocks: for pair ``p``
    and block ranks ``r0``, ``r1`` (``block_positions`` is :func:`compression.formats.rank_lut`),
    entry ``p * C**2 + r0 * C + r1`` holds the inputs the first block keeps at rank ``r0`` and
    the second at ``r1``, as four floats. Each block's two kept inputs are one 8-byte word,
    formed once per rank and stored C times: 37 and 103 us for 4096 and 11008 inputs
    (one thread, Zen 1) against 177 and 366 us gathering every float."""
    count = block_positions.shape[0]
    table = np.empty(pairs * count * count * 4, dtype=np.float32)
    words = table.view(np.uint64)
    bits = x.view(np.uint32)
    first = np.empty(count, dtype=np.uint64)
    second = np.empty(count, dtype=np.uint64)
    for p in range(pairs):
        base = 2 * m * p
        for r in range(count):
            a, b = base + block_positions[r, 0], base + block_positions[r, 1]
            first[r] = np.uint64(bits[a]) | np.uint64(bits[b]) << np.uint64(32)
            second[r] = (np.uint64(bits[a + m]) | np.uint64(bits[b + m]) << np.uint64(32))
        run = 2 * count * count * p
        for r0 in range(count):
            for r1 in range(count):
                words[run + 2 * (r0 * count + r1)] = first[r0]
                words[run + 2 * (r0 * count + r1) + 1] = second[r1]
    return table


def gemm_path(pattern: F.Pattern, encoding: str, decoder: str, simd: str = "auto") -> str:
    """The batch > 1 kernel: ``"scalar"`` where :func:`gemv_path` is, else the group passes of
    :func:`nm_group_gemm`, ``"avx512-group"`` (16 batch columns per vector) when ``simd`` is
    ``"auto"`` and the CPU has AVX-512F, ``"avx2-group"`` (8) otherwise."""
    if gemv_path(pattern, encoding, decoder, simd) == "scalar":
        return "scalar"
    return "avx512-group" if simd == "auto" and wide_available() else "avx2-group"


@cache
def group_position_table(pattern: F.Pattern) -> np.ndarray:
    """``int8[2**(G*bits), 8]``: window positions of a group's kept values, keyed by its G ranks.

    A key is the group's G rank fields as they lie in the bit stream (field j at bits
    ``[j*bits, (j+1)*bits)``); keys holding a rank >= C(M, N) cannot occur in validated metadata
    and map to position 0. Bit 7 of an entry repeats the position's register-select bit
    (:attr:`GroupGeometry.select_bit`): sign-extended to int32 (``vpmovsxbd``) it is the blend's
    sign, while the permutes use only the low bits. 128 KiB for 8:16 and 4:8 (an int32 table,
    512 KiB, measured ~20% slower: L2 misses), 32 KiB for 2:4.
    """
    geometry = group_geometry(pattern)
    bits = pattern.field_bits("rank")
    per = geometry.blocks_per_group
    lut = F.rank_lut(pattern).astype(np.int64)  # [C(M,N), N] ascending positions
    keys = np.arange(1 << (per * bits), dtype=np.int64)
    table = np.zeros((keys.size, LANES), dtype=np.int64)
    valid = np.ones(keys.size, dtype=bool)
    for j in range(per):
        ranks = (keys >> (j * bits)) & ((1 << bits) - 1)
        valid &= ranks < lut.shape[0]
        table[:, j * pattern.n:(j + 1) * pattern.n] = (
            lut[np.minimum(ranks, lut.shape[0] - 1)] + j * pattern.m)
    table[~valid] = 0
    table |= np.where(table & geometry.select_bit, 0x80, 0)
    table = table.astype(np.uint8).view(np.int8)
    table.setflags(write=False)
    return table


@cache
def group_index_table(pattern: F.Pattern) -> np.ndarray:
    """``uint8/16/32[2**(G*bits)]`` (the narrowest that holds them): a group's eight index
    fields (``field_bits("index")`` each, lane 0 lowest: the group's bits in index metadata),
    keyed like :func:`group_position_table`. The GEMM turns rank keys into index keys with it
    once per row chunk; the AVX-512 GEMV does so per pair where :func:`rank_transcodes`."""
    geometry = group_geometry(pattern)
    bits = pattern.field_bits("index")
    if geometry is None or not geometry.blocks_per_group or LANES * bits > 32:
        raise ValueError(f"{pattern}: a group's index fields do not fit 32 bits")
    # Window position modulo M (a power of two here) is the position in the block.
    fields = group_position_table(pattern).astype(np.int64) & ((1 << bits) - 1)
    dtype = np.uint8 if LANES * bits <= 8 else np.uint16 if LANES * bits <= 16 else np.uint32
    table = np.bitwise_or.reduce(fields << (bits * np.arange(LANES)), axis=1).astype(dtype)
    table.setflags(write=False)
    return table


@cache
def group_mask_table(pattern: F.Pattern, folded: bool = False) -> np.ndarray:
    """``uint16[2**(G*bits)]``: the 16-input window bit mask of a group's kept positions, keyed
    like :func:`group_position_table` (invalid keys map to 0).

    The AVX-512 pair step reads rank metadata through it: ``vcompressps`` of the window's
    sixteen ``x`` under the mask yields ``x`` at the kept positions in ascending order, the
    order the values are stored in. Two bytes per key instead of eight: 8 KiB for 2:4 and
    32 KiB for 8:16 and 4:8 against 32 and 128 KiB of position rows. Why size matters
    (measured on Zen 5, 11008x4096, one thread): the rank pair step ran 25-50% slower than
    with index metadata, and as fast once every lookup was confined to 64 keys; the smaller
    table alone did not close that gap (random lookups still miss the 48 KiB L1 that the
    streamed values and ``x`` share); prefetching values further ahead (then 8 KiB into L1)
    narrowed it to 10-20%, and prefetching into L2 only (:data:`GEMV_PREFETCH_LOCALITY`) keeps
    the streamed lines from evicting the table.
    """
    geometry = group_geometry(pattern)
    if geometry is None or geometry.window != 16 or not geometry.blocks_per_group:
        raise ValueError(f"{pattern}: groups of eight kept values do not fill a 16-input window")
    positions = group_position_table(pattern).astype(np.int64) & 0x0F
    masks = np.bitwise_or.reduce(np.left_shift(1, positions), axis=1)
    # group_position_table maps invalid keys to all-zero positions: mask 1, reset to 0.
    masks[np.any(positions[:, 1:] <= positions[:, :-1], axis=1)] = 0
    masks = masks.astype(np.uint16)
    if folded:
        masks = masks[:math.comb(pattern.m, pattern.n) // 2].copy()
    masks.setflags(write=False)
    return masks


# Rank metadata whose C(M, N) table cannot exist (M = 32: 8:32, 16:32) is unranked in two
# halves of the 32-position block: greedy colex steps over the upper SPLIT_HALF positions, then
# one lookup of the lower half's mask in a table of every subset of SPLIT_HALF positions.
SPLIT_HALF = 16
# Blocks the split-unrank pre-pass decodes per vector call: SPLIT_SETS independent sets of
# eight lanes, so that their greedy chains (about ten cycles of latency per step) overlap.
SPLIT_SETS = 4
SPLIT_BLOCKS = SPLIT_SETS * LANES


def split_unrank_supported(pattern: F.Pattern) -> bool:
    """Whether rank metadata of ``pattern`` takes the split-unrank pre-pass (no group table,
    M = 32, eight kept values fill a group, at most 16 kept: the upper-half costs are two
    vectors of eight) on this CPU."""
    geometry = group_geometry(pattern)
    return (available() and geometry is not None and pattern.m == 2 * SPLIT_HALF
            and pattern.n <= SPLIT_HALF and not pattern.has_rank_lut)


@cache
def split_unrank_tables(pattern: F.Pattern) -> tuple:
    """``(low_masks, low_offsets, byte_positions, byte_counts, high_costs)`` for
    :func:`split_unrank_row`.

    ``low_masks[low_offsets[k] + r]`` is the 16-bit mask of the k-subset of the lower half
    whose colex rank is r (from :func:`compression.formats.rank_lut` of k:16; 128 KiB in all,
    and one spare entry);
    ``byte_positions[j, v]`` packs, one byte each, the block positions ``8 j + bit`` of the set
    bits of byte value v (8 KiB); ``byte_counts[v]`` is the popcount of v;
    ``high_costs[c - 16, s - 1]`` is C(c, s) as int32 (every rank of M = 32 fits 30 bits).
    """
    if not split_unrank_supported(pattern):
        raise ValueError(f"{pattern}: rank metadata does not take the split-unrank path")
    offsets, masks, total = [], [], 0
    for k in range(SPLIT_HALF + 1):
        offsets.append(total)
        if k in (0, SPLIT_HALF):
            subsets = np.array([(1 << k) - 1], dtype=np.int64)
        else:
            lut = F.rank_lut(F.Pattern(k, SPLIT_HALF)).astype(np.int64)
            subsets = np.left_shift(1, lut).sum(axis=1)
        masks.append(subsets)
        total += subsets.size
    values = np.arange(256)
    bit_set = (values[:, None] >> np.arange(8)) & 1
    positions = np.zeros((4, 256, 8), dtype=np.uint8)
    for v in range(256):
        kept = np.flatnonzero(bit_set[v])
        positions[:, v, :kept.size] = kept + 8 * np.arange(4)[:, None]
    binom = F.binomial_table(pattern).astype(np.int64)
    high_costs = np.zeros((pattern.m - SPLIT_HALF, SPLIT_HALF), dtype=np.int32)
    high_costs[:, :pattern.n] = binom[SPLIT_HALF:, 1:]
    masks.append(np.zeros(1, dtype=np.int64))  # spare: the gather reads 4 bytes per entry
    tables = (np.concatenate(masks).astype(np.uint16), np.array(offsets, dtype=np.int32),
              positions.view(np.uint64).reshape(4, 256), bit_set.sum(axis=1).astype(np.int64),
              high_costs)
    for table in tables:
        table.setflags(write=False)
    return tables


@intrinsic
def _store_u64(typingctx, row, byte_index, value):
    """Store a uint64 little-endian into 8 bytes of a contiguous uint8 row (unaligned)."""
    sig = types.none(row, byte_index, value)

    def codegen(context, builder, signature, args):
        array = context.make_array(signature.args[0])(context, builder, args[0])
        address = builder.gep(array.data, [args[1]])
        builder.store(args[2], builder.bitcast(address, ir.IntType(64).as_pointer()), align=1)
        return context.get_dummy_value()

    return sig, codegen


def _split_state_row(builder, pointer, field, lanes):
    """A ``<8 x i32>*`` to the eight int32 from element ``field * SPLIT_BLOCKS + 8 lanes`` of
    ``pointer``: lane set ``lanes`` of row ``field`` of the split-unrank state."""
    address = builder.gep(pointer, [ir.Constant(I64, field * SPLIT_BLOCKS + lanes * LANES)])
    return builder.bitcast(address, ir.VectorType(I32, LANES).as_pointer())


@intrinsic
def _greedy_upper_half(typingctx, state, high_costs):
    """Greedy colex steps over positions M-1 .. 16 for :data:`SPLIT_BLOCKS` blocks at once
    (:data:`SPLIT_SETS` vectors of ``<8 x i32>``, interleaved step by step).

    ``state`` is int32 ``[3, SPLIT_BLOCKS]``: rank, slot (kept elements still to place) and
    mask of each block, updated in place. At position c a lane takes c when slot > 0 and
    C(c, slot) <= its rank left; C(c, slot) comes from ``high_costs[c - 16]`` by ``vpermd``
    on slot - 1."""
    sig = types.none(state, high_costs)

    def codegen(context, builder, signature, args):
        v8i = ir.VectorType(I32, LANES)
        permd = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v8i, [v8i, v8i]),
                                               "llvm.x86.avx2.permd")
        state_ptr, costs_ptr = (context.make_array(t)(context, builder, a).data
                                for t, a in zip(signature.args, args, strict=True))

        def splat(value):
            return _const_vec([value] * LANES)

        addresses = [[_split_state_row(builder, state_ptr, field, lanes) for field in range(3)]
                     for lanes in range(SPLIT_SETS)]
        sets = [[builder.load(a, align=4) for a in fields] for fields in addresses]
        zero = splat(0)
        for c in range(2 * SPLIT_HALF - 1, SPLIT_HALF - 1, -1):  # unrolled, 16 steps
            # high_costs[c - 16]: sixteen int32, two vectors of eight
            low, high = (builder.load(_split_state_row(builder, costs_ptr, 0, half), align=4)
                         for half in (2 * (c - SPLIT_HALF), 2 * (c - SPLIT_HALF) + 1))
            for lanes, (rank, slot, mask) in enumerate(sets):
                index = builder.sub(slot, splat(1))
                cost = builder.select(builder.icmp_signed(">", index, splat(7)),
                                      builder.call(permd, [high, index]),
                                      builder.call(permd, [low, index]))
                take = builder.and_(builder.icmp_signed(">", slot, zero),
                                    builder.icmp_signed("<=", cost, rank))
                sets[lanes] = [builder.sub(rank, builder.select(take, cost, zero)),
                               builder.sub(slot, builder.zext(take, v8i)),
                               builder.or_(mask, builder.select(take, splat(1 << c), zero))]
        for fields, values in zip(addresses, sets, strict=True):
            for address, value in zip(fields, values, strict=True):
                builder.store(value, address, align=4)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _compress_positions(typingctx, state, low_masks, low_offsets, out, first_byte, n):
    """Write the kept positions of the :data:`SPLIT_BLOCKS` blocks in ``state`` (after
    :func:`_greedy_upper_half`) to ``out`` from byte ``first_byte``, ``n`` per block.

    Per eight lanes: the lower half's subset offset and 16-bit mask by two AVX2 gathers
    (``low_masks`` read as 32-bit words at a 2-byte stride: the table carries one spare entry),
    joined to the upper half's mask; then two blocks at a time, their 64-bit mask compresses
    the bytes 0..31, 0..31 (``vpcompressb``, AVX-512 VBMI2) into their 2n positions, stored as
    one 64-byte vector (``out`` needs 64 spare bytes)."""
    sig = types.none(state, low_masks, low_offsets, out, first_byte, n)

    def codegen(context, builder, signature, args):
        v8i, v64b = ir.VectorType(I32, LANES), ir.VectorType(I8, 64)
        i8p = I8.as_pointer()
        gather = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(v8i, [v8i, i8p, v8i, v8i, I8]),
            "llvm.x86.avx2.gather.d.d.256")
        compress = cgutils.get_or_insert_function(
            builder.module,
            ir.FunctionType(v64b, [v64b, v64b, ir.VectorType(ir.IntType(1), 64)]),
            "llvm.x86.avx512.mask.compress.v64i8")
        state_ptr, masks_ptr, offsets_ptr, out_ptr = (
            context.make_array(t)(context, builder, a).data
            for t, a in zip(signature.args[:4], args[:4], strict=True))
        first_byte, n = args[4], args[5]

        every = _const_vec([-1] * LANES)
        iota = ir.Constant(v64b, [i % 32 for i in range(64)])
        zero = ir.Constant(v64b, [0] * 64)
        pair_bytes = builder.mul(n, ir.Constant(I64, 2))
        o = first_byte
        for lanes in range(SPLIT_SETS):
            rank, slot, upper = (builder.load(_split_state_row(builder, state_ptr, field, lanes),
                                              align=4) for field in range(3))
            offset = builder.call(gather, [_const_vec([0] * LANES),
                                           builder.bitcast(offsets_ptr, i8p), slot, every,
                                           ir.Constant(I8, 4)])
            low = builder.call(gather, [_const_vec([0] * LANES),
                                        builder.bitcast(masks_ptr, i8p),
                                        builder.add(offset, rank), every, ir.Constant(I8, 2)])
            masks = builder.or_(upper, builder.and_(low, _const_vec([0xFFFF] * LANES)))
            words = builder.bitcast(masks, ir.VectorType(I64, LANES // 2))
            for pair in range(LANES // 2):
                bits = builder.bitcast(builder.extract_element(words, ir.Constant(I32, pair)),
                                       ir.VectorType(ir.IntType(1), 64))
                packed = builder.call(compress, [iota, zero, bits])
                address = builder.bitcast(builder.gep(out_ptr, [o]), v64b.as_pointer())
                builder.store(packed, address, align=1)
                o = builder.add(o, pair_bytes)
        return context.get_dummy_value()

    return sig, codegen


@njit(inline="always")
def _upper_halves(meta_row, b0, blocks, n, bits, field_mask, high_costs, state):
    """Load the rank fields of blocks ``b0 ..`` (up to :data:`SPLIT_BLOCKS`; past ``blocks``,
    rank 0) into ``state`` and take the greedy steps of their upper halves; returns how many
    blocks are real."""
    lanes = min(SPLIT_BLOCKS, blocks - b0)
    for lane in range(SPLIT_BLOCKS):
        field = K._field(meta_row, b0 + lane, bits, field_mask) if lane < lanes else 0
        state[0, lane] = np.int32(field)
        state[1, lane] = n
        state[2, lane] = 0
    _greedy_upper_half(state, high_costs)
    return lanes


@njit(inline="always")
def _split_unrank_row_vbmi2(meta_row, blocks, n, bits, field_mask, tables, state, out):
    """:func:`split_unrank_row` with the positions written by :func:`_compress_positions`."""
    low_masks, low_offsets, _, _, high_costs = tables
    for b0 in range(0, blocks, SPLIT_BLOCKS):
        _upper_halves(meta_row, b0, blocks, n, bits, field_mask, high_costs, state)
        _compress_positions(state, low_masks, low_offsets, out, b0 * n, n)


@njit(inline="always")
def _split_unrank_row_bytes(meta_row, blocks, n, bits, field_mask, tables, state, out):
    """:func:`split_unrank_row` with the positions written by byte-table lookups."""
    low_masks, low_offsets, byte_positions, byte_counts, high_costs = tables
    for b0 in range(0, blocks, SPLIT_BLOCKS):
        lanes = _upper_halves(meta_row, b0, blocks, n, bits, field_mask, high_costs, state)
        for lane in range(lanes):
            slot = state[1, lane]
            mask = np.uint32(state[2, lane]) | np.uint32(
                low_masks[low_offsets[slot] + state[0, lane]])
            o = (b0 + lane) * n
            for j in range(4):
                byte = (mask >> np.uint32(8 * j)) & np.uint32(255)
                _store_u64(out, o, byte_positions[j, byte])
                o += byte_counts[byte]


@njit(inline="always")
def rank_index_row(meta_row, groups, key_bits, key_mask, table, index_key_bytes, out):
    """A row's first ``groups`` rank keys as index keys (:func:`group_index_table` ``table``),
    ``index_key_bytes`` each from ``out[0]`` (``out`` holds 8 spare bytes: each key is stored
    as 8 bytes, the next one overwriting the zeros above it)."""
    for g in range(groups):
        bit = g * key_bits
        key = (K._load_u64(meta_row, bit >> 3) >> np.uint64(bit & 7)) & key_mask
        _store_u64(out, g * index_key_bytes, np.uint64(table[np.int64(key)]))


@njit(inline="always")
def split_unrank_buffer_bytes(blocks, n):
    """Bytes of the positions buffer :func:`split_unrank_row` fills for ``blocks`` blocks:
    whole :data:`SPLIT_BLOCKS` batches of ``n`` positions, and 64 spare bytes."""
    return -(-blocks // SPLIT_BLOCKS) * SPLIT_BLOCKS * n + 64


# The kept positions (0..31, ascending, one byte each) of a row's first ``blocks`` rank fields,
# written to ``out[b * n:(b + 1) * n]`` (``out``: :func:`split_unrank_buffer_bytes`), after
# :data:`SPLIT_BLOCKS` blocks at a time took vector greedy colex steps over the upper 16
# positions (:func:`_greedy_upper_half`); the lower half's mask comes from the subset table
# (:func:`split_unrank_tables`). Positions from masks by ``vpcompressb`` where the host has
# AVX-512 VBMI2, else by four byte-table lookups per block. ``state``: int32
# ``[3, SPLIT_BLOCKS]`` scratch.
split_unrank_row = (_split_unrank_row_vbmi2 if {"avx512f", "avx512bw", "avx512vbmi2"}
                    <= _host_features() and available() else _split_unrank_row_bytes)


# Where a group's window positions come from (the decoder codes of nm_kernels.numba_nm): rank
# keys through a group table, index fields, or POSITIONS: one byte per kept value, decoded
# beforehand (:func:`split_unrank_row`); the group's "key" is then its eight position bytes as
# one 64-bit word.
RANK, INDEX, POSITIONS = K.RANK_LUT, K.INDEX, K.RANK_UNRANK
F32, I8, I16, I32, I64 = (ir.FloatType(), ir.IntType(8), ir.IntType(16), ir.IntType(32),
                          ir.IntType(64))


def _fma(module, width: int):
    """``llvm.fma`` on ``<width x float>``."""
    vector = ir.VectorType(F32, width)
    return cgutils.get_or_insert_function(module, ir.FunctionType(vector, [vector] * 3),
                                          f"llvm.fma.v{width}f32")


@cache
def group_dot(n: int, m: int, bits: int, source: int, kind: int, wide: bool, rows: int = 1):
    """A Numba intrinsic ``(values_row, meta_row, x, table, groups) -> float32``.

    Returns ``sum_{g < groups} sum_lane v[8g + lane] * x[start(g) + pos(g, lane)]`` for one row.
    ``meta_row`` must carry 8 readable bytes after its last field (``kernel_metadata``);
    ``table`` is :func:`gemv_table` for rank metadata (the position table on the eight-lane
    step; the mask, folded mask or index-key table on the AVX-512 pair step, where pairs
    unranked in the lanes read it only for a leftover single group); ignored for index. ``wide``
    (AVX-512, :attr:`GroupGeometry.pairs_fill_32` patterns): the main loop takes two groups per
    step into ``<16 x float>`` accumulators; a leftover odd group takes the eight-lane step.
    ``rows=2``: ``(values_a, meta_a, values_b, meta_b, x, table, groups) -> (float32,
    float32)``, both rows in one loop (see :func:`_emit`).
    """
    if rows not in (1, 2):
        raise ValueError(f"group_dot runs one or two rows per loop, not {rows}")
    pattern = F.Pattern(n, m)
    geometry = group_geometry(pattern)
    key_bits = _key_bits(geometry, bits, source)
    registers = geometry.window // LANES
    index_bits = (pattern.field_bits("index")
                  if wide and source == RANK and rank_transcodes(pattern) else None)
    # Ranks of a folded mask table (:func:`rank_folds`): C(M, N), else 0
    fold_total = (math.comb(m, n) if wide and source == RANK and rank_folds(pattern, kind)
                  else 0)
    lane_table = (lane_unrank_table(pattern) if wide and source == RANK and kind != K.F32
                  and rank_unranks_in_lanes(pattern) else None)

    def codegen(context, builder, signature, args):
        return _emit(context, builder, signature, args, geometry, bits, key_bits, registers,
                     source, kind, wide, index_bits, fold_total, rows, lane_table)

    if rows == 1:
        @intrinsic
        def _group_dot(typingctx, values_row, meta_row, x, table, groups):
            return types.float32(values_row, meta_row, x, table, groups), codegen
    else:
        @intrinsic
        def _group_dot(typingctx, values_a, meta_a, values_b, meta_b, x, table, groups):
            return (types.UniTuple(types.float32, 2)(values_a, meta_a, values_b, meta_b, x,
                                                      table, groups), codegen)

    # Numba keys its disk cache on the pickled closure of the GEMV, this intrinsic included;
    # the default per-process uuid would make every process miss the cache and compile again.
    _group_dot._set_uuid(
        f"nm_kernels.simd_nm.group_dot/{n}:{m}/{bits}/{source}/{kind}/{wide}/{rows}")
    return _group_dot


def _key_bits(geometry: GroupGeometry, bits: int, source: int) -> int:
    """Bits of metadata one group reads (64 for decoded position bytes)."""
    if source == POSITIONS:
        return 64
    return geometry.blocks_per_group * bits if source == RANK else LANES * bits


class _RowIR:
    """IR building blocks shared by the GEMV and GEMM row loops: metadata keys, positions of a
    group's kept values in its window, widened values, prefetches."""

    def __init__(self, builder, values, meta, table, geometry, bits, key_bits, source, kind,
                 index_bits=None, table_bits=8, spread_nibbles=False):
        self.builder, self.values, self.meta, self.table = builder, values, meta, table
        self.geometry, self.bits, self.key_bits = geometry, bits, key_bits
        # Rank keys read through group_index_table (entries of table_bits): index_bits each
        self.index_bits, self.table_bits = index_bits, table_bits
        # Four-bit index fields spread into bytes with scalar operations (SPREAD_NIBBLES)
        self.spread_nibbles = spread_nibbles
        self.source, self.kind = source, kind
        self.key_mask = ir.Constant(I64, -1 if key_bits == 64 else (1 << key_bits) - 1)

    def vec_load(self, pointer, index, vector_type):
        address = self.builder.gep(pointer, [index])
        return self.builder.load(self.builder.bitcast(address, vector_type.as_pointer()),
                                 align=1)

    def concat(self, low, high):
        """Two vectors of one type joined into one twice as wide."""
        return self.builder.shuffle_vector(low, high, _const_vec(range(2 * low.type.count)))

    def prefetch(self, pointer, locality: int = 3):
        """Read prefetch of a data line (:func:`nm_kernels.numba_nm.emit_prefetch`)."""
        K.emit_prefetch(self.builder, pointer, locality)

    def key_at(self, g):
        """Group g's key: key_bits bits at bit g * key_bits of the row (one unaligned load)."""
        b = self.builder
        bit = b.mul(g, ir.Constant(I64, self.key_bits))
        byte = b.gep(self.meta, [b.lshr(bit, ir.Constant(I64, 3))])
        word = b.load(b.bitcast(byte, I64.as_pointer()), align=1)
        return b.and_(b.lshr(word, b.and_(bit, ir.Constant(I64, 7))), self.key_mask)

    def key_in_trip(self, first_byte, u):
        """Key of the trip's u-th group when the trip starts on a byte: constant offsets."""
        b = self.builder
        offset = u * self.key_bits
        byte = b.gep(self.meta, [b.add(first_byte, ir.Constant(I64, offset // 8))])
        word = b.load(b.bitcast(byte, I64.as_pointer()), align=1)
        return b.and_(b.lshr(word, ir.Constant(I64, offset % 8)), self.key_mask)

    def trip_word(self, first_byte):
        """The 64 bits of keys from byte ``first_byte`` (one unaligned load; the metadata rows
        carry :data:`nm_kernels.numba_nm.METADATA_SLACK_BYTES` spare bytes)."""
        byte = self.builder.gep(self.meta, [first_byte])
        return self.builder.load(self.builder.bitcast(byte, I64.as_pointer()), align=1)

    def key_word(self, first_byte, u):
        """The trip's u-th group key as the raw 32-bit word at its byte (byte-aligned keys of
        at most 32 bits): bits above the key are left in, since every field is masked after
        its shift; a plain load lets a vector splat of it be one broadcast load."""
        b = self.builder
        byte = b.gep(self.meta, [b.add(first_byte, ir.Constant(I64, u * self.key_bits // 8))])
        return b.load(b.bitcast(byte, I32.as_pointer()), align=1)

    def table_row(self, key):
        """The rank table's eight int8 entries for ``key`` (``<8 x i8>``)."""
        b = self.builder
        row = b.gep(self.table, [b.mul(key, ir.Constant(I64, LANES))])
        return b.load(b.bitcast(row, ir.VectorType(I8, LANES).as_pointer()), align=1)

    def index_word(self, key):
        """A rank key's index key from :func:`group_index_table` (i32)."""
        b = self.builder
        entry_type = ir.IntType(self.table_bits)
        entry = b.gep(b.bitcast(self.table, entry_type.as_pointer()), [key])
        return b.zext(b.load(entry), I32)

    def index_positions(self, key, bits=None):
        """A group's eight window positions from its index fields (``<8 x i32>``; ``bits``
        per field, the row's unless given)."""
        b, bits = self.builder, bits or self.bits
        v8i = ir.VectorType(I32, LANES)
        field_mask = (1 << bits) - 1
        offsets = _const_vec(self.geometry.lane_offset(lane) for lane in range(LANES))
        if self.spread_nibbles and bits == 4 and self.geometry.window == 16:
            word = key if key.type == I64 else b.zext(key, I64)
            for shift, mask in NIBBLE_SPREAD_STEPS:  # field i from bit 4i to byte i
                word = b.and_(b.or_(word, b.shl(word, ir.Constant(I64, shift))),
                              ir.Constant(I64, mask))
            fields = b.zext(b.bitcast(word, ir.VectorType(I8, LANES)), v8i)
            return b.add(fields, offsets)
        if key.type == I32 or self.key_bits <= 32:  # a raw key word is already 32 bits
            lanes = _splat(b, key if key.type == I32 else b.trunc(key, I32), v8i)
            fields = b.lshr(lanes, _const_vec(lane * bits for lane in range(LANES)))
        else:
            lanes = _splat(b, key, ir.VectorType(I64, LANES))
            fields = b.trunc(b.lshr(lanes, _const_vec(
                (lane * bits for lane in range(LANES)), I64)), v8i)
        return b.add(b.and_(fields, _const_vec([field_mask] * LANES)), offsets)

    def positions(self, key):
        """Window positions (``<8 x i32>``); rank entries keep their select bit as the sign."""
        if self.source == RANK and self.index_bits:
            return self.index_positions(self.index_word(key), self.index_bits)
        if self.source == RANK:
            return self.builder.sext(self.table_row(key), ir.VectorType(I32, LANES))
        if self.source == POSITIONS:
            return self.builder.zext(self.builder.bitcast(key, ir.VectorType(I8, LANES)),
                                     ir.VectorType(I32, LANES))
        return self.index_positions(key)

    def lane_position(self, key, lane: int):
        """Window position (i64) of a group's kept value ``lane`` in scalar registers: a byte
        of the decoded positions or the lane's index field (the GEMM passes, which never read
        rank keys: :func:`nm_group_gemm` transcodes them). The GEMM addresses an ``x`` row
        with it; taking it out of a position vector (``vpextrd``) cost two vector-port
        operations per kept value."""
        b = self.builder
        if self.source == POSITIONS:
            return b.and_(b.lshr(key, ir.Constant(I64, 8 * lane)), ir.Constant(I64, 255))
        field = b.and_(b.lshr(key, ir.Constant(I64, lane * self.bits)),
                       ir.Constant(I64, (1 << self.bits) - 1))
        return b.add(field, ir.Constant(I64, self.geometry.lane_offset(lane)))

    def window_start(self, g):
        """Index of the first input of group g's window."""
        b, geometry = self.builder, self.geometry
        if geometry.blocks_per_group:
            return b.mul(g, ir.Constant(I64, geometry.window))
        return b.mul(b.udiv(g, ir.Constant(I64, geometry.groups_per_block)),
                     ir.Constant(I64, geometry.m))

    def weights_at(self, first, lanes):
        """``lanes`` kept values from element ``first`` of the row, widened to float32."""
        b = self.builder
        if self.kind == K.F32:
            return self.vec_load(self.values, first, ir.VectorType(F32, lanes))
        raw = self.vec_load(self.values, first, ir.VectorType(I16, lanes))
        if self.kind == K.F16_BITS:
            return b.fpext(b.bitcast(raw, ir.VectorType(ir.HalfType(), lanes)),
                           ir.VectorType(F32, lanes))
        widened = b.shl(b.zext(raw, ir.VectorType(I32, lanes)), _const_vec([16] * lanes))
        return b.bitcast(widened, ir.VectorType(F32, lanes))


def _const_vec(items, kind_type=None):
    items = [int(v) for v in items]
    return ir.Constant(ir.VectorType(kind_type or I32, len(items)), items)


class _GroupSteps:
    """The vector steps of the GEMV row loop, emitted at the builder's position: one group
    (eight kept values into an ``<8 x float>``) or, on AVX-512, a pair of groups (sixteen into
    an ``<16 x float>``); each gathers ``x`` at the kept positions from registers and adds the
    products to an accumulator."""

    def __init__(self, row: _RowIR, x, registers: int, fold_total: int = 0, lane_table=None):
        b, geometry = row.builder, row.geometry
        self.row, self.builder, self.x, self.registers = row, b, x, registers
        self.fold_total = fold_total
        self.lane_table = lane_table  # lane_unrank_table where rank_unranks_in_lanes
        v8f, v8i = ir.VectorType(F32, LANES), ir.VectorType(I32, LANES)
        v16f, v16i = ir.VectorType(F32, 2 * LANES), ir.VectorType(I32, 2 * LANES)
        module = b.module
        self.permps = cgutils.get_or_insert_function(
            module, ir.FunctionType(v8f, [v8f, v8i]), "llvm.x86.avx2.permps")
        self.permilps = cgutils.get_or_insert_function(
            module, ir.FunctionType(v8f, [v8f, v8i]), "llvm.x86.avx.vpermilvar.ps.256")
        # vpermt2ps: lane i of the result is [a | b][index_i & 31] (bit 4 picks b).
        self.permt2ps = cgutils.get_or_insert_function(
            module, ir.FunctionType(v16f, [v16f, v16i, v16f]),
            "llvm.x86.avx512.vpermi2var.ps.512")
        # vpermd: lane i of the result is table[index_i & 15].
        self.permd = cgutils.get_or_insert_function(
            module, ir.FunctionType(v16i, [v16i, v16i]), "llvm.x86.avx512.permvar.si.512")
        # vcompressps: the lanes of a whose mask bit is set, packed into the low lanes in order.
        self.compressps = cgutils.get_or_insert_function(
            module, ir.FunctionType(v16f, [v16f, v16f, ir.VectorType(ir.IntType(1), 2 * LANES)]),
            "llvm.x86.avx512.mask.compress.v16f32")
        self.fma = {width: _fma(module, width) for width in (LANES, 2 * LANES)}
        # The register-select mask: 1:2 and 2:4 pick lanes 2, 3, 6, 7 from the odd pair
        # whatever the positions; rank tables carry the select bit as the sign; index
        # positions are tested.
        self.constant_select = geometry.lane_pairs and geometry.m <= 4
        self.odd_lanes = ir.Constant(ir.VectorType(ir.IntType(1), LANES),
                                     [geometry.lane_offset(lane) // 4 % 2
                                      for lane in range(LANES)])
        # A pair's second group indexes the upper 16 inputs of the 32-input window when each
        # group has its own 16-window; 16:32's two groups share one block's window.
        upper_offset = 16 if geometry.window == 16 else 0
        self.pair_offsets = _const_vec([0] * LANES + [upper_offset] * LANES)

    def _bit_set(self, positions, value):
        b = self.builder
        return b.icmp_unsigned("!=", b.and_(positions, _const_vec([value] * LANES)),
                               _const_vec([0] * LANES))

    def _first_level(self, positions):
        """Lanes whose position lies in the window's second register (or odd lane pair)."""
        if self.constant_select:
            return self.odd_lanes
        if self.row.source == RANK and not self.row.index_bits:
            return self.builder.icmp_signed("<", positions, _const_vec([0] * LANES))
        return self._bit_set(positions, self.row.geometry.select_bit)

    def _gather(self, start, positions):
        """``x[start + position]`` of each lane, from the window's registers (``<8 x float>``).

        vpermps uses the low 3 bits of a position, bits 3 and 4 pick the register. Lane pairs
        (lanes 0-3 index inputs 0-7, lanes 4-7 inputs 8-15): in-lane vpermilps on
        [x0:4 | x8:12] and [x4:8 | x12:16], bit 2 of a position picks the register."""
        b, row, x = self.builder, self.row, self.x
        first_level = self._first_level(positions)
        if row.geometry.lane_pairs:
            v4f = ir.VectorType(F32, 4)
            c = [row.vec_load(x, b.add(start, ir.Constant(I64, 4 * k)), v4f) for k in range(4)]
            even = b.call(self.permilps, [row.concat(c[0], c[2]), positions])
            odd = b.call(self.permilps, [row.concat(c[1], c[3]), positions])
            return b.select(first_level, odd, even)
        v8f = ir.VectorType(F32, LANES)
        picked = [b.call(self.permps, [row.vec_load(x, b.add(start, ir.Constant(
            I64, r * LANES)), v8f), positions]) for r in range(self.registers)]
        lower = b.select(first_level, picked[1], picked[0])
        if self.registers == 4:
            upper = b.select(first_level, picked[3], picked[2])
            lower = b.select(self._bit_set(positions, 16), upper, lower)
        return lower

    def group(self, g, acc, key):
        """acc + the eight products of group g, whose metadata key is ``key``."""
        b, row = self.builder, self.row
        gathered = self._gather(row.window_start(g), row.positions(key))
        weights = row.weights_at(b.mul(g, ir.Constant(I64, LANES)), LANES)
        return b.call(self.fma[LANES], [weights, gathered, acc])

    def _window_mask(self, key):
        """A group's 16-bit window mask from :func:`group_mask_table` (``<16 x i1>``); from
        its folded half (:func:`rank_folds`) when ``fold_total``: a key r in the upper half
        reads entry ``fold_total - 1 - r`` inverted, and a key that is no rank reads entry 0."""
        b = self.builder
        flip = None
        if self.fold_total:
            key = b.zext(key, I64) if key.type != I64 else key
            half = ir.Constant(I64, self.fold_total // 2)
            flip = b.icmp_unsigned(">=", key, half)
            key = b.select(flip, b.sub(ir.Constant(I64, self.fold_total - 1), key), key)
            key = b.select(b.icmp_unsigned("<", key, half), key, ir.Constant(I64, 0))
        entry = b.gep(self.row.table, [key])
        mask = b.load(b.bitcast(entry, I16.as_pointer()), align=2)
        if flip is not None:
            mask = b.xor(mask, b.select(flip, ir.Constant(I16, 0xFFFF), ir.Constant(I16, 0)))
        return b.bitcast(mask, ir.VectorType(ir.IntType(1), 2 * LANES))

    def masked_group(self, g, acc, key):
        """acc + the eight products of group g through its window mask (the wide rank path's
        single step, whose table holds masks rather than positions)."""
        b, row = self.builder, self.row
        v16f = ir.VectorType(F32, 2 * LANES)
        window = row.vec_load(self.x, b.mul(g, ir.Constant(I64, 16)), v16f)
        packed = b.call(self.compressps, [window, ir.Constant(v16f, [0.0] * 2 * LANES),
                                          self._window_mask(key)])
        gathered = b.shuffle_vector(packed, packed, _const_vec(range(LANES)))
        weights = row.weights_at(b.mul(g, ir.Constant(I64, LANES)), LANES)
        return b.call(self.fma[LANES], [weights, gathered, acc])

    def pair_index_positions(self, word_low, word_high, bits=None):
        """A pair's sixteen window positions from its groups' raw key words
        (:meth:`_RowIR.key_word`; ``word_high`` None when both keys lie in the first): the
        words broadcast into one ``<16 x i32>``, then one variable shift and a mask. Joining
        two eight-lane position vectors instead took three shuffles per pair (vinserti32x4,
        vpshufd, vpermq); without them a cache-resident float16 GEMV on one Zen 4 core runs
        2:4 at 12.8 G kept values/s against 9.1, 4:8 at 10.0 against 8.0
        (``reports/kernels/cpu.md``)."""
        b, row = self.builder, self.row
        bits = bits or row.bits
        v16i = ir.VectorType(I32, 2 * LANES)
        splats = [_splat(b, word, v16i) for word in (word_low, word_high) if word is not None]
        if word_high is None:  # both groups' fields lie in the first word
            joined, shifts = splats[0], _const_vec(lane * bits for lane in range(2 * LANES))
        else:
            upper = ir.Constant(ir.VectorType(ir.IntType(1), 2 * LANES),
                                [0] * LANES + [1] * LANES)
            joined = b.select(upper, splats[1], splats[0])
            shifts = _const_vec(lane % LANES * bits for lane in range(2 * LANES))
        fields = b.and_(b.lshr(joined, shifts), _const_vec([(1 << bits) - 1] * 2 * LANES))
        offsets = [row.geometry.lane_offset(lane % LANES) for lane in range(2 * LANES)]
        return b.add(b.add(fields, _const_vec(offsets)), self.pair_offsets)

    def pair_unranked_positions(self, word):
        """A pair's sixteen window positions unranked in its lanes (:func:`rank_unranks_in_lanes`)
        from the raw word holding its rank fields: lane l reads the field of its block
        ``l // N``, ``rank | (l % N) << bits`` indexes the position table (``vpermd``), and the
        block's offset in the window is added."""
        b, row = self.builder, self.row
        n, bits = row.geometry.n, row.bits
        lanes = _splat(b, word, ir.VectorType(I32, 2 * LANES))
        fields = b.and_(b.lshr(lanes, _const_vec(lane // n * bits for lane in range(2 * LANES))),
                        _const_vec([(1 << bits) - 1] * 2 * LANES))
        index = b.or_(fields, _const_vec((lane % n) << bits for lane in range(2 * LANES)))
        positions = b.call(self.permd, [_const_vec(self.lane_table), index])
        return b.add(positions, _const_vec(lane // n * row.geometry.m
                                           for lane in range(2 * LANES)))

    def pair(self, g, acc, key_low, key_high, raw_words=False):
        """acc + the sixteen products of groups g (even) and g + 1, whose x window is 32 inputs
        in two registers. Rank metadata: each group's window mask compresses its register
        (vcompressps) and the two halves are joined. Index metadata: one vpermt2ps gathers
        with 5-bit positions."""
        b, row = self.builder, self.row
        v16f = ir.VectorType(F32, 2 * LANES)
        start = b.mul(g, ir.Constant(I64, 16))  # 32 inputs per pair of groups
        low = row.vec_load(self.x, start, v16f)
        high = row.vec_load(self.x, b.add(start, ir.Constant(I64, 16)), v16f)
        if row.source == RANK and self.lane_table is not None:  # one word: both groups' ranks
            positions = self.pair_unranked_positions(key_low)
            gathered = b.call(self.permt2ps, [low, positions, high])
        elif row.source == RANK and row.index_bits:  # rank keys looked up as index keys
            positions = self.pair_index_positions(row.index_word(key_low),
                                                  row.index_word(key_high), row.index_bits)
            gathered = b.call(self.permt2ps, [low, positions, high])
        elif row.source == RANK:
            zeros = ir.Constant(v16f, [0.0] * 2 * LANES)
            packed_low = b.call(self.compressps, [low, zeros, self._window_mask(key_low)])
            packed_high = b.call(self.compressps, [high, zeros, self._window_mask(key_high)])
            gathered = b.shuffle_vector(packed_low, packed_high, _const_vec(
                list(range(LANES)) + list(range(2 * LANES, 3 * LANES))))
        else:
            positions = (self.pair_index_positions(key_low, key_high) if raw_words else
                         b.add(row.concat(row.index_positions(key_low),
                                          row.index_positions(key_high)), self.pair_offsets))
            gathered = b.call(self.permt2ps, [low, positions, high])
        weights = row.weights_at(b.mul(g, ir.Constant(I64, LANES)), 2 * LANES)
        return b.call(self.fma[2 * LANES], [weights, gathered, acc])


def _emit(context, builder, signature, args, geometry, bits, key_bits, registers, source, kind,
          wide, index_bits=None, fold_total=0, rows=1, lane_table=None):
    """The IR of the group loop of ``rows`` rows (see :func:`group_dot`). Each row's steps
    load the same ``x`` window at the same addresses with no store between them, so LLVM
    merges those loads: the rows share them.

    Main loop: a trip of ``steps`` steps (a group, or a pair of groups when wide) per row, each
    into its own accumulator (the FMA latency is not the bound then); a remainder loop
    finishes the leftover groups one at a time with one eight-lane accumulator per row."""
    arrays = [context.make_array(t)(context, builder, a)
              for t, a in zip(signature.args[:-1], args[:-1], strict=True)]
    x, table = arrays[-2].data, arrays[-1].data
    groups = args[-1]
    table_bits = signature.args[-2].dtype.bitwidth
    spread = not wide and K.target_cpu_name() in SPREAD_NIBBLES_CPUS
    row_irs = [_RowIR(builder, arrays[2 * r].data, arrays[2 * r + 1].data, table, geometry,
                      bits, key_bits, source, kind, index_bits, table_bits, spread)
               for r in range(rows)]
    steps = [_GroupSteps(row, x, registers, fold_total, lane_table) for row in row_irs]
    v8f = ir.VectorType(F32, LANES)
    const = partial(ir.Constant, I64)
    step_groups, step_count = (2, PAIR_UNROLL) if wide else (1, UNROLL)
    trip = step_groups * step_count
    acc_type = ir.VectorType(F32, 2 * LANES) if wide else v8f
    zero = ir.Constant(acc_type, [0.0] * acc_type.count)
    entry = builder.basic_block
    main = builder.append_basic_block("nm_group.main")
    middle = builder.append_basic_block("nm_group.middle")
    rest = builder.append_basic_block("nm_group.rest")
    done = builder.append_basic_block("nm_group.done")
    main_end = builder.and_(groups, const(-trip))
    builder.cbranch(builder.icmp_signed(">", main_end, const(0)), main, middle)

    builder.position_at_end(main)
    g = builder.phi(I64)
    g.add_incoming(const(0), entry)
    accs = [[builder.phi(acc_type) for _ in range(step_count)] for _ in range(rows)]
    nexts = [_emit_trip(row, step, g, row_accs, trip, wide)
             for row, step, row_accs in zip(row_irs, steps, accs, strict=True)]
    g_next = builder.add(g, const(trip))
    main_exit = builder.basic_block
    g.add_incoming(g_next, main_exit)
    for row_accs, row_nexts in zip(accs, nexts, strict=True):
        for acc, acc_next in zip(row_accs, row_nexts, strict=True):
            acc.add_incoming(zero, entry)
            acc.add_incoming(acc_next, main_exit)
    builder.cbranch(builder.icmp_signed("<", g_next, main_end), main, middle)

    builder.position_at_end(middle)
    combined = _merge_accumulators(builder, nexts, zero, entry, main_exit)
    builder.cbranch(builder.icmp_signed("<", main_end, groups), rest, done)

    builder.position_at_end(rest)
    g_rest = builder.phi(I64)
    g_rest.add_incoming(main_end, middle)
    acc_rests = [builder.phi(v8f) for _ in range(rows)]  # phis first in their block
    single_steps = []
    for step, total, acc_rest in zip(steps, combined, acc_rests, strict=True):
        acc_rest.add_incoming(total, middle)
        single = (step.masked_group if wide and source == RANK and index_bits is None
                  else step.group)
        single_steps.append((acc_rest, single(g_rest, acc_rest, step.row.key_at(g_rest))))
    g_rest_next = builder.add(g_rest, const(1))
    rest_exit = builder.basic_block
    g_rest.add_incoming(g_rest_next, rest_exit)
    for acc_rest, acc_rest_next in single_steps:
        acc_rest.add_incoming(acc_rest_next, rest_exit)
    builder.cbranch(builder.icmp_signed("<", g_rest_next, groups), rest, done)

    builder.position_at_end(done)
    totals = [builder.phi(v8f) for _ in range(rows)]
    for phi, total, (_, acc_rest_next) in zip(totals, combined, single_steps, strict=True):
        phi.add_incoming(total, middle)
        phi.add_incoming(acc_rest_next, rest_exit)
    sums = [_horizontal_sum(builder, phi) for phi in totals]
    if rows == 1:
        return sums[0]
    return context.make_tuple(builder, signature.return_type, sums)


def _emit_trip(row: _RowIR, steps: _GroupSteps, g, accs, trip: int, wide: bool) -> list:
    """One main-loop trip from group ``g``: prefetches, the trip's keys, its steps; returns
    the next accumulators.

    Software prefetch into L2, GEMV_PREFETCH_BYTES of values ahead: every value cache line of
    the trip, and the metadata once (a trip reads at most 8 x 40 bits of it). A trip's keys are
    read at constant offsets from one byte when its keys fill whole bytes."""
    b, key_bits = row.builder, row.key_bits
    const = partial(ir.Constant, I64)
    value_bytes = 4 if row.kind == K.F32 else 2
    ahead = b.add(g, const(GEMV_PREFETCH_BYTES // (LANES * value_bytes)))
    for line in range(0, trip * LANES * value_bytes, 64):
        row.prefetch(b.gep(row.values, [b.add(b.mul(ahead, const(LANES)),
                                               const(line // value_bytes))]),
                     GEMV_PREFETCH_LOCALITY)
    row.prefetch(b.gep(row.meta, [b.lshr(b.mul(ahead, const(key_bits)), const(3))]),
                 GEMV_PREFETCH_LOCALITY)
    # Byte-aligned index keys of <= 32 bits (1:2, 2:4, 4:8, 8:16) are read as raw words, whose
    # vector splat is one broadcast load; the others are shifted and masked out of 64 bits.
    raw_words = row.source == INDEX and key_bits % 8 == 0 and key_bits <= 32
    if wide and steps.lane_table is not None:  # each pair's rank fields as one raw word
        first_byte = b.lshr(b.mul(g, const(key_bits)), const(3))
        keys = [row.key_word(first_byte, u) if u % 2 == 0 else None for u in range(trip)]
    elif trip * key_bits % 8 == 0:
        first_byte = b.mul(g, const(key_bits // 8 if key_bits % 8 == 0 else key_bits))
        if key_bits % 8:  # g is a multiple of the trip, so g * key_bits is a whole byte count
            first_byte = b.lshr(first_byte, const(3))
        read = row.key_word if raw_words else row.key_in_trip
        # A pair whose two keys fit one word (2:4, 1:2) reads only the first.
        keys = [None if raw_words and wide and u % 2 and 2 * key_bits <= 32
                else read(first_byte, u) for u in range(trip)]
    else:
        keys = [row.key_at(b.add(g, const(u))) for u in range(trip)]
    if wide:
        return [steps.pair(b.add(g, const(2 * s)), acc, keys[2 * s], keys[2 * s + 1],
                           raw_words) for s, acc in enumerate(accs)]
    return [steps.group(b.add(g, const(u)), acc, key)
            for u, (acc, key) in enumerate(zip(accs, keys, strict=True))]


def _merge_accumulators(builder, row_nexts, zero, entry, main_exit):
    """At the block after the main loop: per row, the sum of its accumulators (zero when the
    loop did not run), folded to eight lanes."""
    merged_rows = []
    for nexts in row_nexts:  # every phi first, at the top of the block
        merged_rows.append([builder.phi(zero.type) for _ in nexts])
        for merged, acc_next in zip(merged_rows[-1], nexts, strict=True):
            merged.add_incoming(zero, entry)
            merged.add_incoming(acc_next, main_exit)
    combined_rows = []
    for partial_sums in merged_rows:
        while len(partial_sums) > 1:
            partial_sums = [builder.fadd(a, b) for a, b in zip(partial_sums[::2],
                                                               partial_sums[1::2], strict=True)]
        combined = partial_sums[0]
        if combined.type.count == 2 * LANES:  # fold the 16 lanes to 8 for the remainder loop
            combined = builder.fadd(
                builder.shuffle_vector(combined, combined, _const_vec(range(LANES))),
                builder.shuffle_vector(combined, combined, _const_vec(range(LANES, 2 * LANES))))
        combined_rows.append(combined)
    return combined_rows


# GEMM passes as (vector width, vectors per kept value), widest first; a batch is covered by
# the widest passes first, and four passes always cover every multiple of eight columns.
# AVX2: 32, 16 and 8 columns (the fourth pass is never reached). No 64-column AVX2 pass: its
# eight accumulators left one FMA chain per tile, eight products long per group (the FMA
# latency bound); two 32-column passes keep two chains per tile (11008x4096 float32, batch 64,
# 2 threads: 49-52 ms against 56-66 ms in back-to-back runs, numpy 47-57 ms in the same
# rounds; reports/kernels/cpu.md).
GEMM_PASSES_AVX2 = ((8, 4), (8, 2), (8, 1), (8, 1))
# AVX-512: 64, 32, 16 and 8 columns, one <16 x float> FMA per 16 columns, so each kept value's
# broadcast, position decode and x address serve twice the columns of an AVX2 pass.
GEMM_PASSES_AVX512 = ((16, 4), (16, 2), (16, 1), (8, 1))
# The group GEMM's batch is a multiple of its narrowest pass; NMPlan pads x with zero columns
# to one. Before, the last batch % 8 columns ran scalar code that decoded every block again:
# batch 12 took 245-256 ms against 16-22 ms for batch 8 (2:4 index, 11008x4096, Zen 1).
GEMM_BATCH_MULTIPLE = 8
GEMM_BATCH_MESSAGE = f"the group GEMM needs a batch that is a multiple of {GEMM_BATCH_MULTIPLE}"


@cache
def group_gemm_tile(n: int, m: int, bits: int, source: int, kind: int, tiles: int,
                    width: int = LANES):
    """A Numba intrinsic ``(values_row, meta_row, x, g_first, g_end, col0, acc) -> int64``.

    Adds ``sum_{g_first <= g < g_end} sum_lane v[8g + lane] * x[start(g) + pos(g, lane), cols]``
    into ``acc[cols]`` for the ``width * tiles`` batch columns ``cols`` from ``col0``
    (``width`` 8 or 16 floats per vector), for one row
    (``x`` is C-contiguous ``[in, batch]``). Each group's positions are decoded once (as in the
    GEMV, each kept value's in scalar registers: :meth:`_RowIR.lane_position`) and each kept
    value then multiplies a contiguous slice of an ``x`` row: one broadcast and ``tiles`` FMAs.
    ``source`` is index fields or decoded positions: :func:`nm_group_gemm` transcodes rank keys
    before the passes run.
    """
    geometry = group_geometry(F.Pattern(n, m))
    key_bits = _key_bits(geometry, bits, source)

    @intrinsic
    def _tile(typingctx, values_row, meta_row, x, g_first, g_end, col0, acc):
        sig = types.int64(values_row, meta_row, x, g_first, g_end, col0, acc)

        def codegen(context, builder, signature, args):
            return _emit_gemm_tile(context, builder, signature, args, geometry, bits, key_bits,
                                   source, kind, tiles, width)

        return sig, codegen

    _tile._set_uuid(
        f"nm_kernels.simd_nm.group_gemm_tile/{n}:{m}/{bits}/{source}/{kind}/{tiles}/{width}")
    return _tile


def _emit_gemm_tile(context, builder, signature, args, geometry, bits, key_bits, source, kind,
                    tiles, width):
    """The IR of one row's GEMM pass over ``width * tiles`` batch columns (see
    :func:`group_gemm_tile`). Lanes are spread over ``8 // tiles`` accumulator sets so that
    eight FMA chains are always in flight."""
    vxf = ir.VectorType(F32, width)
    fma = _fma(builder.module, width)
    arrays = [context.make_array(t)(context, builder, a)
              for t, a in zip(signature.args[:3], args[:3], strict=True)]
    values, meta, x = (a.data for a in arrays)
    batch = cgutils.unpack_tuple(builder, arrays[2].shape, 2)[1]
    acc_data = context.make_array(signature.args[6])(context, builder, args[6]).data
    g_first, groups, col0 = args[3], args[4], args[5]
    row = _RowIR(builder, values, meta, None, geometry, bits, key_bits, source, kind)
    sets = LANES // tiles

    def const(value):
        return ir.Constant(I64, value)

    entry = builder.basic_block
    loop = builder.append_basic_block("nm_gemm.loop")
    done = builder.append_basic_block("nm_gemm.done")
    zero = ir.Constant(vxf, [0.0] * width)
    builder.cbranch(builder.icmp_signed(">", groups, g_first), loop, done)

    builder.position_at_end(loop)
    g = builder.phi(I64)
    accs = [[builder.phi(vxf) for _ in range(tiles)] for _ in range(sets)]
    g.add_incoming(g_first, entry)
    ahead = builder.add(g, const(PREFETCH_BYTES // (LANES * (4 if kind == K.F32 else 2))))
    row.prefetch(builder.gep(values, [builder.mul(ahead, const(LANES))]))
    key = row.key_at(g)
    x_window = builder.gep(x, [builder.add(builder.mul(row.window_start(g), batch), col0)])
    weights = row.weights_at(builder.mul(g, const(LANES)), LANES)
    new = [list(tile_accs) for tile_accs in accs]
    for lane in range(LANES):
        base = builder.mul(row.lane_position(key, lane), batch)
        w = builder.shuffle_vector(weights, weights, _const_vec([lane] * width))
        chain = new[lane % sets]
        for t in range(tiles):
            x_cols = row.vec_load(x_window, builder.add(base, const(t * width)), vxf)
            chain[t] = builder.call(fma, [w, x_cols, chain[t]])
    g_next = builder.add(g, const(1))
    loop_exit = builder.basic_block
    g.add_incoming(g_next, loop_exit)
    for tile_accs, tile_new in zip(accs, new, strict=True):
        for acc, acc_next in zip(tile_accs, tile_new, strict=True):
            acc.add_incoming(zero, entry)
            acc.add_incoming(acc_next, loop_exit)
    builder.cbranch(builder.icmp_signed("<", g_next, groups), loop, done)

    builder.position_at_end(done)
    merged = [[builder.phi(vxf) for _ in range(tiles)] for _ in range(sets)]
    for set_merged, set_new in zip(merged, new, strict=True):
        for phi, acc_next in zip(set_merged, set_new, strict=True):
            phi.add_incoming(zero, entry)
            phi.add_incoming(acc_next, loop_exit)
    for t in range(tiles):
        total = merged[0][t]
        for set_merged in merged[1:]:
            total = builder.fadd(total, set_merged[t])
        address = builder.add(col0, const(t * width))
        builder.store(builder.fadd(row.vec_load(acc_data, address, vxf), total),
                      builder.bitcast(builder.gep(acc_data, [address]), vxf.as_pointer()),
                      align=1)
    return const(0)


def _splat(builder, scalar, vector_type):
    """``scalar`` in every lane of ``vector_type``."""
    undef = ir.Constant(vector_type, ir.Undefined)
    one = builder.insert_element(undef, scalar, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(one, undef, _const_vec([0] * vector_type.count))


def _horizontal_sum(builder, vector):
    """Sum of an ``<8 x float>``'s lanes by halving (4 + 4, 2 + 2, 1 + 1)."""
    width = LANES
    while width > 1:
        width //= 2
        mask_type = ir.VectorType(ir.IntType(32), width)
        low = builder.shuffle_vector(vector, vector, ir.Constant(mask_type, list(range(width))))
        high = builder.shuffle_vector(vector, vector,
                                      ir.Constant(mask_type, list(range(width, 2 * width))))
        vector = builder.fadd(low, high)
    return builder.extract_element(vector, ir.Constant(ir.IntType(32), 0))


def _split_tables_or_empty(pattern: F.Pattern, split: bool) -> tuple:
    """:func:`split_unrank_tables` when the kernel unranks, else empty arrays of their types
    (Numba types both branches of ``if split``)."""
    if split:
        return split_unrank_tables(pattern)
    return (np.zeros(1, np.uint16), np.zeros(1, np.int64), np.zeros((1, 1), np.uint64),
            np.zeros(1, np.int64), np.zeros((1, SPLIT_HALF), np.int32))


@njit(inline="always")
def _vector_groups(full_blocks, per_group, groups_per_block):
    """(groups the vector loop takes, first block left to scalar code) of a row."""
    if per_group:
        groups = full_blocks // per_group
        return groups, groups * per_group
    return full_blocks * groups_per_block, full_blocks


# Bytes of x one K-slice of the GEMM keeps hot: the slice's x rows are reused by every row of a
# row chunk, so they should stay in L1/L2 next to the streamed values. Without slicing, every
# weight row walked all of x (1 MiB at batch 64, 128 KiB at batch 8) out of L2 or L3, which
# bound the pass (see docs/kernels.md). Each pass call pays a fixed cost (its accumulators
# read and written back, the loop set up), so a slice should not be smaller than it must: on
# a Zen 4 host (32 KiB L1), old and new compiled in one process, 11008x4096 float32, batch
# 64, 2 threads, 32 KiB took 29.5-35.0 ms against 41.8-42.5 ms for 16 KiB (index) and 42.5
# against 47.2 (rank); at batch 8 and 16, 0.83-1.06x the time (reports/kernels/cpu.md).
GEMM_SLICE_X_BYTES = 32768


@njit(inline="always")
def _slice_groups(batch, inputs_per_group, trip):
    """Groups per K-slice: x for them fits :data:`GEMM_SLICE_X_BYTES`, a multiple of ``trip``."""
    groups = GEMM_SLICE_X_BYTES // (4 * batch * inputs_per_group)
    return max(trip, groups - groups % trip)


@cache
def nm_group_gemm(n: int, m: int, bits: int, decoder: int, kind: int, wide: bool = False):
    """The GEMM (``x`` ``[in, batch]``) through :func:`group_gemm_tile` passes
    (:data:`GEMM_PASSES_AVX512` when ``wide``, else :data:`GEMM_PASSES_AVX2`).

    Same arguments as :func:`nm_group_gemv` with ``table`` :func:`group_index_table` for rank
    metadata: each chunk's rank keys are transcoded into index keys once, before its passes.
    Rows go in chunks of ``ROW_CHUNK``; each chunk walks the inputs in K-slices
    whose x rows fit :data:`GEMM_SLICE_X_BYTES`, every row of the chunk adding its products
    for the slice into its accumulator row. Whole groups go through the vector passes;
    leftover blocks, a padded block and the dense tail take scalar code. The batch must be a
    multiple of :data:`GEMM_BATCH_MULTIPLE` (:class:`nm_kernels.cpu.NMPlan` pads ``x`` with
    zero columns to one).
    """
    geometry = group_geometry(F.Pattern(n, m))
    source = decoder  # the decoder code is the group kernels' position source
    # Rank keys are looked up once per row chunk into index keys (the passes then read them
    # as index metadata): the lookup table no longer competes with the K-slice of x for L1
    # in every pass.
    predecode = source == RANK
    index_bits = F.Pattern(n, m).field_bits("index")
    pass_source, pass_bits = (INDEX, index_bits) if predecode else (source, bits)
    key_bits = _key_bits(geometry, bits, source)
    key_mask = np.uint64((1 << key_bits) - 1)
    index_key_bytes = LANES * index_bits // 8
    passes = GEMM_PASSES_AVX512 if wide else GEMM_PASSES_AVX2
    pass_a, pass_b, pass_c, pass_d = (group_gemm_tile(n, m, pass_bits, pass_source, kind,
                                                      tiles, width)
                                      for width, tiles in passes)
    cols_a, cols_b, cols_c, cols_d = (width * tiles for width, tiles in passes)
    field_mask = np.uint64((1 << bits) - 1)
    per_group = geometry.blocks_per_group
    groups_per_block = geometry.groups_per_block
    inputs_per_group = geometry.window if per_group else m // groups_per_block
    split = source == POSITIONS
    split_tables = _split_tables_or_empty(F.Pattern(n, m), split)
    trip = max(1, groups_per_block)
    scalar = K.INDEX if decoder == K.INDEX else K.RANK_UNRANK

    @njit(parallel=True, fastmath=K.FASTMATH, cache=True)
    def gemm(values, metadata, tail_values, x, out, full_blocks, pad_block, table, binom,
             accumulate):
        """out[r, :] (+)= W[r] @ x for every row, whole groups in vector passes, the rest scalar."""
        rows = values.shape[0]
        cols, batch = x.shape
        if batch % GEMM_BATCH_MULTIPLE:
            raise ValueError(GEMM_BATCH_MESSAGE)
        tail = tail_values.shape[1]
        groups, first_scalar = _vector_groups(full_blocks, per_group, groups_per_block)
        buffer_bytes = split_unrank_buffer_bytes(first_scalar, n)
        step = _slice_groups(batch, inputs_per_group, trip)
        chunks = (rows + K.ROW_CHUNK - 1) // K.ROW_CHUNK
        for chunk in prange(chunks):
            pos = np.zeros(n + 1, dtype=np.int64)
            r0, r1 = chunk * K.ROW_CHUNK, min(rows, (chunk + 1) * K.ROW_CHUNK)
            acc = np.zeros((r1 - r0, batch), dtype=np.float32)
            decoded = np.empty((r1 - r0 if split or predecode else 0,
                                buffer_bytes if split else index_key_bytes * groups + 8),
                               dtype=np.uint8)
            state = np.empty((3, SPLIT_BLOCKS), dtype=np.int32)
            for r in range(r0, r0 + decoded.shape[0]):  # the chunk's positions, once
                if predecode:
                    rank_index_row(metadata[r], groups, key_bits, key_mask, table,
                                   index_key_bytes, decoded[r - r0])
                else:
                    split_unrank_row(metadata[r], first_scalar, n, bits, field_mask,
                                     split_tables, state, decoded[r - r0])
            for g0 in range(0, groups, step):
                g1 = min(groups, g0 + step)
                for r in range(r0, r1):  # passes widest first
                    vrow, row_acc = values[r], acc[r - r0]
                    meta_row = decoded[r - r0] if split or predecode else metadata[r]
                    c0 = 0
                    while c0 + cols_a <= batch:
                        pass_a(vrow, meta_row, x, g0, g1, c0, row_acc)
                        c0 += cols_a
                    if c0 + cols_b <= batch:
                        pass_b(vrow, meta_row, x, g0, g1, c0, row_acc)
                        c0 += cols_b
                    if c0 + cols_c <= batch:
                        pass_c(vrow, meta_row, x, g0, g1, c0, row_acc)
                        c0 += cols_c
                    if c0 + cols_d <= batch:
                        pass_d(vrow, meta_row, x, g0, g1, c0, row_acc)
            for r in range(r0, r1):
                meta_row = metadata[r]
                vrow = values[r]
                row_acc = acc[r - r0]
                for b in range(first_scalar, full_blocks + pad_block):  # leftover, padded
                    f = K.prepare_block(meta_row, b, n, m, bits, field_mask, scalar, binom, pos)
                    for i in range(n):
                        c = b * m + K.kept_position(meta_row, f, b, i, n, bits, field_mask,
                                                   scalar, table, pos)
                        if c < cols:
                            v = K.widen(vrow[b * n + i], kind)
                            xrow = x[c]
                            for j in range(batch):
                                row_acc[j] += v * xrow[j]
                for t in range(tail):
                    v = K.widen(tail_values[r, t], kind)
                    xrow = x[cols - tail + t]
                    for j in range(batch):
                        row_acc[j] += v * xrow[j]
                for j in range(batch):
                    out[r, j] = out[r, j] + row_acc[j] if accumulate else row_acc[j]

    return gemm


@njit(inline="always")
def _leftover_dot(acc, vrow, meta_row, tail_row, x, first_block, blocks, n, m, bits, field_mask,
                  scalar, table, binom, pos, kind):
    """``acc`` plus a row's products over blocks ``first_block`` to ``blocks`` (the leftover
    and padded blocks the vector loops leave, decoded by the scalar ``scalar`` decoder) and
    over its dense tail."""
    cols = x.shape[0]
    tail = tail_row.shape[0]
    for b in range(first_block, blocks):
        f = K.prepare_block(meta_row, b, n, m, bits, field_mask, scalar, binom, pos)
        for i in range(n):
            c = b * m + K.kept_position(meta_row, f, b, i, n, bits, field_mask, scalar, table,
                                       pos)
            if c < cols:
                acc += K.widen(vrow[b * n + i], kind) * x[c]
    for j in range(tail):
        acc += K.widen(tail_row[j], kind) * x[cols - tail + j]
    return acc


def gemv_pairs_rows(pattern: F.Pattern, source: int, kind: int, wide: bool) -> bool:
    """Whether :func:`nm_group_gemv` runs two rows per loop, sharing their x loads: the AVX-512
    pair step on half-precision values of patterns whose groups span whole blocks, from rank
    or index keys (see the measurements there)."""
    geometry = group_geometry(pattern)
    return (wide and source != POSITIONS and kind != K.F32 and geometry is not None
            and geometry.blocks_per_group > 0)


# SCRATCH_FROM_CALLER: the GEMV's split-unrank buffers (one row's positions and the greedy
# state, written and read back for every row) are allocated before its parallel loop, one per
# row chunk, by the calling thread. Allocated inside the loop, a pool thread's came from its
# own malloc arena (a 64 MiB-aligned heap, e.g. 0x7f96bc000dc0), and the 2-core Zen 1 guest's
# worker thread ran 16:32 rank 2-2.5x slower than the main thread (float16 11008x4096, cycle
# counters per chunk: busy 68-95 against 30-42 ms for equal halves). Under Numba's workqueue
# layer: 140-149 ms on one thread and 73-89 on two before, 68-72 and 41-53 after
# (docs/validation.md; which address conflict causes it was not found). ``pos`` stays per
# chunk: only the scalar leftover blocks use it. One buffer per thread, indexed by
# numba.get_thread_id, ran one thread at 52 ms but makes the GEMV uncacheable.
@cache
def nm_group_gemv(n: int, m: int, bits: int, decoder: int, kind: int, wide: bool = False):
    """The batch-1 GEMV through the group loop (rank-LUT or index metadata); ``wide``: its
    AVX-512 pair steps (:func:`gemv_path` says when).

    Same arguments as :func:`nm_kernels.numba_nm.nm_kernels`'s GEMV except ``table``, which is
    :func:`gemv_table` for rank metadata. Whole groups of eight kept values go
    through the vector loop; leftover full blocks, a padded block and the dense tail take the
    scalar code of :mod:`nm_kernels.numba_nm`. Defined here, beside the IR it inlines, so Numba's
    disk cache (stamped by this file's modification time) is invalidated when the loop changes.
    """
    geometry = group_geometry(F.Pattern(n, m))
    source = decoder  # the decoder code is the group kernels' position source
    dot = group_dot(n, m, bits, source, kind, wide)
    # Half-precision values: the AVX-512 loop runs two rows at once, whose x loads (two
    # <16 x float> per pair of groups) serve both, halving the x loads, which on 4096x11008
    # come from L2 (a 43 KiB float32 x). Old and new in one process (Zen 4 guest, 2 threads,
    # 9-11 rounds, scripts/simd_ab.py, 2026-12-04): float16/bfloat16 0.75-0.89x the time on
    # 4096x11008 (2:4 and 8:16, rank and index, 4:8 index), 0.94-1.07x on 11008x4096; float32
    # 0.75-1.38x, 2:4 rank 1.13-1.24x in both runs (twice the value streams per core), so
    # float32 keeps one row per loop. 16:32 index (40-bit keys decoded per group, not raw key
    # words) took 1.64x the time with two rows (float16, 11008x4096) and keeps one too.
    paired = gemv_pairs_rows(F.Pattern(n, m), source, kind, wide)
    dot2 = group_dot(n, m, bits, source, kind, wide, rows=2) if paired else dot
    field_mask = np.uint64((1 << bits) - 1)
    per_group = geometry.blocks_per_group
    groups_per_block = geometry.groups_per_block
    split = source == POSITIONS
    split_tables = _split_tables_or_empty(F.Pattern(n, m), split)
    # Leftover blocks are decoded with the scalar index reader; rank-LUT leftovers need the
    # per-block table, which the group table's key 0..C-1 rows do not hold, so they unrank.
    scalar = K.INDEX if decoder == K.INDEX else K.RANK_UNRANK

    @njit(parallel=True, fastmath=K.FASTMATH, cache=True)
    def gemv(values, metadata, tail_values, x, out, full_blocks, pad_block, table, binom,
             accumulate):
        """out[r] (+)= W[r] . x for every row, whole groups in AVX2, the rest scalar."""
        rows = values.shape[0]
        groups, first_scalar = _vector_groups(full_blocks, per_group, groups_per_block)
        buffer_bytes = split_unrank_buffer_bytes(first_scalar, n)
        chunks = (rows + K.ROW_CHUNK - 1) // K.ROW_CHUNK
        # The split-unrank scratch of each row chunk, allocated here by the calling thread
        # (see SCRATCH_FROM_CALLER).
        scratch = np.empty((chunks if split else 1, buffer_bytes if split else 0),
                           dtype=np.uint8)
        states = np.empty((chunks if split else 1, 3, SPLIT_BLOCKS), dtype=np.int32)
        for chunk in prange(chunks):
            pos = np.zeros(n + 1, dtype=np.int64)
            decoded = scratch[chunk if split else 0]
            state = states[chunk if split else 0]
            r, r_end = chunk * K.ROW_CHUNK, min(rows, (chunk + 1) * K.ROW_CHUNK)
            while r < r_end:
                count, second = 1, np.float32(0.0)
                if split:  # the row's positions into an L1-resident buffer first
                    split_unrank_row(metadata[r], first_scalar, n, bits, field_mask,
                                     split_tables, state, decoded)
                    first = dot(values[r], decoded, x, table, groups)
                elif paired and r + 1 < r_end:  # two rows sharing each x load
                    first, second = dot2(values[r], metadata[r], values[r + 1],
                                         metadata[r + 1], x, table, groups)
                    count = 2
                else:
                    first = dot(values[r], metadata[r], x, table, groups)
                for q in range(r, r + count):  # leftover blocks, padded block, dense tail
                    acc = _leftover_dot(first if q == r else second, values[q], metadata[q],
                                        tail_values[q], x, first_scalar,
                                        full_blocks + pad_block, n, m, bits, field_mask,
                                        scalar, table, binom, pos, kind)
                    out[q] = out[q] + acc if accumulate else acc
                r += count

    return gemv


@cache
def table_dot(n: int, m: int, bits: int, source: int, kind: int):
    """A Numba intrinsic ``(values_row, meta_row, x_table, offsets, groups) -> float32``: one
    row's ``sum_{g < groups}`` of its group's eight kept values times their inputs, read from
    the x table of TABLE_GEMV (:func:`build_x_table`) at the entries :func:`table_offsets`
    gives for the group's two pairs of blocks. :data:`UNROLL` groups per trip, each with its
    own accumulator, then one group at a time; a trip's keys (UNROLL x 12 or 16 bits) are one
    64-bit load."""
    _check_table_pattern(F.Pattern(n, m))
    geometry = group_geometry(F.Pattern(n, m))
    key_bits = _key_bits(geometry, bits, source)
    run = math.comb(m, n) ** TABLE_BLOCKS * TABLE_BLOCKS * n  # floats per pair of blocks

    @intrinsic
    def _table_dot(typingctx, values_row, meta_row, x_table, offsets, groups):
        sig = types.float32(values_row, meta_row, x_table, offsets, groups)

        def codegen(context, builder, signature, args):
            return _emit_table_dot(context, builder, signature, args, geometry, bits,
                                   key_bits, source, kind, run)

        return sig, codegen

    _table_dot._set_uuid(f"nm_kernels.simd_nm.table_dot/{n}:{m}/{bits}/{source}/{kind}")
    return _table_dot


def _emit_table_dot(context, builder, signature, args, geometry, bits, key_bits, source, kind,
                    run):
    """The IR of :func:`table_dot`: a main loop of UNROLL groups, then a remainder loop."""
    arrays = [context.make_array(t)(context, builder, a)
              for t, a in zip(signature.args[:4], args[:4], strict=True)]
    values, meta, x_table, offsets = (a.data for a in arrays)
    groups = args[4]
    row = _RowIR(builder, values, meta, None, geometry, bits, key_bits, source, kind)
    v4f, v8f = ir.VectorType(F32, 4), ir.VectorType(F32, LANES)
    fma = _fma(builder.module, LANES)
    half_bits = key_bits // TABLE_BLOCKS
    half_mask = ir.Constant(I64, (1 << half_bits) - 1)
    zero = ir.Constant(v8f, [0.0] * LANES)

    def const(value):
        return ir.Constant(I64, value)

    def group_step(g, acc, key):
        halves = []
        for h, pair_key in enumerate((builder.and_(key, half_mask),
                                      builder.lshr(key, const(half_bits)))):
            entry = builder.zext(builder.load(builder.gep(offsets, [pair_key])), I64)
            pair = builder.add(builder.mul(g, const(TABLE_BLOCKS)), const(h))
            start = builder.add(builder.mul(pair, const(run)), entry)
            halves.append(row.vec_load(x_table, start, v4f))
        weights = row.weights_at(builder.mul(g, const(LANES)), LANES)
        return builder.call(fma, [weights, row.concat(*halves), acc])

    def loop(name, first, step, accs):
        """``for g in range(first, groups - step + 1, step)`` over ``accs``; returns (exit
        block's g, the accumulators after it) as phis of the block after the loop."""
        before = builder.basic_block
        body = builder.append_basic_block(f"table_dot.{name}")
        after = builder.append_basic_block(f"table_dot.{name}.done")
        last = builder.sub(groups, const(step))
        builder.cbranch(builder.icmp_signed("<=", first, last), body, after)
        builder.position_at_end(body)
        g = builder.phi(I64)
        phis = [builder.phi(v8f) for _ in accs]
        g.add_incoming(first, before)
        if step == 1:
            keys = [row.key_at(g)]
        else:  # a trip starts on a whole byte of keys and its keys fill at most 64 bits
            assert step * key_bits <= 64 and step * key_bits % 8 == 0, (step, key_bits)
            first_byte = builder.lshr(builder.mul(g, const(key_bits)), const(3))
            word = row.trip_word(first_byte)
            keys = [builder.and_(builder.lshr(word, const(u * key_bits)), row.key_mask)
                    for u in range(step)]
        nexts = [group_step(builder.add(g, const(u)), phi, key)
                 for u, (phi, key) in enumerate(zip(phis, keys, strict=True))]
        g_next = builder.add(g, const(step))
        body_end = builder.basic_block
        g.add_incoming(g_next, body_end)
        for phi, acc, acc_next in zip(phis, accs, nexts, strict=True):
            phi.add_incoming(acc, before)
            phi.add_incoming(acc_next, body_end)
        builder.cbranch(builder.icmp_signed("<=", g_next, last), body, after)
        builder.position_at_end(after)
        g_out = builder.phi(I64)
        g_out.add_incoming(first, before)
        g_out.add_incoming(g_next, body_end)
        outs = []
        for acc, acc_next in zip(accs, nexts, strict=True):
            out = builder.phi(v8f)
            out.add_incoming(acc, before)
            out.add_incoming(acc_next, body_end)
            outs.append(out)
        return g_out, outs

    g, accs = loop("main", const(0), UNROLL, [zero] * UNROLL)
    while len(accs) > 1:
        accs = [builder.fadd(a, b) for a, b in zip(accs[::2], accs[1::2], strict=True)]
    _, (acc,) = loop("rest", g, 1, accs)
    return _horizontal_sum(builder, acc)


@cache
def nm_table_gemv(n: int, m: int, bits: int, decoder: int, kind: int):
    """The batch-1 GEMV of TABLE_GEMV (``"avx2-table"``): the calling thread writes the x
    table for the rows' whole groups, then every row reads it through :func:`table_dot`;
    leftover blocks, a padded block and the dense tail as in :func:`nm_group_gemv`.

    Same arguments as :func:`nm_group_gemv` with ``table`` :func:`table_offsets`.
    """
    pattern = F.Pattern(n, m)
    _check_table_pattern(pattern)
    geometry = group_geometry(pattern)
    dot = table_dot(n, m, bits, decoder, kind)
    block_positions = F.rank_lut(pattern).astype(np.int64)
    field_mask = np.uint64((1 << bits) - 1)
    per_group = geometry.blocks_per_group
    groups_per_block = geometry.groups_per_block
    scalar = K.INDEX if decoder == K.INDEX else K.RANK_UNRANK
    no_lut = np.zeros((1, LANES), np.uint8)  # the scalar decoders here read no rank table

    @njit(parallel=True, fastmath=K.FASTMATH, cache=True)
    def gemv(values, metadata, tail_values, x, out, full_blocks, pad_block, table, binom,
             accumulate):
        """out[r] (+)= W[r] . x for every row, whole groups through the x table."""
        rows = values.shape[0]
        groups, first_scalar = _vector_groups(full_blocks, per_group, groups_per_block)
        x_table = build_x_table(x, block_positions, groups * per_group // TABLE_BLOCKS, m)
        chunks = (rows + K.ROW_CHUNK - 1) // K.ROW_CHUNK
        for chunk in prange(chunks):
            pos = np.zeros(n + 1, dtype=np.int64)
            for r in range(chunk * K.ROW_CHUNK, min(rows, (chunk + 1) * K.ROW_CHUNK)):
                acc = dot(values[r], metadata[r], x_table, table, groups)
                acc = _leftover_dot(acc, values[r], metadata[r], tail_values[r], x,
                                    first_scalar, full_blocks + pad_block, n, m, bits,
                                    field_mask, scalar, no_lut, binom, pos, kind)
                out[r] = out[r] + acc if accumulate else acc

    return gemv
