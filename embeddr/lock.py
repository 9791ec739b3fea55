"""One writer at a time per catalog: an OS-level lock file beside it (``DB.lock``).

Every command that changes files or the catalog (``scan``, ``apply``, ``undo``, ``check --add``,
the service's adds, ``verdicts import``) holds :func:`writer` while it writes. The lock is a
``fcntl.flock`` on ``DB.lock``: the kernel releases it when the process ends, however it ends
(``kill -9`` included), so a stale lock never blocks anyone. A command that created no catalog
(a failed start) removes the lock file again; whoever locks checks that the file it locked is still
the one at ``DB.lock``, so removing it never lets two writers in. The file also says who holds it
(pid, command, since) so that the second command can name the first one in its message.

``wait=False`` (the default) refuses at once with :class:`CatalogBusy`; ``wait=True`` (the CLI's
``--wait``) blocks until the holder is done.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from .errors import CatalogBusy, CatalogError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no OS lock, single-writer is the user's job
    fcntl = None  # type: ignore[assignment]


def lock_path(db: str | os.PathLike) -> Path:
    p = Path(os.path.abspath(db))
    return p.with_name(p.name + ".lock")


def _command() -> str:
    argv = [os.path.basename(sys.argv[0] or "python"), *sys.argv[1:]]
    text = " ".join(argv)
    return text if len(text) <= 200 else text[:197] + "..."


def holder(db: str | os.PathLike) -> dict | None:
    """Who holds the writer lock of ``db`` (``{"pid", "command", "since"}``), or None when it is free."""
    path = lock_path(db)
    if fcntl is None or not path.exists():
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(path) or {"pid": None, "command": "?", "since": None}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read_holder(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8") or "null")
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _describe(info: dict | None) -> str:
    if not info:
        return "another process"
    since = info.get("since")
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(since)) if isinstance(since, (int, float)) else "?"
    return f"pid {info.get('pid')} ({info.get('command')!s}, since {when})"


# Locks this process holds: db lock path -> [fd, depth]; a thread re-enters its own lock (a job
# that calls another), other threads of this process queue on a per-catalog RLock first.
_HELD: dict[str, list] = {}
_THREAD_LOCKS: dict[str, threading.RLock] = {}
_GUARD = threading.Lock()


@contextmanager
def writer(db: str | os.PathLike, *, wait: bool | float = False, what: str | None = None):
    """Hold the writer lock of catalog ``db`` for the ``with`` block (re-entrant within a thread).

    ``wait``: False refuses at once (:class:`CatalogBusy`), True waits as long as it takes, a number
    waits at most that many seconds."""
    path = lock_path(db)
    key = str(path)
    if fcntl is None:  # pragma: no cover
        yield
        return
    with _GUARD:
        rlock = _THREAD_LOCKS.setdefault(key, threading.RLock())
    if wait is True:
        got = rlock.acquire()
    else:
        got = rlock.acquire(timeout=float(wait)) if wait else rlock.acquire(blocking=False)
    if not got:
        raise CatalogBusy(f"{Path(os.path.abspath(db))}: another writer of this process holds the catalog; "
                          "wait for it to finish, or add --wait")
    try:
        if key in _HELD:
            _HELD[key][1] += 1
            try:
                yield
            finally:
                _HELD[key][1] -= 1
            return
        with _os_lock(db, path, key, wait, what):
            yield
    finally:
        rlock.release()


@contextmanager
def _os_lock(db, path: Path, key: str, wait: bool | float, what: str | None):
    if os.path.isdir(db):
        raise CatalogError(f"{db}: is a folder, not a catalog file (give --db a file name, e.g. {Path(db) / 'embeddr.db'})")
    deadline = None if wait is True else time.monotonic() + float(wait or 0)
    while True:
        fd = _open_lock_file(path)
        try:
            got = _acquire(fd, deadline)
        except BaseException:
            os.close(fd)
            raise
        if not got:
            os.close(fd)
            raise CatalogBusy(
                f"{Path(os.path.abspath(db))}: another embeddr command is writing to this catalog: "
                f"{_describe(_read_holder(path))}; wait for it to finish, or add --wait")
        try:  # the file we locked must still be the lock file (a failed start removes it: see below)
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except OSError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        info = {"pid": os.getpid(), "command": what or _command(), "since": time.time()}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode(), 0)
        except OSError:  # a full disk must not stop the lock itself from working
            pass
        _HELD[key] = [fd, 0]
        try:
            yield
        finally:
            del _HELD[key]
            try:
                os.ftruncate(fd, 0)
                if not os.path.lexists(db):  # a failed start created no catalog: leave no lock file either
                    os.unlink(path)
            except OSError:
                pass
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _open_lock_file(path: Path) -> int:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except IsADirectoryError:
        raise CatalogError(f"{path}: is a folder, not embeddr's lock file; remove or rename it") from None
    except OSError as exc:
        raise CatalogError(f"{path}: cannot create the catalog's lock file ({exc.strerror or exc})") from None


def _acquire(fd: int, deadline: float | None) -> bool:
    """flock ``fd``: at once, else block (``deadline`` None) or poll until ``deadline``."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        pass
    if deadline is None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return True
    while time.monotonic() < deadline:
        time.sleep(0.05)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            continue
    return False


def is_free(db: str | os.PathLike) -> bool:
    """True when no process (this one included) holds the writer lock of ``db``."""
    return str(lock_path(db)) not in _HELD and holder(db) is None
