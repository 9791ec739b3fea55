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
  ``min_ncc`` (a strong crop, a mirror, an overlay: the same pixels moved), or, for images too plain for many
  key points (smooth wallpapers, gradients), at least ``few_inliers`` inliers over ``few_cells`` cells and a
  correlation of at least ``few_ncc``, which different pictures did not reach on the calibration cells. Only
  pairs of pictures that do not look like the preset's reference set (text pages, tables, slides, clip-art:
  the kinds of picture made from one template, whose different pages align almost pixel for pixel) are
  rescued this way: both images' reference background must be below ``rescue_max_reference`` (or the page look
  found one of them too plain to be a page: :meth:`Verifier.plain_pages`). A pair the
  look cannot confirm is still confirmed when one image, slid over the other at ``dense_side`` pixels (scaled
  to 35-100 % of its width, plain or mirrored), correlates at least ``dense_ncc`` (:meth:`Verifier.dense`):
  the copies of a picture too plain for key points;
* a pair scored **at or above** the threshold (and below ``high``) is dropped when the look *refutes* it:
  fewer than ``veto_inliers`` inliers or an aligned correlation below ``veto_ncc`` within the inliers'
  convex hull (no transform maps one picture onto the other, or what both show does not agree:
  look-alikes, pages of other text), and only when both images have at least ``veto_min_points`` key
  points (an image too plain to be matched is not evidence of a different picture) and, with
  ``far_upholds``, the far look (below) does not confirm it, nor the dense look alone when the look had fewer
  than ``dense_upholds_points`` key points (a pair it would rescue below the threshold is not dropped above it).

