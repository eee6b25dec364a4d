"""Loading a compression run's masks for the simulator (``nmsim simulate --masks DIR``).

``nmsim prune --out DIR`` writes ``DIR/compressed.safetensors`` (values + metadata, read with
``compression.formats.load``) and ``DIR/masks.safetensors`` (bool keep masks ``NAME`` and
``NAME.salient``). Either feeds the simulator: the timing depends on the pattern, tail and
side-car placement, not on the values, so bool masks are compressed with zero values in the
hardware's encoding after their N:M pattern is recognised among the hardware's patterns.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from compression.formats import (
    CSRTensor,
    FormatError,
    NMTensor,
    Pattern,
    SparseWeight,
    check_nm_mask,
    load,
)

COMPRESSED_FILE = "compressed.safetensors"
MASKS_FILE = "masks.safetensors"
SALIENT_SUFFIX = ".salient"


def load_masks(path: str | Path, hw=None) -> dict:
    """Compressed weights by module name from a prune folder or one of its two files.

    ``compressed.safetensors`` is preferred; a bool ``masks.safetensors`` needs ``hw`` (its
    supported patterns and encoding)."""
    path = Path(path)
    if path.is_dir():
        file = path / COMPRESSED_FILE
        if not file.is_file():
            file = path / MASKS_FILE
    else:
        file = path
    if not file.is_file():
        raise ValueError(f"--masks: no {COMPRESSED_FILE} or {MASKS_FILE} in {path}")
    if file.name == MASKS_FILE:
        if hw is None:
            raise ValueError("--masks: bool masks need the hardware's patterns to be read")
        weights = weights_from_bool_masks(_read_bool_masks(file), hw)
    else:
        weights = load(file)
    if not weights:
        raise ValueError(f"--masks: {file} holds no tensors")
    return weights


def _read_bool_masks(file: Path) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        arrays = load_file(str(file))
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"--masks: {file} is not a readable safetensors file: {exc}") from None
    bad = [name for name, a in arrays.items() if a.dtype != np.bool_ or a.ndim != 2]
    if bad:
        raise ValueError(f"--masks: {file}: '{bad[0]}' is not a 2-D bool mask")
    return arrays


def _recognise(mask: np.ndarray, patterns, name: str) -> tuple[Pattern, str]:
    for pattern in patterns:
        for tail in ("dense", "pad"):
            try:
                check_nm_mask(mask, pattern, tail)
            except FormatError:
                continue
            return pattern, tail
    have = ", ".join(map(str, patterns)) or "none (dense hardware)"
    raise ValueError(f"--masks: mask '{name}' is not N:M in any pattern the hardware supports "
                     f"({have})")


def weights_from_bool_masks(masks: dict[str, np.ndarray], hw) -> dict[str, SparseWeight]:
    """Zero-valued compressed weights with the masks' positions (bulk + optional side-car)."""
    out = {}
    for name, mask in masks.items():
        if name.endswith(SALIENT_SUFFIX):
            continue
        pattern, tail = _recognise(mask, hw.supported, name)
        bulk = NMTensor.from_dense(np.zeros(mask.shape, np.float32), mask, pattern,
                                   encoding=hw.encoding, tail=tail)
        side = masks.get(name + SALIENT_SUFFIX)
        salient = None
        if side is not None:
            if side.shape != mask.shape:
                raise ValueError(f"--masks: '{name}{SALIENT_SUFFIX}' shape {side.shape} differs "
                                 f"from its bulk mask {mask.shape}")
            salient = CSRTensor.from_dense(np.zeros(side.shape, np.float32), side)
        out[name] = SparseWeight(bulk, salient)
    return out


def match_weights(gemms, weights: dict) -> dict:
    """The subset of ``weights`` keyed by the GEMMs' ``weight_name``; raises when none match."""
    wanted = {g.weight_name for g in gemms if g.weight_name}
    matched = {name: w for name, w in weights.items() if name in wanted}
    if not matched:
        sample = ", ".join(sorted(weights)[:3])
        raise ValueError(f"--masks: none of the {len(weights)} tensors ({sample}, ...) names a "
                         "weight of this workload (expected e.g. model.layers.0.self_attn.q_proj)")
    return matched
