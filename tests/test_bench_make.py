"""Tests for the benchmark maker (embeddr.bench)."""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import random
import warnings
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from embeddr.bench import (
    DEFAULT_FAMILIES as FAMILIES,
    NaturalGroup,
    apply_family,
    make_benchmark,
    read_truth,
    split_groups,
    truth_pairs,
)
from embeddr.bench.make import pair_family

skdata = pytest.importorskip("skimage.data")

REPO = Path(__file__).resolve().parents[1]
REALIMAGES = REPO.parent / "shared" / "data" / "realimages"


def _small(arr: np.ndarray, long_side: int = 200) -> Image.Image:
    img = Image.fromarray(arr).convert("RGB")
    img.thumbnail((long_side, long_side), Image.LANCZOS)
    return img


@pytest.fixture(scope="module")
def src(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("src")
    (d / "sub").mkdir()
    _small(skdata.astronaut()).save(d / "astronaut.jpg", quality=90)
    _small(skdata.coffee()).save(d / "sub" / "coffee.png")
    _small(skdata.chelsea(), 180).save(d / "chelsea.jpg", quality=90)
    (d / "notes.txt").write_text("not an image")
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    return d


@pytest.fixture(scope="module")
def negs(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("negs")
    _small(skdata.rocket(), 160).save(d / "rocket.jpg", quality=90)
    return d


def _build(src: Path, out: Path, **kw) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return make_benchmark(src, out, **kw)


def _hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def bench(src, negs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bench") / "b"
    return _build(src, out, seed=7, per_image=len(FAMILIES), distractors=negs, doc_pages=3)


# --------------------------------------------------------------------------------------------------


def test_reproducible_and_seed_sensitive(src, negs, bench, tmp_path):
    again = _build(src, tmp_path / "again", seed=7, per_image=len(FAMILIES), distractors=negs, doc_pages=3)
    assert again.read_bytes() == bench.read_bytes()
    assert _hashes(again.parent) == _hashes(bench.parent)
    other = _build(src, tmp_path / "other", seed=8, per_image=len(FAMILIES), distractors=negs, doc_pages=3)
    assert _hashes(other.parent) != _hashes(bench.parent)


def test_rebuild_in_place_and_refuse_foreign_folder(src, tmp_path):
    out = tmp_path / "b"
    t1 = _build(src, out, per_image=2, doc_pages=1, limit=1)
    h1 = _hashes(out)
    (out / "derived" / "stale.jpg").write_bytes(b"x")
    t2 = _build(src, out, per_image=2, doc_pages=1, limit=1)
    assert t1 == t2 and _hashes(out) == h1  # stale file gone, same content
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        _build(src, foreign, per_image=1, doc_pages=0)
    assert (foreign / "keep.txt").read_text() == "mine"


def test_truth_format_groups_and_roles(bench, src):
    lines = bench.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "path,group,family,role"
    rows = read_truth(bench)
    assert all(r.path.is_absolute() and r.path.is_file() for r in rows)
    with open(bench, newline="") as f:
        assert all(not Path(r["path"]).is_absolute() for r in csv.DictReader(f))
    by_group = defaultdict(list)
    for r in rows:
        by_group[r.group].append(r)
    originals = [r for r in rows if r.role == "original"]
    # 3 readable images (broken.jpg and notes.txt skipped), copied byte for byte
    assert sorted(r.path.name for r in originals) == ["astronaut.jpg", "chelsea.jpg", "coffee.png"]
    for o in originals:
        rel = o.path.relative_to(bench.parent / "originals")
        assert o.path.read_bytes() == (src / rel).read_bytes()
        members = by_group[o.group]
        assert sum(m.role == "original" for m in members) == 1
        derived = [m for m in members if m.role == "derived"]
        assert sorted(m.family for m in derived) == sorted(FAMILIES)  # per_image == len(FAMILIES)
        assert all(m.path.relative_to(bench.parent / "derived" / m.family) for m in derived)
    for r in rows:
        if r.role == "distractor":
            assert len(by_group[r.group]) == 1
            assert r.family in ("distractor", "doc_page")
        else:
            assert r.role in ("original", "derived")
    fams = Counter(r.family for r in rows)
    assert fams["distractor"] == 1 and fams["doc_page"] == 3
    # positive pairs: all pairs within each group, none involving distractors
    pairs = truth_pairs(rows)
    n = 1 + len(FAMILIES)
    assert len(pairs) == 3 * n * (n - 1) // 2
    orig = originals[0]
    crop = next(r for r in by_group[orig.group] if r.family == "crop")
    combo = next(r for r in by_group[orig.group] if r.family == "combo")
    mirror = next(r for r in by_group[orig.group] if r.family == "mirror")
    assert pairs[frozenset((orig.path, crop.path))] == "crop"
    assert pairs[frozenset((crop.path, combo.path))] == "combo"
    assert pairs[frozenset((crop.path, mirror.path))] == "crop"  # alphabetically first
    assert pair_family(mirror, orig) == "mirror"


def test_every_family_gives_readable_sane_images(bench):
    rows = read_truth(bench)
    orig_size = {r.group: Image.open(r.path).size for r in rows if r.role == "original"}
    for r in rows:
        if r.role != "derived":
            continue
        with Image.open(r.path) as im:
            im.load()
            w, h = im.size
        ow, oh = orig_size[r.group]
        assert min(w, h) >= 32, (r.path, im.size)
        assert max(w, h) <= 1.6 * max(ow, oh), (r.path, im.size)
        if r.family == "thumbnail":
            assert max(w, h) < max(ow, oh) and max(w, h) <= 320
        if r.family == "crop":
            assert 0.5 * ow * oh <= w * h < ow * oh
        if r.family == "mirror":
            assert (w, h) == (ow, oh)
        assert r.path.suffix in (".jpg", ".webp", ".png")


def test_families_preserve_content():
    base = _small(skdata.astronaut(), 160)
    for name in FAMILIES:
        for i in range(6):
            var = apply_family(name, base, random.Random(f"t:{name}:{i}"))
            assert var.image.mode == "RGB" and min(var.image.size) >= 32, (name, var.desc)
            assert var.desc
    # mirror is an exact flip; reencode keeps the size; recolour keeps the geometry
    m = apply_family("mirror", base, random.Random(0)).image
    assert np.array_equal(np.asarray(m), np.asarray(ImageOps.mirror(base)))
    for i in range(5):
        v = apply_family("reencode", base, random.Random(i))
        assert v.image.size == base.size and v.save.format in ("JPEG", "WEBP", "PNG")
        r = apply_family("recolour", base, random.Random(i)).image
        assert r.size == base.size
        grey_r = np.asarray(r.convert("L"), dtype=np.float32)
        grey_o = np.asarray(base.convert("L"), dtype=np.float32)
        assert np.corrcoef(grey_r.ravel(), grey_o.ravel())[0, 1] > 0.8  # still the same picture
    with pytest.raises(KeyError):
        apply_family("nope", base, random.Random(0))


def test_doc_pages_present_and_distinct(bench):
    pages = [r for r in read_truth(bench) if r.family == "doc_page"]
    assert len(pages) == 3 and len({r.group for r in pages}) == 3
    arrs = [np.asarray(Image.open(r.path).convert("L"), dtype=np.float32) for r in pages]
    assert len({a.shape for a in arrs}) == 1  # same layout
    for a in arrs:
        assert 0.02 < (a < 128).mean() < 0.3  # mostly white with black text
    for i in range(len(arrs)):
        for j in range(i + 1, len(arrs)):
            assert np.abs(arrs[i] - arrs[j]).mean() > 2.0  # different text
            # identical header band
            assert np.array_equal(arrs[i][:60], arrs[j][:60])


def test_order_and_subset_independence(src, tmp_path):
    files = [src / "astronaut.jpg", src / "chelsea.jpg", src / "sub" / "coffee.png"]
    a = _build(src, tmp_path / "a", sources=files, per_image=3, doc_pages=0)
    b = _build(src, tmp_path / "b", sources=list(reversed(files)), per_image=3, doc_pages=0)
    assert a.read_bytes() == b.read_bytes()
    c = _build(src, tmp_path / "c", sources=files[1:2], per_image=3, doc_pages=0)
    hc, ha = _hashes(c.parent), _hashes(a.parent)
    shared = [k for k in hc if k.startswith(("originals/", "derived/"))]
    assert shared and all(hc[k] == ha[k] for k in shared)
    # the folder listing gives the same relative names as explicit sources under src
    d = _build(src, tmp_path / "d", per_image=3, doc_pages=0)
    assert d.read_bytes() == a.read_bytes()


def test_explicit_lists_distractors_and_natural_groups(src, negs, tmp_path):
    files = [src / "astronaut.jpg", src / "chelsea.jpg"]
    nat_dir = tmp_path / "nat"
    nat_dir.mkdir()
    _small(skdata.astronaut(), 120).save(nat_dir / "astronaut_small.jpg", quality=80)
    _small(skdata.coffee(), 150).save(nat_dir / "coffee_a.jpg")
    ImageOps.mirror(_small(skdata.coffee(), 150)).save(nat_dir / "coffee_mirror.jpg")
    truth = _build(
        None,
        tmp_path / "b",
        sources=files,
        distractor_files=[negs / "rocket.jpg", src / "chelsea.jpg", negs / "rocket.jpg"],
        natural_groups=[
            NaturalGroup("astro", (src / "astronaut.jpg", nat_dir / "astronaut_small.jpg")),
            NaturalGroup("cof", (nat_dir / "coffee_mirror.jpg", nat_dir / "coffee_a.jpg"), "natural_mirror",
                         nat_dir / "coffee_a.jpg"),
        ],
        per_image=1,
        doc_pages=2,
        families=["crop"],
    )
    rows = read_truth(truth)
    roles = Counter((r.role, r.family) for r in rows)
    assert roles == Counter({
        ("original", "original"): 3,  # 2 sources + coffee_a
        ("derived", "crop"): 2,
        ("derived", "natural"): 1,
        ("derived", "natural_mirror"): 1,
        ("distractor", "distractor"): 1,  # rocket once; chelsea is a source, not a distractor
        ("distractor", "doc_page"): 2,
    })
    astro = {r.group for r in rows if "astronaut" in r.path.name}
    assert len(astro) == 1  # the natural copy joined the source's group
    cof = [r for r in rows if r.group == "nat:cof"]
    assert {(r.path.name, r.role) for r in cof} == {("coffee_a.jpg", "original"), ("coffee_mirror.jpg", "derived")}


def test_unreadable_files_warn(src, tmp_path):
    with pytest.warns(UserWarning, match="broken.jpg"):
        make_benchmark(src, tmp_path / "b", per_image=1, doc_pages=0, families=["mirror"])
    with pytest.raises(ValueError):
        make_benchmark(src, tmp_path / "c", families=["nope"])


def test_split_groups_deterministic_and_disjoint():
    keys = [f"images/x/img{i:04d}.jpg" for i in range(2000)]
    cal, hold = split_groups(keys)
    assert cal.isdisjoint(hold) and cal | hold == set(keys)
    assert 0.45 < len(hold) / len(keys) < 0.55
    assert split_groups(reversed(keys)) == (cal, hold)
    # a key's side depends only on the key
    cal2, hold2 = split_groups(keys[:100])
    assert hold2 == hold & set(keys[:100])
    cal3, hold3 = split_groups(keys, fraction_holdout=0.2)
    assert hold3 <= hold and 0.15 < len(hold3) / len(keys) < 0.25
    assert split_groups(keys, salt="other") != (cal, hold)
    assert split_groups(keys, fraction_holdout=0.0) == (set(keys), set())


@pytest.mark.realdata
@pytest.mark.skipif(not (REALIMAGES / "manifest.csv").exists(), reason="needs ../shared/data/realimages")
def test_realimages_split_plan_is_disjoint():
    spec = importlib.util.spec_from_file_location("mrb", REPO / "scripts" / "make_realimages_bench.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rows = mod.read_manifest(REALIMAGES)
    plans = {s: mod.plan_split(rows, s, natural=True) for s in ("calib", "holdout")}

    def files(plan):
        srcs, dis, nat = plan
        return set(srcs) | set(dis) | {p for _, _, ps, _ in nat for p in ps}

    docs = {r["path"] for r in rows if r["set"] == "docs"}
    assert files(plans["calib"]) & files(plans["holdout"]) == docs
    distinct = {r["path"] for r in rows if r["set"] == "distinct"}
    assert set(plans["calib"][0]) | set(plans["holdout"][0]) == distinct
    for s in plans:
        assert not set(plans[s][1]) & distinct
    nat_names = {n for s in plans for n, _, _, _ in plans[s][2]}
    assert len(nat_names) == 9 and not any("video" in n or "stereo" in n for n in nat_names)
