"""WikiText-2 text for evaluation and calibration, read from a path (never copied into the repo).

Defaults follow ``../shared/data/wikitext-2`` next to the repository root when present:
``wiki.test.raw`` (raw test split) for perplexity, ``wiki.valid.tokens`` (tokenized validation
split) for calibration. Any other UTF-8 text file may be given instead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_WIKITEXT_DIR = REPO_ROOT.parent / "shared" / "data" / "wikitext-2"
EVAL_FILE = "wiki.test.raw"
CALIB_FILE = "wiki.valid.tokens"


def default_path(kind: str) -> Path:
    """The default ``"eval"`` or ``"calib"`` file, or a ValueError when the shared data is absent."""
    name = {"eval": EVAL_FILE, "calib": CALIB_FILE}[kind]
    path = DEFAULT_WIKITEXT_DIR / name
    if not path.is_file():
        raise ValueError(f"no {kind} text given and the default {path} does not exist")
    return path


def read_text(path: str | Path) -> str:
    """Read a UTF-8 text file; blank lines dropped, lines joined by a blank line.

    The shared ``wiki.test.raw`` is the test split's rows with blank rows removed, so joining the
    rows with ``"\\n\\n"`` reproduces the usual ``"\\n\\n".join(rows)`` evaluation string as
    closely as the file allows.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"text file {path} does not exist")
    try:
        raw = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"text file {path} is not UTF-8 ({exc.reason})") from None
    rows = [line.strip() for line in raw.splitlines()]
    text = "\n\n".join(row for row in rows if row)
    if not text:
        raise ValueError(f"text file {path} is empty")
    return text


def tokenize(tokenizer, path: str | Path) -> np.ndarray:
    """Token ids (int64, 1-D) of a whole text file, without special tokens."""
    ids = tokenizer(read_text(path), add_special_tokens=False)["input_ids"]
    return np.asarray(ids, dtype=np.int64)


def eval_windows(ids: np.ndarray, seqlen: int, max_windows: int | None = None) -> np.ndarray:
    """Non-overlapping ``[windows, seqlen]`` windows from the start (the standard protocol).

    The trailing partial window is dropped; ``max_windows`` keeps only the first ones.
    """
    if seqlen < 2:
        raise ValueError(f"seqlen must be at least 2, got {seqlen}")
    windows = len(ids) // seqlen
    if windows < 1:
        raise ValueError(f"text has {len(ids)} tokens, too short for one window of {seqlen}")
    if max_windows is not None:
        if max_windows < 1:
            raise ValueError(f"windows must be at least 1, got {max_windows}")
        windows = min(windows, max_windows)
    return ids[: windows * seqlen].reshape(windows, seqlen)


def calibration_windows(ids: np.ndarray, samples: int, seqlen: int, seed: int = 0) -> np.ndarray:
    """``samples`` random windows of ``seqlen`` tokens (the SparseGPT/Wanda sampling protocol)."""
    if samples < 1:
        raise ValueError(f"calibration samples must be at least 1, got {samples}")
    if len(ids) <= seqlen:
        raise ValueError(f"calibration text has {len(ids)} tokens, too short for one window "
                         f"of {seqlen}")
    starts = np.random.default_rng(seed).integers(0, len(ids) - seqlen, size=samples)
    return np.stack([ids[s : s + seqlen] for s in starts])
