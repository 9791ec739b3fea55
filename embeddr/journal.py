"""The action journal: an append-only, fsynced JSON-lines file written BEFORE every act.

Each line is one JSON object with a ``type``:

``begin``    one per apply: ``action``, ``db``, ``trash`` (the journal-side folder that keeps the
             original bytes of deleted and linked files), ``quarantine``, ``created``, ``marked``
             (the quarantine and trash folders the apply put an ``.embeddr-ignore`` marker in) and
             ``made`` (those it created): undo takes away only those markers and folders.
``intent``   written and fsynced before a file is touched: ``id``, ``action``, ``path``, ``hash``,
             ``size``, ``mode``, ``mtime_ns``, ``canonical`` (target), ``canonical_hash``, ``dest``
             (where the original bytes go: the quarantine path or the trash path) and ``tmp`` (the
             temporary link name, for link actions).
``done``     after the act succeeded: ``id``.
``failed``   the act raised: ``id``, ``error`` (the file is left as it was).
``skip``     a file not touched: ``path``, ``reason`` (changed since the scan, gone, ...).
``end``      apply finished: counts.
``undo``     one per restored intent: ``id``, ``result``; written by :func:`embeddr.actions.undo`.

An ``intent`` without ``done`` means the process died mid-act: undo works out the state from the
filesystem. A torn last line (crash or full disk while writing) is ignored when reading, and cut
off before anything is appended (so the next record starts on a line of its own).

``begin`` also records ``roots``: the folders of the files the apply may act on. :func:`validate`
checks every record before an undo touches anything: each field it needs is there and of the
right type, each ``path`` lies in those folders, each ``dest`` in the quarantine or trash, each
``tmp`` beside its path. A journal that fails is refused as a whole.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from .errors import JournalError
from .fsutil import fsync_dir

JOURNAL_VERSION = 1


def trash_dir(journal_path: str | os.PathLike) -> Path:
    """The folder beside the journal that keeps the original bytes of deleted and linked files."""
    p = Path(journal_path)
    return p.with_name(p.name + ".trash")


class Journal:
    """Append records to a journal; every record is flushed and fsynced before ``write`` returns."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            new = not self.path.exists()
            if not new:
                repair_tail(self.path)
            self._fh = open(self.path, "a", encoding="utf-8")
        except OSError as exc:
            raise JournalError(f"{self.path}: cannot open the journal for writing ({exc.strerror or exc})") from None
        if new:
            fsync_dir(self.path.parent)

    def write(self, record: dict) -> None:
        line = json.dumps({**record, "t": round(time.time(), 6)}, ensure_ascii=False, sort_keys=True)
        try:
            line.encode("utf-8")
        except UnicodeEncodeError:  # a file name that is not UTF-8: \udcXX escapes round-trip exactly
            line = json.dumps({**record, "t": round(time.time(), 6)}, ensure_ascii=True, sort_keys=True)
        try:
            self._fh.write(line + "\n")
            self._fh.flush()
            os.fsync(self._fh.fileno())
        except OSError as exc:
            raise JournalError(f"{self.path}: cannot write the journal ({exc.strerror or exc}); nothing more was done") from None

    def close(self) -> None:
        try:
            self._fh.close()
        except OSError:  # the failed write is still buffered (full disk): it was reported already
            pass

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def repair_tail(path: Path) -> None:
    """Make the journal end with a newline: a torn last line (no newline) is cut off, or, when it is
    a whole record that only lacks its newline, completed."""
    with open(path, "rb+") as fh:
        size = fh.seek(0, os.SEEK_END)
        if size == 0:
            return
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            return
        back = min(size, 1 << 20)
        fh.seek(size - back)
        tail = fh.read(back)
        cut = tail.rfind(b"\n")
        start = size - back + cut + 1 if cut >= 0 else 0
        try:
            whole = isinstance(json.loads(tail[cut + 1:].decode("utf-8")), dict)
        except ValueError:
            whole = False
        if whole:
            fh.seek(size)
            fh.write(b"\n")
        else:
            fh.truncate(start)
        fh.flush()
        os.fsync(fh.fileno())


