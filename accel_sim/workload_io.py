"""Loading a compression run's masks for the simulator (``nmsim simulate --masks DIR``).

``nmsim prune --out DIR`` writes one compressed file per decoder layer (values + metadata in the
shared format) and one bit-packed mask file per layer (``compression.prune_output`` documents
the folder). Either feeds the simulator: the timing depends on the pattern, tail and side-car
placement, not on the values, so bool masks are compressed with zero values in the hardware's
encoding after their N:M pattern is recognised among the hardware's patterns.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from compression import prune_output
from compression.formats import (
    CSRTensor,
    FormatError,
    NMTensor,
    Pattern,
    SparseWeight,
    check_nm_mask,
)
from compression.prune_output import SALIENT_SUFFIX


def load_masks(path: str | Path, hw=None) -> dict:
    """Compressed weights by module name from a prune output folder or one compressed file.

    A folder's compressed layers are preferred; a folder with masks only (its bulk has no
    compressed form) needs ``hw`` (its supported patterns and encoding)."""
    path = Path(path)
    if path.is_dir() and not prune_output.is_output_folder(path):
        raise ValueError(f"--masks: {path} is not a prune output folder (no index.json)")
    if not path.exists():
        raise ValueError(f"--masks: no prune output folder or compressed file at {path}")
    try:
        if path.is_dir() and not prune_output.compressed_files(path):
            if hw is None:
                raise ValueError("--masks: bool masks need the hardware's patterns to be read")
            weights = weights_from_bool_masks(prune_output.load_masks(path)[0], hw)
        else:
            weights = prune_output.load_compressed(path)
    except FormatError as exc:
        raise ValueError(f"--masks: {exc}") from None
    if not weights:
        raise ValueError(f"--masks: {path} holds no tensors")
    return weights


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


# Weights the pruning covers: the decoder layers' linears (lm_head is never pruned).
PRUNED_PREFIX = "model.layers."


def check_coverage(gemms, covered, allow_partial: bool, where: str = "--masks") -> int:
    """How many weight GEMMs run without a mask (uniform N:M at the hardware's pattern).

    Masks that leave some decoder-layer weight uncovered are an error unless ``allow_partial``:
    a run that silently mixes real and uniform layers would be mistaken for a real-mask run."""
    names = [g.weight_name for g in gemms if g.weight_name]
    missing = [n for n in names if n not in covered and n.startswith(PRUNED_PREFIX)]
    if missing and not allow_partial:
        pruned = sum(n.startswith(PRUNED_PREFIX) for n in names)
        raise ValueError(f"{where}: the masks cover {pruned - len(missing)} of the {pruned} "
                         f"decoder-layer weights (first missing: {missing[0]}); pass "
                         "--allow-partial-masks to run the others as uniform N:M")
    return sum(n not in covered for n in names)


def match_weights(gemms, weights: dict) -> dict:
    """The subset of ``weights`` keyed by the GEMMs' ``weight_name``; raises when none match."""
    wanted = {g.weight_name for g in gemms if g.weight_name}
    matched = {name: w for name, w in weights.items() if name in wanted}
    if not matched:
        sample = ", ".join(sorted(weights)[:3])
        raise ValueError(f"--masks: none of the {len(weights)} tensors ({sample}, ...) names a "
                         "weight of this workload (expected e.g. model.layers.0.self_attn.q_proj)")
    return matched
