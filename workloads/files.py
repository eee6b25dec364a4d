"""Writing a file without touching any other: stage it under a new hidden name beside the
target, then move it onto the target in one ``os.replace``.

A fixed side name such as ``report.md.tmp`` would overwrite, and then move away, a user's file
of that name; a unique name from :func:`tempfile.mkstemp` cannot. Readers never see a
half-written target, and a failed write leaves the earlier target (or none) and no staging
file. Lives in the lowest layer so that every package can use it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def staged_file(path: str | Path) -> Iterator[Path]:
    """Yield a new, empty hidden file in ``path``'s folder (same suffix, so tools that read the
    format from the name still work); when the block ends without error it replaces ``path``,
    otherwise it is removed."""
    path = Path(path)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-",
                                    suffix=path.suffix)
    os.close(handle)
    staged = Path(name)
    try:
        os.chmod(staged, 0o666 & ~_umask())  # mkstemp creates 0600; these files are for reading
        yield staged
        staged.replace(path)
    finally:
        staged.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def written_by_us(path: str | Path, first_line: str | None = None,
                  png_software: str | None = None) -> bool:
    """Whether ``path`` is a file an earlier run of ours wrote, so that it may be replaced: a
    PNG whose ``Software`` tag is ``png_software``, or a text file that begins with
    ``first_line``. A link, a folder, or anything unreadable is not ours."""
    path = Path(path)
    if path.is_symlink() or not path.is_file():
        return False
    try:
        if png_software is not None:
            from PIL import Image

            with Image.open(path) as image:
                return getattr(image, "text", {}).get("Software") == png_software
        with path.open(encoding="utf-8") as handle:
            return first_line is not None and handle.readline().startswith(first_line)
    except (OSError, ValueError):  # not an image, not text
        return False
