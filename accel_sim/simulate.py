"""Simulate GEMMs and whole workloads on a :class:`~accel_sim.config.HardwareConfig`.

``simulate_gemm`` maps one GEMM (:mod:`accel_sim.mapping`), runs its steps through the simpy
pipeline (:mod:`accel_sim.pipeline`) and reports cycles, stalls by cause, DRAM bytes by class,
utilization and dense-equivalent TFLOP/s, with an analytical roofline + fill/drain estimate beside
it as a cross-check. ``simulate_workload`` does this for a GEMM list (identical GEMMs are simulated
once) and adds the area breakdown.

Weights: a GEMM with a ``weight_name`` runs at the hardware's pattern, or - when ``weights`` maps
that name to a real :class:`~compression.formats.NMTensor` / ``SparseWeight`` - at the tensor's own
pattern and tail, with its salient side-car's actual per-tile counts. Activation-activation GEMMs
(``weight_name`` None) run dense.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

from compression.formats import Pattern

from .area import area_breakdown
from .config import HardwareConfig, load_hardware
from .decoders import decoder_model
from .mapping import (
    WeightInfo,
    build_mapping,
    library_tile_fits,
    select_depth,
    synthetic_salient,
    weight_info,
)
from .pipeline import run_pipeline

STALL_CAUSES = ("memory_bandwidth", "memory_latency", "decode", "operand_delivery", "compute",
                "salient", "launch", "partial_overlap")


@dataclass(kw_only=True)
class GemmResult:
    """One GEMM's simulation; per-run figures times ``count`` give the totals."""

    name: str
    m: int
    n: int
    k: int
    count: int
    weight_name: str | None
    pattern: str
    tile: tuple[int, int, int]
    waves: int
    cycles_per_run: float
    busy_cycles_per_run: float
    stall_per_run: dict
    dram_bytes_per_run: dict
    analytical_cycles_per_run: float
    clock_ghz: float
    simulated_steps: int
    skipped_steps: int
    wall_s: float
    array_macs_per_run: float = 0.0  # MACs the array performs (kept weights x m), not dense
    salient_macs_per_run: float = 0.0
    split_k: int = 1  # k-slices the GEMM was split into (1: none)
    kind: str = "gemm"  # or "elementwise": a memory-bound non-GEMM kernel (norm, rotary, ...)

    @property
    def total_cycles(self) -> float:
        return self.cycles_per_run * self.count

    @property
    def dense_flops(self) -> float:
        return 2.0 * self.m * self.n * self.k * self.count

    @property
    def effective_tflops(self) -> float:
        seconds = self.total_cycles / (self.clock_ghz * 1e9)
        return self.dense_flops / seconds / 1e12

    @property
    def utilization(self) -> float:
        return self.busy_cycles_per_run / self.cycles_per_run

    def to_dict(self) -> dict:
        c = self.count
        return {
            "name": self.name, "m": self.m, "n": self.n, "k": self.k, "count": c,
            "weight_name": self.weight_name, "pattern": self.pattern,
            "tile_m": self.tile[0], "tile_n": self.tile[1], "tile_k": self.tile[2],
            "split_k": self.split_k, "kind": self.kind, "waves": self.waves,
            "cycles_per_run": self.cycles_per_run,
            "total_cycles": self.total_cycles,
            "busy_cycles": self.busy_cycles_per_run * c,
            "stall_cycles": {k: v * c for k, v in self.stall_per_run.items()},
            "dram_bytes": {k: v * c for k, v in self.dram_bytes_per_run.items()},
            "analytical_cycles": self.analytical_cycles_per_run * c,
            "array_macs": self.array_macs_per_run * c,
            "salient_macs": self.salient_macs_per_run * c,
            "utilization": self.utilization,
            "effective_tflops": self.effective_tflops,
            "simulated_steps": self.simulated_steps,
            "skipped_steps": self.skipped_steps,
            "wall_s": self.wall_s,
        }


