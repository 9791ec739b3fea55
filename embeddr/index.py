"""Store/index stage: a FAISS index of the catalog's vectors, kept as a cache beside the catalog.

The catalog (SQLite) is the source of truth; ``<db>.faiss`` is derived from it. Vector ids
only grow, so bringing the index up to date means adding the vectors whose id is above the
largest id the index holds: adding files never rebuilds the index. Writes are atomic
(temporary file, fsync, rename), so a crash leaves the old index or the new one, never half
of one; a missing, unreadable or inconsistent index file is rebuilt from the catalog.

Identity: beside ``<db>.faiss`` sits ``<db>.faiss.identity`` (JSON): the catalog's random id
(``meta.catalog_id``) and the count, sum and largest of the vector ids the index holds, and the
content hash of the last one. An index is used only when all of these match the catalog and the
index itself; anything else (an index left beside a new catalog of the same name, a restored
backup, a crash between the two renames) is rebuilt. :func:`write_identity` and
:func:`identity_matches` serve any file derived from the catalog, not only this index.

The index is exact (inner product on unit vectors = cosine similarity). FAISS is imported only where an
index is built or read: :func:`refresh` (what ``scan`` calls) tells from the identity file alone that the
index is current, without reading it (a rescan of a million unchanged files does not load 2 GB of vectors).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .catalog import Catalog
from .errors import CatalogError
from .fsutil import atomic_write


def index_path(catalog: Catalog) -> Path:
    return catalog.path.with_name(catalog.path.name + ".faiss")


def _new_index(dim: int) -> faiss.Index:
    import faiss

    return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))


def max_id(index: faiss.Index) -> int:
    import faiss

    if index.ntotal == 0:
        return 0
    return int(faiss.vector_to_array(index.id_map).max())


def identity_path(path: str | os.PathLike) -> Path:
    """The identity file of a file derived from the catalog (``<file>.identity``)."""
    p = Path(path)
    return p.with_name(p.name + ".identity")


def catalog_identity(catalog: Catalog, top: int) -> dict:
    """What a derived file holding the catalog's vectors with id <= ``top`` must match."""
    n, total, biggest = catalog.conn.execute(
        "SELECT COUNT(*), COALESCE(SUM(id), 0), COALESCE(MAX(id), 0) FROM vectors WHERE id <= ?", (int(top),)).fetchone()
    row = catalog.conn.execute("SELECT hash FROM vectors WHERE id = ?", (int(biggest),)).fetchone()
    return {"catalog_id": catalog.catalog_id, "count": int(n), "id_sum": int(total), "max_id": int(biggest),
            "last_hash": row[0] if row else None}


def ids_identity(ids: np.ndarray) -> dict:
    """The count, sum and largest of a set of vector ids (what a derived file holds)."""
    ids = np.asarray(ids, dtype=np.int64)
    return {"count": int(len(ids)), "id_sum": int(ids.sum()) if len(ids) else 0, "max_id": int(ids.max()) if len(ids) else 0}


def write_identity(path: str | os.PathLike, catalog: Catalog, ids: np.ndarray) -> None:
    """Record (atomically) that the derived file ``path`` holds the vectors ``ids`` of ``catalog``."""
    ident = {**catalog_identity(catalog, int(np.max(ids)) if len(ids) else 0), **ids_identity(ids)}
    _atomic_bytes(identity_path(path), json.dumps(ident, sort_keys=True).encode())


