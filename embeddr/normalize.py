"""Score stage: the default decision's score, normalised by each image's background.

Raw cosine treats dense regions of a collection (pages of one document, product shots on white,
star fields) like sparse ones: two different pages of one report can score as high as a photo and
its recoloured copy. Copy-detection research (SSCD, Pizzi et al. 2022, "score normalization")
corrects a pair's similarity by how similar each item is to its *background*, things that are
certainly not copies of it:

    bg(x)     = max( the k-th nearest other image of the collection whose raw cosine is below the copy
                     ceiling (k = 32 for the SSCD presets: a rank beyond any group of renditions),
                     the k_ref-th nearest vector of the preset's *reference* set (generic look-alikes:
                     text pages, font tables, slides, clip-art, screenshots; models/reference/) )
    s'(a, b)  = s(a, b) - beta * max(0, max(bg(a), bg(b)) - floor)

The collection term sees crowds the collection holds many of; the reference term sees the kinds of
picture that look alike to the model however few of them the collection holds, and never counts an
image's own copies. In a sparse neighbourhood (``bg <= floor``, most photos) the score is the raw
cosine, unchanged, so one threshold means the same in both units. A pair is only as trustworthy as
its most crowded member (``max``). Items with fewer than ``k`` other items and no reference have no
background evidence (bg = -1, no correction).

The parameters live in each preset's ``[normalize]`` table and were chosen on the calibration grid of
collection shapes (scripts/sweep_shapes.py; docs/benchmarks.md, "Quality across collection shapes"),
where the known limit is also measured: a crowd of fewer than ``k`` look-alikes that the model scores
like copies of each other is not corrected. :class:`Scorer` is the one object every search path uses;
:func:`decide` is the exact reference decision. Blank pictures (:func:`is_blank`) are never near
duplicates.

Cost: one kNN query per item (``Scorer.neighbours`` neighbours) and one against the small reference set,
O(N * k) memory, plus the pairs found; never an N x N matrix.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import PresetNotFound

if TYPE_CHECKING:  # FAISS is imported where an index is built or read, not at start-up
    import faiss

from .match import EPS, knn, range_arrays

DEFAULT_K = 8
DEFAULT_BETA = 1.0
DEFAULT_FLOOR = 0.3
DEFAULT_CEILING = 0.9  # neighbours at or above this raw cosine are copies, not background
EXTRA_NEIGHBOURS = 64  # how many copies of an item the kNN query looks past
NEIGHBOURS = 128  # an upper bound of Scorer.neighbours for the shipped presets (use the instance property)
NO_BACKGROUND = -1.0


def kth_background(scores: np.ndarray, k: int = DEFAULT_K, ceiling: float = DEFAULT_CEILING,
                   usable: np.ndarray | None = None) -> np.ndarray:
    """Per row of neighbour scores (sorted best first): the k-th score that is usable and below
    ``ceiling`` (a copy is not background); :data:`NO_BACKGROUND` where a row has fewer than k."""
    scores = np.asarray(scores)
    ok = np.isfinite(scores) & (scores < ceiling)
    if usable is not None:
        ok &= usable
    out = np.full(len(scores), NO_BACKGROUND, np.float32)
    rows, cols = np.nonzero(ok & (np.cumsum(ok, axis=1) == k))  # at most one k-th usable per row
    out[rows] = scores[rows, cols]
    return out


def background_from_knn(scores: np.ndarray, labels: np.ndarray, query_ids: np.ndarray, k: int = DEFAULT_K,
                        live: set[int] | None = None, ceiling: float = DEFAULT_CEILING) -> np.ndarray:
    """bg for each query row: the score of its k-th neighbour other than itself (and live) that is
    not a copy of it (raw score below ``ceiling``).

    ``scores``/``labels``: kNN results sorted by decreasing score. Rows with fewer than ``k``
    usable neighbours get :data:`NO_BACKGROUND`.
    """
    labels = np.asarray(labels)
    usable = (labels >= 0) & (labels != np.asarray(query_ids, np.int64)[:, None])
    if live is not None:
        usable &= np.isin(labels, np.fromiter(live, np.int64, len(live)))
    return kth_background(scores, k, ceiling, usable)


def background(index: faiss.Index, ids: np.ndarray, vecs: np.ndarray, *, k: int = DEFAULT_K,
               live: set[int] | None = None, chunk: int = 4096, ceiling: float = DEFAULT_CEILING) -> np.ndarray:
    """bg of each of ``vecs`` (whose ids are ``ids``) among the index's (live) vectors: the collection
    background alone, at rank ``k`` (no reference set)."""
    return _backgrounds(index, np.asarray(ids, np.int64), vecs, Scorer(k=k, ceiling=ceiling), live, chunk)


def _backgrounds(index: faiss.Index, ids: np.ndarray, vecs: np.ndarray, scorer: "Scorer", live: set[int] | None,
                 chunk: int) -> np.ndarray:
    """``scorer``'s background of each query from one chunked kNN query over the index."""
    if len(ids) == 0:
        return np.zeros(0, np.float32)
    dead = 0 if live is None else max(0, index.ntotal - len(live))
    scores, labels = knn(index, vecs, scorer.neighbours + 1 + min(dead, 256), chunk=chunk)
    return scorer.backgrounds(ids, vecs, scores, labels, live)