@dataclass(kw_only=True)
class WorkloadResult:
    """A whole GEMM list on one design, with its area."""

    hardware: HardwareConfig
    gemms: list[GemmResult]
    area: dict = field(default_factory=dict)
    wall_s: float = 0.0

    @property
    def total_cycles(self) -> float:
        return sum(g.total_cycles for g in self.gemms)

    def to_dict(self) -> dict:
        hw = self.hardware
        total = self.total_cycles
        stalls = {c: sum(g.stall_per_run[c] * g.count for g in self.gemms) for c in STALL_CAUSES}
        dram = {}
        for g in self.gemms:
            for key, value in g.dram_bytes_per_run.items():
                dram[key] = dram.get(key, 0.0) + value * g.count
        busy = sum(g.busy_cycles_per_run * g.count for g in self.gemms)
        flops = sum(g.dense_flops for g in self.gemms)
        seconds = total / (hw.run_clock_ghz * 1e9)
        return {
            "hardware": hw.name,
            "pattern": hw.pattern,
            "encoding": hw.encoding if hw.is_sparse else None,
            "decoder": hw.decoder_kind if hw.is_sparse else None,
            "clock_ghz": hw.clock_ghz,
            "run_clock_ghz": hw.run_clock_ghz,
            "total_cycles": total,
            "seconds": seconds,
            "busy_cycles": busy,
            "stall_cycles": stalls,
            "dominant_stall": max(stalls, key=stalls.get) if total else None,
            "dram_bytes": dram,
            "dram_bytes_total": sum(dram.values()),
            "utilization": busy / total if total else 0.0,
            "effective_tflops": flops / seconds / 1e12 if seconds else 0.0,
            "dense_peak_tflops": hw.dense_peak_tflops,
            "sparse_peak_tflops": hw.sparse_peak_tflops(),
            "area_mm2": self.area.get("total", 0.0),
            "area_breakdown_mm2": self.area,
            "tflops_per_mm2": (flops / seconds / 1e12 / self.area["total"]
                               if seconds and self.area.get("total") else 0.0),
            "analytical_cycles": sum(g.analytical_cycles_per_run * g.count for g in self.gemms),
            "simulated_steps": sum(g.simulated_steps for g in self.gemms),
            "skipped_steps": sum(g.skipped_steps for g in self.gemms),
            "wall_s": self.wall_s,
            "gemms": [g.to_dict() for g in self.gemms],
        }


def _resolve(hw: HardwareConfig, gemm, weight, salient: Pattern | None) -> WeightInfo:
    """The pattern and side-car a GEMM runs with on ``hw``."""
    if gemm.weight_name is None:
        return WeightInfo(None, activation_operand=True)
    if weight is not None:
        info = weight if isinstance(weight, WeightInfo) else weight_info(  # WeightInfo: a
            weight, (gemm.n, gemm.k), gemm.weight_name)  # pattern and tail without values
        if info.pattern is None:
            return info
        if info.pattern not in hw.supported:
            have = ", ".join(map(str, hw.supported)) or "dense only"
            raise ValueError(f"pattern {info.pattern} of '{gemm.weight_name}' is not supported "
                             f"by hardware '{hw.name}' (supports: {have})")
        if hw.tile_k % info.pattern.m:
            raise ValueError(f"tile_k {hw.tile_k} is not a multiple of M={info.pattern.m} of "
                             f"'{gemm.weight_name}'")
        return info
    pattern = hw.run_pattern
    if salient is not None and pattern is not None:
        coords, per_nnz = synthetic_salient((gemm.n, gemm.k), salient)
        return WeightInfo(pattern=pattern, tail="dense", salient_rows_cols=coords,
                          salient_bytes_per_nnz=per_nnz, name=gemm.weight_name)
    return WeightInfo(pattern)


def analytical_cycles(hw: HardwareConfig, mapping) -> float:
    """Roofline + fill, a lower bound of the simulated time: the slowest of the MAC array (fed by
    its operand delivery and salient lanes), the decoders and the DRAM loads, plus one DRAM
    latency; all DRAM traffic, write-backs included; or, when too few loads are in flight,
    Little's law (every step holds an input slot for at least one latency:
    ``steps x latency / slots``)."""
    compute = decode = loads = stores = steps = 0.0
    for wave_runs, wave_repeat in mapping.schedule:
        for step, repeat in wave_runs:
            n = repeat * wave_repeat
            steps += n
            compute += n * max(step.mac_cycles, step.operand_cycles, step.salient_cycles)
            decode += n * step.decode_cycles
            loads += n * step.load_bytes
            stores += n * step.writeback_bytes
    latency = hw.dram_latency_cycles
    per_cycle = hw.dram_bytes_per_cycle
    return max(max(compute, decode, loads / per_cycle) + latency,
               (loads + stores) / per_cycle, steps * latency / hw.input_stages)


