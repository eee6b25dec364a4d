"""The energy model (accel_sim.energy): hand-counted actions x table, the A100 power check, the
published HBM range, node scaling, and bad tables refused with one line and exit code 2."""

import json
import math

import pytest
import yaml

from accel_sim import energy as E
from accel_sim.config import load_hardware
from accel_sim.simulate import simulate_workload
from nmsim.cli import main
from workloads.models import GEMM

# Distinct energies (pJ), all at 45 nm on a 45 nm design: no node scaling in the sums below.
TEST_PJ = {"multiply": 1.3, "accumulate": 0.7, "idle_slot": 0.011, "mux2_bit": 0.0023,
           "adder_bit": 0.0031, "comparator_bit": 0.0017, "register_bit": 0.0053,
           "sram_read": 0.029, "sram_write": 0.037, "dram_read": 4.1, "dram_write": 5.3}


def _table(pj=TEST_PJ, node=45, dtype="fp16", accumulator="fp32") -> dict:
    def entry(name, energy, unit="pJ", **arguments):
        return {"name": name, "arguments": arguments, "energy": energy, "unit": unit,
                "node_nm": node, "source": "test"}
    return {"ERT": {"version": "0.4", "dram_technology": "hbm2", "tables": [
        {"name": "system.chip.PE[0..3].mac_array", "actions": [
            entry("multiply", pj["multiply"], dtype=dtype),
            entry("accumulate", pj["accumulate"], dtype=accumulator),
            entry("idle_slot", pj["idle_slot"])]},
        {"name": "operand_mux", "actions": [entry("mux2_bit", pj["mux2_bit"])]},
        {"name": "decoder", "actions": [entry(a, pj[a]) for a in
                                        ("adder_bit", "comparator_bit", "register_bit")]},
        {"name": "sram", "actions": [
            entry("read", pj["sram_read"], capacity_kib=1, width_bits=1),
            entry("write", pj["sram_write"], capacity_kib=1, width_bits=1)]},
        {"name": "dram", "actions": [
            {**entry("read", pj["dram_read"], "pJ/bit", technology="hbm2"), "node_nm": "n/a"},
            {**entry("write", pj["dram_write"], "pJ/bit", technology="hbm2"),
             "node_nm": "n/a"}]},
    ]}}


