"""AVX2 and AVX-512 group kernels for the batch-1 N:M GEMV: kept values against an x window.

The scalar GEMV (:mod:`kernels.numba_nm`) spends 3-4 cycles per kept element on a field read, an
address and a scalar ``x[position]`` load; the memory-bound bytes bound needs about one. Here the
row's kept values are taken eight at a time (one ``<8 x float>``): their positions form an
``<8 x i32>`` inside a *window* of 16 or 32 consecutive inputs held in two or four registers, and
``vpermps`` (``llvm.x86.avx2.permps``) gathers ``x`` at those positions from registers, with
blends choosing the register by bits 3 and 4 of the position (2:4, 4:8 and 1:2 use two in-lane
``vpermilps`` instead). One FMA per eight values follows; the loop runs four groups per trip into
four accumulators and prefetches values and metadata :data:`PREFETCH_BYTES` ahead. Zen 3's
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
(:func:`group_mask_table`) and ``vcompressps`` packs each group's ``x``. Measured on Zen 5
(11008x4096 float32, one thread): 8-13% less time than the AVX2 step.

The loop over a row's groups is written in LLVM IR (a Numba ``@intrinsic``) because Numba has no
vector types; the caller handles leftover blocks, padded tails and dense tails with scalar code.
Only x86 CPUs with AVX2 take this path (:func:`available`); :func:`gemv_path` picks the step.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import llvmlite.binding as llvm_binding
import numpy as np
from llvmlite import ir
from numba import config as numba_config
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from compression import formats as F
from kernels import numba_nm as K

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
# Software prefetch distance in bytes of values (about one 11008x4096 float32 row: 256 float32
# groups, 512 half-precision ones). Measured on 11008x4096, one thread: Zen 3 float32, +10-20%
# over none, flat between 1 and 8 KiB; Zen 5, 8 KiB took 30-40% less time than 2 KiB and 16 KiB
# no less, for float32 and float16 alike.
PREFETCH_BYTES = 8192


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
    return numba_config.CPU_NAME in (None, "host") and {"avx2", "fma"} <= _host_features()


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
    ``"avx512-pair"`` (16 kept values per step), ``"avx2-group"`` (8 per step) or ``"scalar"``.

    ``simd`` (:data:`SIMD_CHOICES`) caps it: ``"auto"`` takes the widest this CPU runs,
    ``"avx2"`` stops at the AVX2 group loop and ``"scalar"`` keeps the scalar kernel.
    """
    if simd not in SIMD_CHOICES:
        raise ValueError(f"simd must be one of {', '.join(SIMD_CHOICES)}, got {simd!r}")
    if simd == "scalar" or decoder not in ("rank-lut", "index") or not supports(pattern,
                                                                                 encoding):
        return "scalar"
    if simd == "auto" and wide_available() and group_geometry(pattern).pairs_fill_32:
        return "avx512-pair"
    return "avx2-group"


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
def group_mask_table(pattern: F.Pattern) -> np.ndarray:
    """``uint16[2**(G*bits)]``: the 16-input window bit mask of a group's kept positions, keyed
    like :func:`group_position_table` (invalid keys map to 0).

    The AVX-512 pair step reads rank metadata through it: ``vcompressps`` of the window's
    sixteen ``x`` under the mask yields ``x`` at the kept positions in ascending order, the
    order the values are stored in. Two bytes per key instead of eight: 8 KiB for 2:4 and
    32 KiB for 8:16 and 4:8 against 32 and 128 KiB of position rows. Why size matters
    (measured on Zen 5, 11008x4096, one thread): the rank pair step ran 25-50% slower than
    with index metadata, and as fast once every lookup was confined to 64 keys; the smaller
    table alone did not close that gap (random lookups still miss the 48 KiB L1 that the
    streamed values and ``x`` share); prefetching values further ahead (:data:`PREFETCH_BYTES`)
    narrowed it to 10-20%.
    """
    geometry = group_geometry(pattern)
    if geometry is None or geometry.window != 16 or not geometry.blocks_per_group:
        raise ValueError(f"{pattern}: groups of eight kept values do not fill a 16-input window")
    positions = group_position_table(pattern).astype(np.int64) & 0x0F
    masks = np.bitwise_or.reduce(np.left_shift(1, positions), axis=1)
    # group_position_table maps invalid keys to all-zero positions: mask 1, reset to 0.
    masks[np.any(positions[:, 1:] <= positions[:, :-1], axis=1)] = 0
    masks = masks.astype(np.uint16)
    masks.setflags(write=False)
    return masks


