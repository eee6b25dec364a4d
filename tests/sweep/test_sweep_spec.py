"""Sweep specs: expansion, the default spec, and bad input listed field by field (exit 2)."""

import subprocess
import sys
import textwrap

import pytest

from accel_sim.config import SWEEPABLE_FIELDS, load_hardware
from accel_sim.sweep.spec import SpecError, baseline_twin, load_spec, parse_spec, point_key

GOOD = textwrap.dedent("""\
    name: small
    hardware: flexible-nm
    workloads: [llama2-7b]
    phases:
      prefill: {seq: [128, 256]}
      decode: {batch: 4, kv_len: 512}
    axes:
      pattern: [2:4, 8:16]
      metadata:
        - {encoding: rank, decoder: rank_pipeline}
        - {encoding: index, decoder: direct}
      num_decoders: [8, 32]
    baseline: {pattern: dense, supported_patterns: []}
    """)


def test_expansion_is_the_cross_product_plus_twins():
    spec = parse_spec(GOOD)
    hw = spec.hardware_settings()
    assert len(hw) == 2 * 2 * 2
    assert {"pattern": "8:16", "encoding": "index", "decoder": "direct", "num_decoders": 8} in hw
    work = spec.workload_settings()
    assert work == [
        {"workload": "llama2-7b", "phase": "prefill", "seq": 128, "batch": 1},
        {"workload": "llama2-7b", "phase": "prefill", "seq": 256, "batch": 1},
        {"workload": "llama2-7b", "phase": "decode", "batch": 4, "kv_len": 512},
    ]
    points = spec.points()
    keys = [point_key(p) for p in points]
    assert len(keys) == len(set(keys))
    sparse = [p for p in points if p["hw"]["pattern"] != "dense"]
    assert len(sparse) == 8 * 3
    # Each sparse point's dense twin is in the sweep; twins differing only in the overridden
    # fields coincide where the baseline covers them (here pattern only, so one per encoding).
    assert all(point_key(baseline_twin(p)) in set(keys) for p in sparse)
    for p in points:
        load_hardware(p["hardware"]).replace(**p["hw"])  # every point is a valid design


def test_pattern_without_quotes_is_a_pattern_not_base60():
    spec = parse_spec(GOOD)
    assert spec.axes["pattern"] == ("2:4", "8:16")


def test_default_spec_is_valid_and_large_enough():
    spec = load_spec(None)
    assert {"llama2-7b", "llama2-13b"} <= set(spec.workloads)
    assert set(spec.phases) == {"prefill", "decode"}
    assert len(spec.hardware_settings()) >= 200 or len(spec.points()) >= 200


def test_every_problem_is_listed_at_once():
    bad = textwrap.dedent("""\
        hardware: flexible-nm
        workloads: [llama2-7b, gpt-9]
        phases:
          prefill: {seq: [0, 128], tokens: 3}
          training: {}
        axes:
          pattern: [2:4, 5:4]
          warp_speed: [1, 2]
          num_decoders: [-1]
        colour: blue
        """)
    with pytest.raises(SpecError) as info:
        parse_spec(bad, "bad.yaml")
    problems = info.value.problems
    text = str(info.value)
    for fragment in ("colour", "workloads[1]", "gpt-9", "phases.prefill.seq",
                     "phases.prefill.tokens", "phases.training", "axes.pattern[1]", "5:4",
                     "axes.warp_speed", "axes.num_decoders[0]"):
        assert fragment in text, fragment
    assert len(problems) >= 8
    assert "\n" not in text


def test_clashing_combinations_are_reported():
    spec = textwrap.dedent("""\
        hardware: flexible-nm
        workloads: [llama2-7b]
        phases: {decode: {batch: 1}}
        axes:
          encoding: [index, rank]
          decoder: [direct, rank_pipeline]
        """)
    with pytest.raises(SpecError, match="2 combination"):
        parse_spec(spec)


def test_sweepable_fields_are_accepted_as_axes():
    base = load_hardware("flexible-nm")
    for name in ("pattern", "encoding", "decoder", "num_decoders", "mux_style", "array_rows",
                 "array_cols", "dtype", "dram_bandwidth_gb_s", "weight_buffer_kib"):
        assert name in SWEEPABLE_FIELDS
        value = getattr(base, name)
        parse_spec(textwrap.dedent(f"""\
            hardware: flexible-nm
            workloads: [llama2-7b]
            phases: {{decode: {{batch: 1}}}}
            axes: {{{name}: [{value!r}]}}
            """).replace("'", '"'))


@pytest.mark.parametrize("text, fragment", [
    ("[1, 2", "not valid YAML"),
    ("- a\n- b\n", "must be a mapping"),
    ("name: x\n", "hardware: missing"),
])
def test_malformed_specs(text, fragment):
    with pytest.raises(SpecError, match=fragment):
        parse_spec(text)


def test_cli_bad_spec_exit_2_one_line_nothing_written(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text("hardware: flexible-nm\nworkloads: [nope]\nphases: {decode: {}}\n"
                    "axes: {pattern: [2:4, 9:4], bogus: [1]}\n")
    db = tmp_path / "r.sqlite"
    out = subprocess.run([sys.executable, "-m", "nmsim", "sweep", "--spec", str(spec), "--db",
                          str(db), "--out", str(tmp_path / "rep")],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1
    for fragment in ("workloads[0]", "axes.pattern[1]", "axes.bogus", "3 problems"):
        assert fragment in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]
