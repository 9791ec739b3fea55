"""The second look at borderline pairs (embeddr/verify.py) on real photos: copies that an embedding scores
low (strong crops, mirrors, recolours) are confirmed, different pictures are refuted, an unreadable file
keeps the plain decision, and `dupes` / `check` use it the same way."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from conftest import save_photo
from embeddr.catalog import Catalog
from embeddr.dupes import find_duplicates
from embeddr.encoders import resolve_preset
from embeddr.jobs import scan
from embeddr.verify import CONFIRMED, NOT_LOOKED, REFUTED, UNREADABLE, UPHELD, Verifier, decide_band

pytest.importorskip("cv2")


def _preset(below: float = 0.12, above: float = 0.13, threshold: float | None = None):
    p = resolve_preset("sscd-distilled")
    p = dataclasses.replace(p, verify=dataclasses.replace(p.verify, enabled=True, below=below, above=above))
    if threshold is not None:  # as if calibrated there: the band reaches below it
        p = dataclasses.replace(p, threshold=dataclasses.replace(p.threshold, value=threshold))
    return p


@pytest.fixture(scope="module")
def renditions(photo_arrays, tmp_path_factory) -> dict[str, Path]:
    """Real photos (scikit-image) and hard renditions of two of them, as files."""
    folder = tmp_path_factory.mktemp("verify")
    out = {name: save_photo(arr, folder / f"{name}.jpg", long_side=512) for name, arr in photo_arrays.items()}
    astronaut = Image.open(out["astronaut"]).convert("RGB")
    w, h = astronaut.size
    out["astronaut_crop"] = folder / "astronaut_crop.jpg"  # 45 % of the picture, enlarged again
    astronaut.crop((w // 5, h // 6, w // 5 + int(w * 0.65), h // 6 + int(h * 0.7))).resize((400, 430)).save(
        out["astronaut_crop"], quality=85)
    out["astronaut_mirror"] = folder / "astronaut_mirror.png"
    ImageOps.mirror(astronaut).save(out["astronaut_mirror"])
    chelsea = Image.open(out["chelsea"]).convert("RGB")
    hsv = np.asarray(chelsea.convert("HSV")).copy()
    hsv[..., 0] += 90  # a strong hue shift: another colour, the same picture
    out["chelsea_hue"] = folder / "chelsea_hue.jpg"
    Image.fromarray(hsv, "HSV").convert("RGB").save(out["chelsea_hue"], quality=80)
    out["chelsea_small"] = folder / "chelsea_small.png"
    chelsea.resize((chelsea.width // 4, chelsea.height // 4)).save(out["chelsea_small"])
    # two halves of one photo that do not overlap: the same subject, different pixels
    coffee = Image.open(out["coffee"]).convert("RGB")
    cw, ch = coffee.size
    out["coffee_left"], out["coffee_right"] = folder / "coffee_left.jpg", folder / "coffee_right.jpg"
    coffee.crop((0, 0, cw // 2 - 10, ch)).save(out["coffee_left"], quality=90)
    coffee.crop((cw // 2 + 10, 0, cw, ch)).save(out["coffee_right"], quality=90)
    return out


def _verifier():
    return Verifier(_preset().verify, lambda key: str(key))


@pytest.mark.parametrize("a,b", [("astronaut", "astronaut_crop"), ("astronaut", "astronaut_mirror"),
                                 ("astronaut_crop", "astronaut_mirror"), ("chelsea", "chelsea_hue"),
                                 ("chelsea_small", "chelsea_hue")])
def test_hard_copies_of_a_real_photo_are_confirmed(renditions, a, b):
    v = _verifier()
    look = v.look(renditions[a], renditions[b])
    assert v.confirms(look) and not v.refutes(look), look
    assert look.mirrored == (("mirror" in a) != ("mirror" in b))


def test_different_real_photos_are_refuted(renditions, photo_arrays):
    names = sorted(photo_arrays)
    v = _verifier()
    looks = {(x, y): v.look(renditions[x], renditions[y]) for i, x in enumerate(names) for y in names[i + 1:]}
    looks[("coffee_left", "coffee_right")] = v.look(renditions["coffee_left"], renditions["coffee_right"])
    assert {k: look for k, look in looks.items() if v.confirms(look)} == {}
    # the veto needs strong evidence (calibrated so that it never drops a real copy): most, not all, of these
    upheld = {k: look for k, look in looks.items() if not v.refutes(look)}
    assert len(upheld) <= len(looks) // 10, upheld


def test_unreadable_files_keep_the_plain_decision(renditions, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not a jpeg")
    v = _verifier()
    assert v.look(renditions["astronaut"], tmp_path / "gone.jpg") is None
    assert v.look(renditions["astronaut"], broken) is None
    assert str(broken) in v.errors
    assert v.decide([str(renditions["astronaut"])], [str(broken)], np.array([True])).tolist() == [UNREADABLE]
    # in the band [0.45, 0.70): below the threshold a pair is kept only when confirmed, above it dropped only
    # when refuted; unreadable and upheld pairs keep score >= threshold
    scores = np.array([0.9, 0.6, 0.6, 0.5, 0.5, 0.58, 0.5, 0.3], np.float32)
    effects = {1: UPHELD, 2: REFUTED, 3: CONFIRMED, 4: UPHELD, 5: UNREADABLE, 6: UNREADABLE}
    keep, effect = decide_band(scores, 0.572, (0.45, 0.70), lambda idx, above: np.array([effects[i] for i in idx]))
    assert keep.tolist() == [True, True, False, True, False, True, False, False]
    assert effect.tolist() == [NOT_LOOKED, UPHELD, REFUTED, CONFIRMED, UPHELD, UNREADABLE, UNREADABLE, NOT_LOOKED]


def test_dupes_verifies_the_band_and_check_agrees(renditions, tmp_path, encoder):
    """With a band wide enough to put every pair in it, dupes keeps exactly the real copies (every pair is
    decided by the second look); `check` of a copy gives the same verdicts."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for name, path in renditions.items():
        if name not in ("coffee_left", "coffee_right"):
            (folder / path.name).write_bytes(path.read_bytes())
    db = tmp_path / "v.db"
    scan([folder], db=db, workers=0)
    wide = _preset(below=2.0, above=2.0, threshold=1.0)
    with Catalog(db) as catalog:  # threshold 1: nothing near passes on its score, the look decides
        report = find_duplicates(catalog, wide)
        plain = find_duplicates(catalog, wide, verify=False)
    groups = sorted(sorted(Path(m.path).stem for m in g.members) for g in report.groups)
    assert groups == [["astronaut", "astronaut_crop", "astronaut_mirror"],
                      ["chelsea", "chelsea_hue", "chelsea_small"]]
    info = report.extra["verify"]
    assert info["looked_at"] >= len(report.pairs) and info["refuted_above_threshold"] == 0
    # every pair is below the (shifted) threshold here, so each one kept was confirmed by the look
    assert all(p.verified for p in report.pairs if p.score < 1.0)
    assert all(p.verified is None for p in plain.pairs)
    assert "verify" not in plain.extra
    assert plain.pairs == [] or all(p.kind == "exact" for p in plain.pairs)
    from embeddr.ingest import Gate

    with Gate(db, encoder=encoder, threshold=1.0) as gate:
        gate.preset = wide  # the same wide band as above
        gate.band = wide.verify.band(gate.threshold, wide.threshold.value)
        gate._floor = gate.band[0]
        [result] = gate.check([str(folder / "astronaut_crop.jpg")])
    assert sorted(Path(m.path).stem for m in result.matches) == ["astronaut", "astronaut_crop", "astronaut_mirror"]
    assert [m.verified for m in result.matches if m.kind == "near"] == [True, True]