def penalty(bg_a: np.ndarray | float, bg_b: np.ndarray | float, *, beta: float = DEFAULT_BETA,
            floor: float = DEFAULT_FLOOR) -> np.ndarray:
    """What is subtracted from the raw score of a pair: ``beta * max(0, max(bg_a, bg_b) - floor)``."""
    return beta * np.maximum(0.0, np.maximum(bg_a, bg_b) - floor)


def normalize_scores(raw: np.ndarray, bg_a: np.ndarray, bg_b: np.ndarray, *, beta: float = DEFAULT_BETA,
                     floor: float = DEFAULT_FLOOR) -> np.ndarray:
    """Normalised scores of pairs from their raw cosine and the two backgrounds."""
    return (np.asarray(raw, np.float32) - penalty(bg_a, bg_b, beta=beta, floor=floor)).astype(np.float32)


def normalized_pairs(index: faiss.Index, ids: np.ndarray, vecs: np.ndarray, threshold: float, *, chunk: int = 2048,
                     live: set[int] | None = None, k: int = DEFAULT_K, beta: float = DEFAULT_BETA,
                     floor: float = DEFAULT_FLOOR) -> Iterator[tuple[int, int, float]]:
    """Yield ``(id_a, id_b, normalised score)`` with ``id_a < id_b`` and normalised score >= ``threshold``
    (the collection background alone; :func:`decide` with a :class:`Scorer` of these parameters)."""
    live_ids = None if live is None else np.array(sorted(live), np.int64)
    a, b, s, _ = decide(index, ids, vecs, threshold, Scorer(k=k, beta=beta, floor=floor), live=live_ids, chunk=chunk)
    yield from zip(a.tolist(), b.tolist(), s.tolist())


