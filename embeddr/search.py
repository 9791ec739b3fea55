"""Search stage: every pair of vectors at or above a raw cosine, and what the decision reads of each vector's
nearest neighbours, in one pass.

What a decision needs from the collection is (1) every candidate pair whose raw cosine reaches the
scorer's ``min_raw`` and (2) each vector's nearest neighbours (its background, see :mod:`embeddr.normalize`).
Both come out of the same matrix products, so they are computed together:

* :func:`exact_join` -- the reference. Blocks of rows against all vectors (one BLAS product per
  block, never an N x N matrix): O(N^2 * dim), about a minute for 100k vectors on 2 cores.
* :func:`cluster_join` -- k-means-partitioned self-join for large collections. The vectors are split
  into ``nlist`` lists of :data:`LIST_SIZE` by k-means; every vector knows its nearest lists (the first is
  its own). For each list, one product of the rows that probe it against its members gives their candidate
  pairs *and* their neighbours in it. Each vector therefore sees its ``nprobe`` nearest lists. A pair
  found from both of its ends is kept once, by a vectorised rule (no Python loop per pair or per row).
* :class:`Neighbours` -- what is kept of each row's neighbours while the join runs: not the top ``k``
  (scores and rows), but only what the decision reads of them (``summary=(rank, ceiling)``: how many
  neighbours score at or above ``ceiling`` -- copies -- and the ``rank`` best below it): 33 numbers a row
  for the shipped presets instead of 96 x 2. From that the callback gets the scores the top ``k`` would
  give it for every rule that reads only those (the normalised score's background), so the results are
  those of the full top ``k``.
* The per-row values (the background) are computed only for the rows a decision reads: the ends of the
  candidate pairs (:meth:`Join.values`), so the reference-set search of the normalised score runs for
  those rows, not for every vector.
* :func:`estimate_recall` -- an exact check of a seeded sample of rows: the share of their exact pairs
  the join found, and how often their background agrees with the exact one. :func:`join` raises
  ``nprobe`` and runs again while the estimate is short of the target.
* :func:`query` -- single queries (``check``, ``serve``) against the same vectors, exact.

Rows are positions in the ``vecs`` array; callers map them to vector ids.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

EPS = 1e-5  # float32 slack so a score of exactly the threshold counts as "at or above"
EXACT_BELOW = 30_000  # collections smaller than this are joined exactly (under ~20 s on 2 cores)
LIST_SIZE = 128  # vectors per k-means list (fixed: larger lists found fewer pairs for the same work)
NPROBE = 12  # lists each vector is compared with; raised while the recall estimate falls short
MAX_PROBES = 24  # probe lists kept per vector in the persisted layout
RECALL_TARGET = 0.99
SAMPLE_ROWS = 2000

# neighbours callback: (rows, nn_scores (m, k): the scores of each row's nearest *other* rows taking part in the
# join, best first, -inf = none) -> one float per row (e.g. the background)
NeighbourFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
# decision callback: (rows a, rows b, raw, per_row values) -> which candidate pairs the decision keeps
DecideFn = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


class Neighbours:
    """Per row (position), what the decision reads of its nearest neighbours, kept while a join runs.

    ``summary=(rank, ceiling)``: only the number of neighbours at or above ``ceiling`` and the ``rank`` best
    below it are kept (``None``: the plain top ``k``). :meth:`scores` gives each row the scores its top ``k``
    would have for every rule that reads only those; copies at or above the ceiling read as ``ceiling``."""

    def __init__(self, n: int, k: int, summary: tuple[int, float] | None = None):
        self.k = int(k)
        rank, ceiling = summary if summary is not None else (k, math.inf)
        self.keep, self.ceiling = int(min(rank, k)), float(ceiling)
        self.best = np.full((n, self.keep), -np.inf, np.float32)  # the `keep` best below the ceiling, unordered
        self.kth = np.full(n, -np.inf, np.float32)  # each row's worst kept score
        self.copies = np.zeros(n, np.int32) if math.isfinite(self.ceiling) else None

    def add(self, pos: np.ndarray, S: np.ndarray, *, prefilter: bool = True) -> None:
        """Merge scores ``S`` (len(pos) x c; the row itself already -inf) into rows ``pos`` (distinct).
        ``S`` is overwritten."""
        if self.keep == 0 or S.shape[1] == 0:
            return
        keep, c = self.keep, S.shape[1]
        kth = self.kth[pos]
        if c > 8 * keep:  # a wide block (exact search)
            if self.copies is not None:
                hi = S >= self.ceiling
                self.copies[pos] += hi.sum(1, dtype=np.int32)
                S[hi] = -np.inf
            if not np.isfinite(kth).all():  # rows not full yet: the block's own best first
                S = np.partition(S, c - keep, axis=1)[:, -keep:]
            else:  # only the scores above a row's worst kept one count
                r, col = np.nonzero(S > kth[:, None])
                cnt = np.bincount(r, minlength=len(pos))
                width = int(cnt.max()) if len(cnt) else 0
                if width == 0:
                    return
                if width > 4 * keep:  # many: the block's own best first
                    S = np.partition(S, c - keep, axis=1)[:, -keep:]
                else:
                    P = np.full((len(pos), width), -np.inf, np.float32)
                    P[r, np.arange(len(r)) - np.repeat(np.cumsum(cnt) - cnt, cnt)] = S[r, col]
                    S = P
            rmax = S.max(1)
        else:
            rmax = S.max(1)
            if self.copies is not None:  # copies are rare: only the rows that have one are looked at again
                h = np.flatnonzero(rmax >= self.ceiling)
                if len(h):
                    sub = S[h]
                    hi = sub >= self.ceiling
                    self.copies[pos[h]] += hi.sum(1, dtype=np.int32)
                    sub[hi] = -np.inf
                    S[h] = sub
                    rmax[h] = sub.max(1)
        upd = rmax > kth  # only rows with a score better than their worst kept one change
        if not prefilter:
            upd[:] = True
        if not upd.any():
            return
        if not upd.all():
            pos, S = pos[upd], S[upd]
        X = np.concatenate([self.best[pos], S], axis=1)
        new = np.partition(X, X.shape[1] - keep, axis=1)[:, -keep:]
        self.best[pos] = new
        self.kth[pos] = new[:, 0]  # the partition puts the worst kept one first

    def scores(self, pos: np.ndarray) -> np.ndarray:
        """(len(pos), k) scores best first, as the top ``k`` neighbours would give them."""
        m = len(pos)
        out = np.full((m, self.k), -np.inf, np.float32)
        best = -np.sort(-self.best[pos], axis=1)
        start = np.zeros(m, np.int64)
        if self.copies is not None:
            start = np.minimum(self.copies[pos], self.k).astype(np.int64)
            out[np.arange(self.k)[None, :] < start[:, None]] = self.ceiling
        col = start[:, None] + np.arange(self.keep)[None, :]
        ok = col < self.k
        out[np.nonzero(ok)[0], col[ok]] = best[ok]
        return out


@dataclass
class Join:
    """Candidate pairs (rows ``a < b``, raw cosine) and one value per row from the neighbours callback
    (:meth:`values`: computed for the rows asked for, once; ``per_row`` holds those computed, NaN elsewhere)."""

    a: np.ndarray
    b: np.ndarray
    raw: np.ndarray
    per_row: np.ndarray
    info: dict = field(default_factory=dict)
    nn: Neighbours | None = None  # kept neighbours of the joined rows, by position
    pos: np.ndarray | None = None  # row -> position in nn (-1: not joined)
    neighbours: NeighbourFn | None = None
    vecs: np.ndarray | None = None  # the joined vectors (memory-mapped pages are released after use)
    _done: np.ndarray | None = None

    def values(self, rows: np.ndarray) -> np.ndarray:
        """The neighbours callback's value of each of ``rows`` (NaN for rows not joined), computed on first use."""
        rows = np.asarray(rows, np.int64)
        if self.nn is not None and self.neighbours is not None and len(rows):
            if self._done is None:
                self._done = np.zeros(len(self.per_row), bool)
            todo = np.unique(rows[~self._done[rows]])
            todo = todo[self.pos[todo] >= 0]
            for s in range(0, len(todo), 65536):
                r = todo[s : s + 65536]
                self.per_row[r] = self.neighbours(r, self.nn.scores(self.pos[r]))
                if self.vecs is not None:  # the callback may have read the rows' vectors
                    _release(self.vecs)
            self._done[rows] = True
        return self.per_row[rows]

    def finish(self) -> None:
        """Compute the values of every pair's rows, then drop the kept neighbours (memory)."""
        self.values(np.concatenate([self.a, self.b]))
        self.nn = self.pos = None


