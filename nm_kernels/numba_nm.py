"""Numba CPU kernels: y = W x and Y = W X for a compressed N:M weight, plus a dense baseline.

The weight is read straight from the arrays of :class:`compression.formats.NMTensor`: values
``[out, blocks*N]``, metadata ``uint8[out, row_bytes]`` (fields bit-packed LSB first, each row
byte-aligned) and the dense tail. Field widths come from :class:`compression.formats.Pattern`;
nothing about the layout is redefined here. Each output row is independent (its metadata row
starts on a byte boundary), so rows run in parallel (``prange``). Field f of a row sits at bit
``f * bits``: it is read with one unaligned 64-bit load, a shift and a mask, which needs 7
readable bytes after the row's last field (:func:`kernel_metadata` appends them).

Decoders (``decoder`` argument, one integer code per decoder; :data:`KERNEL_DECODERS` maps each
decoder's one name, the simulator's :data:`accel_sim.decoders.DECODER_MODELS` key, to its code
here and to the SIMD and Triton kernels that implement it):

* ``RANK_LUT`` (``rank_rom``): a rank indexes the ``C(M, N) x N`` position table of
  :func:`compression.formats.rank_lut` (the ROM decoder; 103 KB for 8:16, L2-resident).
* ``RANK_UNRANK`` (``rank_pipeline``): greedy colex unranking with a ``C(c, i)`` table, M
  compare-subtract steps per block (the only one for 16:32, whose 601 M-entry table cannot exist).
* ``INDEX`` (``direct``): N fields of ceil(log2 M) bits, the kept positions themselves.
* ``BITMASK`` (``popcount``): one M-bit field per block, scanned bit by bit.
* ``RUN_LENGTH`` (``prefix_sum``): N run-length fields per block, summed (+1 per earlier kept
  element) into the positions.

``n``, ``m``, ``bits``, ``decoder`` and ``kind`` are compile-time constants (closure variables of
:func:`nm_kernels`): each pattern gets its own machine code with fixed trip counts, which measured
2-3x faster than one generic kernel. Compiled code is cached on disk (``cache=True``; Numba's
cache key includes the closure values).

Values are float32, or float16 / bfloat16 read through a ``uint16`` view and widened in registers
(Numba has no CPU half type). Accumulation is float32, as in the dense baselines.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import llvmlite.binding as llvm_binding
import numba
import numpy as np
from llvmlite import ir
from numba import config as numba_config
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

# The kernels' decoder codes: compile-time constants of the Numba kernels, and the SIMD group
# kernels' position source (nm_kernels.simd_nm) for the decoders it implements.
RANK_LUT, RANK_UNRANK, INDEX, BITMASK, RUN_LENGTH = 0, 1, 2, 3, 4


@dataclass(frozen=True)
class KernelDecoder:
    """How the kernels read one decoder's metadata: the Numba code, whether it reads the rank
    LUT of :func:`compression.formats.rank_lut`, and whether the SIMD group kernels
    (:mod:`nm_kernels.simd_nm`, where the pattern allows) and the Triton kernel implement it."""

    encoding: str
    code: int
    rank_lut: bool = False
    simd: bool = False
    triton: bool = False


# One table: decoder name (accel_sim.decoders.DECODER_MODELS key) -> its kernel implementations.
# rank_serial computes rank_pipeline's function with one stage; on a CPU it is rank_pipeline.
KERNEL_DECODERS = {
    "direct": KernelDecoder("index", INDEX, simd=True, triton=True),
    "popcount": KernelDecoder("bitmask", BITMASK),
    "rank_rom": KernelDecoder("rank", RANK_LUT, rank_lut=True, simd=True),
    "rank_pipeline": KernelDecoder("rank", RANK_UNRANK, simd=True, triton=True),
    "prefix_sum": KernelDecoder("rle", RUN_LENGTH),
}


def kernel_decoders(encoding: str) -> tuple[str, ...]:
    """The decoders the kernels implement for ``encoding``, in table order."""
    return tuple(name for name, d in KERNEL_DECODERS.items() if d.encoding == encoding)
# Value kinds: how a stored value becomes a float32.
F32, F16_BITS, BF16_BITS = 0, 1, 2
# A field is read from one 64-bit window starting at its first byte, so up to 7 bits of offset
# plus the field must fit in 64 bits.
MAX_FIELD_BITS = 57
METADATA_SLACK_BYTES = 8
# Rows handed to a thread at a time (scratch arrays are allocated once per chunk, not per row).
ROW_CHUNK = 64
# The dense GEMV streams its weight in slices of DENSE_SLICE values, prefetching into L2 the
# lines dense_prefetch_bytes() ahead of each slice (as the N:M GEMVs do, nm_kernels.simd_nm).
DENSE_SLICE = 512
DENSE_PREFETCH_BYTES = 16384
# CPUs (LLVM names) whose dense GEMV streams faster with no software prefetch. znver1: on a
# 2-core Zen 1 KVM guest (8 MiB L3), 11008x4096, 2 threads, cold caches, rounds in one process
# (2026-12-04): float32 12.2 ms with 16 KiB ahead, 10.1-10.4 without (numpy 8.3, a plain read
# 8.2), float16 6.2-6.7 with, 6.1-6.6 without; on the Zen 4 guest the prefetch took the float16
# GEMV from 4.2 to 2.7-3.6 ms.
NO_DENSE_PREFETCH_CPUS = frozenset({"znver1"})
# reassoc/contract let LLVM vectorise the float32 reductions; NaN/inf semantics stay IEEE.
FASTMATH = {"reassoc", "contract", "nsz", "arcp"}
# 2**112 rebiases a half's exponent field (bias 15) to float32's (bias 127); also exact for
# half subnormals, which become float32 normals.
_HALF_REBIAS = np.float32(2.0**112)


def kernel_metadata(metadata: np.ndarray) -> np.ndarray:
    """The metadata rows with :data:`METADATA_SLACK_BYTES` zero bytes appended to each row."""
    rows, row_bytes = metadata.shape
    padded = np.zeros((rows, row_bytes + METADATA_SLACK_BYTES), dtype=np.uint8)
    padded[:, :row_bytes] = metadata
    return padded


@intrinsic
def _f32_from_bits(typingctx, bits):
    """Reinterpret a uint32 as a float32 (a register bitcast, no memory round trip)."""
    sig = types.float32(types.uint32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return sig, codegen


def compiles_for_host() -> bool:
    """True when Numba compiles for this machine's CPU (``NUMBA_CPU_NAME`` unset or ``host``),
    so the host's name and features describe the code it emits."""
    return numba_config.CPU_NAME in (None, "host")


