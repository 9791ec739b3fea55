"""The search structure kept beside the catalog (``<db>.search/``), built once and grown incrementally.

It holds what :mod:`embeddr.search` needs, memory-mapped from disk so a command maps it instead of
loading it (no Python object per vector):

* ``ids.i64`` / ``vecs.f32``: every catalog vector (id order; ids only grow), append-only;
* ``centroids.<gen>.f32`` / ``probes.<gen>.i32``: the k-means layout once the catalog has
  :data:`embeddr.search.EXACT_BELOW` vectors or more: centroids, and each vector's
  :data:`embeddr.search.MAX_PROBES` nearest lists. New vectors are assigned to the existing lists;
  the layout is retrained (a new generation) when the catalog has doubled since it was trained;
* ``meta.json``: how many rows are valid and the catalog identity of those rows
  (:func:`embeddr.index.catalog_identity`: the catalog's random id, count, sum and largest of the vector
  ids, hash of the last). A structure from another catalog, or one that no longer matches the catalog's
  vectors (a restored backup), is rebuilt.

Updates take an exclusive ``flock`` on ``lock``; rows are appended and fsynced before ``meta.json`` is
replaced atomically, so a reader (shared lock while it opens) sees the old state or the new one, and a
crash leaves at worst unused bytes past the valid rows (trimmed by the next update).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from . import search
from .catalog import Catalog

VERSION = 1


def search_path(catalog: Catalog) -> Path:
    return catalog.path.with_name(catalog.path.name + ".search")


class SearchIndex:
    """Memory-mapped vectors (and layout) of one catalog. ``rows_of(ids)`` maps vector ids to rows."""

    def __init__(self, ids: np.ndarray, vecs: np.ndarray, probes: np.ndarray | None = None, nlist: int = 0,
                 info: dict | None = None):
        self.ids, self.vecs, self.probes, self.nlist = ids, vecs, probes, nlist
        self.info = info or {}

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def layout(self) -> tuple[np.ndarray, int] | None:
        return (self.probes, self.nlist) if self.probes is not None else None

    def rows_of(self, ids: np.ndarray) -> np.ndarray:
        """Rows of vector ``ids`` (every id must be stored)."""
        ids = np.asarray(ids, np.int64)
        rows = np.searchsorted(self.ids, ids)
        if len(ids) and (rows.max() >= len(self.ids) or not np.array_equal(self.ids[rows], ids)):
            raise RuntimeError("search structure is missing vectors the catalog has; it will be rebuilt")
        return rows

    def with_layout(self, *, list_size: int = search.LIST_SIZE) -> "SearchIndex":
        """This index, or a copy with a layout trained in memory (an approximate search asked for below
        :data:`embeddr.search.EXACT_BELOW`, where no layout is kept)."""
        if self.probes is not None or len(self) == 0:
            return self
        nlist = max(1, len(self) // list_size)
        centroids = search.train_centroids(self.vecs, nlist)
        return SearchIndex(self.ids, self.vecs, search.assign(self.vecs, centroids), len(centroids), self.info)


@contextmanager
def _locked(folder: Path, exclusive: bool):
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _read_meta(folder: Path) -> dict:
    try:
        return json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return {}


def _write_meta(folder: Path, meta: dict) -> None:
    tmp = folder / f"meta.json.tmp{os.getpid()}"
    with open(tmp, "w") as fh:
        json.dump(meta, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, folder / "meta.json")


def _append(path: Path, valid_bytes: int, data: np.ndarray) -> None:
    with open(path, "ab+") as fh:
        fh.truncate(valid_bytes)  # drop bytes a crashed update left past the valid rows
        fh.seek(valid_bytes)
        fh.write(np.ascontiguousarray(data).tobytes())
        fh.flush()
        os.fsync(fh.fileno())


def _map(path: Path, dtype, shape: tuple) -> np.ndarray:
    if shape[0] == 0:
        return np.zeros(shape, dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=shape)


def _open(folder: Path, meta: dict) -> SearchIndex:
    n, dim = int(meta.get("n", 0)), int(meta.get("dim", 0))
    ids = _map(folder / "ids.i64", np.int64, (n,))
    vecs = _map(folder / "vecs.f32", np.float32, (n, dim))
    lay = meta.get("layout")
    probes, nlist = None, 0
    if lay:
        probes = _map(folder / f"probes.{lay['gen']}.i32", np.int32, (n, int(lay["probes"])))
        nlist = int(lay["nlist"])
    return SearchIndex(ids, vecs, probes, nlist, {"layout": lay})


def _catalog_top(catalog: Catalog) -> tuple[int, bytes | None]:
    row = catalog.conn.execute("SELECT id, vec FROM vectors ORDER BY id DESC LIMIT 1").fetchone()
    return (int(row[0]), bytes(row[1])) if row else (0, None)


def _matches_catalog(catalog: Catalog, meta: dict) -> bool:
    from .index import catalog_identity

    if meta.get("version") != VERSION or meta.get("dim") != catalog.dim:
        return False
    want = catalog_identity(catalog, int(meta.get("last_id", 0)))
    return meta.get("identity") == want and want["count"] == int(meta.get("n", -1))


def _train(folder: Path, meta: dict, vecs: np.ndarray) -> dict:
    """A new layout generation for all ``vecs``; returns its meta entry (old generation files are removed by the caller)."""
    gen = int((meta.get("layout") or {}).get("gen", 0)) + 1
    nlist = max(1, len(vecs) // search.LIST_SIZE)
    gpu = search.search_device("auto", len(vecs)) != "cpu"
    if gpu:  # k-means and the assignment of every vector on the GPU (minutes on a CPU at 10M vectors)
        from . import search_torch as engine
    else:
        engine = search
    centroids = engine.train_centroids(vecs, nlist)
    (folder / f"centroids.{gen}.f32").write_bytes(centroids.tobytes())
    path = folder / f"probes.{gen}.i32"
    with open(path, "wb") as fh:
        for s in range(0, len(vecs), 65536):
            fh.write(engine.assign(vecs[s : s + 65536], centroids).tobytes())
        fh.flush()
        os.fsync(fh.fileno())
    return {"gen": gen, "nlist": int(len(centroids)), "probes": int(min(search.MAX_PROBES, len(centroids))),
            "trained_n": int(len(vecs))}


def update(catalog: Catalog) -> dict:
    """Bring ``<db>.search/`` up to date with the catalog (incremental); returns its meta."""
    from .index import catalog_identity

    folder = search_path(catalog)
    dim = catalog.dim
    with _locked(folder, exclusive=True):
        meta = _read_meta(folder)
        if not _matches_catalog(catalog, meta) or dim is None:
            for child in folder.iterdir():
                if child.name != "lock":
                    child.unlink() if child.is_file() else shutil.rmtree(child)
            meta = {"version": VERSION, "identity": catalog_identity(catalog, 0), "dim": dim, "n": 0, "last_id": 0,
                    "layout": None}
        if dim is None:
            return meta
        n, last = int(meta["n"]), int(meta["last_id"])
        lay = meta.get("layout")
        centroids = None
        if lay:
            centroids = np.fromfile(folder / f"centroids.{lay['gen']}.f32", np.float32).reshape(-1, dim)
        changed = False
        for ids, vecs in catalog.vectors_after(last):
            _append(folder / "ids.i64", n * 8, ids.astype(np.int64))
            _append(folder / "vecs.f32", n * dim * 4, vecs.astype(np.float32))
            if centroids is not None:
                _append(folder / f"probes.{lay['gen']}.i32", n * 4 * lay["probes"], search.assign(vecs, centroids, lay["probes"]))
            n += len(ids)
            last = int(ids[-1])
            changed = True
        if changed:
            meta.update(n=n, last_id=last, identity=catalog_identity(catalog, last))
        old_gen = lay["gen"] if lay else None
        if n >= search.EXACT_BELOW and (not lay or n > 2 * int(lay["trained_n"])):
            vecs = _map(folder / "vecs.f32", np.float32, (n, dim))
            meta["layout"] = _train(folder, meta, vecs)
            del vecs
            changed = True
        if changed or not (folder / "meta.json").exists():
            _write_meta(folder, meta)
        if old_gen is not None and meta["layout"]["gen"] != old_gen:
            for name in (f"centroids.{old_gen}.f32", f"probes.{old_gen}.i32"):
                (folder / name).unlink(missing_ok=True)
    return meta


def open_index(catalog: Catalog, *, update_first: bool = True) -> SearchIndex:
    """The catalog's search structure, brought up to date first (when the catalog is writable).

    Where the folder cannot be written (a read-only catalog), the vectors are read from the catalog into
    memory instead (no layout: exact search).
    """
    folder = search_path(catalog)
    if update_first:
        try:
            update(catalog)
        except OSError:
            return _from_catalog(catalog)
    try:
        with _locked(folder, exclusive=False):
            meta = _read_meta(folder)
            top, _ = _catalog_top(catalog)
            if not meta or int(meta.get("last_id", 0)) != top:
                return _from_catalog(catalog)
            return _open(folder, meta)
    except OSError:
        return _from_catalog(catalog)


def _from_catalog(catalog: Catalog) -> SearchIndex:
    dim = catalog.dim or 0
    parts = list(catalog.vectors_after(0))
    ids = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64)
    vecs = np.vstack([p[1] for p in parts]) if parts else np.zeros((0, dim), np.float32)
    return SearchIndex(ids, vecs, info={"layout": None, "in_memory": True})
