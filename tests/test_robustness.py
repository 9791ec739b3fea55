"""Issue 11: nothing lost, nothing wrong. One test (or more) per numbered finding, each reproducing
it on real photos (scikit-image's, scanned with sscd-distilled) and checking the fix."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import shutil
import signal
import socket
import sqlite3
import stat
import struct
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import save_photo
from PIL import Image

from embeddr import actions, api, lock
from embeddr.catalog import Catalog
from embeddr.cli import app
from embeddr.errors import CatalogBusy, CatalogError, JournalError
from embeddr.journal import read_journal

CLI = [sys.executable, "-c", "from embeddr.cli import main; main()"]
DERIVED = ("astronaut", "coffee", "chelsea", "rocket")


def sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture
def library(photo_dir: Path, encoder, tmp_path: Path):
    """lib/photos/ (10 real photos) + lib/copies/ (half-size JPEGs of four of them) scanned into cat.db."""
    root = tmp_path / "lib"
    root.mkdir()
    photos = Path(shutil.move(photo_dir, root / "photos"))
    copies = root / "copies"
    copies.mkdir()
    for name in DERIVED:
        with Image.open(photos / f"{name}.jpg") as im:
            im.load()
            im.resize((im.width // 2, im.height // 2), Image.Resampling.LANCZOS).save(copies / f"{name}_small.jpg", quality=85)
    db = tmp_path / "cat.db"
    api.scan([root], db=db, encoder=encoder, workers=0)
    return root, db


def groups_of(db) -> list[list[str]]:
    return [[m.path for m in g.members] for g in api.find_duplicates(db).groups]


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


class held_lock:
    """Another process holding the catalog's writer lock (as a running scan or apply would)."""

    def __init__(self, db, what: str = "embeddr scan elsewhere"):
        code = ("import sys\nfrom embeddr import lock\n"
                f"with lock.writer({str(db)!r}, what={what!r}):\n    print('held', flush=True)\n    sys.stdin.read()\n")
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def __enter__(self):
        assert self.proc.stdout.readline().strip() == "held"
        return self.proc

    def __exit__(self, *exc):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


# -- 1. two applies at once ---------------------------------------------------------------------

def test_1_stale_plan_never_removes_the_last_copy(library, tmp_path):
    """Two plans made on the same state with opposite --prefer, applied one after the other: the second
    finds each canonical gone right before acting and leaves every duplicate alone."""
    from embeddr.policy import Policy, decide

    root, db = library
    groups = groups_of(db)
    assert len(groups) == len(DERIVED)
    report = api.find_duplicates(db)
    plan_a = actions.plan(decide(report, Policy().with_overrides(prefer=[root / "photos"])), "move", quarantine=tmp_path / "qa")
    plan_b = actions.plan(decide(report, Policy().with_overrides(prefer=[root / "copies"])), "move", quarantine=tmp_path / "qb")
    a = actions.apply(plan_a, db, tmp_path / "a.jsonl", yes=True)
    b = actions.apply(plan_b, db, tmp_path / "b.jsonl", yes=True)
    assert a.counts == {"done": len(DERIVED)}
    assert b.counts == {"skipped": len(DERIVED)} and all("canonical" in o.detail for o in b.outcomes)
    for members in groups:
        assert any(os.path.exists(p) for p in members), members


def test_1_file_vanishing_between_plan_and_act_is_a_skip(library, tmp_path, monkeypatch):
    root, db = library
    from embeddr.policy import Policy, decide

    steps = actions.plan(decide(api.find_duplicates(db), Policy()), "move", quarantine=tmp_path / "q")
    victim = steps[0].path
    real = actions._check_duplicate

    def vanish_after_check(step):  # the file goes between the last check and the act
        why = real(step)
        if step.path == victim:
            os.unlink(victim)
        return why

    monkeypatch.setattr(actions, "_check_duplicate", vanish_after_check)
    result = actions.apply(steps, db, tmp_path / "j.jsonl", yes=True)
    outcome = next(o for o in result.outcomes if o.step.path == victim)
    assert outcome.status == "skipped" and "gone" in outcome.detail
    assert result.counts["done"] == len(steps) - 1


