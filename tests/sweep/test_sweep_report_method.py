"""The report answers the method's question: side-car designs, energy columns (when the results
carry them, stated when not), Pareto sets over four objectives, the accuracy join stated when
missing, every swept field in the tables, and byte-identical output from two paths."""

import itertools
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from accel_sim.sweep.engine import run_spec
from accel_sim.sweep.report import OBJECTIVES, pareto_set, write_report
from accel_sim.sweep.spec import SpecError, baseline_twin, load_spec, parse_spec, point_key
from accel_sim.sweep.store import open_store

SPEC = textwrap.dedent("""\
    name: method-check
    hardware: flexible-nm
    workloads: [smollm2-135m]
    phases:
      decode: {batch: 2, kv_len: 64}
    axes:
      nm:
        - {pattern: 2:4, supported_patterns: [2:4], salient_lanes: 0}
        - {pattern: 8:16, supported_patterns: [8:16], salient_lanes: 0}
        - {pattern: 8:16, supported_patterns: [8:16], salient_lanes: 128, salient: 16:256}
      metadata:
        - {encoding: rank, decoder: rank_pipeline}
        - {encoding: index, decoder: direct}
      num_decoders: [1, 8]
      dram_bandwidth_gb_s: [1000, 2039]
    baseline: {pattern: dense, supported_patterns: [], salient_lanes: 0}
    """)
PPL = ("label,pattern,salient,perplexity\n"
       "dense,dense,,30.0\n2:4 a,2:4,,90.0\n8:16 a,8:16,,60.0\n8:16 a +car,8:16,16:256,40.0\n")
PARTS = {("mac", "compute"): 3e-9, ("sram_weights", "read"): 2e-12, ("decoder", "decode"): 5e-10}


def synthetic_energy(result: dict) -> dict:
    """Energy columns shaped like accel_sim.energy's, derived from the result's own counts."""
    dram = sum(result["dram_bytes"].values())
    stalls = result["stall_cycles"]["decode"]
    basis = {("mac", "compute"): result["total_cycles"], ("sram_weights", "read"): dram,
             ("decoder", "decode"): stalls}
    breakdown: dict = {}
    for (component, action), scale in PARTS.items():
        breakdown.setdefault(component, {})[action] = basis[(component, action)] * scale
    energy = sum(v for actions in breakdown.values() for v in actions.values())
    ops = result["effective_tflops"] * 1e12 * result["seconds"]
    return {"energy_j": energy, "energy_breakdown_j": breakdown, "pj_per_mac": energy * 2e12 / ops,
            "tops_per_w": ops / energy / 1e12, "average_power_w": energy / result["seconds"]}


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("method")
    plain, energetic = tmp / "plain.sqlite", tmp / "energy.sqlite"
    with open_store(plain) as store:
        run_spec(parse_spec(SPEC), store, workers=1, progress=False)
        rows = list(store.rows())
    with open_store(energetic) as store:
        run = store.start_run("t", "<t>", "local:1")
        for r in rows:
            store.put(r["key"], r["point"], {**r["result"], **synthetic_energy(r["result"])},
                      None, 0.0, run)
    (tmp / "ppl").mkdir()
    (tmp / "ppl" / "smollm2-135m.csv").write_text(PPL)
    return tmp, plain, energetic, rows


def test_side_car_points_run_the_side_car(stores):
    _, _, _, rows = stores
    car = [r for r in rows if r["point"].get("salient") == "16:256"]
    assert len(car) == 8 and all(r["point"]["hw"]["salient_lanes"] == 128 for r in car)
    assert all(r["result"]["dram_bytes"]["salient"] > 0 for r in car)
    plain = [r for r in rows if "salient" not in r["point"]]
    assert all(r["result"]["dram_bytes"]["salient"] == 0 for r in plain)
    # A side-car point's dense twin runs no side-car: it is the twin of the same plain design.
    twin_of = {r["key"]: point_key(baseline_twin(r["point"])) for r in rows}
    assert {twin_of[r["key"]] for r in car} <= {twin_of[r["key"]] for r in plain}
    assert all("salient" not in r["point"] for r in rows if r["point"]["hw"]["pattern"] == "dense")


def test_side_car_needs_salient_lanes():
    bad = SPEC.replace("salient_lanes: 128, salient", "salient_lanes: 0, salient")
    with pytest.raises(SpecError, match="no salient lanes"):
        parse_spec(bad)


def _summary(out: Path) -> str:
    return (out / "summary.md").read_text()


def test_energy_columns_flow_into_tables_and_charts(stores):
    tmp, _, energetic, rows = stores
    out = tmp / "rep-energy"
    write_report(energetic, out, compression=[tmp / "ppl" / "smollm2-135m.csv"])
    csv = pd.read_csv(out / "results.csv")
    by_key = {r["key"]: synthetic_energy(r["result"]) for r in rows}
    for rec in csv.to_dict("records"):
        expected = by_key[rec["key"]]
        assert rec["tops_per_w"] == pytest.approx(expected["tops_per_w"])
        for (component, action) in PARTS:
            assert rec[f"energy_{component}_{action}_j"] == pytest.approx(
                expected["energy_breakdown_j"][component][action])
    # The Pareto set over all four objectives, by brute force over results.csv.
    values = csv[list(OBJECTIVES)].to_numpy(float) * [1 if h == "min" else -1
                                                     for h in OBJECTIVES.values()]
    front = [i for i in range(len(values)) if not any(
        (values[j] <= values[i]).all() and (values[j] < values[i]).any()
        for j in range(len(values)))]
    text = _summary(out)
    assert f"tops_per_w (max), effective_tflops (max); {len(front)} of {len(csv)} designs" in text
    assert "## Energy breakdown (J per pass) per datapath" in text
    assert "mac_compute" in text and "sram_weights_read" in text
    assert {"energy_breakdown.png", "energy_breakdown.svg"} <= {p.name for p in out.iterdir()}
    assert "energy per pass (J), rank/rank_pipeline" in text


