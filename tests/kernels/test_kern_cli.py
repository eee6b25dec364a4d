"""`nmsim bench kernels` and `nmsim validate`: output contract, closed-form bytes bound, errors."""

import json
import subprocess
import sys

import pytest

from kernels import simd_nm
from nmsim.cli import main


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "nmsim", *args], capture_output=True, text=True,
                          check=False)


def test_bench_kernels_json_records(capsys, tmp_path):
    table = tmp_path / "cpu.md"
    assert main(["bench", "kernels", "--shape", "32x64", "--pattern", "2:4", "--encoding",
                 "rank", "--encoding", "index", "--batch", "1", "--batch", "3", "--dtype",
                 "float32", "--repeats", "2", "--warmup", "0", "--json",
                 "--markdown", str(table)]) == 0
    records = json.loads(capsys.readouterr().out)
    assert len(records) == 4
    # Closed form per row of 64 fp32 inputs: dense 256 B; 2:4 keeps 32 values (128 B) plus
    # 16 blocks x 3 rank bits = 6 B, or 32 x 2 index bits = 8 B.
    bounds = {"rank": 256 / 134, "index": 256 / 136}
    for r in records:
        assert {"shape", "pattern", "encoding", "batch", "dtype", "speedup", "bound",
                "fraction_of_bound"} <= set(r)
        assert r["shape"] == [32, 64] and r["pattern"] == "2:4" and r["dtype"] == "float32"
        assert r["bound"] == pytest.approx(bounds[r["encoding"]])
        assert r["speedup"] == pytest.approx(r["dense_s"] / r["sparse_s"])
        assert r["fraction_of_bound"] == pytest.approx(r["speedup"] / r["bound"])
        assert r["dense_s"] == min(r["dense_all_s"].values())
    assert table.read_text().count("| 32x64 | 2:4 |") == 4


def test_bench_kernels_times_each_distinct_simd_path(capsys):
    assert main(["bench", "kernels", "--shape", "16x64", "--pattern", "2:4", "--pattern", "1:4",
                 "--encoding", "index", "--batch", "1", "--batch", "3", "--dtype", "float32",
                 "--simd", "auto", "--simd", "avx2", "--simd", "scalar", "--simd", "avx2",
                 "--repeats", "1", "--warmup", "0", "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    vector = (["avx2-group"] if simd_nm.available() else [])
    expected = {"2:4": set(vector + (["avx512-pair"] if simd_nm.wide_available() else [])),
                "1:4": set(vector)}
    for pattern, paths in expected.items():
        batch1 = [r["kernel"] for r in records if r["pattern"] == pattern and r["batch"] == 1]
        assert sorted(batch1) == sorted(paths | {"scalar"}), pattern
        batch3 = [r["kernel"] for r in records if r["pattern"] == pattern and r["batch"] == 3]
        assert sorted(batch3) == sorted(set(vector) | {"scalar"}), pattern


def test_validate_outputs_agree_with_the_simulator(capsys):
    assert main(["validate", "--skip-speed", "--pattern", "4:8", "--encoding", "index",
                 "--check-shape", "24x44", "--json"]) == 0
    checks = json.loads(capsys.readouterr().out)["outputs"]
    kernels = {c["kernel"] for c in checks}
    vector = ["avx2-group"] if simd_nm.available() else []
    gemv = (["avx512-pair"] if simd_nm.wide_available() else []) + vector + ["scalar"]
    assert {"triton", *(f"numba/index gemv/{p}" for p in gemv),
            *(f"numba/index gemm/{p}" for p in vector + ["scalar"])} <= kernels
    assert {c["dtype"] for c in checks} == {"float32", "float16", "bfloat16"}
    assert all(c["ok"] and c["max_relative_error"] <= c["tolerance"] for c in checks)


@pytest.mark.parametrize("args", [
    ["bench", "kernels", "--shape", "12x"],
    ["bench", "kernels", "--shape", "32x64", "--pattern", "8:4"],
    ["bench", "kernels", "--shape", "32x64", "--batch", "0"],
    ["bench", "kernels", "--shape", "32x64", "--repeats", "0"],
    ["validate", "--check-shape", "0x5"],
])
def test_bad_input_is_one_line_and_exit_2(args):
    out = run_cli(*args)
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1 and "error" in out.stderr
