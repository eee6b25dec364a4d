"""A LLaMa-family model's shapes from its Hugging Face ``config.json`` (``--workload PATH``).

Llama-2/3, Mistral and Qwen2 checkpoints share the decoder layout :mod:`workloads.models`
simulates (q/k/v/o projections with grouped-query attention, a gated SiLU MLP, an lm_head); their
``config.json`` names the shapes with the same keys (``transformers`` ``LlamaConfig``,
``MistralConfig``, ``Qwen2Config``). Other families (mixture-of-experts, GPT-2, ...) have other
GEMMs and are refused, naming the file and the field.
"""

from __future__ import annotations

import json
from pathlib import Path

from workloads.models import ModelArch

# model_type values whose decoder layer has the LLaMa GEMMs (biases and norms do not change them).
LLAMA_FAMILY = ("llama", "mistral", "qwen2")
# config.json key -> ModelArch field; every one is required.
REQUIRED_FIELDS = {
    "hidden_size": "hidden",
    "intermediate_size": "intermediate",
    "num_attention_heads": "heads",
    "num_hidden_layers": "layers",
    "vocab_size": "vocab",
}
# A config.json is a few kB; anything far larger is not one.
MAX_CONFIG_BYTES = 1 << 20


def load_hf_config(path: str | Path) -> ModelArch:
    """The architecture a ``config.json`` describes; a ValueError names the file and the field."""
    path = Path(path)
    raw = _read(path)
    model_type = raw.get("model_type")
    if model_type not in LLAMA_FAMILY:
        raise ValueError(f"{path}: model_type {model_type!r} is not LLaMa-family (supported: "
                         f"{', '.join(LLAMA_FAMILY)})")
    fields = {}
    for key, field_name in REQUIRED_FIELDS.items():
        fields[field_name] = _positive_int(path, raw, key, required=True)
    # LlamaConfig's default: no num_key_value_heads means one KV head per query head (MHA).
    fields["kv_heads"] = _positive_int(path, raw, "num_key_value_heads") or fields["heads"]
    fields["explicit_head_dim"] = _positive_int(path, raw, "head_dim")
    name = path.parent.name if path.name == "config.json" and path.parent.name else path.stem
    try:
        return ModelArch(name=name, source=f"{model_type} config.json at {path}", **fields)
    except ValueError as exc:
        raise ValueError(f"{path}: {str(exc).removeprefix(name + ': ')}") from None


def _read(path: Path) -> dict:
    if not path.is_file():
        raise ValueError(f"{path}: no such config.json")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ValueError(f"{path}: larger than {MAX_CONFIG_BYTES >> 20} MiB, not a config.json")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a config.json is a JSON object of fields")  # noqa: TRY004 - user input, exit 2
    return raw


def _positive_int(path: Path, raw: dict, key: str, required: bool = False) -> int | None:
    """``raw[key]`` as a positive integer; None when absent (or null) and not required."""
    value = raw.get(key)
    if value is None:
        if required:
            raise ValueError(f"{path}: missing field '{key}'")
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{path}: field '{key}' must be a positive integer, got {value!r}")
    return value
