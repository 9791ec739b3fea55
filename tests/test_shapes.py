"""The default decision on collection shapes it was not tuned on: many renditions of one picture, pages of many
short real documents, blank pages, look-alike crowds; grouping on the score in use; the shape generator."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import real_pdfs as _pdfs, render_pdf as _render, save_photo
from embeddr.bench.shapes import RENDITION_SCHEDULE, PoolRow, Shape, sample
from embeddr.bench.transforms import apply_family
from embeddr.catalog import Catalog, FileRecord
from embeddr.dupes import find_duplicates
from embeddr.encoders import resolve_preset
from embeddr.jobs import scan
from embeddr.normalize import Scorer, is_blank

def _dupes(folder: Path, db: Path):
    scan([folder], db=db, workers=0)
    with Catalog(db) as catalog:
        return find_duplicates(catalog, resolve_preset("sscd-distilled"))


def test_a_picture_in_15_renditions_among_other_photos_is_found_whole(photo_arrays, tmp_path):
    """15 renditions (mild and strong crops, hue, greyscale, tint, rescan, thumbnail, overlay, border, combo,
    mirror, re-encode...) of one photo among other real photos: one group, exactly the 16 files."""
    folder = tmp_path / "photos"
    for name, arr in photo_arrays.items():
        save_photo(arr, folder / f"{name}.jpg")
    original = Image.open(folder / "chelsea.jpg").convert("RGB")
    mine = {str(folder / "chelsea.jpg")}
    for k, fam in enumerate(RENDITION_SCHEDULE[:15], start=1):
        var = apply_family(fam, original, random.Random(f"15:{k}:{fam}"))
        path = folder / "renditions" / f"chelsea_{k:02d}_{fam}{var.save.ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        var.save.save(var.image, path)
        mine.add(str(path))
    report = _dupes(folder, tmp_path / "r.db")
    groups = [{m.path for m in g.members} for g in report.groups]
    assert mine in groups, [sorted(Path(p).name for p in g) for g in groups]
    assert all(g == mine or not (g & mine) for g in groups)
    assert not any(len(g) > 1 and not (g & mine) for g in groups), "a pair between two different photos"


@pytest.fixture(scope="module")
def real_documents(photo_arrays, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("documents")
    folder = tmp_path / "collection"
    pages = [p for pdf in _pdfs() for p in _render(pdf, folder / "docs")]
    assert len({p.parent for p in pages}) >= 5 and len(pages) >= 40
    for name, arr in photo_arrays.items():
        save_photo(arr, folder / "photos" / f"{name}.jpg")
    crop = Image.open(folder / "photos" / "astronaut.jpg")
    crop.crop((20, 10, crop.width - 30, crop.height - 40)).save(folder / "photos" / "astronaut_crop.jpg", quality=90)
    report = _dupes(folder, tmp_path / "d.db")
    page_pairs = [(Path(p.a).parent.name + "/" + Path(p.a).name, Path(p.b).parent.name + "/" + Path(p.b).name,
                   round(p.score, 3)) for p in report.pairs if "/docs/" in p.a or "/docs/" in p.b]
    return report, page_pairs


def test_pages_of_different_real_documents_are_not_paired_and_copies_are(real_documents):
    """Every page of several short real manuals (2-16 pages each; symbol tables, text, blank pages) beside
    real photos and a cropped copy: no page is paired with a page of another document or with a photo;
    the copy is found."""
    report, page_pairs = real_documents
    assert [p for p in page_pairs if p[0].split("/")[0] != p[1].split("/")[0]] == []
    assert any(p.b.endswith("astronaut_crop.jpg") or p.a.endswith("astronaut_crop.jpg") for p in report.pairs)


@pytest.mark.xfail(strict=True, reason="known limit (docs/benchmarks.md), measured 2026-11-29 with the page look: "
                   "testeuro pages 4 and 5 set the same article in two euro-sign fonts (only the page number and the "
                   "euro glyphs differ); the page look finds every inked tile the same (worst 0.889 >= 0.85) and "
                   "keeps the pair at 0.565. (Before the page look: marvosym-doc pages 4 and 6 at 0.577)")
def test_pages_of_many_short_real_documents_are_not_paired(real_documents):
    """The same collection: no two pages of one document are paired either."""
    assert real_documents[1] == []


def test_blank_pages_are_only_exact_copies(tmp_path, photo_arrays):
    """Two blank pages (a page number on white) of two documents look identical to any model: never near
    duplicates; a byte copy of one is still an exact duplicate."""
    folder = tmp_path / "pages"
    folder.mkdir()
    from PIL import ImageDraw

    for i, (w, h) in enumerate([(850, 1100), (800, 1130)]):
        img = Image.new("RGB", (w, h), "white")
        ImageDraw.Draw(img).text((w // 2, h - 40), str(i + 12), fill="black")
        img.save(folder / f"blank_{i}.png")
    (folder / "blank_0_copy.png").write_bytes((folder / "blank_0.png").read_bytes())
    save_photo(photo_arrays["coffee"], folder / "coffee.jpg")
    report = _dupes(folder, tmp_path / "b.db")
    assert [(Path(p.a).name, Path(p.b).name, p.kind) for p in report.pairs] == [("blank_0.png", "blank_0_copy.png", "exact")]
    with Catalog(tmp_path / "b.db") as catalog:
        rows = {Path(r.path).name: r for r in catalog.files("ok")}
    assert is_blank(rows["blank_1.png"].width, rows["blank_1.png"].height, rows["blank_1.png"].content_width,
                    rows["blank_1.png"].content_height)
    assert not is_blank(rows["coffee.jpg"].width, rows["coffee.jpg"].height, rows["coffee.jpg"].content_width,
                        rows["coffee.jpg"].content_height)


def test_a_very_dark_picture_with_a_bright_speck_is_not_blank(tmp_path, photo_arrays):
    """A night picture whose shading stays within a few levels of its corners' colour and whose only bright part is
    a small speck has no uniform border: it is all content, not a blank page, so its copies are matched as near
    duplicates (the blank rule had kept a dark wallpaper's crops apart from it). The CPU and GPU decoders measure
    the same."""
    import torch

    from embeddr.decode import load_image
    from embeddr.gpu_decode import content_box

    grey = np.asarray(Image.fromarray(photo_arrays["astronaut"]).convert("L").resize((640, 480)), np.float32)
    night = np.stack([grey * 0.07, grey * 0.07, grey * 0.07 + 6], axis=-1)  # shading 0-18 levels deep
    night[200:204, 300:304] = 255  # a star
    Image.fromarray(night.round().astype(np.uint8)).save(tmp_path / "night.jpg", quality=92)
    page = Image.new("RGB", (640, 480), (255, 255, 255))
    page.paste((0, 0, 0), (310, 440, 322, 452))  # a page number
    page.save(tmp_path / "page.jpg", quality=92)
    rgb, meta = load_image(str(tmp_path / "night.jpg"))
    assert meta.content_width is None and not is_blank(meta.width, meta.height, meta.content_width, meta.content_height)
    assert content_box(torch.from_numpy(np.array(rgb)).permute(2, 0, 1).contiguous()) is None
    rgb, meta = load_image(str(tmp_path / "page.jpg"))
    assert is_blank(meta.width, meta.height, meta.content_width, meta.content_height), meta
    box = content_box(torch.from_numpy(np.array(rgb)).permute(2, 0, 1).contiguous())
    assert box is not None and abs(box[0] - meta.content_width) <= 2 and abs(box[1] - meta.content_height) <= 2


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def test_chain_with_a_weak_link_under_the_normalised_score_does_not_join(tmp_path):
    """A~B and B~C pass the normalised threshold; A-C is 0.65 raw cosine (above the grouping floor) but
    below the floor once normalised (C sits in a crowd). Grouping uses the normalised score, so A and C
    are not joined, and each group's min_score is its true weakest link."""
    preset = resolve_preset("sscd-distilled")
    t, margin = preset.threshold.value, preset.threshold.group_margin
    rng = np.random.default_rng(0)
    basis, _ = np.linalg.qr(rng.normal(size=(preset.dim, preset.dim)))
    gram = np.array([[1.0, 0.9, 0.65], [0.9, 1.0, 0.9], [0.65, 0.9, 1.0]])
    abc = np.linalg.cholesky(gram) @ basis[:3]  # rows: unit vectors with these cosines
    crowd = _unit(0.5 * abc[2] + np.sqrt(1 - 0.5 ** 2) * basis[10:10 + 40])  # 40 look-alikes of C at 0.5
    vecs = _unit(np.vstack([abc, crowd]))
    names = ["A", "B", "C"] + [f"crowd{i:02d}" for i in range(40)]
    db = tmp_path / "chain.db"
    with Catalog(db) as catalog:
        catalog.bind_model(preset.name, preset.dim)
        run = catalog.begin_run(preset.name, [str(tmp_path)])
        records = [FileRecord(str(tmp_path / f"{n}.jpg"), 1000, 0, f"h{n}", 100, 100, "JPEG") for n in names]
        catalog.record_batch(records, {f"h{n}": v for n, v in zip(names, vecs)}, run, preset.name)
        catalog.finish_run(run, "done", {})
        report = find_duplicates(catalog, preset)
    scorer = Scorer.for_preset(preset)
    score = {frozenset((Path(p.a).stem, Path(p.b).stem)): p.score for p in report.pairs}
    assert score[frozenset("AB")] >= t and score[frozenset("BC")] >= t
    assert frozenset("AC") not in score
    # A-C: raw 0.65 >= the floor, but normalised (C's crowd) it is below it
    assert 0.65 >= t - margin and scorer.normalized
    groups = [sorted(Path(m.path).stem for m in g.members) for g in report.groups]
    assert not any({"A", "C"} <= set(g) for g in groups), groups
    for g in report.groups:  # min_score is the weakest link among the members, on the listed score
        members = [Path(m.path).stem for m in g.members]
        inner = [score.get(frozenset((x, y))) for i, x in enumerate(members) for y in members[i + 1:]]
        assert g.min_score == pytest.approx(min(inner), abs=1e-5)


def test_identical_files_cost_one_node(tmp_path, photo_arrays):
    """2,000 byte-identical files are one content: one group, pairs expanded only when read."""
    folder = tmp_path / "same"
    src = save_photo(photo_arrays["rocket"], folder / "rocket.jpg")
    data = src.read_bytes()
    for i in range(299):
        (folder / f"copy_{i:04d}.jpg").write_bytes(data)
    report = _dupes(folder, tmp_path / "s.db")
    assert len(report.groups) == 1 and len(report.groups[0].members) == 300
    assert report.groups[0].min_score == 1.0
    assert len(report.pairs) == 300 * 299 // 2
    assert all(p.kind == "exact" for p in report.pairs)


def test_shapes_sample_renditions_docs_and_crowds():
    pool = []
    for p in range(6):
        unit = f"img:p{p}"
        pool += [PoolRow(Path(f"/pool/p{p}/r{k:02d}.jpg"), "calib", "picture", unit, unit,
                         "original" if k == 0 else RENDITION_SCHEDULE[k - 1], k) for k in range(31)]
    for d, n in enumerate([2, 5, 40]):
        pool += [PoolRow(Path(f"/pool/d{d}/p{i}.jpg"), "calib", "doc", f"doc:d{d}", "", "doc_page") for i in range(n)]
    pool += [PoolRow(Path(f"/stars/s{i}.jpg"), "calib", "crowd", "crowd:stars", "", "crowd") for i in range(9)]
    pool.append(PoolRow(Path("/other/x.jpg"), "test", "picture", "img:x", "img:x", "original"))
    pool += [PoolRow(Path(f"/wall/w{i}.png"), "calib", "picture", f"img:wallpapers/w{i}", f"img:wallpapers/w{i}",
                     "original") for i in range(3)]
    rows = sample(pool, Shape("s", renditions=13, pictures=4, docs=2, doc_pages=(2, 8), crowds={"stars": 5}), "calib")
    by_unit: dict[str, int] = {}
    for r in rows:
        by_unit[r.unit] = by_unit.get(r.unit, 0) + 1
    assert sorted(v for k, v in by_unit.items() if k.startswith("img:")) == [14, 14, 14, 14]
    assert by_unit["doc:d0"] == 2 and by_unit["doc:d1"] == 5 and "doc:d2" not in by_unit
    assert by_unit["crowd:stars"] == 5 and "img:x" not in by_unit
    assert not any(k.startswith("img:wallpapers/") for k in by_unit)  # an opt-in set: only when a shape names it
    walls = sample(pool, Shape("w", renditions=4, picture_sets=("wallpapers",)), "calib")
    assert {r.unit for r in walls} == {f"img:wallpapers/w{i}" for i in range(3)}
    assert sample(pool, Shape("s", renditions=13, pictures=4, docs=2, doc_pages=(2, 8), crowds={"stars": 5}), "calib") == rows
    varied = sample(pool, Shape("v", renditions=(1, 30)), "calib")
    sizes = {}
    for r in varied:
        sizes[r.unit] = sizes.get(r.unit, 0) + 1
    assert all(2 <= n <= 31 for n in sizes.values()) and len(set(sizes.values())) > 1
    # every family appears within a picture's first 13 renditions
    assert {"crop_mild", "crop_strong", "hue", "grey", "tint", "rescan", "thumbnail", "overlay", "border", "combo",
            "mirror", "reencode", "recolour"} == set(RENDITION_SCHEDULE[:13])


def test_pool_documents_slide_decks_and_documents_that_share_a_name(tmp_path):
    """The pool builder's documents: with ``select="slides"`` only decks whose first page is landscape are used;
    two PDFs with one file name in two folders (two themes' ``demo.pdf``) stay two documents with their own
    pages, not one folder whose second set of pages is skipped."""
    pytest.importorskip("pypdfium2")
    import csv

    from embeddr.bench.shapes import build_pool

    src = tmp_path / "pdfs"
    for folder, size, shade in [("theme-a", (800, 600), 40), ("theme-b", (800, 600), 200), ("manual", (600, 800), 90)]:
        (src / folder).mkdir(parents=True)
        pages = [Image.new("RGB", size, (shade, 255 - shade, i * 60)) for i in range(3)]
        pages[0].save(src / folder / "demo.pdf", save_all=True, append_images=pages[1:])
    out = tmp_path / "pool"
    for select, want in [(("slides",), {"demo", "theme-b-demo"}), ((), {"demo", "theme-a-demo", "theme-b-demo"})]:
        pool = build_pool(out / (select[0] if select else "any"), doc_sets=[("set", "calib", src, *select)])
        with open(pool, newline="", encoding="utf-8") as f:
            rows = [r for r in csv.DictReader(f) if r["kind"] == "doc"]
        units = {}
        for r in rows:
            units.setdefault(r["unit"].split("/", 1)[1], []).append(r["path"])
        assert set(units) == want
        assert all(len(ps) == 3 == len(set(ps)) for ps in units.values())
        firsts = {n: np.asarray(Image.open(ps[0]).convert("RGB"))[5, 5] for n, ps in units.items()}
        assert len({tuple(v) for v in firsts.values()}) == len(want)  # each document's own pages


def test_benchmark_sources_keep_apart():
    """The reference set (scripts/build_reference.py) shares no package with the quality benchmark's pool
    (scripts/build_pool.py), whose documents it would otherwise flatter, and neither uses a source of the
    independent held-out benchmark."""
    import importlib.util

    scripts = Path(__file__).resolve().parents[1] / "scripts"

    def load(name):
        spec = importlib.util.spec_from_file_location(name, scripts / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    pool, reference = load("build_pool"), load("build_reference")
    pool_sources = set(pool.DOC_PACKAGES) | set(pool.WALLPAPERS)
    assert not pool_sources & set(reference.PACKAGES)
    assert not [p for p in pool_sources | set(reference.PACKAGES) if p.startswith(pool.HELD_OUT_SOURCES)]
