"""scan --ray and dupes --ray on a real Ray cluster on loopback: a head node and a second worker node
started with `ray start`, one CPU each. Same catalog, same vectors, same pairs as the local scan;
a worker killed mid-scan loses nothing and counts nothing twice; a stopped job's shards are merged,
not recomputed. Skipped when Ray is not installed."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest
from PIL import Image, ImageEnhance

pytest.importorskip("ray")
pytest.importorskip("ray.data")

from conftest import save_photo  # noqa: E402
from raycluster import LoopbackCluster  # noqa: E402
from test_sources import CAP, TIMEOUT, feed  # noqa: E402,F401 - the HTTP feed fixture

from embeddr import Catalog, api  # noqa: E402
from embeddr.catalog import FileRecord  # noqa: E402
from embeddr.cli import app  # noqa: E402
from embeddr.sources import FetchOptions  # noqa: E402

pytestmark = pytest.mark.slow
N_FILES = 15  # 10 photos, 4 copies of them and a non-image


@pytest.fixture(autouse=True)
def _bounded():
    """A Ray job that hangs (a machine where workers cannot start) fails its test instead of the whole run."""
    import signal

    def expire(*_):
        raise TimeoutError("Ray test took longer than 240 s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(240)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def cluster():
    """The cluster, and this process connected to it once (embeddr reuses a connection it finds)."""
    import ray

    try:
        with LoopbackCluster(nodes=2, cpus=1) as c:
            ray.init(address=c.address, logging_level="WARNING", log_to_driver=False)
            try:
                yield c
            finally:
                ray.shutdown()
    except RuntimeError as exc:  # pragma: no cover - a machine where Ray cannot start
        pytest.skip(f"cannot start a local Ray cluster: {exc}")


@pytest.fixture(scope="module")
def collection(tmp_path_factory, photo_arrays):
    """Real photos, copies of some (byte copy, recolour, crop, thumbnail), a non-image; and its local scan."""
    root = tmp_path_factory.mktemp("raycoll")
    folder = root / "images"
    for name, arr in photo_arrays.items():
        save_photo(arr, folder / f"{name}.jpg")
    (folder / "copies").mkdir()
    (folder / "copies" / "coffee.jpg").write_bytes((folder / "coffee.jpg").read_bytes())
    img = Image.open(folder / "astronaut.jpg")
    ImageEnhance.Color(img).enhance(0.3).save(folder / "copies" / "astronaut-grey.jpg", quality=85)
    w, h = img.size
    img.crop((20, 20, w - 20, h - 20)).save(folder / "copies" / "astronaut-crop.png")
    img2 = Image.open(folder / "chelsea.jpg")
    img2.resize((img2.width // 2, img2.height // 2)).save(folder / "copies" / "chelsea-small.webp")
    (folder / "copies" / "notes.jpg").write_text("not an image")
    local = root / "local.db"
    api.scan([folder], db=local, workers=0)
    return folder, local


def _files(db) -> list[tuple]:
    conn = sqlite3.connect(db)
    rows = sorted(conn.execute("SELECT path, size, mtime_ns, hash, width, height, format, status, error, "
                               "content_width, content_height, item_id FROM files"))
    conn.close()
    return rows


def _vectors(db) -> dict[str, np.ndarray]:
    conn = sqlite3.connect(db)
    out = {h: np.frombuffer(v, np.float32) for h, v in conn.execute("SELECT hash, vec FROM vectors")}
    conn.close()
    return out


def _pairs(report) -> list[tuple[str, str, float, str]]:
    return [(p.a, p.b, round(p.score, 4), p.kind) for p in report.pairs]


def _assert_same_catalog(db, local) -> None:
    assert _files(db) == _files(local)
    va, vb = _vectors(db), _vectors(local)
    assert sorted(va) == sorted(vb)
    for h in va:
        np.testing.assert_allclose(va[h], vb[h], atol=1e-5)
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT COUNT(*), COUNT(DISTINCT path) FROM files").fetchone()[0] == len(_files(local))
    conn.close()


def test_ray_scan_on_a_two_node_loopback_cluster_equals_the_local_scan(cluster, collection, tmp_path, runner):
    import ray

    folder, local = collection
    db = tmp_path / "ray.db"
    res = runner.invoke(app, ["scan", str(folder), "--db", str(db), "--ray", cluster.address, "-q", "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["processed"] == N_FILES and report["errors"] == 1 and report["exact_reused"] == 1
    assert ray.is_initialized()  # the connection the caller made is left to the caller
    _assert_same_catalog(db, local)
    assert _pairs(api.find_duplicates(db)) == _pairs(api.find_duplicates(local))
    # a rerun has nothing to do but retry the unreadable file (as the local scan does)
    again = api.scan([folder], db=db, ray=cluster.address)
    assert again.unchanged == N_FILES - 1 and again.processed == 1 and again.errors == 1

    # dupes --ray: the pair search as Ray tasks, the same report
    res = runner.invoke(app, ["dupes", "--db", str(db), "--ray", cluster.address, "--format", "json"])
    assert res.exit_code == 0, res.output
    ray_report = json.loads(res.stdout)
    local_report = json.loads(runner.invoke(app, ["dupes", "--db", str(local), "--format", "json"]).stdout)
    assert ray_report["engine"].startswith("ray")
    for key in ("threshold", "score", "files", "duplicate_files"):
        assert ray_report[key] == local_report[key], key
    # the same pairs and groups; scores equal to float32 rounding (the two searches sum in another order)
    assert [(p["a"], p["b"], p["kind"]) for p in ray_report["pairs"]] == [(p["a"], p["b"], p["kind"]) for p in local_report["pairs"]]
    np.testing.assert_allclose([p["score"] for p in ray_report["pairs"]], [p["score"] for p in local_report["pairs"]], atol=1e-5)
    assert [g["members"] for g in ray_report["groups"]] == [g["members"] for g in local_report["groups"]]
    assert len(local_report["pairs"]) >= 4


def test_a_worker_killed_mid_scan_loses_nothing_and_counts_nothing_twice(cluster, collection, tmp_path, monkeypatch):
    from embeddr.ray_scan import KILL_ONCE_ENV

    folder, local = collection
    marker = tmp_path / "killed"
    monkeypatch.setenv(KILL_ONCE_ENV, f"{marker}:9")  # the worker decoding input row 9 of 15 SIGKILLs itself, once
    db = tmp_path / "ray.db"
    report = api.scan([folder], db=db, ray=cluster.address)
    assert marker.exists()  # a worker really died mid-job
    assert report.processed == N_FILES and report.errors == 1
    _assert_same_catalog(db, local)


def test_a_stopped_job_resumes_from_its_shards(cluster, collection, tmp_path, monkeypatch):
    """The driver stops after writing a shard but before merging it: the rerun merges that shard from
    disk and sends only the files neither merged nor in the shard to the cluster."""
    import embeddr.ray_scan as rs

    folder, local = collection
    db = tmp_path / "ray.db"
    real_merge, real_wave = rs._merge, rs._run_wave
    calls = []

    def dying_merge(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # between writing shard 2 and merging it
        return real_merge(*args, **kwargs)

    monkeypatch.setattr(rs, "_merge", dying_merge)
    monkeypatch.setattr(rs, "SHARD_ROWS", 4)
    with pytest.raises(KeyboardInterrupt):
        api.scan([folder], db=db, ray=cluster.address, batch_size=4)
    monkeypatch.setattr(rs, "_merge", real_merge)
    with Catalog(db) as catalog:
        shards = list(rs.shard_dir(catalog).glob("*.npz"))
    ok_before = {row[0] for row in _files(db) if row[7] == "ok"}
    assert len(shards) == 1 and 0 < len(ok_before) < N_FILES
    with np.load(shards[0], allow_pickle=True) as z:
        ok_in_shard = {str(p) for p, st in zip(z["path"], z["status"]) if st == "ok"}
        failed_in_shard = sum(st != "ok" for st in z["status"])  # merged, then retried like any failed file
    assert ok_in_shard and not ok_in_shard & ok_before

    sent = []

    def spying_wave(ray, todo, *args):
        sent.extend(todo)
        yield from real_wave(ray, todo, *args)

    monkeypatch.setattr(rs, "_run_wave", spying_wave)
    report = api.scan([folder], db=db, ray=cluster.address, batch_size=4)
    assert not shards[0].exists()
    everything = {row[0] for row in _files(local)}
    assert {c.path for c in sent} == everything - ok_before - ok_in_shard  # completed work is not redone
    assert report.unchanged == len(ok_before) and report.processed == N_FILES - len(ok_before) + failed_in_shard
    with Catalog(db) as catalog:
        assert [r["status"] for r in catalog.runs(2)] == ["done", "interrupted"]
    _assert_same_catalog(db, local)


def test_dupes_ray_equals_the_local_search_on_a_dense_catalog(cluster, tmp_path):
    """Enough vectors for the normalised score's neighbourhood statistics to matter, in many index blocks."""
    from embeddr.dupes import find_duplicates
    from embeddr.presets import get_preset
    from embeddr.ray_dupes import ray_search

    rng = np.random.default_rng(7)
    preset = get_preset("sscd-distilled")
    centres = rng.normal(size=(12, preset.dim)).astype(np.float32)
    vecs = np.concatenate([c + rng.normal(scale=s, size=(30, preset.dim)) for c, s in zip(centres, np.linspace(0.3, 1.2, 12))])
    vecs = (vecs / np.linalg.norm(vecs, axis=1, keepdims=True)).astype(np.float32)
    db = tmp_path / "dense.db"
    with Catalog(db) as catalog:
        catalog.bind_model(preset.name, preset.dim)
        records = [FileRecord(f"/data/{i:04d}.jpg", 100 + i, 1, f"h{i:04d}", 64, 64, "JPEG") for i in range(len(vecs))]
        records.append(FileRecord("/data/copy-0001.jpg", 101, 1, "h0001", 64, 64, "JPEG"))
        records.append(FileRecord("/data/gone.jpg", 1, 1, "hgone", 64, 64, "JPEG", status="missing"))
        catalog.record_batch(records, {f"h{i:04d}": v for i, v in enumerate(vecs)} | {"hgone": vecs[3]}, None, preset.name)
        for score in ("normalized", "raw"):
            local = find_duplicates(catalog, preset, threshold=0.55, score=score)
            remote = find_duplicates(catalog, preset, threshold=0.55, score=score, engine=ray_search(cluster.address, block_rows=64))
            assert len(local.pairs) > 50
            mine = {(p.a, p.b, p.kind): p.score for p in remote.pairs}
            theirs = {(p.a, p.b, p.kind): p.score for p in local.pairs}
            assert sorted(mine) == sorted(theirs), score  # the same pairs (order may differ within float ties)
            np.testing.assert_allclose([mine[k] for k in sorted(mine)], [theirs[k] for k in sorted(mine)], atol=1e-5)
            assert sorted(sorted(m.path for m in g.members) for g in remote.groups) == \
                sorted(sorted(m.path for m in g.members) for g in local.groups)


def test_ray_scan_of_a_url_manifest_equals_the_local_scan(cluster, feed, tmp_path):
    """The product feed of test_sources (URLs on a local HTTP server: a 404, a timeout, a non-image, an
    oversized file among them), fetched by the cluster's workers: the same records, ids and pairs."""
    server, manifest, _ = feed
    options = FetchOptions(timeout=TIMEOUT, retries=1, backoff=0.01, max_bytes=CAP, concurrency=4)
    kw = dict(manifest=manifest, path_column="image_url", id_column="sku", fetch_options=options)
    local, remote = tmp_path / "local.db", tmp_path / "ray.db"
    api.scan([], db=local, workers=0, **kw)
    report = api.scan([], db=remote, ray=cluster.address, **kw)
    assert report.processed == 13 and report.errors == 4
    assert _files(remote) == _files(local)
    pairs = [(p.a_id, p.b_id, p.kind) for p in api.find_duplicates(remote).pairs]
    assert pairs == [(p.a_id, p.b_id, p.kind) for p in api.find_duplicates(local).pairs] and len(pairs) == 3
