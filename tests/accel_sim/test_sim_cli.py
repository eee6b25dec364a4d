"""`nmsim simulate`: JSON contract, real masks from a prune folder, one-line errors (exit 2)."""

import json
import subprocess
import sys

import numpy as np
import pytest
import yaml

from accel_sim.config import PRESET_DIR
from compression import formats as F
from compression.prune_output import OutputWriter
from nmsim.cli import main
from workloads.models import ARCHITECTURES


def simulate_json(capsys, *args):
    assert main(["simulate", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_json_has_the_contract_fields(capsys):
    record = simulate_json(capsys, "--hw", "flexible-nm", "--workload", "llama2-7b",
                           "--phase", "decode", "--seq", "512", "--batch", "4", "--layers", "2")
    for key in ("total_cycles", "area_mm2", "effective_tflops", "stall_cycles", "dram_bytes",
                "utilization", "gemms", "area_breakdown_mm2"):
        assert key in record
    assert set(record["stall_cycles"]) >= {"memory_bandwidth", "memory_latency", "decode",
                                            "operand_delivery", "compute", "launch"}
    assert set(record["dram_bytes"]) >= {"values", "metadata", "activations", "outputs",
                                         "salient"}
    assert record["total_cycles"] == pytest.approx(sum(g["total_cycles"]
                                                       for g in record["gemms"]))
    q = next(g for g in record["gemms"] if g["name"] == "q_proj")
    assert (q["m"], q["n"], q["k"], q["count"]) == (4, 4096, 4096, 2)


def test_pattern_flag_runs_a_supported_pattern(capsys):
    a = simulate_json(capsys, "--hw", "flexible-nm", "--pattern", "2:4", "--layers", "1",
                      "--seq", "256")
    b = simulate_json(capsys, "--hw", "flexible-nm", "--pattern", "16:32", "--layers", "1",
                      "--seq", "256")
    assert a["pattern"] == "2:4" and b["pattern"] == "16:32"
    # Same density, same tiles: values equal, rank metadata 0.9375 vs 0.75 bits per element.
    assert b["dram_bytes"]["values"] == a["dram_bytes"]["values"]
    assert b["dram_bytes"]["metadata"] / a["dram_bytes"]["metadata"] == pytest.approx(
        F.bits_per_element("16:32", "rank") / F.bits_per_element("2:4", "rank"))


def write_prune_folder(out, layers):
    """A `nmsim prune --out` folder from {layer: ({name: weight}, {name: bool mask})}."""
    with OutputWriter(out) as writer:
        for index, (weights, masks) in layers.items():
            writer.add_layer(index, weights, masks, {})
        writer.commit([], {})
    return out


def _prune_folder(tmp_path, layers=1, shape_override=None):
    """A folder like `nmsim prune --out` writes for SmolLM2-135M (first `layers` layers)."""
    arch = ARCHITECTURES["smollm2-135m"]
    rng = np.random.default_rng(0)
    content = {}
    for layer in range(layers):
        weights = {}
        for name in ("self_attn.q_proj", "mlp.down_proj"):
            n, k = shape_override or arch.weight_shape(name)
            w = rng.standard_normal((n, k)).astype(np.float32)
            weights[f"model.layers.{layer}.{name}"] = F.NMTensor.from_dense(
                w, F.nm_mask(np.abs(w), "8:16"), "8:16", encoding="rank")
        content[layer] = (weights, {n: w.mask() for n, w in weights.items()})
    return write_prune_folder(tmp_path / "prune", content)


def test_masks_folder_feeds_per_layer_work(capsys, tmp_path):
    folder = _prune_folder(tmp_path)
    record = simulate_json(capsys, "--hw", "flexible-nm", "--workload", "smollm2-135m",
                           "--layers", "1", "--seq", "128", "--masks", str(folder),
                           "--pattern", "2:4", "--allow-partial-masks")
    by_name = {g["name"]: g for g in record["gemms"]}
    # 7 weights per layer + lm_head, 2 of them from the mask file.
    assert record["uniform_weights"] == 6
    assert by_name["layers.0.q_proj"]["pattern"] == "8:16"  # from the mask file
    assert by_name["layers.0.k_proj"]["pattern"] == "2:4"  # not in the file: --pattern


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "nmsim", "simulate", *args],
                          check=False, capture_output=True, text=True)