def identity_matches(path: str | os.PathLike, catalog: Catalog, ids: np.ndarray) -> bool:
    """True when the derived file ``path``, holding ``ids``, was built from this very catalog and holds
    exactly its vectors up to the largest of ``ids``."""
    try:
        recorded = json.loads(identity_path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(recorded, dict):
        return False
    have = ids_identity(ids)
    want = catalog_identity(catalog, have["max_id"])
    if want["count"] != have["count"] or want["id_sum"] != have["id_sum"] or want["max_id"] != have["max_id"]:
        return False
    return all(recorded.get(k) == v for k, v in {**want, **have}.items())


def _write(path: Path, write) -> None:
    """:func:`embeddr.fsutil.atomic_write`, with a folder in the way or a full disk as a :class:`CatalogError`
    (the temporary file is removed either way)."""
    if path.is_dir():
        raise CatalogError(f"{path}: is a folder, not embeddr's index file; remove or rename it")
    try:
        atomic_write(path, write)
    except (OSError, RuntimeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).strip().splitlines()[-1]
        raise CatalogError(f"{path}: cannot write ({reason})") from None


def _atomic_bytes(path: Path, data: bytes) -> None:
    _write(path, data)


def write_atomic(index: faiss.Index, path: Path, catalog: Catalog | None = None) -> None:
    """Write ``index`` to ``path`` atomically (and, given its ``catalog``, its identity file)."""
    import faiss

    path = Path(path)
    _write(path, lambda tmp: faiss.write_index(index, str(tmp)))
    if catalog is not None:
        write_identity(path, catalog, faiss.vector_to_array(index.id_map) if index.ntotal else np.zeros(0, np.int64))


def load_index(catalog: Catalog, *, save: bool = True) -> faiss.Index:
    """The catalog's FAISS index, brought up to date (incrementally) and saved if it changed.

    An index file that is not this catalog's (see :func:`identity_matches`) is rebuilt."""
    import faiss

    dim = catalog.dim
    if dim is None:
        return _new_index(1)
    path = index_path(catalog)
    if path.is_dir():
        raise CatalogError(f"{path}: is a folder, not embeddr's index file; remove or rename it")
    index = None
    if path.exists():
        try:
            index = faiss.read_index(str(path))
            if index.d != dim or not isinstance(index, faiss.IndexIDMap2):
                index = None
        except RuntimeError:
            index = None
    if index is not None:
        ids = faiss.vector_to_array(index.id_map) if index.ntotal else np.zeros(0, np.int64)
        if not identity_matches(path, catalog, ids):
            index = None
    rebuilt = index is None
    if index is None:
        index = _new_index(dim)
    top = max_id(index)
    changed = rebuilt
    for ids, vecs in catalog.vectors_after(top):
        index.add_with_ids(np.ascontiguousarray(vecs), ids)
        changed = True
    if changed and save:
        write_atomic(index, path, catalog)
    return index


def is_current(catalog: Catalog) -> bool:
    """True when ``<db>.faiss`` holds exactly the catalog's vectors, as its identity file records (the index
    itself is not read: whoever loads it, :func:`load_index`, still checks it against its identity)."""
    if catalog.dim is None:
        return True
    path = index_path(catalog)
    try:
        recorded = json.loads(identity_path(path).read_text(encoding="utf-8"))
        if not path.is_file():
            return False
    except (OSError, ValueError):
        return False
    top = catalog.conn.execute("SELECT COALESCE(MAX(id), 0) FROM vectors").fetchone()[0]
    return isinstance(recorded, dict) and all(recorded.get(k) == v for k, v in catalog_identity(catalog, top).items())


def refresh(catalog: Catalog) -> bool:
    """Bring ``<db>.faiss`` up to date if it is behind the catalog (what a scan does at its end); returns
    whether it had to be loaded. An index already current is left unread (no FAISS import, no memory)."""
    if is_current(catalog):
        return False
    load_index(catalog)
    return True


def stored(index: faiss.Index) -> tuple[np.ndarray, np.ndarray]:
    """(ids, vectors) held by the index, without copying the vectors (a read-only view of FAISS's storage).

    Ids are in insertion order, which is increasing (vector ids only grow).
    """
    import faiss

    ids = faiss.vector_to_array(index.id_map).astype(np.int64)
    flat = faiss.downcast_index(index.index)
    if index.ntotal == 0:
        return ids, np.zeros((0, index.d), np.float32)
    view = faiss.rev_swig_ptr(flat.get_xb(), index.ntotal * index.d).reshape(index.ntotal, index.d)
    view.flags.writeable = False
    return ids, view


def vectors_of(index: faiss.Index, ids: np.ndarray) -> np.ndarray:
    """Reconstruct stored vectors by id (exact for a flat index)."""
    if len(ids) == 0:
        return np.zeros((0, index.d), np.float32)
    return np.vstack([index.reconstruct(int(i)) for i in ids]).astype(np.float32)