def test_1_a_second_apply_is_refused_while_one_runs(library, tmp_path):
    root, db = library
    with held_lock(db) as other:
        with pytest.raises(CatalogBusy, match=r"another embeddr command is writing.*pid %d" % other.pid):
            api.apply_duplicates(db, action="move", quarantine=tmp_path / "q", yes=True)
    assert all(os.path.exists(p) for g in groups_of(db) for p in g)  # nothing was touched


def test_1_concurrent_apply_processes_keep_a_copy_of_every_picture(library, tmp_path):
    root, db = library
    groups = groups_of(db)
    procs = [subprocess.Popen([*CLI, "apply", "--db", str(db), "--action", "move", "--quarantine", str(tmp_path / f"q{i}"),
                               "--prefer", str(root / folder), "--journal", str(tmp_path / f"j{i}.jsonl"), "--yes"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i, folder in enumerate(("photos", "copies"))]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode in (0, 2), err
        if p.returncode == 2:
            assert error_lines(err) and "another embeddr command is writing" in err and "Traceback" not in err
    for members in groups:
        assert any(os.path.exists(m) for m in members), members


# -- 2. a stale index beside a new catalog ------------------------------------------------------

def test_2_index_of_a_previous_catalog_is_not_reused(library, encoder, tmp_path, photo_arrays):
    root, db = library
    other = tmp_path / "other"
    for name in ("moon", "coins", "camera"):
        save_photo(photo_arrays[name], other / f"{name}.jpg")
        save_photo(photo_arrays[name], other / f"{name}_small.jpg", long_side=200)
    fresh = tmp_path / "fresh.db"
    api.scan([other], db=fresh, encoder=encoder, workers=0)
    want = sorted(sorted(g) for g in groups_of(fresh))
    assert Path(str(db) + ".faiss").exists()
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    api.scan([other], db=db, encoder=encoder, workers=0)  # same name, new catalog; the old .faiss is still there
    assert sorted(sorted(g) for g in groups_of(db)) == want and len(want) == 3


def test_2_index_identity_names_its_catalog(library):
    from embeddr.index import identity_path, index_path

    root, db = library
    with Catalog(db) as cat:
        ident = json.loads(identity_path(index_path(cat)).read_text())
        assert ident["catalog_id"] == cat.catalog_id and ident["count"] == cat.stats()["vectors"]


def test_2_faiss_path_that_is_a_folder_is_a_clean_error(library, runner):
    root, db = library
    faiss_file = Path(str(db) + ".faiss")
    faiss_file.unlink()
    faiss_file.mkdir()
    # `check` searches the FAISS index (`dupes` maps DB.search/ instead, which it rebuilds when unusable)
    res = runner.invoke(app, ["check", "--db", str(db), "--device", "cpu", str(next((root / "photos").iterdir()))])
    assert res.exit_code == 2 and "is a folder" in res.output and str(faiss_file) in res.output
    assert not [p for p in db.parent.iterdir() if ".tmp" in p.name]
    search_dir = Path(str(db) + ".search")
    shutil.rmtree(search_dir)
    search_dir.write_text("not a folder")
    assert runner.invoke(app, ["dupes", "--db", str(db)]).exit_code == 0  # read from the catalog instead


# -- 3. two scans at once -----------------------------------------------------------------------

def test_3_scan_refused_while_another_writer_holds_the_catalog(library, encoder):
    root, db = library
    with held_lock(db):
        with pytest.raises(CatalogBusy, match="embeddr scan elsewhere"):
            api.scan([root], db=db, encoder=encoder, workers=0)
    report = api.scan([root], db=db, encoder=encoder, workers=0)
    assert report.missing == 0 and report.unchanged == report.seen


def test_3_a_run_only_marks_gone_what_no_later_run_saw(library):
    root, db = library
    with Catalog(db) as cat:
        early, late = cat.begin_run("sscd-distilled", [str(root)]), cat.begin_run("sscd-distilled", [str(root)])
        cat.touch([r.path for r in cat.files()], late)  # the later scan saw every file
        assert cat.mark_missing([str(root)], early) == 0
        assert cat.stats()["missing"] == 0


def test_3_concurrent_scan_processes_lose_nothing(library, tmp_path):
    root, db = library
    for name in DERIVED:  # something new to scan, so both runs have work
        shutil.copy(root / "photos" / f"{name}.jpg", root / "copies" / f"{name}_again.jpg")
    procs = [subprocess.Popen([*CLI, "scan", str(r), "--db", str(db), "--quiet", "--workers", "0", *extra],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r, extra in ((root, []), (root / "copies", ["--wait"]))]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode in (0, 2), err
        if p.returncode == 2:
            assert "another embeddr command is writing" in err and "Traceback" not in err
    with Catalog(db) as cat:
        assert cat.stats()["missing"] == 0
        on_disk = {str(p) for p in root.rglob("*.jpg")}
        assert on_disk - {r.path for r in cat.files()} <= {str(p) for p in (root / "copies").glob("*_again.jpg")}


# -- 4. a torn journal tail ---------------------------------------------------------------------

def test_4_undo_twice_after_a_torn_last_line(library, tmp_path):
    root, db = library
    before = {str(p): sha(p) for p in root.rglob("*.jpg")}
    journal = tmp_path / "j.jsonl"
    api.apply_duplicates(db, action="move", quarantine=tmp_path / "q", journal=journal, yes=True)
    with open(journal, "a") as fh:
        fh.write('{"type": "undo", "id": 3, "pa')  # power cut mid-write
    first = actions.undo(journal)
    assert first.counts == {"restored": len(DERIVED)}
    second = actions.undo(journal)  # the first undo appended AFTER cutting the fragment off
    assert second.counts == {"in place": len(DERIVED)}
    assert all(json.loads(line) for line in journal.read_text().splitlines())
    assert {str(p): sha(p) for p in root.rglob("*.jpg")} == before


# -- 5. uploads stored under the client's extension ------------------------------------------------

@pytest.mark.parametrize("fmt,client_name,ext", [("TGA", "evil.html", ".tga"), ("PCX", "shell.php", ".pcx")])
def test_5_upload_stored_under_its_detected_format(library, encoder, tmp_path, photo_arrays, fmt, client_name, ext):
    from embeddr.ingest import Gate, Upload

    root, db = library
    buf = io.BytesIO()
    Image.fromarray(photo_arrays["coins"]).convert("RGB").save(buf, format=fmt)
    with Gate(db, encoder=encoder, store=tmp_path / "store") as gate:
        (res,) = gate.add([Upload(client_name, buf.getvalue())], only_new=False)
    assert res.added and res.stored.endswith(ext), res.stored
    assert [p.suffix for p in (tmp_path / "store").iterdir()] == [ext]


# -- 6. pixel bombs ---------------------------------------------------------------------------------

def png_bomb(arr: np.ndarray, path: Path, side: int = 13_300) -> Path:
    """A real photo's PNG whose header claims side x side pixels (a few KB that would decode to GBs)."""
    buf = io.BytesIO()
    Image.fromarray(arr).convert("RGB").resize((64, 64)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    ihdr = bytearray(data[12:29])
    ihdr[4:12] = struct.pack(">II", side, side)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))
    return path


def test_6_bomb_refused_before_allocating_pixels(library, encoder, photo_arrays, tmp_path):
    import resource

    from embeddr.decode import load_image
    from embeddr.errors import DecodeError

    root, db = library
    bomb = png_bomb(photo_arrays["camera"], root / "photos" / "bomb.png")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(DecodeError) as exc:
        load_image(str(bomb), min_side=224)
    assert "13300x13300" in exc.value.reason and "--max-pixels" in exc.value.reason
    assert "Pillow" not in exc.value.reason and "89478485" not in exc.value.reason
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss < 200_000  # KiB: nowhere near 3.5 GB
    report = api.scan([root], db=db, encoder=encoder, workers=0)
    with Catalog(db) as cat:
        row = cat.get_file(str(bomb))
    assert report.errors == 1 and row.status == "error" and "--max-pixels" in row.error
    big = api.scan([bomb], db=tmp_path / "b.db", encoder=encoder, workers=0, max_pixels=10 ** 9)
    assert big.errors == 1  # over the raised budget it is decoded (and fails on its truncated data), not refused


def test_6_service_caps_concurrent_decodes(library, encoder, photo_arrays, monkeypatch):
    from embeddr import pipeline
    from embeddr.ingest import Gate, Upload

    root, db = library
    real = pipeline.load_image
    active, peak = [0], [0]
    guard = threading.Lock()

    def counting(*args, **kw):
        with guard:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        try:
            return real(*args, **kw)
        finally:
            with guard:
                active[0] -= 1

    monkeypatch.setattr(pipeline, "load_image", counting)
    buf = io.BytesIO()
    Image.fromarray(photo_arrays["moon"]).convert("RGB").save(buf, format="PNG")
    with Gate(db, encoder=encoder, max_decodes=1) as gate:
        threads = [threading.Thread(target=gate.check, args=([Upload(f"m{i}.png", buf.getvalue())],)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    assert peak[0] == 1


# -- 7. undo trusts the journal -----------------------------------------------------------------------

def test_7_edited_journal_is_refused_and_modes_never_widen(library, tmp_path):
    root, db = library
    journal = tmp_path / "j.jsonl"
    api.apply_duplicates(db, action="move", quarantine=tmp_path / "q", journal=journal, yes=True)
    records = read_journal(journal)
    # an arbitrary file elsewhere, and a hand-written record that would move it and make it setuid
    secret = tmp_path / "elsewhere" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("mine")
    secret.chmod(0o600)
    forged = dict(next(r for r in records if r["type"] == "intent"), id=99, path=str(tmp_path / "victim" / "x.jpg"),
                  dest=str(secret), hash=sha(secret), mode=0o104777)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps(r) + "\n" for r in [*records, forged]))
    with pytest.raises(JournalError, match="outside"):
        actions.undo(bad)
    assert secret.read_text() == "mine" and stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert not (tmp_path / "victim").exists()
    # a record of this very apply with a forged mode: restored, but never setuid nor wider than it was
    modes = {r["path"]: stat.S_IMODE(r["mode"]) for r in records if r["type"] == "intent"}
    widened = [dict(r, mode=0o106777) if r["type"] == "intent" else r for r in records]
    journal.write_text("".join(json.dumps(r) + "\n" for r in widened))
    assert actions.undo(journal).counts == {"restored": len(DERIVED)}
    for path, mode in modes.items():
        now = stat.S_IMODE(os.stat(path).st_mode)
        assert now & ~mode == 0 and not now & (stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX)


def test_7_journal_record_without_path_is_one_error_line(library, tmp_path, runner):
    root, db = library
    journal = tmp_path / "j.jsonl"
    api.apply_duplicates(db, action="move", quarantine=tmp_path / "q", journal=journal, yes=True)
    records = read_journal(journal)
    for r in records:
        if r["type"] == "intent":
            del r["path"]
            break
    journal.write_text("".join(json.dumps(r) + "\n" for r in records))
    moved = sorted(p.name for p in (tmp_path / "q").rglob("*.jpg"))
    res = runner.invoke(app, ["undo", str(journal)])
    assert res.exit_code == 2 and len(error_lines(res.output)) == 1
    assert "without 'path'" in res.output and str(journal) in res.output and "Traceback" not in res.output
    assert sorted(p.name for p in (tmp_path / "q").rglob("*.jpg")) == moved  # nothing changed


# -- 8. file names that are not UTF-8 ------------------------------------------------------------------

def test_8_non_utf8_names_scan_check_and_show(library, encoder, tmp_path, runner, photo_arrays):
    from embeddr.ingest import Gate

    root, db = library
    folder = os.fsencode(root / "photos")
    raw = os.path.join(folder, b"caf\xe9-\xff.jpg")
    shutil.copy(root / "copies" / "coffee_small.jpg", raw)
    name = os.fsdecode(raw)
    report = api.scan([root], db=db, encoder=encoder, workers=0)
    assert report.errors == 0 and report.processed == 1
    with Catalog(db) as cat:
        row = cat.get_file(name)
        assert row is not None and row.status == "ok" and os.fsencode(row.path) == raw
    assert any(name in g for g in groups_of(db))
    fresh = tmp_path / "in"
    fresh.mkdir()
    new_raw = os.path.join(os.fsencode(fresh), b"n\xe9w.png")
    save_photo(photo_arrays["retina"], Path(os.fsdecode(new_raw)))
    with Gate(db, encoder=encoder) as gate:
        (res,) = gate.add([os.fsdecode(new_raw)], only_new=False)
        assert res.added and res.status == "ok"
        (again,) = gate.check([os.fsdecode(new_raw)])
        assert os.fsdecode(new_raw) in [m.path for m in again.matches]
    out = runner.invoke(app, ["dupes", "--db", str(db), "--format", "json"])
    assert out.exit_code == 0, out.output
    assert "caf\\udce9-\\udcff.jpg" in out.output  # escaped as JSON allows, never a crash
    assert any(os.fsencode(m["path"]) == raw for g in json.loads(out.output)["groups"] for m in g["members"])
    out = runner.invoke(app, ["dupes", "--db", str(db)])
    assert out.exit_code == 0 and "caf\\xe9-\\xff.jpg" in out.output  # the table shows \xNN
    html = runner.invoke(app, ["report", "--db", str(db), "--html", str(tmp_path / "review")])
    assert html.exit_code == 0, html.output
    assert "caf\\udce9-\\udcff.jpg" in "".join(p.read_text() for p in (tmp_path / "review" / "pages").glob("*.js"))
    vfile = tmp_path / "v.json"  # a verdict on that file, as the report's download writes it, is accepted
    other = next(p for g in groups_of(db) if name in g for p in g if p != name)
    vfile.write_text(json.dumps({"verdicts": [{"a": name, "b": other, "verdict": "not_duplicate"}]}))
    res = runner.invoke(app, ["verdicts", "import", str(vfile), "--db", str(db)])
    assert res.exit_code == 0 and "imported 1" in res.output, res.output


def test_8_json_output_with_a_name_that_is_not_utf8_is_valid_json(library, encoder, tmp_path, runner):
    """dupes, apply, report, check and undo --format json: valid JSON (a byte 0xNN that is not UTF-8 is the
    escape \\udcNN: json.loads and os.fsencode give the name's bytes back), on stdout and in --output files;
    the tables put such a name in line with the others (measured as shown, \\xNN)."""
    root, db = library
    raw = os.path.join(os.fsencode(root / "photos"), b"a\xffb.jpg")
    shutil.copy(root / "photos" / "rocket.jpg", raw)
    api.scan([root / "photos", root / "copies"], db=db, encoder=encoder, workers=0)

    def names(value) -> set[bytes]:
        if isinstance(value, dict):
            return set().union(*(names(v) for v in value.values())) if value else set()
        if isinstance(value, list):
            return set().union(*(names(v) for v in value)) if value else set()
        return {os.fsencode(value)} if isinstance(value, str) and value.endswith(".jpg") else set()

    j = tmp_path / "j.jsonl"
    for args, code in ((["dupes"], 0), (["apply"], 0), (["report"], 0), (["check", str(root / "photos")], 1),
                       (["apply", "--action", "hardlink", "--journal", str(j), "--yes"], 0)):
        res = runner.invoke(app, [*args, "--db", str(db), "--format", "json"])
        assert res.exit_code == code, res.output
        assert raw in names(json.loads(res.output)), args
    res = runner.invoke(app, ["undo", str(j), "--format", "json"])
    assert res.exit_code == 0 and raw in names(json.loads(res.output))
    res = runner.invoke(app, ["dupes", "--db", str(db), "--format", "json", "--output", str(tmp_path / "d.json")])
    assert res.exit_code == 0 and raw in names(json.loads((tmp_path / "d.json").read_text(encoding="utf-8")))

    for args in (["dupes"], ["apply"]):
        res = runner.invoke(app, [*args, "--db", str(db)])
        assert res.exit_code == 0, res.output
        tables, lines = [], res.output.splitlines()
        for n, line in enumerate(lines):
            if line.startswith("┏"):  # a table, up to its bottom line
                tables.append(lines[n: next(m for m in range(n, len(lines)) if lines[m].startswith("└")) + 1])
        (table,) = [t for t in tables if any("a\\xffb.jpg" in line for line in t)]
        assert len({len(line) for line in table}) == 1, table  # every line of the table as wide as the others


# -- 9. decode workers ---------------------------------------------------------------------------------

def test_9_a_dead_worker_costs_its_batch_not_the_scan(photo_dir, encoder, tmp_path, monkeypatch):
    from embeddr import pipeline

    real = pipeline.decode_one

    def oom_on_coffee(c, *args, **kw):  # runs inside the forked worker: it dies like an OOM kill
        if c.path.endswith("coffee.jpg"):
            os.kill(os.getpid(), signal.SIGKILL)
        return real(c, *args, **kw)

    monkeypatch.setattr(pipeline, "decode_one", oom_on_coffee)
    with Catalog(tmp_path / "w.db") as cat:
        report = pipeline.scan([photo_dir], cat, encoder, workers=2, batch_size=2)
        rows = {Path(r.path).name: r for r in cat.files(None)}
    assert report.errors == 2  # coffee.jpg and the other file of its batch
    dead = [n for n, r in rows.items() if r.status == "error"]
    assert "coffee.jpg" in dead and all(pipeline.WORKER_DIED == rows[n].error for n in dead)
    assert sum(r.status == "ok" for r in rows.values()) == len(rows) - 2


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] not in ("Z", "X")
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_9_workers_die_with_a_killed_scan(tmp_path):
    """A process that made a decode pool is killed -9: its workers go too (no orphans)."""
    script = (
        "import os, sys\n"
        "from embeddr.pipeline import _new_pool\n"
        "pool = _new_pool(2)\n"
        "pids = sorted({pool.submit(os.getpid).result() for _ in range(8)})\n"
        "print(' '.join(map(str, pids)), flush=True)\n"
        "sys.stdin.read()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    workers = [int(p) for p in proc.stdout.readline().split()]
    assert workers and all(_alive(p) for p in workers)
    proc.kill()
    proc.wait(timeout=60)
    deadline = __import__("time").monotonic() + 30  # a bound for the kernel to deliver, not a sleep
    while any(_alive(p) for p in workers) and __import__("time").monotonic() < deadline:
        os.sched_yield()
    assert not any(_alive(p) for p in workers)


def test_9_killed_runs_show_as_interrupted(library, runner, encoder):
    root, db = library
    with Catalog(db) as cat:
        cat.begin_run("sscd-distilled", [str(root)])  # a scan that was kill -9ed: 'running' forever
    assert api.info(db)["runs"][0]["status"] == "interrupted"
    with held_lock(db):  # while a writer lives, its run is running
        assert api.info(db)["runs"][0]["status"] == "running"
    api.scan([root], db=db, encoder=encoder, workers=0)  # the next writer records it
    with Catalog(db) as cat:
        assert cat.runs(5)[1]["status"] == "interrupted"


# -- 10. the service: NUL names, catalog replaced or deleted ---------------------------------------------

@pytest.fixture
def client(library, encoder, tmp_path):
    from fastapi.testclient import TestClient

    from embeddr.ingest import Gate
    from embeddr.server import create_app

    root, db = library
    gate = Gate(db, encoder=encoder, store=tmp_path / "store")
    with TestClient(create_app(gate, max_upload_mb=5)) as c:
        yield c, db, root
    gate.close()


def _png(arr) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


def test_10_nul_in_upload_name_is_not_a_500(client, photo_arrays):
    c, db, root = client
    r = c.post("/add", params={"all": "true"}, files={"files": ("x.\x00php", _png(photo_arrays["moon"]), "image/png")})
    assert r.status_code < 500, r.text
    if r.status_code == 200:
        assert r.json()["results"][0]["stored"].endswith(".png")


def test_10_catalog_replaced_while_serving_is_503(client, photo_arrays, tmp_path):
    c, db, root = client
    assert c.get("/health").status_code == 200
    other = tmp_path / "other.db"
    shutil.copy(db, other)
    os.replace(other, db)
    health = c.get("/health")
    assert health.status_code == 503 and "replaced" in health.json()["error"]["message"]
    r = c.post("/add", files={"files": ("moon.png", _png(photo_arrays["moon"]), "image/png")})
    assert r.status_code == 503


def test_10_catalog_deleted_while_serving_adds_are_not_lost_silently(client, photo_arrays):
    c, db, root = client
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    r = c.post("/add", files={"files": ("moon.png", _png(photo_arrays["moon"]), "image/png")})
    assert r.status_code == 503 and "deleted" in r.json()["error"]["message"]
    assert c.get("/health").status_code == 503


# -- 11. one error line, exit 2, nothing changed ------------------------------------------------------------

def test_11_db_that_is_a_folder_or_cannot_be_created(photo_dir, tmp_path, runner):
    folder = tmp_path / "adir"
    folder.mkdir()
    res = runner.invoke(app, ["scan", str(photo_dir), "--db", str(folder), "--quiet"])
    assert res.exit_code == 2 and len(error_lines(res.output)) == 1 and "is a folder" in res.output
    assert list(folder.iterdir()) == [] and not list(tmp_path.glob("*.lock"))
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    res = runner.invoke(app, ["scan", str(photo_dir), "--db", str(blocker / "sub" / "c.db"), "--quiet"])
    assert res.exit_code == 2 and len(error_lines(res.output)) == 1 and str(blocker) in res.output
    assert "Traceback" not in res.output


@pytest.fixture
def tiny_disk(tmp_path):
    """A small tmpfs (needs root), or skip."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(folder: Path, leave: int) -> None:
    st = os.statvfs(folder)
    free = st.f_bavail * st.f_frsize
    with open(folder / "filler", "wb") as fh:
        fh.write(b"\0" * max(0, free - leave))


def test_11_disk_full_in_scan_and_in_the_journal(library, encoder, tiny_disk, runner, photo_dir, tmp_path):
    root, db = library
    # scan: a catalog on the small disk, then the disk fills up
    db2 = tiny_disk / "c.db"
    first = sorted((root / "photos").glob("*.jpg"))[:1]
    api.scan(first, db=db2, encoder=encoder, workers=0)
    fill(tiny_disk, 4096)
    with pytest.raises(CatalogError, match=r"c\.db.*(full|cannot)"):
        api.scan([root], db=db2, encoder=encoder, workers=0)
    (tiny_disk / "filler").unlink()  # space again: what was committed is intact, and the scan resumes
    with Catalog(db2) as cat:
        assert cat.stats()["ok"] >= 1
    assert api.scan([root], db=db2, encoder=encoder, workers=0).errors == 0
    # journal: apply with its journal on the full disk changes nothing
    fill(tiny_disk, 0)
    before = sorted(str(p) for p in root.rglob("*.jpg"))
    res = runner.invoke(app, ["apply", "--db", str(db), "--action", "move", "--quarantine", str(tmp_path / "q"),
                              "--journal", str(tiny_disk / "j.jsonl"), "--yes"])
    assert res.exit_code == 2 and len(error_lines(res.output)) == 1 and "j.jsonl" in res.output
    assert "Traceback" not in res.output and sorted(str(p) for p in root.rglob("*.jpg")) == before


def test_11_disk_full_simulated(library, tmp_path, monkeypatch, runner):
    """Where a tmpfs cannot be mounted: ENOSPC from the journal's fsync."""
    from embeddr import journal as journal_mod

    root, db = library
    before = sorted(str(p) for p in root.rglob("*.jpg"))

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(journal_mod.os, "fsync", full)
    res = runner.invoke(app, ["apply", "--db", str(db), "--action", "move", "--quarantine", str(tmp_path / "q"),
                              "--journal", str(tmp_path / "j.jsonl"), "--yes"])
    assert res.exit_code == 2 and len(error_lines(res.output)) == 1 and "No space left" in res.output
    assert sorted(str(p) for p in root.rglob("*.jpg")) == before


def test_11_verdicts_nested_deeply_or_with_surrogates(library, tmp_path, runner):
    root, db = library
    deep = tmp_path / "deep.json"
    deep.write_text('{"verdicts": ' + "[" * 200_000 + "]" * 200_000 + "}")
    res = runner.invoke(app, ["verdicts", "import", str(deep), "--db", str(db)])
    assert res.exit_code == 2 and len(error_lines(res.output)) == 1 and "nested too deeply" in res.output
    sur = tmp_path / "sur.json"
    sur.write_text('{"verdicts": [{"a": "/x/\\ud800.jpg", "b": "/x/b.jpg", "verdict": "not_duplicate"}]}')
    res = runner.invoke(app, ["verdicts", "import", str(sur), "--db", str(db)])
    assert res.exit_code == 2 and len(error_lines(res.output)) == 1 and "not valid Unicode" in res.output
    with Catalog(db) as cat:
        assert cat.stats()["verdicts"] == 0


def test_11_changed_dim_and_foreign_sqlite(library, tmp_path, runner):
    root, db = library
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE meta SET value = '128' WHERE key = 'dim'")
    res = runner.invoke(app, ["dupes", "--db", str(db)])
    assert res.exit_code == 2 and len(error_lines(res.output)) == 1 and "'dim'" in res.output and "damaged" in res.output
    foreign = tmp_path / "app.sqlite"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    res = runner.invoke(app, ["scan", str(root), "--db", str(foreign), "--quiet"])
    assert res.exit_code == 2 and len(error_lines(res.output)) == 1 and "not an embeddr catalog" in res.output
    with sqlite3.connect(foreign) as conn:
        assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")] == ["customers"]


# -- 12. unclear cases ---------------------------------------------------------------------------------------

def test_12_special_files_named_jpg_are_reported(library, encoder, tmp_path, runner):
    root, db = library
    odd = root / "odd"
    odd.mkdir()
    os.mkfifo(odd / "fifo.jpg")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(odd / "sock.jpg"))
    os.symlink("/dev/zero", odd / "zero.jpg")
    try:
        report = api.scan([root], db=db, encoder=encoder, workers=0)
        with Catalog(db) as cat:
            rows = {Path(r.path).name: r for r in cat.files("error")}
        assert report.errors == 3
        assert "FIFO" in rows["fifo.jpg"].error and "socket" in rows["sock.jpg"].error
        assert "character device" in rows["zero.jpg"].error
        res = runner.invoke(app, ["check", str(odd / "zero.jpg"), "--db", str(db)])
        assert res.exit_code == 2 and "character device" in res.output and "no such file" not in res.output
    finally:
        sock.close()


def test_12_verdicts_outside_the_catalog_are_rejected_with_counts(library, tmp_path, runner):
    root, db = library
    a, b = sorted(str(p) for p in (root / "photos").glob("*.jpg"))[:2]
    vfile = tmp_path / "v.json"
    vfile.write_text(json.dumps({"verdicts": [
        {"a": a, "b": b, "verdict": "not_duplicate"},
        {"a": a, "b": "/etc/passwd", "verdict": "not_duplicate"},
        {"a": a, "b": "/x/\u0000.jpg", "verdict": "not_duplicate"},
        {"a": a, "b": "/" + "x" * 20_000, "verdict": "not_duplicate"},
    ]}))
    res = runner.invoke(app, ["verdicts", "import", str(vfile), "--db", str(db)])
    assert res.exit_code == 0, res.output
    assert "imported 1" in res.output and "rejected 3" in res.output
    with Catalog(db) as cat:
        assert cat.not_duplicate_pairs() == {(a, b)}
        other_id = "0" * 32
    vfile.write_text(json.dumps({"catalog_id": other_id, "verdicts": [{"a": a, "b": b, "verdict": "not_duplicate"}]}))
    res = runner.invoke(app, ["verdicts", "import", str(vfile), "--db", str(db)])
    assert res.exit_code == 2 and "another catalog" in res.output


def test_12_a_million_verdicts_do_not_slow_dupes(library):
    root, db = library
    with sqlite3.connect(db) as conn:
        conn.executemany("INSERT INTO verdicts (a, b, verdict, source, created) VALUES (?, ?, 'not_duplicate', 'x', 0)",
                         ((f"/nowhere/{i:07d}.jpg", f"/nowhere/{i:07d}b.jpg") for i in range(1_000_000)))
    with Catalog(db) as cat:
        plan = " ".join(r[-1] for r in cat.conn.execute(
            "EXPLAIN QUERY PLAN SELECT v.a, v.b FROM files f CROSS JOIN verdicts v ON v.a = f.path CROSS JOIN files g "
            "ON g.path = v.b WHERE f.status = 'ok' AND g.status = 'ok' AND v.verdict = 'not_duplicate'"))
        assert "SCAN v" not in plan and "SEARCH v" in plan  # verdicts are looked up per live file, never scanned
        assert cat.not_duplicate_pairs() == set()
    assert len(groups_of(db)) == len(DERIVED)


def test_12_file_rewritten_during_the_scan(photo_dir, encoder, tmp_path, monkeypatch, photo_arrays):
    from embeddr import pipeline

    victim = photo_dir / "camera.jpg"
    real = pipeline.content_hash
    calls = []

    def rewrite_while_hashing(path):
        digest = real(path)
        if str(path) == str(victim) and not calls:
            calls.append(path)
            save_photo(photo_arrays["moon"], victim, long_side=300)  # another version lands mid-read
            os.utime(victim, ns=(1, 1))
        return digest

    monkeypatch.setattr(pipeline, "content_hash", rewrite_while_hashing)
    db = tmp_path / "r.db"
    api.scan([photo_dir], db=db, encoder=encoder, workers=0)
    with Catalog(db) as cat:
        row = cat.get_file(str(victim))
    assert row.status == "ok" and row.hash == sha(victim) and row.size == victim.stat().st_size
    assert row.mtime_ns == 1