def _release(vecs: np.ndarray) -> None:
    """Drop the pages of a memory-mapped ``vecs`` from this process's resident set (they stay in the page
    cache, so reading them again is cheap): a pass over 1M x 512 vectors would otherwise keep 2 GB resident."""
    mm = getattr(vecs, "_mmap", None)
    if mm is not None and hasattr(mm, "madvise"):
        import mmap

        try:
            mm.madvise(mmap.MADV_DONTNEED)
        except (OSError, ValueError):  # pragma: no cover - platforms without it
            pass


class _Gather:
    """Rows of ``vecs`` as a float32 array: fancy indexing for an array in memory; for a read-only memory-mapped
    file, one ``preadv`` per row into the result. (A gather through the mapping maps whole page-cache folios,
    up to megabytes per row touched: one list's ~1,500 random rows mapped most of a 1M x 512 file, 2 GB of
    resident set, and releasing the mapping after each list made every gather four times slower.)"""

    def __init__(self, vecs: np.ndarray):
        self.vecs, self.fd = vecs, None
        name = getattr(vecs, "filename", None)
        if (isinstance(vecs, np.memmap) and name and vecs.dtype == np.float32 and vecs.ndim == 2
                and vecs.flags.c_contiguous and hasattr(os, "preadv")):
            try:
                self.fd = os.open(name, os.O_RDONLY)
            except OSError:  # pragma: no cover - fall back to the mapping
                self.fd = None
            self.offset, self.row_bytes = int(vecs.offset), vecs.shape[1] * 4

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        if self.fd is None:
            return np.asarray(self.vecs[rows], np.float32)
        out = np.empty((len(rows), self.vecs.shape[1]), np.float32)
        buf, rb, off, fd = memoryview(out).cast("B"), self.row_bytes, self.offset, self.fd
        pos = 0
        for r in rows.tolist():
            os.preadv(fd, [buf[pos : pos + rb]], off + r * rb)
            pos += rb
        return out

    def __getitem__(self, i) -> np.ndarray:
        """``vecs[i]`` for an int or an array of rows, read as :meth:`__call__` does (a slice reads through the
        mapping: contiguous rows map no more than themselves)."""
        if isinstance(i, (int, np.integer)):
            return self(np.array([int(i)], np.int64))[0]
        if isinstance(i, slice):
            return np.asarray(self.vecs[i], np.float32)
        return self(np.asarray(i, np.int64))

    def __len__(self) -> int:
        return len(self.vecs)

    @property
    def shape(self) -> tuple:
        return self.vecs.shape

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __del__(self) -> None:  # pragma: no cover - closed explicitly where it matters
        try:
            self.close()
        except Exception:
            pass


