"""Validated entry points to the Numba kernels: prepare a compressed weight once, multiply often.

``prepare(weight)`` checks the weight against the format (by rebuilding it through
:class:`compression.formats.NMTensor`, which decodes and validates all metadata), picks the
metadata decoder and keeps the kernel's argument tuple. ``plan(x)`` checks the activations
(shape, dtype float32, C-contiguous) before any kernel runs and returns ``W @ x`` with the
salient side-car added. ``x`` is ``[in]`` (GEMV) or ``[in, batch]`` (GEMM), the same orientation
as the simulator's functional mode.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from compression import formats as F
from nm_kernels import numba_nm as K
from nm_kernels import simd_nm

_VALUE_KINDS = {"float32": K.F32, "float16": K.F16_BITS, "bfloat16": K.BF16_BITS}


def usable_decoders(pattern: F.Pattern, encoding: str) -> tuple[str, ...]:
    """The kernel decoders (:data:`nm_kernels.numba_nm.KERNEL_DECODERS`) that read ``pattern``
    with ``encoding`` metadata: a rank-LUT decoder only where formats builds the table."""
    return tuple(name for name in K.kernel_decoders(encoding)
                 if not K.KERNEL_DECODERS[name].rank_lut or pattern.has_rank_lut)


def default_decoder(pattern: F.Pattern, encoding: str) -> str:
    """Decoder used for ``encoding`` unless the caller names one: the first usable one of the
    table. For rank metadata that is the measured choice (reports/kernels/cpu.md, "rank
    decoder"): the LUT (``rank_rom``) wherever formats builds the table, unranking
    (``rank_pipeline``) only where it cannot (16:32)."""
    usable = usable_decoders(pattern, encoding)
    if not usable:
        raise ValueError(f"no kernel reads {encoding} metadata")
    return usable[0]


def _kernel_values(array: np.ndarray, dtype_name: str) -> np.ndarray:
    """The values as the kernels read them: float32, or the uint16 bits of half / bfloat16."""
    array = np.ascontiguousarray(array)
    return array if dtype_name == "float32" else array.view(np.uint16)


def _validated(tensor: F.NMTensor) -> F.NMTensor:
    """Re-run the format's full validation (arrays may have been edited since construction)."""
    if not isinstance(tensor, F.NMTensor):
        raise ValueError(  # noqa: TRY004 - the CLI maps ValueError to exit code 2
            f"expected a compression.formats.NMTensor, got {type(tensor).__name__}")
    return F.NMTensor(tensor.shape, tensor.pattern, tensor.encoding, tensor.tail, tensor.values,
                      tensor.metadata, tensor.tail_values)


@dataclass(frozen=True)
class _NMPart:
    """One N:M tensor's compiled kernels and their arguments (all but x, out and accumulate).

    ``gemv_path`` says which batch-1 kernel runs (:func:`nm_kernels.simd_nm.gemv_path`):
    ``"avx512-pair"`` (sixteen kept values per vector step), ``"avx2-table"`` (2:4 through an
    x table of block subsets) or ``"avx2-group"`` (eight per step) where the
    pattern, encoding and CPU allow it, else ``"scalar"``. ``gemm_path`` says the same of the
    batch > 1 kernel (:func:`nm_kernels.simd_nm.gemm_path`): ``"avx512-group"`` (16 batch
    columns per vector) or ``"avx2-group"`` (8) wherever a vector GEMV runs, else ``"scalar"``.
    """

    kernels: tuple
    arrays: tuple
    gemv_scalars: tuple
    gemm_scalars: tuple
    decoder: str
    gemv_path: str
    gemm_path: str
    gemv_load_bytes: int

    @classmethod
    def build(cls, tensor: F.NMTensor, decoder: str | None, simd: str = "auto") -> _NMPart:
        tensor = _validated(tensor)
        p, geo = tensor.pattern, tensor.geometry
        decoder = decoder or default_decoder(p, tensor.encoding)
        allowed = K.kernel_decoders(tensor.encoding)
        if decoder not in allowed:
            raise ValueError(f"decoder '{decoder}' cannot read {tensor.encoding} metadata: "
                             f"choose one of {', '.join(allowed)}")
        entry = K.KERNEL_DECODERS[decoder]
        bits = p.field_bits(tensor.encoding)
        if bits > K.MAX_FIELD_BITS:
            raise ValueError(f"{p} {tensor.encoding} fields are {bits} bits wide; the kernels "
                             f"read at most {K.MAX_FIELD_BITS} (use index metadata)")
        lut = F.rank_lut(p) if entry.rank_lut else np.zeros((1, 1), np.uint8)
        binom = F.binomial_table(p)
        pad_block = int(geo.blocks > geo.full_blocks)
        kind = _VALUE_KINDS[tensor.dtype]
        code = entry.code
        gemv, gemm = K.nm_kernels(p.n, p.m, bits, code, kind)
        gemv_scalars = gemm_scalars = (geo.full_blocks, pad_block, lut, binom)
        gemv_path = simd_nm.gemv_path(p, tensor.encoding, decoder, simd)
        gemm_path = simd_nm.gemm_path(p, tensor.encoding, decoder, simd)
        if gemv_path == "avx2-table":
            gemv = simd_nm.nm_table_gemv(p.n, p.m, bits, code, kind)
        elif gemv_path != "scalar":
            gemv = simd_nm.nm_group_gemv(p.n, p.m, bits, code, kind,
                                         wide=gemv_path == "avx512-pair")
        if gemv_path != "scalar":
            gemm = simd_nm.nm_group_gemm(p.n, p.m, bits, code, kind,
                                         wide=gemm_path == "avx512-group")
            gemm_table = simd_nm.group_index_table(p) if entry.rank_lut else _NO_TABLE
            gemv_table = gemv_lookup_table(p, tensor.encoding, decoder, gemv_path, kind)
            gemv_scalars = (geo.full_blocks, pad_block, gemv_table, binom)
            gemm_scalars = (geo.full_blocks, pad_block, gemm_table, binom)
        args = (_kernel_values(tensor.values, tensor.dtype), K.kernel_metadata(tensor.metadata),
                _kernel_values(tensor.tail_values, tensor.dtype))
        return cls((gemv, gemm), args, gemv_scalars, gemm_scalars, decoder, gemv_path,
                   gemm_path, gemv_load_bytes(tensor, gemv_path, decoder))

    def run(self, x: np.ndarray, out: np.ndarray, accumulate: bool) -> None:
        gemv, gemm = self.kernels
        if x.ndim == 1:
            gemv(*self.arrays, x, out, *self.gemv_scalars, int(accumulate))
        else:
            gemm(*self.arrays, x, out, *self.gemm_scalars, int(accumulate))


X_BYTES = 4  # an activation (float32) as the kernels load it
_NO_TABLE = np.zeros((1, simd_nm.LANES), np.uint8)  # the table argument of kernels that read none


def gemv_lookup_table(pattern: F.Pattern, encoding: str, decoder: str, path: str,
                      kind: int) -> np.ndarray:
    """The table the vector batch-1 kernel on ``path`` reads for ``encoding`` metadata
    through ``decoder`` with values of ``kind``: the 2:4 x table's offsets, a rank table, or
    none."""
    if path == "avx2-table":
        return simd_nm.table_offsets(pattern, encoding)
    if K.KERNEL_DECODERS[decoder].rank_lut:
        return simd_nm.gemv_table(pattern, path, kind)
    return _NO_TABLE


def dense_gemv_load_bytes(rows: int, cols: int, value_bytes: int) -> int:
    """Bytes a dense batch-1 GEMV's loads read per call: every row its values and all of x."""
    return rows * cols * (value_bytes + X_BYTES)


def gemv_load_bytes(tensor: F.NMTensor, path: str, decoder: str) -> int:
    """Bytes the batch-1 kernel on ``path`` reads with its load instructions per call, from
    whichever cache or memory holds them: the compressed weight once (values, metadata, dense
    tail) and the x elements each step loads: per group of eight kept values the x window they
    index (an AVX-512 pair step: the 32 inputs of two groups; the 2:4 table step: one 16-byte
    x-table entry and one offset byte per two blocks) plus the entry of its table
    (:func:`gemv_lookup_table`) where the step looks one up (a rank's positions or index
    fields; a table no larger than a vector register, such as the lane-unrank table, stays in
    one); one x per kept value of the blocks left to scalar code, and per dense-tail column;
    where the kernel runs two rows per loop (:func:`nm_kernels.simd_nm.gemv_pairs_rows`)
    their groups share each x load. ``path`` may be one this CPU does not run (a record of
    another host's). These are the in-core loads of the
    Execution-Cache-Memory model (Treibig and Hager 2010), which ``nmsim validate`` times at
    the core's load rate (:func:`nm_kernels.hostperf.core_load_gb_s`)."""
    p, geo = tensor.pattern, tensor.geometry
    rows = tensor.shape[0]
    blocks = geo.full_blocks + int(geo.blocks > geo.full_blocks)
    geometry = simd_nm.group_geometry(p)
    kind = _VALUE_KINDS[tensor.dtype]
    if path == "scalar" or geometry is None:
        groups, scalar_blocks = 0, blocks
    elif geometry.blocks_per_group:
        groups = geo.full_blocks // geometry.blocks_per_group
        scalar_blocks = blocks - groups * geometry.blocks_per_group
    else:
        groups = geo.full_blocks * geometry.groups_per_block
        scalar_blocks = blocks - geo.full_blocks
    table = (gemv_lookup_table(p, tensor.encoding, decoder, path, kind) if groups
             else _NO_TABLE)
    if path == "avx2-table":
        per_group = 2 * (16 + table.itemsize)
    else:
        entry = table[0].nbytes if table.shape[0] > 2 * simd_nm.LANES else 0
        per_group = geometry.window * X_BYTES + entry if groups else 0
        if path == "avx512-pair":  # two groups per step share one window of 32 inputs
            per_group = (32 * X_BYTES + 2 * entry) / 2
    loading_rows = rows
    if path == "avx512-pair" and simd_nm.gemv_pairs_rows(
            p, K.KERNEL_DECODERS[decoder].code, kind, wide=True):
        chunks, last = divmod(rows, K.ROW_CHUNK)  # rows pair up within each row chunk
        loading_rows = chunks * -(-K.ROW_CHUNK // 2) + -(-last // 2)
    scalar_bytes = (scalar_blocks * p.n + geo.dense_tail_width) * X_BYTES
    return int(tensor.nbytes + loading_rows * groups * per_group + rows * scalar_bytes)


def _gemm_operand(x: np.ndarray) -> np.ndarray:
    """``x`` (float32, checked by :func:`check_activations`) as the group GEMM takes it:
    starting on a 64-byte cache line, its batch padded with
    zero columns to a multiple of :data:`nm_kernels.simd_nm.GEMM_BATCH_MULTIPLE`; ``x`` itself
    when it already is both. The AVX-512 passes load an x row 64 bytes at a time, which a
    buffer off the line (numpy promises 16 bytes) splits across two lines (4-10% more time at
    batch 64 on Zen 4, reports/kernels/cpu.md); a padded column costs an eighth of a pass's
    FMAs, where the scalar code it replaces decoded every block again (batch 12: 16x the time
    of batch 8). The copy is one pass over x, which the GEMM reads once per weight row."""
    batch = x.shape[1]
    padded = -(-batch // simd_nm.GEMM_BATCH_MULTIPLE) * simd_nm.GEMM_BATCH_MULTIPLE
    if x.ctypes.data % 64 == 0 and padded == batch:
        return x
    nbytes = x.shape[0] * padded * x.itemsize
    buffer = np.empty(nbytes + 64, dtype=np.uint8)
    start = -buffer.ctypes.data % 64
    operand = buffer[start:start + nbytes].view(x.dtype)
    operand = operand.reshape(x.shape[0], padded)
    operand[:, :batch] = x
    operand[:, batch:] = 0.0
    return operand


class NMPlan:
    """A compressed weight (N:M bulk + optional salient side-car) ready for the Numba kernels."""

    def __init__(self, weight: F.SparseWeight | F.NMTensor, decoder: str | None = None,
                 simd: str = "auto"):
        if isinstance(weight, F.NMTensor):
            weight = F.SparseWeight(weight)
        if not isinstance(weight, F.SparseWeight):
            raise ValueError(  # noqa: TRY004 - the CLI maps ValueError to exit code 2
                f"expected an NMTensor or SparseWeight, got {type(weight).__name__}")
        self.shape = tuple(weight.shape)
        self.nbytes = weight.nbytes
        self.bulk = _NMPart.build(weight.bulk, decoder, simd)
        salient = weight.salient
        self.salient_nm = (_NMPart.build(salient, None, simd) if isinstance(salient, F.NMTensor)
                           else None)
        self.salient_csr = salient if isinstance(salient, F.CSRTensor) else None

    @property
    def gemv_load_bytes(self) -> int:
        """Bytes the batch-1 product's loads read per call (:func:`gemv_load_bytes`; a CSR
        side-car: its values, column indices and one x per value)."""
        total = self.bulk.gemv_load_bytes
        if self.salient_nm is not None:
            total += self.salient_nm.gemv_load_bytes
        if self.salient_csr is not None:
            s = self.salient_csr
            total += s.values.nbytes + s.indices.nbytes + s.values.size * X_BYTES
        return total

    @property
    def decoder(self) -> str:
        return self.bulk.decoder

    @property
    def gemv_path(self) -> str:
        """The bulk's batch-1 kernel: ``"avx512-pair"``, ``"avx2-table"``, ``"avx2-group"`` or
        ``"scalar"``."""
        return self.bulk.gemv_path

    @property
    def gemm_path(self) -> str:
        """The bulk's batch > 1 kernel: ``"avx512-group"``, ``"avx2-group"`` or ``"scalar"``."""
        return self.bulk.gemm_path

    def __call__(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """``W @ x`` in float32; ``out`` (float32, C-contiguous) is written if given."""
        x = check_activations(x, self.shape[1])
        want = (self.shape[0],) + x.shape[1:]
        if out is None:
            out = np.empty(want, dtype=np.float32)
        elif out.shape != want or out.dtype != np.float32 or not out.flags.c_contiguous:
            raise ValueError(f"out must be a C-contiguous float32 array of shape {want}, got "
                             f"{out.dtype} {out.shape}")
        result = out
        parts = [self.bulk] + ([self.salient_nm] if self.salient_nm is not None else [])
        if x.ndim == 2 and any(part.gemm_path != "scalar" for part in parts):
            x = _gemm_operand(x)  # once, for the bulk and an N:M side-car alike
            if x.shape[1] != out.shape[1]:  # padded columns: the products go to a scratch
                out = np.empty((self.shape[0], x.shape[1]), dtype=np.float32)
        self.bulk.run(x, out, accumulate=False)
        if self.salient_nm is not None:
            self.salient_nm.run(x, out, accumulate=True)
        if self.salient_csr is not None:
            s = self.salient_csr
            K.csr_matmul_add(s.indptr, s.indices, s.values, x.reshape(x.shape[0], -1),
                             out.reshape(out.shape[0], -1))
        if out is not result:
            result[...] = out[:, :result.shape[1]]
        return result


def check_activations(x, in_features: int) -> np.ndarray:
    """Raise ``ValueError`` unless ``x`` is a C-contiguous float32 ``[in]`` or ``[in, batch]``."""
    if not isinstance(x, np.ndarray):
        raise ValueError(  # noqa: TRY004 - the CLI maps ValueError to exit code 2
            f"activations must be a numpy array, got {type(x).__name__}")
    if x.ndim not in (1, 2):
        raise ValueError(f"activations must be [in] or [in, batch], got shape {x.shape}")
    if x.shape[0] != in_features:
        raise ValueError(f"activations shape {x.shape} does not match the weight: need "
                         f"{in_features} rows (the weight's in_features)")
    if x.ndim == 2 and x.shape[1] == 0:
        raise ValueError("activations have an empty batch")
    if x.dtype != np.float32:
        raise ValueError(f"activations must be float32, got {x.dtype}")
    if not x.flags.c_contiguous:
        raise ValueError("activations must be C-contiguous (row-major [in, batch]); "
                         "pass np.ascontiguousarray(x)")
    return x


def prepare(weight: F.SparseWeight | F.NMTensor, decoder: str | None = None,
            simd: str = "auto") -> NMPlan:
    """Validate ``weight`` and bind it to the kernels (see :class:`NMPlan`). ``simd`` caps the
    vector paths (GEMV and GEMM) for comparisons: ``"auto"`` (the widest this CPU runs),
    ``"avx2"`` or ``"scalar"``."""
    return NMPlan(weight, decoder, simd)


class DensePlan:
    """The dense Numba baseline on a ``[out, in]`` weight in float32, float16 or bfloat16."""

    def __init__(self, weight: np.ndarray):
        weight = np.asarray(weight)
        dtype_name = F.value_dtype_name(weight.dtype)
        if weight.ndim != 2:
            raise ValueError(f"dense weight must be 2-D [out, in], got shape {weight.shape}")
        self.shape = weight.shape
        self.nbytes = weight.nbytes
        self.weight = _kernel_values(weight, dtype_name)
        self.kernels = K.dense_kernels(_VALUE_KINDS[dtype_name])
        self.gemv_load_bytes = dense_gemv_load_bytes(*weight.shape, weight.itemsize)

    def __call__(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        x = check_activations(x, self.shape[1])
        if out is None:
            out = np.empty((self.shape[0],) + x.shape[1:], dtype=np.float32)
        gemv, gemm = self.kernels
        (gemv if x.ndim == 1 else gemm)(self.weight, x, out)
        return out
