"""Benchmark of metadata encode/decode on a LLaMa-2-7B MLP weight (11008 x 4096)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from compression.formats import (
    ENCODINGS,
    NMTensor,
    Pattern,
    decode_metadata,
    encode_metadata,
    load,
    nm_mask,
    save,
)


def _median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def bench_formats(pattern: str = "8:16", shape=(11008, 4096), repeats: int = 5,
                  seed: int = 0) -> list[dict]:
    """Median wall seconds to encode and decode each encoding (after one warm-up each).

    The mask comes from |W| of a standard-normal weight; decode includes full validation.
    """
    p = Pattern.parse(pattern)
    rows, cols = shape
    if cols % p.m:
        raise ValueError(f"benchmark shape {shape}: in={cols} is not a multiple of M={p.m}")
    weight = np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)
    start = time.perf_counter()
    mask = nm_mask(np.abs(weight), p)
    mask_seconds = time.perf_counter() - start
    blocks = cols // p.m
    positions = (np.flatnonzero(mask) % p.m).reshape(rows, blocks, p.n)
    records = []
    for encoding in ENCODINGS:
        packed = encode_metadata(positions, p, encoding)  # warm-up (also builds rank tables)
        decoded = decode_metadata(packed, p, encoding, rows, blocks)
        if not np.array_equal(decoded, positions):
            raise AssertionError(f"{encoding} round trip failed in the benchmark")
        records.append({
            "pattern": str(p), "shape": list(shape), "encoding": encoding, "repeats": repeats,
            "encode_s": _median_seconds(
                lambda enc=encoding: encode_metadata(positions, p, enc), repeats),
            "decode_s": _median_seconds(
                lambda enc=encoding, data=packed: decode_metadata(data, p, enc, rows, blocks),
                repeats),
            "metadata_bytes": int(packed.nbytes),
            "bits_per_element": p.bits_per_element(encoding),
            "mask_s": mask_seconds,
            **_load_seconds(weight, mask, p, encoding, repeats),
        })
    return records


def _load_seconds(weight, mask, pattern: Pattern, encoding: str, repeats: int) -> dict:
    """Median seconds to load the weight saved as a float16 compressed file, with and without
    the checksum check, timed alternately in the same rounds (after one warm-up load each)."""
    tensor = NMTensor.from_dense(weight, mask, pattern, encoding=encoding)
    times = {True: [], False: []}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "w.safetensors"
        save(path, {"w": tensor})
        for verify in (True, False):
            load(path, verify=verify)
        for _ in range(repeats):
            for verify in (False, True):
                start = time.perf_counter()
                load(path, verify=verify)
                times[verify].append(time.perf_counter() - start)
    return {"load_s": float(np.median(times[True])),
            "load_unverified_s": float(np.median(times[False]))}
