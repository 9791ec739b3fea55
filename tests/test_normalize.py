"""Score normalisation (embeddr.normalize): crowds are pushed down, isolated true pairs stay."""

from __future__ import annotations

import faiss
import numpy as np

from embeddr.match import range_pairs
from embeddr.normalize import DEFAULT_CEILING, DEFAULT_K, NO_BACKGROUND, background, normalize_scores, normalized_pairs


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _index(vecs: np.ndarray, ids: np.ndarray) -> faiss.Index:
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(vecs.shape[1]))
    index.add_with_ids(vecs, ids)
    return index


def _collection(seed: int = 0):
    """A dense cluster of 20 similar-but-distinct items (like pages of one document), one isolated
    true pair, and 200 unrelated items; ids: cluster 1..20, pair 101/102, others 1000+."""
    rng = np.random.default_rng(seed)
    dim = 64
    centre = rng.normal(size=dim)
    cluster = _unit(centre + 0.45 * np.linalg.norm(centre) / np.sqrt(dim) * rng.normal(size=(20, dim)) * 1.0)
    base = rng.normal(size=dim)
    pair = _unit(np.stack([base, base + 0.5 * rng.normal(size=dim)]))
    others = _unit(rng.normal(size=(200, dim)))
    vecs = np.vstack([cluster, pair, others]).astype(np.float32)
    ids = np.r_[np.arange(1, 21), [101, 102], np.arange(1000, 1200)].astype(np.int64)
    return ids, vecs


def test_dense_cluster_pushed_down_isolated_pair_kept():
    ids, vecs = _collection()
    index = _index(vecs, ids)
    pair_raw = float(vecs[20] @ vecs[21])
    cluster_raw = (vecs[:20] @ vecs[:20].T)[np.triu_indices(20, 1)]
    threshold = min(pair_raw, float(np.median(cluster_raw))) - 0.01
    raw = {(a, b) for a, b, _ in range_pairs(index, ids, vecs, threshold)}
    assert (101, 102) in raw
    assert sum(1 for a, b in raw if b <= 20) >= 50  # raw cosine flags many cluster pairs

    norm = {(a, b): s for a, b, s in normalized_pairs(index, ids, vecs, threshold)}
    assert (101, 102) in norm and abs(norm[(101, 102)] - pair_raw) < 1e-5  # sparse neighbourhood: unchanged
    assert not any(b <= 20 for a, b in norm)  # the crowd is pushed below the threshold
    assert all(s >= threshold - 1e-5 for s in norm.values())


def test_background_is_kth_neighbour_and_chunking_does_not_matter():
    ids, vecs = _collection(1)
    index = _index(vecs, ids)
    bg = background(index, ids, vecs, k=DEFAULT_K)
    sims = vecs @ vecs.T
    np.fill_diagonal(sims, -np.inf)
    not_copies = np.where(sims < DEFAULT_CEILING - 1e-6, sims, -np.inf)  # copies are not background
    expected = -np.sort(-not_copies, axis=1)[:, DEFAULT_K - 1]
    np.testing.assert_allclose(bg, expected, atol=1e-5)
    np.testing.assert_allclose(background(index, ids, vecs, chunk=7), bg, atol=1e-6)
    # dead vectors (no current file) are not part of anyone's background
    live = set(int(i) for i in ids[5:])
    bg_live = background(index, ids[5:], vecs[5:], live=live)
    sims_live = not_copies[5:, 5:]
    np.testing.assert_allclose(bg_live, -np.sort(-sims_live, axis=1)[:, DEFAULT_K - 1], atol=1e-5)


def test_small_collection_has_no_background_and_keeps_raw_scores():
    ids, vecs = _collection(2)
    ids, vecs = ids[:DEFAULT_K], vecs[:DEFAULT_K]  # fewer than k others each
    index = _index(vecs, ids)
    assert (background(index, ids, vecs) == NO_BACKGROUND).all()
    raw = sorted(range_pairs(index, ids, vecs, 0.3))
    assert sorted(normalized_pairs(index, ids, vecs, 0.3)) == raw


def test_penalty_formula():
    s = normalize_scores(np.array([0.9, 0.9, 0.9]), np.array([0.1, 0.8, 0.3]), np.array([0.2, 0.1, 0.5]),
                         beta=1.0, floor=0.3)
    np.testing.assert_allclose(s, [0.9, 0.4, 0.7], atol=1e-6)


def test_many_near_identical_copies_are_not_their_own_background():
    """A picture in more than k renditions (thumbnails, re-encodes: raw cosine >= the ceiling) keeps
    its pairs: copies are skipped when looking for an item's background."""
    rng = np.random.default_rng(3)
    dim = 64
    base = rng.normal(size=dim)
    copies = _unit(base + 0.05 * rng.normal(size=(DEFAULT_K + 4, dim)))  # k + 4 near-identical copies
    others = _unit(rng.normal(size=(200, dim)))
    vecs = np.vstack([copies, others]).astype(np.float32)
    ids = np.arange(1, len(vecs) + 1, dtype=np.int64)
    index = _index(vecs, ids)
    assert float((copies @ copies.T).min()) >= DEFAULT_CEILING
    norm = {(a, b) for a, b, _ in normalized_pairs(index, ids, vecs, 0.6)}
    n = len(copies)
    assert len([1 for a, b in norm if b <= n]) == n * (n - 1) // 2  # every pair of copies is kept
