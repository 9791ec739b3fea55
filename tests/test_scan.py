"""End-to-end scan + dupes on real photos: groups, exact copies, incremental and resumable scans, output."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from conftest import REPO, save_photo
from PIL import Image
from typer.testing import CliRunner

import embeddr
from embeddr import Catalog
from embeddr.catalog import SCHEMA_VERSION
from embeddr.bench import apply_family
from embeddr.cli import app
from embeddr.encoders import load_encoder
from embeddr.group import group_pairs
from embeddr.index import load_index

DERIVED_FROM = ("astronaut", "chelsea", "coffee", "rocket")
FAMILIES = ("crop", "recolour", "rescan", "thumbnail")


def preset_threshold(name: str = "sscd-distilled") -> float:
    """Whatever the preset file holds now (it is being calibrated): never a hard-coded number."""
    with open(REPO / "models" / f"{name}.toml", "rb") as fh:
        return float(tomllib.load(fh)["threshold"]["value"])


def make_collection(root: Path, photo_arrays) -> dict[str, set[str]]:
    """Real photos + derived crops/recolours/rescans/thumbnails + one exact copy; returns the true groups."""
    truth: dict[str, set[str]] = {}
    for name, arr in photo_arrays.items():
        path = save_photo(arr, root / "originals" / f"{name}.jpg")
        truth[name] = {str(path)}
    for name in DERIVED_FROM:
        original = Image.open(root / "originals" / f"{name}.jpg")
        for family in FAMILIES:
            variant = apply_family(family, original, random.Random(f"{name}:{family}"))
            path = root / "derived" / f"{name}_{family}{variant.save.ext}"
            path.parent.mkdir(parents=True, exist_ok=True)
            variant.save.save(variant.image, path)
            truth[name].add(str(path))
    copy = root / "copies" / "astronaut copy.jpg"
    copy.parent.mkdir()
    shutil.copyfile(root / "originals" / "astronaut.jpg", copy)
    truth["astronaut"].add(str(copy))
    return truth


def cli(*args: str, ok: bool = True):
    result = CliRunner().invoke(app, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, (args, result.output, result.exception)
    return result


def distinct_contents(folder: Path) -> int:
    return len({hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()})


@pytest.fixture(scope="module")
def scanned(tmp_path_factory, photo_arrays):
    """One CLI scan of the collection, shared by the read-only tests below."""
    root = tmp_path_factory.mktemp("collection")
    truth = make_collection(root / "photos", photo_arrays)
    db = root / "cat.db"
    result = cli("scan", root / "photos", "--model", "sscd-distilled", "--db", db, "--quiet", "--json", "--batch-size", "8")
    report = json.loads(result.stdout)
    dupes = json.loads(cli("dupes", "--db", db, "--format", "json").stdout)
    return root / "photos", db, truth, report, dupes


def test_scan_dupes_json_finds_the_groups_and_no_cross_photo_pair(scanned):
    folder, db, truth, report, dupes = scanned
    group_of = {p: name for name, paths in truth.items() for p in paths}
    assert dupes["model"] == "sscd-distilled"
    assert dupes["threshold"] == pytest.approx(preset_threshold())
    found = sorted(sorted(m["path"] for m in g["members"]) for g in dupes["groups"])
    expected = sorted(sorted(paths) for paths in truth.values() if len(paths) > 1)
    assert found == expected, "each original with its derivations, nothing else"
    cross = [p for p in dupes["pairs"] if group_of[p["a"]] != group_of[p["b"]]]
    assert cross == [], f"pairs between unrelated photos at threshold {dupes['threshold']}: {cross}"
    assert all(p["score"] >= dupes["threshold"] - 1e-6 for p in dupes["pairs"])


def test_json_shape_and_absolute_paths(scanned):
    _, _, _, _, dupes = scanned
    assert {"model", "threshold", "groups", "pairs"} <= set(dupes)
    for g in dupes["groups"]:
        for m in g["members"]:
            assert {"path", "size", "width", "height"} <= set(m)
            assert os.path.isabs(m["path"]) and m["size"] == os.path.getsize(m["path"])
            assert (m["width"], m["height"]) == Image.open(m["path"]).size
    for p in dupes["pairs"]:
        assert set(p) == {"a", "b", "score", "kind"} and p["kind"] in ("exact", "near")
        assert os.path.isabs(p["a"]) and os.path.isabs(p["b"]) and p["a"] < p["b"]


def test_exact_copies_are_paired_as_exact_and_embedded_once(scanned):
    folder, db, _, report, dupes = scanned
    exact = [p for p in dupes["pairs"] if p["kind"] == "exact"]
    assert [(Path(p["a"]).name, Path(p["b"]).name, p["score"]) for p in exact] == [("astronaut copy.jpg", "astronaut.jpg", 1.0)]
    files = sum(1 for p in folder.rglob("*") if p.is_file())
    assert report["seen"] == files and report["errors"] == 0
    assert report["encoded"] == distinct_contents(folder) == files - 1 and report["exact_reused"] == 1
    with Catalog(db) as catalog:
        assert catalog.stats()["vectors"] == files - 1


def test_csv_and_output_file(scanned, tmp_path):
    _, db, _, _, dupes = scanned
    out = tmp_path / "sub" / "pairs.csv"
    cli("dupes", "--db", db, "--format", "csv", "--output", out)
    rows = list(csv.reader(io.StringIO(out.read_text())))
    assert rows[0] == ["a", "b", "score", "kind"]
    assert [(a, b, k) for a, b, _, k in rows[1:]] == [(p["a"], p["b"], p["kind"]) for p in dupes["pairs"]]
    table = cli("dupes", "--db", db).stdout
    assert "groups" in table and "astronaut" in table


def test_info(scanned):
    folder, db, _, _, _ = scanned
    text = cli("info", "--db", db).stdout
    assert "sscd-distilled" in text and "0 errors" in text and ".faiss" in text
    data = json.loads(cli("info", "--db", db, "--json").stdout)
    files = sum(1 for p in folder.rglob("*") if p.is_file())
    assert data["model"] == "sscd-distilled" and data["ok"] == files and data["vectors"] == files - 1
    assert data["index_bytes"] > 0 and data["runs"][0]["status"] == "done"


def test_model_mismatch_is_refused(scanned):
    _, db, _, _, _ = scanned
    result = cli("scan", scanned[0], "--db", db, "--model", "phash", "-q", ok=False)
    assert result.exit_code == 2
    assert "error:" in result.stderr and "sscd-distilled" in result.stderr and "phash" in result.stderr
    result = cli("dupes", "--db", db, "--model", "phash", ok=False)
    assert result.exit_code == 2 and "built with model" in result.stderr


# -- incremental and resumable scans (API, with a counting encoder) -------------------------------


@pytest.fixture
def collection(tmp_path, photo_arrays):
    truth = make_collection(tmp_path / "photos", photo_arrays)
    return tmp_path / "photos", tmp_path / "cat.db", truth


def _scan(folder, db, **kwargs):
    encoder = load_encoder("sscd-distilled", device="cpu")
    report = embeddr.scan([folder], db=db, encoder=encoder, workers=0, **kwargs)
    return report, encoder


def test_incremental_rescan_touch_change_delete(collection):
    folder, db, _ = collection
    distinct = distinct_contents(folder)
    _, enc = _scan(folder, db)
    assert enc.images == distinct
    report, enc = _scan(folder, db)
    assert enc.images == 0 and report.processed == 0 and report.unchanged == report.seen

    touched = folder / "originals" / "coffee.jpg"
    st = touched.stat()
    os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    changed = folder / "originals" / "moon.jpg"
    Image.open(changed).rotate(180).save(changed, quality=90)
    gone = folder / "derived" / "rocket_crop.jpg"
    gone.unlink()
    report, enc = _scan(folder, db)
    assert report.processed == 2 and enc.images == 1  # touched: same bytes, vector reused; changed: re-embedded
    assert report.missing == 1
    dupes = embeddr.find_duplicates(db)
    paths = {m.path for g in dupes.groups for m in g.members} | {p.a for p in dupes.pairs} | {p.b for p in dupes.pairs}
    assert str(gone) not in paths
    assert str(folder / "derived" / "rocket_thumbnail.jpg") in paths
    assert embeddr.info(db)["missing"] == 1


def test_interrupted_scan_resumes_without_re_embedding(collection):
    folder, db, _ = collection
    distinct = distinct_contents(folder)
    encoder = load_encoder("sscd-distilled", device="cpu")
    real_encode = encoder._encode
    calls = []

    def interrupting(batch):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(len(batch))
        return real_encode(batch)

    encoder._encode = interrupting
    with pytest.raises(KeyboardInterrupt):
        embeddr.scan([folder], db=db, encoder=encoder, workers=0, batch_size=4)
    with Catalog(db) as catalog:
        committed = catalog.stats()["vectors"]
        assert committed == sum(calls) > 0
        assert catalog.runs(1)[0]["status"] == "interrupted"
    report, enc = _scan(folder, db, batch_size=4)
    assert enc.images == distinct - committed
    assert not report.interrupted and report.errors == 0
    check_consistent(db, folder)


def check_consistent(db: Path, folder: Path) -> None:
    files = sorted(str(p) for p in folder.rglob("*") if p.is_file())
    with Catalog(db) as catalog:
        paths = [r[0] for r in catalog.conn.execute("SELECT path FROM files")]
        assert len(paths) == len(set(paths)) and sorted(paths) == files
        assert {r.status for r in catalog.files(None)} == {"ok"}
        orphans = catalog.conn.execute(
            "SELECT COUNT(*) FROM files f WHERE f.status = 'ok' AND NOT EXISTS (SELECT 1 FROM vectors v WHERE v.hash = f.hash)").fetchone()[0]
        assert orphans == 0, "an ok file without a vector"
        n_vectors = catalog.stats()["vectors"]
        assert n_vectors == distinct_contents(folder)
        assert load_index(catalog).ntotal == n_vectors


def test_kill_9_midway_then_rescan(collection):
    folder, db, _ = collection
    distinct = distinct_contents(folder)
    proc = subprocess.Popen(
        [sys.executable, "-c", "from embeddr.cli import main; main()", "scan", str(folder), "--db", str(db), "--batch-size", "1", "--workers", "0",
         "--quiet", "--model", "sscd-distilled"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    committed = 0
    try:
        for _ in range(6000):  # poll the catalog until a few batches are committed (bounded)
            try:
                proc.wait(timeout=0.02)
                break  # exited before we could kill it
            except subprocess.TimeoutExpired:
                pass
            if db.exists():
                try:
                    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
                        committed = conn.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]
                except sqlite3.OperationalError:
                    continue  # schema not created yet
                if committed >= 3:
                    os.kill(proc.pid, signal.SIGKILL)
                    break
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stderr.close()
    if proc.returncode != -signal.SIGKILL:
        pytest.skip(f"the scan finished (rc {proc.returncode}) before it could be killed midway")
    with Catalog(db) as catalog:
        committed = catalog.stats()["vectors"]
        assert 3 <= committed < distinct
        assert catalog.runs(1)[0]["status"] == "running"  # the killed run never finished
    report, enc = _scan(folder, db)
    assert enc.images == distinct - committed
    check_consistent(db, folder)


# -- discovery options -----------------------------------------------------------------------------


def test_exclude_symlink_loop_and_content_sniffing(photo_dir, tmp_path):
    os.symlink(photo_dir, photo_dir / "loop")  # a folder link back to the root
    (photo_dir / "sub").mkdir()
    os.symlink(photo_dir / "sub", photo_dir / "sub" / "self")
    disguised = photo_dir / "sub" / "picture.dat"
    Image.open(photo_dir / "coffee.jpg").save(disguised, format="PNG")
    (photo_dir / "notes.txt").write_text("not an image")
    (photo_dir / "skip.tmp.jpg").write_bytes((photo_dir / "moon.jpg").read_bytes())
    db = tmp_path / "c.db"
    result = cli("scan", photo_dir, "--db", db, "-q", "--json", "--exclude", "*.tmp.jpg", "--exclude", "camera.jpg")
    report = json.loads(result.stdout)
    with Catalog(db) as catalog:
        rows = {r.path: r for r in catalog.files(None)}
    assert str(disguised) in rows and rows[str(disguised)].format == "PNG" and rows[str(disguised)].status == "ok"
    assert str(photo_dir / "notes.txt") not in rows
    assert str(photo_dir / "skip.tmp.jpg") not in rows and str(photo_dir / "camera.jpg") not in rows
    assert not any("/loop/" in p or "/self/" in p for p in rows)  # each file once, loops not followed
    assert report["seen"] == len(rows) == 10 and report["errors"] == 0


# -- grouping rule ---------------------------------------------------------------------------------


def test_grouping_does_not_chain():
    sims = {frozenset("AB"): 0.9, frozenset("BC"): 0.85, frozenset("AC"): 0.1, frozenset("CD"): 0.95,
            frozenset("AD"): 0.1, frozenset("BD"): 0.1}
    similarity = lambda x, y: sims[frozenset((x, y))]  # noqa: E731
    pairs = [("A", "B", 0.9), ("B", "C", 0.85), ("C", "D", 0.95)]
    groups = group_pairs(pairs, floor=0.5, similarity=similarity)
    assert not any({"A", "C"} <= set(g) for g in groups)
    assert groups == [["A", "B"], ["C", "D"]]
    for perm in (pairs[::-1], pairs[1:] + pairs[:1]):  # deterministic, whatever the input order
        assert group_pairs(perm, floor=0.5, similarity=similarity) == groups
    # when A and C are alike enough (>= floor), the chain is a real group
    sims[frozenset("AC")] = 0.6
    sims.update({frozenset("AD"): 0.6, frozenset("BD"): 0.6})
    assert group_pairs(pairs, floor=0.5, similarity=similarity) == [["A", "B", "C", "D"]]



def test_grouping_on_arrays_equals_the_dictionary_rule():
    """group_pairs (now group_arrays on integer node ids, sorted keys and searchsorted instead of a dictionary of
    pair scores, a memo of groups that failed to merge) gives the groups of the rule as it was written before,
    on random graphs with many tied scores, both orientations of pairs, pairs listed twice and a group cap."""
    import itertools
    import random

    import numpy as np
    from conftest import reference_group_pairs

    from embeddr.group import group_arrays

    for trial in range(200):
        rng = random.Random(trial)
        names = list(dict.fromkeys(f"h{rng.randint(0, 10**6):x}" for _ in range(rng.randint(2, 40))))
        sims = {frozenset(p): round(rng.random(), 1 if trial % 2 else 2) for p in itertools.combinations(names, 2)}
        similarity = lambda x, y: sims[frozenset((x, y))]  # noqa: E731
        pairs = [(x, y, v) for x, y in itertools.combinations(names, 2)
                 if (v := sims[frozenset((x, y))]) >= 0.6 and rng.random() < 0.8]
        rng.shuffle(pairs)
        pairs = [(y, x, v) if rng.random() < 0.5 else (x, y, v) for x, y, v in pairs]
        if pairs and trial % 5 == 0:
            x, y, v = pairs[0]
            pairs.append((y, x, v - 0.05))  # listed twice: the lower score counts
        for floor, cap in ((0.3, 100_000), (0.5, 100_000), (0.5, 3)):
            want = reference_group_pairs(pairs, floor=floor, similarity=similarity, max_group=cap)
            assert group_pairs(pairs, floor=floor, similarity=similarity, max_group=cap) == want, trial
        # the array form on integer ids directly: the rank orders ties and the groups' members
        number = {m: i for i, m in enumerate(sorted(names, reverse=True))}  # ids in another order than the names
        rank = np.array([sorted(names).index(m) for m in sorted(names, reverse=True)])
        a = np.array([number[x] for x, _, _ in pairs], np.int64)
        b = np.array([number[y] for _, y, _ in pairs], np.int64)
        s = np.array([v for _, _, v in pairs])
        back = sorted(names, reverse=True)
        ok = lambda xs, ys: all(sims[frozenset((back[i], back[j]))] >= 0.5 for i, j in zip(xs, ys))  # noqa: E731
        got = group_arrays(a, b, s, n=len(names), floor=0.5, all_at_least=ok, rank=rank)
        assert [[back[i] for i in g] for g in got] == reference_group_pairs(pairs, floor=0.5, similarity=similarity)

# -- real images -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def realdata_scan(realimages, tmp_path_factory):
    """~60 distinct real photos, 5 variants of 12 of them, and 40 hard negatives, scanned and matched once."""
    tmp_path = tmp_path_factory.mktemp("realdata")
    rows = list(csv.DictReader(open(realimages / "manifest.csv", newline="")))
    key = lambda r: hashlib.sha256(r["path"].encode()).hexdigest()  # noqa: E731 - deterministic sample
    distinct = sorted((r for r in rows if r["set"] == "distinct"), key=key)[:60]
    taken = {r["path"] for r in distinct}
    hard = [r for r in sorted((r for r in rows if r["set"] == "hard_neg"), key=key) if r["path"] not in taken][:40]
    truth: dict[str, tuple[str, str]] = {}  # path -> (source photo, set)
    links = tmp_path / "photos"
    for r in distinct + hard:  # symlinks: the files are used in place, never copied
        link = links / r["set"] / r["path"].replace("/", "__")
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            os.symlink(realimages / r["path"], link)
            truth[str(link)] = (r["path"], r["set"])
    for r in distinct[:12]:
        img = Image.open(realimages / r["path"]).convert("RGB")
        for family in ("crop", "recolour", "rescan", "thumbnail", "reencode"):
            v = apply_family(family, img, random.Random(f"{r['path']}:{family}"))
            path = links / "derived" / f"{Path(r['path']).stem}_{family}{v.save.ext}"
            path.parent.mkdir(parents=True, exist_ok=True)
            v.save.save(v.image, path)
            truth[str(path)] = (r["path"], "derived")
    db = tmp_path / "c.db"
    cli("scan", links, "--db", db, "--model", "sscd-distilled", "-q", "--workers", "1")
    dupes = json.loads(cli("dupes", "--db", db, "--format", "json").stdout)
    return truth, distinct[:12], dupes


def _cross(truth, dupes, sets):
    return [(p["a"], p["b"], p["score"]) for p in dupes["pairs"]
            if truth[p["a"]][0] != truth[p["b"]][0] and {truth[p["a"]][1], truth[p["b"]][1]} <= sets]


def _describe(cross, dupes) -> str:
    head = f"pairs between different real photos at threshold {dupes['threshold']} ({dupes['score']} score): "
    return head + "; ".join(f"{Path(a).name} ~ {Path(b).name} {s}" for a, b, s in cross)


@pytest.mark.realdata
def test_realdata_scan_finds_derived_groups_and_no_cross_photo_pair(realdata_scan):
    truth, derived_from, dupes = realdata_scan
    cross = _cross(truth, dupes, {"distinct", "derived"})
    assert cross == [], _describe(cross, dupes)
    group_of = {m["path"]: g["id"] for g in dupes["groups"] for m in g["members"]}
    for r in derived_from:
        members = [p for p, (src, _) in truth.items() if src == r["path"]]
        assert len(members) == 6
        assert len({group_of.get(p) for p in members}) == 1 and None not in {group_of.get(p) for p in members}, r["path"]


@pytest.mark.realdata
@pytest.mark.xfail(strict=True, reason="known limit (docs/benchmarks.md): in this sparse sample (40 hard negatives) "
                   "a handful of spiral galaxies are a crowd too small for the rank-32 background; measured 2026-11-29 "
                   "at threshold 0.572 with the second look: 2 pairs between different star fields, 0.70 and 0.75 "
                   "(12 without it)")
def test_realdata_hard_negatives_are_not_paired(realdata_scan):
    truth, _, dupes = realdata_scan
    cross = _cross(truth, dupes, {"distinct", "derived", "hard_neg"})
    assert cross == [], _describe(cross, dupes)


def test_folders_with_the_ignore_marker_are_not_scanned(photo_dir, tmp_path):
    """apply's quarantine and trash folders carry .embeddr-ignore: a later scan never takes their copies back in."""
    from embeddr.discover import IGNORE_MARKER, discover

    quarantine = photo_dir / "quarantine"
    quarantine.mkdir()
    (quarantine / "astronaut.jpg").write_bytes((photo_dir / "astronaut.jpg").read_bytes())
    assert any("quarantine" in c.path for c in discover([photo_dir]))
    (quarantine / IGNORE_MARKER).touch()
    found = [c.path for c in discover([photo_dir])]
    assert found and not any("quarantine" in p for p in found)


