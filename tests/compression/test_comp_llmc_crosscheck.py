"""The cross-check against llm-compressor (scripts/llmcompressor_crosscheck.py).

* Its comparison (mask agreement, 2:4 check, weight difference, per-layer and whole-model
  figures, perplexity) always runs, against brute-force float64 counts on masks with known
  disagreements: what the report says does not depend on llm-compressor being installed.
* The differential test runs the script's worker in llm-compressor's own venv on the tiny model
  at 2:4. It is skipped unless that venv exists (``$NMSIM_LLMC_PYTHON``, or the one the script
  builds under the cache): building it downloads torch and llm-compressor (minutes, and a
  package index that CI may not reach), too much to do inside a test."""

import importlib.util
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from compression.criteria import Target
from compression.formats import Pattern, check_nm_mask, nm_mask
from compression.pipeline import PruneConfig, prune_model

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "llmcompressor_crosscheck.py"


def script():
    spec = importlib.util.spec_from_file_location("llmcompressor_crosscheck", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def llmc_python():
    module = script()
    if os.environ.get("NMSIM_LLMC_PYTHON"):
        return os.environ["NMSIM_LLMC_PYTHON"]
    venv = module.cached_venv()
    return str(venv / "bin" / "python") if (venv / "installed").is_file() else None


@pytest.mark.skipif(llmc_python() is None, reason="no llm-compressor venv")
@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_masks_agree_with_llm_compressor(tiny_folder, tiny_model, tmp_path, method):
    calib = np.random.default_rng(11).integers(0, 300, (4, 64))
    np.save(tmp_path / "calib.npy", calib)
    out = tmp_path / "pruned.safetensors"
    done = subprocess.run([llmc_python(), str(SCRIPT), "--worker", method, "--model-dir",
                           str(tiny_folder), "--calib", str(tmp_path / "calib.npy"),
                           "--worker-out", str(out)], capture_output=True, text=True,
                          timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    theirs = {name[: -len(".weight")]: w for name, w in load_file(str(out)).items()}
    # fp32 model on both sides (llm-compressor loads the fp16 folder as fp32)
    ours = prune_model(tiny_model().float(), calib, PruneConfig(Target.parse("2:4"), method),
                       progress=False).masks
    assert set(theirs) == set(ours)
    same = total = 0
    for name, mask in ours.items():
        their_mask = theirs[name] != 0
        check_nm_mask(their_mask, "2:4")
        same += int((their_mask == mask.bulk).sum())
        total += mask.bulk.size
    assert same / total >= 0.99


def test_comparison_counts_agreement_like_brute_force():
    """Two layers, masks of which a known set of groups differ; llm-compressor's side with a group
    that breaks 2:4 in one linear; figures against loops in float64."""
    module = script()
    rng = np.random.default_rng(12)
    ours, theirs, flips = {"masks": {}, "weights": {}}, {"weights": {}}, {}
    for layer in range(2):
        for linear, shape in (("self_attn.q_proj", (8, 16)), ("mlp.down_proj", (4, 32))):
            name = f"model.layers.{layer}.{linear}"
            weight = rng.standard_normal(shape).astype(np.float32)
            mask = nm_mask(np.abs(weight), Pattern.parse("2:4"))
            their_mask = mask.copy()
            groups = rng.choice(shape[0] * shape[1] // 4, size=layer + 2, replace=False)
            for g in groups:  # swap one kept and one pruned position of the group
                row, start = divmod(4 * g, shape[1])
                block = their_mask[row, start : start + 4]
                kept, dropped = np.flatnonzero(block)[0], np.flatnonzero(~block)[0]
                block[kept], block[dropped] = False, True
            if layer == 1 and linear == "mlp.down_proj":
                their_mask[0, :4] = [True, True, True, False]  # three kept: not 2:4
            ours["masks"][name] = mask
            ours["weights"][name] = torch.from_numpy(weight * mask)
            theirs["weights"][name] = torch.from_numpy(weight * their_mask * 1.5)
            flips[name] = their_mask
    rows = module.compare("wanda", ours, theirs)
    for row in rows:
        name = f"model.layers.{row['layer']}.{row['module']}"
        mask, their_mask = ours["masks"][name], flips[name]
        same = sum(mask[i, j] == their_mask[i, j] for i in range(mask.shape[0])
                   for j in range(mask.shape[1]))
        assert row["mask_agreement_pct"] == pytest.approx(100 * same / mask.size)
        assert row["llmc_is_2of4"] == (name != "model.layers.1.mlp.down_proj")
        a = ours["weights"][name].double().numpy()
        b = theirs["weights"][name].double().numpy()
        assert row["weight_rel_diff"] == pytest.approx(np.linalg.norm(a - b) / np.linalg.norm(b))
    nll = {"nll_nmsim": rng.uniform(1, 3, 6) * 100, "nll_llmc": rng.uniform(1, 3, 6) * 100,
           "tokens": np.full(6, 100), "nmsim_s": 1.0, "llmc_s": 2.0}
    summary = module.method_summary("wanda", rows, nll)
    all_same = sum(int((ours["masks"][n] == flips[n]).sum()) for n in flips)
    assert summary["agreement_pct"] == pytest.approx(100 * all_same / sum(m.size for m in
                                                                          flips.values()))
    assert not summary["llmc_all_2of4"]
    assert summary["ppl_nmsim"].estimate == pytest.approx(np.exp(nll["nll_nmsim"].sum() / 600))
    table = module.layer_table(rows)
    for layer in range(2):
        names = [n for n in flips if n.startswith(f"model.layers.{layer}.")]
        same = sum(int((ours["masks"][n] == flips[n]).sum()) for n in names)
        expected = 100 * same / sum(flips[n].size for n in names)
        assert f"| {layer} | {expected:.3f}% |" in table


def test_cached_folders_and_outputs_are_keyed_by_the_weights_not_a_name(tiny_model, tmp_path):
    # The dense folder and llm-compressor's cached output are reused only for the very same
    # tensors: changing one weight gives another folder name and another output key.
    module = script()
    model, same = tiny_model(), tiny_model()
    assert module.weights_digest(model) == module.weights_digest(same)
    with torch.no_grad():
        same.model.layers[-1].mlp.down_proj.weight[0, 0] += 0.01
    assert module.weights_digest(model) != module.weights_digest(same)
    calib = tmp_path / "calib-0123.npy"
    names = [tmp_path / f"smollm2-135m-fp32-2layers-{module.weights_digest(m)}"
             for m in (model, same)]
    keys = {module.llmc_output("wanda", folder, calib, tmp_path) for folder in names}
    assert len(keys) == 2


def _results(module) -> dict:
    """A results.json as a run writes it: one method, two linears, every template field set."""
    import string

    rows = [{"method": "wanda", "layer": 0, "module": name, "out": 8, "in": 16,
             "nmsim_kept": 64, "llmc_kept": 64, "llmc_is_2of4": True,
             "mask_agreement_pct": pct, "weight_rel_diff": 0.01}
            for name, pct in (("self_attn.q_proj", 99.0), ("mlp.down_proj", 97.5))]
    fields = {name: spec for _, name, spec, _ in
              string.Formatter().parse(module.TEMPLATE.read_text()) if name}
    setup = {name: 1 if spec else "x" for name, spec in fields.items()
             if name not in ("table", "by_layer")}
    nll = list(np.linspace(100.0, 300.0, 6))
    return {"rows": rows, "setup": setup,
            "methods": {"wanda": {"nll_nmsim": nll, "nll_llmc": nll[::-1], "tokens": [100] * 6,
                                  "nmsim_s": 1.0, "llmc_s": 2.0}}}


def _render(module, results_path, out):
    try:
        return module.main(["--render", str(results_path), "--out", str(out)])
    except SystemExit as stop:
        return stop.code


def test_render_replaces_only_its_own_report_and_never_half_of_it(tmp_path, capsys):
    module = script()
    good, old = tmp_path / "results.json", tmp_path / "old.json"
    results = _results(module)
    good.write_text(json.dumps(results))
    del results["setup"]["scope"]  # a results.json from a version without this field
    old.write_text(json.dumps(results))

    out = tmp_path / "out"
    assert _render(module, good, out) == 0
    csv_text = (out / "crosscheck.csv").read_text()
    assert csv_text.startswith(",".join(module.COLUMNS)) and "mlp.down_proj" in csv_text
    assert "97.50%" in (out / "crosscheck.md").read_text()  # the lowest linear, per layer
    results["setup"]["scope"] = "x"
    results["rows"][1]["mask_agreement_pct"] = 96.25
    good.write_text(json.dumps(results))
    assert _render(module, good, out) == 0  # its own files: replaced
    assert "96.25%" in (out / "crosscheck.md").read_text()
    assert "96.25" in (out / "crosscheck.csv").read_text()
    del results["setup"]["scope"]

    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert _render(module, old, out) == 2
    assert "no 'scope'" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no staging file either

    old.write_text(json.dumps({"rows": 3, "setup": {}, "methods": {}}))  # wrong shapes
    assert _render(module, old, out) == 2
    assert "not a results.json of this script" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "crosscheck.md").write_text("my notes\n")
    assert _render(module, good, foreign) == 2
    assert "not written by this cross-check" in capsys.readouterr().err
    assert [p.name for p in foreign.iterdir()] == ["crosscheck.md"]
    assert (foreign / "crosscheck.md").read_text() == "my notes\n"
