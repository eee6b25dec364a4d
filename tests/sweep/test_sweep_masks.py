"""Real masks: prune-output files are matched to points by pattern and fed layer by layer."""

import textwrap

import numpy as np
import pytest

from accel_sim.sweep.engine import run_spec
from accel_sim.sweep.evaluate import evaluate_on_simulator
from accel_sim.sweep.spec import SpecError, baseline_twin, parse_spec, point_key
from accel_sim.sweep.store import open_store
from compression import formats
from compression.prune_output import OutputWriter
from workloads.models import ARCHITECTURES, LAYER_WEIGHTS


def write_layer0_masks(folder, pattern):
    """A prune output folder for SmolLM2's layer 0 (random weights, magnitude N:M masks)."""
    arch = ARCHITECTURES["smollm2-135m"]
    rng = np.random.default_rng(0)
    weights = {}
    for name in LAYER_WEIGHTS:
        w = rng.standard_normal(arch.weight_shape(name)).astype(np.float32)
        weights[f"model.layers.0.{name}"] = formats.NMTensor.from_dense(
            w, formats.nm_mask(np.abs(w), pattern), pattern, encoding="index")
    with OutputWriter(folder) as writer:
        writer.add_layer(0, weights, {n: w.mask() for n, w in weights.items()}, {})
        writer.commit([], {})


SPEC = textwrap.dedent("""\
    hardware: flexible-nm
    workloads: [smollm2-135m, llama2-7b]
    phases: {{decode: {{batch: 1, kv_len: 64}}}}
    axes: {{pattern: [2:4, 8:16]}}
    masks: {{workload: smollm2-135m, dir: {dir}, allow_partial: true}}
    """)


def test_mask_files_attach_by_pattern_and_workload(tmp_path):
    write_layer0_masks(tmp_path / "prune" / "p816", "8:16")
    spec = parse_spec(SPEC.format(dir=tmp_path / "prune"))
    with_masks = [p for p in spec.points() if "masks" in p]
    assert [(p["workload"], p["hw"]["pattern"]) for p in with_masks] == [("smollm2-135m", "8:16")]
    assert with_masks[0]["masks"].endswith("p816")

    with open_store(tmp_path / "r.sqlite") as store:
        stats = run_spec(spec, store, workers=1, progress=False)
        rows = {(r["point"]["workload"], r["point"]["hw"]["pattern"]): r for r in store.rows()}
    assert stats.errors == 0, [r["error"] for r in rows.values()]
    arch = ARCHITECTURES["smollm2-135m"]
    real = rows[("smollm2-135m", "8:16")]["result"]["gemms"]
    # Per layer: 7 weight GEMMs + 2 attention GEMMs, then lm_head.
    assert len(real) == arch.layers * 9 + 1
    assert {g["weight_name"] for g in real if g["weight_name"]} >= {
        f"model.layers.0.{name}" for name in LAYER_WEIGHTS}
    assert len(rows[("smollm2-135m", "2:4")]["result"]["gemms"]) == 10
    # An exact N:M mask does the same work per tile as uniform N:M: same cycles, layer by layer.
    uniform = evaluate_on_simulator({k: v for k, v in with_masks[0].items() if k != "masks"})
    assert rows[("smollm2-135m", "8:16")]["result"]["total_cycles"] == pytest.approx(
        uniform["total_cycles"], rel=1e-9)


def test_required_masks_missing_is_a_spec_error(tmp_path):
    with pytest.raises(SpecError, match="masks.dir: no prune output"):
        parse_spec(SPEC.format(dir=tmp_path / "nothing"))


def test_dense_twin_of_a_real_mask_point_runs_without_masks(tmp_path):
    write_layer0_masks(tmp_path / "prune", "8:16")
    spec = parse_spec(SPEC.format(dir=tmp_path / "prune")
                      + "baseline: {pattern: dense, supported_patterns: []}\n")
    points = spec.points()
    real = next(p for p in points if "masks" in p)
    twin = baseline_twin(real)
    assert "masks" not in twin and twin["hw"]["pattern"] == "dense"
    assert point_key(twin) in {point_key(p) for p in points}
    # The uniform 2:4 point of the same workload shares that dense twin.
    uniform = next(p for p in points if p["workload"] == "smollm2-135m"
                   and p["hw"]["pattern"] == "2:4")
    assert point_key(baseline_twin(uniform)) == point_key(twin)