RANK, INDEX = 0, 1


@cache
def group_dot(n: int, m: int, bits: int, source: int, kind: int, wide: bool):
    """A Numba intrinsic ``(values_row, meta_row, x, table, groups) -> float32``.

    Returns ``sum_{g < groups} sum_lane v[8g + lane] * x[start(g) + pos(g, lane)]`` for one row.
    ``meta_row`` must carry 8 readable bytes after its last field (``kernel_metadata``);
    ``table`` is :func:`group_position_table` for rank metadata (ignored for index). ``wide``
    (AVX-512, :attr:`GroupGeometry.pairs_fill_32` patterns): the main loop takes two groups per
    step into ``<16 x float>`` accumulators; a leftover odd group takes the eight-lane step.
    """
    geometry = group_geometry(F.Pattern(n, m))
    key_bits = (geometry.blocks_per_group * bits if source == RANK else LANES * bits)
    registers = geometry.window // LANES

    @intrinsic
    def _group_dot(typingctx, values_row, meta_row, x, table, groups):
        sig = types.float32(values_row, meta_row, x, table, groups)

        def codegen(context, builder, signature, args):
            return _emit(context, builder, signature, args, geometry, bits, key_bits, registers,
                         source, kind, wide)

        return sig, codegen

    # Numba keys its disk cache on the pickled closure of the GEMV, this intrinsic included;
    # the default per-process uuid would make every process miss the cache and compile again.
    _group_dot._set_uuid(f"kernels.simd_nm.group_dot/{n}:{m}/{bits}/{source}/{kind}/{wide}")
    return _group_dot


