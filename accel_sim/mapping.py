"""Mapping a GEMM onto the hardware: tiles, waves, and the per-step work the pipeline runs.

A GEMM ``Y[m, n] = X[m, k] @ W[n, k]^T`` is cut into output tiles ``tile_m x tile_n`` (one per
core at a time); the reduction runs in *steps* (k-chunks). Tiles are issued in a swizzled order
(:func:`tile_order`) in *waves* of ``num_cores`` tiles that run in lockstep: a wave's step lasts
as long as its slowest tile, and its DRAM traffic is the distinct weight and activation chunks of
its tiles (tiles of one wave that share operands fetch them once, as through a shared L2 or a
multicast bus). Outputs of a wave are written back after its last step. A one-core systolic
array runs its full tiles before its partial edge tiles (order changes no traffic there, and
equal consecutive tiles make the schedule a few periodic runs).

Compute templates (per core, per step):

* ``tensor_core``: ``array_rows x array_cols`` dot-product units of ``dot_width`` multipliers.
  A step over a k-chunk with ``kept`` stored weights per row (``kept = chunk * N / M`` on N:M)
  takes ``ceil(tm / rows) * ceil(tn / cols) * ceil(kept / dot_width)`` cycles; each wave adds the
  array's pipeline fill once (operand select + multiplier + adder tree).
* ``systolic`` (SCALE-Sim v3 fold accounting, Samajdar et al., ISPASS 2020, checked against
  SCALE-Sim 3.0.0 by scripts/scalesim_parity.py): an ``R x C`` array processes a fold of spatial
  size ``S_R x S_C`` and temporal depth ``T``; a GEMM takes
  ``fold_cycles * ceil(S_R / R) * ceil(S_C / C) - 1`` cycles (SCALE-Sim counts the last output's
  cycle index from 0), with ``fold_cycles = 2R + C + T - 2`` for WS and IS (stationary preload
  + skewed stream + drain) and ``R + C + T - 2`` for OS (no preload):

  - weight-stationary: ``S_R = k'``, ``S_C = n``, ``T = m`` (or the m-chunk the buffers hold);
  - input-stationary: ``S_R = k'``, ``S_C = m``, ``T = n`` (or the n-chunk the buffers hold);
  - output-stationary: ``S_R = m``, ``S_C = n``, ``T = k'``.

  N:M on each dataflow (``k' = blocks * N`` + tail: the stored weights per row):

  - WS: each PE row holds one kept weight and selects its activation among the M of its block
    as they stream past, through the operand mux; R // N whole blocks per fold; metadata is
    decoded once per fold and held with the weights. SCALE-Sim 3.0.0's ``ellpack_block`` WS
    model does the same count with the k' rows packed across folds (equal when N divides R)
    and a tail block keeping min(N, t) of its t columns; it charges nothing for decoding, our
    decoder and mux latencies show as ``decode`` stalls.
  - IS: each PE row holds the M activations of one block slot (an M-entry register window);
    the streamed weight's metadata selects among them, so every streamed weight row is decoded
    (n x blocks per fold). R // N blocks per fold.
  - OS: each PE accumulates one output; the activation row streams its blocks' M values and
    each PE selects with its weight's metadata, so T = k' cycles per fold; metadata is decoded
    per output-tile column per k-chunk.

  SCALE-Sim runs N:M on WS only (its OS and IS stop on the compressed filter's shape), so the
  IS and OS N:M counts are ours, not checked against the tool.

Decoder work: the metadata of a weight chunk is decoded once per step and its select signals are
reused across the tile's m extent (tensor core) or held in the stationary PEs (WS); on IS it
is decoded for every streamed weight row.

Code: one :class:`Mapper` per template (and systolic dataflow) says how it tiles a GEMM and
what a step costs; :class:`_ScheduleBuilder` walks the waves and emits the steps for all of
them. A new template is a ``Mapper`` subclass registered in :data:`MAPPERS` (and its name
allowed by ``accel_sim.config.TEMPLATES``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from compression.formats import NMTensor, Pattern, SparseWeight

from .config import HardwareConfig
from .decoders import decoder_model


@dataclass(frozen=True, kw_only=True)
class Step:
    """The work of one wave-step (all cores); hashable so that equal steps merge into runs."""

    mac_cycles: float  # MAC-array occupancy (slowest tile of the wave)
    useful_cycles: float  # useful MACs of the wave / the chip's MACs per cycle
    salient_cycles: float  # salient side-car lanes' occupancy (slowest tile)
    decode_cycles: float  # decoder occupancy (slowest tile)
    load_bytes: float  # DRAM bytes loaded for this step (whole wave)
    writeback_bytes: float  # DRAM bytes written after this step (0 unless the wave's last)
    wave_start: bool  # first step of a wave: needs a free output buffer
    operand_cycles: float = 0.0  # shared-memory traffic of the step / operand_bytes_per_cycle


@dataclass(frozen=True)
class WeightInfo:
    """What the mapping needs from a weight: pattern, encoding, tail, salient counts."""

    pattern: Pattern | None  # None: dense operand
    tail: str = "dense"
    salient_rows_cols: tuple[np.ndarray, np.ndarray] | None = None  # coordinates of side-car
    salient_bytes_per_nnz: float = 0.0
    name: str = ""
    activation_operand: bool = False  # W is an activation (K or V cache): bytes are activations


def weight_info(weight, shape: tuple[int, int], name: str = "") -> WeightInfo:
    """Describe a real compressed weight (``NMTensor`` / ``SparseWeight``) for the mapping."""
    if isinstance(weight, NMTensor):
        weight = SparseWeight(weight)
    if not isinstance(weight, SparseWeight):
        # ValueError, not TypeError: the CLI contract turns ValueError into its exit-2 error.
        raise ValueError(f"weight '{name}' must be an NMTensor or SparseWeight, got "  # noqa: TRY004
                         f"{type(weight).__name__}")
    if tuple(weight.shape) != tuple(shape):
        raise ValueError(f"mask shape {tuple(weight.shape)} of '{name}' does not match the "
                         f"workload's weight shape {tuple(shape)} (n_out, k)")
    coords, per_nnz = None, 0.0
    side = weight.salient
    if side is not None:
        if isinstance(side, NMTensor):
            rows, cols = np.nonzero(side.mask())
        else:
            rows = np.repeat(np.arange(side.shape[0]), np.diff(side.indptr))
            cols = side.indices.astype(np.int64)
        nnz = len(rows)
        per_nnz = side.nbytes / nnz if nnz else 0.0
        coords = (rows, cols)
    return WeightInfo(pattern=weight.bulk.pattern, tail=weight.bulk.tail, salient_rows_cols=coords,
                      salient_bytes_per_nnz=per_nnz, name=name)


# Bytes of one value of a synthetic side-car (``--salient N:M``): fp16, the width of the
# bulk's values on every preset. A real side-car from ``nmsim prune`` is stored in fp32
# (compression.pipeline) and is charged its stored bytes (:func:`weight_info`) instead; this
# keeps the synthetic one at the width a hardware side-car would hold (project assumption).
SYNTHETIC_SALIENT_VALUE_BYTES = 2

# Pipeline stages of a tensor-core dot-product unit besides its operand select (mux levels,
# :func:`select_depth`) and its adder tree (ceil(log2 dot_width) levels): one multiplier stage
# and one accumulator stage (project assumption, docs/accel_sim.md "pipeline fill").
MULTIPLIER_STAGES = 1
ACCUMULATOR_STAGES = 1


def synthetic_salient(shape: tuple[int, int], p: Pattern,
                      value_bytes: int = SYNTHETIC_SALIENT_VALUE_BYTES
                      ) -> tuple[tuple[np.ndarray, np.ndarray], float]:
    """Coordinates of a uniform structured side-car (N evenly spaced entries in every group of
    M, as spread as real outliers are on average), and bytes per entry (value + index offset of
    ceil(log2 M) bits) - used when no real side-car is given."""
    rows, cols = shape
    blocks = -(-cols // p.m)
    starts = np.arange(blocks) * p.m
    offsets = (np.arange(p.n) * p.m) // p.n
    col = (starts[:, None] + offsets[None, :]).reshape(-1)
    col = col[col < cols]
    r = np.repeat(np.arange(rows), len(col))
    c = np.tile(col, rows)
    return (r, c), value_bytes + p.index_bits / 8


@dataclass(kw_only=True)
class Mapping:
    """Tile sizes and the step schedule of one GEMM on one design."""

    tile_m: int
    tile_n: int
    chunk_k: int  # dense k per step
    waves: int
    schedule: list  # [(tuple[(Step, repeat), ...], wave_repeat)]
    bytes_by_class: dict
    kept_macs: float  # MACs the array performs (stored weights x m)
    salient_macs: float


def _chunk_widths(k: int, chunk: int) -> list[tuple[int, int]]:
    """[(width, count)] of the k-chunks: full ones, then the remainder."""
    full, rest = divmod(k, chunk)
    out = [(chunk, full)] if full else []
    if rest:
        out.append((rest, 1))
    return out


def _chunk_cost(width: int, pattern: Pattern | None, tail: str, encoding: str):
    """(kept weights per row, metadata bits per row, blocks per row) of a k-chunk of ``width``.

    Chunks start on block boundaries; only the last chunk can hold the tail."""
    if pattern is None:
        return width, 0, 0
    blocks, rest = divmod(width, pattern.m)
    kept = blocks * pattern.n
    if rest and tail == "pad":
        blocks += 1
        kept += pattern.n
    elif rest:
        kept += rest  # dense tail columns, stored as values without metadata
    return kept, blocks * pattern.bits_per_block(encoding), blocks


def _weight_row_bytes(hw: HardwareConfig, k: int, chunk_k: int, info: WeightInfo) -> float:
    """Bytes of one weight row of the largest k-chunk: chunk_k * N/M values, or more for a
    dense tail that keeps more than N columns of its last block. The weight buffer holds
    values; metadata has its own buffer sized to match (accel_sim.area.metadata_buffer_kib),
    so values alone bound the weight tile."""
    p = info.pattern
    density = 1.0 if p is None else p.n / p.m
    tails = [_chunk_cost(w, p, info.tail, hw.encoding)[0] for w, _ in _chunk_widths(k, chunk_k)]
    return hw.value_bytes * max([chunk_k * density, *tails])


def library_tile_fits(hw: HardwareConfig, tile: tuple[int, int], k: int,
                      info: WeightInfo) -> bool:
    """A library tile (``tile_m x tile_n``) fits a tensor-core design when its operand stages
    fit the shared memory (weight and activation buffers pooled, as one shared memory) and its
    accumulators fit one output slot."""
    tile_m, tile_n = tile
    per_slot = tile_m * hw.tile_k * hw.value_bytes + tile_n * _weight_row_bytes(
        hw, k, hw.tile_k, info)
    smem = (hw.weight_buffer_kib + hw.act_buffer_kib) * 1024
    return (per_slot * hw.input_stages <= smem
            and tile_m * tile_n * hw.accumulator_bytes <= hw.out_buffer_kib * 1024
            / hw.output_stages)


def operand_delivery_cycles(hw: HardwareConfig, tm: int, tn: int, width: int, kept: int,
                            meta_bits: float) -> float:
    """Cycles one core's shared memory needs for a step's operands: each chunk is written
    once (from DRAM) and read once per warp tile (``mma_tile_m x mma_tile_n``) that uses it;
    activations are read over the whole dense k window (``width``), weights as their ``kept``
    values plus metadata, so an N:M step moves more bytes per MAC than a dense one."""
    if not hw.operand_bytes_per_cycle:
        return 0.0
    acts = tm * width * hw.value_bytes
    weights = tn * (kept * hw.value_bytes + meta_bits / 8)
    reads = acts * -(-tn // hw.mma_tile_n) + weights * -(-tm // hw.mma_tile_m)
    return (acts + weights + reads) / hw.operand_bytes_per_cycle


def _round_down(value: float, granule: int) -> int:
    return int(value // granule) * granule


def _buffer_error(field: str, have_kib: float, need_bytes: float, what: str) -> ValueError:
    return ValueError(f"{field}={have_kib:g} KiB is too small for one tile: {what} needs "
                      f"{need_bytes / 1024:.2f} KiB per buffer slot (the buffer is split into "
                      "its stages)")


def _fill_the_cores(m: int, n: int, tm: int, tn: int, rows: int, cols: int, group: int,
                    cores: int) -> tuple[int, int]:
    """For a GEMM whose largest tiles (``tm x tn``) fit in one wave with cores to spare: the
    one-wave tile (multiples of the array) with the least array work per core,
    ceil(tm/rows) x ceil(tn/cols); among equals the largest.

    A wave fetches every distinct operand chunk once, so in one wave smaller tiles cost no DRAM
    traffic, only more busy cores (GEMM libraries likewise pick a smaller tile for a small
    problem). Without this a sparse design, whose weight buffer holds M/N times more rows, ran
    fewer, larger tiles than its dense twin on a small GEMM and lost its speedup."""
    best = None
    for tile_m in range(rows, tm + 1, rows):
        for tile_n in range(cols, tn + 1, cols):
            if group * -(-m // tile_m) * -(-n // tile_n) > cores:
                continue
            key = ((tile_m // rows) * (tile_n // cols), -tile_m * tile_n, -tile_n)
            if best is None or key < best[0]:
                best = (key, tile_m, tile_n)
    return best[1], best[2]


def _stationary_chunk_k(hw: HardwareConfig, p: Pattern | None) -> int:
    """Dense k of one WS/IS fold: R rows dense, R // N whole blocks on N:M."""
    rows = hw.array_rows
    per_fold_blocks = rows if p is None else rows // p.n
    if per_fold_blocks < 1:
        raise ValueError(f"array_rows={rows} is smaller than N={p.n} of {p}: a "
                         f"{hw.dataflow.upper()} fold must hold at least one block")
    return per_fold_blocks if p is None else per_fold_blocks * p.m


