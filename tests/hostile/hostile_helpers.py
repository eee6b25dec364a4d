"""Helpers of the hostile-input suite: the assets folder (valid and broken inputs) and hashes.

Every case runs in a fresh copy of the folder (its working directory), so a case that wrongly
writes, moves or deletes a file is seen by comparing the folder's hashes before and after.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import textwrap
from pathlib import Path

import numpy as np

from accel_sim.config import PRESET_DIR
from compression import formats
from compression.prune_output import OutputWriter
from workloads.models import ARCHITECTURES

SYNTHETIC_SPEC = textwrap.dedent("""\
    name: tiny
    evaluator: synthetic
    hardware: flexible-nm
    workloads: [llama2-7b]
    phases: {prefill: {seq: [128]}}
    axes: {pattern: ["2:4", "4:8"]}
    """)
# A "billion laughs" document: 10 aliases per level, 9 levels (10**9 values once expanded).
BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
    for p, c in zip("abcdefgh", "bcdefghi"))
# A weight of SmolLM2's layer 0 (its real shape) for the mask files.
MASK_WEIGHT = "model.layers.0.self_attn.q_proj"


def snapshot(folder: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file under ``folder`` (folders as 'dir')."""
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        out[rel] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def write_compressed(path: Path) -> None:
    n, k = ARCHITECTURES["smollm2-135m"].weight_shape("self_attn.q_proj")
    w = np.random.default_rng(0).standard_normal((n, k)).astype(np.float32)
    formats.save(path, {MASK_WEIGHT: formats.NMTensor.from_dense(
        w, formats.nm_mask(np.abs(w), "8:16"), "8:16", encoding="rank")})


def write_prune_folder(out: Path) -> None:
    """A one-weight prune output folder (layer 0 q_proj only: partial coverage)."""
    n, k = ARCHITECTURES["smollm2-135m"].weight_shape("self_attn.q_proj")
    w = np.random.default_rng(1).standard_normal((n, k)).astype(np.float32)
    t = formats.NMTensor.from_dense(w, formats.nm_mask(np.abs(w), "8:16"), "8:16")
    with OutputWriter(out) as writer:
        writer.add_layer(0, {MASK_WEIGHT: t}, {MASK_WEIGHT: t.mask()}, {})
        writer.commit([], {})


def _hardware_files(folder: Path) -> None:
    base = (PRESET_DIR / "flexible-nm.yaml").read_text()
    variants = {
        "nan_bw": "dram_bandwidth_gb_s: .nan", "tiny_bw": "dram_bandwidth_gb_s: 1.0e-300",
        "inf_clock": "clock_ghz: .inf", "neg_cores": "num_cores: -4",
        "huge_cores": "num_cores: 10000000000", "bool_rows": "array_rows: true",
        "str_clock": "clock_ghz: fast",
    }
    for name, line in variants.items():
        field = line.split(":")[0]
        kept = "\n".join(x for x in base.splitlines() if not x.startswith(field + ":"))
        (folder / f"{name}.yaml").write_text(f"{kept}\n{line}\n")
    (folder / "dup_key.yaml").write_text(base + "\nclock_ghz: 2.0\n")
    (folder / "list.yaml").write_text("- clock_ghz: 1\n")
    (folder / "binary.yaml").write_bytes(b"\xff\xfe\x00garbage\x81")
    (folder / "bomb.yaml").write_text(BOMB + "name: *i\n")
    (folder / "unicode_pattern.yaml").write_text(base.replace("pattern: ", "pattern: '２:４' #"))


def _spec_files(folder: Path) -> None:
    spec = SYNTHETIC_SPEC
    variants = {
        "name_abs": spec.replace("name: tiny", f"name: {folder.resolve()}"),
        "name_dot": spec.replace("name: tiny", "name: '.'"),
        "name_up": spec.replace("name: tiny", "name: ../x"),
        "workloads_nested": spec.replace("[llama2-7b]", "[[llama2-7b]]"),
        "dup_axis": spec.replace('{pattern: ["2:4", "4:8"]}', '{pattern: ["2:4"], pattern: [4:8]}'),
        "dup_top": spec + "hardware: dense\n",
        "inf_axis": spec.replace('pattern: ["2:4", "4:8"]', "clock_ghz: [.inf]"),
        "nan_axis": spec.replace('pattern: ["2:4", "4:8"]', "dram_bandwidth_gb_s: [.nan]"),
        "huge_seq": spec.replace("seq: [128]", "seq: [1000000000000]"),
        "zero_batch": spec.replace("seq: [128]", "seq: [128], batch: [0]"),
        "ten_million": spec.replace('axes: {pattern: ["2:4", "4:8"]}', "axes:\n" + "".join(
            f"  {field}: {list(range(1, 57))}\n"
            for field in ("num_decoders", "num_cores", "array_rows", "salient_lanes"))),
        "bomb": spec.replace("workloads: [llama2-7b]", BOMB + "workloads: *i"),
        "space_name": spec.replace("name: tiny", "name: 'my sweep'"),
        "list": "- name: tiny\n",
        "bad_yaml": spec + "axes: [unclosed\n",
        "deep": "name: " + "[" * 5000 + "]" * 5000 + "\n",
        "hw_missing": spec.replace("hardware: flexible-nm", "hardware: nowhere.yaml"),
        "partial_masks": spec.replace("evaluator: synthetic\n", "").replace(
            "[llama2-7b]", "[smollm2-135m]") + "masks: {workload: smollm2-135m, dir: prune}\n",
    }
    for name, text in variants.items():
        (folder / f"spec_{name}.yaml").write_text(text)
    (folder / "spec_ok.yaml").write_text(spec)


def _databases(folder: Path) -> None:
    import sqlite3

    from accel_sim.sweep.engine import run_spec
    from accel_sim.sweep.spec import parse_spec
    from accel_sim.sweep.store import open_store

    (folder / "runs").mkdir()
    with open_store(folder / "runs" / "tiny.sqlite") as store:
        run_spec(parse_spec(SYNTHETIC_SPEC), store, workers=1, progress=False)
    shutil.copy(folder / "runs" / "tiny.sqlite", folder / "corrupt_blob.sqlite")
    with sqlite3.connect(folder / "corrupt_blob.sqlite") as conn:
        conn.execute("UPDATE points SET result = X'00112233' WHERE rowid = 1")
    conn.close()
    with sqlite3.connect(folder / "foreign.sqlite") as conn:
        conn.execute("CREATE TABLE t (x)")
    conn.close()


def build_assets(folder: Path) -> Path:
    """Write every asset of the suite into ``folder``."""
    _hardware_files(folder)
    _spec_files(folder)
    _databases(folder)
    write_compressed(folder / "w.safetensors")
    write_prune_folder(folder / "prune")
    (folder / "user").mkdir()
    (folder / "user" / "notes.txt").write_text("a user's own file\n")
    (folder / "other_kind").mkdir()
    (folder / "other_kind" / ".nmsim-output.json").write_text(
        json.dumps({"tool": "nmsim", "kind": "something-else", "files": ["notes.txt"]}))
    (folder / "other_kind" / "notes.txt").write_text("kept\n")
    (folder / "a_file.txt").write_text("not a folder\n")
    return folder
