"""The catalog: an embedded SQLite database of files, their vectors and the runs.

Tables (schema version in ``meta``):

* ``files``   one row per path: size, mtime_ns, content hash, width, height, format,
              ``status`` (``ok`` | ``error`` | ``missing``), ``error`` (the reason), run ids.
* ``vectors`` one row per distinct content hash: the L2-normalised float32 vector (BLOB) and
              the model that produced it. Files with the same bytes share one vector, so exact
              duplicates are never embedded twice. Vector ids only grow, which lets the FAISS
              index (:mod:`embeddr.index`) catch up incrementally instead of being rebuilt.
* ``runs``    one row per scan: model, roots, start/finish, status and counts.
* ``verdicts`` reviewer decisions (``not_duplicate``) that later ``dupes``/``apply`` honour.

Writes happen in batched transactions (WAL journal), so a scan killed at any point leaves a
consistent catalog and the next scan resumes after the last committed batch.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import CatalogError, ModelMismatch

SCHEMA_VERSION = 3
DEFAULT_DB = "embeddr.db"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL DEFAULT 'scan',
    model TEXT NOT NULL,
    roots TEXT NOT NULL,
    started REAL NOT NULL,
    finished REAL,
    status TEXT NOT NULL DEFAULT 'running',
    stats TEXT
);
CREATE TABLE IF NOT EXISTS vectors (
    id INTEGER PRIMARY KEY,
    hash TEXT NOT NULL UNIQUE,
    model TEXT NOT NULL,
    vec BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    size INTEGER,
    mtime_ns INTEGER,
    hash TEXT,
    width INTEGER,
    height INTEGER,
    format TEXT,
    status TEXT NOT NULL,
    error TEXT,
    first_run INTEGER,
    last_run INTEGER,
    updated REAL,
    content_width INTEGER,
    content_height INTEGER,
    item_id TEXT,
    etag TEXT
);
CREATE INDEX IF NOT EXISTS files_hash ON files(hash);
CREATE INDEX IF NOT EXISTS files_status ON files(status);
CREATE TABLE IF NOT EXISTS verdicts (
    id INTEGER PRIMARY KEY,
    a TEXT NOT NULL,
    b TEXT NOT NULL,
    verdict TEXT NOT NULL,
    source TEXT,
    created REAL NOT NULL,
    UNIQUE (a, b)
);
"""


@dataclass(frozen=True)
class FileRecord:
    """What the scan learnt about one file (a row of ``files``)."""

    path: str
    size: int | None
    mtime_ns: int | None
    hash: str | None = None
    width: int | None = None
    height: int | None = None
    format: str | None = None
    status: str = "ok"
    error: str | None = None
    content_width: int | None = None  # without a uniform border (None: the file has none)
    content_height: int | None = None
    item_id: str | None = None  # the input's id in a manifest (product feed), e.g. a SKU
    etag: str | None = None  # a URL's version (ETag or Last-Modified) when it was fetched


@dataclass(frozen=True)
class FileRow:
    id: int
    path: str
    size: int | None
    mtime_ns: int | None
    hash: str | None
    width: int | None
    height: int | None
    format: str | None
    status: str
    error: str | None
    content_width: int | None = None  # the picture without a uniform border (None: no border)
    content_height: int | None = None
    item_id: str | None = None  # the id a manifest gave the item (None for a plain scan)

    def as_dict(self) -> dict:
        d = {"path": self.path, "size": self.size, "width": self.width, "height": self.height,
             "format": self.format, "hash": self.hash, "mtime_ns": self.mtime_ns}
        if self.item_id is not None:
            d["item_id"] = self.item_id
        return d


_FILE_COLS = "id, path, size, mtime_ns, hash, width, height, format, status, error, content_width, content_height, item_id"