def test_dupes_json_says_what_the_second_look_did(renditions, tmp_path, runner):
    from embeddr.cli import app

    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("astronaut", "astronaut_crop", "chelsea", "coffee"):
        (folder / renditions[name].name).write_bytes(renditions[name].read_bytes())
    db = tmp_path / "j.db"
    assert runner.invoke(app, ["scan", str(folder), "--db", str(db)]).exit_code == 0
    on = runner.invoke(app, ["dupes", "--db", str(db), "--format", "json"])
    off = runner.invoke(app, ["dupes", "--db", str(db), "--format", "json", "--no-verify"])
    assert on.exit_code == 0 and off.exit_code == 0, on.output + off.output
    on, off = json.loads(on.output), json.loads(off.output)
    assert set(on["verify"]) == {"band", "looked_at", "confirmed_below_threshold", "refuted_above_threshold",
                                 "unreadable", "far", "groups", "pages", "scene"}
    assert set(on["verify"]["scene"]) == {"listed", "refuted", "skipped"}
    assert set(on["verify"]["groups"]) == {"looked_at", "confirmed", "bridged", "skipped", "max_per_merge"}
    assert set(on["verify"]["pages"]) == {"listed", "skipped"} and on["verify"]["pages"]["skipped"] == 0
    assert on["verify"]["band"] == [round(0.572 - 0.12, 6), round(0.572 + 0.13, 6)]
    assert set(on["verify"]["far"]) == {"raw_from", "looked_at", "confirmed", "skipped"}
    assert on["verify"]["far"]["raw_from"] == round(0.572 - 0.12, 6) and on["verify"]["far"]["skipped"] == 0
    assert "verify" not in off
    # a threshold set by hand: the look only refutes pairs at or above it, it never adds one below it
    strict = json.loads(runner.invoke(app, ["dupes", "--db", str(db), "--format", "json", "--threshold", "0.9"]).output)
    assert strict["verify"]["band"] == [0.9, round(0.9 + 0.13, 6)] and "far" not in strict["verify"]
    assert all(p["score"] >= 0.9 - 1e-6 for p in strict["pairs"])


def test_what_both_show_decides_not_their_borders(photo_arrays, tmp_path):
    """A bordered copy of a real photo and a rescan of it (paper, margins, perspective): over the whole
    aligned overlap the border and the margins make them correlate poorly (< 0.3, which once refuted such
    pairs), but within the inliers' hull, what both show, they correlate >= 0.9: the veto keeps them."""
    import random

    from embeddr.bench.transforms import apply_family

    img = Image.fromarray(photo_arrays["chelsea"]).convert("RGB")
    v = Verifier(_preset().verify, lambda key: str(key))
    whole_low = 0
    for k in (1, 3):
        border = apply_family("border", img, random.Random(f"b{k}"))
        rescan = apply_family("rescan", img, random.Random(f"r{k}"))
        pb, pr = tmp_path / f"border{k}{border.save.ext}", tmp_path / f"rescan{k}{rescan.save.ext}"
        border.save.save(border.image, pb)
        rescan.save.save(rescan.image, pr)
        look = v.look(pb, pr)
        assert look.inliers >= 30 and look.content_ncc >= 0.9 and not v.refutes(look), look
        whole_low += look.ncc < 0.3
    assert whole_low >= 1  # the case the hull is for


def test_a_plain_image_is_never_refuted(photo_arrays, tmp_path):
    """Too plain to hold key points (a heavily defocused photo and its tint): no material to match is not
    evidence of two different pictures, so the score's decision stands."""
    from PIL import ImageFilter

    plain = Image.fromarray(photo_arrays["rocket"]).convert("RGB").filter(ImageFilter.GaussianBlur(12))
    plain.save(tmp_path / "plain.png")
    tinted = Image.blend(plain, Image.new("RGB", plain.size, (200, 120, 40)), 0.2)
    tinted.save(tmp_path / "plain_tint.jpg", quality=90)
    v = Verifier(_preset().verify, lambda key: str(key))
    look = v.look(tmp_path / "plain.png", tmp_path / "plain_tint.jpg")
    assert look.points < v.config.veto_min_points and not v.refutes(look), look


def test_a_smooth_picture_and_its_copies_are_confirmed_with_few_key_points(photo_arrays, tmp_path):
    """A smooth picture (a real photo defocused into soft shapes, like a gradient wallpaper) has too few key points
    for the first way to confirm (>= 30 inliers); a bordered copy and a crop of it align on a few points with a
    correlation >= 0.95 and are confirmed the second way, while the same for another photo is not."""
    from PIL import ImageFilter

    def smooth(name: str) -> Image.Image:
        img = Image.fromarray(photo_arrays[name]).convert("RGB").resize((512, 512))
        return img.filter(ImageFilter.GaussianBlur(9))

    wall = smooth("astronaut")
    wall.save(tmp_path / "wall.png")
    bordered = ImageOps.expand(wall.resize((440, 440)), border=36, fill=(250, 250, 250))
    bordered.save(tmp_path / "wall_border.jpg", quality=90)
    wall.crop((60, 40, 460, 470)).save(tmp_path / "wall_crop.jpg", quality=90)
    smooth("coffee").save(tmp_path / "other.png")
    v = Verifier(_preset().verify, lambda key: str(key))
    c = v.config
    assert c.few_inliers > 0
    for copy in ("wall_border.jpg", "wall_crop.jpg"):
        look = v.look(tmp_path / "wall.png", tmp_path / copy)
        assert look.inliers < c.min_inliers, (copy, look)  # not the first way
        assert v.confirms(look) and not v.refutes(look), (copy, look)
    other = v.look(tmp_path / "wall.png", tmp_path / "other.png")
    assert not v.confirms(other), other


