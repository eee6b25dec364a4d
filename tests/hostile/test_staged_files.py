"""Every file the tools write is staged under a unique hidden name: a user's file that happens to
be called like a fixed side name (``X.tmp``, ``X.tmp.png``) is never overwritten or moved, and
a failed write leaves the earlier file and no staging file."""

import numpy as np
import pytest

from accel_sim.config import load_hardware, save_hardware
from compression import formats as F
from workloads.files import staged_file

USER_BYTES = b"a user's own file\n"


def test_staged_file_replaces_only_its_target(tmp_path):
    target = tmp_path / "report.md"
    target.write_text("old")
    side_names = ["report.md.tmp", ".report.md.tmp", "report.md.tmp.md"]
    for name in side_names:
        (tmp_path / name).write_bytes(USER_BYTES)
    with staged_file(target) as staged:
        assert staged.parent == tmp_path and staged.suffix == ".md" and staged != target
        assert target.read_text() == "old"  # not replaced before the block ends
        staged.write_text("new")
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*side_names, "report.md"])
    assert all((tmp_path / name).read_bytes() == USER_BYTES for name in side_names)


def test_a_failed_write_keeps_the_old_file_and_leaves_no_staging_file(tmp_path):
    target = tmp_path / "grid.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), staged_file(target) as staged:
        staged.write_text("half")
        raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["grid.json"]


def test_writers_leave_a_users_tmp_file_alone(tmp_path):
    # Two of the writers that used fixed side names (path + ".tmp"): a hardware YAML and a
    # compressed-weights file, each next to a user's file of that side name.
    yaml_path, weights_path = tmp_path / "hw.yaml", tmp_path / "w.safetensors"
    for path in (yaml_path, weights_path):
        (tmp_path / (path.name + ".tmp")).write_bytes(USER_BYTES)
    save_hardware(load_hardware("systolic-nm"), yaml_path)
    weight = np.random.default_rng(0).standard_normal((4, 16)).astype(np.float32)
    mask = F.nm_mask(np.abs(weight), F.Pattern.parse("2:4"))
    F.save(weights_path, {"w": F.NMTensor.from_dense(weight, mask, F.Pattern.parse("2:4"),
                                                     "index")})
    assert load_hardware(str(yaml_path)).name == load_hardware("systolic-nm").name
    assert set(F.load(weights_path)) == {"w"}
    for path in (yaml_path, weights_path):
        assert (tmp_path / (path.name + ".tmp")).read_bytes() == USER_BYTES
    assert len(list(tmp_path.iterdir())) == 4