RowReader = _Gather  # what callers holding memory-mapped vectors read single rows through


def _topk(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the ``k`` largest scores (best first) and their columns; pads with (-inf, -1) when k > columns."""
    m, c = scores.shape
    kk = min(k, c)
    if kk <= 0:
        return np.full((m, k), -np.inf, np.float32), np.full((m, k), -1, np.int64)
    part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk] if kk < c else np.broadcast_to(np.arange(c), (m, c))
    sc = np.take_along_axis(scores, part, 1)
    order = np.argsort(-sc, axis=1, kind="stable")
    sc, cols = np.take_along_axis(sc, order, 1), np.take_along_axis(part, order, 1).astype(np.int64)
    cols[~np.isfinite(sc)] = -1
    if kk < k:
        sc = np.hstack([sc, np.full((m, k - kk), -np.inf, np.float32)])
        cols = np.hstack([cols, np.full((m, k - kk), -1, np.int64)])
    return sc.astype(np.float32, copy=False), cols


def _concat(parts: list[np.ndarray], dtype) -> np.ndarray:
    return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(0, dtype)


def _finish(a: np.ndarray, b: np.ndarray, raw: np.ndarray, vecs: np.ndarray, rows: np.ndarray,
            nn: Neighbours | None, neighbours: NeighbourFn | None, info: dict) -> Join:
    n_all = len(vecs)
    pos = None
    if nn is not None:
        pos = np.full(n_all, -1, np.int64)
        pos[rows] = np.arange(len(rows))
    return Join(a, b, np.minimum(raw, 1.0), np.full(n_all, np.nan, np.float32), info, nn, pos,
                neighbours if nn is not None else None, vecs)


def exact_join(vecs: np.ndarray, min_raw: float, k: int, neighbours: NeighbourFn | None = None, *,
               rows: np.ndarray | None = None, block_elems: int = 1 << 24,
               summary: tuple[int, float] | None = None) -> Join:
    """Every pair of ``rows`` (default: all) with raw cosine >= ``min_raw``, and the ``neighbours`` value of each
    row from its top-``k`` among ``rows`` (itself excluded; ``summary``: see :class:`Neighbours`). Exact."""
    t0 = time.perf_counter()
    rows = np.arange(len(vecs)) if rows is None else np.asarray(rows, np.int64)
    n = len(rows)
    nn = Neighbours(n, k, summary) if k and neighbours is not None else None
    sub = np.ascontiguousarray(vecs[rows], dtype=np.float32)
    A, B, R = [], [], []
    bs = max(1, min(n, block_elems // max(n, 1)))
    for s in range(0, n, bs):
        e = min(n, s + bs)
        S = sub[s:e] @ sub.T
        S[np.arange(e - s), np.arange(s, e)] = -np.inf
        r, c = np.nonzero(S[:, s:] >= min_raw - EPS)  # columns >= s: only c > r can be kept
        c += s
        keep = c > r + s
        r, c = r[keep], c[keep]
        A.append(rows[r + s]), B.append(rows[c]), R.append(S[r, c])
        if nn is not None:
            nn.add(np.arange(s, e), S, prefilter=False)
    a, b = _concat(A, np.int64), _concat(B, np.int64)
    swap = a > b  # rows need not be sorted
    a[swap], b[swap] = b[swap], a[swap]
    res = _finish(a, b, _concat(R, np.float32), vecs, rows, nn, neighbours,
                  {"search": "exact", "device": "cpu"})
    res.info["seconds"] = round(time.perf_counter() - t0, 3)
    return res


# -- k-means layout ---------------------------------------------------------------------------------------------

def train_centroids(vecs: np.ndarray, nlist: int, *, seed: int = 1234, per_list: int = 32, niter: int = 8) -> np.ndarray:
    """Spherical k-means centroids (``nlist`` x dim) from a seeded sample of ``per_list`` vectors per list.

    The lists' quality decides the recall at a given probe count, so the sample and the iterations are not cut
    for large ``nlist`` (measured on 200k realistic vectors: 16 a list and 6 iterations missed 5x more pairs at
    12 probes, a two-level k-means 18x more; docs/benchmarks.md)."""
    import faiss

    n, dim = vecs.shape
    nlist = max(1, min(nlist, n))
    rng = np.random.default_rng(seed)
    m = min(n, nlist * per_list)
    sample = np.ascontiguousarray(vecs[np.sort(rng.choice(n, m, replace=False))] if m < n else vecs, dtype=np.float32)
    _release(vecs)
    km = faiss.Kmeans(dim, nlist, niter=niter, seed=seed, spherical=True, max_points_per_centroid=per_list,
                      min_points_per_centroid=1, verbose=False)
    km.train(sample)
    return np.ascontiguousarray(km.centroids, dtype=np.float32)


def assign(vecs: np.ndarray, centroids: np.ndarray, nprobe: int = MAX_PROBES, *, block: int = 16384) -> np.ndarray:
    """The ``nprobe`` nearest lists of each vector (int32, nearest first: column 0 is its own list)."""
    import faiss

    n = len(vecs)
    p = min(nprobe, len(centroids))
    out = np.empty((n, p), np.int32)
    index = faiss.IndexFlatIP(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, np.float32))
    for s in range(0, n, block):
        out[s : s + block] = index.search(np.ascontiguousarray(vecs[s : s + block], np.float32), p)[1]
        _release(vecs)
    return out


def cluster_join(vecs: np.ndarray, probes: np.ndarray, nlist: int, min_raw: float, k: int,
                 neighbours: NeighbourFn | None = None, *, nprobe: int = NPROBE, rows: np.ndarray | None = None,
                 summary: tuple[int, float] | None = None) -> Join:
    """Approximate :func:`exact_join` over a k-means layout (``probes``: :func:`assign` of every row of ``vecs``).

    Each row is compared with the members of its ``nprobe`` nearest lists: list by list, one product of the
    rows that probe the list against its members gives their candidate pairs and their neighbours in it,
    merged into each row's kept neighbours (:class:`Neighbours`). Only ``rows`` (default: all) take part, as
    queries and matches.
    """
    t0 = time.perf_counter()
    n_all = len(vecs)
    rows = np.arange(n_all) if rows is None else np.asarray(rows, np.int64)
    n = len(rows)
    nprobe = max(1, min(nprobe, probes.shape[1]))
    pr = np.asarray(probes[rows, :nprobe], np.int32)  # (n, nprobe), by position
    own = pr[:, 0]
    counts = np.bincount(own, minlength=nlist)
    # (position, probe) grouped by probed list; within a list its members (probe 0) first, by position
    flat = pr.ravel().astype(np.int64) * 2 + (np.arange(pr.size) % nprobe > 0)
    q_order = np.argsort(flat, kind="stable")
    q_offs = np.concatenate([[0], np.cumsum(np.bincount(flat // 2, minlength=nlist))])
    q_pos_all = (q_order // nprobe).astype(np.int64)
    del flat, q_order
    nn = Neighbours(n, k, summary) if k and neighbours is not None else None
    A, B, R = [], [], []
    compared = 0
    thr = np.float32(min_raw - EPS)
    gather = _Gather(vecs)
    todo = np.flatnonzero(counts)
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(1)  # reads the next list's rows (preadv lets go of the GIL) while this one is joined
    nxt = pool.submit(gather, rows[q_pos_all[q_offs[todo[0]] : q_offs[todo[0] + 1]]]) if len(todo) else None
    for i, L in enumerate(todo.tolist()):
        nm = int(counts[L])
        qp = q_pos_all[q_offs[L] : q_offs[L + 1]]  # members first
        Q = nxt.result()
        if i + 1 < len(todo):
            L2 = todo[i + 1]
            nxt = pool.submit(gather, rows[q_pos_all[q_offs[L2] : q_offs[L2 + 1]]])
        S = Q @ Q[:nm].T
        compared += S.size
        idx = np.arange(nm)
        S[idx, idx] = -np.inf  # itself
        r, c = np.nonzero(S >= thr)
        if len(r):
            mem = r < nm
            # two members: found twice in this product, kept once (c > r); a query from another list: (x, y) is
            # found again when y probes x's list, and is then kept from the smaller row's side only
            keep = np.where(mem, c > r, True)
            o = ~mem
            if o.any():
                xp, yp = qp[r[o]], qp[c[o]]
                other = (pr[yp] == own[xp][:, None]).any(1)
                keep[o] = (xp < yp) | ~other
            r, c = r[keep], c[keep]
            x, y = qp[r], qp[c]
            A.append(np.minimum(x, y)), B.append(np.maximum(x, y)), R.append(S[r, c])
        if nn is not None:
            nn.add(qp, S)
    pool.shutdown()
    gather.close()
    a, b = rows[_concat(A, np.int64)], rows[_concat(B, np.int64)]
    info = {"search": "approximate", "device": "cpu", "nlist": int(nlist), "nprobe": int(nprobe),
            "compared_share": round(compared / max(1, n) ** 2, 5)}
    res = _finish(a, b, _concat(R, np.float32), vecs, rows, nn, neighbours, info)
    res.info["seconds"] = round(time.perf_counter() - t0, 3)
    return res


def _column_blocks(vecs: np.ndarray, Q: np.ndarray, live: np.ndarray | None, exclude: np.ndarray | None,
                   col_block: int):
    """``(first column, scores)`` of the queries ``Q`` against ``vecs``, one block of columns at a time (bounded
    memory): rows that are not ``live`` and each query's ``exclude`` row score -inf."""
    n = len(vecs)
    for cs in range(0, n, col_block):
        ce = min(n, cs + col_block)
        S = Q @ np.asarray(vecs[cs:ce], np.float32).T
        if live is not None:
            S[:, ~live[cs:ce]] = -np.inf
        if exclude is not None:
            hit = np.flatnonzero((exclude >= cs) & (exclude < ce))
            S[hit, exclude[hit] - cs] = -np.inf
        _release(vecs)
        yield cs, S


def _exact_rows(vecs: np.ndarray, Q: np.ndarray, min_raw: float, k: int, *, live: np.ndarray | None = None,
                exclude: np.ndarray | None = None, col_block: int = 65536):
    """Queries ``Q`` against every (live) row of ``vecs``, column block by column block (bounded memory).
    Returns (query index, row, raw) of the pairs >= ``min_raw`` and the top-``k`` (scores, rows) per query."""
    m = len(Q)
    best_s = np.full((m, k), -np.inf, np.float32)
    best_r = np.full((m, k), -1, np.int64)
    PA, PB, PS = [], [], []
    for cs, S in _column_blocks(vecs, Q, live, exclude, col_block):
        r, c = np.nonzero(S >= min_raw - EPS)
        PA.append(r), PB.append(c + cs), PS.append(S[r, c])
        if k:
            sc, cols = _topk(S, k)
            cols = np.where(cols >= 0, cols + cs, -1)
            sc, pick = _topk(np.hstack([best_s, sc]), k)
            both = np.hstack([best_r, cols])
            best_s, best_r = sc, np.where(pick >= 0, np.take_along_axis(both, np.maximum(pick, 0), 1), -1)
    return _concat(PA, np.int64), _concat(PB, np.int64), np.minimum(_concat(PS, np.float32), 1.0), best_s, best_r


def _exact_pairs(vecs: np.ndarray, Q: np.ndarray, min_raw: float, nn: Neighbours | None, *,
                 live: np.ndarray | None = None, exclude: np.ndarray | None = None, col_block: int = 32768):
    """Queries ``Q`` against every (live) row of ``vecs``, column block by column block (bounded memory):
    (query index, row, raw) of the pairs >= ``min_raw``, and the queries' neighbours kept in ``nn``."""
    PA, PB, PS = [], [], []
    allq = np.arange(len(Q))
    for cs, S in _column_blocks(vecs, Q, live, exclude, col_block):
        r, c = np.nonzero(S >= min_raw - EPS)
        PA.append(r), PB.append(c + cs), PS.append(S[r, c])
        if nn is not None:
            nn.add(allq, S)
    return _concat(PA, np.int64), _concat(PB, np.int64), np.minimum(_concat(PS, np.float32), 1.0)


def estimate_recall(vecs: np.ndarray, result: Join, min_raw: float, k: int, neighbours: NeighbourFn | None = None,
                    decide: DecideFn | None = None, *, rows: np.ndarray | None = None, sample: int = SAMPLE_ROWS,
                    seed: int = 0, loose: tuple[float, float] = (0.6, 0.8),
                    summary: tuple[int, float] | None = None, core: DecideFn | None = None,
                    exact: Callable[..., tuple] | None = None) -> dict:
    """Exact check of a seeded sample of rows: the share of their exact pairs the join found -- the pairs the
    decision keeps (``decide``, judged with the join's per-row values), and among them those of raw cosine in
    ``loose`` -- the share of all raw candidate pairs found, and how often the ``neighbours`` value is the exact one.

    ``core``: which of the kept pairs the decision lists for their score; the others (``decide`` lists them for
    their raw cosine alone: the far look's candidates, a budgeted best effort) are estimated apart
    (``far_pair_recall_estimate``) and left out of ``pair_recall_estimate`` and ``loose_pair_recall_estimate``.
    ``exact``: the exact search of the sampled rows (default :func:`_exact_pairs`; on a GPU
    :func:`embeddr.search_torch.exact_pairs`)."""
    rows = np.arange(len(vecs)) if rows is None else np.asarray(rows, np.int64)
    live = None
    if len(rows) < len(vecs):
        live = np.zeros(len(vecs), bool)
        live[rows] = True
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(rows, min(sample, len(rows)), replace=False))
    want_a, want_b, want_s = [], [], []
    nb_exact = np.full(len(pick), np.nan, np.float32)
    gather = _Gather(vecs)
    for s in range(0, len(pick), 256):
        q = pick[s : s + 256]
        nn = Neighbours(len(q), k, summary) if k and neighbours is not None else None
        r, c, sc = (exact or _exact_pairs)(vecs, gather(q), min_raw, nn, live=live, exclude=q)
        if nn is not None:
            nb_exact[s : s + len(q)] = neighbours(q, nn.scores(np.arange(len(q))))
        want_a.append(q[r]), want_b.append(c), want_s.append(sc)
    gather.close()
    wa, wb, ws = _concat(want_a, np.int64), _concat(want_b, np.int64), _concat(want_s, np.float32)
    lo, hi = np.minimum(wa, wb), np.maximum(wa, wb)
    n_rows = int(max(len(vecs), 1))
    in_pick = np.isin(result.a, pick) | np.isin(result.b, pick)
    found = np.isin(lo * n_rows + hi, result.a[in_pick] * n_rows + result.b[in_pick])
    if decide is not None:
        result.values(np.concatenate([lo, hi]))
        kept = decide(lo, hi, ws, result.per_row)
    else:
        kept = np.ones(len(ws), bool)
    far = np.zeros(len(ws), bool)
    if core is not None and kept.any():
        far[kept] = ~core(lo[kept], hi[kept], ws[kept], result.per_row)
        kept = kept & ~far
    is_loose = kept & (ws >= loose[0]) & (ws < loose[1])

    def share(mask: np.ndarray) -> float:
        return round(float(found[mask].mean()) if mask.any() else 1.0, 5)

    out = {"recall_sample_rows": int(len(pick)), "recall_sample_pairs": int(kept.sum()),
           "pair_recall_estimate": share(kept), "loose_pair_recall_estimate": share(is_loose),
           "candidate_recall_estimate": share(np.ones(len(ws), bool))}
    if core is not None:
        out["far_sample_pairs"], out["far_pair_recall_estimate"] = int(far.sum()), share(far)
    if k and neighbours is not None:
        got = result.values(pick)
        same = np.isclose(got, nb_exact, atol=1e-4) | (np.isnan(got) & np.isnan(nb_exact))
        out["neighbour_agreement_estimate"] = round(float(same.mean()), 5)
    return out