def _write(tmp_path, data, name="table.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


TINY = {"name": "tiny", "template": "tensor_core", "clock_ghz": 1.0, "process_nm": 45,
        "dtype": "fp16", "num_cores": 1, "array_rows": 2, "array_cols": 2, "dot_width": 4,
        "pattern": "2:4", "encoding": "rank", "decoder": "rank_pipeline", "num_decoders": 1,
        "mux_style": "sorted", "weight_buffer_kib": 4, "act_buffer_kib": 4,
        "out_buffer_kib": 4, "tile_k": 8, "dram_bandwidth_gb_s": 100, "dram_latency_ns": 10,
        "mma_tile_m": 64, "mma_tile_n": 64}


def test_tiny_gemm_energy_is_hand_counted_actions_times_table(tmp_path):
    hw = load_hardware("dense").replace(**TINY)
    result = simulate_workload(hw, [GEMM("g", 4, 4, 16, weight_name="w")])
    table = E.load_table(_write(tmp_path, _table()))
    got = E.workload_energy(result, table)
    g = result.gemms[0]
    assert g.tile == (4, 4, 8)  # one tile of the whole GEMM, two k-steps of 8
    # Hand counts: Y[4,4] = X[4,16] W[4,16]^T at 2:4 keeps 8 weights per row.
    macs = 4 * 4 * 8
    mux_bits = macs * (3 - 1) * 16  # sorted 2:4: a 3:1 mux = 2 MUX2 per bit of fp16
    blocks = 4 * (16 // 4)  # every weight row's 4 blocks, decoded once (one m-tile)
    # rank_pipeline on 2:4: 4 stages; rank 3 bits, k counter 2 bits, positions 2 x 2 bits:
    # compare 4 bits, subtract 3 + decrement 2, register 3 + 2 + 4 + valid 1, per stage.
    dec = blocks * (4 * 4 * TEST_PJ["comparator_bit"] + 4 * 5 * TEST_PJ["adder_bit"]
                    + 4 * 10 * TEST_PJ["register_bit"])
    meta_bits = blocks * 3
    weight_bits = 4 * 8 * 16  # written once, read once (one mma tile covers m = 4)
    act_bits = 4 * 16 * 16
    acc_bits = 2 * 4 * 4 * 32  # fp32 accumulators read and written once per k-step
    sram_bits = meta_bits + weight_bits + act_bits + acc_bits
    # values, metadata (2 blocks x 3 bits per row and step: 6 bits x 4 rows x 2 steps), acts
    dram_read_bytes = 4 * 8 * 2 + 4 * 6 // 8 * 2 + 4 * 16 * 2
    dram_write_bytes = 4 * 4 * 2
    assert g.dram_bytes_per_run == {"values": 64, "metadata": 6, "activations": 128,
                                    "outputs": 32, "salient": 0}
    idle_slots = g.stall_per_run["compute"] * 16  # the simulator's idle multiplier cycles
    want_pj = (macs * (TEST_PJ["multiply"] + TEST_PJ["accumulate"])
               + idle_slots * TEST_PJ["idle_slot"] + mux_bits * TEST_PJ["mux2_bit"] + dec
               + sram_bits * (TEST_PJ["sram_read"] + TEST_PJ["sram_write"])
               + 8 * dram_read_bytes * TEST_PJ["dram_read"]
               + 8 * dram_write_bytes * TEST_PJ["dram_write"])
    assert got["energy_j"] == pytest.approx(want_pj * 1e-12, rel=1e-12)
    assert got["pj_per_mac"] == pytest.approx(want_pj / (4 * 4 * 16), rel=1e-12)
    assert got["tops_per_w"] == pytest.approx(2 * 4 * 4 * 16 / (want_pj * 1e-12) / 1e12)
    seconds = result.total_cycles / 1e9
    assert got["average_power_w"] == pytest.approx(want_pj * 1e-12 / seconds)
    columns = E.breakdown_columns(got["energy_breakdown_j"])
    assert sum(columns.values()) == pytest.approx(got["energy_j"], rel=1e-12)
    assert columns["energy_mac_array_multiply_j"] == pytest.approx(
        macs * TEST_PJ["multiply"] * 1e-12)


def test_sparse_run_halves_mac_energy_and_pays_for_metadata():
    hw = load_hardware("flexible-nm")
    gemm = [GEMM("g", 256, 512, 1024, weight_name="w")]
    dense = E.workload_energy(simulate_workload(hw.run_at("dense"), gemm))
    sparse = E.workload_energy(simulate_workload(hw.run_at("2:4"), gemm))
    d, s = dense["energy_breakdown_j"], sparse["energy_breakdown_j"]
    assert s["mac_array"]["multiply"] == pytest.approx(d["mac_array"]["multiply"] / 2)
    assert "metadata_buffer" not in d and "operand_mux" not in d
    assert s["metadata_buffer"]["read"] > 0 and s["operand_mux"]["mux2_bit"] > 0
    assert s["dram"]["read_metadata"] > 0 and "read_metadata" not in d["dram"]


def test_a100_like_compute_bound_gemm_stays_below_board_power():
    """A100 SXM board power is 400 W (NVIDIA A100 datasheet); the modelled datapath + SRAM +
    DRAM must stay below it at the throughput the preset simulates."""
    hw = load_hardware("a100-like")
    gemm = [GEMM("g", 8192, 8192, 8192, weight_name="w")]
    for design in (hw.run_at("dense"), hw):
        result = simulate_workload(design, gemm)
        power = E.workload_energy(result)["average_power_w"]
        assert result.to_dict()["effective_tflops"] > 150  # compute-bound: near the peak
        assert 0 < power < 400


def test_default_hbm_energy_per_bit_is_inside_the_published_range():
    table = E.load_table()
    low, high = E.HBM_PUBLISHED_PJ_PER_BIT
    dram = [e for e in table.entries if e.component == "dram"]
    assert {e.args()["technology"] for e in dram} >= {"hbm2", "hbm2e", "hbm3"}
    for e in dram:
        assert low <= e.pj <= high, e


def test_default_table_entries_all_carry_source_node_and_unit():
    raw = yaml.safe_load(E.DEFAULT_TABLE.read_text())
    for table in raw["ERT"]["tables"]:
        for action in table["actions"]:
            assert action["source"] and action["unit"] and "node_nm" in action, action
    hw = load_hardware("flexible-nm")
    for decoder, encoding in (("rank_pipeline", "rank"), ("rank_rom", "rank"),
                              ("popcount", "bitmask"), ("direct", "index")):
        E.check_table(E.load_table(), hw.replace(decoder=decoder, encoding=encoding,
                                                 supported_patterns=["2:4", "8:16"]))


def test_stillmaker_baas_polynomial_matches_the_papers_worked_example(monkeypatch):
    """The paper's corrected example: the 65 nm energy factor at 1.3 V is
    3.755 * 1.3^2 - 4.398 * 1.3 + 1.975 = 2.604."""
    monkeypatch.setattr(E, "SCALING_VDD", 1.3)
    assert E._node_energy(65) == pytest.approx(2.604, abs=5e-4)
    monkeypatch.setattr(E, "SCALING_VDD", 0.8)
    assert E.node_scale(45, 45) == 1.0
    assert E.node_scale(45, 7) < E.node_scale(45, 16) < 1 < E.node_scale(45, 90)
    assert E.node_scale(45, 7) * E.node_scale(7, 45) == pytest.approx(1.0)


def test_simulate_json_carries_the_energy_fields(tmp_path, capsys):
    table = _write(tmp_path, _table(node=7))
    args = ["simulate", "--json", "--hw", "flexible-nm", "--workload", "smollm2-135m",
            "--phase", "decode", "--seq", "64", "--layers", "1"]
    assert main(args) == 0
    default = json.loads(capsys.readouterr().out)
    assert main([*args, "--energy-table", str(table)]) == 0
    custom = json.loads(capsys.readouterr().out)
    for record in (default, custom):
        total = sum(v for acts in record["energy_breakdown_j"].values() for v in acts.values())
        assert record["energy_j"] == pytest.approx(total)
        macs = sum(g["m"] * g["n"] * g["k"] * g["count"] for g in record["gemms"])
        assert record["tops_per_w"] == pytest.approx(2 * macs / record["energy_j"] / 1e12)
        assert record["average_power_w"] == pytest.approx(record["energy_j"]
                                                          / record["seconds"])
        assert sum(g["energy_j"] for g in record["gemms"]) == pytest.approx(
            record["energy_j"])
        multiplies = sum(g["energy_actions"]["mac_array.multiply"] for g in record["gemms"])
        assert multiplies == record["energy_actions"]["mac_array"]["multiply"]
    assert custom["energy_j"] != default["energy_j"]
    assert custom["energy_table"] == str(table)


def _bad(data, where):
    ert = data["ERT"]["tables"]
    if where == "missing":
        ert[0]["actions"] = ert[0]["actions"][1:]  # no fp16 multiply
    elif where == "negative":
        ert[0]["actions"][0]["energy"] = -1.0
    elif where == "nan":
        ert[0]["actions"][0]["energy"] = math.nan
    elif where == "inf":
        ert[1]["actions"][0]["energy"] = math.inf
    elif where == "component":
        ert.append({"name": "system.noc", "actions": []})
    elif where == "unit":
        ert[0]["actions"][0]["unit"] = "calories"
    elif where == "node":
        ert[0]["actions"][0]["node_nm"] = "seven"
    elif where == "width":
        ert[4]["actions"][0].update(unit="pJ", arguments={"technology": "hbm2",
                                                          "width_bits": "wide"})
    elif where == "capacity":
        ert[3]["actions"][0]["arguments"]["capacity_kib"] = -8
    return data


@pytest.mark.parametrize(("where", "needle"), [
    ("missing", "missing action mac_array.multiply"), ("negative", "finite number >= 0"),
    ("nan", "finite number >= 0"), ("inf", "finite number >= 0"),
    ("component", "unknown component 'noc'"), ("unit", "unit 'calories'"),
    ("node", "node_nm"), ("width", "dram.read: arguments.width_bits"),
    ("capacity", "sram.read: arguments.capacity_kib")])
def test_bad_energy_tables_exit_2_naming_file_and_entry(tmp_path, capsys, where, needle):
    table = _write(tmp_path, _bad(_table(), where))
    assert main(["simulate", "--hw", "flexible-nm", "--workload", "smollm2-135m", "--phase",
                 "decode", "--seq", "64", "--layers", "1", "--energy-table", str(table)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(table) in err and needle in err
    spec = tmp_path / "spec.yaml"
    spec.write_text("hardware: flexible-nm\nworkloads: [smollm2-135m]\n"
                    "phases: {decode: {kv_len: [64]}}\naxes: {pattern: [2:4]}\n")
    db, out = tmp_path / "r.sqlite", tmp_path / "report"
    assert main(["sweep", "--spec", str(spec), "--db", str(db), "--out", str(out),
                 "--energy-table", str(table)]) == 2
    assert str(table) in capsys.readouterr().err
    assert not db.exists() and not out.exists()  # nothing written


def test_unreadable_table_is_refused(tmp_path, capsys):
    missing = tmp_path / "none.yaml"
    assert main(["simulate", "--energy-table", str(missing), "--layers", "1"]) == 2
    assert f"energy table {missing}" in capsys.readouterr().err
    garbage = tmp_path / "garbage.yaml"
    garbage.write_text("ERT: [1, 2\n")
    assert main(["simulate", "--energy-table", str(garbage), "--layers", "1"]) == 2
    assert str(garbage) in capsys.readouterr().err


def test_sweep_spec_energy_table_reaches_every_point(tmp_path):
    from accel_sim.sweep.evaluate import evaluate_on_simulator
    from accel_sim.sweep.spec import parse_spec

    table = _write(tmp_path, _table(node=7))
    spec = parse_spec("hardware: flexible-nm\nworkloads: [smollm2-135m]\n"
                      "phases: {decode: {kv_len: [64]}}\naxes: {pattern: [2:4, 8:16]}\n"
                      f"energy_table: {table}\n")
    points = spec.points()
    assert all(p["energy_table"] == str(table) and p["inputs"]["energy_table"]
               for p in points)
    result = evaluate_on_simulator(points[0])
    assert result["energy_table"] == str(table)
    columns = {k for k in result if k.startswith("energy_") and k.endswith("_j")
               and k != "energy_breakdown_j"}
    assert columns == set(E.breakdown_columns({})) | {"energy_j"}


def test_tail_policy_sets_the_blocks_decoded():
    """k = 1000 at 8:16: 62 whole blocks and a tail of 8 columns, which stores 8 weights either
    way; a dense tail has no metadata, a padded one is a 63rd block."""
    from accel_sim.mapping import WeightInfo
    from accel_sim.simulate import simulate_gemm
    from compression.formats import Pattern

    hw = load_hardware("flexible-nm").run_at("8:16")
    for tail, blocks in (("dense", 62), ("pad", 63)):
        g = simulate_gemm(hw, GEMM("g", 64, 64, 1000, weight_name="w"),
                          WeightInfo(Pattern.parse("8:16"), tail))
        m_tiles = -(-64 // g.tile[0])
        counts = E.gemm_actions(hw, g)
        assert counts[("metadata_buffer", "read")] == m_tiles * 64 * blocks * 14  # rank bits
        per_block = E.decoder_model(hw.decoder_kind).energy_actions(Pattern.parse("8:16"))
        for action, count in per_block.items():
            assert counts[("decoder", action)] == m_tiles * 64 * blocks * count


def test_an_accelergy_shaped_ert_plugs_in_with_ert_wide_unit_and_node(tmp_path):
    data = _table()
    for table in data["ERT"]["tables"]:
        for action in table["actions"]:
            if table["name"] != "dram":
                del action["unit"], action["node_nm"]
            action["arguments"] = action["arguments"] or None  # Accelergy writes null
    data["ERT"].update(unit="pJ", node_nm=45)
    plain = E.load_table(_write(tmp_path, _table(), "plain.yaml"))
    ert = E.load_table(_write(tmp_path, data, "ert.yaml"))
    assert [(e.component, e.action, e.pj, e.node_nm) for e in ert.entries] == \
        [(e.component, e.action, e.pj, e.node_nm) for e in plain.entries]