def _emit(context, builder, signature, args, geometry, bits, key_bits, registers, source, kind,
          wide):
    """The IR of one row's group loop (see :func:`group_dot`)."""
    f32, i8, i16, i32, i64 = (ir.FloatType(), ir.IntType(8), ir.IntType(16), ir.IntType(32),
                              ir.IntType(64))
    v8f, v8i = ir.VectorType(f32, LANES), ir.VectorType(i32, LANES)
    v16f, v16i = ir.VectorType(f32, 2 * LANES), ir.VectorType(i32, 2 * LANES)
    module = builder.module
    permps = cgutils.get_or_insert_function(module, ir.FunctionType(v8f, [v8f, v8i]),
                                            "llvm.x86.avx2.permps")
    permilps = cgutils.get_or_insert_function(module, ir.FunctionType(v8f, [v8f, v8i]),
                                              "llvm.x86.avx.vpermilvar.ps.256")
    # vpermt2ps: lane i of the result is [a | b][index_i & 31] (bit 4 picks b).
    permt2ps = cgutils.get_or_insert_function(module, ir.FunctionType(v16f, [v16f, v16i, v16f]),
                                              "llvm.x86.avx512.vpermi2var.ps.512")
    # vcompressps: the lanes of a whose mask bit is set, packed into the low lanes in order.
    compressps = cgutils.get_or_insert_function(
        module, ir.FunctionType(v16f, [v16f, v16f, ir.VectorType(ir.IntType(1), 2 * LANES)]),
        "llvm.x86.avx512.mask.compress.v16f32")
    v4f = ir.VectorType(f32, 4)
    fma = {width: cgutils.get_or_insert_function(
        module, ir.FunctionType(vt, [vt, vt, vt]), f"llvm.fma.v{width}f32")
        for width, vt in ((LANES, v8f), (2 * LANES, v16f))}
    arrays = [context.make_array(t)(context, builder, a)
              for t, a in zip(signature.args[:4], args[:4], strict=True)]
    values, meta, x, table = (a.data for a in arrays)
    groups = args[4]

    def const_vec(items, kind_type=i32):
        items = [int(v) for v in items]
        return ir.Constant(ir.VectorType(kind_type, len(items)), items)

    def vec_load(pointer, index, vector_type):
        address = builder.gep(pointer, [index])
        return builder.load(builder.bitcast(address, vector_type.as_pointer()), align=1)

    def concat(low, high):
        """Two vectors of one type joined into one twice as wide."""
        return builder.shuffle_vector(low, high,
                                      const_vec(range(2 * low.type.count)))

    prefetch_fn = cgutils.get_or_insert_function(
        module, ir.FunctionType(ir.VoidType(), [i8.as_pointer(), i32, i32, i32]),
        "llvm.prefetch.p0")

    def prefetch(pointer):
        """Read prefetch into all cache levels (rw 0, locality 3, data cache)."""
        builder.call(prefetch_fn, [builder.bitcast(pointer, i8.as_pointer()),
                                   ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])

    key_mask = ir.Constant(i64, (1 << key_bits) - 1)

    def key_at(g):
        """Group g's key: key_bits bits at bit g * key_bits of the row (one unaligned load)."""
        bit = builder.mul(g, ir.Constant(i64, key_bits))
        byte = builder.gep(meta, [builder.lshr(bit, ir.Constant(i64, 3))])
        word = builder.load(builder.bitcast(byte, i64.as_pointer()), align=1)
        return builder.and_(builder.lshr(word, builder.and_(bit, ir.Constant(i64, 7))), key_mask)

    def key_in_trip(first_byte, u):
        """Key of the trip's u-th group when the trip starts on a byte: constant offsets."""
        offset = u * key_bits
        byte = builder.gep(meta, [builder.add(first_byte, ir.Constant(i64, offset // 8))])
        word = builder.load(builder.bitcast(byte, i64.as_pointer()), align=1)
        return builder.and_(builder.lshr(word, ir.Constant(i64, offset % 8)), key_mask)

    def table_row(key):
        """The rank table's eight int8 entries for ``key`` (``<8 x i8>``)."""
        row = builder.gep(table, [builder.mul(key, ir.Constant(i64, LANES))])
        return builder.load(builder.bitcast(row, ir.VectorType(i8, LANES).as_pointer()), align=1)

    def index_positions(key):
        """A group's eight window positions from its index fields (``<8 x i32>``)."""
        field_mask = (1 << bits) - 1
        if key_bits <= 32:
            lanes = _splat(builder, builder.trunc(key, i32), v8i)
            fields = builder.lshr(lanes, const_vec(lane * bits for lane in range(LANES)))
        else:
            v8l = ir.VectorType(i64, LANES)
            lanes = _splat(builder, key, v8l)
            fields = builder.trunc(builder.lshr(lanes, const_vec(
                (lane * bits for lane in range(LANES)), i64)), v8i)
        return builder.add(builder.and_(fields, const_vec([field_mask] * LANES)),
                           const_vec(geometry.lane_offset(lane) for lane in range(LANES)))

    def weights_at(first, lanes):
        """``lanes`` kept values from element ``first`` of the row, widened to float32."""
        if kind == K.F32:
            return vec_load(values, first, ir.VectorType(f32, lanes))
        raw = vec_load(values, first, ir.VectorType(i16, lanes))
        if kind == K.F16_BITS:
            return builder.fpext(builder.bitcast(raw, ir.VectorType(ir.HalfType(), lanes)),
                                 ir.VectorType(f32, lanes))
        lanes_i32 = ir.VectorType(i32, lanes)
        widened = builder.shl(builder.zext(raw, lanes_i32), const_vec([16] * lanes))
        return builder.bitcast(widened, ir.VectorType(f32, lanes))

    # The register-select mask: 1:2 and 2:4 pick lanes 2, 3, 6, 7 from the odd pair whatever
    # the positions; rank tables carry the select bit as the sign; index positions are tested.
    constant_select = geometry.lane_pairs and geometry.m <= 4
    odd_lanes = ir.Constant(ir.VectorType(ir.IntType(1), LANES),
                            [geometry.lane_offset(lane) // 4 % 2 for lane in range(LANES)])

    def group(g, acc, key):
        """acc + the eight products of group g, whose metadata key is ``key``."""
        if source == RANK:
            positions = builder.sext(table_row(key), v8i)
        else:
            positions = index_positions(key)

        # x window: `registers` consecutive <8 x float>; vpermps uses the low 3 bits of a position,
        # bits 3 and 4 pick the register.
        if geometry.blocks_per_group:
            start = builder.mul(g, ir.Constant(i64, geometry.window))
        else:
            start = builder.mul(builder.udiv(g, ir.Constant(i64, geometry.groups_per_block)),
                                ir.Constant(i64, geometry.m))
        def bit_set(value):
            return builder.icmp_unsigned("!=", builder.and_(positions, const_vec([value] * LANES)),
                                         const_vec([0] * LANES))

        def chunk(offset):
            return vec_load(x, builder.add(start, ir.Constant(i64, offset)), v4f)

        if constant_select:
            first_level = odd_lanes
        elif source == RANK:
            first_level = builder.icmp_signed("<", positions, const_vec([0] * LANES))
        else:
            first_level = bit_set(geometry.select_bit)
        if geometry.lane_pairs:
            # Lanes 0-3 index inputs 0-7 and lanes 4-7 inputs 8-15: in-lane vpermilps on
            # [x0:4 | x8:12] and [x4:8 | x12:16], bit 2 of a position picks the register.
            c = [chunk(4 * k) for k in range(4)]
            even = builder.call(permilps, [concat(c[0], c[2]), positions])
            odd = builder.call(permilps, [concat(c[1], c[3]), positions])
            lower = builder.select(first_level, odd, even)
        else:
            picked = [builder.call(permps, [vec_load(x, builder.add(start, ir.Constant(
                i64, r * LANES)), v8f), positions]) for r in range(registers)]
            bit3 = first_level
            lower = builder.select(bit3, picked[1], picked[0])
            if registers == 4:
                upper = builder.select(bit3, picked[3], picked[2])
                lower = builder.select(bit_set(16), upper, lower)

        weights = weights_at(builder.mul(g, ir.Constant(i64, LANES)), LANES)
        return builder.call(fma[LANES], [weights, lower, acc])

    # A pair's second group indexes the upper 16 inputs of the 32-input window when each group
    # has its own 16-window; 16:32's two groups share one block's window.
    upper_offset = 16 if geometry.window == 16 else 0
    pair_offsets = const_vec([0] * LANES + [upper_offset] * LANES)

    def window_mask(key):
        """A group's 16-bit window mask from :func:`group_mask_table` (``<16 x i1>``)."""
        entry = builder.gep(table, [key])
        return builder.bitcast(builder.load(builder.bitcast(entry, i16.as_pointer()), align=2),
                               ir.VectorType(ir.IntType(1), 2 * LANES))

    def masked_group(g, acc, key):
        """acc + the eight products of group g through its window mask (the wide rank path's
        single step, whose table holds masks rather than positions)."""
        window = vec_load(x, builder.mul(g, ir.Constant(i64, 16)), v16f)
        packed = builder.call(compressps, [window, ir.Constant(v16f, [0.0] * 2 * LANES),
                                           window_mask(key)])
        gathered = builder.shuffle_vector(packed, packed, const_vec(range(LANES)))
        weights = weights_at(builder.mul(g, ir.Constant(i64, LANES)), LANES)
        return builder.call(fma[LANES], [weights, gathered, acc])

    def pair(g, acc, key_low, key_high):
        """acc + the sixteen products of groups g (even) and g + 1, whose x window is 32 inputs
        in two registers. Rank metadata: each group's window mask compresses its register
        (vcompressps) and the two halves are joined. Index metadata: one vpermt2ps gathers
        with 5-bit positions."""
        start = builder.mul(g, ir.Constant(i64, 16))  # 32 inputs per pair of groups
        low = vec_load(x, start, v16f)
        high = vec_load(x, builder.add(start, ir.Constant(i64, 16)), v16f)
        if source == RANK:
            zeros = ir.Constant(v16f, [0.0] * 2 * LANES)
            packed_low = builder.call(compressps, [low, zeros, window_mask(key_low)])
            packed_high = builder.call(compressps, [high, zeros, window_mask(key_high)])
            gathered = builder.shuffle_vector(packed_low, packed_high, const_vec(
                list(range(LANES)) + list(range(2 * LANES, 3 * LANES))))
        else:
            positions = builder.add(concat(index_positions(key_low), index_positions(key_high)),
                                    pair_offsets)
            gathered = builder.call(permt2ps, [low, positions, high])
        weights = weights_at(builder.mul(g, ir.Constant(i64, LANES)), 2 * LANES)
        return builder.call(fma[2 * LANES], [weights, gathered, acc])

    def const(value):
        return ir.Constant(i64, value)

    # Main loop: a trip of `steps` steps (a group, or a pair of groups when wide), each into its
    # own accumulator (the FMA latency is not the bound then); a remainder loop finishes the
    # leftover groups one at a time with one eight-lane accumulator.
    step_groups, steps = (2, PAIR_UNROLL) if wide else (1, UNROLL)
    trip = step_groups * steps
    acc_type = v16f if wide else v8f
    zero = ir.Constant(acc_type, [0.0] * acc_type.count)
    entry = builder.basic_block
    main = builder.append_basic_block("nm_group.main")
    middle = builder.append_basic_block("nm_group.middle")
    rest = builder.append_basic_block("nm_group.rest")
    done = builder.append_basic_block("nm_group.done")
    main_end = builder.and_(groups, const(-trip))
    builder.cbranch(builder.icmp_signed(">", main_end, const(0)), main, middle)

    builder.position_at_end(main)
    g = builder.phi(i64)
    accs = [builder.phi(acc_type) for _ in range(steps)]
    g.add_incoming(const(0), entry)
    # Software prefetch PREFETCH_BYTES of values ahead: every value cache line of the trip,
    # and the metadata once (a trip reads at most 8 x 40 bits of it).
    value_bytes = 4 if kind == K.F32 else 2
    ahead = builder.add(g, const(PREFETCH_BYTES // (LANES * value_bytes)))
    for line in range(0, trip * LANES * value_bytes, 64):
        prefetch(builder.gep(values, [builder.add(builder.mul(ahead, const(LANES)),
                                                  const(line // value_bytes))]))
    prefetch(builder.gep(meta, [builder.lshr(builder.mul(ahead, const(key_bits)), const(3))]))
    if trip * key_bits % 8 == 0:
        first_byte = builder.mul(g, const(key_bits // 8 if key_bits % 8 == 0 else key_bits))
        if key_bits % 8:  # g is a multiple of the trip, so g * key_bits is a whole byte count
            first_byte = builder.lshr(first_byte, const(3))
        keys = [key_in_trip(first_byte, u) for u in range(trip)]
    else:
        keys = [key_at(builder.add(g, const(u))) for u in range(trip)]
    if wide:
        nexts = [pair(builder.add(g, const(2 * s)), acc, keys[2 * s], keys[2 * s + 1])
                 for s, acc in enumerate(accs)]
    else:
        nexts = [group(builder.add(g, const(u)), acc, key)
                 for u, (acc, key) in enumerate(zip(accs, keys, strict=True))]
    g_next = builder.add(g, const(trip))
    main_exit = builder.basic_block
    g.add_incoming(g_next, main_exit)
    for acc, acc_next in zip(accs, nexts, strict=True):
        acc.add_incoming(zero, entry)
        acc.add_incoming(acc_next, main_exit)
    builder.cbranch(builder.icmp_signed("<", g_next, main_end), main, middle)

    builder.position_at_end(middle)
    partial = []
    for acc_next in nexts:
        merged = builder.phi(acc_type)
        merged.add_incoming(zero, entry)
        merged.add_incoming(acc_next, main_exit)
        partial.append(merged)
    while len(partial) > 1:
        partial = [builder.fadd(a, b) for a, b in zip(partial[::2], partial[1::2], strict=True)]
    combined = partial[0]
    if wide:  # fold the 16 lanes to 8 for the remainder loop
        combined = builder.fadd(
            builder.shuffle_vector(combined, combined, const_vec(range(LANES))),
            builder.shuffle_vector(combined, combined, const_vec(range(LANES, 2 * LANES))))
    builder.cbranch(builder.icmp_signed("<", main_end, groups), rest, done)

    builder.position_at_end(rest)
    g_rest = builder.phi(i64)
    acc_rest = builder.phi(v8f)
    g_rest.add_incoming(main_end, middle)
    acc_rest.add_incoming(combined, middle)
    single = masked_group if wide and source == RANK else group
    acc_rest_next = single(g_rest, acc_rest, key_at(g_rest))
    g_rest_next = builder.add(g_rest, const(1))
    rest_exit = builder.basic_block
    g_rest.add_incoming(g_rest_next, rest_exit)
    acc_rest.add_incoming(acc_rest_next, rest_exit)
    builder.cbranch(builder.icmp_signed("<", g_rest_next, groups), rest, done)

    builder.position_at_end(done)
    total = builder.phi(v8f)
    total.add_incoming(combined, middle)
    total.add_incoming(acc_rest_next, rest_exit)
    return _horizontal_sum(builder, total)


def _splat(builder, scalar, vector_type):
    """``scalar`` in every lane of ``vector_type``."""
    undef = ir.Constant(vector_type, ir.Undefined)
    one = builder.insert_element(undef, scalar, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(one, undef, ir.Constant(ir.VectorType(ir.IntType(32), LANES),
                                                          [0] * LANES))


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


@cache
def nm_group_gemv(n: int, m: int, bits: int, decoder: int, kind: int, wide: bool = False):
    """The batch-1 GEMV through the group loop (rank-LUT or index metadata); ``wide``: its
    AVX-512 pair steps (:func:`gemv_path` says when).

    Same arguments as :func:`kernels.numba_nm.nm_kernels`'s GEMV except ``table``, which is
    :func:`group_position_table` for rank metadata. Whole groups of eight kept values go
    through the vector loop; leftover full blocks, a padded block and the dense tail take the
    scalar code of :mod:`kernels.numba_nm`. Defined here, beside the IR it inlines, so Numba's
    disk cache (stamped by this file's modification time) is invalidated when the loop changes.
    """
    geometry = group_geometry(F.Pattern(n, m))
    source = RANK if decoder == K.RANK_LUT else INDEX
    dot = group_dot(n, m, bits, source, kind, wide)
    field_mask = np.uint64((1 << bits) - 1)
    per_group = geometry.blocks_per_group
    groups_per_block = geometry.groups_per_block
    # Leftover blocks are decoded with the scalar index reader; rank-LUT leftovers need the
    # per-block table, which the group table's key 0..C-1 rows do not hold, so they unrank.
    scalar = K.INDEX if decoder == K.INDEX else K.RANK_UNRANK

    @njit(parallel=True, fastmath=K.FASTMATH, cache=True)
    def gemv(values, metadata, tail_values, x, out, full_blocks, pad_block, table, binom,
             accumulate):
        """out[r] (+)= W[r] . x for every row, whole groups in AVX2, the rest scalar."""
        rows = values.shape[0]
        cols = x.shape[0]
        tail = tail_values.shape[1]
        if per_group:
            groups = full_blocks // per_group
            first_scalar = groups * per_group
        else:
            groups = full_blocks * groups_per_block
            first_scalar = full_blocks
        chunks = (rows + K.ROW_CHUNK - 1) // K.ROW_CHUNK
        for chunk in prange(chunks):
            pos = np.zeros(n + 1, dtype=np.int64)
            for r in range(chunk * K.ROW_CHUNK, min(rows, (chunk + 1) * K.ROW_CHUNK)):
                meta_row = metadata[r]
                vrow = values[r]
                acc = dot(vrow, meta_row, x, table, groups)
                for b in range(first_scalar, full_blocks + pad_block):
                    f = K.prepare_block(meta_row, b, n, m, bits, field_mask, scalar, binom, pos)
                    for i in range(n):
                        c = b * m + K.kept_position(meta_row, f, b, i, n, bits, field_mask,
                                                   scalar, table, pos)
                        if c < cols:
                            acc += K.widen(vrow[b * n + i], kind) * x[c]
                for j in range(tail):
                    acc += K.widen(tail_values[r, j], kind) * x[cols - tail + j]
                out[r] = out[r] + acc if accumulate else acc

    return gemv
