"""The energy model's reference figures (docs/energy.md): the a100-like preset on a compute-bound
8192^3 GEMM against the A100's 400 W board power, and the time energy adds to a simulation.

    PYTHONPATH=. python scripts/energy_figures.py

Times are wall clock on this machine (the best of 5 energy evaluations after the table is parsed
once; one simulation each), so they move with the machine's load.
"""

from __future__ import annotations

import time

from accel_sim.config import load_hardware
from accel_sim.energy import load_table, workload_energy
from accel_sim.simulate import simulate_workload
from workloads.models import GEMM, gemms

A100_BOARD_POWER_W = 400.0  # NVIDIA A100 80GB SXM datasheet, max TDP
CASES = (("a100-like", "dense", "llama2-7b", "prefill", {"seq": 2048}),
         ("a100-like", "2:4", "llama2-7b", "prefill", {"seq": 2048}),
         ("flexible-nm", "8:16", "llama2-7b", "decode", {"batch": 16, "kv_len": 2048}),
         ("systolic-nm", None, "smollm2-135m", "prefill", {"seq": 512}))


def _energy_seconds(result, table) -> float:
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        workload_energy(result, table)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    table = load_table()
    hw = load_hardware("a100-like")
    square = [GEMM("g", 8192, 8192, 8192, weight_name="w")]  # compute-bound
    for pattern in ("dense", "2:4"):
        result = simulate_workload(hw.run_at(pattern), square)
        e, d = workload_energy(result, table), result.to_dict()
        shares = {c: sum(a.values()) / e["energy_j"] for c, a in e["energy_breakdown_j"].items()}
        listed = ", ".join(f"{c} {v:.0%}"
                           for c, v in sorted(shares.items(), key=lambda kv: -kv[1]))
        print(f"a100-like {pattern} 8192^3: {d['effective_tflops']:.1f} TFLOP/s, "
              f"{e['average_power_w']:.1f} W = {e['average_power_w'] / A100_BOARD_POWER_W:.1%} "
              f"of {A100_BOARD_POWER_W:.0f} W; {e['pj_per_mac']:.3f} pJ/MAC, "
              f"{e['tops_per_w']:.2f} TOPS/W; {listed}")
    for name, pattern, workload, phase, params in CASES:
        design = load_hardware(name)
        design = design.run_at(pattern) if pattern else design
        start = time.perf_counter()
        result = simulate_workload(design, gemms(workload, phase, **params))
        simulated = time.perf_counter() - start
        energy = _energy_seconds(result, table)
        print(f"{name} {design.pattern} {workload} {phase}: simulation {simulated * 1e3:.0f} ms, "
              f"energy {energy * 1e3:.2f} ms (+{energy / simulated:.2%})")


if __name__ == "__main__":
    main()
