"""Issue 9, item 2: dupes, apply's plan, the report and a rescan read only what their results need.

The reference below is the previous `find_duplicates` (every ok file read into a FileRow, every live vector id
into dicts): the bounded version must give the very same groups, pairs, plan and savings on a real catalog.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, reference_group_pairs, save_photo


@pytest.fixture
def catalog_db(tmp_path, photo_arrays, encoder) -> Path:
    """A real catalog: 10 photos, exact copies, near copies, blank pages (near-identical and one exact copy),
    and a reviewer's not-duplicate verdict."""
    import embeddr
    from embeddr.catalog import Catalog

    folder = tmp_path / "photos"
    for name, arr in photo_arrays.items():
        save_photo(arr, folder / f"{name}.jpg")
    (folder / "copies").mkdir()
    (folder / "pages").mkdir()
    shutil.copy(folder / "astronaut.jpg", folder / "copies" / "astronaut.jpg")
    shutil.copy(folder / "astronaut.jpg", folder / "copies" / "astronaut_again.jpg")
    save_photo(photo_arrays["chelsea"], folder / "near" / "chelsea_small.jpg", long_side=256)
    save_photo(photo_arrays["coffee"], folder / "near" / "coffee.png")
    save_photo(photo_arrays["rocket"][10:-10, 10:-10], folder / "near" / "rocket_crop.jpg")
    for i, dot in enumerate(((40, 40), (200, 150))):  # blank pages: a white page with one small mark
        page = Image.new("RGB", (400, 300), (255, 255, 255))
        page.paste((0, 0, 0), (dot[0], dot[1], dot[0] + 4, dot[1] + 4))
        page.save(folder / "pages" / f"page{i}.png")
    shutil.copy(folder / "pages" / "page0.png", folder / "pages" / "page0_copy.png")
    db = tmp_path / "c.db"
    embeddr.scan([folder], db=db, encoder=encoder, workers=0)
    with Catalog(db) as cat:
        cat.add_verdicts([(str(folder / "rocket.jpg"), str(folder / "near" / "rocket_crop.jpg"), "not_duplicate")])
    return db


def reference_find_duplicates(catalog, preset):
    """The previous find_duplicates (before issue 9 item 2), kept as the oracle: reads every file."""
    from embeddr.dupes import DuplicateReport, Group, PairList, content_pairs
    from embeddr.normalize import Scorer, is_blank

    threshold = preset.threshold.value
    scorer = Scorer.for_preset(preset, None)
    margin = preset.threshold.group_margin
    by_hash = catalog.files_by_hash("ok")
    for rows in by_hash.values():
        rows.sort(key=lambda r: r.path)
    files = sum(len(v) for v in by_hash.values())
    vid_of_hash = catalog.live_vector_ids()
    hash_of = {vid: h for h, vid in vid_of_hash.items()}
    rejected = catalog.not_duplicate_pairs()
    blank = {h for h, rows in by_hash.items()
             if all(is_blank(r.width, r.height, r.content_width, r.content_height) for r in rows)}
    for h in blank:
        hash_of.pop(vid_of_hash.get(h, -1), None)
    ids = np.array(sorted(hash_of), np.int64)
    a, b, s, bg, info, sindex = content_pairs(catalog, scorer, threshold, live_ids=ids)
    hash_of_path = {r.path: h for h, rows in by_hash.items() for r in rows}
    rejected_content = {tuple(sorted((hash_of_path[p], hash_of_path[q]))) for p, q in rejected
                        if p in hash_of_path and q in hash_of_path and hash_of_path[p] != hash_of_path[q]}
    node_pairs = [(hash_of[int(x)], hash_of[int(y)], float(v)) for x, y, v in zip(a, b, s)]
    node_pairs = [(x, y, v) for x, y, v in node_pairs if tuple(sorted((x, y))) not in rejected_content]
    bg_of = dict(zip((hash_of[int(i)] for i in ids), bg.tolist()))

    def similarity(x, y):
        if tuple(sorted((x, y))) in rejected_content:
            return -1.0
        vx = sindex.vecs[int(np.searchsorted(sindex.ids, vid_of_hash[x]))]
        vy = sindex.vecs[int(np.searchsorted(sindex.ids, vid_of_hash[y]))]
        raw = np.float32(np.dot(np.asarray(vx, np.float32), np.asarray(vy, np.float32)))
        return float(scorer.score(np.array([raw]), np.array([bg_of.get(x, -1.0)]), np.array([bg_of.get(y, -1.0)]))[0])

    content_groups = reference_group_pairs(node_pairs, floor=threshold - margin, similarity=similarity)
    pair_score = {(x, y): v for x, y, v in node_pairs} | {(y, x): v for x, y, v in node_pairs}
    grouped = {h for g in content_groups for h in g}
    groups = []
    for hashes in content_groups:
        scores = [pair_score[(x, y)] if (x, y) in pair_score else similarity(x, y)
                  for i, x in enumerate(hashes) for y in hashes[i + 1:]]
        if any(len(by_hash.get(h, ())) > 1 for h in hashes):
            scores.append(1.0)
        members = sorted((r for h in hashes for r in by_hash.get(h, ())), key=lambda r: r.path)
        groups.append(Group(0, members, min(scores), max(scores)))
    for h, rows in by_hash.items():
        if len(rows) > 1 and h not in grouped:
            groups.append(Group(0, list(rows), 1.0, 1.0))
    groups.sort(key=lambda g: (-len(g.members), g.members[0].path))
    for gid, g in enumerate(groups, start=1):
        g.id = gid
    return DuplicateReport(model=preset.name, threshold=threshold, score=scorer.name, groups=groups,
                           pairs=PairList(by_hash, node_pairs, rejected), extra=info, files=files,
                           threshold_provenance=preset.threshold.provenance,
                           file_rows=[r for rows in by_hash.values() for r in rows])


