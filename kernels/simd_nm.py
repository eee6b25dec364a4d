"""AVX2 group kernel for the batch-1 N:M GEMV: eight kept values against an x window per step.

The scalar GEMV (:mod:`kernels.numba_nm`) spends 3-4 cycles per kept element on a field read, an
address and a scalar ``x[position]`` load; the memory-bound bytes bound needs about one. Here the
row's kept values are taken eight at a time (one ``<8 x float>``): their positions form an
``<8 x i32>`` inside a *window* of 16 or 32 consecutive inputs held in two or four registers, and
``vpermps`` (``llvm.x86.avx2.permps``) gathers ``x`` at those positions from registers, with
blends choosing the register by bits 3 and 4 of the position. One FMA per eight values follows.
Zen 3's memory ``vgatherdps`` is microcoded and measured slower than scalar code, so the gather
stays in registers.

Which patterns: eight kept values must cover whole blocks or lie inside one block, and the window
they index must be 16 or 32 inputs wide (:func:`group_geometry`): 1:2, 2:4, 4:8, 8:16 (window 16),
1:4, 2:8, 4:16, 8:32, 16:32 (window 32). Positions come from

* index metadata: the group's eight fields are one bit slice of the row (8 x ceil(log2 M) <= 40
  bits), split across lanes with vector shifts; no table;
* rank metadata: the group's G consecutive rank fields (G = 8 / N blocks, <= 16 bits together)
  index a table of eight window positions per key (:func:`group_position_table`, built from
  :func:`compression.formats.rank_lut`; uint8, at most 512 KiB), widened with ``vpmovzxbd``.

The loop over a row's groups is written in LLVM IR (a Numba ``@intrinsic``) because Numba has no
vector types; the caller handles leftover blocks, padded tails and dense tails with scalar code.
Only x86 CPUs with AVX2 take this path (:func:`available`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import llvmlite.binding as llvm_binding
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from compression import formats as F

LANES = 8
# The widest rank key a position table is built for: 2**16 keys x 8 bytes = 512 KiB, half of
# Zen 3's 1 MiB L2 per core.
MAX_TABLE_KEY_BITS = 16
WINDOWS = (16, 32)


@cache
def available() -> bool:
    """True on a CPU whose features include AVX2 and FMA (the instructions this path emits)."""
    features = llvm_binding.get_host_cpu_features()
    return bool(features.get("avx2")) and bool(features.get("fma"))


@dataclass(frozen=True)
class GroupGeometry:
    """How eight kept values of a row map onto blocks and an ``x`` window."""

    n: int
    m: int
    window: int  # inputs indexed by one group's positions
    blocks_per_group: int  # 8 / N when N <= 8, else 0 (a block spans N / 8 groups)
    groups_per_block: int  # N / 8 when N >= 8, else 0

    def window_start(self, group: int) -> int:
        """First input of group ``group``'s window."""
        if self.blocks_per_group:
            return group * self.blocks_per_group * self.m
        return group // self.groups_per_block * self.m

    def groups_in(self, full_blocks: int) -> int:
        """Whole groups among ``full_blocks`` full blocks."""
        if self.blocks_per_group:
            return full_blocks // self.blocks_per_group
        return full_blocks * self.groups_per_block

    def blocks_in(self, groups: int) -> int:
        """Full blocks covered by ``groups`` whole groups."""
        if self.blocks_per_group:
            return groups * self.blocks_per_group
        return groups // self.groups_per_block

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
                and _has_lut(pattern))
    return False


def _has_lut(pattern: F.Pattern) -> bool:
    try:
        F.rank_lut(pattern)
    except F.FormatError:
        return False
    return True


@cache
def group_position_table(pattern: F.Pattern) -> np.ndarray:
    """``uint8[2**(G*bits), 8]``: window positions of a group's kept values, keyed by its G ranks.

    A key is the group's G rank fields as they lie in the bit stream (field j at bits
    ``[j*bits, (j+1)*bits)``); keys holding a rank >= C(M, N) cannot occur in validated metadata
    and map to position 0.
    """
    geometry = group_geometry(pattern)
    bits = pattern.field_bits("rank")
    per = geometry.blocks_per_group
    lut = F.rank_lut(pattern).astype(np.uint8)  # [C(M,N), N] ascending positions
    keys = np.arange(1 << (per * bits), dtype=np.int64)
    table = np.zeros((keys.size, LANES), dtype=np.uint8)
    valid = np.ones(keys.size, dtype=bool)
    for j in range(per):
        ranks = (keys >> (j * bits)) & ((1 << bits) - 1)
        valid &= ranks < lut.shape[0]
        table[:, j * pattern.n:(j + 1) * pattern.n] = (
            lut[np.minimum(ranks, lut.shape[0] - 1)] + j * pattern.m)
    table[~valid] = 0
    table.setflags(write=False)
    return table


RANK, INDEX = 0, 1
F32, F16_BITS, BF16_BITS = 0, 1, 2


@cache
def group_dot(n: int, m: int, bits: int, source: int, kind: int):
    """A Numba intrinsic ``(values_row, meta_row, x, table, groups) -> float32``.

    Returns ``sum_{g < groups} sum_lane v[8g + lane] * x[start(g) + pos(g, lane)]`` for one row.
    ``meta_row`` must carry 8 readable bytes after its last field (``kernel_metadata``);
    ``table`` is :func:`group_position_table` for rank metadata (ignored for index).
    """
    geometry = group_geometry(F.Pattern(n, m))
    key_bits = (geometry.blocks_per_group * bits if source == RANK else LANES * bits)
    registers = geometry.window // LANES

    @intrinsic
    def _group_dot(typingctx, values_row, meta_row, x, table, groups):
        sig = types.float32(values_row, meta_row, x, table, groups)

        def codegen(context, builder, signature, args):
            return _emit(context, builder, signature, args, geometry, bits, key_bits, registers,
                         source, kind)

        return sig, codegen

    return _group_dot