def _hardware_half_conversion() -> bool:
    """True when Numba compiles for this host and the host converts half to float in one
    instruction (x86 F16C): LLVM then lowers ``fpext half`` to ``vcvtph2ps`` and vectorises it
    (the dense float16 GEMV on 11008x4096 on a Zen 4 guest: 7.2-7.6 ms with the integer
    rebias, 4.2-4.3 ms with it, 2.7-3.6 ms once its stream is also prefetched). Elsewhere LLVM
    would lower it to a runtime-library call, so the kernels keep the integer rebias there."""
    return compiles_for_host() and llvm_binding.get_host_cpu_features().get("f16c", False)


def target_cpu_name() -> str:
    """The LLVM name of the CPU Numba compiles for (the host's, or ``NUMBA_CPU_NAME``)."""
    return llvm_binding.get_host_cpu_name() if compiles_for_host() else numba_config.CPU_NAME


def dense_prefetch_bytes() -> int:
    """How far ahead (bytes) the dense GEMV prefetches on the CPU Numba compiles for: 0 on the
    :data:`NO_DENSE_PREFETCH_CPUS`, else :data:`DENSE_PREFETCH_BYTES`."""
    return 0 if target_cpu_name() in NO_DENSE_PREFETCH_CPUS else DENSE_PREFETCH_BYTES


