"""apply / undo on real photos with derived duplicates, scanned with sscd-distilled."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from embeddr import actions, api
from embeddr.cli import app
from embeddr.journal import read_journal

DERIVED = ("astronaut", "coffee", "chelsea")  # each gets a half-size JPEG and a PNG copy elsewhere


def tree(root: Path) -> dict[str, tuple[str, int]]:
    """relpath -> (sha256, mtime_ns) of every file (and link) under root."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() or p.is_symlink():
            st = p.lstat()
            data = os.readlink(p).encode() if p.is_symlink() else p.read_bytes()
            out[str(p.relative_to(root))] = (hashlib.sha256(data).hexdigest(), st.st_mtime_ns)
    return out


@pytest.fixture
def library(photo_dir: Path, encoder, tmp_path: Path):
    """lib/photos/ (10 distinct real photos) + lib/copies/ (half-size JPEGs, PNGs) scanned into cat.db."""
    root = tmp_path / "lib"
    root.mkdir()
    photo_dir = Path(shutil.move(photo_dir, root / "photos"))
    copies = root / "copies"
    (copies / "png").mkdir(parents=True)
    for name in DERIVED:
        with Image.open(photo_dir / f"{name}.jpg") as im:
            im.load()
            im.resize((im.width // 2, im.height // 2), Image.Resampling.LANCZOS).save(copies / f"{name}_small.jpg", quality=85)
            im.save(copies / "png" / f"{name}.png")
    db = tmp_path / "cat.db"
    api.scan([photo_dir, copies], db=db, encoder=encoder, workers=0)
    return root, db


def _dupes(db) -> list[set[str]]:
    return [{Path(m.path).name for m in g.members} for g in api.find_duplicates(db).groups]


def test_groups_found(library):
    root, db = library
    groups = _dupes(db)
    for name in DERIVED:
        assert {f"{name}.jpg", f"{name}_small.jpg", f"{name}.png"} in groups


def test_dry_run_touches_nothing(library, runner, tmp_path):
    root, db = library
    before = tree(root)
    res = runner.invoke(app, ["apply", "--db", str(db), "--action", "move", "--quarantine", str(tmp_path / "q")])
    assert res.exit_code == 0, res.output
    assert "dry run" in res.output and "planned" in res.output and "most-pixels" in res.output
    assert tree(root) == before and not (tmp_path / "q").exists()
    assert not list(tmp_path.glob("embeddr-journal-*"))


def _move_all(runner, db: Path, tmp_path: Path):
    """``apply --action move --yes --format json`` into ``tmp_path/q``: (quarantine, journal, the JSON printed)."""
    q, j = tmp_path / "q", tmp_path / "j.jsonl"
    res = runner.invoke(app, ["apply", "--db", str(db), "--action", "move", "--quarantine", str(q), "--journal", str(j),
                              "--yes", "--format", "json"])
    assert res.exit_code == 0, res.output
    return q, j, json.loads(res.output)


def test_move_then_undo_restores_tree(library, runner, tmp_path):
    root, db = library
    before = tree(root)
    q, j, out = _move_all(runner, db, tmp_path)
    assert out["counts"] == {"done": 6}
    # PNGs are canonical (most-pixels ties with the JPEG originals, lossless decides); the rest are quarantined
    assert (q / ".embeddr-ignore").is_file()  # later scans never take the quarantined copies back in
    assert sorted(str(p.relative_to(q)) for p in q.rglob("*") if p.is_file() and p.name != ".embeddr-ignore") == sorted(
        [f"photos/{n}.jpg" for n in DERIVED] + [f"copies/{n}_small.jpg" for n in DERIVED])
    assert all(g["rule"] == "lossless" for g in out["groups"])
    assert out["savings"]["overall"]["duplicate_files"] == 6
    assert _dupes(db) == []  # acted-on files no longer listed
    after = tree(root)
    assert len(after) == len(before) - 6

    res = runner.invoke(app, ["undo", str(j)])
    assert res.exit_code == 0, res.output
    assert "6 restored" in res.output
    assert tree(root) == before  # same paths, same bytes, same mtimes
    assert not q.exists()
    assert len(_dupes(db)) == 3  # catalog counts them again
    res = runner.invoke(app, ["undo", str(j)])  # twice is harmless
    assert res.exit_code == 0 and "6 in place" in res.output
    assert tree(root) == before

    lines = j.read_text().splitlines()
    records = [json.loads(line) for line in lines]  # valid JSON lines
    types = [r["type"] for r in records]
    assert types[0] == "begin" and "end" in types and types.count("intent") == types.count("done") == 6
    for r in records:
        if r["type"] == "intent":
            assert {"path", "hash", "size", "mode", "mtime_ns", "dest", "canonical"} <= set(r)
            done_at = next(i for i, x in enumerate(records) if x["type"] == "done" and x["id"] == r["id"])
            assert records.index(r) < done_at


class Crash(BaseException):
    """Stands in for the process being killed: nothing in apply catches it."""


@pytest.mark.parametrize("action", ["move", "hardlink", "symlink"])
def test_killed_midway_then_undo(library, tmp_path, monkeypatch, action):
    root, db = library
    before = tree(root)
    j = tmp_path / "j.jsonl"
    real_replace = os.replace
    calls = {"n": 0}

    def dying_replace(src, dst, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 4:
            raise Crash()
        return real_replace(src, dst, *a, **kw)

    monkeypatch.setattr(actions.os, "replace", dying_replace)
    with pytest.raises(Crash):
        api.apply_duplicates(db, action=action, quarantine=tmp_path / "q", journal=j, yes=True)
    monkeypatch.setattr(actions.os, "replace", real_replace)
    records = read_journal(j)
    intents = [r for r in records if r["type"] == "intent"]
    done = [r for r in records if r["type"] == "done"]
    assert len(intents) == len(done) + 1 and not any(r["type"] == "end" for r in records)
    assert tree(root) != before
    with open(j, "a") as fh:  # and the crash tore the journal's last line
        fh.write('{"type": "intent", "id": 99, "pa')
    result = actions.undo(j)
    assert not result.problems, result.problems
    assert tree(root) == before
    assert not (tmp_path / "j.jsonl.trash").exists()


def test_changed_file_is_skipped(library, runner, tmp_path):
    root, db = library
    changed = root / "copies" / "coffee_small.jpg"
    with Image.open(changed) as im:  # re-encode: same picture, different bytes
        im.load()
        im.save(changed, quality=50)
    changed_bytes = changed.read_bytes()
    gone = root / "copies" / "chelsea_small.jpg"
    gone.unlink()
    res = runner.invoke(app, ["apply", "--db", str(db), "--action", "move", "--quarantine", str(tmp_path / "q"),
                              "--journal", str(tmp_path / "j.jsonl"), "--yes", "--format", "json"])
    assert res.exit_code == 0, res.output
    steps = {Path(s["path"]).name: s for s in json.loads(res.output)["steps"]}
    assert steps["coffee_small.jpg"]["status"] == "skipped" and "changed" in steps["coffee_small.jpg"]["detail"]
    assert steps["chelsea_small.jpg"]["status"] == "skipped" and "gone" in steps["chelsea_small.jpg"]["detail"]
    assert changed.read_bytes() == changed_bytes
    assert sum(s["status"] == "done" for s in steps.values()) == 4


def test_changed_canonical_protects_its_duplicates(library, tmp_path):
    root, db = library
    canonical = root / "copies" / "png" / "astronaut.png"
    canonical.write_bytes(canonical.read_bytes() + b"\0")
    result = api.apply_duplicates(db, action="hardlink", journal=tmp_path / "j.jsonl", yes=True)
    skipped = {Path(o.step.path).name: o.detail for o in result.outcomes if o.status == "skipped"}
    assert set(skipped) == {"astronaut.jpg", "astronaut_small.jpg"}
    assert all("canonical" in why for why in skipped.values())
    assert not os.path.samefile(root / "photos" / "astronaut.jpg", canonical)


@pytest.mark.parametrize("action", ["hardlink", "symlink", "delete"])
def test_link_and_delete_keep_originals_and_undo(library, runner, tmp_path, action):
    root, db = library
    before = tree(root)
    j = tmp_path / "j.jsonl"
    args = ["apply", "--db", str(db), "--action", action, "--journal", str(j), "--yes"]
    if action == "delete":
        res = runner.invoke(app, args)
        assert res.exit_code == 2 and "--really-delete" in res.output
        assert tree(root) == before and not j.exists()
        args.append("--really-delete")
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    small = root / "copies" / "astronaut_small.jpg"
    canonical = root / "copies" / "png" / "astronaut.png"
    if action == "hardlink":
        assert os.path.samefile(small, canonical) and not small.is_symlink()
    elif action == "symlink":
        assert small.is_symlink() and small.resolve() == canonical.resolve()
    else:
        assert not small.exists()
    trash = sorted(p.name for p in Path(str(j) + ".trash").rglob("*") if p.is_file() and p.name != ".embeddr-ignore")
    assert trash == sorted([f"{n}.jpg" for n in DERIVED] + [f"{n}_small.jpg" for n in DERIVED])
    res = runner.invoke(app, ["undo", str(j)])
    assert res.exit_code == 0, res.output
    assert tree(root) == before


def _save(arr: np.ndarray, path: Path, side: int) -> Path:
    img = Image.fromarray(arr).convert("RGB").resize((side, side * 3 // 4), Image.Resampling.LANCZOS)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **({"quality": 92} if path.suffix == ".jpg" else {}))
    return path


def test_mixed_group_follows_rules_and_keep_in(photo_arrays, encoder, runner, tmp_path):
    arr = photo_arrays["astronaut"]
    png = _save(arr, tmp_path / "lib" / "png" / "astronaut.png", 2000)
    big = _save(arr, tmp_path / "lib" / "jpeg" / "astronaut.jpg", 2000)
    small = _save(arr, tmp_path / "lib" / "archive" / "astronaut.jpg", 500)
    _save(photo_arrays["rocket"], tmp_path / "lib" / "jpeg" / "rocket.jpg", 500)
    db = tmp_path / "m.db"
    api.scan([tmp_path / "lib"], db=db, encoder=encoder, workers=0)

    res = runner.invoke(app, ["apply", "--db", str(db), "--format", "json"])
    assert res.exit_code == 0, res.output
    (group,) = json.loads(res.output)["groups"]
    assert group["canonical"] == str(png) and group["rule"] == "lossless"
    assert "2000x1500 beats 500x375" in group["reason"]  # most-pixels dropped the small copy first
    assert sorted(group["duplicates"]) == sorted([str(big), str(small)])

    res = runner.invoke(app, ["apply", "--db", str(db), "--format", "json", "--keep-in", str(tmp_path / "lib" / "archive")])
    (group,) = json.loads(res.output)["groups"]
    assert group["canonical"] == str(small) and group["rule"] == "keep-in"

    res = runner.invoke(app, ["apply", "--db", str(db), "--format", "json", "--rule", "largest-file"])
    (group,) = json.loads(res.output)["groups"]
    assert group["canonical"] == str(png)  # a 2000 px PNG is the largest file too

    res = runner.invoke(app, ["apply", "--db", str(db), "--format", "json", "--rule", "prefer", "--rule", "most-pixels",
                              "--prefer", str(tmp_path / "lib" / "jpeg")])
    (group,) = json.loads(res.output)["groups"]
    assert group["canonical"] == str(big) and group["rule"] == "prefer"


KILLER = """
import os, signal, sys
from embeddr import actions, api
real, n = os.replace, [0]
def replace(*a, **k):
    n[0] += 1
    if n[0] == int(sys.argv[4]):
        os.kill(os.getpid(), signal.SIGKILL)  # kill -9: no cleanup, no finally
    return real(*a, **k)
actions.os.replace = replace
api.apply_duplicates(sys.argv[1], action="move", quarantine=sys.argv[2], journal=sys.argv[3], yes=True)
"""


def test_kill_9_midway_then_undo(library, tmp_path):
    import signal
    import subprocess
    import sys

    root, db = library
    before = tree(root)
    j = tmp_path / "j.jsonl"
    proc = subprocess.run([sys.executable, "-c", KILLER, str(db), str(tmp_path / "q"), str(j), "3"], capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    types = [r["type"] for r in read_journal(j)]
    assert types.count("intent") == 3 and types.count("done") == 2
    assert tree(root) != before
    assert not actions.undo(j).problems
    assert tree(root) == before


# -- links: a symlink to a copy keeps working; a hard-linked copy frees nothing --------------------

OLD = 1_577_836_800  # 2020-01-01: an older copy, so that the oldest rule alone would keep it


def _linked_library(photo_dir: Path, tmp_path: Path) -> tuple[Path, Path, Path]:
    """lib/zz_long_original_name.jpg (a real photo) with lib/sub/symlink.jpg -> it, and lib/a.jpg: the same
    bytes, modified in 2020 (older, shorter path: every rule but linked would keep a.jpg)."""
    lib = tmp_path / "lib"
    (lib / "sub").mkdir(parents=True)
    original = lib / "zz_long_original_name.jpg"
    shutil.copyfile(photo_dir / "coffee.jpg", original)
    (lib / "sub" / "symlink.jpg").symlink_to("../zz_long_original_name.jpg")
    copy = lib / "a.jpg"
    shutil.copyfile(original, copy)
    os.utime(copy, (OLD, OLD))
    return lib, original, copy


def test_a_file_a_symlink_points_to_is_kept_and_the_link_keeps_working(photo_dir, encoder, runner, tmp_path):
    lib, original, copy = _linked_library(photo_dir, tmp_path)
    db = tmp_path / "cat.db"
    assert api.scan([lib], db=db, encoder=encoder, workers=0).links == 1
    before = tree(lib)
    q, j, out = _move_all(runner, db, tmp_path)
    (group,) = out["groups"]
    assert group["canonical"] == str(original) and group["rule"] == "linked", group
    assert group["links"] == {str(original): [str(lib / "sub" / "symlink.jpg")]}
    assert out["counts"] == {"done": 1} and not copy.exists()
    assert (lib / "sub" / "symlink.jpg").read_bytes() == original.read_bytes()  # the link still resolves
    res = runner.invoke(app, ["undo", str(j)])
    assert res.exit_code == 0 and "1 restored" in res.output, res.output
    assert tree(lib) == before  # byte-identical, same mtimes, the symlink as it was


def test_a_copy_a_symlink_points_to_is_never_moved(photo_dir, encoder, runner, tmp_path):
    """Both copies have a symlink to them: the policy keeps one, and the other is left in place (skipped, in the
    dry run too) rather than break its link; the journal records the skip and undo is harmless."""
    lib, original, copy = _linked_library(photo_dir, tmp_path)
    (lib / "sub" / "link_a.jpg").symlink_to("../a.jpg")
    db = tmp_path / "cat.db"
    assert api.scan([lib], db=db, encoder=encoder, workers=0).links == 2
    before = tree(lib)
    q, j = tmp_path / "q", tmp_path / "j.jsonl"
    args = ["apply", "--db", str(db), "--action", "move", "--quarantine", str(q), "--format", "json"]
    dry = json.loads(runner.invoke(app, args).output)
    assert dry["groups"][0]["canonical"] == str(copy)  # both linked: the rules decide (oldest)
    assert dry["counts"] == {"skipped": 1} and "symlink" in dry["steps"][0]["detail"]
    res = runner.invoke(app, [*args, "--journal", str(j), "--yes"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["counts"] == {"skipped": 1} and str(lib / "sub" / "symlink.jpg") in out["steps"][0]["detail"]
    assert tree(lib) == before
    assert any(json.loads(line)["type"] == "skip" for line in j.read_text().splitlines())
    assert not actions.undo(j).problems and tree(lib) == before
    # a link action keeps the user's symlink working (it then leads to a link to the canonical): not skipped
    j2 = tmp_path / "j2.jsonl"
    res = runner.invoke(app, ["apply", "--db", str(db), "--action", "symlink", "--journal", str(j2), "--yes", "--format", "json"])
    assert json.loads(res.output)["counts"] == {"done": 1}
    assert (lib / "sub" / "symlink.jpg").read_bytes() == copy.read_bytes()
    assert not actions.undo(j2).problems and tree(lib) == before


def test_a_hard_linked_copy_is_not_reclaimable(photo_dir, encoder, runner, tmp_path):
    """A duplicate with another hard link outside the scanned folders frees nothing when it goes: savings count
    it as a duplicate with 0 bytes reclaimable. A second hard link inside them is catalogued as a link, and the
    policy keeps that file, so the other copy is the one that frees its bytes."""
    lib, original, copy = _linked_library(photo_dir, tmp_path)
    (lib / "sub" / "symlink.jpg").unlink()
    outside = tmp_path / "elsewhere" / "same.jpg"
    outside.parent.mkdir()
    os.link(original, outside)
    db = tmp_path / "cat.db"
    api.scan([lib], db=db, encoder=encoder, workers=0)
    sv = json.loads(runner.invoke(app, ["savings", "--db", str(db), "--format", "json"]).output)
    assert sv["overall"]["duplicate_files"] == 1 and sv["overall"]["bytes_reclaimable"] == 0
    os.link(original, lib / "sub" / "hard.jpg")
    api.scan([lib], db=db, encoder=encoder, workers=0)
    res = runner.invoke(app, ["apply", "--db", str(db), "--format", "json"])
    out = json.loads(res.output)
    assert out["groups"][0]["canonical"] == str(original) and out["groups"][0]["rule"] == "linked"
    assert out["savings"]["overall"]["bytes_reclaimable"] == copy.stat().st_size


# -- the quarantine folder: never one the catalog's scans see (a marker there would hide its files) --------

def _stderr_lines(res) -> list[str]:
    return [line for line in res.output.splitlines() if line.strip()]


@pytest.mark.parametrize("where", ["photos", "photos/new", "."])
def test_quarantine_the_scans_see_is_refused_before_anything(library, encoder, runner, tmp_path, where):
    """A --quarantine inside a scanned folder (an existing one with catalogued files, or a new one), or one
    that holds a scanned folder: one error line, exit 2, and nothing written (no marker, no journal, no folder)."""
    root, db = library
    before = tree(root)
    q = (root / where).resolve()
    for yes in ([], ["--yes"]):  # the dry run refuses it too
        res = runner.invoke(app, ["apply", "--db", str(db), "--action", "move", "--quarantine", str(q),
                                  "--journal", str(tmp_path / "j.jsonl"), *yes])
        assert res.exit_code == 2, res.output
        (line,) = _stderr_lines(res)
        assert line.startswith("error: --quarantine ") and "this catalog scans" in line
    assert tree(root) == before  # no .embeddr-ignore anywhere, nothing moved
    assert not (root / "photos" / "new").exists() and not (tmp_path / "j.jsonl").exists()
    # the catalog is as it was: a rescan marks nothing gone, and the duplicates are all still listed
    report = api.scan([root / "photos", root / "copies"], db=db, encoder=encoder, workers=0)
    assert report.missing == 0 and len(_dupes(db)) == 3


def test_quarantine_holding_catalogued_files_is_refused(photo_dir, encoder, tmp_path):
    """Files scanned one by one (no scanned folder holds the quarantine): a quarantine that holds them is refused,
    and plan() refuses a duplicate inside its quarantine instead of skipping it in silence."""
    from embeddr.errors import PolicyError
    from embeddr.policy import Policy, decide

    shutil.copy(photo_dir / "coffee.jpg", photo_dir / "coffee_copy.jpg")
    db = tmp_path / "f.db"
    api.scan([photo_dir / "coffee.jpg", photo_dir / "coffee_copy.jpg", photo_dir / "rocket.jpg"], db=db,
             encoder=encoder, workers=0)
    with pytest.raises(PolicyError, match="holds catalogued files"):
        api.apply_duplicates(db, action="move", quarantine=photo_dir, yes=True, journal=tmp_path / "j.jsonl")
    assert not (photo_dir / ".embeddr-ignore").exists() and not (tmp_path / "j.jsonl").exists()
    decisions = decide(api.find_duplicates(db), Policy())
    with pytest.raises(PolicyError, match="--quarantine"):
        actions.plan(decisions, "move", quarantine=photo_dir)
    assert actions.plan(decisions, "hardlink", quarantine=photo_dir)  # the quarantine is move's alone


def test_quarantine_marker_only_where_apply_may_and_undo_takes_it_away(library, tmp_path):
    """A new quarantine or an existing empty one gets the marker and undo removes it (a folder apply made goes
    too); an existing folder that holds files of its own is never marked."""
    root, db = library
    before = tree(root)
    empty = tmp_path / "empty-q"
    empty.mkdir()
    j1 = tmp_path / "j1.jsonl"
    api.apply_duplicates(db, action="move", quarantine=empty, journal=j1, yes=True)
    assert (empty / ".embeddr-ignore").is_file()
    assert actions.undo(j1).counts == {"restored": 6}
    assert tree(root) == before
    assert empty.is_dir() and list(empty.iterdir()) == []  # the user's folder stays, without our marker

    busy = tmp_path / "busy-q"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    j2 = tmp_path / "j2.jsonl"
    api.apply_duplicates(db, action="move", quarantine=busy, journal=j2, yes=True)
    assert not (busy / ".embeddr-ignore").exists()
    assert actions.undo(j2).counts == {"restored": 6}
    assert tree(root) == before and sorted(p.name for p in busy.iterdir()) == ["notes.txt"]
