"""File-system helpers every stage shares: durable writes, fsync, common root, path containment.

One copy of each, so the whole tool agrees on what "written durably" and "under a folder" mean.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path


def fsync_file(path: str | os.PathLike) -> None:
    """Flush ``path``'s bytes to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: str | os.PathLike) -> None:
    """Flush a folder's entries (a rename in it) to disk; a no-op where folders cannot be fsynced."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fsync
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def temp_name(path: str | os.PathLike) -> Path:
    """A temporary name beside ``path``, unique per process and thread."""
    path = Path(path)
    return path.with_name(f"{path.name}.tmp{os.getpid()}.{threading.get_ident()}")


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None] | bytes, *,
                 tmp: str | os.PathLike | None = None) -> Path:
    """Write ``path`` durably: to a temporary file beside it, fsync, rename over ``path``, fsync the folder.

    ``write`` is the bytes to write, or a function that writes a file at the path it is given (for
    writers that take a file name, such as ``faiss.write_index``). ``tmp``: the temporary name
    (default :func:`temp_name`). A crash leaves the old file or the new one, never half of one.
    """
    path = Path(path)
    tmp = Path(tmp) if tmp is not None else temp_name(path)
    try:
        if isinstance(write, (bytes, bytearray, memoryview)):
            with open(tmp, "wb") as fh:
                fh.write(write)
        else:
            write(tmp)
        fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(path.parent)
    return path


def is_under(path: str, folder: str) -> bool:
    """``path`` is ``folder`` or inside it (both absolute, compared as strings: no file-system access)."""
    folder = folder.rstrip(os.sep) or os.sep
    if folder == os.sep:
        return path.startswith(os.sep)
    return path == folder or path.startswith(folder + os.sep)


def common_root(paths: Iterable[str]) -> str:
    """The deepest folder that holds every one of ``paths`` ("" for none).

    A single file (or a set whose common prefix is itself one of the files) gives that file's folder.
    """
    paths = list(paths)
    if not paths or any("://" in p for p in paths):  # URLs (a manifest scan) are shown in full
        return ""
    root = os.path.commonpath(paths)
    return os.path.dirname(root) if root in paths else root