ENERGY_FIELDS = ("pj_per_mac", "tops_per_w", "average_power_w")


def test_missing_energy_and_join_are_stated(stores):
    tmp, _, _, rows = stores
    plain = tmp / "no-energy.sqlite"  # results as an energy-less simulator would store them
    with open_store(plain) as store:
        run = store.start_run("t", "<t>", "local:1")
        for r in rows:
            result = {k: v for k, v in r["result"].items()
                      if not k.startswith("energy_") and k not in ENERGY_FIELDS}
            store.put(r["key"], r["point"], result, None, 0.0, run)
    out = tmp / "rep-missing"
    write_report(plain, out, compression=[tmp / "absent" / "smollm2-135m.csv"])
    text = _summary(out)
    assert "carry no energy columns" in text and "TOPS/W" in text
    assert f"`{tmp / 'absent' / 'smollm2-135m.csv'}` not found - perplexity is n/a" in text
    assert "perplexity_vs_efficiency.png" not in text and "energy_breakdown.png" not in text
    write_report(plain, tmp / "rep-none")
    assert "no compression metrics given" in _summary(tmp / "rep-none")


def test_every_swept_field_is_a_column_and_breakdowns_say_what_they_hold(stores):
    tmp, plain, _, _ = stores
    out = tmp / "rep-fields"
    write_report(plain, out, compression=[tmp / "ppl" / "smollm2-135m.csv"])
    text = _summary(out)
    pareto = text.split("## Pareto set - ")[1].split("## ")[0]
    header = next(line for line in pareto.splitlines() if line.startswith("|"))
    for field in ("pattern", "encoding", "decoder", "num_decoders", "dram_bandwidth_gb_s",
                  "salient_lanes", "salient"):
        assert f" {field} " in header
    area = text.split("## Area breakdown (mm2) per datapath")[1].split("## ")[0]
    assert "Held fixed: dram_bandwidth_gb_s = 2039; num_decoders = 8." in area


def test_default_join_is_resolved_from_the_package(tmp_path, monkeypatch):
    import accel_sim

    monkeypatch.chdir(tmp_path)
    path = Path(load_spec().compression[0])
    assert path.is_absolute() and path.is_file()
    assert path == Path(accel_sim.__file__).resolve().parents[1] / "reports" / "compression" \
        / "smollm2-135m.csv"
    assert pd.read_csv(path)["windows"].eq(pd.read_csv(path)["split_windows"]).all()


def test_report_is_byte_identical_from_two_paths(stores, tmp_path):
    _, plain, _, _ = stores
    outputs = []
    for where in ("a", "deeper/b"):
        folder = tmp_path / where
        folder.mkdir(parents=True)
        shutil.copy(plain, folder / "r.sqlite")
        (folder / "smollm2-135m.csv").write_text(PPL)
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        subprocess.run([sys.executable, "-m", "nmsim", "report", "r.sqlite", "--out", "rep",
                        "--compression", "smollm2-135m.csv"], cwd=folder, env=env, check=True,
                       capture_output=True)
        outputs.append(folder / "rep")
    for name in ("summary.md", "results.csv", "roofline.svg", "area_breakdown.svg"):
        assert (outputs[0] / name).read_bytes() == (outputs[1] / name).read_bytes(), name


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.tuples(*[st.integers(0, 4)] * 4), min_size=1, max_size=25))
def test_pareto_set_matches_brute_force(rows):
    table = pd.DataFrame(rows, columns=list(OBJECTIVES), dtype=float)
    sign = np.array([1 if h == "min" else -1 for h in OBJECTIVES.values()])
    values = table.to_numpy() * sign
    expected = [not any((values[j] <= values[i]).all() and (values[j] < values[i]).any()
                        for j in range(len(values))) for i in range(len(values))]
    assert pareto_set(table, OBJECTIVES).tolist() == expected
    # Every dominated row is dominated by some row of the set (the set is complete).
    kept = values[pareto_set(table, OBJECTIVES)]
    for row, on in zip(values, expected):
        assert on or any((k <= row).all() and (k < row).any() for k in kept)
    assert list(itertools.compress(range(len(rows)), expected)) == \
        np.flatnonzero(pareto_set(table, OBJECTIVES)).tolist()


def test_energy_columns_nested_or_flat_are_counted_once():
    from accel_sim.sweep.report import energy_figures

    nested = {"energy_j": 3.0, "energy_breakdown_j": {"mac": {"fp16": 1.0},
                                                      "sram_weights": {"read": 2.0}}}
    flat = {"energy_j": 3.0, "energy_mac_fp16_j": 1.0, "energy_sram_weights_read_j": 2.0}
    assert energy_figures(nested) == energy_figures(flat) == energy_figures({**nested, **flat})
    parts = {k: v for k, v in energy_figures({**nested, **flat}).items() if k != "energy_j"}
    assert sum(parts.values()) == 3.0
