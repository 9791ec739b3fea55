"""The k-means self-join of :mod:`embeddr.search` on a GPU (or any torch device), for tens of millions of vectors.

Same algorithm and results as :func:`embeddr.search.cluster_join` (list by list: one product of the rows that
probe a list against its members gives their candidate pairs and their best neighbours, merged into a running
top-k per row), with the vectors, the running top-k and the products on the device; plus a spherical k-means
(:func:`train_centroids`) and the probe assignment (:func:`assign`) on the device, which dominate the cost on
the CPU at 10M vectors. Float32 throughout (scores are compared with a threshold; no TF32/fp16 rounding).
Runs on ``device="cpu"`` too, which is how the tests check it against the NumPy version.
"""

from __future__ import annotations

import time

import numpy as np

from .search import EPS, MAX_PROBES, NPROBE, Join, NeighbourFn, _no_neighbours


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
                 device: str = "cuda") -> Join:
    """:func:`embeddr.search.cluster_join` on a torch ``device``."""
    torch = _torch()
    t0 = time.perf_counter()
    neighbours = neighbours or _no_neighbours
    n_all = len(vecs)
    rows_np = np.arange(n_all) if rows is None else np.asarray(rows, np.int64)
    nprobe = max(1, min(nprobe, probes.shape[1]))
    pr_np = np.asarray(probes[rows_np, :nprobe], np.int64)
    own_np = pr_np[:, 0]
    m_order = np.argsort(own_np, kind="stable")
    m_offs = np.concatenate([[0], np.cumsum(np.bincount(own_np, minlength=nlist))])
    flat = pr_np.ravel()
    q_order = np.argsort(flat, kind="stable")
    q_offs = np.concatenate([[0], np.cumsum(np.bincount(flat, minlength=nlist))])

    dev = torch.device(device)
    V = torch.from_numpy(np.ascontiguousarray(vecs[rows_np], np.float32)).to(dev)  # positions, not rows
    pr = torch.from_numpy(pr_np).to(dev)
    own = pr[:, 0]
    m_ord = torch.from_numpy(m_order).to(dev)
    q_pos = torch.from_numpy(q_order // nprobe).to(dev)
    n = len(rows_np)
    best_s = torch.full((n, k), -float("inf"), device=dev) if k else None
    best_p = torch.full((n, k), -1, dtype=torch.long, device=dev) if k else None
    A, B, R = [], [], []
    compared = 0
    for L in range(nlist):
        lo, hi = int(m_offs[L]), int(m_offs[L + 1])
        if lo == hi:
            continue
        mem = m_ord[lo:hi]
        qp = q_pos[int(q_offs[L]) : int(q_offs[L + 1])]
        S = V[qp] @ V[mem].T
        compared += S.numel()
        S[qp[:, None] == mem[None, :]] = -float("inf")
        if k:
            kk = min(k, S.shape[1])
            sc, cols = torch.topk(S, kk, dim=1)
            merged = torch.cat([best_s[qp], sc], 1)
            both = torch.cat([best_p[qp], mem[cols]], 1)
            ms, pick = torch.topk(merged, k, dim=1)
            best_s[qp] = ms
            best_p[qp] = torch.gather(both, 1, pick)
        r, c = torch.nonzero(S >= min_raw - EPS, as_tuple=True)
        xp, yp = qp[r], mem[c]
        other = (pr[yp] == own[xp][:, None]).any(1)
        keep = (xp < yp) | ~other  # positions are in row order, so comparing them compares rows
        A.append(torch.minimum(xp, yp)[keep]), B.append(torch.maximum(xp, yp)[keep]), R.append(S[r[keep], c[keep]])
    per_row = np.full(n_all, np.nan, np.float32)
    if k:
        best_p[~torch.isfinite(best_s)] = -1
        for s in range(0, n, 65536):
            bs = best_s[s : s + 65536].cpu().numpy()
            bp = best_p[s : s + 65536].cpu().numpy()
            nn = np.where(bp >= 0, rows_np[np.maximum(bp, 0)], -1)
            per_row[rows_np[s : s + 65536]] = neighbours(rows_np[s : s + 65536], bs, nn)

    def cat(parts, dtype):
        return torch.cat(parts).cpu().numpy().astype(dtype) if parts else np.zeros(0, dtype)

    a, b, raw = rows_np[cat(A, np.int64)], rows_np[cat(B, np.int64)], cat(R, np.float32)
    info = {"search": "approximate", "device": str(dev), "nlist": int(nlist), "nprobe": int(nprobe),
            "compared_share": round(compared / max(1, n) ** 2, 5), "seconds": round(time.perf_counter() - t0, 3)}
    return Join(a, b, np.minimum(raw, 1.0), per_row, info)
