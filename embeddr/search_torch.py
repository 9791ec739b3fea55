"""The k-means self-join of :mod:`embeddr.search` on a GPU (or any torch device), for tens of millions of vectors.

Same results as :func:`embeddr.search.cluster_join` (the rows that probe a list against its members give their
candidate pairs and their best neighbours, merged into a running top-k per row), with the vectors, the running
top-k and the products on the device, and the lists taken in batches (one masked product per batch, not per
list); plus a spherical k-means (:func:`train_centroids`) and the probe assignment (:func:`assign`) on the
device, which dominate the cost on the CPU at 10M vectors, and the exact check of the recall estimate's sampled
rows (:func:`exact_pairs`). Float32 throughout (scores are compared with a threshold; no TF32/fp16 rounding).
Runs on ``device="cpu"`` too, which is how the tests check it against the NumPy version.
"""

from __future__ import annotations

import time

import numpy as np

from .search import EPS, MAX_PROBES, NPROBE, Join, NeighbourFn, Neighbours, _finish, _release


def _torch():
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    return torch


def train_centroids(vecs: np.ndarray, nlist: int, *, device: str = "cuda", seed: int = 1234, per_list: int = 32,
                    niter: int = 8, block: int = 65536) -> np.ndarray:
    """Spherical k-means on a seeded sample of ``per_list`` vectors per list, on ``device``."""
    torch = _torch()
    n = len(vecs)
    nlist = max(1, min(nlist, n))
    rng = np.random.default_rng(seed)
    m = min(n, nlist * per_list)
    pick = np.sort(rng.choice(n, m, replace=False)) if m < n else np.arange(n)
    x = torch.from_numpy(np.ascontiguousarray(vecs[pick], np.float32)).to(device)
    c = x[torch.from_numpy(rng.choice(m, nlist, replace=False)).to(device)].clone()
    for _ in range(niter):
        assign_ = torch.cat([torch.argmax(x[s : s + block] @ c.T, 1) for s in range(0, m, block)])
        new = torch.zeros_like(c).index_add_(0, assign_, x)
        empty = new.norm(dim=1) == 0
        new[empty] = c[empty]  # a list nothing chose keeps its centroid
        c = new / new.norm(dim=1, keepdim=True)
    return c.cpu().numpy()


def assign(vecs: np.ndarray, centroids: np.ndarray, nprobe: int = MAX_PROBES, *, device: str = "cuda",
           block: int = 65536) -> np.ndarray:
    """The ``nprobe`` nearest lists of each vector (int32, nearest first), on ``device``."""
    torch = _torch()
    c = torch.from_numpy(np.ascontiguousarray(centroids, np.float32)).to(device)
    p = min(nprobe, len(centroids))
    out = np.empty((len(vecs), p), np.int32)
    for s in range(0, len(vecs), block):
        x = torch.from_numpy(np.ascontiguousarray(vecs[s : s + block], np.float32)).to(device)
        out[s : s + len(x)] = torch.topk(x @ c.T, p, dim=1).indices.int().cpu().numpy()
    return out


