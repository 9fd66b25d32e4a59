"""File I/O shared by every command: atomic writes (no partial output on error) and validated ``.npz`` reads."""

import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .errors import ParoError

__all__ = ["atomic_write_bytes", "atomic_write", "save_figure", "read_npz"]


def _temporary_beside(path, suffix):
    path = Path(path)
    if path.parent and not path.parent.exists():
        raise ParoError(f"output folder {str(path.parent)!r} does not exist; create it first")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    return fd, tmp


def atomic_write_bytes(path, data):
    """Write ``data`` to ``path`` through a temporary file in the same folder, then rename."""
    fd, tmp = _temporary_beside(path, ".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def atomic_write(path, text):
    """Text version of :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode())


def save_figure(fig, path, dpi=100):
    """Save a matplotlib figure as PNG atomically."""
    fd, tmp = _temporary_beside(path, ".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=dpi)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_npz(path, what, fix):
    """All arrays of an ``.npz`` (never unpickling); a missing or unreadable file is a one-line error.

    ``what`` names the file in messages (e.g. ``"plan file"``), ``fix`` says how to make a good one.
    """
    path = Path(path)
    if not path.is_file():
        raise ParoError(f"{what} {str(path)!r} does not exist")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as error:
        raise ParoError(f"{what} {str(path)!r} is not a valid .npz (truncated or corrupt: "
                        f"{type(error).__name__}); {fix}") from None