def test_few_key_points_that_mostly_agree_are_not_a_refutation():
    """The veto's rule for plain images, on the looks it is given: with fewer than ``veto_few_points`` key points
    (a smooth wallpaper), most of them agreeing with one transform is no evidence of two pictures; none agreeing
    (two different clip-art stamps) still is, and so is a textured pair that does not align."""
    from embeddr.verify import Look

    v = _verifier()
    c = v.config
    assert 0 < c.veto_min_points < c.veto_few_points
    few = c.veto_few_points - 1
    assert not v.refutes(Look(inliers=int(few * c.veto_few_share) + 1, cells=3, points=few))
    assert v.refutes(Look(inliers=0, points=few))
    assert v.refutes(Look(inliers=4, cells=2, points=c.veto_few_points + 20))
    assert not v.refutes(Look(inliers=0, points=c.veto_min_points - 1))


def test_the_dense_look_confirms_copies_of_a_picture_without_key_points(photo_arrays, tmp_path):
    """A picture blurred into soft shapes has almost no key points, so no alignment confirms its crop or its
    bordered copy; slid over the original at 128 px they correlate >= ``dense_ncc`` and are confirmed, while
    other photos blurred alike are not."""
    from PIL import ImageFilter

    def smooth(name: str) -> Image.Image:
        img = Image.fromarray(photo_arrays[name]).convert("RGB").resize((512, 384))
        return img.filter(ImageFilter.GaussianBlur(12))

    wall = smooth("astronaut")
    wall.save(tmp_path / "wall.png")
    wall.crop((100, 60, 400, 300)).save(tmp_path / "wall_crop.jpg", quality=90)
    ImageOps.expand(wall.resize((440, 330)), border=30, fill=(255, 255, 255)).save(tmp_path / "wall_border.jpg",
                                                                                   quality=90)
    for other in ("coffee", "chelsea", "rocket"):
        smooth(other).save(tmp_path / f"{other}.png")
    v = Verifier(_preset().verify, lambda key: str(key))
    assert v.config.dense_ncc > 0
    for copy in ("wall_crop.jpg", "wall_border.jpg"):
        look = v.look(tmp_path / "wall.png", tmp_path / copy)
        assert not v.confirms(look), look  # no key point alignment to go on
        assert v.dense_confirms(tmp_path / "wall.png", tmp_path / copy), v.dense(tmp_path / "wall.png", tmp_path / copy)
    for other in ("coffee", "chelsea", "rocket"):
        assert not v.dense_confirms(tmp_path / "wall.png", tmp_path / f"{other}.png")
    # and dupes uses it: both copies join the picture although their scores may fall below the threshold
    decided = v.decide([tmp_path / "wall.png"] * 2, [tmp_path / "wall_crop.jpg", tmp_path / "coffee.png"],
                       above=np.array([False, False]))
    assert list(decided) == [CONFIRMED, UPHELD]


def _star_fields(photo_arrays, folder: Path) -> dict[str, Path]:
    """Two "star fields" on one smooth real backdrop (a photo blurred into soft shading) with their stars in other
    places, and a crop of the first: at 128 px the shading makes all three slide onto each other."""
    from PIL import ImageFilter

    backdrop = np.asarray(Image.fromarray(photo_arrays["astronaut"]).convert("RGB").resize((512, 384))
                          .filter(ImageFilter.GaussianBlur(12)))
    out = {}
    for name, seed in (("field_a", 1), ("field_b", 2)):
        arr = backdrop.copy()
        rng = np.random.default_rng(seed)
        for x, y in zip(rng.integers(4, 508, 160), rng.integers(4, 380, 160)):
            arr[y - 1:y + 2, x - 1:x + 2] = 255
        out[name] = folder / f"{name}.png"
        Image.fromarray(arr).save(out[name])
    out["field_a_crop"] = folder / "field_a_crop.jpg"
    Image.open(out["field_a"]).crop((60, 40, 440, 330)).save(out["field_a_crop"], quality=92)
    return out


def test_the_far_look_needs_the_detail_to_agree(photo_arrays, tmp_path):
    """The far look (pairs pushed far below the band) asks for more than the dense look: two star fields on one
    backdrop correlate like copies at 128 px, but their stars do not line up at 384 px; a crop's do."""
    fields = _star_fields(photo_arrays, tmp_path)
    v = Verifier(_preset().verify, lambda key: str(key))
    assert v.config.far and v.config.far_detail > 0
    a, b, crop = fields["field_a"], fields["field_b"], fields["field_a_crop"]
    assert v.dense(a, b) >= v.config.dense_ncc  # the shading alone: the dense look would take them
    assert v.detail(a, b) < v.config.far_detail and not v.far_confirms(a, b)
    assert v.detail(a, crop) >= v.config.far_detail and v.far_confirms(a, crop)
    # in decide: a pair below the band is looked at only when it is listed for the far look
    decided = v.decide([a, a, a], [crop, b, crop], above=np.array([False] * 3), far=np.array([True, True, False]),
                       in_band=np.array([False] * 3))
    assert list(decided) == [CONFIRMED, UPHELD, NOT_LOOKED]