# Read when a kernel compiles (a Numba global is frozen into its machine code; the disk cache
# is keyed by the CPU and its features, so a cached kernel never meets another host).
HARDWARE_HALF = _hardware_half_conversion()
DENSE_AHEAD_BYTES = dense_prefetch_bytes()


@intrinsic
def _f32_from_half_bits(typingctx, bits):
    """float32 of the IEEE half whose bits are the low 16 of a uint32 (exact: every half is a
    float32; a signalling NaN comes back quiet, as from any hardware conversion)."""
    sig = types.float32(types.uint32)

    def codegen(context, builder, signature, args):
        half = builder.bitcast(builder.trunc(args[0], ir.IntType(16)), ir.HalfType())
        return builder.fpext(half, ir.FloatType())

    return sig, codegen


def emit_prefetch(builder, pointer, locality: int) -> None:
    """IR of a read prefetch of the line at ``pointer``; LLVM ``locality`` 3 fills every
    cache level (``prefetcht0``), 2 stops at L2 (``prefetcht1``)."""
    i8_pointer, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
    prefetch = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(ir.VoidType(), [i8_pointer, i32, i32, i32]),
        "llvm.prefetch.p0")
    builder.call(prefetch, [builder.bitcast(pointer, i8_pointer), ir.Constant(i32, 0),
                            ir.Constant(i32, locality), ir.Constant(i32, 1)])


@intrinsic
def _prefetch_l2(typingctx, array, element):
    """Prefetch (read, into L2: ``prefetcht1``) the cache line of ``array.flat[element]``."""
    sig = types.void(array, element)

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        emit_prefetch(builder, builder.gep(data, [args[1]]), 2)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _load_u64(typingctx, row, byte_index):
    """Little-endian uint64 from 8 bytes of a contiguous uint8 row at ``byte_index`` (unaligned)."""
    sig = types.uint64(row, byte_index)

    def codegen(context, builder, signature, args):
        array = context.make_array(signature.args[0])(context, builder, args[0])
        address = builder.gep(array.data, [args[1]])
        return builder.load(builder.bitcast(address, ir.IntType(64).as_pointer()), align=1)

    return sig, codegen


@njit(inline="always")
def widen(raw, kind):
    """float32 value of a stored value: float32 as is, half or bfloat16 bits widened."""
    if kind == F32:
        return np.float32(raw)
    bits = np.uint32(raw)
    if kind == BF16_BITS:
        return _f32_from_bits(bits << np.uint32(16))
    if HARDWARE_HALF:
        return _f32_from_half_bits(bits)
    sign = bits & np.uint32(0x8000)
    magnitude_bits = bits & np.uint32(0x7FFF)
    if magnitude_bits >= np.uint32(0x7C00):  # inf / NaN keep their payload
        wide = (sign << np.uint32(16)) | np.uint32(0x7F800000) | (
            (magnitude_bits & np.uint32(0x3FF)) << np.uint32(13))
        return _f32_from_bits(wide)
    magnitude = _f32_from_bits(magnitude_bits << np.uint32(13)) * _HALF_REBIAS
    return -magnitude if sign else magnitude


@njit(inline="always")
def _field(meta_row, index, bits, field_mask):
    """Field ``index`` of a row: bits ``[index*bits, (index+1)*bits)``, LSB first."""
    bit = index * bits
    return (_load_u64(meta_row, bit >> 3) >> np.uint64(bit & 7)) & field_mask


@njit(inline="always")
def prepare_block(meta_row, b, n, m, bits, field_mask, decoder, binom, pos):
    """Read block ``b``'s field; unranking, bitmask and run-length decoders also fill
    ``pos[:n]``."""
    if decoder == INDEX:
        return np.uint64(0)
    if decoder == RUN_LENGTH:  # position = previous position + 1 + the skipped run
        c = np.int64(-1)
        for i in range(n):
            c += np.int64(_field(meta_row, b * n + i, bits, field_mask)) + 1
            pos[i] = c
        return np.uint64(0)
    f = _field(meta_row, b, bits, field_mask)
    if decoder == RANK_UNRANK:
        # Branch-free greedy colex unranking: a step that does not take a position writes to
        # the spare slot pos[n] (binom[c, 0] = 1 can never be taken once all N are placed).
        rest = f
        slot = n
        for c in range(m - 1, -1, -1):
            cost = binom[c, slot]
            take = np.int64((slot > 0) & (cost <= rest))
            rest -= cost * np.uint64(take)
            slot -= take
            pos[slot + (1 - take) * (n - slot)] = c
    elif decoder == BITMASK:
        i = 0
        for c in range(m):
            if (f >> np.uint64(c)) & np.uint64(1):
                pos[i] = c
                i += 1
    return f


