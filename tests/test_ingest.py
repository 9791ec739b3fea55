"""Ingest gate: Gate.check / Gate.add on a real catalog, the micro-batcher, and `embeddr check`
(CliRunner, and exit codes driving a real bash pipeline)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import faiss
import numpy as np
import pytest
from conftest import save_photo
from PIL import Image

from embeddr import api
from embeddr.cli import app
from embeddr.errors import CatalogError, ModelMismatch
from embeddr.index import index_path, max_id
from embeddr.ingest import Gate, MicroBatcher, RWLock, Upload

CATALOGUED = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "retina", "immunohistochemistry")


def crop(src: Path, dst: Path, frac: float = 0.1) -> Path:
    with Image.open(src) as im:
        w, h = im.size
        im.crop((int(w * frac), int(h * frac), int(w * (1 - frac)), int(h * (1 - frac)))).save(dst, quality=88)
    return dst


@pytest.fixture(scope="module")
def world(tmp_path_factory, photo_arrays, encoder):
    """A catalog of 7 real photos (sscd-distilled) and new files: a crop, an unrelated photo, a corrupt file."""
    root = tmp_path_factory.mktemp("ingest")
    photos = root / "photos"
    for name in CATALOGUED:
        save_photo(photo_arrays[name], photos / f"{name}.jpg")
    db = root / "base.db"
    api.scan([photos], db=db, encoder=encoder, workers=0)
    new = root / "new"
    new.mkdir()
    files = {
        "crop": crop(photos / "astronaut.jpg", new / "astronaut_crop.jpg"),
        "unrelated": save_photo(photo_arrays["camera"], new / "camera.jpg"),
        "other": save_photo(photo_arrays["coins"], new / "coins.png"),
        "copy": Path(shutil.copy(photos / "chelsea.jpg", new / "chelsea_copy.jpg")),
    }
    corrupt = new / "broken.jpg"
    corrupt.write_bytes((photos / "coffee.jpg").read_bytes()[:300])  # a JPEG cut short
    files["corrupt"] = corrupt
    return {"root": root, "photos": photos, "db": db, **files}


@pytest.fixture
def db(world, tmp_path):
    """A private copy of the catalog and its index (tests that add must not share one)."""
    dst = tmp_path / "cat.db"
    shutil.copy(world["db"], dst)
    shutil.copy(index_path(api.open_catalog(world["db"])), dst.with_name("cat.db.faiss"))
    return dst


def test_check_finds_near_and_exact_and_adds_nothing(world, encoder):
    with Gate(world["db"], encoder=encoder) as gate:
        before = gate.stats()
        res = gate.check([world["crop"], world["unrelated"], world["copy"], world["corrupt"]])
        crop_r, unrel, copy_r, bad = res
        assert crop_r.status == "ok" and crop_r.duplicate
        assert [(m.path, m.kind) for m in crop_r.matches] == [(str(world["photos"] / "astronaut.jpg"), "near")]
        assert gate.threshold <= crop_r.matches[0].score < 1.0
        assert unrel.status == "ok" and not unrel.duplicate and unrel.matches == []
        assert copy_r.matches[0].kind == "exact" and copy_r.matches[0].score == 1.0
        assert copy_r.matches[0].path == str(world["photos"] / "chelsea.jpg")
        assert bad.status == "error" and "truncated" in bad.error.lower(), bad.error
        assert not bad.duplicate
        # uploaded bytes take the same path and give the same answer
        up = gate.check([Upload("x.jpg", world["crop"].read_bytes()), Upload("y.txt", b"hello, not an image")])
        assert up[0].path == "x.jpg" and [m.as_dict() for m in up[0].matches] == [m.as_dict() for m in crop_r.matches]
        assert up[1].status == "error" and "not a recognised image format" in up[1].error
        after = gate.stats()
        assert (after["files"], after["vectors"], after["index_vectors"]) == (before["files"], before["vectors"], before["index_vectors"])


def test_add_is_durable_incremental_and_skips_duplicates(db, world, encoder, tmp_path):
    top_before = max_id(faiss.read_index(str(db) + ".faiss"))
    with Gate(db, encoder=encoder, store=tmp_path / "store") as gate:
        res = gate.add([world["unrelated"], world["crop"], Upload("again.jpg", world["unrelated"].read_bytes()),
                        world["corrupt"], Upload("coins.png", world["other"].read_bytes())])
        unrel, crop_r, again, bad, up = res
        assert unrel.added and unrel.stored == str(world["unrelated"])
        assert not crop_r.added and crop_r.duplicate
        assert not again.added and again.matches[0].kind == "exact" and again.matches[0].path == str(world["unrelated"])
        assert [m.path for m in gate.check([Upload("c.png", world["other"].read_bytes())])[0].matches] == [up.stored]
        assert bad.status == "error" and not bad.added
        assert up.added and Path(up.stored).parent == (tmp_path / "store").resolve()
        assert Path(up.stored).name == f"{up.hash}.png" and Path(up.stored).read_bytes() == world["other"].read_bytes()
        assert gate.index.ntotal == 9
    # a fresh gate (a restart) finds them; the index file grew by appending ids, it was not rebuilt
    index = faiss.read_index(str(db) + ".faiss")
    assert index.ntotal == 9 and max_id(index) == top_before + 2
    assert sorted(faiss.vector_to_array(index.id_map).tolist()) == list(range(1, top_before + 3))
    with Gate(db, encoder=encoder) as gate:
        again = gate.check([world["unrelated"], world["other"]])
        assert again[0].matches[0].kind == "exact" and again[1].matches[0].path == up.stored
        assert gate.add([world["crop"]], only_new=False)[0].added  # --add-all adds duplicates too


def test_gate_sees_vectors_added_by_another_process(db, world, encoder):
    with Gate(db, encoder=encoder) as reader, Gate(db, encoder=encoder) as writer:
        assert not reader.check([world["unrelated"]])[0].duplicate
        writer.add([world["unrelated"]])
        assert reader.check([world["unrelated"]])[0].matches[0].kind == "exact"
        assert reader.index.ntotal == writer.index.ntotal


def test_model_mismatch_and_missing_catalog_refused(world, tmp_path, runner):
    with pytest.raises(ModelMismatch, match="built with model 'sscd-distilled', not 'phash'"):
        Gate(world["db"], model="phash")
    with pytest.raises(CatalogError, match="no catalog"):
        Gate(tmp_path / "nope.db")
    res = runner.invoke(app, ["check", str(world["crop"]), "--db", str(world["db"]), "--model", "dhash"])
    assert res.exit_code == 2 and "not 'dhash'" in res.output and "Use --model sscd-distilled" in res.output
    res = runner.invoke(app, ["check", str(world["crop"]), "--db", str(tmp_path / "nope.db")])
    assert res.exit_code == 2 and "no catalog" in res.output


def test_concurrent_checks_with_micro_batching(world, encoder):
    """Requests that arrive while the encoder is busy are encoded together in ONE call, and each
    caller still gets its own results. Deterministic: the first encoder call is held until the other
    eleven requests are queued (no timing). Fails when micro-batching is off or batches nothing."""
    with Gate(world["db"], encoder=encoder, micro_batch=True, max_wait_ms=0) as gate:
        want = {p: [m.as_dict() for m in gate.check([world[p]])[0].matches] for p in ("crop", "unrelated", "copy")}
        assert gate.batcher is not None
        gate.batcher.batches = []
        held = GatedEncoder(encoder.encode)
        gate.batcher.encode_fn = held
        queued = threading.Semaphore(0)
        submit = gate.batcher.submit

        def counting_submit(batch):
            fut = submit(batch)
            queued.release()
            return fut

        gate.batcher.submit = counting_submit
        jobs = ["crop", "unrelated", "copy"] * 4
        with ThreadPoolExecutor(len(jobs)) as pool:
            first = pool.submit(lambda: gate.check([world[jobs[0]]])[0])
            assert held.entered.wait(60)  # the worker is inside the first encoder call
            rest = [pool.submit(lambda p=p: gate.check([world[p]])[0]) for p in jobs[1:]]
            for _ in range(len(jobs)):  # the first request and the 11 others are all in the batcher
                assert queued.acquire(timeout=60)
            held.release.set()
            got = [first.result(60), *(f.result(60) for f in rest)]
        for p, r in zip(jobs, got):
            assert _close(r.matches, want[p]), (p, r.matches)
        assert held.calls == [1, len(jobs) - 1]  # the eleven waiting requests went through the encoder at once
        assert gate.batcher.batches == [1, len(jobs) - 1]


def _close(matches, want) -> bool:
    return [(m.path, m.kind) for m in matches] == [(w["path"], w["kind"]) for w in want] and all(
        abs(m.score - w["score"]) < 1e-4 for m, w in zip(matches, want))


# -- micro-batcher and lock: deterministic, no timing ---------------------------------------------
class GatedEncoder:
    """encode = ``fn`` (default: x * 2 summed per image); the first call blocks until released (so others queue up)."""

    def __init__(self, fn=None):
        self.entered, self.release, self.calls = threading.Event(), threading.Event(), []
        self.fn = fn or (lambda batch: batch.reshape(len(batch), -1).sum(axis=1, keepdims=True).astype(np.float32) * 2)

    def __call__(self, batch):
        self.calls.append(len(batch))
        if len(self.calls) == 1:
            self.entered.set()
            assert self.release.wait(60)
        return self.fn(batch)


def test_micro_batcher_groups_queued_requests_and_splits_results():
    enc = GatedEncoder()
    mb = MicroBatcher(enc, max_batch=5, max_wait_ms=0)
    try:
        first = mb.submit(np.full((1, 2), 1))
        assert enc.entered.wait(30)  # the worker is inside the first encode call
        futs = [mb.submit(np.full((n, 2), v)) for n, v in ((2, 3), (1, 5), (2, 7), (3, 11))]
        enc.release.set()
        assert first.result(30).tolist() == [[4.0]]
        assert [f.result(30).ravel().tolist() for f in futs] == [[12, 12], [20], [28, 28], [44, 44, 44]]
        assert enc.calls == [1, 5, 3]  # queued requests went together, up to max_batch, in order
    finally:
        mb.close()


def test_micro_batcher_hands_errors_to_every_caller():
    def boom(batch):
        raise ValueError("encoder exploded")

    mb = MicroBatcher(boom, max_batch=8, max_wait_ms=0)
    try:
        with pytest.raises(ValueError, match="exploded"):
            mb.encode(np.zeros((2, 2)))
    finally:
        mb.close()


def test_rwlock_writer_excludes_readers():
    lock, log = RWLock(), []
    lock.acquire_read()
    writer_in = threading.Event()

    def write():
        with lock.write():
            writer_in.set()
            log.append("w")

    t = threading.Thread(target=write)
    t.start()
    assert not writer_in.wait(0.05)  # bounded: the writer cannot enter while a reader holds the lock
    log.append("r")
    lock.release_read()
    t.join(30)
    assert log == ["r", "w"]


# -- CLI -------------------------------------------------------------------------------------------
def test_cli_check_formats_and_exit_codes(world, runner):
    db = str(world["db"])
    res = runner.invoke(app, ["check", str(world["unrelated"]), "--db", db])
    assert res.exit_code == 0 and "unique" in res.output
    res = runner.invoke(app, ["check", str(world["crop"]), str(world["unrelated"]), "--db", db, "--format", "json"])
    assert res.exit_code == 1
    data = json.loads(res.output)
    assert data["model"] == "sscd-distilled" and isinstance(data["threshold"], float)
    by = {Path(r["path"]).name: r for r in data["results"]}
    assert by["astronaut_crop.jpg"]["duplicate"] and by["astronaut_crop.jpg"]["matches"][0]["kind"] == "near"
    assert set(by["astronaut_crop.jpg"]["matches"][0]) == {"path", "score", "kind"}
    assert by["camera.jpg"] == {**by["camera.jpg"], "status": "ok", "error": None, "duplicate": False, "matches": []}
    res = runner.invoke(app, ["check", str(world["root"] / "new"), "--db", db, "--format", "csv"])
    assert res.exit_code == 2  # the folder holds a corrupt file
    lines = res.output.strip().splitlines()
    assert lines[0] == "path,status,error,duplicate,added,match,score,kind"
    assert any("broken.jpg,error," in line for line in lines) and any(",exact" in line for line in lines)


def test_cli_check_add(db, world, runner, tmp_path):
    new = tmp_path / "in"
    new.mkdir()
    shutil.copy(world["unrelated"], new / "a.jpg")
    shutil.copy(world["crop"], new / "b.jpg")
    res = runner.invoke(app, ["check", str(new), "--db", str(db), "--add"])
    assert res.exit_code == 1 and "(added)" in res.output  # b.jpg is a duplicate: not added
    res = runner.invoke(app, ["check", str(new / "a.jpg"), "--db", str(db), "--format", "json"])
    assert res.exit_code == 1 and json.loads(res.output)["results"][0]["matches"][0] == {
        "path": str(new / "a.jpg"), "score": 1.0, "kind": "exact"}
    assert api.info(db)["ok"] == len(CATALOGUED) + 1


def test_exit_codes_drive_a_shell_pipeline(world):
    # the console script of the environment running the tests (another `embeddr` on PATH, a pyenv shim or an
    # older install, would test other code); else the same CLI through this interpreter
    exe = shutil.which("embeddr", path=str(Path(sys.executable).parent))
    cmd = f'"{sys.executable}" -c "from embeddr.cli import main; main()"' if exe is None else f'"{exe}"'
    script = "\n".join(
        f'{cmd} check "{world[k]}" --db "{world["db"]}" --device cpu >/dev/null 2>&1 && echo "{k}: unique" || echo "{k}: dup or error ($?)"'
        for k in ("crop", "unrelated", "corrupt"))
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=300, env={**os.environ})
    assert out.stdout.splitlines() == ["crop: dup or error (1)", "unrelated: unique", "corrupt: dup or error (2)"], out.stderr
