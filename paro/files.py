"""File I/O shared by every command: atomic writes (no partial output on error), validated ``.npz`` reads and
the build folder."""

import os
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np

from .errors import ParoError

__all__ = ["atomic_write_bytes", "atomic_write", "save_figure", "read_npz", "build_root", "check_writable"]


def build_root(override=None):
    """Folder for builds (simulator and synthesis work folders): ``override``, else ``$PARO_BUILD_DIR``, else
    ``build`` under the current directory. Never inside the installed package."""
    return Path(override or os.environ.get("PARO_BUILD_DIR") or Path.cwd() / "build")


def _temporary_beside(path, suffix):
    """A temporary file in the folder of ``path``, or a one-line error if ``path`` cannot be written there."""
    path = Path(path)
    folder = path.parent
    if path.is_dir():
        raise ParoError(f"output path {str(path)!r} is a folder; give a file name")
    if not folder.exists():
        raise ParoError(f"output folder {str(folder)!r} does not exist; create it first")
    if not folder.is_dir():
        raise ParoError(f"output folder {str(folder)!r} is not a folder; give a path inside a folder")
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=suffix)
    except OSError as error:
        raise ParoError(f"cannot write in output folder {str(folder)!r} ({error.strerror}); "
                        f"choose a writable folder") from None
    return fd, tmp


def check_writable(path):
    """Raise the one-line error :func:`atomic_write` would raise for ``path``, before any long work starts."""
    fd, tmp = _temporary_beside(path, ".check")
    os.close(fd)
    os.unlink(tmp)


def atomic_write_bytes(path, data):
    """Write ``data`` to ``path`` through a temporary file in the same folder, then rename."""
    fd, tmp = _temporary_beside(path, ".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as error:
        os.unlink(tmp)
        raise ParoError(f"cannot write {str(path)!r} ({error.strerror}); choose another output path") from None
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
    # zlib.error: a corrupt compressed member (found by tests/test_fuzz.py; it escaped as a traceback)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError, NotImplementedError) as error:
        raise ParoError(f"{what} {str(path)!r} is not a valid .npz (truncated or corrupt: "
                        f"{type(error).__name__}); {fix}") from None