@dataclass(kw_only=True)
class Candidate:
    """One way to run a GEMM: a tile (None: the largest that fits) and a split-K factor."""

    tile: tuple[int, int] | None
    split: int
    mapping: object
    extra_cycles: float  # split-K reduction traffic (whole group), on the DRAM channel
    launches: int  # kernels launched (the GEMM, plus a split-K reduction)

    def overhead(self, hw: HardwareConfig) -> float:
        return self.extra_cycles + self.launches * hw.launch_cycles

    def bound(self, hw: HardwareConfig) -> float:
        return analytical_cycles(hw, self.mapping) + self.overhead(hw)


def _split_factors(hw: HardwareConfig, k: int, info: WeightInfo, work: int) -> list[int]:
    """Split-K factors worth trying: 1, and powers of two up to ``max_split_k`` that cut k into
    equal slices of whole N:M blocks, at least one k-chunk each, while the tiles (``work``)
    fill at most two waves."""
    block = 1 if info.pattern is None else info.pattern.m
    out, s = [1], 2
    while s <= hw.max_split_k and work * s <= 2 * hw.num_cores:
        if k % s == 0 and (k // s) % block == 0 and k // s >= hw.tile_k:
            out.append(s)
        s *= 2
    return out


def gemm_candidates(hw: HardwareConfig, gemm, info: WeightInfo) -> list[Candidate]:
    """Every (library tile, split-K) way to run ``gemm`` on ``hw``; without ``library_tiles``
    (or on a systolic array) the one mapping of :func:`build_mapping`."""
    group = getattr(gemm, "group", 1)
    if hw.template != "tensor_core" or not hw.library_tiles:
        mapping = build_mapping(hw, gemm.m, gemm.n, gemm.k, info, group)
        return [Candidate(tile=None, split=1, mapping=mapping, extra_cycles=0.0, launches=1)]
    tiles = [t for t in hw.tile_shapes if library_tile_fits(hw, t, gemm.k, info)]
    if not tiles:
        raise ValueError(f"no tile of library_tiles ({', '.join(hw.library_tiles)}) fits "
                         f"hardware '{hw.name}' (weight_buffer_kib + act_buffer_kib, "
                         "out_buffer_kib)")
    out = []
    for tile in tiles:
        work = group * -(-gemm.m // tile[0]) * -(-gemm.n // tile[1])
        for split in _split_factors(hw, gemm.k, info, work):
            mapping = build_mapping(hw, gemm.m, gemm.n, gemm.k // split, info, group * split,
                                    tile)
            # fp32 partials written and read back, the result written once; the mapping
            # already wrote every slice's outputs at value width
            outputs = group * gemm.m * gemm.n
            extra = 0.0 if split == 1 else outputs * (
                2 * split * hw.accumulator_bytes + hw.value_bytes - split * hw.value_bytes
            ) / hw.dram_bytes_per_cycle
            out.append(Candidate(tile=tile, split=split, mapping=mapping, extra_cycles=extra,
                                 launches=1 + (split > 1)))
    return out


def run_candidate(hw: HardwareConfig, candidate: Candidate, info: WeightInfo,
                   steady_state: bool, memo: dict | None):
    p = info.pattern
    decode_latency = 0 if p is None else decoder_model(hw.decoder_kind).latency_cycles(
        p, hw.supported)
    select_latency = select_depth(hw)
    args = (tuple(candidate.mapping.schedule), hw.dram_bytes_per_cycle, hw.dram_latency_cycles,
            decode_latency, select_latency, hw.input_stages, hw.output_stages, steady_state)
    run = memo.get(args) if memo is not None else None
    if run is None:
        run = run_pipeline(*args[:-1], steady_state=steady_state)
        if memo is not None:
            memo[args] = run
    return run


# A candidate whose lower bound is within this fraction of the best simulated time is not
# simulated: the pick is within 5% of the fastest candidate (a library heuristic's margin),
# and a large GEMM's selection needs one or two simulations instead of all of them.
SELECTION_TOLERANCE = 0.05


def select_candidate(hw: HardwareConfig, candidates: list[Candidate], info: WeightInfo,
                     steady_state: bool = True, memo: dict | None = None,
                     tolerance: float = SELECTION_TOLERANCE):
    """(candidate, pipeline run) of the lowest simulated time, as a GEMM library picks its
    fastest kernel. Branch and bound: candidates are simulated in the order of their
    analytical lower bound (larger tiles first among equal bounds) until the next bound
    exceeds ``(1 - tolerance)`` x the best time found, so the pick is within ``tolerance`` of
    the best one simulating every candidate would give (exactly it with ``tolerance=0``)."""
    def order(i):
        tile = candidates[i].tile or (0, 0)
        return candidates[i].bound(hw), -tile[0] * tile[1], i
    best = None  # (total cycles, index, run)
    for i in sorted(range(len(candidates)), key=order):
        cand = candidates[i]
        if best is not None and cand.bound(hw) > best[0] * (1 - tolerance) * (1 + 1e-12):
            break
        run = run_candidate(hw, cand, info, steady_state, memo)
        total = run.cycles + cand.overhead(hw)
        if best is None or total < best[0]:
            best = (total, i, run)
    return candidates[best[1]], best[2]


def exposed_transfer_cycles(hw: HardwareConfig, busy_cycles: float,
                            bytes_by_class: dict) -> float:
    """Cycles a design with ``memory_compute_overlap`` < 1 adds to the pipeline's time: that
    share not hidden of the shorter of the array's busy time and the DRAM transfer time.

    The pipeline overlaps transfers and compute fully (a DMA engine beside the array); a CPU
    core issues its loads and its arithmetic from the same instruction stream, so part of
    the shorter one shows (the Execution-Cache-Memory model's non-overlapping share, Treibig
    and Hager 2010), most where both are equal: at the ridge."""
    if hw.memory_compute_overlap >= 1.0:
        return 0.0
    transfer = sum(bytes_by_class.values()) / hw.dram_bytes_per_cycle
    return (1.0 - hw.memory_compute_overlap) * min(busy_cycles, transfer)


def ecm_overlap(compute_s: float, transfer_s: float, load_s: float,
                load_overlap: float = 0.0) -> float:
    """The ``memory_compute_overlap`` at which a kernel's exposed time is the
    Execution-Cache-Memory model's (Treibig and Hager 2010): the core's load instructions
    (``load_s`` of its ``compute_s``) overlap the DRAM transfers (``transfer_s``) only by
    ``load_overlap`` (0 in the model as published; a host's measured share, see
    ``nm_kernels.hostperf.load_transfer_overlap``), the rest of its work fully, so it takes
    ``max(compute_s, (1 - load_overlap) x load_s + transfer_s)`` where the roofline says
    ``max(compute_s, transfer_s)``. The share is of the shorter of the two
    (:func:`exposed_transfer_cycles`), clipped to [0, 1]: at most the shorter shows."""
    shorter = min(compute_s, transfer_s)
    if shorter <= 0:
        return 1.0
    exposed = (max(compute_s, (1.0 - load_overlap) * load_s + transfer_s)
               - max(compute_s, transfer_s))
    return min(1.0, max(0.0, 1.0 - exposed / shorter))


def simulate_gemm(hw: HardwareConfig | str, gemm, weight=None, *, salient: Pattern | None = None,
                  steady_state: bool = True, memo: dict | None = None) -> GemmResult:
    """Simulate one GEMM. ``weight``: a real compressed weight for ``gemm.weight_name`` (or a
    :class:`~accel_sim.mapping.WeightInfo`: its pattern and tail only);
    ``salient``: a synthetic structured side-car pattern (e.g. ``Pattern(16, 256)``) when no
    real one;
    ``steady_state=False`` simulates every step (the exact event path, for checks).
    ``memo``: pipeline results by schedule; two GEMMs with equal step schedules (e.g. layers
    whose masks differ only in kept positions) have the same timing, so one run serves both.
    With ``library_tiles`` the fastest (tile, split-K) candidate runs (:func:`select_candidate`);
    every kernel launched costs ``launch_overhead_us``; below full ``memory_compute_overlap``
    part of the shorter of compute and transfer adds (:func:`exposed_transfer_cycles`)."""
    hw = load_hardware(hw)
    start = time.perf_counter()
    info = _resolve(hw, gemm, weight, salient)
    group = getattr(gemm, "group", 1)
    cand, run = select_candidate(hw, gemm_candidates(hw, gemm, info), info, steady_state, memo)
    mapping = cand.mapping
    p = info.pattern
    stalls = {c: run.counters.get(c, 0.0) for c in STALL_CAUSES}
    stalls["memory_bandwidth"] += cand.extra_cycles
    stalls["launch"] += cand.launches * hw.launch_cycles
    stalls["partial_overlap"] = exposed_transfer_cycles(hw, run.counters["busy"],
                                                        mapping.bytes_by_class)
    # Figures are per run: a mapping of ``group`` concurrent instances is divided by it.
    return GemmResult(
        name=gemm.name, m=gemm.m, n=gemm.n, k=gemm.k, count=gemm.count,
        weight_name=gemm.weight_name, pattern="dense" if p is None else str(p),
        tile=(mapping.tile_m, mapping.tile_n, mapping.chunk_k), waves=mapping.waves,
        cycles_per_run=(run.cycles + cand.overhead(hw) + stalls["partial_overlap"]) / group,
        busy_cycles_per_run=run.counters["busy"] / group,
        stall_per_run={c: v / group for c, v in stalls.items()},
        dram_bytes_per_run={c: v / group for c, v in mapping.bytes_by_class.items()},
        analytical_cycles_per_run=cand.bound(hw) / group, clock_ghz=hw.run_clock_ghz,
        simulated_steps=run.simulated_steps, skipped_steps=run.skipped_steps,
        wall_s=time.perf_counter() - start, array_macs_per_run=mapping.kept_macs / group,
        salient_macs_per_run=mapping.salient_macs / group, split_k=cand.split)


def simulate_elementwise(hw: HardwareConfig | str, op) -> GemmResult:
    """A memory-bound non-GEMM kernel (``workloads.models.Elementwise``: a norm, a rotary
    embedding, a softmax, a KV-cache write...): one launch, one DRAM latency and its bytes at
    the achievable bandwidth; no tensor-core work."""
    hw = load_hardware(hw)
    latency = float(hw.dram_latency_cycles)
    transfer = op.bytes_moved / hw.dram_bytes_per_cycle
    stalls = dict.fromkeys(STALL_CAUSES, 0.0)
    stalls.update(memory_bandwidth=transfer, memory_latency=latency, launch=hw.launch_cycles)
    cycles = transfer + latency + hw.launch_cycles
    return GemmResult(name=op.name, m=0, n=0, k=0, count=op.count, weight_name=None,
                      pattern="dense", tile=(0, 0, 0), waves=0, cycles_per_run=cycles,
                      busy_cycles_per_run=0.0, stall_per_run=stalls,
                      dram_bytes_per_run={"activations": float(op.bytes_moved)},
                      analytical_cycles_per_run=cycles, clock_ghz=hw.run_clock_ghz,
                      simulated_steps=0, skipped_steps=0, wall_s=0.0, kind="elementwise")


def simulate_workload(hw: HardwareConfig | str, gemms, weights: dict | None = None, *,
                      salient: Pattern | None = None, steady_state: bool = True,
                      progress: bool = False, reuse: bool = True,
                      elementwise=()) -> WorkloadResult:
    """Simulate a GEMM list; ``weights`` maps ``weight_name`` -> compressed weight. GEMMs of equal
    shape without a real weight are simulated once and reused (``reuse=False``: every one).
    ``elementwise``: the non-GEMM kernels of the pass (``workloads.models.elementwise_ops``),
    added as memory-bound kernels (:func:`simulate_elementwise`)."""
    hw = load_hardware(hw)
    weights = weights or {}
    if salient is not None and hw.salient_lanes < 1:
        raise ValueError(f"salient_lanes is 0: hardware '{hw.name}' cannot run a {salient} "
                         "side-car")
    start = time.perf_counter()
    cache: dict = {}
    memo: dict | None = {} if reuse else None
    results = []
    iterator = gemms
    if progress:
        from tqdm import tqdm
        iterator = tqdm(gemms, desc=f"simulate on {hw.name}", unit="gemm")
    for gemm in iterator:
        weight = weights.get(gemm.weight_name) if gemm.weight_name else None
        key = None if weight is not None or not reuse else (
            gemm.m, gemm.n, gemm.k, gemm.group, gemm.weight_name is not None)
        if key is not None and key in cache:
            base = cache[key]
            res = dataclasses.replace(base, name=gemm.name, count=gemm.count,
                                      weight_name=gemm.weight_name, wall_s=0.0,
                                      simulated_steps=0, skipped_steps=0)
        else:
            res = simulate_gemm(hw, gemm, weight, salient=salient, steady_state=steady_state,
                                memo=memo)
            if key is not None:
                cache[key] = res
        results.append(res)
    results += [simulate_elementwise(hw, op) for op in elementwise]
    return WorkloadResult(hardware=hw, gemms=results, area=area_breakdown(hw),
                          wall_s=time.perf_counter() - start)

