"""scripts/gpu_check.py off a GPU: its bandwidth bookkeeping runs on the CPU, and without CUDA
the script says so in one line and exits 2."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_check.py"


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_copy_bandwidth_counts_read_and_write_bytes():
    gpu_check = _load()
    copies = []

    def bench(fn):  # a stand-in for triton.testing.do_bench: one call "takes" 2 ms
        copies.append(fn())
        return 2.0

    gb_s = gpu_check.copy_bandwidth_gb_s("cpu", 10**6, bench)
    assert gb_s == pytest.approx(2 * 10**6 / 2e-3 / 1e9)
    assert torch.equal(copies[0], torch.ones(10**6, dtype=torch.uint8))
    assert gpu_check.io_bytes((4, 8), 3) == (2 * 8 + 4 * 4) * 3
    assert gpu_check.io_bytes((4, 8), 3, out_bytes=2) == (2 * 8 + 2 * 4) * 3  # cuBLAS fp16 out


def test_report_shows_fraction_of_copy_bandwidth(tmp_path):
    gpu_check = _load()
    record = {"shape": [4096, 4096], "pattern": "2:4", "encoding": "rank", "batch": 1,
              "cublas_ms": 0.02, "triton_ms": 0.0125, "blocks": [16, 128, 16],
              "speedup_vs_cublas": 1.6, "bound": 1.78, "triton_gb_s": 3000.0,
              "cublas_gb_s": 3400.0, "copy_gb_s": 4000.0, "triton_fraction_of_copy": 0.75,
              "cublas_fraction_of_copy": 0.85}
    gpu_check._write(tmp_path, "test device", [], [record], [], 1.0, 4000.0)
    text = (tmp_path / "gpu_h200.md").read_text()
    assert "4000 GB/s" in text
    assert "| 0.0200 | 85% | 0.0125 | 3000 | 75% |" in text


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_without_cuda_one_line_and_exit_2(tmp_path):
    out = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "r")],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()