def _emit(context, builder, signature, args, geometry, bits, key_bits, registers, source, kind):
    """The IR of one row's group loop (see :func:`group_dot`)."""
    f32, i8, i16, i32, i64 = (ir.FloatType(), ir.IntType(8), ir.IntType(16), ir.IntType(32),
                              ir.IntType(64))
    v8f, v8i = ir.VectorType(f32, LANES), ir.VectorType(i32, LANES)
    module = builder.module
    permps = cgutils.get_or_insert_function(module, ir.FunctionType(v8f, [v8f, v8i]),
                                            "llvm.x86.avx2.permps")
    fma = cgutils.get_or_insert_function(module, ir.FunctionType(v8f, [v8f, v8f, v8f]),
                                         "llvm.fma.v8f32")
    arrays = [context.make_array(t)(context, builder, a)
              for t, a in zip(signature.args[:4], args[:4], strict=True)]
    values, meta, x, table = (a.data for a in arrays)
    groups = args[4]

    def const_vec(items, kind_type=i32):
        return ir.Constant(ir.VectorType(kind_type, LANES), [int(v) for v in items])

    def vec_load(pointer, index, vector_type):
        address = builder.gep(pointer, [index])
        return builder.load(builder.bitcast(address, vector_type.as_pointer()), align=1)

    zero = ir.Constant(v8f, [0.0] * LANES)
    entry = builder.basic_block
    loop = builder.append_basic_block("nm_group.loop")
    done = builder.append_basic_block("nm_group.done")
    builder.cbranch(builder.icmp_signed(">", groups, ir.Constant(i64, 0)), loop, done)

    builder.position_at_end(loop)
    g = builder.phi(i64, "g")
    acc = builder.phi(v8f, "acc")
    g.add_incoming(ir.Constant(i64, 0), entry)
    acc.add_incoming(zero, entry)

    # The group's key: key_bits bits at bit g * key_bits of the row, one unaligned 64-bit load.
    bit = builder.mul(g, ir.Constant(i64, key_bits))
    word = builder.load(builder.bitcast(builder.gep(meta, [builder.lshr(bit, ir.Constant(i64, 3))]),
                                        i64.as_pointer()), align=1)
    key = builder.and_(builder.lshr(word, builder.and_(bit, ir.Constant(i64, 7))),
                       ir.Constant(i64, (1 << key_bits) - 1))
    if source == RANK:
        row = builder.gep(table, [builder.mul(key, ir.Constant(i64, LANES))])
        positions = builder.zext(builder.load(builder.bitcast(row, ir.VectorType(i8, LANES)
                                                              .as_pointer()), align=1), v8i)
    else:
        field_mask = (1 << bits) - 1
        if key_bits <= 32:
            lanes = _splat(builder, builder.trunc(key, i32), v8i)
            fields = builder.lshr(lanes, const_vec(lane * bits for lane in range(LANES)))
        else:
            v8l = ir.VectorType(i64, LANES)
            lanes = _splat(builder, key, v8l)
            fields = builder.trunc(builder.lshr(lanes, const_vec(
                (lane * bits for lane in range(LANES)), i64)), v8i)
        positions = builder.add(builder.and_(fields, const_vec([field_mask] * LANES)),
                                const_vec(geometry.lane_offset(lane) for lane in range(LANES)))

    # x window: `registers` consecutive <8 x float>; vpermps uses the low 3 bits of a position,
    # bits 3 and 4 pick the register.
    if geometry.blocks_per_group:
        start = builder.mul(g, ir.Constant(i64, geometry.window))
    else:
        start = builder.mul(builder.udiv(g, ir.Constant(i64, geometry.groups_per_block)),
                            ir.Constant(i64, geometry.m))
    picked = [builder.call(permps, [vec_load(x, builder.add(start, ir.Constant(i64, r * LANES)),
                                             v8f), positions]) for r in range(registers)]
    bit3 = builder.icmp_unsigned("!=", builder.and_(positions, const_vec([8] * LANES)),
                                 const_vec([0] * LANES))
    lower = builder.select(bit3, picked[1], picked[0])
    if registers == 4:
        upper = builder.select(bit3, picked[3], picked[2])
        bit4 = builder.icmp_unsigned("!=", builder.and_(positions, const_vec([16] * LANES)),
                                     const_vec([0] * LANES))
        lower = builder.select(bit4, upper, lower)

    first = builder.mul(g, ir.Constant(i64, LANES))
    if kind == F32:
        weights = vec_load(values, first, v8f)
    else:
        raw = vec_load(values, first, ir.VectorType(i16, LANES))
        if kind == F16_BITS:
            weights = builder.fpext(builder.bitcast(raw, ir.VectorType(ir.HalfType(), LANES)),
                                    v8f)
        else:
            weights = builder.bitcast(builder.shl(builder.zext(raw, v8i), const_vec([16] * LANES)),
                                      v8f)
    acc_next = builder.call(fma, [weights, lower, acc])
    g_next = builder.add(g, ir.Constant(i64, 1))
    tail_block = builder.basic_block
    g.add_incoming(g_next, tail_block)
    acc.add_incoming(acc_next, tail_block)
    builder.cbranch(builder.icmp_signed("<", g_next, groups), loop, done)

    builder.position_at_end(done)
    total = builder.phi(v8f)
    total.add_incoming(zero, entry)
    total.add_incoming(acc_next, tail_block)
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