class Scorer:
    """The default decision's score, as one object every search path uses (dupes, check, serve, eval).

    A search engine gives, for each query vector, its :attr:`neighbours` nearest collection neighbours
    (scores and ids, best first; the query itself and dead ids may appear and are skipped) and every
    candidate pair whose raw cosine is at least :meth:`min_raw`; the scorer turns them into scores:

        bg   = scorer.backgrounds(ids, vecs, nn_scores, nn_ids, live)   # one per query vector
        s    = scorer.score(raw, bg[a], bg[b])                           # vectorised, per pair

    The background of an image is the larger of two: its ``k``-th nearest other image in the collection
    (copies at or above ``ceiling`` skipped) and, when the preset ships one, its ``k_ref``-th nearest
    vector in a fixed *reference* set of generic look-alikes (text pages, clip-art, screenshots). The
    first sees the crowds a collection holds many of; the second sees the kinds of picture that look alike
    to the model however few of them the collection holds, and never counts an image's own copies.
    ``Scorer.raw()`` scores raw cosine (no background).
    """

    def __init__(self, *, normalized: bool = True, k: int = DEFAULT_K, beta: float = DEFAULT_BETA,
                 floor: float = DEFAULT_FLOOR, ceiling: float = DEFAULT_CEILING,
                 reference: np.ndarray | None = None, k_ref: int = 8) -> None:
        self.normalized = normalized
        self.k, self.beta, self.floor, self.ceiling = int(k), float(beta), float(floor), float(ceiling)
        self.k_ref = int(k_ref)
        self.far_raw: float | None = None  # see with_far
        self._ref: faiss.Index | None = None
        if normalized and reference is not None and len(reference):
            import faiss

            ref = np.ascontiguousarray(reference, np.float32)
            self._ref = faiss.IndexFlatIP(ref.shape[1])
            self._ref.add(ref)

    @property
    def neighbours(self) -> int:
        """Nearest collection neighbours (self excluded) :meth:`backgrounds` needs per query."""
        return self.k + (EXTRA_NEIGHBOURS if self.ceiling <= 1.0 else 0)

    @classmethod
    def raw(cls) -> "Scorer":
        return cls(normalized=False)

    @classmethod
    def for_preset(cls, preset, score: str | None = None) -> "Scorer":
        """The scorer of ``preset`` for ``score`` ("raw" | "normalized"; default: the preset's)."""
        if (score or preset.score) != "normalized":
            return cls.raw()
        n = preset.normalize
        return cls(k=n.k, beta=n.beta, floor=n.floor, ceiling=n.ceiling, k_ref=n.k_ref,
                   reference=load_reference(preset))

    def with_far(self, raw: float | None) -> "Scorer":
        """The same scorer, whose :meth:`listed` also lists every pair with a raw cosine of at least ``raw``,
        whatever its score (``None``: none): the pairs the background pushed far below the threshold, for the
        second look's far look (:meth:`embeddr.verify.Verifier.far_confirms`). Every search path lists pairs
        through :meth:`listed`, so ``dupes``, ``check`` and ``serve`` see the same pairs."""
        import copy

        other = copy.copy(self)
        other.far_raw = None if raw is None or not self.normalized else float(raw)
        return other

    def listed(self, raw: np.ndarray, score: np.ndarray, threshold: float) -> np.ndarray:
        """Which candidate pairs a search lists: a score of at least ``threshold`` or, with :meth:`with_far`,
        a raw cosine of at least ``far_raw``."""
        keep = np.asarray(score) >= threshold - EPS
        if self.far_raw is not None:
            keep |= np.asarray(raw) >= self.far_raw - EPS
        return keep

    @property
    def name(self) -> str:
        return "normalized" if self.normalized else "raw"

    @property
    def has_reference(self) -> bool:
        return self._ref is not None

    def min_raw(self, threshold: float) -> float:
        """No pair whose raw cosine is below this can score ``threshold`` or more (the penalty is >= 0)."""
        return float(threshold)

    def reference_background(self, vecs: np.ndarray, chunk: int = 4096) -> np.ndarray:
        """Each vector's ``k_ref``-th nearest reference vector's score (-1 without a reference)."""
        if self._ref is None or len(vecs) == 0 or np.asarray(vecs).shape[1] != self._ref.d:
            # (no reference, or vectors of another model than the preset's: synthetic test catalogs)
            return np.full(len(vecs), NO_BACKGROUND, np.float32)
        k = min(self.k_ref, self._ref.ntotal)
        out = np.empty(len(vecs), np.float32)
        for start in range(0, len(vecs), chunk):
            d, _ = self._ref.search(np.ascontiguousarray(vecs[start:start + chunk], np.float32), k)
            out[start:start + len(d)] = d[:, k - 1]
        return out

    def backgrounds(self, ids: np.ndarray, vecs: np.ndarray | None, nn_scores: np.ndarray, nn_ids: np.ndarray,
                    live: set[int] | None = None) -> np.ndarray:
        """Background of each query row from its kNN rows (and its vector, for the reference set)."""
        if not self.normalized:
            return np.full(len(ids), NO_BACKGROUND, np.float32)
        bg = background_from_knn(nn_scores, nn_ids, ids, self.k, live, self.ceiling)
        if self._ref is not None and vecs is not None:
            bg = np.maximum(bg, self.reference_background(vecs))
        return bg

    def backgrounds_of_others(self, vecs: np.ndarray | None, nn_scores: np.ndarray) -> np.ndarray:
        """:meth:`backgrounds` when ``nn_scores`` are already the scores of each query's nearest *other* live
        vectors, best first (a search that left out the query itself and dead vectors, so no ids are needed):
        the same background. Used by :mod:`embeddr.search`, which keeps only the scores."""
        if not self.normalized:
            return np.full(len(nn_scores), NO_BACKGROUND, np.float32)
        bg = kth_background(nn_scores, self.k, self.ceiling)
        if self._ref is not None and vecs is not None:
            bg = np.maximum(bg, self.reference_background(vecs))
        return bg

    @property
    def summary(self) -> tuple[int, float] | None:
        """What :meth:`backgrounds` reads of the top :attr:`neighbours`: the number at or above ``ceiling`` and the
        ``k`` best below it (:class:`embeddr.search.Neighbours` keeps only these)."""
        return (self.k, self.ceiling) if self.normalized else None

    def score(self, raw: np.ndarray, bg_a: np.ndarray, bg_b: np.ndarray) -> np.ndarray:
        raw = np.minimum(np.asarray(raw, np.float32), 1.0)
        if not self.normalized:
            return raw
        return normalize_scores(raw, bg_a, bg_b, beta=self.beta, floor=self.floor)