def test_links_to_scanned_files_are_not_duplicates(photo_dir, tmp_path, runner):
    """A symlink to a file under the scanned folders, or a second hard link, is the same file: it is recorded
    as a link, never decoded, and never listed as a duplicate (apply's hardlink/symlink results stay clean)."""
    links = photo_dir / "links"
    links.mkdir()
    os.symlink(photo_dir / "coffee.jpg", links / "coffee_symlink.jpg")
    os.link(photo_dir / "chelsea.jpg", links / "zz_chelsea_hardlink.jpg")
    db = tmp_path / "links.db"
    from embeddr.cli import app

    assert runner.invoke(app, ["scan", str(photo_dir), "--db", str(db), "-q", "--workers", "0"]).exit_code == 0
    with Catalog(db) as catalog:
        assert catalog.get_file(str(links / "coffee_symlink.jpg")).status == "link"
        assert catalog.get_file(str(links / "zz_chelsea_hardlink.jpg")).status == "link"
        assert catalog.get_file(str(photo_dir / "coffee.jpg")).status == "ok"
    out = json.loads(runner.invoke(app, ["dupes", "--db", str(db), "--format", "json"]).stdout)
    assert not any("links" in p for pair in out["pairs"] for p in (pair["a"], pair["b"]))


def test_a_missing_root_is_an_error_and_a_named_non_image_is_a_per_file_error(photo_dir, tmp_path, runner):
    from embeddr.cli import app

    db = tmp_path / "named.db"
    res = runner.invoke(app, ["scan", str(tmp_path / "no-such-folder"), "--db", str(db), "-q"])
    assert res.exit_code == 2 and "no such file or folder" in res.output and not db.exists()
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture")
    res = runner.invoke(app, ["scan", str(photo_dir / "coffee.jpg"), str(notes), "--db", str(db), "-q", "--workers", "0"])
    assert res.exit_code == 0, res.output
    with Catalog(db) as catalog:
        assert catalog.get_file(str(notes)).status == "error"
        assert "not a recognised image format" in catalog.get_file(str(notes)).error
        assert catalog.get_file(str(photo_dir / "coffee.jpg")).status == "ok"


