"""Triton kernel: Y = W X for a compressed N:M weight, decoded in registers, ``tl.dot`` on tiles.

Each program owns ``BLOCK_R`` output rows and ``BLOCK_B`` batch columns. For every ``BLOCK_K``
slice of the reduction dimension it rebuilds the dense weight tile from the compressed arrays of
:class:`compression.formats.NMTensor` - for element (row, col): block ``col // M``, position
``col % M``, kept or not and which stored value, from the metadata bits - and multiplies it with
the activation tile (fp16/bf16 operands, fp32 accumulation). ``M`` need not divide ``BLOCK_K`` or
be a power of two. Metadata fields are read from the row's bytes with masked loads (field ``f`` at
bit ``f * bits``, LSB first: the layout of ``compression.formats``), so no slack bytes are needed.

* ``index``: the N fields of the block are compared with the position; a match selects the value.
* ``rank``: the block's rank is unranked greedily (colex, ``C(c, i)`` table in global memory,
  M compare-subtract steps); the step at the element's own position says whether it is kept and
  which slot it is.

A padded tail block (``tail="pad"``) is an ordinary block whose padding columns fall outside the
activations (masked to 0); a dense tail is a second, plain loop over ``tail_values``. The salient
side-car is a second launch that accumulates into the output. Plain pointer arithmetic only.

On a CPU this runs under ``TRITON_INTERPRET=1`` (set it before triton is imported).
"""

from __future__ import annotations

import numpy as np
import torch
import triton
import triton.language as tl

from compression import formats as F
from nm_kernels import numba_nm as K

TORCH_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