def _same(report) -> dict:
    d = report.as_dict()
    d.pop("seconds", None)  # the search's own timing
    return d


def test_bounded_find_duplicates_equals_the_read_everything_version(catalog_db):
    from embeddr.catalog import Catalog
    from embeddr.dupes import find_duplicates
    from embeddr.encoders import catalog_preset
    from embeddr.policy import decide
    from embeddr.savings import savings

    with Catalog(catalog_db) as cat:
        preset = catalog_preset(cat)
        new = find_duplicates(cat, preset, verify=False)  # the reference predates the second look
        old = reference_find_duplicates(cat, preset)
        assert new.file_rows == []  # no row per file of the collection is kept
        assert _same(new) == _same(old)
        kinds = {p.kind for p in new.pairs}
        assert kinds == {"exact", "near"}  # the catalog exercises both, and a blank page's exact copy:
        assert any(all("pages" in m.path for m in g.members) for g in new.groups)
        assert not any(p.kind == "near" and "pages" in p.a for p in new.pairs)  # blank pages: never near pairs
        assert not any("rocket_crop" in p.a + p.b and "rocket.jpg" in p.a + p.b for p in new.pairs)  # the verdict
        d_new, d_old = decide(new), decide(old)
        assert [d.as_dict() for d in d_new] == [d.as_dict() for d in d_old]
        # savings streamed from the catalog == savings over every file row held in memory (the old way)
        assert savings(new, d_new, catalog=cat) == savings(old, d_old)
        assert savings(new, d_new, catalog=cat)["overall"]["files"] == cat.count_ok_files() == old.files


def test_pairs_stream_from_arrays_in_chunks_and_after_the_catalog_is_closed(catalog_db, monkeypatch):
    """The report's pairs are kept as arrays of content ids (and the files' paths compactly) and expanded to file
    pairs a chunk at a time as they are iterated: chunks of any size give the same pairs in the same order, a
    report whose catalog was closed still reads them, and ``len`` (counted from the files per content without
    expanding them, when there is no verdict) equals the pairs read."""
    from embeddr.catalog import Catalog
    from embeddr.dupes import PairStream, find_duplicates
    from embeddr.encoders import catalog_preset

    with Catalog(catalog_db) as cat:
        preset = catalog_preset(cat)
        report = find_duplicates(cat, preset)
        want = [p.as_dict() for p in report.pairs]
        assert isinstance(report.pairs, PairStream) and len(report.pairs) == len(want)
    assert [p.as_dict() for p in report.pairs] == want  # the catalog is closed
    monkeypatch.setattr(PairStream, "CHUNK", 2)
    with Catalog(catalog_db) as cat:
        assert [p.as_dict() for p in find_duplicates(cat, preset).pairs] == want
        monkeypatch.setattr(Catalog, "not_duplicate_pairs", lambda self: set())  # no verdict: len is counted
        unreviewed = find_duplicates(cat, preset)
        pairs = list(unreviewed.pairs)
        assert len(unreviewed.pairs) == len(pairs) > len(want)
        assert unreviewed.pairs[len(pairs) - 1] == pairs[-1] and unreviewed.pairs == pairs