def cluster_join(vecs: np.ndarray, probes: np.ndarray, nlist: int, min_raw: float, k: int,
                 neighbours: NeighbourFn | None = None, *, nprobe: int = NPROBE, rows: np.ndarray | None = None,
                 summary: tuple[int, float] | None = None, device: str = "cuda", batch_elements: int | None = None) -> Join:
    """:func:`embeddr.search.cluster_join` on a torch ``device`` (the same pairs, and the same kept neighbours).

    Lists are taken in batches, not one by one: one product of the batch's probing rows (each once) against all
    its lists' members, masked to the (row, list) pairs the probes name, gives the pairs and the neighbours of
    a whole batch (about ``batch_elements`` scores). One list at a time cost ~1 ms a list on an H200 in kernel
    launches and device syncs whatever the arithmetic (a 1M-vector join: 7.8 s for 7,812 lists, 2026-11-30); a
    batch spends the GPU's spare arithmetic on masked scores to save those (not yet timed on a GPU). A CPU has no
    such arithmetic to spare (8x slower batched on torch's CPU): ``batch_elements`` defaults to 2^26 on CUDA and to
    one list at a time elsewhere."""
    torch = _torch()
    if batch_elements is None:
        batch_elements = 1 << 26 if str(device).startswith("cuda") else 1
    t0 = time.perf_counter()
    n_all = len(vecs)
    rows_np = np.arange(n_all) if rows is None else np.asarray(rows, np.int64)
    nprobe = max(1, min(nprobe, probes.shape[1]))
    pr_np = np.asarray(probes[rows_np, :nprobe], np.int64)
    own_np = pr_np[:, 0]
    m_offs = np.concatenate([[0], np.cumsum(np.bincount(own_np, minlength=nlist))])  # members, list by list
    p_offs = np.concatenate([[0], np.cumsum(np.bincount(pr_np.ravel(), minlength=nlist))])  # probing rows, likewise

    dev = torch.device(device)
    V = torch.from_numpy(np.ascontiguousarray(vecs[rows_np], np.float32)).to(dev)  # positions, not rows
    pr = torch.from_numpy(pr_np).to(dev)
    own = pr[:, 0]
    members = torch.from_numpy(np.argsort(own_np, kind="stable")).to(dev)
    probing = torch.from_numpy(np.argsort(pr_np.ravel(), kind="stable") // nprobe).to(dev)
    n = len(rows_np)
    nn = Neighbours(n, k, summary) if k and neighbours is not None else None
    keep_n, ceiling = (nn.keep, nn.ceiling) if nn is not None else (0, float("inf"))
    if keep_n:
        best = torch.full((n, keep_n), -float("inf"), device=dev)
        copies = torch.zeros(n, dtype=torch.int32, device=dev)
    A, B, R = [], [], []
    compared = torch.zeros((), dtype=torch.int64, device=dev)
    lo = 0
    while lo < nlist:
        hi_, q, m = lo, 0, 0  # the batch: lists [lo, hi_)
        while hi_ < nlist:
            dq, dm = int(p_offs[hi_ + 1] - p_offs[hi_]), int(m_offs[hi_ + 1] - m_offs[hi_])
            if hi_ > lo and (q + dq) * (m + dm) > batch_elements:
                break
            q, m, hi_ = q + dq, m + dm, hi_ + 1
        if m == 0:
            lo = hi_
            continue
        sizes_p, sizes_m = np.diff(p_offs[lo : hi_ + 1]), np.diff(m_offs[lo : hi_ + 1])
        entry = probing[int(p_offs[lo]) : int(p_offs[hi_])]  # a probing row per (row, list) of the batch
        entry_list = torch.from_numpy(np.repeat(np.arange(hi_ - lo), sizes_p)).to(dev)
        P, inv = torch.unique(entry, return_inverse=True)  # each probing row once
        probes_of = torch.zeros((len(P), hi_ - lo), dtype=torch.bool, device=dev)
        probes_of[inv, entry_list] = True
        M = members[int(m_offs[lo]) : int(m_offs[hi_])]
        M_list = torch.from_numpy(np.repeat(np.arange(hi_ - lo), sizes_m)).to(dev)
        allowed = probes_of[:, M_list] & (P[:, None] != M[None, :])  # the lists each row probes; not itself
        compared += allowed.sum()
        S = (V[P] @ V[M].T).masked_fill_(~allowed, -float("inf"))
        del allowed
        r, c = torch.nonzero(S >= min_raw - EPS, as_tuple=True)
        if len(r):
            x, y = P[r], M[c]
            other = (pr[y] == own[x][:, None]).any(1)  # y probes x's list: the pair is found there too
            keep = torch.where(own[x] == own[y], x < y, (x < y) | ~other)  # each pair once
            r, c, x, y = r[keep], c[keep], x[keep], y[keep]
            A.append(torch.minimum(x, y)), B.append(torch.maximum(x, y)), R.append(S[r, c])
        if keep_n:
            best[P], copies[P] = _merge(S, best[P], copies[P], ceiling)
        lo = hi_
    if nn is not None and keep_n:
        _kept(nn, best, copies)
    a, b, raw = rows_np[_cat(A, np.int64)], rows_np[_cat(B, np.int64)], _cat(R, np.float32)
    info = {"search": "approximate", "device": str(dev), "nlist": int(nlist), "nprobe": int(nprobe),
            "compared_share": round(int(compared) / max(1, n) ** 2, 5)}
    res = _finish(a, b, raw, vecs, rows_np, nn, neighbours, info)
    res.info["seconds"] = round(time.perf_counter() - t0, 3)
    return res


def exact_pairs(vecs: np.ndarray, Q: np.ndarray, min_raw: float, nn: Neighbours | None, *,
                live: np.ndarray | None = None, exclude: np.ndarray | None = None, device: str = "cuda",
                col_block: int = 262144):
    """:func:`embeddr.search._exact_pairs` on a torch ``device``: queries ``Q`` against every (live) row of
    ``vecs``, a block of columns at a time: (query index, row, raw) of the pairs >= ``min_raw``, and the queries'
    neighbours in ``nn`` (a fresh :class:`~embeddr.search.Neighbours` for these queries). The recall estimate's
    exact check runs here when the join runs on a GPU (at 10M vectors it is minutes of NumPy on the CPU)."""
    torch = _torch()
    dev = torch.device(device)
    q = torch.from_numpy(np.ascontiguousarray(Q, np.float32)).to(dev)
    m, n = len(Q), len(vecs)
    keep = nn.keep if nn is not None else 0
    ceiling = nn.ceiling if nn is not None else float("inf")
    best = torch.full((m, keep), -float("inf"), device=dev)
    copies = torch.zeros(m, dtype=torch.int32, device=dev)
    ex = None if exclude is None else torch.from_numpy(np.asarray(exclude, np.int64)).to(dev)
    lv = None if live is None else torch.from_numpy(np.asarray(live, bool)).to(dev)
    qi = torch.arange(m, device=dev)
    PA, PB, PS = [], [], []
    for cs in range(0, n, col_block):
        ce = min(n, cs + col_block)
        S = q @ torch.from_numpy(np.ascontiguousarray(vecs[cs:ce], np.float32)).to(dev).T
        _release(vecs)
        if lv is not None:
            S[:, ~lv[cs:ce]] = -float("inf")
        if ex is not None:
            hit = (ex >= cs) & (ex < ce)
            S[qi[hit], ex[hit] - cs] = -float("inf")
        r, c = torch.nonzero(S >= min_raw - EPS, as_tuple=True)
        PA.append(r), PB.append(c + cs), PS.append(S[r, c])
        if keep:
            best, copies = _merge(S, best, copies, ceiling)
    if nn is not None and keep:
        _kept(nn, best, copies)
    return _cat(PA, np.int64), _cat(PB, np.int64), np.minimum(_cat(PS, np.float32), 1.0)


def _merge(S, best, copies, ceiling: float):
    """Rows' running neighbours after the scores ``S``: the ``best.shape[1]`` best below ``ceiling`` and the
    count of ``copies`` at or above it (:class:`embeddr.search.Neighbours`' summary, on the device)."""
    import torch

    if np.isfinite(ceiling):
        at = S >= ceiling
        copies = copies + at.sum(1, dtype=torch.int32)
        S = S.masked_fill(at, -float("inf"))
    return torch.topk(torch.cat([best, S], 1), best.shape[1], dim=1).values, copies


def _kept(nn: Neighbours, best, copies) -> None:
    """Put a device's running ``best`` scores below the ceiling and ``copies`` counts into ``nn``."""
    nn.best[:] = best.cpu().numpy()
    nn.kth[:] = nn.best.min(1)
    if nn.copies is not None:
        nn.copies[:] = copies.cpu().numpy()


def _cat(parts: list, dtype) -> np.ndarray:
    """Device tensors, concatenated, as one NumPy array of ``dtype``."""
    import torch

    return torch.cat(parts).cpu().numpy().astype(dtype) if parts else np.zeros(0, dtype)