def is_blank(width: int | None, height: int | None, content_width: int | None, content_height: int | None) -> bool:
    """A blank picture: a page with at most a page number, a uniform frame. Its embedding says nothing about
    copying (two blank pages of two documents look "identical" to any model), so blank pictures are matched
    only as exact copies (same bytes), never as near-duplicates. ``content_*``: the size without uniform
    borders measured at scan time (None: the picture has no uniform border, so it is not blank; a content box
    this small is measured only when the rest is one colour: :func:`embeddr.decode.content_size`). The share,
    :data:`embeddr.decode.BLANK_FRACTION`, lives where the content box is measured; imported here when called, so
    the scoring stage does not load the decoders (Pillow) at start-up."""
    from .decode import BLANK_FRACTION

    if content_width is None or content_height is None or not width or not height:
        return False
    return content_width * content_height < BLANK_FRACTION * width * height


_REFERENCES: dict[str, np.ndarray] = {}


def load_reference(preset) -> np.ndarray | None:
    """The preset's reference vectors (``[normalize] reference``, relative to the preset file), or None.

    A reference of another dimension than the model's is an error in the preset, not something to skip."""
    name = preset.normalize.reference
    if not name:
        return None
    path = Path(preset.source_file).parent / name if preset.source_file else Path(name)
    key = str(path)
    if key not in _REFERENCES:
        try:
            vecs = np.load(path)
        except OSError as exc:
            raise PresetNotFound(f"{preset.source_file}: reference vectors {path}: {exc.strerror or exc}") from None
        if vecs.ndim != 2 or vecs.shape[1] != preset.dim:
            raise PresetNotFound(f"{preset.source_file}: reference {path} has shape {vecs.shape}, expected (n, {preset.dim})")
        _REFERENCES[key] = vecs.astype(np.float32)
    return _REFERENCES[key]


def decide(index: faiss.Index, ids: np.ndarray, vecs: np.ndarray, threshold: float, scorer: Scorer, *,
           live: np.ndarray | None = None, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The default decision on a set of vectors, by exact search: ``(a, b, score, bg)``.

    ``a < b`` are vector ids of every pair whose score (``scorer``) is at least ``threshold``; ``bg`` is the
    background of each of ``ids`` (same order). ``live``: sorted ids that may be matched (``None``: all
    of the index). Memory: O(N * neighbours) for the kNN rows plus the pairs found, never N x N.
    """
    ids = np.asarray(ids, np.int64)
    if len(ids) == 0:
        z = np.zeros(0, np.int64)
        return z, z, np.zeros(0, np.float32), np.zeros(0, np.float32)
    if scorer.normalized:
        bg = _backgrounds(index, ids, vecs, scorer, None if live is None else set(live.tolist()), chunk)
    else:
        bg = np.full(len(ids), NO_BACKGROUND, np.float32)
    a, b, raw = range_arrays(index, ids, vecs, scorer.min_raw(threshold), chunk=chunk, live=live)
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]

    def bg_of(x: np.ndarray) -> np.ndarray:
        pos = np.clip(np.searchsorted(sorted_ids, x), 0, len(ids) - 1)
        found = sorted_ids[pos] == x
        return np.where(found, bg[order[pos]], NO_BACKGROUND).astype(np.float32)

    s = scorer.score(raw, bg_of(a), bg_of(b))
    keep = scorer.listed(raw, s, threshold)
    return a[keep], b[keep], s[keep], bg
