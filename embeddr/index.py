"""Store/index stage: a FAISS index of the catalog's vectors, kept as a cache beside the catalog.

The catalog (SQLite) is the source of truth; ``<db>.faiss`` is derived from it. Vector ids
only grow, so bringing the index up to date means adding the vectors whose id is above the
largest id the index holds: adding files never rebuilds the index. Writes are atomic
(temporary file, fsync, rename), so a crash leaves the old index or the new one, never half
of one; a missing, unreadable or inconsistent index file is rebuilt from the catalog.

The index is exact (inner product on unit vectors = cosine similarity).
"""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np

from .catalog import Catalog
from .fsutil import atomic_write


def index_path(catalog: Catalog) -> Path:
    return catalog.path.with_name(catalog.path.name + ".faiss")


def _new_index(dim: int) -> faiss.Index:
    return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))


def max_id(index: faiss.Index) -> int:
    if index.ntotal == 0:
        return 0
    return int(faiss.vector_to_array(index.id_map).max())


def write_atomic(index: faiss.Index, path: Path) -> None:
    atomic_write(path, lambda tmp: faiss.write_index(index, str(tmp)))


def load_index(catalog: Catalog, *, save: bool = True) -> faiss.Index:
    """The catalog's FAISS index, brought up to date (incrementally) and saved if it changed."""
    dim = catalog.dim
    if dim is None:
        return _new_index(1)
    path = index_path(catalog)
    index = None
    if path.exists():
        try:
            index = faiss.read_index(str(path))
            if index.d != dim or not isinstance(index, faiss.IndexIDMap2):
                index = None
        except RuntimeError:
            index = None
    if index is None:
        index = _new_index(dim)
    top = max_id(index)
    catalog_top = catalog.conn.execute("SELECT COALESCE(MAX(id), 0) FROM vectors").fetchone()[0]
    if top > catalog_top:  # index from another catalog (or a restored backup): rebuild
        index, top = _new_index(dim), 0
    changed = False
    for ids, vecs in catalog.vectors_after(top):
        index.add_with_ids(np.ascontiguousarray(vecs), ids)
        changed = True
    if changed and save:
        write_atomic(index, path)
    return index


def stored(index: faiss.Index) -> tuple[np.ndarray, np.ndarray]:
    """(ids, vectors) held by the index, without copying the vectors (a read-only view of FAISS's storage).

    Ids are in insertion order, which is increasing (vector ids only grow).
    """
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
