"""Export a prune output as a Hugging Face model folder that other tools load, and read masks back.

``export(PRUNE_DIR, OUT)`` rebuilds the pruned model: the base model named in the prune output's
``metrics.json`` is loaded, and every pruned linear is replaced by its stored weight (the N:M bulk
decoded from the compressed layer files, plus the salient side-car), with the output biases of
mean matching and the RMSNorm gains of equalization. The folder holds::

    OUT/config.json               the base config; quantization_config: a compressed-tensors
                                  sparsity description (format "dense", sparsity_structure N:M)
    OUT/model.safetensors         every weight in the model's dtype, pruned linears as stored
    OUT/tokenizer.json, ...       the base model's tokenizer
    OUT/nmsim/                    the prune output's index, masks and metrics (no compressed
                                  layers): exact keep masks for ``nmsim prune --masks-from OUT``

Storage is dense for every pattern, 2:4 included: compressed-tensors removed its Sparse24 bitmask
compressor after 0.14 (0.20's ModelCompressor refuses Sparse24 configs) and vLLM removed Sparse24
serving (vllm-project/vllm PR 36799, March 2026), so a ``sparse-24-bitmask`` folder would load in
neither transformers 5.x nor current vLLM. The sparsity is described with compressed-tensors'
``DenseSparsityConfig`` (targets, ignore, global sparsity, structure) so that tools reading
the description see the pattern.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from compression import formats, prune_output
from compression.pipeline import LayerMask
from workloads.models import LINEAR_GROUPS

NMSIM_SUBDIR = "nmsim"
METRICS_FILE = "metrics.json"
# LlamaConfig flags that give every attention / MLP linear an output bias.
_BIAS_FLAGS = {"self_attn": "attention_bias", "mlp": "mlp_bias"}


def check_out_folder(out: str | Path) -> Path:
    """``out`` may be new or an empty folder (one-line ValueError otherwise)."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"output {out} already exists and is not an empty folder")
    return out


def read_metrics(folder: str | Path) -> dict:
    """The checked index's companion ``metrics.json`` of a prune output folder."""
    prune_output.read_index(folder)
    file = Path(folder) / METRICS_FILE
    try:
        metrics = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{file} is not readable JSON: {exc}") from None
    missing = {"model", "source", "pattern", "salient"} - set(metrics)
    if missing:
        raise ValueError(f"{file} lacks {', '.join(sorted(missing))}")
    return metrics


def base_model_ref(metrics: dict) -> str:
    """What :func:`workloads.loading.load_model` takes to reload the model a prune started from."""
    from workloads.loading import SMOLLM2_NAME

    return SMOLLM2_NAME if metrics["model"] == SMOLLM2_NAME else metrics["source"]


def prunable_shapes(model) -> dict[str, tuple[int, int]]:
    """Module name -> weight shape of every linear the pipeline prunes."""
    shapes = {}
    for index, layer in enumerate(model.model.layers):
        for _, names in LINEAR_GROUPS:
            for name in names:
                shapes[f"model.layers.{index}.{name}"] = tuple(layer.get_submodule(name).weight.shape)
    return shapes


def _check_exportable(folder: Path, metrics: dict) -> None:
    if metrics["pattern"].endswith("%"):
        raise ValueError(f"{folder} has an unstructured bulk ({metrics['pattern']}): its folder "
                         "stores masks, not pruned weights, so there is no model to export")
    if metrics.get("equalize_alpha") is not None and not prune_output.load_gains(folder):
        raise ValueError(f"{folder} was equalized but stores no RMSNorm gains (written before "
                         "they were stored): prune again to export it")


def apply_prune_output(model, folder: str | Path) -> None:
    """Write the prune output's stored weights, biases and norm gains into ``model`` (its base)."""
    import torch

    folder = Path(folder)
    weights = prune_output.load_compressed(folder)
    _, biases = prune_output.load_masks(folder)
    shapes = prunable_shapes(model)
    for name, sparse in weights.items():
        if shapes.get(name) != tuple(sparse.shape):
            raise ValueError(f"{folder} does not fit model {model.config.name_or_path}: {name} "
                             f"is {sparse.shape}, the model's is {shapes.get(name)}")
    dtype = next(model.parameters()).dtype
    with torch.no_grad():
        for name, sparse in weights.items():
            model.get_submodule(name).weight.copy_(torch.from_numpy(sparse.to_dense()).to(dtype))
        for name, gain in prune_output.load_gains(folder).items():
            model.get_submodule(name).weight.copy_(torch.from_numpy(gain).to(dtype))
        _add_biases(model, biases, dtype)


def _add_biases(model, biases: dict[str, np.ndarray], dtype) -> None:
    """Mean matching's output biases; LLaMa configs switch biases on per block (attention, MLP),
    so the other linears of a block that has any get zero biases."""
    import torch

    for part, flag in _BIAS_FLAGS.items():
        names = [n for n in prunable_shapes(model) if f".{part}." in n]
        if not any(n in biases for n in names):
            continue
        setattr(model.config, flag, True)
        for name in names:
            linear = model.get_submodule(name)
            value = (torch.from_numpy(biases[name]) if name in biases
                     else torch.zeros(linear.out_features))
            linear.bias = torch.nn.Parameter(value.to(dtype), requires_grad=False)


