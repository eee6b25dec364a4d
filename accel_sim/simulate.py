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

import math
import time
from dataclasses import dataclass, field

from compression.formats import Pattern

from .area import area_breakdown
from .config import HardwareConfig, load_hardware
from .decoders import decoder_model
from .mapping import WeightInfo, build_mapping, mux_inputs, synthetic_salient, weight_info
from .pipeline import run_pipeline

STALL_CAUSES = ("memory", "decode", "compute", "salient")


@dataclass
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
            "waves": self.waves,
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


@dataclass
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
        seconds = total / (hw.clock_ghz * 1e9)
        return {
            "hardware": hw.name,
            "pattern": hw.pattern,
            "encoding": hw.encoding if hw.is_sparse else None,
            "decoder": hw.decoder_kind if hw.is_sparse else None,
            "clock_ghz": hw.clock_ghz,
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


def _resolve(hw: HardwareConfig, gemm, weight, salient) -> WeightInfo:
    """The pattern and side-car a GEMM runs with on ``hw``."""
    if gemm.weight_name is None:
        return WeightInfo(None, activation_operand=True)
    if weight is not None:
        info = weight_info(weight, (gemm.n, gemm.k), gemm.weight_name)
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
        coords, per_nnz = synthetic_salient((gemm.n, gemm.k), salient, 2)
        return WeightInfo(pattern, "dense", coords, per_nnz, gemm.weight_name)
    return WeightInfo(pattern)


def analytical_cycles(hw: HardwareConfig, mapping) -> float:
    """Roofline + fill: the slowest of compute, decode and DRAM, plus one DRAM latency."""
    compute = decode = traffic = 0.0
    for wave_runs, wave_repeat in mapping.schedule:
        for step, repeat in wave_runs:
            n = repeat * wave_repeat
            compute += n * max(step.mac_cycles, step.salient_cycles)
            decode += n * step.decode_cycles
            traffic += n * (step.load_bytes + step.writeback_bytes)
    return max(compute, decode, traffic / hw.dram_bytes_per_cycle) + hw.dram_latency_cycles


def simulate_gemm(hw: HardwareConfig | str, gemm, weight=None, *, salient: str | None = None,
                  steady_state: bool = True, memo: dict | None = None) -> GemmResult:
    """Simulate one GEMM. ``weight``: a real compressed weight for ``gemm.weight_name``;
    ``salient``: a synthetic structured side-car pattern (e.g. ``"16:256"``) when no real one;
    ``steady_state=False`` simulates every step (the exact event path, for checks).
    ``memo``: pipeline results by schedule; two GEMMs with equal step schedules (e.g. layers
    whose masks differ only in kept positions) have the same timing, so one run serves both."""
    hw = load_hardware(hw)
    start = time.perf_counter()
    info = _resolve(hw, gemm, weight, salient)
    group = getattr(gemm, "group", 1)
    mapping = build_mapping(hw, gemm.m, gemm.n, gemm.k, info, group)
    p = info.pattern
    decode_latency = 0 if p is None else decoder_model(hw.decoder_kind).latency_cycles(
        p, hw.supported)
    select_latency = math.ceil(math.log2(mux_inputs(hw))) if hw.is_sparse else 0
    args = (tuple(mapping.schedule), hw.dram_bytes_per_cycle, hw.dram_latency_cycles,
            decode_latency, select_latency, hw.input_stages, hw.output_stages, steady_state)
    run = memo.get(args) if memo is not None else None
    if run is None:
        run = run_pipeline(*args[:-1], steady_state=steady_state)
        if memo is not None:
            memo[args] = run
    stalls = {c: run.counters[c] for c in STALL_CAUSES}
    # Figures are per run: a mapping of ``group`` concurrent instances is divided by it.
    return GemmResult(
        gemm.name, gemm.m, gemm.n, gemm.k, gemm.count, gemm.weight_name,
        "dense" if p is None else str(p), (mapping.tile_m, mapping.tile_n, mapping.chunk_k),
        mapping.waves, run.cycles / group, run.counters["busy"] / group,
        {c: v / group for c, v in stalls.items()},
        {c: v / group for c, v in mapping.bytes_by_class.items()},
        analytical_cycles(hw, mapping) / group, hw.clock_ghz, run.simulated_steps,
        run.skipped_steps, time.perf_counter() - start, mapping.kept_macs / group,
        mapping.salient_macs / group)


def simulate_workload(hw: HardwareConfig | str, gemms, weights: dict | None = None, *,
                      salient: str | None = None, steady_state: bool = True,
                      progress: bool = False, reuse: bool = True) -> WorkloadResult:
    """Simulate a GEMM list; ``weights`` maps ``weight_name`` -> compressed weight. GEMMs of equal
    shape without a real weight are simulated once and reused (``reuse=False``: every one)."""
    hw = load_hardware(hw)
    weights = weights or {}
    if salient is not None:
        Pattern.parse(salient)
        if hw.salient_lanes < 1:
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
            res = GemmResult(**{**base.__dict__, "name": gemm.name, "count": gemm.count,
                                "weight_name": gemm.weight_name, "wall_s": 0.0,
                                "simulated_steps": 0, "skipped_steps": 0})
        else:
            res = simulate_gemm(hw, gemm, weight, salient=salient, steady_state=steady_state,
                                memo=memo)
            if key is not None:
                cache[key] = res
        results.append(res)
    return WorkloadResult(hw, results, area_breakdown(hw), time.perf_counter() - start)