def test_apply_plan_and_report_json_equal_the_reference(catalog_db, tmp_path):
    """`apply` (dry run) and `report --html` through the API: the plan, groups and savings are those of the
    read-everything reference, and the HTML report lists the same groups."""
    from embeddr import actions, api
    from embeddr.catalog import Catalog
    from embeddr.encoders import catalog_preset
    from embeddr.policy import decide
    from embeddr.savings import savings

    result = api.apply_duplicates(catalog_db, action="move", quarantine=tmp_path / "q")
    with Catalog(catalog_db) as cat:
        old = reference_find_duplicates(cat, catalog_preset(cat))
    d_old = decide(old)
    want_steps = actions.plan(d_old, "move", quarantine=tmp_path / "q")
    assert [o.step for o in result.outcomes] == want_steps and want_steps
    assert result.extra["groups"] == [d.as_dict() for d in d_old]
    assert result.extra["savings"] == savings(old, d_old)
    review = api.review(catalog_db, html_dir=tmp_path / "html")
    assert review.as_dict()["groups"] == old.as_dict()["groups"] and review.as_dict()["pairs"] == old.as_dict()["pairs"]
    assert review.html.groups == len(old.groups)


def test_rescan_of_unchanged_files_does_not_read_the_faiss_index(catalog_db, encoder, monkeypatch, tmp_path, photo_arrays):
    import faiss

    import embeddr
    from embeddr.catalog import Catalog
    from embeddr.index import is_current, load_index

    with Catalog(catalog_db) as cat:
        assert is_current(cat)
        roots = cat.runs(1)[0]["roots"]
    reads = []
    real_read = faiss.read_index
    monkeypatch.setattr(faiss, "read_index", lambda *a, **k: reads.append(a) or real_read(*a, **k))
    report = embeddr.scan(roots, db=catalog_db, encoder=encoder, workers=0)
    assert report.unchanged == report.seen - report.links and report.processed == 0
    assert reads == []  # the index is current: not loaded
    save_photo(photo_arrays["moon"][::-1], Path(roots[0]) / "new" / "moon_flipped.jpg")
    report = embeddr.scan(roots, db=catalog_db, encoder=encoder, workers=0)
    assert report.encoded == 1 and len(reads) == 1  # a new vector: the index is brought up to date
    with Catalog(catalog_db) as cat:
        assert is_current(cat) and load_index(cat).ntotal == cat.stats()["vectors"]
        (cat.path.with_name(cat.path.name + ".faiss")).unlink()
        assert not is_current(cat)  # a missing index is rebuilt by the next scan


def test_one_root_walk_remembers_only_links(tmp_path, monkeypatch):
    """Discovering one folder keeps nothing per plain file (a million files: flat memory), yet still tells
    hard links and symlinks apart; overlapping roots still yield each file once."""
    from embeddr import discover as disc

    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    jpeg = (REPO / "embeddr" / "examples" / "coffee.jpg").read_bytes()
    for i in range(30):
        (root / "sub" / f"{i:02d}.jpg").write_bytes(jpeg)
    os.link(root / "sub" / "00.jpg", root / "hard.jpg")
    os.symlink(root / "sub" / "01.jpg", root / "soft.jpg")
    made = []

    class Spy(disc._Seen):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            made.append(self)

    monkeypatch.setattr(disc, "_Seen", Spy)
    found = list(disc.discover([root]))
    assert len(found) == 32
    links = {os.path.basename(c.path): c.link_of for c in found if c.link_of}
    assert links == {"hard.jpg": str(root / "sub" / "00.jpg"), "soft.jpg": str(root / "sub" / "01.jpg")} or \
        links == {"00.jpg": str(root / "hard.jpg"), "soft.jpg": str(root / "sub" / "01.jpg")}
    assert made[-1].paths == set() and len(made[-1].inodes) == 1  # only the hard-linked file
    again = list(disc.discover([root, root / "sub"]))  # overlapping roots: each path once
    assert sorted(c.path for c in again) == sorted(c.path for c in found)


