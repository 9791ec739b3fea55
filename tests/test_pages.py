"""The page look (embeddr/verify.py) on pages of real PDF manuals: a page and its rescans, re-encodes, crops and
recolours are the same page; a page with one line added (a slide build), another page of the same manual, or
a page with another page number are not; `dupes` keeps the first and drops the second."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from conftest import real_pdfs, render_pdf, save_photo
from embeddr.bench.transforms import apply_family, default_font
from embeddr.catalog import Catalog
from embeddr.dupes import find_duplicates
from embeddr.encoders import resolve_preset
from embeddr.jobs import scan
from embeddr.verify import CONFIRMED, NOT_LOOKED, PAGE_FAINT, PAGE_MAYBE, PAGE_NO, PAGE_YES, REFUTED, UPHELD, Verifier

pytest.importorskip("cv2")


def _blank_band(img: Image.Image, height: int) -> int | None:
    """The top of a blank band of ``height`` rows in the middle half of a page (where a line can be added)."""
    grey = np.asarray(img.convert("L"), np.float32)
    h, w = grey.shape
    inked = (grey[:, w // 8 : -w // 8] < 200).any(axis=1)
    for top in range(h // 4, 3 * h // 4 - height):
        if not inked[top : top + height].any():
            return top
    return None


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> dict[str, Path]:
    """A text page of a real manual, copies of it, a build of it with one more line, and another page."""
    tmp = tmp_path_factory.mktemp("pages")
    rendered = [p for pdf in real_pdfs() if pdf.stem in ("euro", "txfontsdoc", "pazotest") for p in render_pdf(pdf, tmp / "src")]
    chosen = None
    for path in rendered:  # the first page with ink and room for one more line
        img = Image.open(path).convert("RGB")
        top = _blank_band(img, 40)
        if top is not None and (np.asarray(img.convert("L")) < 128).mean() > 0.01:
            chosen = (path, img, top)
            break
    assert chosen is not None, "no real page with a blank band"
    path, img, top = chosen
    out = {"page": tmp / "page.png"}
    img.save(out["page"])
    for fam in ("rescan", "reencode", "crop_mild", "border", "grey", "tint"):
        var = apply_family(fam, img, random.Random(f"page:{fam}"))
        out[fam] = tmp / f"page_{fam}{var.save.ext}"
        var.save.save(var.image, out[fam])
    build = img.copy()
    ImageDraw.Draw(build).text((img.width // 6, top + 8), "and one more line of text on this slide", fill="black",
                               font=default_font(22))
    out["build"] = tmp / "page_build.png"
    build.save(out["build"])
    renumbered = img.copy()  # the same page with another page number: white-out its lowest ink, then redraw
    grey = np.asarray(img.convert("L"))
    rows = np.flatnonzero((grey < 200).any(axis=1))
    bottom = int(rows.max())
    ImageDraw.Draw(renumbered).rectangle((0, bottom - 14, img.width, bottom + 2), fill="white")
    ImageDraw.Draw(renumbered).text((img.width // 2 - 10, bottom - 14), "97", fill="black", font=default_font(14))
    out["renumbered"] = tmp / "page_renumbered.png"
    renumbered.save(out["renumbered"])
    moved = build.copy()  # the next slide: the build's new line, and the page's last lines gone
    ImageDraw.Draw(moved).rectangle((0, bottom - 80, img.width, bottom + 2), fill="white")
    out["moved"] = tmp / "page_moved.png"
    moved.save(out["moved"])
    others = [p for p in rendered if p.parent == path.parent and p != path]
    if others:
        out["other"] = others[0]
    return out


def _verifier() -> Verifier:
    return Verifier(resolve_preset("sscd-distilled").verify, lambda key: str(key))


def test_pages_are_paper_and_photos_are_not(pages, photo_arrays, tmp_path):
    v = _verifier()
    assert v.is_page(pages["page"]) and v.is_page(pages["rescan"])
    photos = [save_photo(arr, tmp_path / f"{name}.jpg") for name, arr in photo_arrays.items()]
    assert [p.name for p in photos if v.is_page(p)] == []


@pytest.mark.parametrize("copy", ["rescan", "reencode", "crop_mild", "border", "grey", "tint"])
def test_a_page_and_its_copies_are_the_same_page(pages, copy):
    v = _verifier()
    look = v.page_look(pages["page"], pages[copy])
    assert not look.small and not v.page_refutes(look), look
    assert v.decide([pages["page"]], [pages[copy]], np.array([True]), None, np.array([PAGE_YES]), np.array([False])) == [UPHELD]


@pytest.mark.parametrize("other", ["build", "renumbered", "other"])
def test_a_page_with_other_ink_is_another_page(pages, other):
    if other not in pages:
        pytest.skip("a one-page manual")
    v = _verifier()
    look = v.page_look(pages["page"], pages[other])
    assert v.page_refutes(look), look
    assert v.decide([pages["page"]], [pages[other]], np.array([True]), None, np.array([PAGE_YES]), np.array([False])) == [REFUTED]


def _slide(lines: list[str], path: Path) -> Image.Image:
    img = Image.new("RGB", (1024, 768), "white")
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 0, 1024, 110), fill=(30, 60, 140))
    draw.text((50, 30), "Quarterly archive report", fill="white", font=default_font(48))
    for i, line in enumerate(lines):
        draw.text((80, 170 + i * 90), "- " + line, fill="black", font=default_font(40))
    img.save(path)
    return img


def test_dupes_keeps_copies_of_a_slide_and_drops_its_build(photo_arrays, tmp_path, encoder):
    """A slide, its build with one more bullet, and copies of the slide (re-encode, crop, rescan, border)
    among real photos. The score alone pairs the build with the slide (and misses the rescan); with the page
    look the build stands apart and the copies are one group. `check` of a copy of the build agrees."""
    folder = tmp_path / "collection"
    folder.mkdir()
    lines = ["Scanned 1,204 boxes of letters", "Found 18 % duplicate scans", "Canonical copies chosen by policy",
             "Next: ingest checks for new files"]
    slide = _slide(lines[:3], folder / "slide.png")
    _slide(lines, folder / "slide_build.png")
    copies = {"slide.png"}
    for fam in ("reencode", "crop_mild", "rescan", "border"):
        var = apply_family(fam, slide, random.Random(fam))
        var.save.save(var.image, folder / f"slide_{fam}{var.save.ext}")
        copies.add(f"slide_{fam}{var.save.ext}")
    for name, arr in photo_arrays.items():
        save_photo(arr, folder / f"{name}.jpg")
    scan([folder], db=tmp_path / "p.db", workers=0)
    with Catalog(tmp_path / "p.db") as catalog:
        report = find_duplicates(catalog, resolve_preset("sscd-distilled"))
        plain = find_duplicates(catalog, resolve_preset("sscd-distilled"), verify=False)
    assert any("build" in p.a or "build" in p.b for p in plain.pairs)  # the score alone: one template, one pair
    assert not any("build" in p.a or "build" in p.b for p in report.pairs), [(p.a, p.b) for p in report.pairs]
    grouped = [{Path(m.path).name for m in g.members} for g in report.groups]
    assert any(len(g & copies) >= 4 and not g - copies for g in grouped), grouped
    assert report.extra["verify"]["refuted_above_threshold"] >= 1
    assert report.extra["verify"]["pages"]["listed"] >= 1 and report.extra["verify"]["pages"]["skipped"] == 0
    # more pairs of pages than page_max_pairs: none gets a page look (the score and the picture rules decide, as
    # without it), and the JSON says how many were skipped
    preset = resolve_preset("sscd-distilled")
    with Catalog(tmp_path / "p.db") as catalog:
        capped = find_duplicates(catalog, replace(preset, verify=replace(preset.verify, page_max_pairs=0)))
    assert capped.extra["verify"]["pages"]["skipped"] == report.extra["verify"]["pages"]["listed"]
    assert any("build" in p.a or "build" in p.b for p in capped.pairs)
    from embeddr.ingest import Gate

    incoming = tmp_path / "incoming"
    incoming.mkdir()
    Image.open(folder / "slide_build.png").convert("RGB").save(incoming / "build_copy.jpg", quality=85)
    with Gate(tmp_path / "p.db", encoder=encoder) as gate:
        [result] = gate.check([str(incoming / "build_copy.jpg")])
    names = {Path(m.path).name for m in result.matches}
    assert "slide_build.png" in names and not names & copies, names


# -- the paper check: images only somewhat like pages (diagrams, slides, clip-art on white) -------------------

def _on_white(arr: np.ndarray, path: Path) -> Path:
    """A real drawing (scikit-image's sample data) on a white sheet twice its size, as clip-art or a figure."""
    img = Image.fromarray(arr)
    if img.mode == "RGBA":
        sheet = Image.new("RGB", img.size, "white")
        sheet.paste(img, mask=img.split()[3])
        img = sheet
    img = img.convert("RGB")
    side = 2 * max(img.size)
    canvas = Image.new("RGB", (side, side * 3 // 4), "white")
    canvas.paste(img, ((side - img.width) // 2, (side * 3 // 4 - img.height) // 2))
    canvas.thumbnail((1024, 1024))
    canvas.save(path)
    return path


@pytest.fixture(scope="module")
def drawings(tmp_path_factory) -> dict[str, Path]:
    skimage_data = pytest.importorskip("skimage.data")
    tmp = tmp_path_factory.mktemp("drawings")
    out = {}
    for name in ("logo", "rocket"):
        out[name] = _on_white(getattr(skimage_data, name)(), tmp / f"{name}.png")
        img = Image.open(out[name]).convert("RGB")
        for fam in ("overlay", "hue", "border", "tint", "rescan", "crop_mild"):
            for k in range(2):
                var = apply_family(fam, img, random.Random(f"{name}:{fam}:{k}"))
                out[f"{name}_{fam}{k}"] = tmp / f"{name}_{fam}{k}{var.save.ext}"
                var.save.save(var.image, out[f"{name}_{fam}{k}"])
    return out


def test_copies_of_a_drawing_on_white_pass_the_paper_check(drawings):
    """Captions, logos, watermarks, hue shifts, borders, tints, rescans and crops of clip-art on white change
    some tiles, never most: the paper check keeps them (the strict page look would drop the overlays)."""
    v = _verifier()
    copies = [k for k in drawings if "_" in k]
    assert len(copies) == 24
    for key in copies:
        original = drawings[key.split("_")[0]]
        assert v.is_page(original) and v.is_page(drawings[key])
        look = v.page_look(original, drawings[key])
        assert look is not None and not v.paper_refutes(look), (key, look)
        assert v.decide([original], [drawings[key]], np.array([True]), None, np.array([PAGE_MAYBE]),
                        np.array([False])) == [NOT_LOOKED], key  # above the band: the score's decision stands
        assert look.two_way < 3 and not v.slide_refutes(original, drawings[key]), (key, look)  # ink put on: one way
        # below the threshold in the band, the paper check does not stand in the way of the picture rules
        assert v.page_verdict(original, drawings[key], PAGE_MAYBE, False, True) is None, key
    overlays = [k for k in copies if "overlay" in k]
    assert any(v.page_refutes(v.page_look(drawings[k.split("_")[0]], drawings[k])) for k in overlays)


def test_different_pages_of_one_manual_fail_the_paper_check(pages):
    """Two pages of one manual do not align, or align on their layout with most inked tiles different: the
    paper check refutes them, as `dupes` does for two diagrams or slides on paper; a rescan passes."""
    if "other" not in pages:
        pytest.skip("a one-page manual")
    v = _verifier()
    look = v.page_look(pages["page"], pages["other"])
    assert look is not None and (look.inliers < 20 or look.failed >= 0.6 * look.tiles), look
    assert v.paper_refutes(look)
    assert v.decide([pages["page"]], [pages["other"]], np.array([True]), None, np.array([PAGE_MAYBE]),
                    np.array([True])) == [REFUTED]
    assert not v.paper_refutes(v.page_look(pages["page"], pages["rescan"]))


def test_pages_that_are_not_paper_get_the_paper_check_when_the_look_is_weak(pages):
    """Dense diagram pages or pages with shaded code boxes are not mostly blank paper, so the paper check did not
    see them, and the key point look, aligning two different pages on their layout and repeated glyphs, does not
    refute them. When that look correlates weakly (< ``page_weak_ncc``) they get the paper check too; a copy's
    look is strong and it keeps the picture rules. (Here no image counts as paper: ``page_paper`` out of reach.)"""
    if "other" not in pages:
        pytest.skip("a one-page manual")
    import dataclasses

    cfg = dataclasses.replace(resolve_preset("sscd-distilled").verify, enabled=True, page_paper=1.01)
    assert 0 < cfg.page_weak_ncc < 1
    v = Verifier(cfg, lambda key: str(key))
    page, other, rescan = pages["page"], pages["other"], pages["rescan"]
    assert not v.is_page(page) and not v.is_page(other)
    look = v.look(page, other)
    assert look is None or max(look.ncc, look.content_ncc) < cfg.page_weak_ncc, look
    assert v.page_verdict(page, other, PAGE_MAYBE, True, True) == REFUTED
    assert v.page_verdict(page, rescan, PAGE_MAYBE, True, True) is None  # a copy: the picture rules decide
    off = Verifier(dataclasses.replace(cfg, page_weak_ncc=0.0), lambda key: str(key))
    assert off.page_verdict(page, other, PAGE_MAYBE, True, True) is None


def test_a_plain_picture_like_the_reference_set_is_left_to_the_picture_rules(photo_arrays, tmp_path):
    """Flat vector art or a smooth wallpaper can look like the reference set (both images >= ``page_reference``)
    with a handful of key points: the page look, which needs ``page_min_inliers`` of them to agree, refuted every
    copy of it (a re-encode at raw cosine 1.0 included). Below ``page_min_points`` the picture rules decide; real
    pages keep the page look (the tests above)."""
    import dataclasses

    from PIL import ImageFilter

    cfg = resolve_preset("sscd-distilled").verify
    assert cfg.page_min_points > cfg.page_min_inliers
    plain = Image.fromarray(photo_arrays["coffee"]).convert("RGB").resize((1200, 800))
    plain = plain.filter(ImageFilter.GaussianBlur(16))  # a smooth picture: a few dozen key points at most
    a, b = tmp_path / "plain.png", tmp_path / "plain_copy.jpg"
    plain.save(a)
    plain.save(b, quality=85)
    v = Verifier(cfg, lambda key: str(key))
    assert len(v.features(a, page=True).points) < cfg.page_min_points
    assert v.page_verdict(a, b, PAGE_YES, True, False) is None  # the picture rules decide ...
    assert v.decide([a], [b], np.array([True]), None, np.array([PAGE_YES]), np.array([False])) == [NOT_LOOKED]
    off = Verifier(dataclasses.replace(cfg, page_min_points=0), lambda key: str(key))
    assert off.page_verdict(a, b, PAGE_YES, True, False) == REFUTED  # ... where the page look refuted the copy
    # below the threshold, in the band, a crop of it is rescued as a picture would be (the rescue limit for images
    # like the reference set keeps pages of one template apart; this is no page)
    crop = tmp_path / "plain_crop.jpg"
    plain.crop((150, 100, 1050, 700)).save(crop, quality=90)
    assert v.plain_pages(a, crop, PAGE_YES) and not v.plain_pages(a, crop, PAGE_MAYBE)
    below = dict(above=np.array([False]), rescuable=np.array([False]), pages=np.array([PAGE_YES]),
                 in_band=np.array([True]))
    assert list(v.decide([a], [crop], **below)) == [CONFIRMED]
    assert list(off.decide([a], [crop], **below)) == [UPHELD]  # the page look: no alignment, no rescue



def test_a_pair_with_a_page_like_image_is_kept_from_rescue():
    """The rescue limit keeps apart pages set from one template, which align pixel for pixel: a pair is kept from
    rescue below the threshold when either image looks like the reference set (the pages of one document straddle
    the limit; asking both to reach it let such pages pair up on the test split)."""
    from embeddr.normalize import Scorer
    from embeddr.verify import may_rescue

    preset = resolve_preset("sscd-distilled")
    scorer = Scorer.for_preset(preset)
    assert scorer.has_reference
    limit = preset.verify.rescue_max_reference
    page, picture = limit + 0.05, limit - 0.2
    ok = may_rescue(preset.verify, scorer, np.array([page, page, picture]), np.array([page, picture, picture]))
    assert ok.tolist() == [False, False, True]


def _dark_theme(path: Path, out: Path) -> Path:
    """The page as a slide of a dark theme: light text on a dark blue background."""
    from PIL import ImageOps

    grey = Image.open(path).convert("L")
    ImageOps.colorize(grey, black=(235, 235, 225), white=(22, 34, 70)).save(out)
    return out


def test_slides_of_a_dark_theme_one_build_step_apart_are_other_slides(pages, tmp_path):
    """The slide check: a real manual page set as a slide of a dark theme, and the same slide one build step on
    (one more line where the template is empty), are two slides: the page look aligns them and finds tiles inked in
    one and blank in the other, so the pair is refuted at any score. The slide's own copies (rescan, re-encode,
    crop, border, greyscale, tint) are not refuted by it. On white paper the same pair is left to the paper check,
    whose looser verdict keeps clip-art with a caption put on it."""
    from embeddr.verify import PAGE_FAINT

    v = _verifier()
    slide = _dark_theme(pages["page"], tmp_path / "slide.png")
    step = _dark_theme(pages["build"], tmp_path / "slide_step.png")
    assert not v.is_page(slide) and not v.is_page(step)
    look = v.page_look(slide, step)
    assert look is not None and look.bare >= 3, look
    assert v.slide_refutes(slide, step)
    assert v.page_verdict(slide, step, PAGE_FAINT, True, False) == REFUTED
    assert v.page_verdict(slide, step, PAGE_MAYBE, True, False) == REFUTED
    for fam in ("rescan", "reencode", "crop_mild", "border", "grey", "tint"):
        copy = _dark_theme(pages[fam], tmp_path / f"slide_{fam}.png")
        assert not v.slide_refutes(slide, copy), (fam, v.page_look(slide, copy))
        assert v.page_verdict(slide, copy, PAGE_FAINT, True, False) is None, fam  # the picture rules decide
    assert not v.slide_refutes(pages["page"], pages["build"])  # white paper: the paper check's
    off = Verifier(replace(resolve_preset("sscd-distilled").verify, slide_bare_tiles=0), lambda key: str(key))
    assert not off.slide_refutes(slide, step)


def test_drawings_on_white_with_ink_gone_and_added_are_other_drawings(pages):
    """On white paper, a slide and the next one (a line added where the page was empty and its last lines gone:
    tiles inked in one and blank in the other, each way) are two drawings, as a move on a board is (a piece
    leaves one square for another): the slide check refutes them at any score. Ink only added (a build step, a
    caption put on clip-art: the test above) stays the paper check's; the page's copies are never refuted."""
    v = _verifier()
    page, moved = pages["page"], pages["moved"]
    assert v.is_page(page) and v.is_page(moved)
    look = v.page_look(page, moved)
    assert look is not None and look.bare_a >= 3 and look.bare_b >= 3, look
    assert v.slide_refutes(page, moved)
    assert v.page_verdict(page, moved, PAGE_MAYBE, True, False) == REFUTED
    assert v.page_verdict(page, moved, PAGE_MAYBE, False, True) == REFUTED  # in the band below the threshold
    build = v.page_look(page, pages["build"])
    assert build.bare_b >= 3 and build.two_way == 0, build  # one way only
    assert not v.slide_refutes(page, pages["build"])
    for fam in ("rescan", "reencode", "crop_mild", "border", "grey", "tint"):
        assert not v.slide_refutes(page, pages[fam]), (fam, v.page_look(page, pages[fam]))
    one_way = Verifier(replace(resolve_preset("sscd-distilled").verify, slide_two_way=False), lambda key: str(key))
    assert not one_way.slide_refutes(page, moved)


def _themed(path: Path, out: Path) -> Path:
    """The page as a slide of a heavy theme: a gradient title bar, a footer bar and a dark background taking most
    of the slide, the page's top half small in the middle, light on dark."""
    from PIL import ImageOps

    body = ImageOps.colorize(Image.open(path).convert("L"), black=(235, 235, 225), white=(22, 34, 70))
    width, height = 1024, 768
    slide = Image.new("RGB", (width, height), (22, 34, 70))
    draw = ImageDraw.Draw(slide)
    for y in range(120):
        draw.line([(0, y), (width, y)], fill=(180 - y, 60, 40 + y))
    draw.rectangle((0, height - 60, width, height), fill=(120, 30, 40))
    w = width // 2
    body = body.resize((w, round(body.height * w / body.width)))
    slide.paste(body.crop((0, 0, w, min(body.height, height - 470))), ((width - w) // 2, 140))
    slide.save(out)
    return out


def test_slides_with_text_are_kept_below_the_threshold_by_the_key_point_look_alone(pages, tmp_path):
    """Two pages of a real manual set as slides of one heavy theme (a title bar, a footer, a dark background: the
    theme is most of each slide) are two slides. The looks made for plain pictures cannot read their text: the
    dense look at 128 px slides one onto the other at >= 0.97 and the detail agrees on the theme, so they kept
    the pair below the threshold (and the far look kept it far below the band) and overruled the key point look
    that refutes it above the threshold. Now a pair of images somewhat like the reference set (``PAGE_MAYBE``),
    not on white paper, both with the key points of text (``rescue_page_points``) is kept below the threshold
    only by the key point look (or the page look), gets no far look, and its refutation stands. The slide's own
    copies (rescan, re-encode, crop, border, greyscale, tint) are kept by the key point look. Images on white paper keep the
    picture rules (a caption put on clip-art is, tile by tile, a build step); pictures (``PAGE_NO``) and images
    only faintly like the reference set (``PAGE_FAINT``: smooth wallpapers) are not concerned."""
    v = _verifier()
    assert v.config.rescue_page_points > 0
    off = Verifier(replace(v.config, rescue_page_points=0), lambda key: str(key))
    if "other" not in pages:
        pytest.skip("a one-page manual")
    slide, other = _themed(pages["page"], tmp_path / "slide.png"), _themed(pages["other"], tmp_path / "other.png")
    copies = {}
    for fam in ("rescan", "reencode", "crop_mild", "border", "grey", "tint"):  # copies of the slide
        var = apply_family(fam, Image.open(slide).convert("RGB"), random.Random(f"slide:{fam}"))
        copies[fam] = tmp_path / f"slide_{fam}{var.save.ext}"
        var.save.save(var.image, copies[fam])

    def decided(verifier, b, kind=PAGE_MAYBE, above=False, far=False, a=slide):
        return verifier.decide([a], [b], np.array([above]), np.array([True]), np.array([kind]),
                               np.array([not far]), np.array([far]))[0]

    assert v.text_pages(slide, other, PAGE_MAYBE) and v.text_pages(slide, other, PAGE_YES)
    assert not v.text_pages(slide, other, PAGE_FAINT) and not v.text_pages(slide, other, PAGE_NO)
    assert v.dense(slide, other) >= v.config.dense_ncc and not v.confirms(v.look(slide, other))
    assert decided(off, other) == CONFIRMED and decided(v, other) == UPHELD  # below the threshold, in the band
    assert decided(off, other, far=True) == CONFIRMED and decided(v, other, far=True) == NOT_LOOKED
    assert decided(off, other, above=True) == UPHELD and decided(v, other, above=True) == REFUTED
    for fam, copy in copies.items():
        assert decided(v, copy) == CONFIRMED, (fam, v.look(slide, copy))
    for kind in (PAGE_FAINT, PAGE_NO):
        assert decided(v, other, kind) == decided(off, other, kind)
    assert not v.text_pages(pages["page"], pages["build"], PAGE_MAYBE)  # on white paper: the picture rules'
    assert decided(v, pages["build"], a=pages["page"]) == decided(off, pages["build"], a=pages["page"])


def test_two_slides_on_white_paper_get_no_far_look(pages, photo_arrays, tmp_path):
    """A pair listed far below the band for its raw cosine alone gets the far look (the dense look and the detail)
    unless both images are on white paper and somewhat like the reference set (slides, diagrams, pages): there
    the dense look slides one page's blank paper onto the other's, and it kept slides of other decks as copies.
    Pictures, and images on white paper not like the reference set (a product shot, clip-art), still get it."""
    v = _verifier()
    if "other" not in pages:
        pytest.skip("a one-page manual")
    page, other = pages["page"], pages["other"]
    assert v.is_page(page) and v.is_page(other)

    def far_look(kind):
        return v.decide([page], [other], np.array([False]), np.array([True]), np.array([kind]),
                        np.array([False]), np.array([True]))[0]

    for kind in (PAGE_MAYBE, PAGE_YES):
        assert not v.far_looks(page, other, kind) and far_look(kind) == NOT_LOOKED
    for kind in (PAGE_NO, PAGE_FAINT):  # on white paper, not like the reference set: the far look looks
        assert v.far_looks(page, other, kind) and far_look(kind) != NOT_LOOKED
    photos = []
    for name in ("coffee", "chelsea"):
        photos.append(tmp_path / f"{name}.png")
        Image.fromarray(photo_arrays[name]).save(photos[-1])
    assert v.far_looks(*photos)


def test_a_frame_line_is_not_changed_ink(photo_arrays, tmp_path):
    """A real photo in a plain border against its copy in a mat (a thin dark line around the picture, then a wide
    mat): the page look aligns them and the tiles along the picture's edge fail (one has the line, the other the
    plain border), enough of them that the changed-ink check counted them as other ink and refuted copies (a
    wallpaper's two border renditions, calibration split). Only tiles inside what both images show count now:
    none fail there."""
    from PIL import ImageOps

    v = _verifier()
    c = v.config
    for name in ("astronaut", "chelsea", "rocket"):
        img = Image.fromarray(photo_arrays[name]).convert("RGB")
        side = max(img.size)
        plain = ImageOps.expand(img, border=round(side * 0.03), fill=(245, 238, 220))
        matted = ImageOps.expand(ImageOps.expand(img, border=max(1, round(side * 0.004)), fill=(0, 0, 0)),
                                 border=round(side * 0.07), fill=(245, 238, 220))
        a, b = tmp_path / f"{name}_plain.png", tmp_path / f"{name}_mat.jpg"
        plain.save(a)
        matted.save(b, quality=90)
        look = v.page_look(a, b)
        assert look.inliers >= c.page_min_inliers and look.points >= c.changed_points, (name, look)
        assert look.failed - look.bare >= c.changed_tiles, (name, look)  # the edge's tiles
        assert look.changed < c.changed_tiles and 0 < look.shown < look.tiles, (name, look)
        assert not v.ink_changed(a, b), (name, look)


def test_the_paper_check_in_the_band_needs_an_alignment(monkeypatch):
    """Below the threshold, in the band, two images somewhat like pages on white paper that the page look aligns
    with most inked tiles different (two diagrams of one template) are not rescued (``page_paper_band``); a pair
    it cannot align (a photo on white with few key points) is left to the picture rules, which may keep it."""
    from embeddr.verify import PageLook

    v = _verifier()
    looks = {("a", "b"): PageLook(inliers=300, tiles=200, failed=150, points=1500),
             ("a", "c"): PageLook(inliers=8, tiles=0, points=90),
             ("a", "d"): PageLook(inliers=300, tiles=200, failed=20, points=1500)}
    monkeypatch.setattr(v, "page_look", lambda a, b: looks[(a, b)])
    monkeypatch.setattr(v, "is_page", lambda key: True)
    assert v.page_verdict("a", "b", PAGE_MAYBE, False, True) == REFUTED
    assert v.page_verdict("a", "c", PAGE_MAYBE, False, True) is None
    assert v.page_verdict("a", "d", PAGE_MAYBE, False, True) is None
    assert v.page_verdict("a", "c", PAGE_MAYBE, True, True) == REFUTED  # at or above the threshold: as before
    v.config = replace(v.config, page_paper_band=False, changed_share=0.0)  # (ink_changed: its own test)
    assert v.page_verdict("a", "b", PAGE_MAYBE, False, True) is None


def test_pages_whose_ink_differs_in_both_are_other_pages(pages, monkeypatch):
    """Two images somewhat like the reference set (slides, diagrams) that the page look aligns, each with the key
    points of text or line art, are other pages when many inked tiles hold ink in both that does not match
    (``changed_share``, ``changed_tiles``): another page of one template. Ink put where the page was blank (a
    caption, a build step: bare tiles) is not that; neither is a plain image. On a real page, captions, logos and
    watermarks put on it are not refuted this way, another page of its manual is."""
    from embeddr.verify import PageLook

    v = _verifier()
    c = v.config
    assert c.changed_share > 0 and c.changed_tiles > 0
    looks = {("a", "other"): PageLook(inliers=900, tiles=300, failed=120, points=1500, shown=300, changed=120),
             ("a", "added"): PageLook(inliers=900, tiles=300, failed=120, points=1500, bare_a=0, bare_b=110,
                                      shown=300, changed=10),
             ("a", "plain"): PageLook(inliers=900, tiles=300, failed=120, points=c.changed_points - 1, shown=300,
                                      changed=120),
             ("a", "few"): PageLook(inliers=900, tiles=300, failed=c.changed_tiles - 1, points=1500, shown=300,
                                    changed=c.changed_tiles - 1),
             ("a", "unaligned"): PageLook(inliers=5, tiles=300, failed=120, points=1500, shown=300, changed=120),
             # the failed tiles along a border (a frame line): not inside what both show
             ("a", "framed"): PageLook(inliers=900, tiles=300, failed=120, points=1500, shown=180, changed=5),
             # few tiles both show, most of them other: the share is of those
             ("a", "inner"): PageLook(inliers=900, tiles=300, failed=60, points=1500, shown=100, changed=40)}
    monkeypatch.setattr(v, "page_look", lambda a, b: looks[(a, b)])
    monkeypatch.setattr(v, "slide_refutes", lambda a, b: False)
    assert v.ink_changed("a", "other") and v.ink_changed("a", "inner")
    assert not any(v.ink_changed("a", k) for k in ("added", "plain", "few", "unaligned", "framed"))
    for kind in (PAGE_FAINT, PAGE_MAYBE):
        assert v.page_verdict("a", "other", kind, True, False) == REFUTED  # at or above the threshold
        assert v.page_verdict("a", "other", kind, False, True) == REFUTED  # in the band: not rescued
    assert v.page_verdict("a", "other", PAGE_NO, True, True) is None  # pictures: the picture rules
    monkeypatch.undo()
    real = _verifier()
    page = Image.open(pages["page"]).convert("RGB")
    for k in range(4):
        var = apply_family("overlay", page, random.Random(f"changed:{k}"))
        path = pages["page"].parent / f"page_overlay{k}{var.save.ext}"
        var.save.save(var.image, path)
        assert not real.ink_changed(pages["page"], path), (var, real.page_look(pages["page"], path))
    if "other" in pages:
        look = real.page_look(pages["page"], pages["other"])
        assert look.inliers < c.page_min_inliers or real.ink_changed(pages["page"], pages["other"]), look