@njit(inline="always")
def kept_position(meta_row, f, b, i, n, bits, field_mask, decoder, lut, pos):
    """Position (0..M-1) of the i-th kept element of block ``b``."""
    if decoder == RANK_LUT:
        return np.int64(lut[f, i])
    if decoder == INDEX:
        return np.int64(_field(meta_row, b * n + i, bits, field_mask))
    return pos[i]


@cache
def nm_kernels(n: int, m: int, bits: int, decoder: int, kind: int):
    """``(gemv, gemm)`` compiled for one pattern, field width, decoder and value kind.

    The five arguments are closure constants, so each combination gets machine code with fixed
    trip counts (measured 2-3x faster than one kernel taking them as arguments); Numba's disk
    cache keys on them too.
    """
    field_mask = np.uint64((1 << bits) - 1)

    @njit(parallel=True, fastmath=FASTMATH, cache=True)
    def gemv(values, metadata, tail_values, x, out, full_blocks, pad_block, lut, binom,
             accumulate):
        """out[r] (+)= sum over kept k of W[r, k] * x[k], for every row r, parallel over rows.

        ``metadata`` comes from :func:`kernel_metadata`. ``pad_block`` is 1 when a padded tail
        block follows the ``full_blocks`` (its padding positions lie at or beyond
        ``x.shape[0]`` and are skipped); ``tail_values`` is the dense tail.
        """
        rows = values.shape[0]
        cols = x.shape[0]
        tail = tail_values.shape[1]
        chunks = (rows + ROW_CHUNK - 1) // ROW_CHUNK
        for chunk in prange(chunks):
            pos = np.zeros(n + 1, dtype=np.int64)
            for r in range(chunk * ROW_CHUNK, min(rows, (chunk + 1) * ROW_CHUNK)):
                meta_row = metadata[r]
                vrow = values[r]
                acc = np.float32(0.0)
                for b in range(full_blocks):
                    f = prepare_block(meta_row, b, n, m, bits, field_mask, decoder, binom, pos)
                    block_sum = np.float32(0.0)
                    for i in range(n):
                        c = kept_position(meta_row, f, b, i, n, bits, field_mask, decoder, lut,
                                           pos)
                        block_sum += widen(vrow[b * n + i], kind) * x[b * m + c]
                    acc += block_sum
                if pad_block:
                    b = full_blocks
                    f = prepare_block(meta_row, b, n, m, bits, field_mask, decoder, binom, pos)
                    for i in range(n):
                        c = b * m + kept_position(meta_row, f, b, i, n, bits, field_mask,
                                                   decoder, lut, pos)
                        if c < cols:
                            acc += widen(vrow[b * n + i], kind) * x[c]
                for j in range(tail):
                    acc += widen(tail_values[r, j], kind) * x[cols - tail + j]
                out[r] = out[r] + acc if accumulate else acc

    @njit(parallel=True, fastmath=FASTMATH, cache=True)
    def gemm(values, metadata, tail_values, x, out, full_blocks, pad_block, lut, binom,
             accumulate):
        """out[r, :] (+)= sum over kept k of W[r, k] * x[k, :] (x is ``[in, batch]``).

        Same arguments as ``gemv``; each kept value is decoded once and multiplies one
        contiguous row of ``x`` (the batch loop vectorises).
        """
        rows = values.shape[0]
        cols, batch = x.shape
        tail = tail_values.shape[1]
        chunks = (rows + ROW_CHUNK - 1) // ROW_CHUNK
        for chunk in prange(chunks):
            pos = np.zeros(n + 1, dtype=np.int64)
            acc = np.empty(batch, dtype=np.float32)
            for r in range(chunk * ROW_CHUNK, min(rows, (chunk + 1) * ROW_CHUNK)):
                meta_row = metadata[r]
                vrow = values[r]
                acc[:] = 0.0
                for b in range(full_blocks + pad_block):
                    f = prepare_block(meta_row, b, n, m, bits, field_mask, decoder, binom, pos)
                    for i in range(n):
                        c = b * m + kept_position(meta_row, f, b, i, n, bits, field_mask,
                                                   decoder, lut, pos)
                        if c < cols:
                            v = widen(vrow[b * n + i], kind)
                            xrow = x[c]
                            for j in range(batch):
                                acc[j] += v * xrow[j]
                for t in range(tail):
                    v = widen(tail_values[r, t], kind)
                    xrow = x[cols - tail + t]
                    for j in range(batch):
                        acc[j] += v * xrow[j]
                for j in range(batch):
                    out[r, j] = out[r, j] + acc[j] if accumulate else acc[j]

    return gemv, gemm


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def csr_matmul_add(indptr, indices, values, x, out):
    """out += S x for an unstructured CSR side-car (float32 values); x is ``[in, batch]``."""
    rows = indptr.shape[0] - 1
    batch = x.shape[1]
    for r in prange(rows):
        for e in range(indptr[r], indptr[r + 1]):
            v = values[e]
            xrow = x[indices[e]]
            for j in range(batch):
                out[r, j] += v * xrow[j]


