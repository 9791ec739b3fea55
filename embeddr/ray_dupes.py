"""The exact pair search of ``embeddr dupes`` as Ray tasks over tiles of the index (``dupes --ray``).

The catalog's vectors are cut into blocks of ``block_rows``; one task per (query block, index block)
tile finds, for its query rows, every vector of its index block with a raw cosine of at least
``scorer.min_raw(threshold)`` (pairs a < b) and, when the score needs the neighbourhood, the
``scorer.neighbours`` (+1 for the query itself, + dead vectors) best of that block. The driver
keeps the best neighbours of each query over all blocks (the same as one search over the whole
index), computes the backgrounds and scores with the same :class:`embeddr.normalize.Scorer` as the
local search, and :func:`embeddr.dupes.find_duplicates` groups them as usual: the report equals the
local one. A task holds two blocks (never the whole collection); tasks run on GPUs through FAISS
when the workers have faiss-gpu and a GPU, on CPUs otherwise.
"""

from __future__ import annotations

import numpy as np

from .match import EPS
from .normalize import NO_BACKGROUND

DEFAULT_BLOCK_ROWS = 65_536


def search_tile(q_ids: np.ndarray, q_vecs: np.ndarray, b_ids: np.ndarray, b_vecs: np.ndarray, min_raw: float,
                want: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(a, b, raw) with a < b and raw >= min_raw, and the ``want`` best (scores, ids) of the block per query."""
    import faiss

    index = faiss.IndexFlatIP(b_vecs.shape[1])
    index.add(np.ascontiguousarray(b_vecs, np.float32))
    q = np.ascontiguousarray(q_vecs, np.float32)
    lims, dist, labels = index.range_search(q, float(min_raw) - EPS)
    rows = np.repeat(np.arange(len(q_ids)), np.diff(lims).astype(np.int64))
    a, b = q_ids[rows], b_ids[labels]
    keep = b > a
    if want:
        k = min(want, len(b_ids))
        nn_scores, nn_pos = index.search(q, k)
        nn_ids = np.where(nn_pos >= 0, b_ids[np.maximum(nn_pos, 0)], -1)
    else:
        nn_scores, nn_ids = np.zeros((len(q_ids), 0), np.float32), np.zeros((len(q_ids), 0), np.int64)
    return a[keep], b[keep], dist[keep], nn_scores, nn_ids


def ray_search(address: str, *, block_rows: int = DEFAULT_BLOCK_ROWS):
    """A search engine for :func:`embeddr.dupes.find_duplicates` that runs on the Ray cluster at ``address``."""

    def engine(stored_ids: np.ndarray, stored_vecs: np.ndarray, ids: np.ndarray, vecs: np.ndarray, threshold: float,
               scorer, live: np.ndarray | None):
        from .ray_cluster import connected

        with connected(address) as ray:
            return _search(ray, stored_ids, stored_vecs, ids, vecs, threshold, scorer, live, block_rows)

    engine.name = f"ray ({address})"
    return engine


def _search(ray, stored_ids, stored_vecs, ids, vecs, threshold, scorer, live, block_rows):
    """:func:`embeddr.normalize.decide` by tiles: ``(a, b, score, bg)``, bg in the order of ``ids``."""
    ids = np.asarray(ids, np.int64)
    if len(ids) == 0:
        z = np.zeros(0, np.int64)
        return z, z, np.zeros(0, np.float32), np.zeros(0, np.float32)
    tile = ray.remote(num_cpus=1)(search_tile)
    dead = 0 if live is None else max(0, len(stored_ids) - len(live))
    want = min(scorer.neighbours + 1 + min(dead, 256), len(stored_ids)) if scorer.normalized else 0
    min_raw = scorer.min_raw(threshold)
    index_blocks = [(ray.put(np.ascontiguousarray(stored_ids[s:s + block_rows])),
                     ray.put(np.ascontiguousarray(stored_vecs[s:s + block_rows])))
                    for s in range(0, len(stored_ids), block_rows)]
    query_blocks = [(ray.put(np.ascontiguousarray(ids[s:s + block_rows])), ray.put(np.ascontiguousarray(vecs[s:s + block_rows])))
                    for s in range(0, len(ids), block_rows)]
    futures = [[tile.remote(qi, qv, bi, bv, min_raw, want) for bi, bv in index_blocks] for qi, qv in query_blocks]
    live_set = None if live is None else set(np.asarray(live).tolist())
    pa, pb, praw, bgs = [], [], [], []
    for qn, row in enumerate(futures):
        parts = ray.get(row)
        for a, b, raw, _, _ in parts:
            pa.append(a)
            pb.append(b)
            praw.append(raw)
        start = qn * block_rows
        q_ids = ids[start:start + block_rows]
        if want:  # the best `want` neighbours over all index blocks = one search over the whole index
            scores = np.concatenate([p[3] for p in parts], axis=1)
            labels = np.concatenate([p[4] for p in parts], axis=1)
            order = np.argsort(-scores, axis=1, kind="stable")[:, :want]
            scores, labels = np.take_along_axis(scores, order, 1), np.take_along_axis(labels, order, 1)
            bgs.append(scorer.backgrounds(q_ids, np.asarray(vecs[start:start + block_rows], np.float32), scores,
                                          labels, live_set))
        else:
            bgs.append(np.full(len(q_ids), NO_BACKGROUND, np.float32))
    a, b, raw = np.concatenate(pa), np.concatenate(pb), np.concatenate(praw)
    if live is not None and len(b):
        keep = np.isin(b, np.asarray(live, np.int64))
        a, b, raw = a[keep], b[keep], raw[keep]
    bg = np.concatenate(bgs).astype(np.float32)
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]

    def bg_of(x: np.ndarray) -> np.ndarray:
        pos = np.clip(np.searchsorted(sorted_ids, x), 0, len(ids) - 1)
        return np.where(sorted_ids[pos] == x, bg[order[pos]], NO_BACKGROUND).astype(np.float32)

    s = scorer.score(raw, bg_of(a), bg_of(b))
    keep = scorer.listed(raw, s, threshold)
    return a[keep], b[keep], s[keep], bg