def read_journal(path: str | os.PathLike) -> list[dict]:
    """Every record of a journal, in order. A torn last line is dropped; any other bad line is an error."""
    return [rec for _line, rec in read_journal_lines(path)]


def read_journal_lines(path: str | os.PathLike) -> list[tuple[int, dict]]:
    """(line number, record) of every record of a journal (see :func:`read_journal`)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise JournalError(f"{path}: no such journal") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise JournalError(f"{path}: cannot read the journal ({exc})") from None
    lines = text.split("\n")
    records = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1:  # no newline after it: torn by a crash mid-write
                break
            raise JournalError(f"{path}:{i + 1}: not a JSON line; is this an embeddr journal?") from None
        if not isinstance(rec, dict) or "type" not in rec:
            raise JournalError(f"{path}:{i + 1}: not an embeddr journal record")
        records.append((i + 1, rec))
    if records and records[0][1].get("type") != "begin":
        raise JournalError(f"{path}: does not start with a 'begin' record; is this an embeddr journal?")
    return records


_ACTS = ("move", "delete", "hardlink", "symlink")


def _inside(path: str, folder: str) -> bool:
    folder = os.path.normpath(folder)
    path = os.path.normpath(path)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def validate(path: str | os.PathLike, records: list[tuple[int, dict]]) -> None:
    """Refuse (:class:`JournalError`, naming the line) a journal an undo must not act on: a record that
    lacks a field or has one of the wrong type, a path outside the folders the apply recorded, a
    ``dest`` outside its quarantine or trash, a ``tmp`` that is not beside its path."""
    begin = records[0][1]
    roots = begin.get("roots")
    if roots is not None and (not isinstance(roots, list) or not all(isinstance(r, str) and os.path.isabs(r) for r in roots)):
        raise JournalError(f"{path}:{records[0][0]}: 'roots' must be a list of absolute folders")
    stores = [s for s in (begin.get("quarantine"), begin.get("trash")) if isinstance(s, str) and os.path.isabs(s)]
    for line, rec in records:
        if rec.get("type") != "intent":
            continue
        where = f"{path}:{line}"
        for key, kind in (("id", int), ("action", str), ("path", str), ("hash", str)):
            if key not in rec:
                raise JournalError(f"{where}: intent record without '{key}'; refusing to undo (nothing was changed)")
            if not isinstance(rec[key], kind) or isinstance(rec[key], bool):
                raise JournalError(f"{where}: intent field '{key}' must be a {kind.__name__}; refusing to undo")
        for key in ("mode", "mtime_ns"):
            if rec.get(key) is not None and (not isinstance(rec[key], int) or isinstance(rec[key], bool)):
                raise JournalError(f"{where}: intent field '{key}' must be an integer; refusing to undo")
        for key in ("dest", "tmp", "canonical"):
            if rec.get(key) is not None and not isinstance(rec[key], str):
                raise JournalError(f"{where}: intent field '{key}' must be a path; refusing to undo")
        if rec["action"] not in _ACTS:
            raise JournalError(f"{where}: unknown action {rec['action']!r}; refusing to undo")
        p = rec["path"]
        if "\x00" in p or not os.path.isabs(p):
            raise JournalError(f"{where}: path {p!r} is not an absolute path; refusing to undo")
        if roots is not None and not any(os.path.dirname(os.path.normpath(p)) == os.path.normpath(r) for r in roots):
            raise JournalError(f"{where}: {p} is outside the folders this apply recorded; refusing to undo an edited journal")
        dest = rec.get("dest")
        if dest is not None and not any(_inside(dest, s) for s in stores):
            raise JournalError(f"{where}: dest {dest} is outside the apply's quarantine and trash; refusing to undo an edited journal")
        tmp = rec.get("tmp")
        if tmp is not None and (os.path.dirname(os.path.normpath(tmp)) != os.path.dirname(os.path.normpath(p))
                                or not os.path.basename(tmp).startswith(".embeddr-")):
            raise JournalError(f"{where}: tmp {tmp} is not embeddr's temporary name beside {p}; refusing to undo")