def test_the_detail_look_confirms_what_the_dense_look_alone_would_not(photo_arrays, tmp_path):
    """The fourth way (``detail_dense``, ``detail_ncc``): a placement short of ``dense_ncc`` is enough when the fine
    detail agrees there. Here ``dense_ncc`` is set out of reach: the crop of a star field is confirmed by the
    dense look and its detail together, the other field on the same backdrop (whose shading slides onto it just
    as well) is not, and without the fourth way neither is."""
    fields = _star_fields(photo_arrays, tmp_path)
    a, crop, other = fields["field_a"], fields["field_a_crop"], fields["field_b"]
    shipped = _preset().verify
    assert 0 < shipped.detail_dense < shipped.dense_ncc and shipped.detail_ncc > 0
    cfg = dataclasses.replace(shipped, dense_ncc=0.9999)
    v = Verifier(cfg, lambda key: str(key))
    assert cfg.detail_dense <= v.dense(a, crop) < cfg.dense_ncc and not v.dense_confirms(a, crop)
    assert v.detail_confirms(a, crop)
    assert v.dense(a, other) >= cfg.detail_dense and not v.detail_confirms(a, other)  # shading alone
    off = Verifier(dataclasses.replace(cfg, detail_dense=0.0), lambda key: str(key))
    assert not off.detail_confirms(a, crop)
    # a look without matching key points does not refute the crop (far_upholds): the detail look upholds it
    from embeddr.verify import Look

    nothing = Look(inliers=0, cells=0, ncc=0.0, content_ncc=0.0, points=200)
    assert not v.refutes(nothing, a, crop) and v.refutes(nothing, a, other)
    far_alone = Verifier(dataclasses.replace(cfg, far_look_ncc=0.0), lambda key: str(key))
    assert not far_alone.far_confirms(a, crop)  # the far look's dense way alone (dense >= dense_ncc) would not have