@cache
def dense_kernels(kind: int):
    """``(gemv, gemm)`` dense baselines for one value kind (float32, half or bfloat16 bits)."""

    @njit(parallel=True, fastmath=FASTMATH, cache=True)
    def gemv(weight, x, out):
        """out[r] = sum_k W[r, k] x[k] over a C-contiguous weight, in slices whose lines
        DENSE_AHEAD_BYTES further on (flat, so across rows) are prefetched into L2."""
        rows, cols = weight.shape
        line = 64 // weight.itemsize
        ahead = DENSE_AHEAD_BYTES // weight.itemsize
        last = rows * cols - 1
        for r in prange(rows):
            wrow = weight[r]
            acc = np.float32(0.0)
            for c0 in range(0, cols, DENSE_SLICE):
                c1 = min(cols, c0 + DENSE_SLICE)
                if ahead > 0:
                    for k in range(r * cols + c0 + ahead, r * cols + c1 + ahead, line):
                        _prefetch_l2(weight, min(k, last))
                wslice, xslice = wrow[c0:c1], x[c0:c1]  # views: indices provably >= 0
                part = np.float32(0.0)
                for k in range(c1 - c0):
                    part += widen(wslice[k], kind) * xslice[k]
                acc += part
            out[r] = acc

    @njit(parallel=True, fastmath=FASTMATH, cache=True)
    def gemm(weight, x, out):
        """out[r, :] = sum_k W[r, k] x[k, :] (same loop order as the N:M gemm)."""
        rows, cols = weight.shape
        batch = x.shape[1]
        chunks = (rows + ROW_CHUNK - 1) // ROW_CHUNK
        for chunk in prange(chunks):
            acc = np.empty(batch, dtype=np.float32)
            for r in range(chunk * ROW_CHUNK, min(rows, (chunk + 1) * ROW_CHUNK)):
                acc[:] = 0.0
                for k in range(cols):
                    v = widen(weight[r, k], kind)
                    xrow = x[k]
                    for j in range(batch):
                        acc[j] += v * xrow[j]
                for j in range(batch):
                    out[r, j] = acc[j]

    return gemv, gemm


def threads() -> int:
    """Threads Numba's parallel loops use."""
    return numba.get_num_threads()


def check_thread_count(count: int, name: str) -> None:
    """A ValueError naming ``name`` unless ``count`` is within 1..:func:`threads`."""
    if not 1 <= count <= threads():
        raise ValueError(f"{name} must be in 1..{threads()}, got {count}")
