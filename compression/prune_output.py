"""The ``nmsim prune --out DIR`` folder: written one decoder layer at a time, read by the simulator.

Layout (``index.json`` ``"format": "nmsim-prune-output"``, version 1)::

    DIR/index.json                      layers in order: {"layer", "compressed", "masks", "tensors"}
    DIR/layers/NNNNN.safetensors        layer NNNNN's linears in the shared format (formats.save);
                                        only for an N:M bulk (an unstructured bulk has no N:M form)
    DIR/layers/NNNNN.masks.safetensors  keep masks bit-packed along the input dimension
                                        (numpy packbits, little bit order: uint8[out, ceil(in/8)],
                                        shapes in the file's "nmsim-masks" metadata), NAME (bulk)
                                        and NAME.salient; NAME.bias (fp32) where mean matching
                                        added an output bias; NORM.gain (fp32), the RMSNorm gains
                                        equalization changed (NORM a module name such as
                                        model.layers.0.input_layernorm)
    DIR/layer_stats.csv, DIR/metrics.json

Names are module names without ``.weight`` (``model.layers.0.self_attn.q_proj``). DIR must be
new. The writer streams into a hidden staging folder inside DIR (nothing is written outside
DIR), so a layer leaves memory as soon as it is written; the commit moves the files into DIR,
``index.json`` last, so DIR is a prune output (has an index) only once it is complete. A run
that fails leaves nothing: the staging folder and DIR, which it created, are removed.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Self

import numpy as np

from compression import formats

OUTPUT_FORMAT = "nmsim-prune-output"
OUTPUT_VERSION = 1
INDEX_FILE = "index.json"
LAYER_DIR = "layers"
SALIENT_SUFFIX = ".salient"
BIAS_SUFFIX = ".bias"
GAIN_SUFFIX = ".gain"
_MASKS_KEY = "nmsim-masks"


class OutputWriter:
    """Streams layers into a staging folder inside ``out``; :meth:`commit` moves them in.

    Use it as a context manager: leaving the block without a commit (an error, an interrupt)
    removes the staging folder, so nothing partial is left behind.
    """

    def __init__(self, out: str | Path):
        self.out = Path(out)
        if self.out.exists() or self.out.is_symlink():
            raise ValueError(f"output folder {self.out} already exists")
        self.out.mkdir(parents=True)
        self.staging = Path(tempfile.mkdtemp(prefix=".nmsim-staging-", dir=self.out))
        (self.staging / LAYER_DIR).mkdir()
        self.committed = False
        self.layers: list[dict] = []

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.staging.exists():
            shutil.rmtree(self.staging, ignore_errors=True)
        if not self.committed and self.out.is_dir() and not any(self.out.iterdir()):
            self.out.rmdir()

    def add_layer(self, index: int, weights: dict[str, formats.SparseWeight],
                  masks: dict[str, np.ndarray], biases: dict[str, np.ndarray],
                  gains: dict[str, np.ndarray] | None = None) -> None:
        """Write decoder layer ``index``: compressed weights, bool masks (``NAME``,
        ``NAME.salient``), output biases and changed norm gains by module name."""
        from safetensors.numpy import save_file

        stem = f"{LAYER_DIR}/{index:05d}"
        compressed = None
        if weights:
            compressed = f"{stem}.safetensors"
            formats.save(self.staging / compressed, weights)
        arrays = {name: np.packbits(mask, axis=-1, bitorder="little")
                  for name, mask in masks.items()}
        arrays.update({name + BIAS_SUFFIX: np.asarray(b, np.float32) for name, b in biases.items()})
        arrays.update({name + GAIN_SUFFIX: np.asarray(g, np.float32)
                       for name, g in (gains or {}).items()})
        shapes = {name: list(mask.shape) for name, mask in masks.items()}
        save_file(arrays, str(self.staging / f"{stem}.masks.safetensors"),
                  metadata={_MASKS_KEY: json.dumps({"version": OUTPUT_VERSION, "shapes": shapes})})
        self.layers.append({"layer": index, "compressed": compressed,
                            "masks": f"{stem}.masks.safetensors",
                            "tensors": sorted(n for n in masks if not n.endswith(SALIENT_SUFFIX))})

    def commit(self, records: list[dict], metrics: dict) -> Path:
        """Write the index, ``layer_stats.csv`` and ``metrics.json``, then move every file into
        ``out`` (the index last)."""
        import pandas as pd

        pd.DataFrame(records).to_csv(self.staging / "layer_stats.csv", index=False)
        (self.staging / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        index = {"format": OUTPUT_FORMAT, "version": OUTPUT_VERSION, "layers": self.layers}
        (self.staging / INDEX_FILE).write_text(json.dumps(index, indent=1) + "\n")
        for name in (LAYER_DIR, "layer_stats.csv", "metrics.json", INDEX_FILE):
            os.replace(self.staging / name, self.out / name)
        self.staging.rmdir()
        self.committed = True
        return self.out


def read_index(folder: str | Path) -> dict:
    """The checked ``index.json`` of a prune output folder (one-line ValueError otherwise)."""
    file = Path(folder) / INDEX_FILE
    if not file.is_file():
        raise ValueError(f"{folder} is not a prune output folder (no {INDEX_FILE})")
    try:
        index = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{file} is not readable JSON: {exc}") from None
    if not isinstance(index, dict) or index.get("format") != OUTPUT_FORMAT:
        raise ValueError(f"{file}: not an {OUTPUT_FORMAT} index")
    if index.get("version") != OUTPUT_VERSION:
        raise ValueError(f"{file}: version {index.get('version')!r} is not supported (this build "
                         f"reads version {OUTPUT_VERSION})")
    layers = index.get("layers")
    if not isinstance(layers, list):
        raise ValueError(f"{file}: 'layers' must be a list of layer entries")
    for i, entry in enumerate(layers):
        if not (isinstance(entry, dict) and {"compressed", "masks"} <= set(entry)
                and isinstance(entry.get("tensors", []), list)):
            raise ValueError(f"{file}: layers[{i}] must be an object with 'compressed', 'masks' "
                             "and 'tensors'")
        for key in ("compressed", "masks"):
            if entry[key] is not None:
                entry_path(folder, entry, key, i)  # raises unless inside the folder
    return index


def entry_path(folder: str | Path, entry: dict, key: str, i: int = 0) -> Path:
    """The file an index entry names, which must be a relative path inside ``folder``."""
    folder = Path(folder)
    name = entry[key]
    if not isinstance(name, str) or not name or Path(name).is_absolute():
        raise ValueError(f"{folder / INDEX_FILE}: layers[{i}].{key} must be a relative file name "
                         f"inside the folder, got {name!r}")
    path = folder / name
    if not path.resolve().is_relative_to(folder.resolve()):
        raise ValueError(f"{folder / INDEX_FILE}: layers[{i}].{key} {name!r} points outside "
                         f"the folder {folder}; refused")
    return path


def covered_weights(folder: str | Path) -> set[str]:
    """Module names the folder holds masks for (from its index, without reading the layers)."""
    return {str(name) for entry in read_index(folder)["layers"]
            for name in entry.get("tensors", [])}


def is_output_folder(path: str | Path) -> bool:
    return (Path(path) / INDEX_FILE).is_file()


def compressed_files(folder: str | Path) -> list[Path]:
    """The folder's compressed layer files, in layer order (empty for an unstructured bulk)."""
    folder = Path(folder)
    return [entry_path(folder, e, "compressed", i)
            for i, e in enumerate(read_index(folder)["layers"]) if e["compressed"]]


