"""Evaluators: turn one design point into a result dict (run inside pool or Dask workers).

``accel_sim`` is the product path: the point's hardware (base preset + overrides) simulated on
the point's workload GEMMs by :func:`accel_sim.simulate.simulate_workload`, with the area
breakdown added. ``synthetic`` is a cheap, deterministic stand-in used only to test the engine
itself (resume after a kill, error capture, Dask equality) without paying for simulations.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import traceback
from functools import lru_cache

# The code a simulated result depends on: a change here must not reuse stored results.
_SIMULATOR_SOURCES = ("accel_sim/*.py", "accel_sim/presets/*.yaml", "workloads/models.py",
                      "workloads/hf_config.py", "compression/formats.py",
                      "accel_sim/energy_tables/*.yaml")

# Seconds the synthetic evaluator sleeps per point (engine tests use it to kill a sweep mid-way).
SYNTHETIC_DELAY_ENV = "NMSIM_SYNTHETIC_DELAY_S"


@lru_cache(maxsize=1)
def simulator_version() -> str:
    """A 12-hex-digit hash of the simulator's sources, part of every simulated point's key."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    digest = hashlib.sha256()
    for pattern in _SIMULATOR_SOURCES:
        for path in sorted(root.glob(pattern)):
            digest.update(path.relative_to(root).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def evaluate_chunk(chunk: list[tuple[str, dict]]) -> list[tuple]:
    """Evaluate ``[(key, point), ...]``; a point that raises yields its error, not an exception."""
    records = []
    for key, point in chunk:
        start = time.perf_counter()
        try:
            result, error = EVALUATORS[point["evaluator"]](point), None
        except Exception as exc:  # noqa: BLE001 - any failure of one point is that point's result
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            result = None
            error = f"{type(exc).__name__}: {exc} (at {os.path.basename(frame.filename)}:" \
                    f"{frame.lineno})"
        records.append((key, point, result, error, time.perf_counter() - start))
    return records


def evaluate_on_simulator(point: dict) -> dict:
    """Simulate one point: its hardware on its workload's GEMMs (with the point's structured
    salient side-car, if any), plus the area breakdown."""
    from accel_sim.area import area_breakdown
    from accel_sim.energy import attach_energy, breakdown_columns, load_table
    from accel_sim.simulate import simulate_workload
    from compression.formats import Pattern

    hw = _hardware(point["hardware"], json.dumps(point["hw"], sort_keys=True))
    # With real masks every layer is its own GEMM, named like the compressed file's tensors.
    gemms = _gemms(point["workload"], point["phase"], point.get("seq"), point.get("batch"),
                   point.get("kv_len"), "masks" in point)
    weights = _weights(point["masks"]) if "masks" in point else None
    salient = Pattern.parse(point["salient"]) if point.get("salient") else None  # JSON text
    simulated = simulate_workload(hw, gemms, weights=weights, salient=salient)
    result = simulated.to_dict()
    # Energy: energy_j, pj_per_mac, tops_per_w, average_power_w, energy_<component>_<action>_j
    energy = attach_energy(result, simulated, load_table(point.get("energy_table")))
    result.update(breakdown_columns(energy["energy_breakdown_j"]))
    if weights is not None:  # the spec allowed partial masks: say how many ran uniform
        result["uniform_weights"] = sum(g.weight_name not in weights
                                        for g in gemms if g.weight_name)
    if "area_breakdown_mm2" not in result:
        result["area_breakdown_mm2"] = area_breakdown(hw)
    result["config"] = resolved_design(hw)
    result["bytes_per_weight"] = bytes_per_weight(hw)
    result["dram_gb_s"] = hw.dram_bandwidth_gb_s * hw.dram_efficiency  # the roofline's ceiling
    return result


def resolved_design(hw) -> dict:
    """The N:M design a point actually ran (preset defaults and ``auto`` resolved)."""
    if not hw.is_sparse:
        return {"pattern": "dense", "support": "dense", "encoding": "n/a", "decoder": "n/a",
                "mux_style": "n/a", "dtype": hw.dtype}
    support = "fixed" if len(hw.supported) == 1 else \
        "flexible " + "/".join(str(p) for p in hw.supported)
    return {"pattern": hw.pattern, "support": support, "encoding": hw.encoding,
            "decoder": hw.decoder_kind, "mux_style": hw.mux_style, "dtype": hw.dtype}


def bytes_per_weight(hw) -> float:
    """Stored bytes per dense weight element: N/M values plus metadata (compression.formats)."""
    from compression.formats import bits_per_element

    pattern = hw.run_pattern
    if pattern is None:
        return float(hw.value_bytes)
    return hw.value_bytes * pattern.density + bits_per_element(pattern, hw.encoding) / 8


@lru_cache(maxsize=256)
def _hardware(base: str, overrides_json: str):
    from accel_sim.config import load_hardware

    return _base_hardware(base).replace(**json.loads(overrides_json)) if overrides_json != "{}" \
        else load_hardware(base)


@lru_cache(maxsize=8)
def _base_hardware(base: str):
    from accel_sim.config import load_hardware

    return load_hardware(base)


@lru_cache(maxsize=64)
def _gemms(workload: str, phase: str, seq, batch, kv_len, per_layer: bool):
    from workloads.models import gemms

    params = {k: v for k, v in (("seq", seq), ("batch", batch), ("kv_len", kv_len))
              if v is not None}
    return gemms(workload, phase, per_layer=per_layer, **params)


@lru_cache(maxsize=4)
def _weights(prune_folder: str):
    from compression.prune_output import load_compressed

    return load_compressed(prune_folder)


def synthetic_evaluate(point: dict) -> dict:
    """Engine-test stand-in: figures derived from a hash of the point; raises if it asks to."""
    if point.get("fail"):
        raise ValueError(f"synthetic failure requested by point {point.get('label', '')}")
    delay = float(os.environ.get(SYNTHETIC_DELAY_ENV, "0") or 0)
    if delay:
        time.sleep(delay)
    digest = hashlib.sha256(json.dumps(point, sort_keys=True).encode()).digest()
    a, b, c = (int.from_bytes(digest[i:i + 4], "little") for i in (0, 4, 8))
    return {"total_cycles": 1_000 + a % 1_000_000, "area_mm2": 1 + (b % 10_000) / 100,
            "effective_tflops": (c % 100_000) / 100}


EVALUATORS = {"accel_sim": evaluate_on_simulator, "synthetic": synthetic_evaluate}