def test_a_version_1_catalog_is_migrated_in_place(tmp_path):
    """Catalogs made before content sizes existed open, gain the columns (a named migration), keep their rows."""
    db = tmp_path / "v1.db"
    conn = sqlite3.connect(db)
    conn.executescript("""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta VALUES ('schema_version', '1'), ('model', 'sscd-distilled'), ('dim', '512');
        CREATE TABLE files (id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE, size INTEGER, mtime_ns INTEGER, hash TEXT,
            width INTEGER, height INTEGER, format TEXT, status TEXT NOT NULL, error TEXT, first_run INTEGER,
            last_run INTEGER, updated REAL);
        INSERT INTO files (path, size, mtime_ns, hash, width, height, format, status) VALUES ('/a.jpg', 1, 1, 'h', 10, 10, 'JPEG', 'ok');
    """)
    conn.commit()
    conn.close()
    with Catalog(db) as catalog:
        assert catalog.get_meta("schema_version") == str(SCHEMA_VERSION)
        row = catalog.get_file("/a.jpg")
        assert row.width == 10 and row.content_width is None and row.item_id is None


def test_approximate_search_finds_the_exact_pairs_on_a_synthetic_catalog(tmp_path):
    """dupes --approximate (IVF) on 6,000 vectors with planted near-copies: the same pairs as the exact search
    (or nearly), and the report says which search ran."""
    import numpy as np

    from embeddr.catalog import FileRecord
    from embeddr.dupes import find_duplicates
    from embeddr.presets import get_preset

    rng = np.random.default_rng(0)
    base = rng.normal(size=(5000, 64))
    copies = base[:1000] + 0.25 * rng.normal(size=(1000, 64))
    vecs = np.vstack([base, copies])
    vecs = (vecs / np.linalg.norm(vecs, axis=1, keepdims=True)).astype(np.float32)
    db = tmp_path / "synthetic.db"
    with Catalog(db) as catalog:
        catalog.bind_model("sscd-distilled", 64)
        records = [FileRecord(f"/s/{i:05d}.jpg", 1, 0, f"h{i}", 10, 10, "JPEG") for i in range(len(vecs))]
        catalog.record_batch(records, {f"h{i}": v for i, v in enumerate(vecs)}, None, "sscd-distilled")
        preset = get_preset("sscd-distilled")
        exact = find_duplicates(catalog, preset, score="raw")
        approx = find_duplicates(catalog, preset, score="raw", approximate=True)
    exact_pairs = {(p.a, p.b) for p in exact.pairs}
    approx_pairs = {(p.a, p.b) for p in approx.pairs}
    assert len(exact_pairs) >= 1000 and approx_pairs <= exact_pairs
    assert len(approx_pairs) >= 0.98 * len(exact_pairs)
    assert exact.as_dict()["search"] == "exact" and approx.as_dict()["search"] == "approximate"
