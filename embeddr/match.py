"""Match stage: every pair of vectors at or above a threshold, by exact FAISS search.

Queries are processed in chunks (``chunk`` vectors at a time) with ``range_search``, so memory
is bounded by the chunk and the number of pairs found, never by N x N.

Exact search costs O(N^2) comparisons. For millions of images :func:`approximate_index` builds an
inverted-file index (FAISS ``IndexIVFFlat``) over the same vectors: each query is compared with the
vectors of only ``nprobe`` of ``nlist`` clusters, which is about ``nlist / nprobe`` times less work
and may miss a few pairs (measured in docs/benchmarks.md). It is opt-in (``dupes --approximate``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # FAISS is imported where an index is built or read, not at start-up
    import faiss

EPS = 1e-5  # float32 slack so a score of exactly the threshold counts as "at or above"


def range_pairs(index: faiss.Index, ids: np.ndarray, vecs: np.ndarray, threshold: float, *,
                chunk: int = 2048, live: set[int] | None = None) -> Iterator[tuple[int, int, float]]:
    """Yield ``(id_a, id_b, score)`` with ``id_a < id_b`` and ``score >= threshold``, each pair once.

    ``ids``/``vecs``: the query vectors (their ids in ``index``). ``live``: ids allowed as
    matches (vectors no current file uses are skipped); ``None`` allows all. A pair found from
    either of its ends counts (an approximate index may find it from one side only), vectorised.
    """
    radius = float(threshold) - EPS
    A, B, S = [], [], []
    live_arr = None if live is None else np.fromiter(live, np.int64, len(live))
    for start in range(0, len(ids), chunk):
        q_ids = np.asarray(ids[start : start + chunk], np.int64)
        lims, dist, labels = index.range_search(np.ascontiguousarray(vecs[start : start + chunk]), radius)
        qid = np.repeat(q_ids, np.diff(lims).astype(np.int64))
        keep = labels != qid
        if live_arr is not None:
            keep &= np.isin(labels, live_arr)
        A.append(np.minimum(qid, labels)[keep]), B.append(np.maximum(qid, labels)[keep]), S.append(dist[keep])
    if not A:
        return
    a, b, s = np.concatenate(A), np.concatenate(B), np.minimum(np.concatenate(S), 1.0)
    order = np.lexsort((-s, b, a))
    a, b, s = a[order], b[order], s[order]
    first = np.ones(len(a), bool)
    first[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1])
    for x, y, z in zip(a[first].tolist(), b[first].tolist(), s[first].tolist()):
        yield x, y, z


def range_arrays(index: faiss.Index, ids: np.ndarray, vecs: np.ndarray, threshold: float, *,
                 chunk: int = 2048, live: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair ``(id_a, id_b, raw score)`` with ``id_a < id_b`` and score >= ``threshold`` as three arrays.

    A pair is kept whichever side's query found it (``a``/``b`` are ordered afterwards and duplicates
    dropped), so an approximate index that finds a pair from one side only does not lose it. ``live``: a
    sorted array of the ids allowed as matches (``None``: all). Vectorised: no Python loop per pair.
    """
    radius = float(threshold) - EPS
    out_a, out_b, out_s = [], [], []
    ids = np.asarray(ids, np.int64)
    for start in range(0, len(ids), chunk):
        q_ids = ids[start : start + chunk]
        lims, dist, labels = index.range_search(np.ascontiguousarray(vecs[start : start + chunk], np.float32), radius)
        qa = np.repeat(q_ids, np.diff(lims).astype(np.int64))
        keep = labels != qa
        if live is not None:
            keep &= _member(labels, live)
        qa, lab, sc = qa[keep], labels[keep], dist[keep]
        out_a.append(np.minimum(qa, lab))
        out_b.append(np.maximum(qa, lab))
        out_s.append(np.minimum(sc, 1.0).astype(np.float32))
    if not out_a:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    a, b, s = np.concatenate(out_a), np.concatenate(out_b), np.concatenate(out_s)
    order = np.lexsort((b, a))
    a, b, s = a[order], b[order], s[order]
    first = np.ones(len(a), bool)
    first[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1])
    return a[first], b[first], s[first]


def _member(values: np.ndarray, sorted_ids: np.ndarray) -> np.ndarray:
    pos = np.clip(np.searchsorted(sorted_ids, values), 0, max(len(sorted_ids) - 1, 0))
    return (sorted_ids[pos] == values) if len(sorted_ids) else np.zeros(len(values), bool)


def knn(index: faiss.Index, vecs: np.ndarray, k: int, *, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """k nearest neighbours of each query (scores, ids), chunked."""
    k = max(1, min(k, index.ntotal))
    scores = np.empty((len(vecs), k), np.float32)
    labels = np.empty((len(vecs), k), np.int64)
    for start in range(0, len(vecs), chunk):
        d, i = index.search(np.ascontiguousarray(vecs[start : start + chunk]), k)
        scores[start : start + len(d)] = d
        labels[start : start + len(d)] = i
    return scores, labels


def approximate_index(ids: np.ndarray, vecs: np.ndarray, *, nlist: int | None = None, nprobe: int = 32,
                      seed: int = 1234) -> faiss.Index:
    """An IVF index (inner product) over ``vecs`` with ``ids``, for fast approximate range and kNN search.

    ``nlist`` (clusters) defaults to 4 * sqrt(N); each query visits ``nprobe`` of them (32), so the share
    of vectors compared shrinks as the collection grows. K-means is trained on a seeded sample of 39
    vectors per cluster (FAISS's minimum) for 10 iterations, so training stays cheap and deterministic.
    """
    import faiss

    n, dim = vecs.shape
    nlist = nlist or max(1, min(int(4 * np.sqrt(n)), n // 39 or 1))
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(seed)
    sample = vecs if n <= 39 * nlist else vecs[np.sort(rng.choice(n, 39 * nlist, replace=False))]
    index.cp.seed = seed
    index.cp.niter = 10
    index.train(np.ascontiguousarray(sample, dtype=np.float32))
    for start in range(0, n, 65536):
        index.add_with_ids(np.ascontiguousarray(vecs[start : start + 65536], dtype=np.float32), ids[start : start + 65536])
    index.nprobe = min(nprobe, nlist)
    return index