def sparsity_description(metrics: dict, masks: dict[str, np.ndarray]) -> dict:
    """config.json's ``quantization_config``: compressed-tensors' dense sparsity description."""
    import compressed_tensors
    from compressed_tensors.base import (
        COMPRESSION_VERSION_NAME,
        QUANTIZATION_METHOD,
        QUANTIZATION_METHOD_NAME,
        SPARSITY_CONFIG_NAME,
    )
    from compressed_tensors.config import CompressionFormat, DenseSparsityConfig

    kept = sum(int(m.sum()) for m in masks.values())
    total = sum(m.size for n, m in masks.items() if not n.endswith(prune_output.SALIENT_SUFFIX))
    structure = metrics["pattern"] if metrics["salient"] is None else "unstructured"
    config = DenseSparsityConfig(global_sparsity=1 - kept / total, sparsity_structure=structure,
                                 targets=["Linear"], ignore=["lm_head"])
    return {QUANTIZATION_METHOD_NAME: QUANTIZATION_METHOD,
            COMPRESSION_VERSION_NAME: compressed_tensors.__version__,
            "format": CompressionFormat.dense.value, SPARSITY_CONFIG_NAME: config.model_dump()}


def _copy_masks(folder: Path, target: Path) -> None:
    """The prune output without its compressed layers: index (compressed -> None), masks, metrics."""
    index = prune_output.read_index(folder)
    (target / prune_output.LAYER_DIR).mkdir(parents=True)
    for entry in index["layers"]:
        shutil.copyfile(folder / entry["masks"], target / entry["masks"])
        entry["compressed"] = None
    shutil.copyfile(folder / METRICS_FILE, target / METRICS_FILE)
    (target / prune_output.INDEX_FILE).write_text(json.dumps(index, indent=1) + "\n")


def export(folder: str | Path, out: str | Path, model: str | None = None) -> dict:
    """Write the pruned model of prune output ``folder`` to ``out`` (see the module docstring);
    ``model`` overrides the base model recorded in ``metrics.json``. Returns a summary."""
    from workloads.loading import load_model

    folder, out = Path(folder), check_out_folder(out)
    metrics = read_metrics(folder)
    _check_exportable(folder, metrics)
    masks, _ = prune_output.load_masks(folder)
    loaded = load_model(model or base_model_ref(metrics))
    apply_prune_output(loaded.model, folder)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    if getattr(loaded.model, "hf_quantizer", None) is not None:  # a GGUF, dequantized on load
        loaded.model.hf_quantizer = None
        loaded.model.config.quantization_config = None
    try:
        loaded.model.save_pretrained(staging)
        loaded.tokenizer.save_pretrained(staging)
        config_file = staging / "config.json"
        config = json.loads(config_file.read_text())
        config.pop("quantization_config", None)
        config["quantization_config"] = sparsity_description(metrics, masks)
        config_file.write_text(json.dumps(config, indent=2) + "\n")
        _copy_masks(folder, staging / NMSIM_SUBDIR)
        if out.exists():  # an empty folder the user made: fill it
            for item in staging.iterdir():
                item.rename(out / item.name)
            staging.rmdir()
        else:
            staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {"model": loaded.name, "pattern": metrics["pattern"], "salient": metrics["salient"],
            "global_sparsity": config["quantization_config"]["sparsity_config"]["global_sparsity"],
            "out": str(out)}


def _masks_folder(folder: Path) -> Path:
    if prune_output.is_output_folder(folder / NMSIM_SUBDIR):
        return folder / NMSIM_SUBDIR
    if prune_output.is_output_folder(folder):
        return folder
    raise ValueError(f"{folder} is neither an nmsim export nor a prune output folder")


def read_masks(folder: str | Path) -> tuple[dict[str, LayerMask], dict]:
    """Masks by module name from an export (``nmsim export``) or a prune output folder, and the
    metrics of the prune that chose them."""
    source = _masks_folder(Path(folder))
    metrics = read_metrics(source)
    bools, _ = prune_output.load_masks(source)
    masks = {name: LayerMask(mask, bools.get(name + prune_output.SALIENT_SUFFIX))
             for name, mask in bools.items() if not name.endswith(prune_output.SALIENT_SUFFIX)}
    return masks, metrics


def check_masks(masks: dict[str, LayerMask], metrics: dict, model, model_name: str, cfg,
                folder: str | Path) -> None:
    """Reused masks must come from this model, fit its linears and follow the recipe's pattern
    and side-car (one-line ValueError naming the mismatch)."""
    if metrics["model"] != model_name:
        raise ValueError(f"masks in {folder} are of model {metrics['model']}, not {model_name}")
    recorded = (metrics["pattern"], metrics["salient"])
    wanted = (str(cfg.target), str(cfg.salient) if cfg.salient else None)
    if recorded != wanted:
        raise ValueError(f"masks in {folder} are {recorded[0]} with side-car {recorded[1]}, "
                         f"the recipe asks {wanted[0]} with side-car {wanted[1]}")
    shapes = prunable_shapes(model)
    if set(masks) != set(shapes):
        raise ValueError(f"masks in {folder} name {len(masks)} linears, the model has "
                         f"{len(shapes)} (e.g. {min(set(masks) ^ set(shapes))})")
    for name, mask in masks.items():
        if mask.bulk.shape != shapes[name]:
            raise ValueError(f"mask {name} in {folder} is {mask.bulk.shape}, the model's weight "
                             f"is {shapes[name]}")
        if cfg.target.structured:
            formats.check_nm_mask(mask.bulk, cfg.target.pattern)
