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
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from compression.formats import NMTensor, Pattern, SparseWeight

from .config import HardwareConfig
from .decoders import decoder_model


@dataclass(frozen=True)
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
    return WeightInfo(weight.bulk.pattern, weight.bulk.tail, coords, per_nnz, name)


def synthetic_salient(shape: tuple[int, int], salient: str | Pattern, value_bytes: int = 2
                      ) -> tuple[tuple[np.ndarray, np.ndarray], float]:
    """Coordinates of a uniform structured side-car (N evenly spaced entries in every group of
    M, as spread as real outliers are on average), and bytes per entry (value + index offset of
    ceil(log2 M) bits) - used when no real side-car is given."""
    p = Pattern.parse(salient)
    rows, cols = shape
    blocks = -(-cols // p.m)
    starts = np.arange(blocks) * p.m
    offsets = (np.arange(p.n) * p.m) // p.n
    col = (starts[:, None] + offsets[None, :]).reshape(-1)
    col = col[col < cols]
    r = np.repeat(np.arange(rows), len(col))
    c = np.tile(col, rows)
    return (r, c), value_bytes + p.index_bits / 8


@dataclass
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


def systolic_fold_cycles(rows: int, cols: int, temporal: int, dataflow: str) -> int:
    """Cycles of one SCALE-Sim fold of an ``rows x cols`` array streaming ``temporal`` rows.

    WS and IS preload the stationary operand (R cycles), stream T rows through the skewed
    array (R + C + T - 2): ``2R + C + T - 2``. OS has no preload: ``R + C + T - 2``. Checked
    against SCALE-Sim 3.0.0's compute cycles (scripts/scalesim_parity.py)."""
    preload = 0 if dataflow == "os" else rows
    return preload + rows + cols + temporal - 2


def systolic_step_cycles(dataflow: str, rows: int, cols: int, tm: int, tn: int, kept: int,
                         last: bool, final: bool) -> int:
    """Array cycles of one step (a k-chunk of a ``tm x tn`` output tile with ``kept`` stored
    weights per row). WS (T = tm) and IS (T = tn) run ceil(kept / R) folds per step; kept > R
    only when a dense tail stores more than N weights of its block. OS streams the chunk and
    pays its fill and drain on the tile's last step. The GEMM's very last step (``final``) is
    one cycle shorter: SCALE-Sim reports ``folds x fold_cycles - 1`` (the index of the cycle
    that writes the last output, counted from 0)."""
    if dataflow == "os":
        cycles = kept + (systolic_fold_cycles(rows, cols, 0, "os") if last else 0)
    else:
        temporal = tm if dataflow == "ws" else tn
        cycles = (-(-kept // rows)) * systolic_fold_cycles(rows, cols, temporal, dataflow)
    return cycles - (1 if final else 0)


def _stationary_chunk_k(hw: HardwareConfig, p: Pattern | None) -> int:
    """Dense k of one WS/IS fold: R rows dense, R // N whole blocks on N:M."""
    rows = hw.array_rows
    per_fold_blocks = rows if p is None else rows // p.n
    if per_fold_blocks < 1:
        raise ValueError(f"array_rows={rows} is smaller than N={p.n} of {p}: a "
                         f"{hw.dataflow.upper()} fold must hold at least one block")
    return per_fold_blocks if p is None else per_fold_blocks * p.m


def systolic_folds(hw: HardwareConfig, m: int, n: int, k: int, info: WeightInfo
                   ) -> tuple[int, int, int]:
    """(S_R, S_C, folds of one pass over S_R x S_C) of a GEMM on a systolic design, for
    SCALE-Sim's mapping efficiency S_R x S_C / (folds x R x C); S_R counts stored weights."""
    rows, cols = hw.array_rows, hw.array_cols
    if hw.dataflow == "os":
        return m, n, -(-m // rows) * -(-n // cols)
    p = info.pattern
    chunk_k = _stationary_chunk_k(hw, p)
    stored = row_folds = 0
    for width, count in _chunk_widths(k, chunk_k):
        kept = _chunk_cost(width, p, info.tail, hw.encoding)[0]
        stored += kept * count
        row_folds += -(-kept // rows) * count
    spatial_cols = n if hw.dataflow == "ws" else m
    return stored, spatial_cols, row_folds * -(-spatial_cols // cols)


def _systolic_tiles(hw: HardwareConfig, m: int, n: int, p: Pattern | None,
                    weight_row_bytes) -> tuple[int, int, int]:
    """(tile_m, tile_n, chunk_k) of a systolic array, per dataflow (S_R x S_C spatial, T
    streamed; SCALE-Sim's definitions):

    * WS: S_R = k', S_C = n, T = m. A fold holds R // N whole blocks (R dense rows when
      dense) of C weight rows; the activations stream up to the m the buffers hold.
    * IS: S_R = k', S_C = m, T = n. A fold holds the activations of R // N blocks of C
      tokens; the weights stream up to the n the buffers hold.
    * OS: S_R = m, S_C = n, T = k'. An R x C output tile accumulates in place while k-chunks
      of ``tile_k`` stream through.
    """
    rows, cols = hw.array_rows, hw.array_cols
    slots, vb, acc = hw.input_stages, hw.value_bytes, hw.accumulator_bytes
    wcap = hw.weight_buffer_kib * 1024 / slots
    acap = hw.act_buffer_kib * 1024 / slots
    ocap = hw.out_buffer_kib * 1024 / hw.output_stages
    if hw.dataflow == "os":
        chunk_k = hw.tile_k
        for field, need, cap in (("weight_buffer_kib", cols * weight_row_bytes(chunk_k), wcap),
                                 ("act_buffer_kib", rows * chunk_k * vb, acap),
                                 ("out_buffer_kib", rows * cols * acc, ocap)):
            if need > cap:
                raise _buffer_error(field, getattr(hw, field), need, f"a {rows}x{cols} tile")
        return rows, cols, chunk_k
    chunk_k = _stationary_chunk_k(hw, p)
    w_row, a_row = weight_row_bytes(chunk_k), chunk_k * vb
    if hw.dataflow == "ws":  # C weight rows stationary, activation rows streamed
        held, held_cap, held_field, streamed_row, streamed_cap, streamed_field, total = (
            cols * w_row, wcap, "weight_buffer_kib", a_row, acap, "act_buffer_kib", m)
    else:  # IS: C activation rows stationary, weight rows streamed
        held, held_cap, held_field, streamed_row, streamed_cap, streamed_field, total = (
            cols * a_row, acap, "act_buffer_kib", w_row, wcap, "weight_buffer_kib", n)
    if held > held_cap:
        raise _buffer_error(held_field, getattr(hw, held_field), held,
                            f"a {rows}x{cols} {hw.dataflow.upper()} fold")
    t_max = min(streamed_cap // streamed_row, ocap // (cols * acc))
    if t_max < 1:
        raise _buffer_error(streamed_field, getattr(hw, streamed_field), streamed_row,
                            "one streamed row of a fold")
    temporal = int(min(t_max, total))
    return (temporal, cols, chunk_k) if hw.dataflow == "ws" else (cols, temporal, chunk_k)


def build_mapping(hw: HardwareConfig, m: int, n: int, k: int, info: WeightInfo,
                  group: int = 1, tile: tuple[int, int] | None = None) -> Mapping:
    """Tile the GEMM for ``hw`` and list its wave-steps (run-length compressed). ``group``
    independent instances of the GEMM (own operands each) share the waves. ``tile``: a library
    tile (tensor-core template, see :func:`library_tile_fits`) instead of the largest one."""
    p = info.pattern
    slots = hw.input_stages
    vb, acc = hw.value_bytes, hw.accumulator_bytes
    enc = hw.encoding
    rows, cols = hw.array_rows, hw.array_cols
    wcap = hw.weight_buffer_kib * 1024 / slots
    acap = hw.act_buffer_kib * 1024 / slots
    ocap = hw.out_buffer_kib * 1024 / hw.output_stages

    def weight_row_bytes(chunk_k: int) -> float:
        return _weight_row_bytes(hw, k, chunk_k, info)

    if hw.template == "systolic":
        tile_m, tile_n, chunk_k = _systolic_tiles(hw, m, n, p, weight_row_bytes)
    elif tile is not None:
        chunk_k = hw.tile_k
        if not library_tile_fits(hw, tile, k, info):
            raise ValueError(f"library tile {tile[0]}x{tile[1]} does not fit hardware "
                             f"'{hw.name}' (weight_buffer_kib + act_buffer_kib, out_buffer_kib)")
        tile_m, tile_n = tile
    else:
        chunk_k = hw.tile_k
        tn = _round_down(wcap / weight_row_bytes(chunk_k), cols)
        tm = _round_down(acap / (chunk_k * vb), rows)
        if tn < cols:
            raise _buffer_error("weight_buffer_kib", hw.weight_buffer_kib,
                                cols * weight_row_bytes(chunk_k), f"{cols} weight rows of "
                                f"tile_k={chunk_k}")
        if tm < rows:
            raise _buffer_error("act_buffer_kib", hw.act_buffer_kib, rows * chunk_k * vb,
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
        if group * -(-m // tm) * -(-n // tn) < hw.num_cores:
            tm, tn = _fill_the_cores(m, n, tm, tn, rows, cols, group, hw.num_cores)
        tile_m, tile_n = tm, tn

    m_tiles, n_tiles = -(-m // tile_m), -(-n // tile_n)
    tiles = group * m_tiles * n_tiles
    cores = hw.num_cores
    waves = -(-tiles // cores)
    chunks = _chunk_widths(k, chunk_k)
    n_chunks = sum(c for _, c in chunks)
    chunk_costs = [_chunk_cost(w, p, info.tail, enc) for w, _ in chunks]

    decoder = None if p is None else decoder_model(hw.decoder_kind)
    dec_rate = 0.0 if decoder is None else decoder.blocks_per_cycle(p) * hw.num_decoders
    chip_macs = cores * hw.macs_per_cycle_per_core
    pipe_fill = 0.0
    if hw.template == "tensor_core":
        # The operand-select stage is in the datapath of a sparse design even for dense runs.
        select_depth = math.ceil(math.log2(mux_inputs(hw))) if hw.is_sparse else 0
        pipe_fill = select_depth + 2 + math.ceil(math.log2(hw.dot_width))

    # Salient side-car: nnz per (n-tile, k-chunk); chunk index of the last chunk is n_chunks-1.
    sal = None
    if info.salient_rows_cols is not None:
        if hw.salient_lanes < 1:
            raise ValueError(f"salient_lanes is 0: hardware '{hw.name}' cannot run the salient "
                             f"side-car of '{info.name or 'weight'}'")
        r, c = info.salient_rows_cols
        cell = (r // tile_n) * n_chunks + np.minimum(c // chunk_k, n_chunks - 1)
        sal = np.bincount(cell, minlength=n_tiles * n_chunks).reshape(n_tiles, n_chunks)

    def tile_mac_cycles(tm, tn, kept, last, final):
        if hw.template == "tensor_core":
            return (-(-tm // rows)) * (-(-tn // cols)) * (-(-kept // hw.dot_width))
        return systolic_step_cycles(hw.dataflow, rows, cols, tm, tn, kept, last, final)

    bytes_by_class = {"values": 0.0, "metadata": 0.0, "activations": 0.0, "outputs": 0.0,
                      "salient": 0.0}
    waves_out = []
    kept_macs = 0.0
    salient_macs = 0.0
    order_m, order_n = tile_order(m_tiles, n_tiles, cores)
    if hw.template == "systolic" and cores == 1:
        order_m, order_n = _edge_tiles_last(order_m, order_n, m, n, tile_m, tile_n)
    all_ids = np.arange(tiles)
    # One tile per wave and no side-car: a wave whose tile has the shape of the last one's
    # repeats it (same steps and traffic), without rebuilding its steps.
    single = cores == 1 and sal is None
    if single:
        shapes = list(zip(np.minimum(tile_m, m - order_m * tile_m).tolist(),
                          np.minimum(tile_n, n - order_n * tile_n).tolist()))
    repeat_key = repeat_delta = None
    for w in range(waves):
        key = (shapes[w % (m_tiles * n_tiles)], w == waves - 1) if single else None
        if key is not None and key == repeat_key:
            waves_out[-1][1] += 1
            for name, inc in repeat_delta[0].items():
                bytes_by_class[name] += inc
            kept_macs += repeat_delta[1]
            continue
        before = (dict(bytes_by_class), kept_macs)
        ids = all_ids[w * cores:(w + 1) * cores]
        instance, local = ids // (m_tiles * n_tiles), ids % (m_tiles * n_tiles)
        mi, ni = order_m[local], order_n[local]
        tm_eff = np.minimum(tile_m, m - mi * tile_m)
        tn_eff = np.minimum(tile_n, n - ni * tile_n)
        u_m = np.unique(instance * m_tiles + mi) % m_tiles  # distinct operand chunks
        u_n = np.unique(instance * n_tiles + ni) % n_tiles
        sum_m_unique = float(np.minimum(tile_m, m - u_m * tile_m).sum())
        sum_n_unique = float(np.minimum(tile_n, n - u_n * tile_n).sum())
        out_bytes = float((tm_eff * tn_eff).sum()) * vb
        max_tm = int(tm_eff.max())
        max_tn = int(tn_eff.max())
        area = float((tm_eff * tn_eff).sum())
        runs: list[list] = []
        wave = {"max_tm": max_tm, "max_tn": max_tn, "sum_n": sum_n_unique, "sum_m": sum_m_unique,
                "ni": ni, "u_n": u_n, "tm_eff": tm_eff, "area": area, "out": out_bytes,
                "runs": runs, "final": w == waves - 1}

        def add(wave, chunk_index, width, kept, meta_bits, blocks, repeat):
            """Append ``repeat`` equal steps of chunk ``chunk_index`` (and its traffic)."""
            nonlocal kept_macs, salient_macs
            max_tm, max_tn, area = wave["max_tm"], wave["max_tn"], wave["area"]
            sum_n_unique, sum_m_unique, runs = wave["sum_n"], wave["sum_m"], wave["runs"]
            last = chunk_index == n_chunks - 1
            first = chunk_index == 0
            final = last and wave["final"]
            mac = float(tile_mac_cycles(max_tm, max_tn, kept, last, final)) + (
                pipe_fill if first else 0.0)
            dec = 0.0
            if decoder is not None and blocks and math.isfinite(dec_rate):
                dec = float(math.ceil(max_tn * blocks / dec_rate))
            vals = sum_n_unique * kept * vb
            meta = sum_n_unique * meta_bits / 8
            acts = sum_m_unique * width * vb
            sal_cycles = sal_bytes = 0.0
            if sal is not None:
                counts = sal[wave["ni"], chunk_index] * wave["tm_eff"]
                sal_cycles = float(math.ceil(float(counts.max()) / hw.salient_lanes))
                sal_bytes = float(sal[wave["u_n"], chunk_index].sum()) * \
                    info.salient_bytes_per_nnz
                salient_macs += float(counts.sum()) * repeat
            operand = (operand_delivery_cycles(hw, max_tm, max_tn, width, kept, meta_bits)
                       if hw.template == "tensor_core" else 0.0)
            step = Step(mac, area * kept / chip_macs, sal_cycles, dec,
                        vals + meta + acts + sal_bytes, wave["out"] if last else 0.0, first,
                        operand)
            bytes_by_class["activations" if info.activation_operand else "values"] += \
                vals * repeat
            bytes_by_class["metadata"] += meta * repeat
            bytes_by_class["activations"] += acts * repeat
            bytes_by_class["salient"] += sal_bytes * repeat
            kept_macs += area * kept * repeat
            if runs and runs[-1][0] == step:
                runs[-1][1] += repeat
            else:
                runs.append([step, repeat])

        start = 0
        for (width, count), cost in zip(chunks, chunk_costs):
            if sal is not None:  # irregular side-car: every chunk is its own step
                for index in range(start, start + count):
                    add(wave, index, width, *cost, 1)
            else:  # equal chunks: the first and the last differ (fill, write-back)
                index, stop = start, start + count
                if index == 0:
                    add(wave, 0, width, *cost, 1)
                    index = 1
                middle = stop - index - (1 if stop == n_chunks else 0)
                if middle > 0:
                    add(wave, index, width, *cost, middle)
                    index += middle
                if index < stop:
                    add(wave, index, width, *cost, 1)
            start += count
        bytes_by_class["outputs"] += out_bytes
        steps = tuple((s, c) for s, c in runs)
        if waves_out and waves_out[-1][0] == steps:
            waves_out[-1][1] += 1
        else:
            waves_out.append([steps, 1])
        repeat_key = key
        repeat_delta = ({name: bytes_by_class[name] - before[0][name] for name in bytes_by_class},
                        kept_macs - before[1])
    return Mapping(tile_m, tile_n, chunk_k, waves, [tuple(x) for x in waves_out],
                   bytes_by_class, kept_macs, salient_macs)


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


def mux_inputs(hw: HardwareConfig, pattern: Pattern | None = None) -> int:
    """Inputs of one operand mux: M:1 (``full``) or (M-N+1):1 (``sorted``), sized for the widest
    supported pattern (a flexible datapath must serve all of them)."""
    patterns = hw.supported if pattern is None else (pattern,)
    if not patterns:
        return 1
    if hw.mux_style == "full":
        return max(p.m for p in patterns)
    return max(p.m - p.n + 1 for p in patterns)
