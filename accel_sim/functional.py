"""Functional mode: ``y = W_sparse @ x`` with the metadata read by the simulator's decoder models.

The kept positions come from :mod:`accel_sim.decoders` (never from ``formats``' own decoder), the
arithmetic is numpy in float64, so kernels can be compared with the simulator's reading of the
format bit for bit (positions) and to float64 accuracy (values).
"""

from __future__ import annotations

import numpy as np

from compression.formats import CSRTensor, NMTensor, SparseWeight

from .config import DECODERS_FOR_ENCODING
from .decoders import decoder_model

ROW_CHUNK = 256  # output rows per gather, bounds the temporary [rows, kept, batch] array


def decoded_positions(tensor: NMTensor, decoder: str | None = None) -> np.ndarray:
    """Kept positions ``int64[out, blocks, N]`` as the decoder model reads ``tensor``."""
    model = decoder_model(decoder or DECODERS_FOR_ENCODING[tensor.encoding][0])
    if model.encoding != tensor.encoding:
        raise ValueError(f"decoder '{model.kind}' reads '{model.encoding}' metadata, the tensor "
                         f"is '{tensor.encoding}'")
    return model.decode(tensor.metadata, tensor.pattern, tensor.shape[0], tensor.geometry.blocks)


def _nm_matmul(tensor: NMTensor, x: np.ndarray, decoder: str | None) -> np.ndarray:
    rows, cols = tensor.shape
    geo = tensor.geometry
    p = tensor.pattern
    positions = decoded_positions(tensor, decoder)
    absolute = (positions + (np.arange(geo.blocks) * p.m)[None, :, None]).reshape(rows, -1)
    padded = np.zeros((geo.blocks * p.m, x.shape[1]), dtype=np.float64)
    body = min(cols, geo.blocks * p.m)
    padded[:body] = x[:body]
    values = tensor.values.astype(np.float64)
    y = np.empty((rows, x.shape[1]), dtype=np.float64)
    for start in range(0, rows, ROW_CHUNK):
        stop = min(rows, start + ROW_CHUNK)
        gathered = padded[absolute[start:stop]]  # [rows, blocks*N, batch]
        y[start:stop] = np.einsum("rk,rkb->rb", values[start:stop], gathered)
    if geo.dense_tail_width:
        y += tensor.tail_values.astype(np.float64) @ x[cols - geo.dense_tail_width:]
    return y


def functional_matmul(weight: NMTensor | SparseWeight, x: np.ndarray,
                      decoder: str | None = None) -> np.ndarray:
    """``y[out, batch] = W @ x`` for ``x[k, batch]`` (float64), decoding the metadata with the
    decoder model (``decoder``: a kind from :mod:`accel_sim.decoders`, default per encoding).
    A salient side-car is added: N:M side-cars through the decoder model too, CSR directly."""
    if isinstance(weight, NMTensor):
        weight = SparseWeight(weight)
    if not isinstance(weight, SparseWeight):
        raise TypeError(f"weight must be an NMTensor or SparseWeight, got {type(weight).__name__}")
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] != weight.shape[1]:
        raise ValueError(f"x must be [k={weight.shape[1]}, batch], got shape {x.shape}")
    y = _nm_matmul(weight.bulk, x, decoder)
    side = weight.salient
    if isinstance(side, NMTensor):
        y += _nm_matmul(side, x, None)
    elif isinstance(side, CSRTensor):
        row_of = np.repeat(np.arange(side.shape[0]), np.diff(side.indptr))
        np.add.at(y, row_of, side.values.astype(np.float64)[:, None] * x[side.indices])
    return y