def join(vecs: np.ndarray, min_raw: float, k: int, neighbours: NeighbourFn | None = None,
         decide: DecideFn | None = None, *,
         rows: np.ndarray | None = None, layout: tuple[np.ndarray, int] | None = None, method: str = "auto",
         nprobe: int = NPROBE, target: float = RECALL_TARGET, sample: int = SAMPLE_ROWS,
         joiner: Callable[..., Join] | None = None, summary: tuple[int, float] | None = None,
         core: DecideFn | None = None, exact: Callable[..., tuple] | None = None) -> Join:
    """The search every command uses. ``method``: ``exact``, ``approximate`` or ``auto`` (exact below
    :data:`EXACT_BELOW` rows or without a ``layout`` = (probes, nlist)). The approximate search checks a sample
    of rows exactly and doubles ``nprobe`` (up to the layout's) until the estimate reaches ``target``, for all the
    decision's pairs and for the loose ones (raw cosine 0.6-0.8). ``summary``: what the decision reads of each
    row's top ``k`` neighbours (:class:`Neighbours`). ``core``: the decision's pairs listed for their score (see
    :func:`estimate_recall`); the target holds for those, and the far look's candidates are estimated apart.
    ``joiner`` and ``exact``: the join and the estimate's exact check on another device (a GPU, through torch).
    The returned join has the per-row values of every pair's rows."""
    rows = None if rows is None else np.sort(np.asarray(rows, np.int64))
    n = len(vecs) if rows is None else len(rows)
    if method == "exact" or layout is None or (method == "auto" and n < EXACT_BELOW):
        result = exact_join(vecs, min_raw, k, neighbours, rows=rows, summary=summary)
        result.finish()
        return result
    probes, nlist = layout
    t0 = time.perf_counter()
    tries = []
    while True:
        result = (joiner or cluster_join)(vecs, probes, nlist, min_raw, k, neighbours, nprobe=nprobe, rows=rows,
                                          summary=summary)
        t1 = time.perf_counter()
        est = estimate_recall(vecs, result, min_raw, k, neighbours, decide, rows=rows, sample=sample,
                              summary=summary, core=core, exact=exact)
        est["recall_check_seconds"] = round(time.perf_counter() - t1, 3)
        tries.append({"nprobe": nprobe, "seconds": result.info["seconds"],
                      "pair_recall_estimate": est["pair_recall_estimate"],
                      "loose_pair_recall_estimate": est["loose_pair_recall_estimate"]})
        short = min(est["pair_recall_estimate"], est["loose_pair_recall_estimate"]) < target
        if not short or nprobe >= probes.shape[1]:
            break
        nprobe = min(probes.shape[1], nprobe * 2)
    result.finish()
    result.info.update(est)
    result.info["recall_target"] = target
    result.info["tries"] = tries
    result.info["seconds"] = round(time.perf_counter() - t0, 3)
    return result


