"""`nmsim` command line: output contract and one-line errors with exit code 2."""

import json
import subprocess
import sys

import pytest

from compression.formats import pattern_summary
from nmsim.cli import main


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "nmsim", *args], capture_output=True, text=True,
                          check=False)


def test_formats_json_records(capsys):
    assert main(["formats", "--json", "--pattern", "16:256", "--pattern", "2:4"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["pattern"] for r in records] == ["1:2", "2:4", "4:8", "8:16", "16:32", "16:256"]
    by = {r["pattern"]: r for r in records}
    assert (by["2:4"]["configurations"], by["2:4"]["rank_bits_per_element"]) == (6, 0.75)
    assert (by["8:16"]["configurations"], by["8:16"]["rank_bits_per_element"]) == (12870, 0.875)
    assert (by["16:32"]["configurations"], by["16:32"]["rank_bits_per_element"]) == (
        601080390, 0.9375)
    for r in records:
        assert {"pattern", "n", "m", "configurations", "rank_bits_per_element",
                "index_bits_per_element", "bitmask_bits_per_element"} <= set(r)
        assert r == pattern_summary(r["pattern"])


def test_formats_table_lists_every_pattern():
    out = run_cli("formats")
    assert out.returncode == 0
    for text in ("1:2", "2:4", "4:8", "8:16", "16:32", "12870", "601080390", "0.9375"):
        assert text in out.stdout


@pytest.mark.parametrize("bad", ["8:4", "0:4", "a:b"])
def test_invalid_pattern_is_one_line_and_exit_2(bad):
    out = run_cli("formats", "--pattern", bad)
    assert out.returncode == 2
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "invalid pattern" in lines[0] and bad in lines[0]


def test_unknown_subcommand_and_option_exit_2():
    for args in (["nosuch"], ["formats", "--bogus"]):
        out = run_cli(*args)
        assert out.returncode == 2
        assert len(out.stderr.strip().splitlines()) == 1