def _buffer_caps(hw: HardwareConfig) -> tuple[float, float, float]:
    """Bytes of one slot of the weight, activation and output buffers (each split into its
    stages)."""
    slots = hw.input_stages
    return (hw.weight_buffer_kib * 1024 / slots, hw.act_buffer_kib * 1024 / slots,
            hw.out_buffer_kib * 1024 / hw.output_stages)


@dataclass(frozen=True)
class Tiling:
    """Output tile and dense k per step of one GEMM on one design."""

    tile_m: int
    tile_n: int
    chunk_k: int


class Mapper:
    """How one compute template tiles a GEMM and what a step costs on it; the wave/step
    emitter (:class:`_ScheduleBuilder`) is shared. A new template is a subclass registered in
    :data:`MAPPERS`."""

    def tiling(self, hw: HardwareConfig, m: int, n: int, k: int, info: WeightInfo, group: int,
               tile: tuple[int, int] | None) -> Tiling:
        raise NotImplementedError

    def pipeline_fill(self, hw: HardwareConfig) -> float:
        """Cycles added to the first step of every wave (0: the step cycles include them)."""
        return 0.0

    def step_cycles(self, hw: HardwareConfig, tm: int, tn: int, kept: int, last: bool,
                    final: bool) -> int:
        """Array cycles of one step of a ``tm x tn`` tile with ``kept`` stored weights per row
        (``last``: the tile's last k-chunk; ``final``: the GEMM's very last step)."""
        raise NotImplementedError

    def operand_cycles(self, hw: HardwareConfig, tm: int, tn: int, width: int, kept: int,
                       meta_bits: float) -> float:
        """Cycles the operand delivery needs for one step (0: never the bottleneck)."""
        return 0.0

    def tile_order(self, hw: HardwareConfig, m: int, n: int, tiling: Tiling
                   ) -> tuple[np.ndarray, np.ndarray]:
        """(m index, n index) of the output tiles in issue order."""
        return tile_order(-(-m // tiling.tile_m), -(-n // tiling.tile_n), hw.num_cores)


class TensorCoreMapper(Mapper):
    """``array_rows x array_cols`` dot-product units of ``dot_width`` multipliers per core."""

    def tiling(self, hw, m, n, k, info, group, tile):
        if tile is not None:
            if not library_tile_fits(hw, tile, k, info):
                raise ValueError(f"library tile {tile[0]}x{tile[1]} does not fit hardware "
                                 f"'{hw.name}' (weight_buffer_kib + act_buffer_kib, "
                                 "out_buffer_kib)")
            return Tiling(tile[0], tile[1], hw.tile_k)
        tm, tn = self._largest_tile(hw, m, n, _weight_row_bytes(hw, k, hw.tile_k, info))
        if group * -(-m // tm) * -(-n // tn) < hw.num_cores:
            tm, tn = _fill_the_cores(m, n, tm, tn, hw.array_rows, hw.array_cols, group,
                                     hw.num_cores)
        return Tiling(tm, tn, hw.tile_k)

    @staticmethod
    def _largest_tile(hw: HardwareConfig, m: int, n: int, w_row: float) -> tuple[int, int]:
        """The largest ``tm x tn`` (multiples of the array) whose operands fit a buffer slot
        and whose accumulators fit an output slot, no larger than the GEMM."""
        rows, cols, chunk_k, acc = hw.array_rows, hw.array_cols, hw.tile_k, hw.accumulator_bytes
        wcap, acap, ocap = _buffer_caps(hw)
        tn = _round_down(wcap / w_row, cols)
        tm = _round_down(acap / (chunk_k * hw.value_bytes), rows)
        if tn < cols:
            raise _buffer_error("weight_buffer_kib", hw.weight_buffer_kib, cols * w_row,
                                f"{cols} weight rows of tile_k={chunk_k}")
        if tm < rows:
            raise _buffer_error("act_buffer_kib", hw.act_buffer_kib,
                                rows * chunk_k * hw.value_bytes,
                                f"{rows} activation rows of tile_k={chunk_k}")
        if rows * cols * acc > ocap:
            raise _buffer_error("out_buffer_kib", hw.out_buffer_kib, rows * cols * acc,
                                f"a {rows}x{cols} accumulator tile")
        tm = min(tm, -(-m // rows) * rows)
        tn = min(tn, -(-n // cols) * cols)
        while tm * tn * acc > ocap:  # shrink the larger side until the accumulators fit
            if tn >= tm and tn > cols:
                tn -= cols
            elif tm > rows:
                tm -= rows
            else:
                tn -= cols
        return tm, tn

    def pipeline_fill(self, hw):
        # The operand-select stage is in the datapath of a sparse design even for dense runs.
        return (select_depth(hw) + MULTIPLIER_STAGES + ACCUMULATOR_STAGES
                + math.ceil(math.log2(hw.dot_width)))

    def step_cycles(self, hw, tm, tn, kept, last, final):
        return (-(-tm // hw.array_rows)) * (-(-tn // hw.array_cols)) * (
            -(-kept // hw.dot_width))

    def operand_cycles(self, hw, tm, tn, width, kept, meta_bits):
        return operand_delivery_cycles(hw, tm, tn, width, kept, meta_bits)


class SystolicMapper(Mapper):
    """An ``R x C`` systolic array (SCALE-Sim v3 fold accounting, checked against SCALE-Sim
    3.0.0's compute cycles by scripts/scalesim_parity.py); one subclass per dataflow. The
    GEMM's very last step is one cycle shorter: SCALE-Sim reports ``folds x fold_cycles - 1``
    (the index of the cycle that writes the last output, counted from 0)."""

    preload = True  # the stationary operand is loaded before a fold streams (R cycles)

    def fold_cycles(self, rows: int, cols: int, temporal: int) -> int:
        """Cycles of one fold streaming ``temporal`` rows through the skewed array
        (R + C + T - 2), after the preload: ``2R + C + T - 2`` on WS and IS, ``R + C + T - 2``
        on OS."""
        return (rows if self.preload else 0) + rows + cols + temporal - 2

    def folds(self, hw: HardwareConfig, m: int, n: int, k: int, info: WeightInfo
              ) -> tuple[int, int, int]:
        """(S_R, S_C, folds of one pass over S_R x S_C), for SCALE-Sim's mapping efficiency
        S_R x S_C / (folds x R x C); S_R counts stored weights."""
        raise NotImplementedError

    def tile_order(self, hw, m, n, tiling):
        order_m, order_n = super().tile_order(hw, m, n, tiling)
        if hw.num_cores == 1:
            order_m, order_n = _edge_tiles_last(order_m, order_n, m, n, tiling.tile_m,
                                                tiling.tile_n)
        return order_m, order_n


class OutputStationaryMapper(SystolicMapper):
    """OS: S_R = m, S_C = n, T = k'. An R x C output tile accumulates in place while k-chunks
    of ``tile_k`` stream through."""

    preload = False

    def tiling(self, hw, m, n, k, info, group, tile):
        rows, cols, chunk_k = hw.array_rows, hw.array_cols, hw.tile_k
        wcap, acap, ocap = _buffer_caps(hw)
        for field, need, cap in (
                ("weight_buffer_kib", cols * _weight_row_bytes(hw, k, chunk_k, info), wcap),
                ("act_buffer_kib", rows * chunk_k * hw.value_bytes, acap),
                ("out_buffer_kib", rows * cols * hw.accumulator_bytes, ocap)):
            if need > cap:
                raise _buffer_error(field, getattr(hw, field), need, f"a {rows}x{cols} tile")
        return Tiling(rows, cols, chunk_k)

    def step_cycles(self, hw, tm, tn, kept, last, final):
        """The chunk streams through; the fill and drain are paid on the tile's last step."""
        fill = self.fold_cycles(hw.array_rows, hw.array_cols, 0) if last else 0
        return kept + fill - (1 if final else 0)

    def folds(self, hw, m, n, k, info):
        return m, n, -(-m // hw.array_rows) * -(-n // hw.array_cols)


class StationaryMapper(SystolicMapper):
    """WS and IS: a fold holds R // N whole blocks (R dense rows when dense) of C rows of the
    stationary operand; the other operand streams, up to the rows the buffers hold."""

    held_field = streamed_field = ""

    def tiling(self, hw, m, n, k, info, group, tile):
        rows, cols, acc = hw.array_rows, hw.array_cols, hw.accumulator_bytes
        wcap, acap, ocap = _buffer_caps(hw)
        chunk_k = _stationary_chunk_k(hw, info.pattern)
        row_bytes = {"weight_buffer_kib": _weight_row_bytes(hw, k, chunk_k, info),
                     "act_buffer_kib": chunk_k * hw.value_bytes}
        caps = {"weight_buffer_kib": wcap, "act_buffer_kib": acap}
        held = cols * row_bytes[self.held_field]
        if held > caps[self.held_field]:
            raise _buffer_error(self.held_field, getattr(hw, self.held_field), held,
                                f"a {rows}x{cols} {hw.dataflow.upper()} fold")
        streamed_row = row_bytes[self.streamed_field]
        t_max = min(caps[self.streamed_field] // streamed_row, ocap // (cols * acc))
        if t_max < 1:
            raise _buffer_error(self.streamed_field, getattr(hw, self.streamed_field),
                                streamed_row, "one streamed row of a fold")
        return self._tile(cols, int(min(t_max, self._streamed(m, n))), chunk_k)

    def step_cycles(self, hw, tm, tn, kept, last, final):
        """ceil(kept / R) folds per step (kept > R only when a dense tail stores more than N
        weights of its block), streaming the tile's T rows."""
        folds = -(-kept // hw.array_rows)
        cycles = folds * self.fold_cycles(hw.array_rows, hw.array_cols, self._streamed(tm, tn))
        return cycles - (1 if final else 0)

    def folds(self, hw, m, n, k, info):
        p, rows = info.pattern, hw.array_rows
        stored = row_folds = 0
        for width, count in _chunk_widths(k, _stationary_chunk_k(hw, p)):
            kept = _chunk_cost(width, p, info.tail, hw.encoding)[0]
            stored += kept * count
            row_folds += -(-kept // rows) * count
        spatial_cols = self._spatial(m, n)
        return stored, spatial_cols, row_folds * -(-spatial_cols // hw.array_cols)

    def _streamed(self, m: int, n: int) -> int:
        """T: the extent of the streamed operand."""
        raise NotImplementedError

    def _spatial(self, m: int, n: int) -> int:
        """S_C: the extent of the stationary operand across the columns."""
        raise NotImplementedError

    def _tile(self, cols: int, temporal: int, chunk_k: int) -> Tiling:
        raise NotImplementedError


class WeightStationaryMapper(StationaryMapper):
    """WS: S_R = k', S_C = n, T = m: C weight rows stationary, activation rows streamed."""

    held_field, streamed_field = "weight_buffer_kib", "act_buffer_kib"

    def _streamed(self, m, n):
        return m

    def _spatial(self, m, n):
        return n

    def _tile(self, cols, temporal, chunk_k):
        return Tiling(temporal, cols, chunk_k)


class InputStationaryMapper(StationaryMapper):
    """IS: S_R = k', S_C = m, T = n: C activation rows stationary, weight rows streamed."""

    held_field, streamed_field = "act_buffer_kib", "weight_buffer_kib"

    def _streamed(self, m, n):
        return n

    def _spatial(self, m, n):
        return m

    def _tile(self, cols, temporal, chunk_k):
        return Tiling(cols, temporal, chunk_k)


# Compute template (and systolic dataflow) -> its mapper: the one place a template is added.
MAPPERS: dict[tuple[str, str | None], Mapper] = {
    ("tensor_core", None): TensorCoreMapper(),
    ("systolic", "ws"): WeightStationaryMapper(),
    ("systolic", "is"): InputStationaryMapper(),
    ("systolic", "os"): OutputStationaryMapper(),
}


def mapper_for(hw: HardwareConfig) -> Mapper:
    """The mapper of ``hw``'s compute template (the dataflow matters on a systolic array)."""
    return MAPPERS[(hw.template, hw.dataflow if hw.template == "systolic" else None)]


@dataclass(frozen=True)
class _Wave:
    """The tiles of one wave that its steps' cost depends on."""

    max_tm: int  # largest tile of the wave (the slowest core)
    max_tn: int
    sum_m: float  # rows of the wave's distinct activation chunks
    sum_n: float  # rows of the wave's distinct weight chunks
    ni: np.ndarray  # n-tile index of each tile
    u_n: np.ndarray  # distinct n-tiles (their weight chunks are fetched once)
    tm_eff: np.ndarray  # m extent of each tile
    area: float  # output elements of the wave
    out_bytes: float  # bytes its outputs write back
    final: bool  # the GEMM's last wave


class _ScheduleBuilder:
    """The shared wave/step emitter: walks the waves of a tiling and lists each one's steps
    (run-length compressed), with the DRAM bytes by class and the MACs they add up to."""

    def __init__(self, hw: HardwareConfig, mapper: Mapper, info: WeightInfo,
                 shape: tuple[int, int, int], tiling: Tiling, group: int):
        self.hw, self.mapper, self.info, self.tiling = hw, mapper, info, tiling
        self.m, self.n, k = shape
        self.m_tiles, self.n_tiles = -(-self.m // tiling.tile_m), -(-self.n // tiling.tile_n)
        self.tiles = group * self.m_tiles * self.n_tiles
        self.waves = -(-self.tiles // hw.num_cores)
        self.chunks = _chunk_widths(k, tiling.chunk_k)
        self.n_chunks = sum(c for _, c in self.chunks)
        p = info.pattern
        self.chunk_costs = [_chunk_cost(w, p, info.tail, hw.encoding) for w, _ in self.chunks]
        decoder = None if p is None else decoder_model(hw.decoder_kind)
        self.decoder = decoder
        self.dec_rate = 0.0 if decoder is None else decoder.blocks_per_cycle(p) * hw.num_decoders
        self.chip_macs = hw.num_cores * hw.macs_per_cycle_per_core
        self.pipe_fill = mapper.pipeline_fill(hw)
        self.salient = self._salient_counts()
        self.bytes_by_class = {"values": 0.0, "metadata": 0.0, "activations": 0.0,
                               "outputs": 0.0, "salient": 0.0}
        self.kept_macs = 0.0
        self.salient_macs = 0.0
        self.waves_out: list[list] = []

    def _salient_counts(self) -> np.ndarray | None:
        """Side-car entries per (n-tile, k-chunk); the last chunk takes the k tail."""
        info = self.info
        if info.salient_rows_cols is None:
            return None
        if self.hw.salient_lanes < 1:
            raise ValueError(f"salient_lanes is 0: hardware '{self.hw.name}' cannot run the "
                             f"salient side-car of '{info.name or 'weight'}'")
        r, c = info.salient_rows_cols
        n_chunks = self.n_chunks
        cell = (r // self.tiling.tile_n) * n_chunks + np.minimum(c // self.tiling.chunk_k,
                                                                   n_chunks - 1)
        return np.bincount(cell, minlength=self.n_tiles * n_chunks).reshape(self.n_tiles,
                                                                             n_chunks)

    def build(self) -> Mapping:
        tiling, cores = self.tiling, self.hw.num_cores
        order_m, order_n = self.mapper.tile_order(self.hw, self.m, self.n, tiling)
        # One tile per wave and no side-car: a wave whose tile has the shape of the last one's
        # repeats it (same steps and traffic), without rebuilding its steps.
        single = cores == 1 and self.salient is None
        if single:
            shapes = list(zip(np.minimum(tiling.tile_m, self.m - order_m * tiling.tile_m).tolist(),
                              np.minimum(tiling.tile_n, self.n - order_n * tiling.tile_n).tolist()))
        repeat_key = repeat_delta = None
        all_ids = np.arange(self.tiles)
        for w in range(self.waves):
            key = (shapes[w % (self.m_tiles * self.n_tiles)], w == self.waves - 1) \
                if single else None
            if key is not None and key == repeat_key:
                self._repeat_last_wave(repeat_delta)
                continue
            before = (dict(self.bytes_by_class), self.kept_macs)
            wave = self._wave(all_ids[w * cores:(w + 1) * cores], order_m, order_n,
                              w == self.waves - 1)
            self._append_wave(self._wave_steps(wave))
            self.bytes_by_class["outputs"] += wave.out_bytes
            repeat_key = key
            repeat_delta = ({name: self.bytes_by_class[name] - before[0][name]
                             for name in self.bytes_by_class}, self.kept_macs - before[1])
        return Mapping(tile_m=tiling.tile_m, tile_n=tiling.tile_n, chunk_k=tiling.chunk_k,
                       waves=self.waves, schedule=[tuple(x) for x in self.waves_out],
                       bytes_by_class=self.bytes_by_class, kept_macs=self.kept_macs,
                       salient_macs=self.salient_macs)

    def _repeat_last_wave(self, delta: tuple[dict, float]) -> None:
        self.waves_out[-1][1] += 1
        for name, inc in delta[0].items():
            self.bytes_by_class[name] += inc
        self.kept_macs += delta[1]

    def _append_wave(self, steps: tuple) -> None:
        if self.waves_out and self.waves_out[-1][0] == steps:
            self.waves_out[-1][1] += 1
        else:
            self.waves_out.append([steps, 1])

    def _wave(self, ids: np.ndarray, order_m: np.ndarray, order_n: np.ndarray,
              final: bool) -> _Wave:
        """The tiles ``ids`` (issue positions, all instances) as one wave."""
        tile_m, tile_n, m, n = self.tiling.tile_m, self.tiling.tile_n, self.m, self.n
        per_instance = self.m_tiles * self.n_tiles
        instance, local = ids // per_instance, ids % per_instance
        mi, ni = order_m[local], order_n[local]
        tm_eff = np.minimum(tile_m, m - mi * tile_m)
        tn_eff = np.minimum(tile_n, n - ni * tile_n)
        u_m = np.unique(instance * self.m_tiles + mi) % self.m_tiles  # distinct operand chunks
        u_n = np.unique(instance * self.n_tiles + ni) % self.n_tiles
        return _Wave(max_tm=int(tm_eff.max()), max_tn=int(tn_eff.max()),
                     sum_m=float(np.minimum(tile_m, m - u_m * tile_m).sum()),
                     sum_n=float(np.minimum(tile_n, n - u_n * tile_n).sum()),
                     ni=ni, u_n=u_n, tm_eff=tm_eff, area=float((tm_eff * tn_eff).sum()),
                     out_bytes=float((tm_eff * tn_eff).sum()) * self.hw.value_bytes,
                     final=final)

    def _wave_steps(self, wave: _Wave) -> tuple:
        """((Step, repeat), ...) of one wave: every k-chunk, equal ones merged."""
        runs: list[list] = []
        start, n_chunks = 0, self.n_chunks
        for (width, count), cost in zip(self.chunks, self.chunk_costs):
            if self.salient is not None:  # irregular side-car: every chunk is its own step
                for index in range(start, start + count):
                    self._add(runs, wave, index, width, cost, 1)
            else:  # equal chunks: the first and the last differ (fill, write-back)
                index, stop = start, start + count
                if index == 0:
                    self._add(runs, wave, 0, width, cost, 1)
                    index = 1
                middle = stop - index - (1 if stop == n_chunks else 0)
                if middle > 0:
                    self._add(runs, wave, index, width, cost, middle)
                    index += middle
                if index < stop:
                    self._add(runs, wave, index, width, cost, 1)
            start += count
        return tuple((s, c) for s, c in runs)

    def _add(self, runs: list, wave: _Wave, chunk_index: int, width: int, cost: tuple,
             repeat: int) -> None:
        """Append ``repeat`` equal steps of chunk ``chunk_index`` (and count their traffic)."""
        hw, vb = self.hw, self.hw.value_bytes
        kept, meta_bits, blocks = cost
        last = chunk_index == self.n_chunks - 1
        first = chunk_index == 0
        mac = float(self.mapper.step_cycles(hw, wave.max_tm, wave.max_tn, kept, last,
                                            last and wave.final)) + (
            self.pipe_fill if first else 0.0)
        dec = 0.0
        if self.decoder is not None and blocks and math.isfinite(self.dec_rate):
            dec = float(math.ceil(wave.max_tn * blocks / self.dec_rate))
        vals = wave.sum_n * kept * vb
        meta = wave.sum_n * meta_bits / 8
        acts = wave.sum_m * width * vb
        sal_cycles, sal_bytes = self._salient_step(wave, chunk_index, repeat)
        step = Step(mac_cycles=mac, useful_cycles=wave.area * kept / self.chip_macs,
                    salient_cycles=sal_cycles, decode_cycles=dec,
                    load_bytes=vals + meta + acts + sal_bytes,
                    writeback_bytes=wave.out_bytes if last else 0.0, wave_start=first,
                    operand_cycles=self.mapper.operand_cycles(hw, wave.max_tm, wave.max_tn,
                                                              width, kept, meta_bits))
        counts = self.bytes_by_class
        counts["activations" if self.info.activation_operand else "values"] += vals * repeat
        counts["metadata"] += meta * repeat
        counts["activations"] += acts * repeat
        counts["salient"] += sal_bytes * repeat
        self.kept_macs += wave.area * kept * repeat
        if runs and runs[-1][0] == step:
            runs[-1][1] += repeat
        else:
            runs.append([step, repeat])

    def _salient_step(self, wave: _Wave, chunk_index: int, repeat: int) -> tuple[float, float]:
        """(lane cycles, DRAM bytes) of the side-car entries of one step; counts their MACs."""
        if self.salient is None:
            return 0.0, 0.0
        counts = self.salient[wave.ni, chunk_index] * wave.tm_eff
        cycles = float(math.ceil(float(counts.max()) / self.hw.salient_lanes))
        nbytes = float(self.salient[wave.u_n, chunk_index].sum()) * \
            self.info.salient_bytes_per_nnz
        self.salient_macs += float(counts.sum()) * repeat
        return cycles, nbytes


def build_mapping(hw: HardwareConfig, m: int, n: int, k: int, info: WeightInfo,
                  group: int = 1, tile: tuple[int, int] | None = None) -> Mapping:
    """Tile the GEMM for ``hw`` and list its wave-steps (run-length compressed). ``group``
    independent instances of the GEMM (own operands each) share the waves. ``tile``: a library
    tile (tensor-core template, see :func:`library_tile_fits`) instead of the largest one."""
    mapper = mapper_for(hw)
    tiling = mapper.tiling(hw, m, n, k, info, group, tile)
    return _ScheduleBuilder(hw, mapper, info, (m, n, k), tiling, group).build()


def _edge_tiles_last(order_m: np.ndarray, order_n: np.ndarray, m: int, n: int, tile_m: int,
                     tile_n: int) -> tuple[np.ndarray, np.ndarray]:
    """One core runs its tiles one at a time, each with its own operands, so their order
    changes no traffic: run the full tiles first and the partial edge tiles after them, so that
    equal tiles are consecutive and the pipeline sees a few long periodic runs."""
    edge = ((order_m + 1) * tile_m > m).astype(int) * 2 + ((order_n + 1) * tile_n > n)
    keep = np.argsort(edge, kind="stable")
    return order_m[keep], order_n[keep]


def tile_order(m_tiles: int, n_tiles: int, cores: int) -> tuple[np.ndarray, np.ndarray]:
    """(m index, n index) of the tiles in issue order: swizzled in column groups about
    sqrt(cores) tiles wide, so that a wave covers a near-square patch of the output and fetches
    about 2 sqrt(cores) operand chunks instead of 1 + cores (threadblock rasterization, as GPU
    GEMM libraries do)."""
    width = max(1, min(n_tiles, round(math.sqrt(cores))))
    groups = -(-n_tiles // width)
    gi, mi, wi = np.meshgrid(np.arange(groups), np.arange(m_tiles), np.arange(width),
                             indexing="ij")
    ni = gi * width + wi
    keep = ni < n_tiles
    return mi[keep].reshape(-1), ni[keep].reshape(-1)


def select_depth(hw: HardwareConfig) -> int:
    """Levels of the operand-select mux tree, ceil(log2 inputs): the pipeline fill's select
    stages and the select latency of a step; 0 on a design without sparse support."""
    return math.ceil(math.log2(mux_inputs(hw))) if hw.is_sparse else 0


def mux_inputs(hw: HardwareConfig, pattern: Pattern | None = None) -> int:
    """Inputs of one operand mux: M:1 (``full``) or (M-N+1):1 (``sorted``), sized for the widest
    supported pattern (a flexible datapath must serve all of them)."""
    patterns = hw.supported if pattern is None else (pattern,)
    if not patterns:
        return 1
    if hw.mux_style == "full":
        return max(p.m for p in patterns)
    return max(p.m - p.n + 1 for p in patterns)
