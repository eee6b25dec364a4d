"""Differential test against llm-compressor's SparseGPT and Wanda modifiers (scripts/
llmcompressor_crosscheck.py's worker, in llm-compressor's own venv) on the tiny model at 2:4.

Skipped unless that venv exists: ``$NMSIM_LLMC_PYTHON``, or the one the script builds under the
cache (``python scripts/llmcompressor_crosscheck.py`` once)."""

import importlib.util
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from compression.criteria import Target
from compression.formats import check_nm_mask
from compression.pipeline import PruneConfig, prune_model

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "llmcompressor_crosscheck.py"


def llmc_python():
    spec = importlib.util.spec_from_file_location("llmcompressor_crosscheck", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
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
