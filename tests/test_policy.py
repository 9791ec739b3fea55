"""Retention policy and savings: rules, ties, keep-in, TOML, determinism (no model needed)."""

from __future__ import annotations

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