def test_the_far_look_reads_the_detail_where_the_key_points_align_two_cuts(photo_arrays, tmp_path):
    """A landscape and a portrait cut of one picture (a wallpaper shipped in both) overlap without either holding
    the other: the dense look finds no placement, so its detail says nothing, while the key points align the two
    and the detail there lines up (``aligned_detail``). Two star fields on one backdrop are not kept that way."""
    from PIL import ImageFilter

    master = np.asarray(Image.fromarray(photo_arrays["chelsea"]).filter(ImageFilter.GaussianBlur(0.6)))
    h, w = master.shape[:2]
    land, port = tmp_path / "land.png", tmp_path / "port.jpg"
    Image.fromarray(master[h // 4: 3 * h // 4]).save(land)
    Image.fromarray(master[:, w // 3: 2 * w // 3]).resize((w // 3 * 3 // 2, h * 3 // 2)).save(port, quality=90)
    cfg = _preset().verify
    assert cfg.aligned_detail and cfg.far_look_ncc > 0
    v = Verifier(cfg, lambda key: str(key))
    look = v.look(land, port)
    assert v.confirms(look) and max(look.ncc, look.content_ncc) >= cfg.far_look_ncc
    assert (v.detail(land, port) or 0.0) < cfg.far_look_detail  # no dense placement: no detail to read there
    assert v.aligned_detail(land, port) >= 0.9 and v.far_confirms(land, port)
    off = Verifier(dataclasses.replace(cfg, aligned_detail=False), lambda key: str(key))
    assert not off.far_confirms(land, port)
    fields = _star_fields(photo_arrays, tmp_path)
    assert not v.far_confirms(fields["field_a"], fields["field_b"])
    assert (v.aligned_detail(fields["field_a"], fields["field_b"]) or 0.0) < cfg.far_look_detail


def test_dupes_and_check_keep_far_pairs_only_when_the_far_look_confirms(photo_arrays, renditions, tmp_path, encoder):
    """With a background penalty so steep that every pair scores far below the band, `dupes` lists the pairs
    whose raw cosine reaches the band's lower edge (``far_below``) and keeps those the far look confirms (the crop of a star field, not
    the other field on the same backdrop); `check` of the crop gives the same answer."""
    from embeddr.ingest import Gate
    from embeddr.normalize import Scorer

    folder = tmp_path / "photos"
    folder.mkdir()
    for path in _star_fields(photo_arrays, folder).values():
        assert path.exists()
    for name in ("coffee", "rocket"):
        (folder / renditions[name].name).write_bytes(renditions[name].read_bytes())
    db = tmp_path / "far.db"
    scan([folder], db=db, workers=0)
    p = _preset(threshold=0.5)
    p = dataclasses.replace(p, normalize=dataclasses.replace(p.normalize, beta=50.0, floor=0.0))
    with Catalog(db) as catalog:
        from embeddr.index import load_index, stored

        ids, vecs = stored(load_index(catalog))
        raw = vecs @ vecs.T
        assert (raw[np.triu_indices(len(ids), 1)] >= 0.5).sum() >= 2  # the fields and the crop: raw >= threshold
        report = find_duplicates(catalog, p)
        off = find_duplicates(catalog, dataclasses.replace(p, verify=dataclasses.replace(p.verify, far=False)))
        # more far pairs than far_max_pairs: the best-scoring ones are looked at, and the JSON says how many were not
        capped = find_duplicates(catalog, dataclasses.replace(p, verify=dataclasses.replace(p.verify, far_max_pairs=1)))
        none = find_duplicates(catalog, dataclasses.replace(p, verify=dataclasses.replace(p.verify, far_max_pairs=0)))
    assert capped.extra["verify"]["far"]["looked_at"] == 1 and capped.extra["verify"]["far"]["skipped"] >= 1
    assert none.groups == [] and none.extra["verify"]["far"]["looked_at"] == 0
    assert none.extra["verify"]["far"]["skipped"] == capped.extra["verify"]["far"]["skipped"] + 1
    assert sorted(sorted(Path(m.path).stem for m in g.members) for g in report.groups) == [["field_a", "field_a_crop"]]
    assert all(p_.verified and p_.score < 0.5 - 0.12 for p_ in report.pairs)
    far = report.extra["verify"]["far"]
    assert p.verify.far_below > 0 and far["raw_from"] == round(0.5 - p.verify.far_below, 6)  # the band's lower edge
    assert far["confirmed"] == 1 and far["looked_at"] >= 2
    assert off.groups == []
    with Gate(db, encoder=encoder, threshold=0.5) as gate:
        gate.preset = p
        gate.band = p.verify.band(gate.threshold, p.threshold.value)
        gate._floor = gate.band[0]
        gate.scorer = Scorer.for_preset(p).with_far(p.verify.far_raw(gate.threshold, p.threshold.value))
        [result] = gate.check([str(folder / "field_a_crop.jpg")])
    assert [(Path(m.path).stem, m.verified) for m in result.matches if m.kind == "near"] == [("field_a", True)]


def test_far_max_pairs_is_a_budget_of_looks_for_the_likeliest_copies():
    """``far_max_pairs`` bounds the far looks ``dupes`` takes. Pairs of pages (either image like the reference
    set) are never looked at below the threshold, so they leave the far list and do not count: thousands of pages,
    whose raw cosines with each other are high, had made ``dupes`` skip every far look of a collection. Past the
    budget, the best-scoring far pairs are looked at (ties: the lower ids), not none of them."""
    from embeddr.dupes import _far_budget

    a, b = np.arange(6), np.arange(6) + 10
    s = np.array([0.30, 0.31, 0.32, 0.50, 0.20, 0.40], np.float32)
    pages = [0, 1, 12]
    rescuable = lambda ia, ib: ~(np.isin(ia, pages) | np.isin(ib, pages))  # noqa: E731
    far = np.array([True, True, True, False, True, True])
    assert _far_budget(far, a, b, s, rescuable, limit=100) == 0
    assert far.tolist() == [False, False, False, False, True, True]  # the pages' pairs leave the far list
    far = np.ones(6, bool)
    assert _far_budget(far, a, b, s, lambda ia, ib: None, limit=100) == 0 and far.all()  # no reference set: all
    far = np.array([True, True, True, False, True, True])
    assert _far_budget(far, a, b, s, lambda ia, ib: None, limit=2) == 3  # past the budget: the best two stay
    assert np.flatnonzero(far).tolist() == [2, 5]
    tied = np.ones(6, bool)
    assert _far_budget(tied, a, b, np.zeros(6, np.float32), rescuable, limit=1) == 2
    assert np.flatnonzero(tied).tolist() == [3]  # equal scores: the lowest ids among the lookable


def test_a_pair_the_far_look_confirms_is_not_refuted(photo_arrays, tmp_path):
    """A look without matching key points refutes a pair, unless the far look confirms it (``far_upholds``): the
    crop of a smooth star field is upheld, the other field on the same backdrop is still refuted, and so is any
    pair of images like the reference set (``rescuable`` false) or with ``far_upholds`` off."""
    from embeddr.verify import Look

    fields = _star_fields(photo_arrays, tmp_path)
    a, b, crop = fields["field_a"], fields["field_b"], fields["field_a_crop"]
    nothing = Look(inliers=0, cells=0, ncc=0.0, content_ncc=0.0, points=200)  # no transform found
    v = Verifier(_preset().verify, lambda key: str(key))
    assert v.config.far_upholds
    assert v.refutes(nothing)  # without the pair's images: refuted
    assert not v.refutes(nothing, a, crop)
    assert v.refutes(nothing, a, b)
    assert v.refutes(nothing, a, crop, rescuable=False)
    off = Verifier(dataclasses.replace(_preset().verify, far_upholds=False), lambda key: str(key))
    assert off.refutes(nothing, a, crop)


def test_a_thin_look_does_not_overrule_the_dense_look_above_the_threshold(photo_arrays, tmp_path):
    """A decision is not stricter above the threshold than below it on thin evidence: a look with few key points
    and none agreeing (a smooth wallpaper's rescan) does not drop a pair the dense look alone confirms, as the dense
    look would keep the same pair below the threshold; a look with hundreds of key points still does (two star
    fields on one backdrop slide onto each other as well as copies, their stars do not match), and so does any
    look of a pair that the dense look does not place, or of images like the reference set."""
    from PIL import ImageFilter

    from embeddr.verify import Look

    wall = Image.fromarray(photo_arrays["astronaut"]).convert("RGB").resize((512, 384)).filter(ImageFilter.GaussianBlur(12))
    wall.save(tmp_path / "wall.png")
    wall.crop((100, 60, 400, 300)).save(tmp_path / "wall_crop.jpg", quality=90)
    other = Image.fromarray(photo_arrays["coffee"]).convert("RGB").resize((512, 384)).filter(ImageFilter.GaussianBlur(12))
    other.save(tmp_path / "other.png")
    a, copy, b = tmp_path / "wall.png", tmp_path / "wall_crop.jpg", tmp_path / "other.png"
    v = Verifier(_preset().verify, lambda key: str(key))
    c = v.config
    assert c.far_upholds and c.veto_few_points < c.dense_upholds_points
    assert v.dense_confirms(a, copy) and not v.dense_confirms(a, b)
    thin = Look(inliers=0, cells=0, points=c.veto_few_points + 10)  # plain, but past the plain-image rule
    assert v.refutes(thin)  # on the look alone: refuted
    assert not v.refutes(thin, a, copy)  # the dense look alone would keep it below the threshold: kept above too
    assert v.refutes(thin, a, b) and v.refutes(thin, a, copy, rescuable=False)
    off = Verifier(dataclasses.replace(c, dense_upholds_points=0, detail_dense=0.0, far_detail=1.01),
                   lambda key: str(key))
    assert off.refutes(thin, a, copy)  # neither the rule nor the detail look: refuted
    fields = _star_fields(photo_arrays, tmp_path)  # the dense look places them, their detail does not agree
    assert v.dense_confirms(fields["field_a"], fields["field_b"])
    rich = Look(inliers=0, cells=0, points=c.dense_upholds_points)  # hundreds of stars, none matching
    assert v.refutes(rich, fields["field_a"], fields["field_b"])
    assert not v.refutes(dataclasses.replace(rich, points=c.dense_upholds_points - 1), fields["field_a"], fields["field_b"])


def _groups_with_and_without(folder: Path, db: Path, setting: str):
    """Scan ``folder``; ``dupes`` with the default preset, and with its ``[verify]`` ``setting`` at 0."""
    scan([folder], db=db, workers=0)
    preset = resolve_preset("sscd-distilled")
    assert getattr(preset.verify, setting) > 0
    off = dataclasses.replace(preset, verify=dataclasses.replace(preset.verify, **{setting: 0}))
    with Catalog(db) as catalog:
        return preset, find_duplicates(catalog, preset), find_duplicates(catalog, off)


def _group_stems(report) -> list[list[str]]:
    return [sorted(Path(m.path).stem for m in g.members) for g in report.groups]


def test_grouping_asks_the_look_about_a_crop_its_picture_s_renditions_score_far_from(photo_arrays, tmp_path):
    """A strong crop of a photo pairs with the photo, but scores far below the grouping floor against its mirror:
    without the group look it stays out of the picture's group (the no-chaining rule on the score alone). The group
    look places the crop in the mirror, so the picture is one group; its min_score is still the true weakest link.
    Two halves of another photo that share no pixel, each paired with the whole, stay apart: no look places one in
    the other."""
    folder = tmp_path / "photos"
    for name, arr in photo_arrays.items():
        save_photo(arr, folder / f"{name}.jpg", long_side=512)
    photo = Image.open(folder / "astronaut.jpg").convert("RGB")
    w, h = photo.size
    photo.crop((int(w * 0.3), int(h * 0.25), int(w * 0.75), int(h * 0.7))).resize((400, 400)).save(
        folder / "astronaut_crop.jpg", quality=88)
    photo.crop((w // 10, h // 10, w - w // 10, h - h // 10)).save(folder / "astronaut_mild.jpg", quality=88)
    ImageOps.mirror(photo).save(folder / "astronaut_mirror.jpg", quality=85)
    photo.resize((w // 3, h // 3)).save(folder / "astronaut_thumb.png")
    coffee = Image.open(folder / "coffee.jpg").convert("RGB")
    cw, ch = coffee.size
    coffee.crop((0, 0, int(cw * 0.45), ch)).save(folder / "coffee_left.jpg", quality=90)
    coffee.crop((cw - int(cw * 0.45), 0, cw, ch)).save(folder / "coffee_right.jpg", quality=90)
    db = tmp_path / "g.db"
    preset, report, plain = _groups_with_and_without(folder, db, "group_looks")
    groups = _group_stems
    score = {frozenset((Path(p.a).stem, Path(p.b).stem)): p.score for p in report.pairs}
    floor = preset.threshold.value - preset.threshold.group_margin
    assert "astronaut_crop" in {x for k in score for x in k}  # listed with the photo
    assert frozenset(("astronaut_crop", "astronaut_mirror")) not in score  # far below the floor
    astronaut = ["astronaut", "astronaut_crop", "astronaut_mild", "astronaut_mirror", "astronaut_thumb"]
    assert astronaut not in groups(plain) and any("astronaut_mirror" in g for g in groups(plain))
    assert astronaut in groups(report), groups(report)
    [g] = [g for g in report.groups if len(g.members) == len(astronaut)]
    assert g.min_score < floor  # the weakest link is the pair the look confirmed
    info = report.extra["verify"]["groups"]
    assert info["confirmed"] >= 1 and info["looked_at"] >= info["confirmed"] and info["skipped"] == 0
    assert info["max_per_merge"] == preset.verify.group_looks
    # the halves pair with the whole coffee, and stay apart
    assert any({"coffee", "coffee_left"} <= set(g) or {"coffee", "coffee_right"} <= set(g) for g in groups(report))
    assert not any({"coffee_left", "coffee_right"} <= set(g) for g in groups(report))
    # a bound on grouping's looks: none left, no group look, the groups of the score alone
    capped = dataclasses.replace(preset, verify=dataclasses.replace(preset.verify, group_max_looks=0))
    with Catalog(db) as catalog:
        bounded = find_duplicates(catalog, capped)
    assert groups(bounded) == groups(plain)
    assert bounded.extra["verify"]["groups"]["looked_at"] == 0 and bounded.extra["verify"]["groups"]["skipped"] >= 1


def test_grouping_bridges_renditions_of_a_smooth_picture_through_their_original(photo_arrays, tmp_path):
    """A smooth picture (the moon photo, blurred like a soft wallpaper) in ten of the benchmark's renditions: each
    is listed with the original, but rescans, borders and combos score far apart and the look finds too few key
    points to place one in another, so grouping alone split them in two. Through a hub both are certainly listed
    with (the original, scored above the look's band), a cross pair the look does not refute on many key points
    passes (``group_bridges``): one group, the same listed pairs, and its weakest link reported."""
    import random

    from PIL import ImageFilter

    from embeddr.bench.transforms import apply_family

    folder = tmp_path / "moon"
    folder.mkdir()
    img = Image.fromarray(photo_arrays["moon"]).convert("RGB")
    img.thumbnail((512, 512))
    img = img.filter(ImageFilter.GaussianBlur(12))
    img.save(folder / "r00.png")
    rng = random.Random(7)
    families = ["rescan", "border", "combo", "overlay", "hue", "crop_strong", "grey", "rescan", "border", "combo"]
    for k, family in enumerate(families, 1):
        apply_family(family, img, rng).image.convert("RGB").save(folder / f"r{k:02d}_{family}.png")
    preset, report, plain = _groups_with_and_without(folder, tmp_path / "m.db", "group_bridges")
    groups = _group_stems
    everything = sorted(p.stem for p in folder.iterdir() if p.suffix == ".png")
    assert len(groups(plain)) > 1, groups(plain)  # without bridges: split
    assert groups(report) == [everything], groups(report)
    assert {(p.a, p.b, p.score) for p in report.pairs} == {(p.a, p.b, p.score) for p in plain.pairs}
    listed = {frozenset((Path(p.a).stem, Path(p.b).stem)) for p in report.pairs}
    assert len(listed) < len(everything) * (len(everything) - 1) // 2  # pairs in the group that are not listed
    assert report.groups[0].min_score <= min(p.score for p in report.pairs)  # the weakest link, listed or not
    info = report.extra["verify"]["groups"]
    assert info["bridged"] >= 1 and info["looked_at"] >= 1 and plain.extra["verify"]["groups"]["bridged"] == 0


def test_the_look_correlates_what_both_images_show_not_their_borders(photo_arrays, tmp_path):
    """A smooth picture framed in light paper and the same framed in a dark frame: aligned, the two frames decide
    the whole overlap's correlation (negative), though the pictures inside agree. The content correlation leaves
    either image's uniform border out (content_box), so the look no longer refutes the pair; two different smooth
    pictures in the same frames are still refuted."""
    from PIL import ImageFilter

    from embeddr.verify import content_box

    def smooth(name: str) -> Image.Image:
        img = Image.fromarray(photo_arrays[name]).convert("RGB").resize((480, 360))
        return img.filter(ImageFilter.GaussianBlur(6))

    def framed(img: Image.Image, border: int, colour) -> Image.Image:
        return ImageOps.expand(img, border=border, fill=colour)

    wall, other = smooth("chelsea"), smooth("coffee")
    framed(wall, 40, (245, 240, 225)).save(tmp_path / "light.jpg", quality=92)
    framed(wall.resize((440, 330)), 60, (30, 28, 60)).save(tmp_path / "dark.jpg", quality=92)
    framed(other.resize((440, 330)), 60, (30, 28, 60)).save(tmp_path / "other_dark.jpg", quality=92)
    grey = np.asarray(Image.open(tmp_path / "dark.jpg").convert("L"))
    x0, y0, x1, y1 = content_box(grey)
    assert 60 <= x0 <= 66 and 60 <= y0 <= 66 and grey.shape[1] - 66 <= x1 <= grey.shape[1] - 60
    assert content_box(np.asarray(Image.open(tmp_path / "light.jpg").convert("L"))) != (0, 0, 560, 440)
    assert content_box(np.asarray(wall.convert("L"))) == (0, 0, 480, 360)  # no border: the whole image
    on = Verifier(_preset().verify, lambda key: str(key))
    off = Verifier(dataclasses.replace(on.config, content_boxes=False), lambda key: str(key))
    assert on.config.content_boxes
    a, b = tmp_path / "light.jpg", tmp_path / "dark.jpg"
    plain, boxed = off.look(a, b), on.look(a, b)
    assert boxed.inliers == plain.inliers and boxed.ncc == pytest.approx(plain.ncc)
    assert plain.content_ncc < on.config.veto_ncc < on.config.min_ncc <= boxed.content_ncc, (plain, boxed)
    assert off.refutes(plain) and not on.refutes(boxed)
    assert on.refutes(on.look(a, tmp_path / "other_dark.jpg"))


def test_the_far_look_takes_a_key_point_confirmation(photo_arrays, tmp_path):
    """The far look also keeps a pair the key point look confirms as it would in the band, with an aligned
    correlation of at least ``far_look_ncc`` and fine detail that does not disagree (``far_look_detail``): a strong
    crop of a real photo, rescanned (tilted, blurred, noisy), is the same picture; the other photos are not, nor
    are two star fields on one backdrop (its key points agree, the stars do not); with the dense and detail
    conditions out of reach and ``far_look_ncc`` 0 the crop is not kept."""
    import random

    from embeddr.bench.transforms import apply_family

    img = Image.fromarray(photo_arrays["astronaut"]).convert("RGB")
    a = save_photo(photo_arrays["astronaut"], tmp_path / "a.png")
    var = apply_family("rescan", img.crop((60, 40, 420, 400)), random.Random(3))
    copy = tmp_path / f"copy{var.save.ext}"
    var.save.save(var.image, copy)
    others = [save_photo(arr, tmp_path / f"{n}.png") for n, arr in photo_arrays.items() if n != "astronaut"]
    shipped = _preset().verify
    assert shipped.far_look_ncc > 0
    cfg = dataclasses.replace(shipped, dense_ncc=0.9999, far_detail=1.0)
    v = Verifier(cfg, lambda key: str(key))
    look = v.look(a, copy)
    assert v.confirms(look) and max(look.ncc, look.content_ncc) >= cfg.far_look_ncc, look
    assert v.far_confirms(a, copy)
    assert not any(v.far_confirms(a, o) for o in others)
    (tmp_path / "fields").mkdir()
    fields = _star_fields(photo_arrays, tmp_path / "fields")  # the backdrop's key points agree, the stars do not
    assert not v.far_confirms(fields["field_a"], fields["field_b"])
    off = Verifier(dataclasses.replace(cfg, far_look_ncc=0.0), lambda key: str(key))
    assert not off.far_confirms(a, copy)


def _scene(photo_arrays, folder: Path) -> dict[str, Path]:
    """Two shots of one static scene (a real photo as the backdrop, another real photo held up in front of it in
    two places, as the chessboard of a camera calibration set is) and copies of the first shot: captioned, a
    thumbnail, a crop and a rescan."""
    import random

    from PIL import ImageDraw

    from embeddr.bench.transforms import apply_family

    backdrop = Image.fromarray(photo_arrays["astronaut"]).convert("RGB").resize((640, 480))
    held = Image.fromarray(photo_arrays["camera"]).convert("RGB").resize((260, 260))
    out = {}
    for name, place in {"shot_a": (40, 60), "shot_b": (330, 180)}.items():
        shot = backdrop.copy()
        shot.paste(held, place)
        out[name] = folder / f"{name}.jpg"
        shot.save(out[name], quality=90)
    first = Image.open(out["shot_a"]).convert("RGB")
    captioned = first.copy()
    draw = ImageDraw.Draw(captioned)
    draw.rectangle((0, 400, 640, 480), fill=(255, 255, 255))
    draw.text((10, 420), "A CAPTION PUT ON THE COPY, 2026 " * 3, fill=(0, 0, 0))
    out["captioned"] = folder / "captioned.jpg"
    captioned.save(out["captioned"], quality=85)
    out["thumbnail"] = folder / "thumbnail.jpg"
    first.resize((160, 120)).save(out["thumbnail"], quality=85)
    out["crop"] = folder / "crop.jpg"
    first.crop((100, 80, 500, 400)).save(out["crop"], quality=85)
    var = apply_family("rescan", first, random.Random(5))
    out["rescan"] = folder / f"rescan{var.save.ext}"
    var.save.save(var.image, out["rescan"])
    return out


def test_two_shots_of_one_scene_are_refuted_copies_are_not(photo_arrays, tmp_path):
    """The scene check (``scene_cells``, ``scene_ncc``): two shots of a static scene with a picture held in two
    places share their backdrop's key points, so the look neither refutes nor confirms them; but many textured
    cells keep key points that do not follow the transform and the whole overlap does not correlate: another
    shot. A caption, a thumbnail, a crop or a rescan of the first shot is not refuted."""
    shots = _scene(photo_arrays, tmp_path)
    shipped = _preset().verify
    assert shipped.scene_cells > 0
    v = Verifier(shipped, lambda key: str(key))
    look = v.look(shots["shot_a"], shots["shot_b"])
    assert not v.refutes(look) and look.stray >= shipped.scene_cells and v.scene_refutes(look), look
    for name in ("captioned", "thumbnail", "crop", "rescan"):
        copy = v.look(shots["shot_a"], shots[name])
        assert not v.scene_refutes(copy) and not v.refutes(copy), (name, copy)
    off = Verifier(dataclasses.replace(shipped, scene_cells=0), lambda key: str(key))
    assert not off.scene_refutes(off.look(shots["shot_a"], shots["shot_b"]))


def test_dupes_and_check_give_pairs_above_the_band_the_scene_check(photo_arrays, tmp_path, encoder):
    """Above the band a pair of pictures gets no look but the scene check: with a threshold low enough to put
    every pair above the band, dupes drops the two shots of one scene and keeps the copies, its JSON says so,
    grouping does not join the shots through their copies, and `check` of the second shot agrees."""
    folder = tmp_path / "scene"
    folder.mkdir()
    shots = _scene(photo_arrays, folder)
    db = tmp_path / "s.db"
    scan([folder], db=db, workers=0)
    low = _preset(below=0.0, above=0.01, threshold=0.2)  # every pair scores above its band [0.2, 0.21)
    no_scene = dataclasses.replace(low, verify=dataclasses.replace(low.verify, scene_cells=0))
    with Catalog(db) as catalog:
        report = find_duplicates(catalog, low)
        before = find_duplicates(catalog, no_scene)
    names = lambda r: {tuple(sorted((Path(p.a).stem, Path(p.b).stem))) for p in r.pairs}  # noqa: E731
    assert ("shot_a", "shot_b") in names(before)
    assert ("shot_a", "shot_b") not in names(report)
    assert {("captioned", "shot_a"), ("crop", "shot_a"), ("rescan", "shot_a"), ("shot_a", "thumbnail")} <= names(report)
    scene = report.extra["verify"]["scene"]
    assert scene["refuted"] >= 1 and scene["skipped"] == 0 and scene["listed"] >= len(report.pairs)
    assert "scene" not in before.extra["verify"]
    assert not any({"shot_a", "shot_b"} <= {Path(m.path).stem for m in g.members} for g in report.groups)
    from embeddr.ingest import Gate

    with Gate(db, encoder=encoder, threshold=0.2) as gate:
        gate.preset = low
        gate.band = low.verify.band(gate.threshold, low.threshold.value)
        gate._floor = gate.band[0]
        [result] = gate.check([str(shots["shot_b"])])
    assert "shot_a" not in {Path(m.path).stem for m in result.matches}


def _letterbox_and_margins(arr: np.ndarray, tmp_path: Path) -> tuple[Path, Path]:
    """A photo letterboxed in dark bars, and the same photo with white margins, noise and a JPEG re-encode."""
    from PIL import ImageFilter

    master = Image.fromarray(arr).convert("RGB").filter(ImageFilter.GaussianBlur(0.6))
    w, h = master.size
    boxed = Image.new("RGB", (w, h * 4 // 3), (18, 18, 18))
    boxed.paste(master, (0, (h * 4 // 3 - h) // 2))
    boxed.save(tmp_path / "letterbox.png")
    margins = np.asarray(ImageOps.expand(master, border=(w // 20, h // 20), fill=(255, 255, 255))).astype(np.float32)
    margins += np.random.default_rng(0).normal(0, 4, margins.shape[:2] + (1,))
    Image.fromarray(np.clip(margins, 0, 255).astype(np.uint8)).save(tmp_path / "margins.jpg", quality=85)
    return tmp_path / "letterbox.png", tmp_path / "margins.jpg"


def test_the_aligned_detail_reads_what_both_images_show_not_their_borders(photo_arrays, tmp_path):
    """A picture letterboxed in black bars and the same picture rescanned with white margins: the key points align
    them, but over the whole overlap the bars' and the margins' edges decide the detail's correlation. Read over
    what both images show (their content boxes, as the look's own correlation is), the detail lines up."""
    a, b = _letterbox_and_margins(photo_arrays["chelsea"], tmp_path)
    cfg = _preset().verify
    assert cfg.content_boxes and cfg.aligned_detail
    on = Verifier(cfg, lambda key: str(key))
    off = Verifier(dataclasses.replace(cfg, content_boxes=False), lambda key: str(key))
    look = on.look(a, b)
    assert on.confirms(look) and look.content_ncc >= 0.99, look
    assert on.aligned_detail(a, b) >= 0.9 > 0.5 > off.aligned_detail(a, b)


def test_the_far_look_keeps_a_letterboxed_photo_against_its_copy_with_white_margins(photo_arrays, tmp_path):
    """A photo letterboxed in dark bars and the same photo rescanned with white margins, listed below the band:
    the key points align them and their correlation over what both show is a copy's, so the far look should keep
    them; borders are not ink a build step added."""
    from embeddr.verify import PAGE_NO

    a, b = _letterbox_and_margins(photo_arrays["coffee"], tmp_path)
    v = Verifier(_preset().verify, lambda key: str(key))
    look = v.look(a, b)
    assert v.confirms(look) and look.content_ncc >= 0.95, look
    assert v.far_confirms(a, b, PAGE_NO, listed_far=True), v.page_look(a, b)


def test_the_far_look_keeps_a_smooth_picture_the_dense_look_alone_places(photo_arrays, tmp_path):
    """A smooth picture (no key points) and a blurred, noisy, re-encoded copy of it: the copy's fine detail is
    noise, so the detail does not agree (< far_detail), but one slides onto the other at >= far_dense_ncc. Listed
    below the band for its raw cosine, the far look keeps it (``far_dense_ncc``), as the dense look alone keeps
    such a pair in the band; not for two images like the reference set, and not where far_confirms is asked
    for another reason (a refutation above the threshold). Two star fields on one backdrop stay below it."""
    from PIL import ImageFilter

    from embeddr.verify import PAGE_MAYBE, PAGE_NO

    smooth = Image.fromarray(photo_arrays["rocket"]).convert("RGB").resize((640, 400)).filter(ImageFilter.GaussianBlur(16))
    a, b = tmp_path / "smooth.png", tmp_path / "copy.jpg"
    smooth.save(a)
    arr = np.asarray(smooth.filter(ImageFilter.GaussianBlur(2.5))).astype(np.float32)
    arr += np.random.default_rng(1).normal(0, 14, arr.shape[:2] + (1,))
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(b, quality=25)
    cfg = _preset().verify
    assert cfg.far_dense_ncc > cfg.dense_ncc
    v = Verifier(cfg, lambda key: str(key))
    assert v.dense(a, b) >= cfg.far_dense_ncc and v.detail(a, b) < cfg.far_detail
    assert v.far_confirms(a, b, PAGE_NO, listed_far=True)
    assert not v.far_confirms(a, b) and not v.far_confirms(a, b, PAGE_MAYBE, listed_far=True)
    decided = v.decide([a], [b], above=np.array([False]), far=np.array([True]), in_band=np.array([False]))
    assert list(decided) == [CONFIRMED]
    off = Verifier(dataclasses.replace(cfg, far_dense_ncc=0.0), lambda key: str(key))
    assert not off.far_confirms(a, b, PAGE_NO, listed_far=True)
    fields = _star_fields(photo_arrays, tmp_path)
    assert v.dense(fields["field_a"], fields["field_b"]) < cfg.far_dense_ncc
    assert not v.far_confirms(fields["field_a"], fields["field_b"], PAGE_NO, listed_far=True)
