"""Loading a compression run's masks for the simulator (``nmsim simulate --masks DIR``)."""

from __future__ import annotations

from pathlib import Path

from compression.formats import load

COMPRESSED_FILE = "compressed.safetensors"


def load_masks(path: str | Path) -> dict:
    """Compressed weights by module name from ``DIR/compressed.safetensors`` (or a file path),
    as written by ``nmsim prune --out DIR``; fully validated by ``compression.formats.load``."""
    path = Path(path)
    file = path / COMPRESSED_FILE if path.is_dir() else path
    if not file.is_file():
        raise ValueError(f"--masks: no {COMPRESSED_FILE} in {path}")
    weights = load(file)
    if not weights:
        raise ValueError(f"--masks: {file} holds no tensors")
    return weights


def match_weights(gemms, weights: dict) -> dict:
    """The subset of ``weights`` keyed by the GEMMs' ``weight_name``; raises when none match."""
    wanted = {g.weight_name for g in gemms if g.weight_name}
    matched = {name: w for name, w in weights.items() if name in wanted}
    if not matched:
        sample = ", ".join(sorted(weights)[:3])
        raise ValueError(f"--masks: none of the {len(weights)} tensors ({sample}, ...) names a "
                         "weight of this workload (expected e.g. model.layers.0.self_attn.q_proj)")
    return matched
