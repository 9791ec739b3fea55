"""Verify stage: a second, geometric look at borderline pairs (between score and group).

An embedding score alone cannot tell a strong crop of a picture from a different picture of a similar
subject when both score the same: the first differs by a geometric transform of the same pixels, the second
does not. For pairs whose score falls in the preset's *verification band* ``[low, high)`` (``threshold - below``
to ``threshold + above``) this stage looks at the two images again: SIFT key points (OpenCV) on each image
scaled to ``side`` pixels, Lowe's ratio test, then a RANSAC fit of a similarity transform (rotation, scale,
shift; and the same on the mirrored second image, for mirror copies). What it measures (:class:`Look`):

* ``inliers``: matches that agree with the transform;
* ``cells``: how many cells of a 6 x 6 grid on the first image hold them (one logo or a running header is
  one or two cells);
* ``ncc``: after aligning the second image onto the first with that transform, the normalised
  cross-correlation of the (slightly blurred) grey images over their overlap.

The look is asymmetric, because it must overturn the score only on strong evidence:

* a pair scored **below** the threshold (but in the band) becomes a duplicate when the look *confirms* it:
  at least ``min_inliers`` inliers over ``min_cells`` cells and an aligned correlation of at least
  ``min_ncc`` (a strong crop, a mirror, an overlay: the same pixels moved). Only pairs of pictures that do
  not look like the preset's reference set (text pages, tables, slides, clip-art: the kinds of picture made
  from one template, whose different pages align almost pixel for pixel) are rescued this way: both
  images' reference background must be below ``rescue_max_reference``;
* a pair scored **at or above** the threshold (and below ``high``) is dropped when the look *refutes* it:
  fewer than ``veto_inliers`` inliers or an aligned correlation below ``veto_ncc`` (no transform maps one
  picture onto the other: look-alikes, pages of other text).

Pairs above ``high`` are kept without a look; pairs below ``low`` are never looked at. A pair whose files
cannot be read (moved, deleted, not a local file) keeps the plain decision (score >= threshold). See
:func:`decide_band`.

The parameters live in each preset's ``[verify]`` table (:class:`embeddr.presets.Verify`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import numpy as np

GRID = 6  # the inliers' spread is counted on a GRID x GRID grid of the first image

# what the look did to a pair (decide_band's second result)
NOT_LOOKED, UNREADABLE, REFUTED, UPHELD, CONFIRMED = -2, -1, 0, 2, 1


@dataclass(frozen=True)
class Look:
    """What the second look found for one pair."""

    inliers: int = 0
    cells: int = 0
    ncc: float = 0.0
    mirrored: bool = False

    def as_dict(self) -> dict:
        return {"inliers": self.inliers, "cells": self.cells, "ncc": round(self.ncc, 4), "mirrored": self.mirrored}


@dataclass
class _Features:
    points: np.ndarray  # (n, 2) float32 key point positions
    descriptors: np.ndarray | None  # (n, 128) float32 SIFT descriptors
    grey: np.ndarray  # the grey image the points are on (side pixels on its long side at most)


def _cv2():
    try:
        import cv2
    except ImportError as exc:  # pragma: no cover - a core dependency
        raise RuntimeError("verification needs OpenCV: pip install opencv-python-headless "
                           "(or run with --no-verify)") from exc
    return cv2


class Verifier:
    """Looks at pairs of images again (see the module's docstring).

    ``path_of(key)`` gives the file to read for a key (a content hash in ``dupes``); ``None`` or an unreadable
    file makes the pair :data:`UNREADABLE`. ``image_of(key)`` may give the pixels instead (an upload held in
    memory). Features of the last ``cache`` images are kept, and every verdict is remembered, so a pair is
    looked at once per verifier.
    """

    def __init__(self, config, path_of: Callable[[Hashable], str | None] | None = None, *,
                 image_of: Callable[[Hashable], np.ndarray | None] | None = None, cache: int = 2048,
                 max_pixels: int | None = None) -> None:
        self.config = config
        self.path_of = path_of or (lambda key: None)
        self.image_of = image_of or (lambda key: None)
        self.max_pixels = max_pixels
        self._cache: OrderedDict[tuple[Hashable, bool], _Features | None] = OrderedDict()
        self._size = cache
        self._looks: dict[tuple[Hashable, Hashable], Look | None] = {}
        self.looked = 0  # pairs looked at (not counting remembered verdicts)
        self.unreadable = 0
        self.errors: dict[str, str] = {}  # path -> why it could not be read
        cv2 = _cv2()
        self._sift = cv2.SIFT_create(nfeatures=int(config.features))
        self._matcher = cv2.BFMatcher(cv2.NORM_L2)

    # -- features ---------------------------------------------------------------------------------------

    def _grey(self, key: Hashable) -> np.ndarray | None:
        cv2 = _cv2()
        side = int(self.config.side)
        pixels = self.image_of(key)
        if pixels is None:
            path = self.path_of(key)
            if path is None:
                return None
            from .decode import DecodeError, load_image

            try:
                image, _ = load_image(path, min_side=side, max_pixels=self.max_pixels)
            except DecodeError as exc:
                self.errors[str(path)] = exc.reason if hasattr(exc, "reason") else str(exc)
                return None
            except OSError as exc:  # pragma: no cover - raced with a move or delete
                self.errors[str(path)] = str(exc)
                return None
            pixels = np.asarray(image)
        grey = cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY) if pixels.ndim == 3 else np.asarray(pixels, np.uint8)
        h, w = grey.shape[:2]
        scale = side / max(h, w)
        if scale < 1:
            grey = cv2.resize(grey, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(grey)

    def features(self, key: Hashable, mirrored: bool = False) -> _Features | None:
        slot = (key, mirrored)
        if slot in self._cache:
            self._cache.move_to_end(slot)
            return self._cache[slot]
        cv2 = _cv2()
        if mirrored:
            plain = self.features(key)
            grey = None if plain is None else cv2.flip(plain.grey, 1)
        else:
            grey = self._grey(key)
        feats = None
        if grey is not None:
            points, descriptors = self._sift.detectAndCompute(grey, None)
            feats = _Features(np.array([p.pt for p in points], np.float32).reshape(-1, 2), descriptors, grey)
        self._cache[slot] = feats
        while len(self._cache) > self._size:
            self._cache.popitem(last=False)
        return feats

    # -- one pair -----------------------------------------------------------------------------------------

    def _look(self, fa: _Features, fb: _Features, mirrored: bool) -> Look:
        cv2 = _cv2()
        c = self.config
        if fa.descriptors is None or fb.descriptors is None or len(fa.points) < 3 or len(fb.points) < 3:
            return Look(mirrored=mirrored)
        knn = self._matcher.knnMatch(fa.descriptors, fb.descriptors, k=2)
        good = [m[0] for m in knn if len(m) == 2 and m[0].distance < c.ratio * m[1].distance]
        if len(good) < 4:
            return Look(mirrored=mirrored)
        pa = fa.points[[m.queryIdx for m in good]]
        pb = fb.points[[m.trainIdx for m in good]]
        cv2.setRNGSeed(0)  # RANSAC draws the same samples every time: the same pair, the same look
        transform, inliers = cv2.estimateAffinePartial2D(pa, pb, method=cv2.RANSAC,
                                                         ransacReprojThreshold=0.02 * max(fb.grey.shape))
        if transform is None:
            return Look(mirrored=mirrored)
        inl = inliers.ravel().astype(bool)
        h, w = fa.grey.shape
        p = pa[inl]
        gx = np.clip((p[:, 0] / w * GRID).astype(int), 0, GRID - 1)
        gy = np.clip((p[:, 1] / h * GRID).astype(int), 0, GRID - 1)
        cells = len(set(zip(gx.tolist(), gy.tolist())))
        # the second image sampled at the transform of each pixel of the first: the two aligned
        warped = cv2.warpAffine(fb.grey, transform, (w, h), flags=cv2.WARP_INVERSE_MAP | cv2.INTER_LINEAR)
        overlap = cv2.warpAffine(np.full(fb.grey.shape, 255, np.uint8), transform, (w, h),
                                 flags=cv2.WARP_INVERSE_MAP | cv2.INTER_NEAREST) > 0
        ga = cv2.GaussianBlur(fa.grey, (0, 0), 1.5)
        gb = cv2.GaussianBlur(warped, (0, 0), 1.5)
        return Look(int(inl.sum()), cells, _ncc(ga, gb, overlap), mirrored)

    def look(self, a: Hashable, b: Hashable) -> Look | None:
        """What the second look finds for the pair (``None``: a file could not be read); remembered."""
        slot = (a, b) if str(a) <= str(b) else (b, a)
        if slot in self._looks:
            return self._looks[slot]
        a, b = slot
        fa, fb = self.features(a), self.features(b)
        if fa is None or fb is None:
            self.unreadable += 1
            result = None
        else:
            self.looked += 1
            result = self._look(fa, fb, False)
            if not self.confirms(result):
                fm = self.features(b, mirrored=True)
                if fm is not None:
                    other = self._look(fa, fm, True)
                    if self._rank(other) > self._rank(result):
                        result = other
        if len(self._looks) >= 500_000:  # a long-running service: keep memory bounded
            self._looks.clear()
        self._looks[slot] = result
        return result

    def _rank(self, look: Look) -> tuple:
        """The better of two looks (plain, mirrored): confirmed first, then not refuted, then by inliers."""
        return self.confirms(look), not self.refutes(look), look.inliers

    def confirms(self, look: Look | None) -> bool:
        """Strong evidence of the same picture: enough agreeing, spread key points and aligned pixels."""
        c = self.config
        return look is not None and look.inliers >= c.min_inliers and look.cells >= c.min_cells and look.ncc >= c.min_ncc

    def refutes(self, look: Look | None) -> bool:
        """Strong evidence of different pictures: no transform maps one onto the other."""
        c = self.config
        return look is not None and (look.inliers < c.veto_inliers or look.ncc < c.veto_ncc)

    def decide(self, a, b, above: np.ndarray, rescuable: np.ndarray | None = None) -> np.ndarray:
        """For pairs ``(a[i], b[i])`` scored at or above the threshold (``above[i]``) or below it: what the look
        does (:data:`CONFIRMED`, :data:`UPHELD`, :data:`REFUTED`, :data:`UNREADABLE`). A pair below the threshold
        that is not ``rescuable[i]`` is not looked at (:data:`NOT_LOOKED`). Pairs are taken grouped by their first
        member, so each image's features are computed once."""
        out = np.full(len(a), UNREADABLE, np.int8)
        for i in sorted(range(len(a)), key=lambda i: (str(a[i]), str(b[i]))):
            if rescuable is not None and not above[i] and not rescuable[i]:
                out[i] = NOT_LOOKED
                continue
            look = self.look(a[i], b[i])
            if look is None:
                continue
            if above[i]:
                out[i] = REFUTED if self.refutes(look) else UPHELD
            else:
                out[i] = CONFIRMED if self.confirms(look) else UPHELD
        return out

    def stats(self) -> dict:
        return {"pairs_looked_at": self.looked, "pairs_unreadable": self.unreadable}


def _ncc(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    x = a[mask].astype(np.float32)
    y = b[mask].astype(np.float32)
    if x.size < 100:
        return 0.0
    x -= x.mean()
    y -= y.mean()
    d = float(np.sqrt((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / d) if d > 0 else 0.0


def may_rescue(config, scorer, ref_a: np.ndarray, ref_b) -> np.ndarray | None:
    """Which pairs the look may keep below the threshold: neither image looks like the preset's reference set
    (``ref_a``, ``ref_b``: their reference backgrounds, :meth:`embeddr.normalize.Scorer.reference_background`).
    None: no limit (no reference set, or ``rescue_max_reference >= 1``). ``dupes`` and ``check`` both ask here."""
    limit = config.rescue_max_reference
    if limit >= 1.0 or not scorer.has_reference:
        return None
    return (np.asarray(ref_a) < limit) & (np.asarray(ref_b) < limit)


def decide_band(scores: np.ndarray, threshold: float, band: tuple[float, float],
                effect_of: Callable[[np.ndarray, np.ndarray], np.ndarray], eps: float = 1e-6
                ) -> tuple[np.ndarray, np.ndarray]:
    """The decision with verification, for pairs already scored at or above ``low`` (``band = (low, high)``):
    ``(keep, effect)``. Outside the band: ``score >= threshold`` (effect :data:`NOT_LOOKED`). In the band,
    ``effect_of(indices, above_threshold)`` (:meth:`Verifier.decide`) says what the look does: a pair below the
    threshold is kept when :data:`CONFIRMED`, one above it dropped when :data:`REFUTED`; an unreadable or
    upheld pair keeps ``score >= threshold``."""
    scores = np.asarray(scores, np.float32)
    keep = scores >= threshold - eps
    effect = np.full(len(scores), NOT_LOOKED, np.int8)
    low, high = band
    inside = np.flatnonzero((scores >= low - eps) & (scores < high - eps))
    if len(inside):
        e = np.asarray(effect_of(inside, keep[inside]), np.int8)
        effect[inside] = e
        keep[inside[e == CONFIRMED]] = True
        keep[inside[e == REFUTED]] = False
    return keep, effect
