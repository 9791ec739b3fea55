"""The HTML review report, reviewer verdicts and the report/verdicts commands, on real photos."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, save_photo, skip_unless
from embeddr import api
from embeddr.catalog import Catalog, FileRow
from embeddr.cli import app
from embeddr.dupes import DuplicateReport, Group, Pair
from embeddr.errors import ReviewError
from embeddr.jobs import review
from embeddr.review import (import_verdicts, list_verdicts, read_verdicts, script_json, verdict_pairs, write_html_report,
                            write_html_report_details)

# A path that holds a whole script tag: "/" cannot be in a file name, so the tag spans a folder
# ("<script>x<") and a file ("script>&\"'.jpg"); the top-level folder name is hostile too.
EVIL_DIR = 'odd <i>&"\''
EVIL_NAME = '<script>x</script>&"\'.jpg'
IMG_NAME = "<img src=x onerror=alert(1)>.jpg"
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")


def _pages(out: Path) -> list[list[dict]]:
    data = []
    for page in sorted((out / "pages").glob("*.js")):
        text = page.read_text(encoding="utf-8")
        m = re.fullmatch(r"window\.EMBEDDR\.page\((\d+),(.*)\);\n", text, re.S)
        assert m, page
        data.append(json.loads(m.group(2)))
    return data


@pytest.fixture(scope="module")
def library(tmp_path_factory, photo_arrays) -> Path:
    """Originals in a/, derived copies (PNG, smaller JPEG) in b/, hostile names in a third folder; scanned."""
    root = tmp_path_factory.mktemp("review")
    photos = root / "photos"
    for name in PHOTOS:
        save_photo(photo_arrays[name], photos / "a" / f"{name}.jpg")
        save_photo(photo_arrays[name], photos / "b" / f"{name}.png")
        save_photo(photo_arrays[name], photos / "b" / f"{name}_small.jpg", long_side=200)
    save_photo(photo_arrays["coins"], photos / EVIL_DIR / EVIL_NAME)
    save_photo(photo_arrays["coins"], photos / "b" / IMG_NAME, long_side=256)
    save_photo(photo_arrays["moon"], photos / "a" / "moon.jpg")  # no duplicate
    db = root / "lib.db"
    api.scan([photos], db=db, model="sscd-distilled", workers=0)
    return db


@pytest.fixture
def db(library, tmp_path) -> Path:
    """A private copy of the scanned catalog (tests store verdicts in it)."""
    for f in library.parent.glob(library.name + "*"):
        if f.is_dir():  # the search structure beside the catalog (DB.search/)
            shutil.copytree(f, tmp_path / f.name)
        else:
            shutil.copy2(f, tmp_path / f.name)
    return tmp_path / library.name


def test_report_on_real_photos(library, tmp_path):
    out = tmp_path / "rep"
    result = review(library, html_dir=out, page_size=2, thumb_size=128)
    groups = result.report.groups
    assert len(groups) == len(PHOTOS) + 1
    assert result.html.groups == len(groups) and result.html.pages == 3 and result.html.thumbnail_errors == 0
    members = [m for g in groups for m in g.members]
    thumbs = sorted((out / "thumbs").glob("*.jpg"))
    assert len(thumbs) == result.html.thumbnails == len({m.hash for m in members})
    for t in thumbs:
        with Image.open(t) as im:
            assert im.format == "JPEG" and max(im.size) <= 128

    pages = _pages(out)
    flat = [g for page in pages for g in page]
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [g["min_score"] for g in flat] == sorted(g["min_score"] for g in flat)  # most borderline first
    decision = {d.group_id: d for d in result.decisions}
    for g in flat:
        canonical = [m for m in g["members"] if m["role"] == "canonical"]
        assert len(canonical) == 1 and canonical[0]["path"] == decision[g["id"]].canonical.path
        assert g["members"][0]["role"] == "canonical" and g["reason"] == decision[g["id"]].reason
        for m in g["members"]:
            assert (out / m["thumb"]).is_file() and m["width"] and m["format"] in ("JPEG", "PNG")
            assert m["score"] is None if m["role"] == "canonical" else 0 < m["score"] <= 1
    astronaut = next(g for g in flat if any(m["path"].endswith("astronaut.png") for m in g["members"]))
    assert astronaut["members"][0]["path"].endswith("astronaut.png")  # most pixels, then lossless

    index = (out / "index.html").read_text(encoding="utf-8")
    assert "http://" not in index and "https://" not in index and "<link" not in index
    assert "Content-Security-Policy" in index and "sscd-distilled" in index
    overall = result.savings["overall"]
    assert overall["duplicate_files"] == sum(len(d.duplicates) for d in result.decisions) > 0
    assert f"{overall['duplication_rate'] * 100:.1f}%" in index
    assert {f["folder"] for f in result.savings["folders"]} == {"a", "b", EVIL_DIR}


def test_names_and_paths_are_escaped(library, tmp_path):
    out = tmp_path / "rep"
    review(library, html_dir=out)
    index = (out / "index.html").read_text(encoding="utf-8")
    pages = "".join(p.read_text(encoding="utf-8") for p in (out / "pages").glob("*.js"))
    for text in (index, pages):
        assert "<script>x" not in text and "</script>&" not in text and "<img src=x" not in text and "<i>" not in text
    assert "odd &lt;i&gt;&amp;&quot;&#x27;" in index  # the savings table's folder label, escaped
    assert index.count("<script") == 2  # the metadata block and the viewer, nothing from the data
    paths = {m["path"] for page in _pages(out) for g in page for m in g["members"]}
    assert any(p.endswith("/" + EVIL_DIR + "/" + EVIL_NAME) for p in paths)  # the data survives intact
    assert any(p.endswith("/" + IMG_NAME) for p in paths)
    js = (REPO / "embeddr" / "templates" / "report.js").read_text(encoding="utf-8")
    assert "innerHTML" not in js and "outerHTML" not in js and "insertAdjacentHTML" not in js and "eval(" not in js


def test_script_json_cannot_close_the_script():
    text = script_json({"p": "</script><!-- & \u2028"})
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == {"p": "</script><!-- & \u2028"}


def test_large_report_stays_paged(tmp_path):
    """3000 synthetic groups: index.html stays small, groups go to page files in borderline order."""
    rng = np.random.default_rng(0)
    groups, n = [], 3000
    for i in range(n):
        rows = [FileRow(id=2 * i + k, path=f"/nowhere/f{k}/img{i:05d}.jpg", size=1000 + k, mtime_ns=0, hash=f"{i:08x}{k}",
                        width=640, height=480, format="JPEG", status="ok", error=None) for k in range(2)]
        s = float(rng.uniform(0.6, 1.0))
        groups.append(Group(i + 1, rows, s, s))
    pairs = [Pair(g.members[0].path, g.members[1].path, g.min_score, "near") for g in groups]
    report = DuplicateReport(model="sscd-distilled", threshold=0.6, score="raw", groups=groups, pairs=pairs, files=2 * n)
    out = tmp_path / "big"
    details = write_html_report_details(report, None, None, out, page_size=100, workers=1)
    assert details.pages == 30 and details.thumbnails == 0 and details.thumbnail_errors == 2 * n
    assert (out / "index.html").stat().st_size < 40_000
    assert max(p.stat().st_size for p in (out / "pages").glob("*.js")) < 200_000
    pages = _pages(out)
    scores = [g["min_score"] for page in pages for g in page]
    assert len(scores) == n and scores == sorted(scores)
    assert all(m["thumb"] is None and m["thumb_error"] for m in pages[0][0]["members"])
    # a smaller report written into the same folder drops the stale pages
    small = DuplicateReport(model="m", threshold=0.6, score="raw", groups=groups[:3], pairs=pairs[:3], files=6)
    assert write_html_report(small, None, None, out, page_size=100) == out / "index.html"
    assert len(list((out / "pages").glob("*.js"))) == 1


def _verdicts_file(path: Path, pairs) -> Path:
    path.write_text(json.dumps({"db": "x.db", "model": "sscd-distilled",
                                "verdicts": [{"a": a, "b": b, "verdict": "not_duplicate"} for a, b in sorted(pairs)]}))
    return path


def test_verdicts_round_trip_dupes_and_apply(db, tmp_path, runner):
    before = api.find_duplicates(db)
    rocket = next(g for g in before.groups if any(m.path.endswith("rocket.png") for m in g.members))
    coffee = next(g for g in before.groups if any(m.path.endswith("coffee.png") for m in g.members))
    small = next(m.path for m in coffee.members if m.path.endswith("coffee_small.jpg"))
    pairs = verdict_pairs([m.path for m in rocket.members], whole=True)
    pairs |= verdict_pairs([m.path for m in coffee.members], [small])
    assert len(pairs) == 3 + 2
    vfile = _verdicts_file(tmp_path / "verdicts.json", pairs)

    res = runner.invoke(app, ["verdicts", "import", str(vfile), "--db", str(db)])
    assert res.exit_code == 0, res.output
    assert "imported 5 new not-duplicate pair(s)" in res.output
    again = import_verdicts(db, vfile)  # importing again is harmless, and says so
    assert (again.new, again.already) == (0, 5)
    res = runner.invoke(app, ["verdicts", "import", str(vfile), "--db", str(db)])
    assert "imported 0 new not-duplicate pair(s)" in res.output and "(5 already present)" in res.output
    with Catalog(db) as cat:
        assert cat.not_duplicate_pairs() == pairs
    listed = list_verdicts(db)
    assert len(listed) == 5 and all(v["source"].startswith("file:") for v in listed)
    res = runner.invoke(app, ["verdicts", "list", "--db", str(db), "--json"])
    assert res.exit_code == 0 and len(json.loads(res.stdout)) == 5

    after = api.find_duplicates(db)
    grouped = [{m.path for m in g.members} for g in after.groups]
    assert not any(s & {m.path for m in rocket.members} for s in grouped)  # whole group rejected
    assert any(s == {m.path for m in coffee.members} - {small} for s in grouped)  # the rest still a group
    assert not any(small in s for s in grouped)
    assert not ({(p.a, p.b) for p in after.pairs} & pairs)

    plan = api.apply_duplicates(db, action="move", quarantine=tmp_path / "q", yes=False)  # dry run
    touched = {o.step.path for o in plan.outcomes}
    assert touched and not (touched & ({m.path for m in rocket.members} | {small}))


def test_selftest_style_export_matches_python_rule():
    paths = ["/p/c.jpg", "/p/a.jpg", "/p/b.jpg"]
    assert verdict_pairs(paths, whole=True) == {("/p/a.jpg", "/p/b.jpg"), ("/p/a.jpg", "/p/c.jpg"), ("/p/b.jpg", "/p/c.jpg")}
    assert verdict_pairs(paths, ["/p/b.jpg"]) == {("/p/a.jpg", "/p/b.jpg"), ("/p/b.jpg", "/p/c.jpg")}


@pytest.mark.parametrize("content, problem", [
    ("{not json", "not JSON"),
    ('["a"]', 'a "verdicts" list'),
    ('{"verdicts": [{"a": "/x", "b": "/y"}]}', "verdicts[0] lacks verdict"),
    ('{"verdicts": [{"a": "/x", "b": "/y", "verdict": "duplicate"}]}', "is not one of not_duplicate"),
    ('{"verdicts": [{"a": "/x", "b": "/x", "verdict": "not_duplicate"}]}', "the same file"),
    ('{"verdicts": [{"a": "/x", "b": "/y", "verdict": "not_duplicate"}, 3]}', "verdicts[1] is not an object"),
])
def test_bad_verdicts_files_are_refused_whole(db, tmp_path, content, problem, runner):
    bad = tmp_path / "bad verdicts.json"
    bad.write_text(content)
    with pytest.raises(ReviewError) as err:
        import_verdicts(db, bad)
    assert str(bad) in str(err.value) and problem in str(err.value)
    with Catalog(db) as cat:
        assert cat.not_duplicate_pairs() == set()  # nothing stored from an invalid file
    res = runner.invoke(app, ["verdicts", "import", str(bad), "--db", str(db)])
    assert res.exit_code == 2 and "error:" in res.output
    with pytest.raises(ReviewError, match="no such verdicts file"):
        read_verdicts(tmp_path / "missing.json")


def test_cli_report_json_and_html(db, tmp_path, runner):
    res = runner.invoke(app, ["report", "--db", str(db), "--format", "json", "--html", str(tmp_path / "html"),
                              "--price-per-gb", "2.5", "--currency", "EUR", "--page-size", "3"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["savings"]["currency"] == "EUR" and data["savings"]["price_per_gb_month"] == 2.5
    assert len(data["decisions"]) == len(data["groups"]) > 0 and data["html"]["pages"] == 2
    assert (tmp_path / "html" / "index.html").is_file()
    protected_root = str(Path(data["decisions"][0]["duplicates"][0]).parent)
    res = runner.invoke(app, ["report", "--db", str(db), "--format", "json", "--keep-in", protected_root])
    assert res.exit_code == 0, res.output
    kept = json.loads(res.stdout)["decisions"]
    assert all(not d["duplicates"] or not any(p.startswith(protected_root + "/") for p in d["duplicates"]) for d in kept)
    res = runner.invoke(app, ["report", "--db", str(db)])
    assert res.exit_code == 0 and "overall" in res.stdout and "reclaimable" in res.stdout


def _checker():
    spec = importlib.util.spec_from_file_location("check_report_html", REPO / "scripts" / "check_report_html.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_report_renders_in_headless_chromium(db, tmp_path):
    checker = _checker()
    skip_unless(checker.find_chromium() is not None, "no Chromium binary (apt-get install chromium)")
    out = tmp_path / "rep"
    result = review(db, html_dir=out, page_size=3)
    shot = tmp_path / "shot.png"
    check = checker.check_report(out, screenshot=shot)
    assert check["console"] == [], check
    assert check["ok"], check
    total = sum(len(g.members) for g in borderline(result)[:3])
    assert check["thumbnails_loaded"] == check["thumbnails_total"] == total
    assert "page 2 has 2 groups" in check["check"]
    with Image.open(shot) as im:  # a real picture, not a blank page
        assert im.size == (1280, 1400) and np.asarray(im.convert("L")).std() > 20
    # the page's own export (group 1 whole, one copy of group 2) imports and is honoured
    exported = check["verdicts"]
    assert exported["model"] == "sscd-distilled" and exported["db"] == str(db.resolve())
    vfile = tmp_path / "verdicts.json"
    vfile.write_text(json.dumps(exported))
    first, second = borderline(result)[:2]
    expected = verdict_pairs([m.path for m in first.members], whole=True)
    other = next(m.path for m in second.members if m.path != result_decision(result, second.id).canonical.path)
    expected |= verdict_pairs([m.path for m in second.members], [other])
    assert {(v["a"], v["b"]) for v in exported["verdicts"]} == expected
    assert import_verdicts(db, vfile).new == len(expected)
    regrouped = [{m.path for m in g.members} for g in api.find_duplicates(db).groups]
    assert not any(s & {m.path for m in first.members} for s in regrouped)


def borderline(result):
    return sorted(result.report.groups, key=lambda g: (g.min_score, g.id))


def result_decision(result, gid):
    return next(d for d in result.decisions if d.group_id == gid)
