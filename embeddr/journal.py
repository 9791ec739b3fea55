"""The action journal: an append-only, fsynced JSON-lines file written BEFORE every act.

Each line is one JSON object with a ``type``:

``begin``    one per apply: ``action``, ``db``, ``trash`` (the journal-side folder that keeps the
             original bytes of deleted and linked files), ``quarantine``, ``created``.
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
filesystem. A torn last line (crash while writing) is ignored when reading.
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
            self._fh = open(self.path, "a", encoding="utf-8")
        except OSError as exc:
            raise JournalError(f"{self.path}: cannot open the journal for writing ({exc.strerror or exc})") from None
        if new:
            fsync_dir(self.path.parent)

    def write(self, record: dict) -> None:
        line = json.dumps({**record, "t": round(time.time(), 6)}, ensure_ascii=False, sort_keys=True)
        try:
            self._fh.write(line + "\n")
            self._fh.flush()
            os.fsync(self._fh.fileno())
        except OSError as exc:
            raise JournalError(f"{self.path}: cannot write the journal ({exc.strerror or exc}); nothing more was done") from None

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_journal(path: str | os.PathLike) -> list[dict]:
    """Every record of a journal, in order. A torn last line is dropped; any other bad line is an error."""
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
        records.append(rec)
    if records and records[0].get("type") != "begin":
        raise JournalError(f"{path}: does not start with a 'begin' record; is this an embeddr journal?")
    return records