@triton.jit
def _read_field(meta_ptr, rows_offset, row_bytes, field, row_ok, BITS: tl.constexpr):
    """Fields ``field`` (a tile of field numbers) of the rows at ``rows_offset``, as int64."""
    bit = field.to(tl.int64) * BITS
    first = bit >> 3
    value = tl.zeros(field.shape, dtype=tl.int64)
    for q in tl.static_range((BITS + 14) // 8):
        byte_ok = row_ok & (first + q < row_bytes)
        byte = tl.load(meta_ptr + rows_offset + first + q, mask=byte_ok, other=0)
        value |= byte.to(tl.int64) << (8 * q)
    return (value >> (bit & 7)) & ((1 << BITS) - 1)


@triton.jit
def nm_matmul_kernel(values_ptr, meta_ptr, tail_ptr, binom_ptr, x_ptr, out_ptr,
                     rows, cols, batch, row_bytes, value_stride, tail_width, covered_cols,
                     N: tl.constexpr, M: tl.constexpr, BITS: tl.constexpr,
                     UNRANK: tl.constexpr, ACCUMULATE: tl.constexpr,
                     BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_B: tl.constexpr):
    """out[rows, batch] (+)= W[rows, cols] @ x[cols, batch]; see the module docstring."""
    pid_r = tl.program_id(0)
    pid_b = tl.program_id(1)
    r = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
    bcol = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    row_ok = r < rows
    batch_ok = bcol < batch
    acc = tl.zeros((BLOCK_R, BLOCK_B), dtype=tl.float32)
    meta_rows = (r.to(tl.int64) * row_bytes)[:, None]
    value_rows = (r.to(tl.int64) * value_stride)[:, None]
    for k0 in range(0, covered_cols, BLOCK_K):
        col = k0 + tl.arange(0, BLOCK_K)
        block = (col // M)[None, :]
        position = (col % M)[None, :]
        ok = row_ok[:, None] & (col < covered_cols)[None, :]
        w = tl.zeros((BLOCK_R, BLOCK_K), dtype=values_ptr.dtype.element_ty)
        if not UNRANK:  # index (direct): N fields per block
            for s in tl.static_range(N):
                kept_at = _read_field(meta_ptr, meta_rows, row_bytes, block * N + s, ok, BITS)
                v = tl.load(values_ptr + value_rows + block * N + s, mask=ok, other=0.0)
                w = tl.where(kept_at == position, v, w)
        else:  # rank (rank_pipeline): greedy colex unranking, one step per candidate position
            rest = _read_field(meta_ptr, meta_rows, row_bytes, block, ok, BITS)
            slot = tl.full((BLOCK_R, BLOCK_K), N, dtype=tl.int64)
            for step in tl.static_range(M):
                c = M - 1 - step
                cost = tl.load(binom_ptr + c * (N + 1) + slot)
                take = (slot > 0) & (cost <= rest)
                rest = tl.where(take, rest - cost, rest)
                slot = tl.where(take, slot - 1, slot)
                here = take & (position == c)
                v = tl.load(values_ptr + value_rows + block * N + slot, mask=ok & here, other=0.0)
                w = tl.where(here, v, w)
        xv = tl.load(x_ptr + col.to(tl.int64)[:, None] * batch + bcol[None, :],
                     mask=(col < cols)[:, None] & batch_ok[None, :], other=0.0)
        acc = tl.dot(w, xv, acc)
    for t0 in range(0, tail_width, BLOCK_K):
        j = t0 + tl.arange(0, BLOCK_K)
        j_ok = j < tail_width
        w = tl.load(tail_ptr + r.to(tl.int64)[:, None] * tail_width + j[None, :],
                    mask=row_ok[:, None] & j_ok[None, :], other=0.0)
        xv = tl.load(x_ptr + (cols - tail_width + j).to(tl.int64)[:, None] * batch + bcol[None, :],
                     mask=j_ok[:, None] & batch_ok[None, :], other=0.0)
        acc = tl.dot(w, xv, acc)
    out_offsets = r.to(tl.int64)[:, None] * batch + bcol[None, :]
    out_ok = row_ok[:, None] & batch_ok[None, :]
    if ACCUMULATE:
        acc += tl.load(out_ptr + out_offsets, mask=out_ok, other=0.0)
    tl.store(out_ptr + out_offsets, acc, mask=out_ok)


def _torch_values(array: np.ndarray) -> torch.Tensor:
    """A torch copy of float16 / bfloat16 numpy values (torch has no numpy bfloat16 import)."""
    bits = torch.from_numpy(np.ascontiguousarray(array).view(np.uint16).copy())
    return bits.view(TORCH_DTYPES[F.value_dtype_name(array.dtype)])


def default_blocks(device: torch.device, batch: int) -> tuple[int, int, int]:
    """(BLOCK_R, BLOCK_K, BLOCK_B) heuristic: one config per case, no autotuning (which needs a
    GPU): the smallest legal tl.dot tiles in the interpreter; on a GPU, short row tiles for
    small batches so a GEMV still spreads over every SM."""
    if device.type != "cuda":
        return (16, 16, 16)
    return (32, 128, 16) if batch <= 16 else (64, 64, 64)


class _TritonPart:
    """One N:M tensor's device arrays and launch constants."""

    def __init__(self, tensor: F.NMTensor, device: torch.device):
        tensor = F.NMTensor(tensor.shape, tensor.pattern, tensor.encoding, tensor.tail,
                            tensor.values, tensor.metadata, tensor.tail_values)  # re-validate
        decoders = [name for name in K.kernel_decoders(tensor.encoding)
                    if K.KERNEL_DECODERS[name].triton]
        if not decoders:
            readable = [e for e in F.ENCODINGS
                        if any(d.triton and d.encoding == e for d in K.KERNEL_DECODERS.values())]
            raise ValueError(f"the Triton kernel reads {' and '.join(readable)} metadata, not "
                             f"{tensor.encoding}")
        self.unrank = K.KERNEL_DECODERS[decoders[0]].code == K.RANK_UNRANK
        if tensor.dtype not in TORCH_DTYPES:
            raise ValueError(f"the Triton kernel takes float16 or bfloat16 values (tl.dot "
                             f"operands), got {tensor.dtype}")
        p, geo = tensor.pattern, tensor.geometry
        self.bits = p.field_bits(tensor.encoding)
        if self.bits > 62:
            raise ValueError(f"{p} {tensor.encoding} fields are {self.bits} bits; the Triton "
                             "kernel reads at most 62")
        self.pattern, self.encoding, self.shape, self.dtype = p, tensor.encoding, tensor.shape, \
            TORCH_DTYPES[tensor.dtype]
        self.values = _torch_values(tensor.values).to(device)
        self.metadata = torch.from_numpy(np.ascontiguousarray(tensor.metadata)).to(device)
        self.tail = _torch_values(tensor.tail_values).to(device)
        self.binom = torch.from_numpy(F.binomial_table(p).astype(np.int64)).to(device)
        self.covered_cols = geo.blocks * p.m

    def launch(self, x: torch.Tensor, out: torch.Tensor, accumulate: bool,
               blocks: tuple[int, int, int] | None) -> None:
        rows, cols = self.shape
        batch = x.shape[1]
        block_r, block_k, block_b = blocks or default_blocks(x.device, batch)
        grid = (triton.cdiv(rows, block_r), triton.cdiv(batch, block_b))
        nm_matmul_kernel[grid](
            self.values, self.metadata, self.tail, self.binom, x, out,
            rows, cols, batch, self.metadata.shape[1], self.values.shape[1], self.tail.shape[1],
            self.covered_cols, N=self.pattern.n, M=self.pattern.m, BITS=self.bits,
            UNRANK=self.unrank, ACCUMULATE=accumulate,
            BLOCK_R=block_r, BLOCK_K=block_k, BLOCK_B=block_b)


class TritonNMPlan:
    """A compressed weight (N:M bulk + optional N:M salient side-car) on a Triton device."""

    def __init__(self, weight: F.SparseWeight | F.NMTensor, device: str | torch.device = "cpu"):
        if isinstance(weight, F.NMTensor):
            weight = F.SparseWeight(weight)
        if isinstance(weight.salient, F.CSRTensor):
            raise ValueError(  # noqa: TRY004 - the CLI maps ValueError to exit code 2
                "the Triton kernel adds N:M salient side-cars only (CSR side-cars run on the "
                "Numba kernels)")
        device = torch.device(device)
        self.shape = tuple(weight.shape)
        self.bulk = _TritonPart(weight.bulk, device)
        self.salient = (_TritonPart(weight.salient, device) if weight.salient is not None
                        else None)
        if self.salient is not None and self.salient.dtype != self.bulk.dtype:
            raise ValueError(f"salient side-car dtype {self.salient.dtype} differs from the "
                             f"bulk's {self.bulk.dtype}; both feed the same tl.dot")

    def __call__(self, x: torch.Tensor, out: torch.Tensor | None = None,
                 blocks: tuple[int, int, int] | None = None) -> torch.Tensor:
        """``W @ x`` in float32 for ``x`` ``[in, batch]`` in the weight's value dtype;
        ``blocks`` overrides the (BLOCK_R, BLOCK_K, BLOCK_B) heuristic (powers of two >= 16)."""
        if not isinstance(x, torch.Tensor) or x.ndim != 2:
            raise ValueError(f"activations must be a 2-D torch tensor [in, batch], got "
                             f"{getattr(x, 'shape', type(x).__name__)}")
        if x.shape[0] != self.shape[1] or x.shape[1] == 0:
            raise ValueError(f"activations shape {tuple(x.shape)} does not match the weight "
                             f"{self.shape}: need [{self.shape[1]}, batch >= 1]")
        if x.dtype != self.bulk.dtype:
            raise ValueError(f"activations dtype {x.dtype} differs from the weight's values "
                             f"{self.bulk.dtype}")
        if not x.is_contiguous():
            raise ValueError("activations must be contiguous (row-major [in, batch])")
        if x.device != self.bulk.values.device:
            raise ValueError(f"activations on {x.device}, weight on {self.bulk.values.device}")
        want = (self.shape[0], x.shape[1])
        if out is None:
            out = torch.empty(want, dtype=torch.float32, device=x.device)
        elif tuple(out.shape) != want or out.dtype != torch.float32 or not out.is_contiguous():
            raise ValueError(f"out must be a contiguous float32 tensor of shape {want}")
        self.bulk.launch(x, out, accumulate=False, blocks=blocks)
        if self.salient is not None:
            self.salient.launch(x, out, accumulate=True, blocks=blocks)
        return out