@pytest.mark.parametrize("args, needle", [
    (["--seq", "0"], "seq must be a positive integer"),
    (["--batch", "-2"], "batch must be a positive integer"),
    (["--hw", "a100-like", "--pattern", "8:16"], "pattern 8:16 is not supported"),
    (["--hw", "no-such-preset"], "unknown hardware 'no-such-preset'"),
    (["--pattern", "9:4"], "invalid pattern '9:4'"),
])
def test_bad_input_is_one_line_and_exit_2(args, needle, capsys):
    assert main(["simulate", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1


def test_bad_files_exit_2_naming_the_problem(tmp_path, capsys):
    small = tmp_path / "small.yaml"
    data = yaml.safe_load((PRESET_DIR / "flexible-nm.yaml").read_text())
    data["act_buffer_kib"] = 1
    small.write_text(yaml.safe_dump(data))
    assert main(["simulate", "--hw", str(small), "--layers", "1"]) == 2
    assert "act_buffer_kib=1 KiB is too small" in capsys.readouterr().err
    (tmp_path / "m").mkdir()
    folder = _prune_folder(tmp_path / "m", shape_override=(64, 64))
    assert main(["simulate", "--workload", "smollm2-135m", "--masks", str(folder),
                 "--allow-partial-masks"]) == 2
    assert "mask shape (64, 64)" in capsys.readouterr().err
    assert main(["simulate", "--masks", str(tmp_path / "nowhere")]) == 2
    assert "no prune output folder or compressed file" in capsys.readouterr().err
    assert main(["simulate", "--masks", str(tmp_path)]) == 2
    assert "not a prune output folder" in capsys.readouterr().err


def test_table_output_runs_as_a_process():
    proc = run_cli("--hw", "systolic-nm", "--layers", "1", "--seq", "64")
    assert proc.returncode == 0, proc.stderr
    assert "total:" in proc.stdout and "area" in proc.stdout


def test_bool_masks_are_recognised_and_match_the_compressed_folder(capsys, tmp_path):
    arch = ARCHITECTURES["smollm2-135m"]
    rng = np.random.default_rng(3)
    n, k = arch.weight_shape("mlp.up_proj")
    w = rng.standard_normal((n, k)).astype(np.float32)
    bulk = F.nm_mask(np.abs(w), "4:8")
    side = np.zeros((n, k), bool)
    side[:, :8] = True
    name = "model.layers.0.mlp.up_proj"
    masks = {name: bulk, name + ".salient": side}
    write_prune_folder(tmp_path / "m", {0: ({}, masks)})  # masks only, as for a non-N:M bulk
    args = ["--hw", "flexible-nm", "--workload", "smollm2-135m", "--layers", "1",
            "--seq", "64", "--allow-partial-masks", "--masks", str(tmp_path / "m")]
    from_bool = simulate_json(capsys, *args)
    up = next(g for g in from_bool["gemms"] if g["name"] == "layers.0.up_proj")
    assert up["pattern"] == "4:8" and up["dram_bytes"]["salient"] > 0
    # the same masks as a compressed file give the same timing
    weight = F.SparseWeight(F.NMTensor.from_dense(w, bulk, "4:8", encoding="rank"),
                            F.CSRTensor.from_dense(w, side))
    write_prune_folder(tmp_path / "c", {0: ({name: weight}, masks)})
    from_folder = simulate_json(capsys, *args[:-1], str(tmp_path / "c"))
    assert from_folder["total_cycles"] == pytest.approx(from_bool["total_cycles"], rel=1e-12)
    write_prune_folder(tmp_path / "dense", {0: ({}, {name: np.ones((n, k), bool)})})
    assert main(["simulate", *args[:-1], str(tmp_path / "dense")]) == 2
    assert "is not N:M in any pattern" in capsys.readouterr().err
    (tmp_path / "m" / "layers" / "00000.masks.safetensors").write_bytes(b"not safetensors")
    assert main(["simulate", *args]) == 2
    assert "is not a readable mask file" in capsys.readouterr().err