**Pages** are different: two pages set from one template (a manual's pages, slide builds, tables that differ in a
few glyphs) align almost pixel for pixel and score like copies at any score, up to 0.99. With ``pages = true``,
a pair of two images that both look like the reference set (>= ``page_reference``, :func:`page_kinds`) and
scores at or above the
threshold gets a *page look* (:meth:`Verifier.page_look`) whatever its score: key points at ``page_side`` pixels,
a RANSAC homography (a rescan's perspective included), then the first page cut into ``page_tiles`` x
``page_tiles`` tiles and each tile that holds ink in either page matched against the other within
``page_shift`` pixels (normalised correlation, after a global fit of grey levels). It is the same page only when
every such tile matches (``page_min_tile``): a changed page number, a new bullet, another glyph in a table
refute the pair. Added ink counts as a change, so a page with a stamp or caption put on it is another page too;
pages too small to read (a thumbnail under ``page_min_side`` pixels) keep the score's decision. Below the
threshold, in the band, a pair of pages is kept when the page look finds the same page (not only the same
template): pages are rescued by the page look, never by the picture look.

Images only *somewhat* like the reference set (>= ``page_maybe``) and both mostly blank paper
(:meth:`Verifier.is_page`: diagrams, slides, but also clip-art and products on white) get the same page look at
or above the threshold with a looser verdict (:meth:`Verifier.paper_refutes`): other drawings only when at least
``page_paper_fail`` of the inked tiles differ, since a caption or a recolouring of clip-art changes some tiles
and another diagram of one template most of them. :meth:`Verifier.page_verdict` is the one place that decides.

**The far look.** A picture with many renditions of its own, or a smooth wallpaper among other smooth wallpapers,
has a high background, and the normalised score can push its true copies far below the band although their raw
cosine reaches the threshold. With ``far = true`` (at the preset's calibrated threshold) every search path also
lists the pairs whose *raw* cosine reaches the threshold (:meth:`embeddr.normalize.Scorer.with_far`), and such a
pair below the band is kept only when the dense look places one image in the other (``dense_ncc``) *and* the fine
detail agrees there (:meth:`Verifier.detail`: band-passed images at ``far_side`` pixels correlate at least
``far_detail``): shading alone makes two star fields or two gradients of one palette slide onto each other, their
edges and stars do not line up. As for any rescue below the threshold, pictures like the reference set (pages,
tables, slides: ``rescue_max_reference``) never get it.

**The scene check** (``scene_cells`` > 0): a pair of pictures at or above the threshold, in the band or above it,
is dropped when the look's transform leaves many textured cells without an inlier and nothing it aligns correlates
(:meth:`Verifier.scene_refutes`): two shots of one static scene in which a textured part moved. Pairs above
``high`` get no other look (pages excepted); pairs below ``low`` are looked at only by the far look. A pair whose files
cannot be read (moved, deleted, not a local file) keeps the plain decision (score >= threshold). See
:func:`decide_band`.

The parameters live in each preset's ``[verify]`` table (:class:`embeddr.presets.Verify`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np

GRID = 6  # the inliers' spread is counted on a GRID x GRID grid of the first image
# the inliers' hull stands for what both images show when they spread over HULL_MIN_CELLS cells of the grid
# and it covers HULL_MIN_AREA of the first image (fewer: a planar pattern of two other shots, such as a
# chessboard, or a few chance matches; the whole overlap's correlation is used then)
HULL_MIN_CELLS = 12
SCENE_POINTS = 10  # a grid cell with this many key points of an image is textured enough to need an inlier
HULL_MIN_AREA = 0.05

# what the look did to a pair (decide_band's second result)
NOT_LOOKED, UNREADABLE, REFUTED, UPHELD, CONFIRMED = -2, -1, 0, 2, 1
PAGE_NO, PAGE_FAINT, PAGE_MAYBE, PAGE_YES = 0, 1, 2, 3  # page_kinds' codes


@dataclass(frozen=True)
class Look:
    """What the second look found for one pair."""

    inliers: int = 0
    cells: int = 0
    ncc: float = 0.0  # aligned grey correlation over the whole overlap
    mirrored: bool = False
    content_ncc: float = 0.0  # the same over what both images show: without either image's uniform border
    # (content_box, with the preset's content_boxes) and within the inliers' convex hull when they spread wide
    # (margins and paper around a rescan left out); else the whole overlap's
    points: int = 0  # key points of the image with fewer: below veto_min_points a look has no material to refute
    # cells of the grid inside the overlap that hold at least SCENE_POINTS key points and no inlier, counted for
    # each image's key points and the fewer of the two kept: parts of a textured picture that do not follow the
    # transform the rest follows (a moved object in a static scene; Verifier.scene_refutes)
    stray: int = 0
    # the similarity transform found (2 x 3, sampling the second image at each pixel of the first), for
    # Verifier.aligned_detail; not part of what the look reports
    transform: np.ndarray | None = field(default=None, compare=False, repr=False)

    def as_dict(self) -> dict:
        return {"inliers": self.inliers, "cells": self.cells, "ncc": round(self.ncc, 4),
                "content_ncc": round(self.content_ncc, 4), "key_points": self.points, "mirrored": self.mirrored,
                "stray_cells": self.stray}


@dataclass(frozen=True)
class PageLook:
    """What the page look found for one pair of pages (:meth:`Verifier.page_look`)."""

    inliers: int = 0  # key point matches that agree with the homography
    tiles: int = 0  # tiles with ink in either page, compared
    worst: float = 0.0  # the lowest tile correlation (1: every tile the same)
    small: bool = False  # a page too small to read: no verdict
    failed: int = 0  # compared tiles that do not match (correlation below page_min_tile)
    points: int = 0  # key points at page_side of the page with fewer (:meth:`Verifier._too_plain_for_pages`)
    # compared tiles with ink in one page and none in the other (added or removed content), by the page that
    # holds the ink: bare_a in the first page only, bare_b in the second only
    bare_a: int = 0
    bare_b: int = 0
    # compared tiles wholly inside what both images show (not along a border either has), and those of them that
    # failed with ink in both: other ink, not ink added (:meth:`Verifier.ink_changed`)
    shown: int = 0
    changed: int = 0
    # bare tiles wholly inside what both images show, by the page that holds the ink (not a border either has)
    inner_bare_a: int = 0
    inner_bare_b: int = 0

    @property
    def bare(self) -> int:
        return self.bare_a + self.bare_b

    @property
    def two_way(self) -> int:
        """Bare tiles in the direction with fewer: a copy with something put on it (a caption, a logo, a build
        step's bullet) has ink the other lacks on one side only; another drawing (a move on a board, another
        page) has it on both."""
        return min(self.bare_a, self.bare_b)

    def as_dict(self) -> dict:
        return {"inliers": self.inliers, "tiles": self.tiles, "worst_tile": round(self.worst, 4),
                "failed_tiles": self.failed, "bare_tiles": self.bare, "bare_tiles_each": [self.bare_a, self.bare_b],
                "shown_tiles": self.shown, "changed_tiles": self.changed, "small": self.small}


@dataclass
class _Features:
    points: np.ndarray  # (n, 2) float32 key point positions
    descriptors: np.ndarray | None  # (n, 128) float32 SIFT descriptors
    grey: np.ndarray  # the grey image the points are on (side pixels on its long side at most)

    @cached_property
    def box(self) -> tuple[int, int, int, int]:
        """x0, y0, x1, y1: the grey image without a uniform border (:func:`content_box`), measured once, when a
        look first asks for it (only with the preset's ``content_boxes``)."""
        return content_box(self.grey)

    @property
    def bordered(self) -> bool:
        return self.box != (0, 0, self.grey.shape[1], self.grey.shape[0])


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
        self._cache: OrderedDict[tuple, object] = OrderedDict()  # per image: features, the dense look's grey
        self._size = cache
        self._looks: dict[tuple[Hashable, Hashable], Look | None] = {}
        self._pages: dict[tuple[Hashable, Hashable], PageLook | None] = {}
        self._paper: dict[Hashable, bool] = {}
        self._dense: dict[tuple[Hashable, Hashable], tuple | None] = {}  # (correlation, placement)
        self._detail: dict[tuple[Hashable, Hashable], float | None] = {}
        self._aligned_detail: dict[tuple[Hashable, Hashable], float | None] = {}
        self.looked = 0  # pairs looked at (not counting remembered verdicts)
        self.unreadable = 0
        self.errors: dict[str, str] = {}  # path -> why it could not be read
        cv2 = _cv2()
        self._sift = cv2.SIFT_create(nfeatures=int(config.features))
        self._page_sift = None  # made on first use (more key points, larger images)
        self._matcher = cv2.BFMatcher(cv2.NORM_L2)

    # -- features ---------------------------------------------------------------------------------------

    def _grey(self, key: Hashable, side: int | None = None) -> np.ndarray | None:
        cv2 = _cv2()
        side = int(side or self.config.side)
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

    def _kept(self, slot: tuple, compute: Callable[[], object]):
        """What ``compute()`` gives for one image's ``slot``, kept for the last ``cache`` slots used."""
        if slot in self._cache:
            self._cache.move_to_end(slot)
            return self._cache[slot]
        value = compute()
        self._cache[slot] = value
        while len(self._cache) > self._size:
            self._cache.popitem(last=False)
        return value

    def features(self, key: Hashable, mirrored: bool = False, page: bool = False) -> _Features | None:
        """Key points of an image (``page``: at the page look's larger size, with more key points)."""
        return self._kept((key, mirrored, page), lambda: self._features(key, mirrored, page))

    def _features(self, key: Hashable, mirrored: bool, page: bool) -> _Features | None:
        cv2 = _cv2()
        if mirrored:
            plain = self.features(key, page=page)
            grey = None if plain is None else cv2.flip(plain.grey, 1)
        else:
            grey = self._grey(key, self.config.page_side if page else None)
        feats = None
        if grey is not None:
            sift = self._sift
            if page:
                if self._page_sift is None:
                    self._page_sift = cv2.SIFT_create(nfeatures=int(self.config.page_features))
                sift = self._page_sift
            points, descriptors = sift.detectAndCompute(grey, None)
            feats = _Features(np.array([p.pt for p in points], np.float32).reshape(-1, 2), descriptors, grey)
        return feats

    # -- one pair -----------------------------------------------------------------------------------------

    def _look(self, fa: _Features, fb: _Features, mirrored: bool) -> Look:
        cv2 = _cv2()
        points = min(len(fa.points), len(fb.points)) if fa.descriptors is not None and fb.descriptors is not None else 0
        matched = self._matches(fa, fb, min_points=3, min_matches=4)
        if matched is None:
            return Look(mirrored=mirrored, points=points)
        pa, pb = matched
        cv2.setRNGSeed(0)  # RANSAC draws the same samples every time: the same pair, the same look
        transform, inliers = cv2.estimateAffinePartial2D(pa, pb, method=cv2.RANSAC,
                                                         ransacReprojThreshold=0.02 * max(fb.grey.shape))
        if transform is None:
            return Look(mirrored=mirrored, points=points)
        inl = inliers.ravel().astype(bool)
        h, w = fa.grey.shape
        p = pa[inl]
        inlier_cells = _grid_cells(p, fa.grey.shape)
        cells = len(np.unique(inlier_cells))
        # the second image sampled at the transform of each pixel of the first: the two aligned
        warped, inside = _warp_onto(fb.grey, transform, fa.grey.shape)
        overlap = inside > 0
        ga = cv2.GaussianBlur(fa.grey, (0, 0), 1.5)
        gb = cv2.GaussianBlur(warped, (0, 0), 1.5)
        ncc = content = _ncc(ga, gb, overlap)
        shown = self._both_show(fa, fb, transform, overlap)  # ... without either image's uniform border
        if shown is not overlap:
            content = _ncc(ga, gb, shown)
        if cells >= HULL_MIN_CELLS:  # ... and within the inliers' convex hull, when they spread wide
            hull = np.zeros((h, w), np.uint8)
            cv2.fillConvexPoly(hull, cv2.convexHull(p.astype(np.float32)).astype(np.int32), 1)
            shared = (hull > 0) & shown
            if shared.mean() >= HULL_MIN_AREA:
                content = _ncc(ga, gb, shared)
        return Look(int(inl.sum()), cells, ncc, mirrored, content, points, _stray(fa, fb, transform, inlier_cells),
                    transform)

    def _both_show(self, fa: _Features, fb: _Features, transform: np.ndarray, overlap: np.ndarray) -> np.ndarray:
        """What both images show, on the first image: the ``overlap`` (bool) of the second sampled at ``transform``
        without either image's uniform border (:meth:`_boxes_meet`), when that leaves less than the overlap and at
        least :data:`HULL_MIN_AREA` of the first image; else ``overlap`` itself."""
        boxes = self._boxes_meet(fa, fb, transform, affine=True)
        if boxes is None:
            return overlap
        both = overlap & boxes
        return both if both.sum() < overlap.sum() and both.mean() >= HULL_MIN_AREA else overlap

    def _boxes_meet(self, fa: _Features, fb: _Features, transform: np.ndarray, affine: bool) -> np.ndarray | None:
        """Where the two images' content boxes (:func:`content_box`) meet, on the first image (bool), the second's
        mapped by ``transform``: the look's affine map from the first image to the second (``affine``) or the page
        look's homography from the second to the first; ``None`` (no border to leave out) without the preset's
        ``content_boxes`` or when neither image has a uniform border."""
        if not (self.config.content_boxes and (fa.bordered or fb.bordered)):
            return None
        cv2 = _cv2()
        h, w = fa.grey.shape
        box_b = _box_mask(fb.grey.shape, fb.box)
        if affine:
            inside_b = cv2.warpAffine(box_b, transform, (w, h), flags=cv2.WARP_INVERSE_MAP | cv2.INTER_NEAREST)
        else:
            inside_b = cv2.warpPerspective(box_b, transform, (w, h), flags=cv2.INTER_NEAREST)
        return (_box_mask(fa.grey.shape, fa.box) > 0) & (inside_b > 0)

    def look(self, a: Hashable, b: Hashable) -> Look | None:
        """What the second look finds for the pair (``None``: a file could not be read); remembered."""
        return self._remembered(self._looks, a, b, False, self._plain_or_mirrored)

    def _plain_or_mirrored(self, b: Hashable, fa: _Features, fb: _Features) -> Look:
        result = self._look(fa, fb, False)
        if not self.confirms(result):
            fm = self.features(b, mirrored=True)
            if fm is not None:
                other = self._look(fa, fm, True)
                if self._rank(other) > self._rank(result):
                    result = other
        return result

    def _remembered(self, table: dict, a: Hashable, b: Hashable, page: bool, compute):
        """A pair's verdict from ``table``, else ``compute(b, features of a, features of b)`` (``page``: at the
        page look's size), remembered; ``None`` when a file cannot be read. Each pair is kept once, in key
        order (:func:`_per_pair`)."""
        def first_time(a: Hashable, b: Hashable):
            fa, fb = self.features(a, page=page), self.features(b, page=page)
            if fa is None or fb is None:
                self.unreadable += 1
                return None
            self.looked += 1
            return compute(b, fa, fb)

        return _per_pair(table, a, b, first_time)

    def page_look(self, a: Hashable, b: Hashable) -> PageLook | None:
        """Whether two pages hold the same content, tile by tile (see the module's docstring); ``None``: a file
        could not be read. Remembered per pair."""
        return self._remembered(self._pages, a, b, True, lambda b_, fa, fb: self._page_look(
            fa, fb, lambda: self.features(b_, mirrored=True, page=True)))

    def _page_look(self, fa: _Features, fb: _Features, mirrored_b: Callable[[], _Features | None]) -> PageLook:
        c = self.config
        points = min(len(fa.points), len(fb.points))
        side = min(max(fa.grey.shape), max(fb.grey.shape))
        if side < c.page_min_side:
            return PageLook(small=True, points=points)
        best = self._homography(fa, fb)
        if best is None or best[0] < 4 * c.page_min_inliers:  # a mirrored copy of the page?
            fm = mirrored_b()
            other = None if fm is None else self._homography(fa, fm)
            if other is not None and (best is None or other[0] > best[0]):
                best, fb = other, fm
        if best is None:
            return PageLook(points=points)
        inliers, transform = best
        look = _tile_match(fa.grey, fb.grey, transform, int(c.page_tiles), int(c.page_shift), float(c.page_min_tile),
                           shown=self._boxes_meet(fa, fb, transform, affine=False))
        return replace(look, inliers=inliers, points=points)

    def _matches(self, fa: _Features, fb: _Features, min_points: int, min_matches: int):
        """``(points in a, points in b)`` of the key point matches that pass Lowe's ratio test, or None when
        either image has fewer than ``min_points`` key points or fewer than ``min_matches`` pass."""
        if fa.descriptors is None or fb.descriptors is None or min(len(fa.points), len(fb.points)) < min_points:
            return None
        knn = self._matcher.knnMatch(fa.descriptors, fb.descriptors, k=2)
        good = [m[0] for m in knn if len(m) == 2 and m[0].distance < self.config.ratio * m[1].distance]
        if len(good) < min_matches:
            return None
        return fa.points[[m.queryIdx for m in good]], fb.points[[m.trainIdx for m in good]]

    def _homography(self, fa: _Features, fb: _Features):
        cv2 = _cv2()
        matched = self._matches(fa, fb, min_points=8, min_matches=8)
        if matched is None:
            return None
        pa, pb = matched
        cv2.setRNGSeed(0)
        transform, inliers = cv2.findHomography(pb, pa, cv2.RANSAC, 3.0)  # maps the second page onto the first
        if transform is None:
            return None
        return int(inliers.sum()), transform

    def is_page(self, key: Hashable) -> bool:
        """Whether an image is mostly blank paper, as pages, slides and diagrams are (and most photos are not):
        at least ``page_paper`` of its 16 px tiles at 256 px are light (mean >= 200) and flat (spread < 4).
        Unreadable: False. Remembered per image."""
        if key in self._paper:
            return self._paper[key]
        grey = self._grey(key, 256)
        share = 0.0
        if grey is not None:
            h, w = (grey.shape[0] // 16) * 16, (grey.shape[1] // 16) * 16
            if h and w:
                t = grey[:h, :w].astype(np.float32).reshape(h // 16, 16, w // 16, 16).transpose(0, 2, 1, 3)
                t = t.reshape(-1, 256)
                share = float(((t.std(1) < 4.0) & (t.mean(1) >= 200.0)).mean())
        if len(self._paper) >= PAIR_MEMO:
            self._paper.clear()
        self._paper[key] = share >= self.config.page_paper
        return self._paper[key]

    def page_confirms(self, look: PageLook | None) -> bool:
        """The same page: large enough to read, and not refuted."""
        return look is not None and not look.small and not self.page_refutes(look)

    def page_refutes(self, look: PageLook | None) -> bool:
        """Not the same page: too few matching key points, or a tile with other (or added, or removed) ink."""
        return self._unaligned(look) or (self._readable(look) and look.worst < self.config.page_min_tile)

    def paper_refutes(self, look: PageLook | None) -> bool:
        """Not the same drawing on paper (two images only somewhat like pages): too few matching key points, or
        at least ``page_paper_fail`` of the inked tiles hold other ink. A caption, a logo or a recolouring of
        clip-art on white changes a few tiles; another diagram or slide of one template changes most."""
        return self._unaligned(look) or (
            self._readable(look) and look.failed >= self.config.page_paper_fail * look.tiles)

    @staticmethod
    def _readable(look: PageLook | None) -> bool:
        return look is not None and not look.small

    def _aligned(self, look: PageLook | None) -> bool:
        """A readable page look that found an alignment and ink to compare."""
        return self._readable(look) and not self._unaligned(look)

    def _unaligned(self, look: PageLook | None) -> bool:
        """A page look that found no alignment (too few key points agree) or no ink to compare."""
        return self._readable(look) and (look.inliers < self.config.page_min_inliers or look.tiles == 0)

    def page_verdict(self, a: Hashable, b: Hashable, kind: int, above: bool, in_band: bool) -> int | None:
        """What the page look makes of a pair of :func:`page_kinds` ``kind`` scored at or above the threshold
        (``above``) or below it, in the verification band or not (``in_band``): :data:`REFUTED`,
        :data:`UPHELD`, :data:`CONFIRMED` or :data:`UNREADABLE`; ``None`` when the picture rules decide instead.

        * two images at least somewhat like the reference set (:data:`PAGE_FAINT`, :data:`PAGE_MAYBE`), at or above
          the threshold or in the band: refuted when the slide check (:meth:`slide_refutes`) or the changed-ink
          check (:meth:`ink_changed`) finds other slides or other pages of one template;
        * two pages (:data:`PAGE_YES`), at or above the threshold or in the band: the page look alone decides
          (refuted above unless every inked tile matches; confirmed below only when it is the same page), unless
          either image is too plain for it (:meth:`_too_plain_for_pages`: flat vector art), when the picture
          rules decide;
        * two images somewhat like pages and both mostly blank paper (:data:`PAGE_MAYBE`, :meth:`is_page`:
          slides, diagrams, and clip-art or products on white), at or above the threshold: refuted when most
          inked tiles differ (:meth:`paper_refutes`); below the threshold in the band (``page_paper_band``) the
          same when the page look aligns them (a pair it cannot align, a photo on white with few key points,
          is the picture rules' to keep); otherwise the picture rules.
          Two such images that are not both blank paper (a dense diagram page, code boxes) are refuted when
          the key point look aligns them only weakly (:meth:`_weakly_aligned`: what a page's layout and
          repeated glyphs give two different pages) and the paper check refutes them."""
        if not self.config.pages:
            return None
        if kind in (PAGE_FAINT, PAGE_MAYBE) and (above or in_band) and (self.slide_refutes(a, b)
                                                                       or self.ink_changed(a, b)):
            return REFUTED
        if kind == PAGE_YES and (above or in_band):
            page = self.page_look(a, b)
            if page is None:
                return UNREADABLE
            if self._too_plain_for_pages(page):
                return None
            if above:
                return REFUTED if self.page_refutes(page) else UPHELD
            return CONFIRMED if self.page_confirms(page) else UPHELD
        if kind == PAGE_MAYBE and (above or in_band and self.config.page_paper_band) and (
                self.is_page(a) and self.is_page(b) or self._weakly_aligned(a, b)):
            look = self.page_look(a, b)
            if (above or self._aligned(look)) and self.paper_refutes(look):
                return REFUTED
        return None

    def slide_refutes(self, a: Hashable, b: Hashable, inside: bool = False) -> bool:
        """Two slides (or pages) of one template, not one slide twice: the page look aligns them, both hold the
        key points of text or line art (>= ``slide_min_points`` at ``page_side``), and at least
        ``slide_bare_tiles`` tiles hold ink in one and a blank background in the other: a bullet or a move a
        build step adds where the template is empty. A copy's crop, recolour or re-encode leaves every such tile
        inked. Two images both on white paper (:meth:`is_page`) need ``slide_bare_tiles`` such tiles *each way*
        (``slide_two_way``; without it they are left to the paper check): on white, a caption or logo put on
        clip-art or a product shot is the same operation as a build step and leaves ink on one side only, while
        another diagram, another page or a move on a board (a piece leaves one square for another) leaves ink
        on both. Slides of coloured, dark or textured themes need the tiles either way. With ``inside``, only the
        bare tiles inside what both images show count (:attr:`PageLook.inner_bare_a`): the far look's guard for
        two pictures, where a letterbox's bars against white margins leave bare tiles along the picture's edge.
        Off when ``slide_bare_tiles`` is 0."""
        c = self.config
        if c.slide_bare_tiles <= 0:
            return False
        on_paper = self.is_page(a) and self.is_page(b)
        if on_paper and not c.slide_two_way:
            return False  # drawings on white paper: the paper check's looser verdict (a caption on clip-art)
        page = self.page_look(a, b)
        if not (self._aligned(page) and page.points >= c.slide_min_points):
            return False
        bare_a, bare_b = (page.inner_bare_a, page.inner_bare_b) if inside else (page.bare_a, page.bare_b)
        return (min(bare_a, bare_b) if on_paper else bare_a + bare_b) >= c.slide_bare_tiles

    def ink_changed(self, a: Hashable, b: Hashable) -> bool:
        """Two pages, slides or diagrams with other content, not one with ink put on it: the page look aligns them,
        both hold the key points of text or line art (>= ``changed_points`` at ``page_side``), and at least
        ``changed_tiles`` tiles, and ``changed_share`` of the inked tiles both show, hold ink in *both* images that does not
        match (:attr:`PageLook.changed`: failed tiles that are not bare, inside what both images show). A caption,
        a logo or a watermark put on a page mostly adds ink where the page was blank (bare tiles) and changes the
        ink of a few tiles it crosses; a frame line put around a picture changes the ink of the tiles along the
        picture's edge (outside what both show); another page of one template changes the ink of many. Off when
        ``changed_share`` is 0."""
        c = self.config
        if c.changed_share <= 0:
            return False
        page = self.page_look(a, b)
        if not (self._aligned(page) and page.points >= c.changed_points):
            return False
        return page.changed >= c.changed_tiles and page.changed >= c.changed_share * page.shown

    def plain_pages(self, a: Hashable, b: Hashable, kind: int) -> bool:
        """A pair of two images like the reference set (:data:`PAGE_YES`) that is no pair of pages: an image too
        plain for the page look (:meth:`_too_plain_for_pages`: flat vector art with a few key points, which no
        calibration page but blank ones had). The picture rules decide for it as for any other picture, a rescue
        below the threshold included (the rescue limit ``rescue_max_reference`` keeps apart pages set from one
        template, which such an image is not). Read from the remembered page look."""
        if kind != PAGE_YES or not self.config.pages or self.config.page_min_points <= 0:
            return False
        page = self.page_look(a, b)
        return page is not None and self._too_plain_for_pages(page)

    def far_looks(self, a: Hashable, b: Hashable, kind: int = PAGE_NO) -> bool:
        """Whether the far look (:meth:`far_confirms`) looks at a pair listed below the band for its raw cosine:
        not slides with text (:meth:`text_pages`), and not two slides, diagrams or pages on white paper (both
        somewhat like the reference set, ``kind`` >= :data:`PAGE_MAYBE`, and both :meth:`is_page`): far below the
        band, the dense look slides one white slide onto another (their paper is most of each) and the detail
        agrees on the blank paper, so it kept slides of other decks as copies; in the band and above the threshold
        the paper check and the page look read such pairs. Photos and clip-art on white (not like the reference
        set) keep the far look."""
        if kind >= PAGE_MAYBE and self.is_page(a) and self.is_page(b):
            return False
        return not self.text_pages(a, b, kind)

    def text_pages(self, a: Hashable, b: Hashable, kind: int) -> bool:
        """A pair of :func:`page_kinds` ``kind`` at least :data:`PAGE_MAYBE` (both images somewhat like the
        reference set: slides, diagrams, pages) whose images both have the key points of text or line art at
        ``page_side`` (>= ``rescue_page_points``; 0: off), and that is two pages (:data:`PAGE_YES`) or not two
        images on white paper (:meth:`is_page`): slides of a coloured or dark theme. The looks made for plain
        pictures cannot read text: at 128 px the dense look slides one slide of a theme onto another (its frame,
        its colours) and the detail agrees on the template, so they confirm other slides and other pages of one
        template as copies. For such a pair only the key point look (:meth:`confirms`) and the page look keep
        it below the threshold (:meth:`rescues` with ``plain`` off), the far look does not look at it, and the
        dense, detail and far looks do not overrule a look that refutes it above the threshold (:meth:`refutes`'
        ``rescuable``). Two images on white paper keep the picture rules: clip-art or a product shot with a
        caption put on it is, tile by tile, a build step (as the slide check leaves them to the paper check).
        Reads each image's page key points (remembered per image)."""
        c = self.config
        if kind < PAGE_MAYBE or not c.pages or c.rescue_page_points <= 0:
            return False
        if kind != PAGE_YES and self.is_page(a) and self.is_page(b):
            return False
        fa = self.features(a, page=True)
        if fa is None or len(fa.points) < c.rescue_page_points:
            return False
        fb = self.features(b, page=True)
        return fb is not None and len(fb.points) >= c.rescue_page_points

    def _too_plain_for_pages(self, page: PageLook) -> bool:
        """The page look's pair has an image with fewer than ``page_min_points`` key points (0: off): a plain
        picture (flat vector art, a smooth wallpaper) that only looks like the reference set. The page look needs
        ``page_min_inliers`` of them to agree, so it would refute every such pair, copies included; the picture
        rules decide instead. Read from the remembered page look, so grouping's repeated verdicts cost nothing."""
        return page.points < self.config.page_min_points

    def _weakly_aligned(self, a: Hashable, b: Hashable) -> bool:
        """The key point look aligns the pair (>= ``veto_inliers`` inliers) between images with the key points of
        text or line art (>= ``page_weak_points``), but its pixels correlate less than ``page_weak_ncc`` (0: off).
        A plain image (a motion-blurred clock, a striped wallpaper: 3-23 key points, on which the page look's
        homography slips along the stripes) is never weakly aligned."""
        c = self.config
        if c.page_weak_ncc <= 0:
            return False
        look = self.look(a, b)
        return (look is not None and look.points >= max(c.page_weak_points, 1) and look.inliers >= c.veto_inliers
                and max(look.ncc, look.content_ncc) < c.page_weak_ncc)

    def _rank(self, look: Look) -> tuple:
        """The better of two looks (plain, mirrored): confirmed first, then not refuted, then by inliers."""
        return self.confirms(look), not self.refutes(look), look.inliers

    def confirms(self, look: Look | None) -> bool:
        """Strong evidence of the same picture: enough agreeing, spread key points and aligned pixels (over the
        whole overlap, or over what both images show)."""
        c = self.config
        if look is None:
            return False
        corr = max(look.ncc, look.content_ncc)
        return (look.inliers >= c.min_inliers and look.cells >= c.min_cells and corr >= c.min_ncc) or (
            0 < c.few_inliers <= look.inliers and look.cells >= c.few_cells and corr >= c.few_ncc)

    def refutes(self, look: Look | None, a: Hashable = None, b: Hashable = None, rescuable: bool = True,
                kind: int = PAGE_NO) -> bool:
        """Strong evidence of different pictures: both images have key points enough to be matched
        (``veto_min_points``), and no transform maps one onto the other (< ``veto_inliers`` inliers) or the
        part they share does not correlate once aligned (``content_ncc`` < ``veto_ncc``). A border, margins or
        a caption outside that part do not count; an image too plain for key points is never refuted, nor is one
        with few (< ``veto_few_points``) when most of them (``veto_few_share``) agree with the transform. With
        ``far_upholds`` and the pair's keys ``a``, ``b`` (``rescuable``: neither is like the reference set), a
        pair the far look or the detail look confirms (:meth:`far_confirms`, :meth:`detail_confirms`) is not
        refuted either: key points that do not match on a smooth picture are no evidence against pixels and
        detail that do. Nor is a pair the dense look alone confirms (:meth:`dense_confirms`, as it would keep the
        pair below the threshold) when the look had fewer than ``dense_upholds_points`` key points on the plainer
        image: a decision must not be stricter above the threshold than below it on such thin evidence. None of
        those looks spares slides with text (:meth:`text_pages` of the pair's :func:`page_kinds` ``kind``)."""
        c = self.config
        if look is None or look.points < c.veto_min_points:
            return False
        if look.points < c.veto_few_points and look.inliers >= c.veto_few_share * look.points:
            return False  # a plain image (a smooth wallpaper) whose few key points mostly agree
        if not (look.inliers < c.veto_inliers or look.content_ncc < c.veto_ncc):
            return False
        if not (c.far_upholds and rescuable and a is not None and b is not None) or self.text_pages(a, b, kind):
            return True
        if look.points < c.dense_upholds_points and self.dense_confirms(a, b):
            return False  # a look this thin does not overrule the dense look, which alone keeps the pair below t
        return not (self.detail_confirms(a, b) or self.far_confirms(a, b))

    def rescues(self, a: Hashable, b: Hashable, kind: int = PAGE_NO) -> bool:
        """A pair below the threshold is the same picture: the look confirms it (:meth:`confirms`) or, for a
        picture too plain for key points, the dense look does (:meth:`dense_confirms`), or the dense look and the
        detail together do (:meth:`detail_confirms`); never when the look finds a scene whose parts moved
        (:meth:`scene_refutes`). Slides with text (:meth:`text_pages` of the pair's :func:`page_kinds` ``kind``):
        the key point look alone. The one rule ``dupes``' pairs, its grouping and ``check`` keep pairs by."""
        look = self.look(a, b)
        return look is not None and not self.scene_refutes(look) and (self.confirms(look) or (
            not self.text_pages(a, b, kind) and (self.dense_confirms(a, b) or self.detail_confirms(a, b))))

    def scene_refutes(self, look: Look | None) -> bool:
        """Two shots of one static scene, not copies (``scene_cells`` > 0): the look's transform leaves at least
        ``scene_cells`` textured cells of the overlap without an inlier, each way (:attr:`Look.stray`), and
        neither the whole overlap, aligned, correlates as much as ``scene_ncc`` (the moved part in both of its
        places) nor what both images show (:attr:`Look.content_ncc`) as much as ``scene_content_ncc``. A
        chessboard held in another pose in front of the same desk, a person who moved before a camera on a
        tripod: the background's key points agree, the moved part's do not. A copy's key points follow one
        transform wherever the picture has texture; a caption or a logo put on it fills a few cells; a
        thumbnail's or a strong crop's few matches leave textured cells empty but align the whole overlap; a
        combo's frame and recolouring lower the whole overlap's correlation, not that of what both show."""
        c = self.config
        return (c.scene_cells > 0 and look is not None and look.stray >= c.scene_cells and look.ncc < c.scene_ncc
                and look.content_ncc < c.scene_content_ncc)

    def dense(self, a: Hashable, b: Hashable) -> float | None:
        """The look without key points, for plain images: both images grey at ``dense_side`` pixels, one scaled
        to 35-100 % of the other's width (plain or mirrored, either way round) and slid over the other; the best
        normalised correlation. A crop, a border, a thumbnail or a re-encode of a smooth wallpaper lies inside its
        original whatever its key points. ``None``: a file could not be read. Remembered per pair (the small
        grey images per image, with the key points)."""
        found = _per_pair(self._dense, a, b, self._dense_place)
        return None if found is None else found[0]

    def _dense_place(self, a: Hashable, b: Hashable) -> tuple | None:
        """``(correlation, (way, x, y, w, h))``: the dense look's best placement of one image in the other
        (``way``: :func:`_ways`' index; ``x, y, w, h``: the placed image's box in the other, at ``dense_side``)."""
        cv2 = _cv2()
        side = self.config.dense_side
        ga, gb = (self._kept((key, "dense"), lambda key=key: self._grey(key, side)) for key in (a, b))
        if ga is None or gb is None:
            return None
        best, where = -1.0, None
        for way, (big, small) in enumerate(_ways(ga.astype(np.float32), gb.astype(np.float32))):
            for share in np.arange(0.35, 1.001, 0.05):
                k = share * big.shape[1] / small.shape[1]
                w, h = round(small.shape[1] * k), round(small.shape[0] * k)
                if min(w, h) < DENSE_MIN_SIDE or w > big.shape[1] or h > big.shape[0]:
                    continue
                t = cv2.resize(np.ascontiguousarray(small), (w, h), interpolation=cv2.INTER_AREA)
                if t.std() < 1.0:  # a flat template correlates with nothing
                    continue
                _, score, _, (x, y) = cv2.minMaxLoc(cv2.matchTemplate(big, t, cv2.TM_CCOEFF_NORMED))
                if score > best:
                    best, where = float(score), (way, x, y, w, h)
        return best, where

    def dense_confirms(self, a: Hashable, b: Hashable) -> bool:
        """The same picture by :meth:`dense` (``dense_ncc``; 0: never)."""
        if self.config.dense_ncc <= 0:
            return False
        score = self.dense(a, b)
        return score is not None and score >= self.config.dense_ncc

    def detail_confirms(self, a: Hashable, b: Hashable) -> bool:
        """The same picture by the dense look and the detail together (``detail_dense``, ``detail_ncc``; 0: never):
        a placement that correlates at least ``detail_dense`` (short of ``dense_ncc``: a rescan's tilt, a combo's
        recolour and caption) where the fine detail agrees at least ``detail_ncc``. Two look-alikes that slide onto
        each other that well (star fields, fruit clip-art) do not share their detail."""
        c = self.config
        if c.detail_dense <= 0 or c.dense_ncc <= 0:
            return False
        return bool(self._placed_with_detail(a, b, c.detail_dense, c.detail_ncc))

    def _placed_with_detail(self, a: Hashable, b: Hashable, min_dense: float, min_detail: float) -> bool | None:
        """:meth:`dense` reaches ``min_dense`` and :meth:`detail` ``min_detail`` (the detail is read only then);
        ``None``: a file could not be read."""
        score = self.dense(a, b)
        if score is None:
            return None
        if score < min_dense:
            return False
        fine = self.detail(a, b)
        return None if fine is None else fine >= min_detail

    def detail(self, a: Hashable, b: Hashable) -> float | None:
        """Whether the fine detail agrees where :meth:`dense` placed one image in the other: both images grey at
        ``far_side`` pixels, the placed one scaled to its box, each band-passed (a difference of Gaussians,
        sigma 1 and 4 pixels: edges, stars, texture, no shading) and correlated within a few pixels of the
        box. Two star fields or two gradients of one palette slide onto each other at 128 px with a correlation
        of up to 0.97 on their shading alone; their detail does not line up (at most 0.49 on the calibration
        split), a copy's does. ``None``: a file could not be read; 0: no placement or no detail to compare."""
        return _per_pair(self._detail, a, b, self._detail_score)

    def _detail_score(self, a: Hashable, b: Hashable) -> float | None:
        cv2 = _cv2()
        found = _per_pair(self._dense, a, b, self._dense_place)
        if found is None:
            return None
        if found[1] is None:
            return 0.0
        way, x, y, w, h = found[1]
        side = self.config.far_side
        ha, hb = (self._kept((key, "detail"), lambda key=key: self._grey(key, side)) for key in (a, b))
        small_a, small_b = (self._kept((key, "dense"), lambda key=key: self._grey(key, self.config.dense_side))
                            for key in (a, b))
        if ha is None or hb is None or small_a is None or small_b is None:
            return None
        big, small = _ways(ha, hb)[way]
        f = big.shape[1] / _ways(small_a, small_b)[way][0].shape[1]
        bw, bh = min(max(round(w * f), 8), big.shape[1]), min(max(round(h * f), 8), big.shape[0])
        t = _band_pass(cv2.resize(np.ascontiguousarray(small), (bw, bh), interpolation=cv2.INTER_AREA))
        m = DETAIL_SHIFT
        x0, y0 = max(0, round(x * f) - m), max(0, round(y * f) - m)
        x1, y1 = min(big.shape[1], round(x * f) + bw + m), min(big.shape[0], round(y * f) + bh + m)
        return _detail_correlation(_band_pass(big[y0:y1, x0:x1]), t)

    def aligned_detail(self, a: Hashable, b: Hashable) -> float | None:
        """:meth:`detail` where the key point look (not the dense look) placed the one image on the other: both
        band-passed at the look's size, the second sampled at the look's transform, correlated over their overlap
        (less a margin) within a few pixels of it. Two renditions that overlap without either holding the other
        (a wallpaper's portrait and landscape cuts of one artwork) have no dense placement, and their detail there
        is noise; where the key points align them, a copy's detail lines up and two star fields on one backdrop,
        aligned on the backdrop, do not. ``None``: a file could not be read; 0: no transform."""
        return _per_pair(self._aligned_detail, a, b, self._aligned_detail_score)

    def _aligned_detail_score(self, a: Hashable, b: Hashable) -> float | None:
        cv2 = _cv2()
        look = self.look(a, b)  # computed in this key order: a's features first
        if look is None:
            return None
        if look.transform is None:
            return 0.0
        fa, fb = self.features(a), self.features(b, mirrored=look.mirrored)
        if fa is None or fb is None:
            return None
        warped, inside = _warp_onto(fb.grey, look.transform, fa.grey.shape)
        m = DETAIL_SHIFT
        shown = self._both_show(fa, fb, look.transform, inside > 0).astype(np.uint8)  # what both show
        inside = cv2.erode(shown, np.ones((2 * m + 9, 2 * m + 9), np.uint8)) > 0  # no edge of the warp or a border
        ys, xs = np.nonzero(inside)
        if len(ys) < 400:
            return 0.0
        y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
        t = _band_pass(warped)[y0:y1, x0:x1]
        if min(t.shape) < 8:
            return 0.0
        return _detail_correlation(_band_pass(fa.grey)[max(0, y0 - m):y1 + m, max(0, x0 - m):x1 + m], t)

    def far_confirms(self, a: Hashable, b: Hashable, kind: int = 0, listed_far: bool = False) -> bool | None:
        """The far look, for a pair whose raw cosine reaches the threshold (or ``far_below`` under it: the band's
        lower edge) but whose score the background pushed below the band (``far``,
        :meth:`embeddr.presets.Verify.far_raw`; not every such pair, :meth:`far_looks`): the same picture when
        :meth:`dense` reaches ``dense_ncc`` and :meth:`detail` ``far_detail``, or (``far_look_ncc`` > 0) when the key point look
        confirms it as it would in the band, with an aligned correlation of at least ``far_look_ncc``: a crop, a
        rescan or a combo of a picture with texture enough for key points, whose fine detail the crop or the rescan
        changed, though not so much that it disagrees (:meth:`detail`, or with ``aligned_detail``
        :meth:`aligned_detail`, >= ``far_look_detail``: two star fields on one backdrop align on the backdrop's key
        points, their stars do not). That second way is for pictures only
        (``kind``, :func:`page_kinds`, :data:`PAGE_NO`), and not for two slides (:meth:`slide_refutes`: a dark
        theme's build steps are as unlike the reference set as photos): two pages, slides or diagrams of one
        template align as well as a copy does. With ``listed_far`` (a pair listed below the band for its raw
        cosine, as ``dupes`` and its grouping ask) and ``far_dense_ncc`` > 0, two pictures (``kind``
        :data:`PAGE_NO`) are also the same picture when :meth:`dense` alone reaches ``far_dense_ncc``: a smooth
        picture has too little fine detail for the detail to agree, and the dense look alone already keeps such a
        pair in the band at ``dense_ncc``; two star fields of one crowd slide onto each other at up to 0.97.
        ``None``: a file could not be read."""
        cfg = self.config
        if cfg.far_look_ncc > 0 and kind == PAGE_NO:
            look = self.look(a, b)
            if (look is not None and self.confirms(look) and max(look.ncc, look.content_ncc) >= cfg.far_look_ncc
                    and self._detail_agrees(a, b, cfg.far_look_detail)  # at far_side: before the page look
                    and not self.slide_refutes(a, b, inside=True)):
                return True
        if cfg.dense_ncc <= 0:
            return False
        if listed_far and cfg.far_dense_ncc > 0 and kind == PAGE_NO and (self.dense(a, b) or 0.0) >= cfg.far_dense_ncc:
            return True
        return self._placed_with_detail(a, b, cfg.dense_ncc, cfg.far_detail)  # (None: unreadable)

    def _detail_agrees(self, a: Hashable, b: Hashable, floor: float) -> bool:
        """The fine detail agrees at least ``floor`` where the dense look placed the one image in the other or,
        with ``aligned_detail``, where the key point look did."""
        if (self.detail(a, b) or 0.0) >= floor:
            return True
        return bool(self.config.aligned_detail) and (self.aligned_detail(a, b) or 0.0) >= floor

    def decide(self, a, b, above: np.ndarray, rescuable: np.ndarray | None = None,
               pages: np.ndarray | None = None, in_band: np.ndarray | None = None,
               far: np.ndarray | None = None) -> np.ndarray:
        """For pairs ``(a[i], b[i])`` scored at or above the threshold (``above[i]``) or below it: what the look
        does (:data:`CONFIRMED`, :data:`UPHELD`, :data:`REFUTED`, :data:`UNREADABLE`). A pair below the threshold
        that is not ``rescuable[i]`` is not looked at (:data:`NOT_LOOKED`). With ``pages`` (:func:`page_kinds` of
        each pair), pairs of pages get the page look first (:meth:`page_verdict`, at any score at or above the
        threshold, or in the band ``in_band[i]`` below it); a pair of pictures above the band gets the scene check
        alone (:meth:`scene_refutes`, with ``scene_cells``); any other pair outside the band is not looked at,
        but pairs ``far[i]`` below the band (listed for their raw cosine, :meth:`embeddr.normalize.Scorer.with_far`)
        get the far look (:meth:`far_confirms`) when rescuable. Pairs are taken grouped by their first member, so
        each image's features are computed once."""
        out = np.full(len(a), UNREADABLE, np.int8)
        for i in sorted(range(len(a)), key=lambda i: (str(a[i]), str(b[i]))):
            kind = PAGE_NO if pages is None else int(pages[i])
            if far is not None and far[i]:
                if (rescuable is not None and not rescuable[i]) or not self.far_looks(a[i], b[i], kind):
                    out[i] = NOT_LOOKED
                    continue
                same = self.far_confirms(a[i], b[i], kind, listed_far=True)
                out[i] = UNREADABLE if same is None else CONFIRMED if same else UPHELD
                continue
            may = rescuable is None or bool(rescuable[i])
            if pages is not None:
                looked = in_band is None or bool(in_band[i])
                verdict = self.page_verdict(a[i], b[i], kind, bool(above[i]), looked)
                if verdict is not None:
                    out[i] = verdict
                    continue
                may = may or ((above[i] or looked) and self.plain_pages(a[i], b[i], kind))
            if not above[i] and not may:
                out[i] = NOT_LOOKED
                continue
            if in_band is not None and not in_band[i]:
                if above[i] and self.config.scene_cells > 0 and kind == PAGE_NO:
                    look = self.look(a[i], b[i])  # above the band: the scene check alone
                    if look is not None:
                        out[i] = REFUTED if self.scene_refutes(look) else UPHELD
                    continue
                out[i] = NOT_LOOKED
                continue
            look = self.look(a[i], b[i])
            if look is None:
                continue
            if above[i]:
                out[i] = REFUTED if self.refutes(look, a[i], b[i], may, kind) or self.scene_refutes(look) else UPHELD
            else:
                out[i] = CONFIRMED if self.rescues(a[i], b[i], kind) else UPHELD
        return out

    def stats(self) -> dict:
        return {"pairs_looked_at": self.looked, "pairs_unreadable": self.unreadable}


BOX_INSET = 3  # pixels a content box keeps off a border it found (the look's blur carries the border's edge)


def content_box(grey: np.ndarray) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)``: a grey image without a uniform border (a frame, padding, a letterbox: the four
    corners' grey level, within :data:`embeddr.decode.BORDER_TOLERANCE`), inset by :data:`BOX_INSET` on each side
    where a border was found; the whole image when the corners disagree or the rest would be under
    :data:`HULL_MIN_AREA` of it. The look correlates two images over what both show (:attr:`Look.content_ncc`):
    a light and a dark border around the same smooth picture would otherwise decide the correlation, negatively."""
    from .decode import BORDER_TOLERANCE

    h, w = grey.shape[:2]
    whole = (0, 0, w, h)
    if h < 8 or w < 8:
        return whole
    corners = grey[[0, 0, h - 1, h - 1], [0, w - 1, 0, w - 1]].astype(np.int16)
    if int(corners.max()) - int(corners.min()) > BORDER_TOLERANCE:
        return whole
    differs = np.abs(grey.astype(np.int16) - int(corners[0])) > BORDER_TOLERANCE
    rows, cols = np.flatnonzero(differs.any(axis=1)), np.flatnonzero(differs.any(axis=0))
    if not len(rows):
        return whole
    x0, y0, x1, y1 = int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1
    x0, y0 = x0 + BOX_INSET if x0 > 0 else 0, y0 + BOX_INSET if y0 > 0 else 0
    x1, y1 = x1 - BOX_INSET if x1 < w else w, y1 - BOX_INSET if y1 < h else h
    if x1 <= x0 or y1 <= y0 or (x1 - x0) * (y1 - y0) < HULL_MIN_AREA * w * h:
        return whole
    return x0, y0, x1, y1


def _grid_cells(points: np.ndarray, shape: tuple) -> np.ndarray:
    """The cell (``x * GRID + y``) of an image's GRID x GRID grid that holds each of ``points`` (x, y)."""
    h, w = shape[:2]
    gx = np.clip((points[:, 0] / w * GRID).astype(int), 0, GRID - 1)
    gy = np.clip((points[:, 1] / h * GRID).astype(int), 0, GRID - 1)
    return gx * GRID + gy


def _stray(fa: _Features, fb: _Features, transform: np.ndarray, inlier_cells: np.ndarray) -> int:
    """:attr:`Look.stray`: cells of the first image's GRID x GRID grid, inside the overlap, with at least
    SCENE_POINTS key points and no inlier; counted with the first image's key points and with the second's mapped
    back onto the first, the fewer of the two."""
    cv2 = _cv2()
    h, w = fa.grey.shape
    hb, wb = fb.grey.shape
    held = np.zeros(GRID * GRID, bool)
    held[inlier_cells] = True

    def stray(in_a: np.ndarray, inside: np.ndarray) -> int:  # key points placed on the first image
        counts = np.bincount(_grid_cells(in_a[inside], fa.grey.shape), minlength=GRID * GRID)
        return int(((counts >= SCENE_POINTS) & ~held).sum())

    def within(p: np.ndarray, width: int, height: int) -> np.ndarray:
        return (p[:, 0] >= 0) & (p[:, 0] < width) & (p[:, 1] >= 0) & (p[:, 1] < height)

    pa, pb = fa.points.reshape(-1, 2), fb.points.reshape(-1, 2)
    a_on_b = pa @ transform[:, :2].T + transform[:, 2]  # the first image's key points where the second shows them
    back = cv2.invertAffineTransform(transform)
    b_on_a = pb @ back[:, :2].T + back[:, 2]  # the second image's, placed on the first
    return min(stray(pa, within(a_on_b, wb, hb)), stray(b_on_a, within(b_on_a, w, h)))


def _box_mask(shape: tuple, box: tuple[int, int, int, int]) -> np.ndarray:
    mask = np.zeros(shape[:2], np.uint8)
    mask[box[1]:box[3], box[0]:box[2]] = 255
    return mask


DENSE_MIN_SIDE = 24  # the smallest template :meth:`Verifier.dense` slides (pixels)
DETAIL_SHIFT = 6  # how far (pixels at far_side) :meth:`Verifier.detail` looks around the dense look's placement


def _ways(a: np.ndarray, b: np.ndarray) -> tuple:
    """``(big, small)`` ways :meth:`Verifier.dense` tries: b in a, a in b, mirrored b in a, a in mirrored b."""
    return ((a, b), (b, a), (a, b[:, ::-1]), (b[:, ::-1], a))


def _warp_onto(grey_b: np.ndarray, transform: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The second image sampled at ``transform`` (2 x 3) for each pixel of a first image of ``shape``: the two
    aligned; and where the second lands there (uint8, 255 inside)."""
    cv2 = _cv2()
    h, w = shape[:2]
    warped = cv2.warpAffine(grey_b, transform, (w, h), flags=cv2.WARP_INVERSE_MAP | cv2.INTER_LINEAR)
    inside = cv2.warpAffine(np.full(grey_b.shape, 255, np.uint8), transform, (w, h),
                            flags=cv2.WARP_INVERSE_MAP | cv2.INTER_NEAREST)
    return warped, inside


def _detail_correlation(region: np.ndarray, t: np.ndarray) -> float:
    """The best correlation of band-passed ``t`` slid within the band-passed ``region`` around where it was
    placed (:meth:`Verifier.detail`, :meth:`Verifier.aligned_detail`); 0 when ``t`` is flat or outgrows it."""
    cv2 = _cv2()
    if region.shape[0] < t.shape[0] or region.shape[1] < t.shape[1] or float(t.std()) < 1e-3:
        return 0.0
    return float(np.nan_to_num(cv2.matchTemplate(region, t, cv2.TM_CCOEFF_NORMED)).max())


def _band_pass(grey: np.ndarray) -> np.ndarray:
    """A difference of Gaussians (sigma 1 and 4 pixels): the detail of a grey image without its shading."""
    cv2 = _cv2()
    g = np.ascontiguousarray(grey, np.float32)
    return cv2.GaussianBlur(g, (0, 0), 1.0) - cv2.GaussianBlur(g, (0, 0), 4.0)


PAIR_MEMO = 500_000  # verdicts a verifier remembers before it starts again (a long-running service: bounded memory)


def _per_pair(table: dict, a: Hashable, b: Hashable, compute: Callable[[Hashable, Hashable], object]):
    """``compute(a, b)`` remembered in ``table`` once per pair, in key order (so either order gives the same
    answer); the table is emptied when it holds :data:`PAIR_MEMO`."""
    slot = (a, b) if str(a) <= str(b) else (b, a)
    if slot in table:
        return table[slot]
    result = compute(*slot)
    if len(table) >= PAIR_MEMO:
        table.clear()
    table[slot] = result
    return result


def _ncc(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    x = a[mask].astype(np.float32)
    y = b[mask].astype(np.float32)
    if x.size < 100:
        return 0.0
    x -= x.mean()
    y -= y.mean()
    d = float(np.sqrt((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / d) if d > 0 else 0.0


def _tile_match(grey_a: np.ndarray, grey_b: np.ndarray, transform: np.ndarray, tiles: int, shift: int,
                min_tile: float, lo: float = 5.0, hi: float = 12.0,
                shown: np.ndarray | None = None) -> PageLook:
    """The tiles of a :class:`PageLook` (compared, worst correlation, failed, bare each way, both show, changed,
    bare each way inside what both show) of page B warped onto page A by
    ``transform`` (a homography): grey levels of B fitted to A's over the overlap; each tile of A inside the
    overlap with ink in either page (grey-level spread >= ``hi``) is matched both ways within ``shift`` pixels;
    a tile with ink on one page and none on the other (spread < ``lo``: a *bare* tile) scores 0. Tiles *both
    show* lie wholly inside ``shown`` (a bool mask on A: what both images show; ``None``: all of the overlap);
    *changed* tiles are those of them below min_tile with ink in both: a frame line put around a picture changes
    the ink of the tiles along its edge, not what the picture shows; a letterbox's bars against white margins
    leave bare tiles along the picture's edge, none inside what both show."""
    cv2 = _cv2()
    h, w = grey_a.shape
    warped = cv2.warpPerspective(grey_b, transform, (w, h), flags=cv2.INTER_LINEAR)
    inside = cv2.warpPerspective(np.full(grey_b.shape, 255, np.uint8), transform, (w, h), flags=cv2.INTER_NEAREST)
    inside = cv2.erode(inside, np.ones((2 * shift + 3, 2 * shift + 3), np.uint8)) > 0
    fa = cv2.GaussianBlur(grey_a.astype(np.float32), (0, 0), 1.0)
    fb = cv2.GaussianBlur(warped.astype(np.float32), (0, 0), 1.0)
    x, y = fa[inside], fb[inside]
    if x.size < 1000:
        return PageLook()
    xm, ym = float(x.mean()), float(y.mean())
    alpha = float(((x - xm) * (y - ym)).mean() / max(float(((x - xm) ** 2).mean()), 1e-6))
    if alpha < 0.2:  # no grey-level relation between the two: not the same page
        return PageLook()
    fb = (fb - (ym - alpha * xm)) / alpha
    t = max(16, max(h, w) // tiles)
    worst, compared, failed, bare_a, bare_b, both, changed, inner_a, inner_b = 1.0, 0, 0, 0, 0, 0, 0, 0, 0
    for y0 in range(0, h - t + 1, t):
        for x0 in range(0, w - t + 1, t):
            if not inside[y0:y0 + t, x0:x0 + t].all():
                continue
            ta, tb = fa[y0:y0 + t, x0:x0 + t], fb[y0:y0 + t, x0:x0 + t]
            sa, sb = float(ta.std()), float(tb.std())
            if max(sa, sb) < hi:
                continue
            compared += 1
            in_both = shown is None or bool(shown[y0:y0 + t, x0:x0 + t].all())
            both += in_both
            if min(sa, sb) < lo:
                worst, failed = 0.0, failed + 1
                if sa < lo:
                    bare_b, inner_b = bare_b + 1, inner_b + in_both
                else:
                    bare_a, inner_a = bare_a + 1, inner_a + in_both
                continue
            ys, xs = max(0, y0 - shift), max(0, x0 - shift)
            ye, xe = min(h, y0 + t + shift), min(w, x0 + t + shift)
            score = min(float(cv2.matchTemplate(fb[ys:ye, xs:xe], ta, cv2.TM_CCOEFF_NORMED).max()),
                        float(cv2.matchTemplate(fa[ys:ye, xs:xe], tb, cv2.TM_CCOEFF_NORMED).max()))
            worst = min(worst, score)
            failed += score < min_tile
            changed += in_both and score < min_tile
    return PageLook(tiles=compared, worst=worst, failed=failed, bare_a=bare_a, bare_b=bare_b, shown=both,
                    changed=changed, inner_bare_a=inner_a, inner_bare_b=inner_b)


def page_kinds(config, scorer, ref_a: np.ndarray, ref_b) -> np.ndarray | None:
    """Which pairs are pairs of pages for the page look, from the two images' reference backgrounds ``ref_a``,
    ``ref_b`` (:meth:`embeddr.normalize.Scorer.reference_background`): :data:`PAGE_YES` when both look like the
    preset's reference set (>= ``page_reference``); :data:`PAGE_MAYBE` when both are at least
    ``page_maybe`` (slides and diagrams: the paper check :meth:`Verifier.is_page` decides, so only those images
    are ever read for it); :data:`PAGE_FAINT` when both are at least ``slide_reference`` (with the slide check
    on: slides of themes unlike the reference set); :data:`PAGE_NO` otherwise. None: no page look
    (``pages = false``, or no reference set)."""
    if not config.pages or not scorer.has_reference or config.page_reference >= 1.0:
        return None
    lo = np.minimum(np.asarray(ref_a, np.float32), np.asarray(ref_b, np.float32))
    out = np.full(len(lo), PAGE_NO, np.int8)
    if config.slide_bare_tiles > 0:
        out[lo >= config.slide_reference] = PAGE_FAINT
    out[lo >= config.page_maybe] = PAGE_MAYBE
    out[lo >= config.page_reference] = PAGE_YES
    return out


def may_rescue(config, scorer, ref_a: np.ndarray, ref_b) -> np.ndarray | None:
    """Which pairs the look may keep below the threshold: neither image looks like the preset's reference set
    (``ref_a``, ``ref_b``: their reference backgrounds, :meth:`embeddr.normalize.Scorer.reference_background`).
    None: no limit (no reference set, or ``rescue_max_reference >= 1``). ``dupes`` and ``check`` both ask here."""
    limit = config.rescue_max_reference
    if limit >= 1.0 or not scorer.has_reference:
        return None
    return (np.asarray(ref_a) < limit) & (np.asarray(ref_b) < limit)


def decide_band(scores: np.ndarray, threshold: float, band: tuple[float, float],
                effect_of: Callable[[np.ndarray, np.ndarray], np.ndarray], eps: float = 1e-6,
                also: np.ndarray | None = None, far: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The decision with verification, for pairs already scored at or above ``low`` (``band = (low, high)``):
    ``(keep, effect)``. Outside the band: ``score >= threshold`` (effect :data:`NOT_LOOKED`). In the band,
    ``effect_of(indices, above_threshold)`` (:meth:`Verifier.decide`) says what the look does: a pair below the
    threshold is kept when :data:`CONFIRMED`, one above it dropped when :data:`REFUTED`; an unreadable or
    upheld pair keeps ``score >= threshold``. ``also``: pairs looked at above the band too when they are at or
    above the threshold (pairs of pages, :func:`page_kinds`; pairs of pictures for the scene check); ``far``: pairs
    below the band looked at too (the far look: kept only when :data:`CONFIRMED`)."""
    scores = np.asarray(scores, np.float32)
    keep = scores >= threshold - eps
    effect = np.full(len(scores), NOT_LOOKED, np.int8)
    low, high = band
    looked = (scores >= low - eps) & (scores < high - eps)
    if also is not None:
        looked |= np.asarray(also, bool) & keep
    if far is not None:
        looked |= np.asarray(far, bool) & (scores < low - eps)
    inside = np.flatnonzero(looked)
    if len(inside):
        e = np.asarray(effect_of(inside, keep[inside]), np.int8)
        effect[inside] = e
        keep[inside[e == CONFIRMED]] = True
        keep[inside[e == REFUTED]] = False
    return keep, effect