def test_streamed_common_root_equals_fsutil():
    import random

    from embeddr.fsutil import common_root
    from embeddr.savings import _common_root

    rng = random.Random(0)
    cases = [[], ["/a/b/c.jpg"], ["/a/b/c.jpg", "/a/b/c.jpg"], ["/a/b", "/a/b/c"], ["/a/b/c", "/a/b"], ["/a/bc/d", "/a/b/e"]]
    cases += [["/" + "/".join(rng.choice("ab") for _ in range(rng.randint(1, 4))) for _ in range(rng.randint(1, 5))]
              for _ in range(300)]
    for paths in cases:
        assert _common_root(iter(paths)) == common_root(paths), paths


def test_bench_catalog_script_runs(tmp_path):
    """scripts/bench_catalog.py end to end on 1,500 files: one JSON object with each step's time and memory."""
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "bench_catalog.py"), "--n", "1500", "--dir",
                          str(tmp_path / "b"), "--steps", "rescan,plan", "--json"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["files"] == 1500 and got["build"]["distinct"] < 1500
    for step in ("rescan", "plan"):
        assert got[step]["wall_seconds"] > 0 and got[step]["peak_rss_mib"] > 0
    plan = json.loads((tmp_path / "b" / "plan.out").read_text())
    assert plan["dry_run"] and plan["counts"]["planned"] > 0


def test_dupes_json_and_csv_are_streamed_with_the_same_text(catalog_db, runner, tmp_path):
    """`dupes --format json/csv` write a group or a pair at a time; the text is what json.dumps/csv make of
    the whole report."""
    from embeddr.cli import app
    from embeddr.output import iter_csv, iter_json

    out = runner.invoke(app, ["dupes", "--db", str(catalog_db), "--format", "json", "--output", str(tmp_path / "d.json")])
    assert out.exit_code == 0, out.output
    text = (tmp_path / "d.json").read_text(encoding="utf-8")
    data = json.loads(text)
    assert text == json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    assert data["pairs"] and data["groups"]
    import embeddr

    report = embeddr.find_duplicates(catalog_db)
    want = report.as_dict()
    assert {k: v for k, v in data.items() if k != "seconds"} == {k: v for k, v in want.items() if k != "seconds"}
    assert "".join(iter_json(report)) == json.dumps(want, indent=2, ensure_ascii=False)
    csv_text = runner.invoke(app, ["dupes", "--db", str(catalog_db), "--format", "csv"]).output
    assert csv_text == "".join(iter_csv(report)) and csv_text.count("\n") == len(report.pairs) + 1


def test_apply_and_report_json_are_streamed_with_the_same_text(catalog_db, runner, tmp_path):
    """`apply --format json` and `report --format json` write a step, group, pair or decision at a time: the
    text is what json.dumps makes of the whole result, and the content is the API's."""
    from embeddr import api
    from embeddr.cli import app

    out = runner.invoke(app, ["apply", "--db", str(catalog_db), "--format", "json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert out.output == json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    assert data == api.apply_duplicates(catalog_db).as_dict() and data["steps"] and data["groups"]
    out = runner.invoke(app, ["report", "--db", str(catalog_db), "--format", "json", "--output", str(tmp_path / "r.json")])
    assert out.exit_code == 0, out.output
    text = (tmp_path / "r.json").read_text(encoding="utf-8")
    data = json.loads(text)
    assert text == json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    want = api.review(catalog_db).as_dict()
    assert {k: v for k, v in data.items() if k != "seconds"} == {k: v for k, v in want.items() if k != "seconds"}
    assert data["decisions"] and data["pairs"]
