"""Work the simulator refuses up front, with an estimate, instead of running for hours or out of
memory (the bounds are documented in README.md and docs/sweep.md).

The simulator's cost grows with a GEMM's *wave-steps* (one k-chunk of one wave of output tiles
on all cores): the mapping lists every wave, the event path visits every step it cannot
extrapolate. :func:`estimate_steps` is a lower bound on that count that needs no mapping (which
itself costs time proportional to the waves): an output tile holds at most
``out_buffer_kib / accumulator bytes`` elements, and a k-chunk is at most ``tile_k`` (or one
weight-stationary fold) wide. Measured on this machine (2-core Xeon, shared): SmolLM2-135M
prefill of 65,536 tokens, 75,000 steps, 29 s; of 262,144 tokens, 1.08 million steps, 209 s.
"""

from __future__ import annotations

import math

# Default cap on the estimated wave-steps of one simulation (``nmsim simulate --max-steps``):
# the estimate is a lower bound, ~5x under the real count on flexible-nm (16,061 estimated for
# the 75,000-step run above, 195,194 for the 1.08-million-step one), so this allows runs of a
# few minutes here.
MAX_STEPS = 300_000
# Workload parameters beyond these are refused (simulate flags and sweep spec phases).
MAX_TOKENS = 1 << 20  # seq and kv_len
MAX_BATCH = 1 << 16


def check_workload_parameters(**params) -> None:
    """Refuse non-positive or absurd seq / kv_len / batch values, naming the parameter."""
    for name, value in params.items():
        if value is None:
            continue
        bound = MAX_BATCH if name == "batch" else MAX_TOKENS
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= bound:
            raise ValueError(f"{name} must be a positive integer at most {bound}, got "
                             f"{value!r}")


def estimate_steps(hw, gemms) -> int:
    """A lower bound on the wave-steps of simulating ``gemms`` (equal shapes counted once, as
    the simulator runs them once)."""
    acc_bytes = hw.accumulator_bytes
    max_tile = max(hw.out_buffer_kib * 1024 / acc_bytes, hw.array_rows * hw.array_cols)
    if hw.template == "systolic" and hw.dataflow == "ws":
        pattern = hw.run_pattern
        chunk = hw.array_rows if pattern is None else hw.array_rows * pattern.m / pattern.n
    else:
        chunk = hw.tile_k
    shapes = {(g.m, g.n, g.k, getattr(g, "group", 1)) for g in gemms}
    total = 0
    for m, n, k, group in shapes:
        tiles = group * math.ceil(m * n / max_tile)
        total += math.ceil(tiles / hw.num_cores) * math.ceil(k / chunk)
    return total


def check_steps(hw, gemms, limit: int = MAX_STEPS, flag: str = "--max-steps") -> int:
    """Refuse a simulation estimated above ``limit`` wave-steps; returns the estimate."""
    steps = estimate_steps(hw, gemms)
    if steps > limit:
        raise ValueError(f"this simulation needs at least {steps:.3g} wave-steps (limit "
                         f"{limit:.3g}; 75,000 real steps take 30 s here): shrink seq/batch or "
                         f"raise {flag}")
    return steps
