"""Search stage: every pair of vectors at or above a raw cosine, and each vector's nearest neighbours, in one pass.

What a decision needs from the collection is (1) every candidate pair whose raw cosine reaches the
scorer's ``min_raw`` and (2) each vector's ``k`` nearest neighbours (its background, see
:mod:`embeddr.normalize`). Both come out of the same matrix products, so they are computed together:

* :func:`exact_join` -- the reference. Blocks of rows against all vectors (one BLAS product per
  block, never an N x N matrix): O(N^2 * dim), about a minute for 100k vectors on 2 cores.
* :func:`cluster_join` -- k-means-partitioned self-join for large collections. The vectors are split
  into ``nlist`` lists of about :data:`LIST_SIZE` by k-means; every vector knows its ``nprobe``
  nearest lists (its first is its own list). For each list, one product of its members against the
  members of every list any of them probes gives the members' candidate pairs *and* their top-k
  neighbours. Each vector therefore sees at least its own ``nprobe`` nearest lists. A pair found from
  both of its ends is kept once, by a vectorised rule (no Python loop per pair). The cost is about
  N * nprobe * LIST_SIZE * dim * (union factor), linear in N at a fixed list size.
* :func:`estimate_recall` -- an exact check of a seeded sample of rows: the share of their exact pairs
  the join found, and how often their background (the ``neighbours`` callback) agrees. :func:`join`
  raises ``nprobe`` and runs again while the estimate is short of the target.
* :func:`query` -- single queries (``check``, ``serve``) against the same vectors, exact.

Rows are positions in the ``vecs`` array; callers map them to vector ids.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

EPS = 1e-5  # float32 slack so a score of exactly the threshold counts as "at or above"
EXACT_BELOW = 30_000  # collections smaller than this are joined exactly (under ~20 s on 2 cores)
LIST_SIZE = 128  # vectors per k-means list
NPROBE = 12  # lists each vector is compared with; raised while the recall estimate falls short
MAX_PROBES = 24  # probe lists kept per vector in the persisted layout
RECALL_TARGET = 0.99
SAMPLE_ROWS = 2000

# neighbours callback: (rows, nn_scores (m, k) best first, nn_rows (m, k), -1 = none) -> one float per row
NeighbourFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
# decision callback: (rows a, rows b, raw, per_row values) -> which candidate pairs the decision keeps
DecideFn = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


@dataclass
class Join:
    """Candidate pairs (rows ``a < b``, raw cosine) and one value per row from the neighbours callback."""

    a: np.ndarray
    b: np.ndarray
    raw: np.ndarray
    per_row: np.ndarray  # what ``neighbours`` returned for each row (e.g. the background); NaN for rows not joined
    info: dict = field(default_factory=dict)


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


def _no_neighbours(rows: np.ndarray, nn_scores: np.ndarray, nn_rows: np.ndarray) -> np.ndarray:
    return np.full(len(rows), np.nan, np.float32)


def _concat(parts: list[np.ndarray], dtype) -> np.ndarray:
    return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(0, dtype)


def exact_join(vecs: np.ndarray, min_raw: float, k: int, neighbours: NeighbourFn | None = None, *,
               rows: np.ndarray | None = None, block_elems: int = 1 << 24) -> Join:
    """Every pair of ``rows`` (default: all) with raw cosine >= ``min_raw``, and ``neighbours`` of each
    row's top-``k`` among ``rows`` (itself excluded). Exact."""
    t0 = time.perf_counter()
    neighbours = neighbours or _no_neighbours
    rows = np.arange(len(vecs)) if rows is None else np.asarray(rows, np.int64)
    n = len(rows)
    per_row = np.full(len(vecs), np.nan, np.float32)
    sub = np.ascontiguousarray(vecs[rows], dtype=np.float32)
    A, B, R = [], [], []
    bs = max(1, min(n, block_elems // max(n, 1)))
    for s in range(0, n, bs):
        e = min(n, s + bs)
        S = sub[s:e] @ sub.T
        S[np.arange(e - s), np.arange(s, e)] = -np.inf
        if k:
            sc, cols = _topk(S, k)
            nn = np.where(cols >= 0, rows[np.maximum(cols, 0)], -1)
            per_row[rows[s:e]] = neighbours(rows[s:e], sc, nn)
        r, c = np.nonzero(S[:, s:] >= min_raw - EPS)  # columns >= s: only c > r can be kept
        c += s
        keep = c > r + s
        r, c = r[keep], c[keep]
        A.append(rows[r + s]), B.append(rows[c]), R.append(S[r, c])
    a, b = _concat(A, np.int64), _concat(B, np.int64)
    swap = a > b  # rows need not be sorted
    a[swap], b[swap] = b[swap], a[swap]
    return Join(a, b, np.minimum(_concat(R, np.float32), 1.0), per_row,
                {"search": "exact", "device": "cpu", "seconds": round(time.perf_counter() - t0, 3)})


# -- k-means layout ---------------------------------------------------------------------------------------------

def train_centroids(vecs: np.ndarray, nlist: int, *, seed: int = 1234, per_list: int = 32, niter: int = 8) -> np.ndarray:
    """Spherical k-means centroids (``nlist`` x dim) from a seeded sample of ``per_list`` vectors per list
    (16 above :data:`LARGE_NLIST` lists, where training dominates; the lists only need to be roughly even)."""
    import faiss

    n, dim = vecs.shape
    if nlist > LARGE_NLIST:
        per_list, niter = min(per_list, 16), min(niter, 6)
    nlist = max(1, min(nlist, n))
    rng = np.random.default_rng(seed)
    m = min(n, nlist * per_list)
    sample = np.ascontiguousarray(vecs[np.sort(rng.choice(n, m, replace=False))] if m < n else vecs, dtype=np.float32)
    km = faiss.Kmeans(dim, nlist, niter=niter, seed=seed, spherical=True, max_points_per_centroid=per_list,
                      min_points_per_centroid=1, verbose=False)
    km.train(sample)
    return np.ascontiguousarray(km.centroids, dtype=np.float32)


LARGE_NLIST = 2048  # above this many lists, k-means trains on a smaller sample (training dominates the build)


def assign(vecs: np.ndarray, centroids: np.ndarray, nprobe: int = MAX_PROBES, *, block: int = 16384) -> np.ndarray:
    """The ``nprobe`` nearest lists of each vector (int32, nearest first: column 0 is its own list)."""
    n = len(vecs)
    p = min(nprobe, len(centroids))
    out = np.empty((n, p), np.int32)
    ct = centroids.T.copy()
    for s in range(0, n, block):
        out[s : s + block] = _topk(np.asarray(vecs[s : s + block], np.float32) @ ct, p)[1]
        _release(vecs)
    return out


def cluster_join(vecs: np.ndarray, probes: np.ndarray, nlist: int, min_raw: float, k: int,
                 neighbours: NeighbourFn | None = None, *, nprobe: int = NPROBE, rows: np.ndarray | None = None) -> Join:
    """Approximate :func:`exact_join` over a k-means layout (``probes``: :func:`assign` of every row of ``vecs``).

    Each row is compared with the members of its ``nprobe`` nearest lists: list by list, one product of the
    rows that probe the list against its members gives their candidate pairs and their best neighbours in it,
    merged into a running top-``k`` per row. Only ``rows`` (default: all) take part, as queries and matches.
    """
    t0 = time.perf_counter()
    neighbours = neighbours or _no_neighbours
    n_all = len(vecs)
    rows = np.arange(n_all) if rows is None else np.asarray(rows, np.int64)
    nprobe = max(1, min(nprobe, probes.shape[1]))
    pr = np.asarray(probes[rows, :nprobe], np.int64)  # (n, nprobe)
    own = pr[:, 0]
    pos = np.full(n_all, -1, np.int64)  # row -> position in `rows`
    pos[rows] = np.arange(len(rows))
    m_order = np.argsort(own, kind="stable")  # members grouped by list
    m_offs = np.concatenate([[0], np.cumsum(np.bincount(own, minlength=nlist))])
    flat = pr.ravel()
    q_order = np.argsort(flat, kind="stable")  # (position, probe) grouped by probed list
    q_offs = np.concatenate([[0], np.cumsum(np.bincount(flat, minlength=nlist))])
    q_pos_all = q_order // nprobe
    best_s = np.full((len(rows), k), -np.inf, np.float32) if k else None
    best_r = np.full((len(rows), k), -1, np.int32 if n_all < 2**31 else np.int64) if k else None
    A, B, R = [], [], []
    compared = 0
    for L in range(nlist):
        mem = m_order[m_offs[L] : m_offs[L + 1]]  # positions of the list's members
        if len(mem) == 0:
            continue
        qp = q_pos_all[q_offs[L] : q_offs[L + 1]]  # positions of the rows that probe it (members first: own probe)
        S = np.asarray(vecs[rows[qp]], np.float32) @ np.asarray(vecs[rows[mem]], np.float32).T
        compared += S.size
        S[qp[:, None] == mem[None, :]] = -np.inf  # itself
        if k:
            sc, cols = _topk(S, k)
            cand_r = np.where(cols >= 0, rows[mem][np.maximum(cols, 0)], -1)
            merged_s, pick = _topk(np.hstack([best_s[qp], sc]), k)
            both = np.hstack([best_r[qp].astype(np.int64), cand_r])
            best_s[qp] = merged_s
            best_r[qp] = np.where(pick >= 0, np.take_along_axis(both, np.maximum(pick, 0), 1), -1)
        if L % 256 == 255:
            _release(vecs)
        r, c = np.nonzero(S >= min_raw - EPS)
        xp, yp = qp[r], mem[c]
        # (x, y) is also found when y probes x's list, unless x is in this list too: keep it once
        other = (pr[yp] == own[xp][:, None]).any(1)
        keep = (rows[xp] < rows[yp]) | ~other
        x, y, sv = rows[xp[keep]], rows[yp[keep]], S[r[keep], c[keep]]
        A.append(np.minimum(x, y)), B.append(np.maximum(x, y)), R.append(sv)
    per_row = np.full(n_all, np.nan, np.float32)
    if k:
        for s in range(0, len(rows), 65536):
            br = best_r[s : s + 65536].astype(np.int64)
            per_row[rows[s : s + 65536]] = neighbours(rows[s : s + 65536], best_s[s : s + 65536], br)
    a, b, raw = _concat(A, np.int64), _concat(B, np.int64), _concat(R, np.float32)
    info = {"search": "approximate", "device": "cpu", "nlist": int(nlist), "nprobe": int(nprobe),
            "compared_share": round(compared / max(1, len(rows)) ** 2, 5),
            "seconds": round(time.perf_counter() - t0, 3)}
    return Join(a, b, np.minimum(raw, 1.0), per_row, info)


def _exact_rows(vecs: np.ndarray, Q: np.ndarray, min_raw: float, k: int, *, live: np.ndarray | None = None,
                exclude: np.ndarray | None = None, col_block: int = 65536):
    """Queries ``Q`` against every (live) row of ``vecs``, column block by column block (bounded memory).
    Returns (query index, row, raw) of the pairs >= ``min_raw`` and the top-``k`` (scores, rows) per query."""
    m, n = len(Q), len(vecs)
    best_s = np.full((m, k), -np.inf, np.float32)
    best_r = np.full((m, k), -1, np.int64)
    PA, PB, PS = [], [], []
    for cs in range(0, n, col_block):
        ce = min(n, cs + col_block)
        S = Q @ np.asarray(vecs[cs:ce], np.float32).T
        if live is not None:
            S[:, ~live[cs:ce]] = -np.inf
        if exclude is not None:
            hit = np.flatnonzero((exclude >= cs) & (exclude < ce))
            S[hit, exclude[hit] - cs] = -np.inf
        _release(vecs)
        r, c = np.nonzero(S >= min_raw - EPS)
        PA.append(r), PB.append(c + cs), PS.append(S[r, c])
        if k:
            sc, cols = _topk(S, k)
            cols = np.where(cols >= 0, cols + cs, -1)
            sc, pick = _topk(np.hstack([best_s, sc]), k)
            both = np.hstack([best_r, cols])
            best_s, best_r = sc, np.where(pick >= 0, np.take_along_axis(both, np.maximum(pick, 0), 1), -1)
    return _concat(PA, np.int64), _concat(PB, np.int64), np.minimum(_concat(PS, np.float32), 1.0), best_s, best_r


def estimate_recall(vecs: np.ndarray, result: Join, min_raw: float, k: int, neighbours: NeighbourFn | None = None,
                    decide: DecideFn | None = None, *, rows: np.ndarray | None = None, sample: int = SAMPLE_ROWS,
                    seed: int = 0, loose: tuple[float, float] = (0.6, 0.8)) -> dict:
    """Exact check of a seeded sample of rows: the share of their exact pairs the join found -- the pairs the
    decision keeps (``decide``, judged with the join's per-row values), and among them those of raw cosine in
    ``loose`` -- the share of all raw candidate pairs found, and how often the ``neighbours`` value is the exact one."""
    rows = np.arange(len(vecs)) if rows is None else np.asarray(rows, np.int64)
    live = None
    if len(rows) < len(vecs):
        live = np.zeros(len(vecs), bool)
        live[rows] = True
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(rows, min(sample, len(rows)), replace=False))
    want_a, want_b, want_s = [], [], []
    nb_exact = np.full(len(pick), np.nan, np.float32)
    for s in range(0, len(pick), 256):
        q = pick[s : s + 256]
        r, c, sc, nn_s, nn_r = _exact_rows(vecs, np.asarray(vecs[q], np.float32), min_raw, k, live=live, exclude=q)
        if k and neighbours is not None:
            nb_exact[s : s + len(q)] = neighbours(q, nn_s, nn_r)
        want_a.append(q[r]), want_b.append(c), want_s.append(sc)
    wa, wb, ws = _concat(want_a, np.int64), _concat(want_b, np.int64), _concat(want_s, np.float32)
    lo, hi = np.minimum(wa, wb), np.maximum(wa, wb)
    n_rows = int(max(len(vecs), 1))
    in_pick = np.isin(result.a, pick) | np.isin(result.b, pick)
    found = np.isin(lo * n_rows + hi, result.a[in_pick] * n_rows + result.b[in_pick])
    kept = decide(lo, hi, ws, result.per_row) if decide is not None else np.ones(len(ws), bool)
    is_loose = kept & (ws >= loose[0]) & (ws < loose[1])

    def share(mask: np.ndarray) -> float:
        return round(float(found[mask].mean()) if mask.any() else 1.0, 5)

    out = {"recall_sample_rows": int(len(pick)), "recall_sample_pairs": int(kept.sum()),
           "pair_recall_estimate": share(kept), "loose_pair_recall_estimate": share(is_loose),
           "candidate_recall_estimate": share(np.ones(len(ws), bool))}
    if k and neighbours is not None:
        got = result.per_row[pick]
        same = np.isclose(got, nb_exact, atol=1e-4) | (np.isnan(got) & np.isnan(nb_exact))
        out["neighbour_agreement_estimate"] = round(float(same.mean()), 5)
    return out


def join(vecs: np.ndarray, min_raw: float, k: int, neighbours: NeighbourFn | None = None,
         decide: DecideFn | None = None, *,
         rows: np.ndarray | None = None, layout: tuple[np.ndarray, int] | None = None, method: str = "auto",
         nprobe: int = NPROBE, target: float = RECALL_TARGET, sample: int = SAMPLE_ROWS,
         joiner: Callable[..., Join] | None = None) -> Join:
    """The search every command uses. ``method``: ``exact``, ``approximate`` or ``auto`` (exact below
    :data:`EXACT_BELOW` rows or without a ``layout`` = (probes, nlist)). The approximate search checks a sample
    of rows exactly and doubles ``nprobe`` (up to the layout's) until the estimate reaches ``target``, for all the
    decision's pairs and for the loose ones (raw cosine 0.6-0.8)."""
    rows = None if rows is None else np.sort(np.asarray(rows, np.int64))
    n = len(vecs) if rows is None else len(rows)
    if method == "exact" or layout is None or (method == "auto" and n < EXACT_BELOW):
        return exact_join(vecs, min_raw, k, neighbours, rows=rows)
    probes, nlist = layout
    t0 = time.perf_counter()
    tries = []
    while True:
        result = (joiner or cluster_join)(vecs, probes, nlist, min_raw, k, neighbours, nprobe=nprobe, rows=rows)
        t1 = time.perf_counter()
        est = estimate_recall(vecs, result, min_raw, k, neighbours, decide, rows=rows, sample=sample)
        est["recall_check_seconds"] = round(time.perf_counter() - t1, 3)
        tries.append({"nprobe": nprobe, "pair_recall_estimate": est["pair_recall_estimate"],
                      "loose_pair_recall_estimate": est["loose_pair_recall_estimate"]})
        short = min(est["pair_recall_estimate"], est["loose_pair_recall_estimate"]) < target
        if not short or nprobe >= probes.shape[1]:
            break
        nprobe = min(probes.shape[1], nprobe * 2)
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
    if requested == "auto" and n < EXACT_BELOW:
        return "cpu"
    dev = select_device(requested)
    return dev if dev.startswith("cuda") else "cpu"