# Named, ordered migrations: version -> statements that bring a catalog of version-1 up to it.
MIGRATIONS = {
    2: ["ALTER TABLE files ADD COLUMN content_width INTEGER", "ALTER TABLE files ADD COLUMN content_height INTEGER"],
    # 3, "item ids and URL versions": a manifest's id per item, and the ETag/Last-Modified a URL was fetched at
    3: ["ALTER TABLE files ADD COLUMN item_id TEXT", "ALTER TABLE files ADD COLUMN etag TEXT"],
}


def to_db(path: str) -> str | bytes:
    """A path as stored in the catalog: the text itself, or (file names that are not valid UTF-8, held by
    Python as surrogate escapes) its exact bytes as a BLOB, so every name round-trips losslessly."""
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        return os.fsencode(path)


def from_db(value) -> str:
    """Inverse of :func:`to_db`."""
    return os.fsdecode(value) if isinstance(value, bytes) else value


def shown(path: str) -> str:
    """A path for people: bytes that are not UTF-8 appear as ``\\xNN`` escapes (never a crash on output)."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _row(row) -> "FileRow":
    d = dict(row)
    d["path"] = from_db(d["path"])
    return FileRow(**d)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)


def _vec_to_blob(v: np.ndarray) -> bytes:
    return np.ascontiguousarray(v, dtype=np.float32).tobytes()


class Catalog:
    """A catalog database. Open with ``Catalog(path)``; use as a context manager to close it."""

    def __init__(self, path: str | os.PathLike = DEFAULT_DB, *, create: bool = True):
        self.path = Path(path)
        if self.path.is_dir():
            raise CatalogError(f"{self.path}: is a folder, not a catalog file (give --db a file name, e.g. {self.path / DEFAULT_DB})")
        if not create and not self.path.exists():
            raise CatalogError(f"no catalog at {self.path}: run `embeddr scan DIR --db {self.path}` first")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise CatalogError(f"{self.path}: cannot open the catalog ({_reason(exc)})") from None
        self.conn.row_factory = sqlite3.Row
        try:
            tables = {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if tables and not ({"meta", "files"} <= tables and self._meta_raw("schema_version") is not None):
                raise CatalogError(f"{self.path}: an SQLite database that is not an embeddr catalog "
                                   f"(tables {', '.join(sorted(tables)[:5])}); refusing to add tables to it: "
                                   "choose another --db")
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            if tables:
                self._migrate()
            self.conn.executescript(_SCHEMA)
            self._init_meta()
            version = int(self.get_meta("schema_version", "0"))
        except CatalogError:
            self.conn.close()
            raise
        except sqlite3.OperationalError as exc:  # disk full, read-only folder, I/O error
            self.conn.close()
            raise CatalogError(f"{self.path}: cannot open the catalog for writing ({_reason(exc)})") from None
        except sqlite3.DatabaseError as exc:
            self.conn.close()
            raise CatalogError(f"{self.path}: not an embeddr catalog ({_reason(exc)})") from None
        if version > SCHEMA_VERSION:
            self.conn.close()
            raise CatalogError(f"{self.path}: schema version {version} is newer than this embeddr ({SCHEMA_VERSION}); upgrade embeddr")
        try:
            self._check_dim()
        except CatalogError:
            self.conn.close()
            raise

    def _meta_raw(self, key: str) -> str | None:
        try:
            row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        except sqlite3.DatabaseError:
            return None
        return row[0] if row else None

    def _check_dim(self) -> None:
        """The meta table's ``dim`` must match the stored vectors (a damaged or hand-edited catalog is refused)."""
        raw = self._meta_raw("dim")
        if raw is None:
            return
        try:
            dim = int(raw)
            if dim <= 0:
                raise ValueError
        except ValueError:
            raise CatalogError(f"{self.path}: meta 'dim' is {raw!r}, not a positive integer: the catalog is damaged") from None
        row = self.conn.execute("SELECT length(vec) FROM vectors LIMIT 1").fetchone()
        if row is not None and row[0] != dim * 4:
            raise CatalogError(f"{self.path}: meta 'dim' says {dim} but the stored vectors have {row[0] // 4} values: "
                               "the catalog is damaged (restore it, or scan into a new --db)")

    # -- lifecycle -------------------------------------------------------------------------
    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "Catalog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _migrate(self) -> None:
        """Bring an older catalog up to SCHEMA_VERSION, one named migration at a time, each in ONE transaction
        (BEGIN IMMEDIATE: a second process opening the same old catalog waits, then finds it migrated)."""
        for target in sorted(MIGRATIONS):
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                row = self.conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
                if (int(row[0]) if row else 1) >= target:
                    self.conn.execute("COMMIT")
                    continue
                for statement in MIGRATIONS[target]:
                    self.conn.execute(statement)
                self.conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(target),))
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise

    def _init_meta(self) -> None:
        with self.conn:
            self.conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            self.conn.execute("INSERT OR IGNORE INTO meta VALUES ('catalog_id', ?)", (uuid.uuid4().hex,))

    @property
    def catalog_id(self) -> str | None:
        """A random id fixed when the catalog was created: files derived from it (the index) carry it."""
        return self.get_meta("catalog_id")

    @contextmanager
    def writing(self):
        """A write transaction; a full disk or an unwritable catalog is a :class:`CatalogError` naming the file."""
        try:
            with self.conn:
                yield self.conn
        except sqlite3.OperationalError as exc:
            raise CatalogError(f"{self.path}: cannot write the catalog ({_reason(exc)}); the last batch was not stored") from None

    # -- meta and model ----------------------------------------------------------------------
    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str) -> None:
        with self.writing():
            self.conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    @property
    def model(self) -> str | None:
        """The model every vector in this catalog comes from (fixed at the first scan)."""
        return self.get_meta("model")

    @property
    def dim(self) -> int | None:
        value = self.get_meta("dim")
        return int(value) if value else None

    def bind_model(self, name: str, dim: int) -> None:
        """Fix the catalog's model, or refuse a different one with a clear error."""
        current = self.model
        if current is None:
            with self.writing():
                self.conn.execute("INSERT OR REPLACE INTO meta VALUES ('model', ?)", (name,))
                self.conn.execute("INSERT OR REPLACE INTO meta VALUES ('dim', ?)", (str(dim),))
        elif current == name and self.dim is not None and self.dim != dim:
            raise CatalogError(f"{self.path}: meta 'dim' is {self.dim} but model {name} makes {dim}-d vectors: "
                               "the catalog is damaged (restore it, or scan into a new --db)")
        elif current != name:
            raise ModelMismatch(
                f"{self.path} was built with model {current!r}, not {name!r}: vectors of different models "
                f"cannot be compared. Use --model {current}, or another --db for {name}"
            )

    # -- runs ------------------------------------------------------------------------------
    def begin_run(self, model: str, roots: Iterable[str], kind: str = "scan") -> int:
        with self.writing():
            cur = self.conn.execute(
                "INSERT INTO runs (kind, model, roots, started) VALUES (?, ?, ?, ?)",
                (kind, model, json.dumps([str(r) for r in roots]), time.time()),
            )
        return int(cur.lastrowid)

    def finish_run(self, run_id: int, status: str, stats: dict) -> None:
        with self.writing():
            self.conn.execute("UPDATE runs SET finished = ?, status = ?, stats = ? WHERE id = ?",
                              (time.time(), status, json.dumps(stats), run_id))

    def runs(self, limit: int = 10) -> list[dict]:
        rows = self.conn.execute("SELECT * FROM runs ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [{**dict(r), "roots": json.loads(r["roots"]), "stats": json.loads(r["stats"] or "{}")} for r in rows]

    def scan_roots(self) -> list[str]:
        """Every root a scan recorded (folders, files, manifests, URLs), each once, in the order first seen
        (``add`` runs, which record each file they took in, are left out)."""
        seen: dict[str, None] = {}
        for (roots,) in self.conn.execute("SELECT roots FROM runs WHERE kind = 'scan' ORDER BY id"):
            for root in json.loads(roots or "[]"):
                seen.setdefault(str(root), None)
        return list(seen)

    def first_file_under(self, folder: str | os.PathLike) -> str | None:
        """The path of one catalogued file (any status) inside ``folder`` (absolute), or None when it holds none."""
        prefix = os.path.abspath(os.fspath(folder)).rstrip(os.sep) + os.sep
        text = to_db(prefix)
        for pre in ((text,) if isinstance(text, bytes) else (text, os.fsencode(text))):  # text paths, then BLOB ones
            row = self.conn.execute("SELECT path FROM files WHERE substr(path, 1, ?) = ? LIMIT 1", (len(pre), pre)).fetchone()
            if row is not None:
                return from_db(row[0])
        return None

    # -- files -----------------------------------------------------------------------------
    def file_states_for(self, paths: Iterable[str]) -> dict[str, tuple[int | None, int | None, str, str | None]]:
        """path -> (size, mtime_ns, status, hash) for the given paths: what incremental scans compare."""
        paths = list(paths)
        out = {}
        for i in range(0, len(paths), 500):
            chunk = paths[i : i + 500]
            q = f"SELECT path, size, mtime_ns, status, hash FROM files WHERE path IN ({','.join('?' * len(chunk))})"
            out.update({from_db(r[0]): (r[1], r[2], r[3], r[4]) for r in self.conn.execute(q, [to_db(p) for p in chunk])})
        return out

    def vectors_for(self, hashes: Iterable[str]) -> dict[str, np.ndarray]:
        """hash -> stored vector, for the given content hashes that have one."""
        hashes = list(set(hashes))
        out: dict[str, np.ndarray] = {}
        dim = self.dim
        for i in range(0, len(hashes), 500):
            chunk = hashes[i : i + 500]
            q = f"SELECT hash, vec FROM vectors WHERE hash IN ({','.join('?' * len(chunk))})"
            out.update({r[0]: np.frombuffer(r[1], dtype=np.float32, count=dim) for r in self.conn.execute(q, chunk)})
        return out

    def hashes_with_vectors(self, hashes: Iterable[str]) -> set[str]:
        hashes = list(set(hashes))
        found: set[str] = set()
        for i in range(0, len(hashes), 500):
            chunk = hashes[i : i + 500]
            q = f"SELECT hash FROM vectors WHERE hash IN ({','.join('?' * len(chunk))})"
            found.update(r[0] for r in self.conn.execute(q, chunk))
        return found

    def record_batch(self, records: Iterable[FileRecord], vectors: dict[str, np.ndarray], run_id: int | None, model: str) -> None:
        """Store a batch of file records and new vectors in ONE transaction (all or nothing)."""
        now = time.time()
        with self.writing():
            self.conn.executemany(
                "INSERT OR IGNORE INTO vectors (hash, model, vec) VALUES (?, ?, ?)",
                [(h, model, _vec_to_blob(v)) for h, v in vectors.items()],
            )
            self.conn.executemany(
                """INSERT INTO files (path, size, mtime_ns, hash, width, height, format, status, error, first_run, last_run,
                                      updated, content_width, content_height, item_id, etag)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT(path) DO UPDATE SET size=excluded.size, mtime_ns=excluded.mtime_ns, hash=excluded.hash,
                     width=excluded.width, height=excluded.height, format=excluded.format, status=excluded.status,
                     error=excluded.error, last_run=excluded.last_run, updated=excluded.updated,
                     content_width=excluded.content_width, content_height=excluded.content_height,
                     item_id=excluded.item_id, etag=excluded.etag""",
                [(to_db(r.path), r.size, r.mtime_ns, r.hash, r.width, r.height, r.format, r.status,
                  shown(r.error) if r.error else r.error, run_id, run_id, now,
                  r.content_width, r.content_height, r.item_id, r.etag) for r in records],
            )

    def url_states_for(self, paths: Iterable[str]) -> dict[str, tuple[int | None, str | None, str]]:
        """url -> (size, etag, status) for the given URLs: what a rescan of remote inputs compares."""
        paths = list(paths)
        out = {}
        for i in range(0, len(paths), 500):
            chunk = paths[i : i + 500]
            q = f"SELECT path, size, etag, status FROM files WHERE path IN ({','.join('?' * len(chunk))})"
            out.update({r[0]: (r[1], r[2], r[3]) for r in self.conn.execute(q, chunk)})
        return out

    def set_item_ids(self, ids: Iterable[tuple[str, str | None]]) -> None:
        """(path, item_id): a manifest may give an unchanged file a new id."""
        with self.conn:
            self.conn.executemany("UPDATE files SET item_id = ? WHERE path = ? AND item_id IS NOT ?",
                                  [(i, p, i) for p, i in ids])

    def touch(self, paths: Iterable[str], run_id: int) -> None:
        """Mark unchanged files as seen by ``run_id`` (no decode, no encode)."""
        paths = list(paths)
        with self.writing():
            self.conn.executemany("UPDATE files SET last_run = ? WHERE path = ?", [(run_id, to_db(p)) for p in paths])

    def mark_missing(self, roots: Iterable[str], run_id: int, *, unwalked: Iterable[str] = ()) -> int:
        """Files under ``roots`` that ``run_id`` did not see are gone: they drop out of results.

        Only files under the folders this scan walked count: files under ``unwalked`` (folders it
        could not list) keep their status, and so do files a later run has seen (``last_run`` above
        ``run_id``: another scan of the same catalog, e.g. one that waited for the lock).
        """
        n = 0
        skip = [os.path.abspath(u).rstrip(os.sep) + os.sep for u in unwalked]
        with self.writing():
            for root in roots:
                root = os.path.abspath(root)
                if not os.path.isdir(root):
                    continue
                prefix = root.rstrip(os.sep) + os.sep
                for pre in (prefix, os.fsencode(prefix)):  # text paths, then the BLOB ones (not UTF-8)
                    where = ("status != 'missing' AND substr(path, 1, ?) = ? "
                             "AND (last_run IS NULL OR last_run < ?)")
                    args: list = [len(pre), pre, run_id]
                    for u in skip:
                        u_pre = u if isinstance(pre, str) else os.fsencode(u)
                        where += " AND substr(path, 1, ?) != ?"
                        args += [len(u_pre), u_pre]
                    cur = self.conn.execute(f"UPDATE files SET status = 'missing', updated = ? WHERE {where}", [time.time(), *args])
                    n += cur.rowcount
        return n

    def interrupt_stale_runs(self) -> int:
        """Runs still marked ``running`` whose process is gone (call with the writer lock held): ``interrupted``."""
        with self.writing():
            return self.conn.execute("UPDATE runs SET status = 'interrupted', finished = COALESCE(finished, ?) "
                                     "WHERE status = 'running'", (time.time(),)).rowcount

    def set_status(self, path: str, status: str, error: str | None = None) -> None:
        with self.writing():
            self.conn.execute("UPDATE files SET status = ?, error = ?, updated = ? WHERE path = ?",
                              (status, shown(error) if error else error, time.time(), to_db(path)))

    def get_file(self, path: str) -> FileRow | None:
        row = self.conn.execute(f"SELECT {_FILE_COLS} FROM files WHERE path = ?", (to_db(str(path)),)).fetchone()
        return _row(row) if row else None

    def files(self, status: str | None = "ok") -> Iterator[FileRow]:
        if status is None:
            cur = self.conn.execute(f"SELECT {_FILE_COLS} FROM files ORDER BY path")
        else:
            cur = self.conn.execute(f"SELECT {_FILE_COLS} FROM files WHERE status = ? ORDER BY path", (status,))
        for row in cur:
            yield _row(row)

    def errors(self) -> list[FileRow]:
        return list(self.files("error"))

    # -- vectors ---------------------------------------------------------------------------
    def vectors_after(self, last_id: int, chunk: int = 65536) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids, vectors) with id > last_id, in chunks: what the index has not seen yet."""
        dim = self.dim
        while True:
            rows = self.conn.execute("SELECT id, vec FROM vectors WHERE id > ? ORDER BY id LIMIT ?", (last_id, chunk)).fetchall()
            if not rows:
                return
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), dim)
            yield ids, vecs
            last_id = int(ids[-1])

    def live_vectors(self) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """(ids, vectors, hashes) of the vectors that at least one ``ok`` file uses."""
        rows = self.conn.execute(
            "SELECT v.id, v.vec, v.hash FROM vectors v WHERE v.hash IN (SELECT hash FROM files WHERE status = 'ok') ORDER BY v.id"
        ).fetchall()
        dim = self.dim or 0
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), dim) if rows else np.zeros((0, dim), np.float32)
        return ids, vecs, [r[2] for r in rows]

    def live_vector_ids(self) -> dict[str, int]:
        """content hash -> vector id, for the vectors at least one ``ok`` file uses (no vector data)."""
        return {r[0]: r[1] for r in self.conn.execute(
            "SELECT v.hash, v.id FROM vectors v WHERE v.hash IN (SELECT hash FROM files WHERE status = 'ok')")}

    # -- bounded reads (issue 9): what dupes/apply/report need without a Python object per file -------
    def _chunked(self, sql: str, values: Iterable, size: int = 500) -> Iterator[sqlite3.Row]:
        """Rows of ``sql`` (holding one ``{}`` for the placeholders) over ``values``, ``size`` at a time."""
        values = list(values)
        for i in range(0, len(values), size):
            chunk = values[i : i + size]
            yield from self.conn.execute(sql.format(",".join("?" * len(chunk))), chunk)

    def live_ids(self) -> np.ndarray:
        """Sorted ids of the vectors at least one ``ok`` file uses (a NumPy array: 8 bytes per vector)."""
        cur = self.conn.execute("SELECT v.id FROM vectors v WHERE v.hash IN (SELECT hash FROM files WHERE status = 'ok') "
                                "ORDER BY v.id")
        return np.fromiter((r[0] for r in cur), np.int64)

    def count_ok_files(self) -> int:
        """``ok`` files that have a content hash (the files dupes considers)."""
        return int(self.conn.execute("SELECT COUNT(*) FROM files WHERE status = 'ok' AND hash IS NOT NULL").fetchone()[0])

    def hashes_of_ids(self, ids: Iterable[int]) -> dict[int, str]:
        """vector id -> content hash, for the given ids."""
        return {int(r[0]): r[1] for r in self._chunked("SELECT id, hash FROM vectors WHERE id IN ({})",
                                                       sorted({int(i) for i in ids}))}

    def ids_of_hashes(self, hashes: Iterable[str]) -> dict[str, int]:
        """content hash -> vector id, for the given hashes that have a vector."""
        return {r[0]: int(r[1]) for r in self._chunked("SELECT hash, id FROM vectors WHERE hash IN ({})", sorted(set(hashes)))}

    def rows_for_hashes(self, hashes: Iterable[str], status: str = "ok") -> dict[str, list[FileRow]]:
        """content hash -> its ``status`` files (sorted by path), for the given hashes only."""
        out: dict[str, list[FileRow]] = {}
        # ``+status``: look the rows up by hash, never by the status index, which SQLite (no ANALYZE
        # statistics) otherwise picks and then scans every ok file once per chunk: 29 ms a query at 100k files
        sql = f"SELECT {_FILE_COLS} FROM files WHERE +status = ? AND hash IN ({{}})"
        hashes = sorted(set(hashes))
        for i in range(0, len(hashes), 500):
            chunk = hashes[i : i + 500]
            for row in self.conn.execute(sql.format(",".join("?" * len(chunk))), [status, *chunk]):
                r = _row(row)
                out.setdefault(r.hash, []).append(r)
        for rows in out.values():
            rows.sort(key=lambda r: r.path)
        return out

    def rows_for_ids(self, ids: Iterable[int], status: str = "ok") -> dict[int, list[FileRow]]:
        """vector id -> its content's ``status`` files (sorted by path), for the given vector ids only."""
        out: dict[int, list[FileRow]] = {}
        cols = ", ".join(f"f.{c.strip()}" for c in _FILE_COLS.split(","))
        sql = (f"SELECT v.id AS vid, {cols} FROM vectors v JOIN files f ON f.hash = v.hash "
               "WHERE +f.status = ? AND v.id IN ({})")
        ids = sorted({int(i) for i in ids})
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            for row in self.conn.execute(sql.format(",".join("?" * len(chunk))), [status, *chunk]):
                d = dict(row)
                vid = d.pop("vid")
                d["path"] = from_db(d["path"])
                out.setdefault(vid, []).append(FileRow(**d))
        for rows in out.values():
            rows.sort(key=lambda r: r.path)
        return out

    def paths_of_ids(self, ids: Iterable[int], status: str = "ok") -> Iterator[tuple[int, str, str | None]]:
        """(vector id, path, item id) of the content's ``status`` files, for the given vector ids, streamed."""
        sql = ("SELECT v.id, f.path, f.item_id FROM vectors v JOIN files f ON f.hash = v.hash "
               "WHERE +f.status = ? AND v.id IN ({})")
        ids = sorted({int(i) for i in ids})
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            for vid, path, item in self.conn.execute(sql.format(",".join("?" * len(chunk))), [status, *chunk]):
                yield int(vid), from_db(path), item

    def ids_by_hash(self) -> np.ndarray:
        """Every vector id, in the order of the contents' hashes (as Python orders the hash strings: they are
        ASCII, so SQLite's byte order is theirs)."""
        return np.fromiter((r[0] for r in self.conn.execute("SELECT id FROM vectors ORDER BY hash")), np.int64)

    def copied_hashes(self, status: str = "ok") -> list[str]:
        """Content hashes that more than one ``status`` file has (exact copies), sorted."""
        return [r[0] for r in self.conn.execute(
            "SELECT hash FROM files WHERE status = ? AND hash IS NOT NULL GROUP BY hash HAVING COUNT(*) > 1 ORDER BY hash",
            (status,))]

    def bordered_rows(self, status: str = "ok") -> Iterator[tuple[str, int | None, int | None, int, int]]:
        """(hash, width, height, content_width, content_height) of the files with a uniform border measured
        (the only ones that can be blank pictures), streamed."""
        yield from self.conn.execute(
            "SELECT hash, width, height, content_width, content_height FROM files WHERE status = ? AND hash IS NOT NULL "
            "AND content_width IS NOT NULL AND content_height IS NOT NULL", (status,))

    def count_by_hash(self, hashes: Iterable[str], status: str = "ok") -> dict[str, int]:
        """content hash -> how many ``status`` files have it, for the given hashes."""
        out: dict[str, int] = {}
        hashes = sorted(set(hashes))
        for i in range(0, len(hashes), 500):
            chunk = hashes[i : i + 500]
            out.update({r[0]: int(r[1]) for r in self.conn.execute(
                f"SELECT hash, COUNT(*) FROM files WHERE +status = ? AND hash IN ({','.join('?' * len(chunk))}) GROUP BY hash",
                [status, *chunk])})
        return out

    def hashes_of_paths(self, paths: Iterable[str], status: str = "ok") -> dict[str, str]:
        """path -> content hash of the given paths' ``status`` files."""
        out: dict[str, str] = {}
        paths = sorted(set(paths))
        for i in range(0, len(paths), 500):
            chunk = paths[i : i + 500]
            out.update({from_db(r[0]): r[1] for r in self.conn.execute(
                f"SELECT path, hash FROM files WHERE status = ? AND hash IS NOT NULL AND path IN ({','.join('?' * len(chunk))})",
                [status, *[to_db(p) for p in chunk]])})
        return out

    def path_sizes(self, status: str = "ok") -> Iterator[tuple[str, int]]:
        """(path, size) of every ``status`` file, streamed from the database (nothing held per file)."""
        for path, size in self.conn.execute("SELECT path, size FROM files WHERE status = ? AND hash IS NOT NULL", (status,)):
            yield from_db(path), size or 0

    def link_paths(self) -> Iterator[str]:
        """Paths recorded as ``link``: a symlink to a scanned file, or a second hard link of one (see
        :mod:`embeddr.discover`). They take no space of their own; :func:`embeddr.policy.links_into` finds the
        files they lead to, so ``apply`` keeps those and never breaks a symlink."""
        for (path,) in self.conn.execute("SELECT path FROM files WHERE status = 'link'"):
            yield from_db(path)

    def files_by_hash(self, status: str = "ok") -> dict[str, list[FileRow]]:
        out: dict[str, list[FileRow]] = {}
        for row in self.files(status):
            if row.hash:
                out.setdefault(row.hash, []).append(row)
        return out

    # -- verdicts --------------------------------------------------------------------------
    def add_verdicts(self, pairs: Iterable[tuple[str, str, str]], source: str = "") -> int:
        """Store verdicts; returns how many pairs were new or changed their verdict (the same verdict
        again changes nothing, not even its source)."""
        now = time.time()
        rows = [(to_db(min(a, b)), to_db(max(a, b)), v, source, now) for a, b, v in pairs]
        with self.writing():
            before = self.conn.total_changes
            self.conn.executemany(
                "INSERT INTO verdicts (a, b, verdict, source, created) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(a, b) DO UPDATE SET verdict=excluded.verdict, source=excluded.source, created=excluded.created "
                "WHERE verdicts.verdict != excluded.verdict",
                rows,
            )
            return self.conn.total_changes - before

    def not_duplicate_pairs(self) -> set[tuple[str, str]]:
        """The not-duplicate verdicts between files that are ``ok`` now (driven by the files, through the
        verdicts' (a, b) index: a million stored verdicts cost nothing when few concern live files)."""
        return {(from_db(r[0]), from_db(r[1])) for r in self.conn.execute(
            "SELECT v.a, v.b FROM files f CROSS JOIN verdicts v ON v.a = f.path CROSS JOIN files g ON g.path = v.b "
            "WHERE f.status = 'ok' AND g.status = 'ok' AND v.verdict = 'not_duplicate'")}

    def known_paths(self, paths: Iterable[str]) -> set[str]:
        """Those of ``paths`` the catalog has a row for (any status)."""
        return set(self.file_states_for(paths))

    def verdicts(self) -> list[dict]:
        """Every stored verdict: a, b (a < b), verdict, source, created (epoch seconds), oldest first."""
        return [{**dict(r), "a": from_db(r["a"]), "b": from_db(r["b"])}
                for r in self.conn.execute("SELECT a, b, verdict, source, created FROM verdicts ORDER BY id")]

    # -- summary ---------------------------------------------------------------------------
    def stats(self) -> dict:
        counts = dict(self.conn.execute("SELECT status, COUNT(*) FROM files GROUP BY status").fetchall())
        n_vec = self.conn.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]
        size = self.conn.execute("SELECT COALESCE(SUM(size), 0) FROM files WHERE status = 'ok'").fetchone()[0]
        distinct = self.conn.execute("SELECT COUNT(DISTINCT hash) FROM files WHERE status = 'ok'").fetchone()[0]
        return {
            "db": str(self.path.resolve()),
            "model": self.model,
            "dim": self.dim,
            "files": sum(counts.values()),
            "ok": counts.get("ok", 0),
            "errors": counts.get("error", 0),
            "missing": counts.get("missing", 0),
            "links": counts.get("link", 0),
            "distinct_contents": distinct,
            "vectors": n_vec,
            "bytes": size,
            "verdicts": self.conn.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0],
        }


@contextmanager
def opened(db: "Catalog | str | os.PathLike", *, create: bool = False) -> Iterator[Catalog]:
    """``db`` as an open :class:`Catalog`: an open one is used as is; a path is opened and closed again."""
    if isinstance(db, Catalog):
        yield db
        return
    catalog = Catalog(db, create=create)
    try:
        yield catalog
    finally:
        catalog.close()