def load_compressed(path: str | Path) -> dict[str, formats.SparseWeight]:
    """Compressed weights by module name from a prune output folder (all layers) or from one
    file written by :func:`formats.save`."""
    path = Path(path)
    if not path.is_dir():
        return formats.load(path)
    weights = {}
    for file in compressed_files(path):
        weights.update(formats.load(file))
    return weights


def bulk_pattern(folder: str | Path) -> str | None:
    """The N:M pattern of the folder's bulk (from its first layer's header), or None."""
    files = compressed_files(folder)
    if not files:
        return None
    tensors = formats.read_header(files[0]).get("tensors", {})
    return str(formats.Pattern.parse(next(iter(tensors.values()))["bulk"].get("pattern"))) \
        if tensors else None


def _mask_file_arrays(folder: str | Path):
    """Yield (key, array, shapes) of every layer's mask file (one-line ValueError if unreadable)."""
    from safetensors import safe_open

    folder = Path(folder)
    for i, entry in enumerate(read_index(folder)["layers"]):
        file = entry_path(folder, entry, "masks", i)
        try:
            with safe_open(str(file), framework="numpy") as handle:
                shapes = json.loads((handle.metadata() or {})[_MASKS_KEY])["shapes"]
                arrays = [(key, handle.get_tensor(key)) for key in handle.keys()]  # noqa: SIM118
        except Exception as exc:  # noqa: BLE001 - any unreadable mask file is reported the same
            raise ValueError(f"{file} is not a readable mask file: {type(exc).__name__}: "
                             f"{exc}") from None
        for key, array in arrays:
            yield key, array, shapes


def load_masks(folder: str | Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(bool masks ``NAME`` / ``NAME.salient``, fp32 output biases ``NAME``) of every layer."""
    masks, biases = {}, {}
    for key, array, shapes in _mask_file_arrays(folder):
        if key.endswith(BIAS_SUFFIX):
            biases[key[: -len(BIAS_SUFFIX)]] = array
        elif not key.endswith(GAIN_SUFFIX):
            masks[key] = np.unpackbits(array, axis=-1, count=shapes[key][1],
                                       bitorder="little").view(bool)
    return masks, biases


def load_gains(folder: str | Path) -> dict[str, np.ndarray]:
    """The RMSNorm gains equalization changed (fp32, by norm module name); empty without it."""
    return {key[: -len(GAIN_SUFFIX)]: array for key, array, _ in _mask_file_arrays(folder)
            if key.endswith(GAIN_SUFFIX)}
