"""Small file-system helpers: atomic writes, so no reader ever sees a half-written model."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Union

from lastlayer.errors import OutputError

PathLike = Union[str, "os.PathLike[str]"]


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename.

    Either the whole new file is there afterwards, or the old one (if any) is untouched.
    Raises :class:`OutputError` naming the path when the folder is missing or not writable.
    """
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"cannot write {target}: folder {folder} does not exist; create it or choose another output path", subject="output")
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise OutputError(f"cannot write {target}: {exc.strerror or exc}; choose a writable output path", subject="output") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except OSError as exc:
        Path(tmp_name).unlink(missing_ok=True)
        raise OutputError(f"cannot write {target}: {exc.strerror or exc}; choose a writable output path", subject="output") from None
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return target


def atomic_write_text(path: PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` atomically; see :func:`atomic_write_bytes`."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def ensure_output_dir(path: PathLike) -> Path:
    """Create the output folder ``path`` (and parents) or raise :class:`OutputError` saying why not."""
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder {folder}: {exc.strerror or exc}; choose a writable path", subject="output") from None
    if not os.access(folder, os.W_OK):
        raise OutputError(f"output folder {folder} is not writable; choose a writable path", subject="output")
    return folder