def query(vecs: np.ndarray, q: np.ndarray, min_raw: float, k: int, *, live: np.ndarray | None = None,
          exclude: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """For each query vector: (matching rows, their raw cosine >= ``min_raw``, top-``k`` scores, top-``k`` rows),
    exact, among the rows of ``vecs`` where ``live`` (a boolean mask; default all). ``exclude``: per query a row
    to leave out (its own vector; -1 = none)."""
    q = np.atleast_2d(np.asarray(q, np.float32))
    ex = None if exclude is None else np.asarray(exclude, np.int64)
    r, c, s, nn_s, nn_r = _exact_rows(vecs, q, min_raw, k, live=live, exclude=ex)
    return [(c[r == i], s[r == i], nn_s[i], nn_r[i]) for i in range(len(q))]


def search_device(requested: str = "auto", n: int = 0) -> str:
    """Where the approximate join runs: ``cpu``, or ``cuda`` when asked for (an error if there is none) or, for
    ``auto``, when torch sees a GPU and the collection is large enough to need the approximate join."""
    from .devices import select_device

    requested = (requested or "auto").lower()
    if requested == "auto" and (n < EXACT_BELOW or not _may_have_cuda()):
        return "cpu"
    dev = select_device(requested)
    return dev if dev.startswith("cuda") else "cpu"


def _may_have_cuda() -> bool:
    """Whether an NVIDIA GPU may be here, without importing torch (half a gigabyte of memory and seconds of
    start-up on a CPU-only machine just to learn that there is none)."""
    import glob
    import os

    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return bool(glob.glob("/dev/nvidia[0-9]*") or os.path.exists("/proc/driver/nvidia"))
