"""Inputs beyond a local folder: a manifest (product feed) whose URLs a local HTTP server serves,
object-store URLs through fsspec, and results that carry the items' ids (catalog, JSON, CSV, Parquet,
check, the HTML report)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from embeddr import Catalog, api
from embeddr.cli import app
from embeddr.sources import FetchOptions, fetch, is_remote, list_inputs

from conftest import save_photo

SLOW_SECONDS = 0.8  # the server's delay for /slow.jpg; the scan's timeout is 0.5 s
TIMEOUT = 0.5
CAP = 300_000  # bytes: /huge.png is larger


class _Server:
    """A threaded HTTP server on 127.0.0.1 serving real images, with ETag/Last-Modified, HEAD, and faults."""

    def __init__(self, files: dict[str, bytes]):
        self.files = dict(files)
        self.gets: dict[str, int] = {}
        self.flaky_left = 1
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep the test output clean
                pass

            def _send(self, head_only: bool):
                name = self.path.lstrip("/")
                if not head_only:
                    server.gets[name] = server.gets.get(name, 0) + 1
                if name == "slow.jpg":
                    time.sleep(SLOW_SECONDS)  # past the client's timeout: the client gives up first
                if name == "flaky.jpg" and server.flaky_left > 0 and not head_only:
                    server.flaky_left -= 1
                    self.send_error(503, "try again")
                    return
                body = server.files.get(name)
                if body is None:
                    self.send_error(404, "not found")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/plain" if name.endswith(".txt") else "image/jpeg")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("ETag", '"' + hashlib.md5(body).hexdigest() + '"')
                self.end_headers()
                if not head_only:
                    try:
                        self.wfile.write(body)
                    except (BrokenPipeError, ConnectionResetError):
                        pass

            def do_GET(self):
                self._send(False)

            def do_HEAD(self):
                self._send(True)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _jpeg(arr: np.ndarray, long_side: int = 384, quality: int = 90, crop: float = 0.0) -> bytes:
    img = Image.fromarray(arr).convert("RGB")
    if crop:
        w, h = img.size
        img = img.crop((int(w * crop), int(h * crop), w - int(w * crop), h - int(h * crop)))
    img.thumbnail((long_side, long_side), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


@pytest.fixture
def feed(photo_arrays, tmp_path):
    """A server with photos, an exact copy, a near copy (crop + resize), and faults; a manifest naming them."""
    files = {f"{n}.jpg": _jpeg(a) for n, a in photo_arrays.items() if n in ("astronaut", "chelsea", "coffee", "rocket", "camera")}
    files["coffee-copy.jpg"] = files["coffee.jpg"]  # exact copy
    files["astronaut-crop.jpg"] = _jpeg(photo_arrays["astronaut"], long_side=256, quality=80, crop=0.06)  # near copy
    files["flaky.jpg"] = files["rocket.jpg"]  # 503 once, then served: the retry with back-off gets it
    files["slow.jpg"] = files["chelsea.jpg"]
    files["notes.txt"] = b"this is not an image\n" * 20
    noise = np.random.default_rng(0).integers(0, 256, (420, 420, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, "PNG")
    files["huge.png"] = buf.getvalue()
    assert len(files["huge.png"]) > CAP
    local = save_photo(photo_arrays["moon"], tmp_path / "local" / "moon.jpg")  # a local path, relative to the manifest
    with _Server(files) as server:
        rows = [("SKU-1", "astronaut.jpg"), ("SKU-2", "chelsea.jpg"), ("SKU-3", "coffee.jpg"), ("SKU-4", "rocket.jpg"),
                ("SKU-5", "camera.jpg"), ("SKU-6", "coffee-copy.jpg"), ("SKU-7", "astronaut-crop.jpg"),
                ("SKU-8", "flaky.jpg"), ("SKU-9", "missing.jpg"), ("SKU-10", "slow.jpg"), ("SKU-11", "notes.txt"),
                ("SKU-12", "huge.png")]
        manifest = tmp_path / "feed.csv"
        with open(manifest, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["sku", "image_url", "title"])
            for sku, name in rows:
                w.writerow([sku, server.base + name, f"item {sku}"])
            w.writerow(["SKU-13", "local/moon.jpg", "a local file"])
        yield server, manifest, local


def _scan(manifest, db, **kw):
    options = FetchOptions(timeout=TIMEOUT, retries=1, backoff=0.01, max_bytes=CAP, concurrency=4)
    return api.scan([], db=db, manifest=manifest, path_column="image_url", id_column="sku", fetch_options=options,
                    workers=0, **kw)


def test_manifest_of_urls_gives_per_file_errors_and_the_right_pairs_with_ids(feed, tmp_path, runner):
    server, manifest, local = feed
    db = tmp_path / "feed.db"
    report = _scan(manifest, db)
    assert report.seen == 13 and report.errors == 4
    with Catalog(db) as catalog:
        rows = {r.item_id: r for r in catalog.files(None)}
    errors = {k: r.error for k, r in rows.items() if r.status == "error"}
    assert errors["SKU-9"].startswith("HTTP 404")
    assert "timed out after 0.5 s" in errors["SKU-10"]
    assert errors["SKU-11"] == "not a recognised image format"
    assert errors["SKU-12"].startswith("too large")
    assert set(errors) == {"SKU-9", "SKU-10", "SKU-11", "SKU-12"}
    assert rows["SKU-8"].status == "ok" and server.gets["flaky.jpg"] == 2  # 503, then the retry
    assert rows["SKU-13"].path == str(local) and rows["SKU-13"].status == "ok"
    assert rows["SKU-1"].path == server.base + "astronaut.jpg"

    dupes = api.find_duplicates(db)
    pairs = {(*sorted((p.a_id, p.b_id)), p.kind) for p in dupes.pairs}
    assert ("SKU-3", "SKU-6", "exact") in pairs  # coffee and its byte copy
    assert ("SKU-1", "SKU-7", "near") in pairs  # astronaut and its crop
    assert ("SKU-4", "SKU-8", "exact") in pairs  # rocket served again as flaky.jpg
    assert all(p.a_id and p.b_id for p in dupes.pairs)
    assert len(dupes.pairs) == 3

    res = runner.invoke(app, ["dupes", "--db", str(db), "--format", "json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert {tuple(sorted((p["a_id"], p["b_id"]))) for p in data["pairs"]} == {(a, b) for a, b, _ in pairs}
    assert {m["item_id"] for g in data["groups"] for m in g["members"]} >= {"SKU-1", "SKU-7", "SKU-3", "SKU-6"}
    res = runner.invoke(app, ["dupes", "--db", str(db), "--format", "csv"])
    table = list(csv.DictReader(io.StringIO(res.stdout)))
    assert list(table[0]) == ["a", "b", "score", "kind", "a_id", "b_id"]
    assert {tuple(sorted((r["a_id"], r["b_id"]))) for r in table} == {(a, b) for a, b, _ in pairs}

    pq = pytest.importorskip("pyarrow.parquet")
    out = tmp_path / "pairs.parquet"
    res = runner.invoke(app, ["dupes", "--db", str(db), "--format", "parquet", "--output", str(out)])
    assert res.exit_code == 0, res.output
    t = pq.read_table(out).to_pylist()
    assert {(*sorted((r["a_id"], r["b_id"])), r["kind"]) for r in t} == pairs
    assert all(r["group"] is not None for r in t)
    res = runner.invoke(app, ["dupes", "--db", str(db), "--format", "parquet"])
    assert res.exit_code == 2 and "--output" in res.output

    # check: a new copy of the astronaut matches the catalogued items, ids included
    probe = tmp_path / "incoming" / "astro.jpg"
    probe.parent.mkdir()
    probe.write_bytes(server.files["astronaut.jpg"])
    res = runner.invoke(app, ["check", str(probe), "--db", str(db), "--format", "json"])
    assert res.exit_code == 1, res.output
    matches = json.loads(res.stdout)["results"][0]["matches"]
    assert {m["item_id"] for m in matches} == {"SKU-1", "SKU-7"}
    res = runner.invoke(app, ["check", str(probe), "--db", str(db), "--format", "csv"])
    assert {r["match_id"] for r in csv.DictReader(io.StringIO(res.stdout))} == {"SKU-1", "SKU-7"}

    # the HTML review report shows the ids
    res = runner.invoke(app, ["report", "--db", str(db), "--html", str(tmp_path / "review")])
    assert res.exit_code == 0, res.output
    html = "".join(p.read_text() for p in (tmp_path / "review").rglob("*") if p.suffix in (".html", ".js"))
    assert "SKU-7" in html and "SKU-6" in html


def test_unchanged_urls_are_not_fetched_again_and_changed_ones_are(feed, tmp_path):
    server, manifest, _ = feed
    db = tmp_path / "feed.db"
    _scan(manifest, db)
    before = dict(server.gets)
    server.files["camera.jpg"] = server.files["chelsea.jpg"]  # new content: new ETag and size
    report = _scan(manifest, db)
    fetched = {k: server.gets.get(k, 0) - before.get(k, 0) for k in server.gets}
    assert fetched["camera.jpg"] == 1  # changed: fetched again
    for name in ("astronaut.jpg", "chelsea.jpg", "coffee.jpg", "rocket.jpg", "coffee-copy.jpg", "astronaut-crop.jpg", "flaky.jpg"):
        assert fetched.get(name, 0) == 0, name  # same ETag and size: not fetched
    assert report.unchanged == 8  # 7 URLs and the local file
    with Catalog(db) as catalog:
        camera = catalog.get_file(server.base + "camera.jpg")
        chelsea = catalog.get_file(server.base + "chelsea.jpg")
    assert camera.hash == chelsea.hash and camera.item_id == "SKU-5"


def test_fetch_options_and_url_detection(feed):
    server, _, _ = feed
    assert is_remote("https://x/y.jpg") and is_remote("s3://bucket/k.jpg") and not is_remote("/tmp/a.jpg")
    assert not is_remote("file:///tmp/a.jpg") and not is_remote("C://x")
    got = fetch(server.base + "astronaut.jpg")
    assert got.data == server.files["astronaut.jpg"] and got.etag.startswith('etag:"')
    from embeddr.sources import FetchError

    with pytest.raises(FetchError, match="too large"):
        fetch(server.base + "huge.png", FetchOptions(max_bytes=1000))


def test_object_store_urls_through_fsspec(photo_arrays, tmp_path):
    fsspec = pytest.importorskip("fsspec")
    fs = fsspec.filesystem("memory")
    data = _jpeg(photo_arrays["coffee"])
    fs.pipe("/bucket/a/coffee.jpg", data)
    fs.pipe("/bucket/a/coffee-again.jpg", data)
    fs.pipe("/bucket/a/chelsea.jpg", _jpeg(photo_arrays["chelsea"]))
    try:
        urls = ["memory://bucket/a/coffee.jpg", "memory://bucket/a/coffee-again.jpg", "memory://bucket/a/chelsea.jpg",
                "memory://bucket/a/gone.jpg"]
        manifest = tmp_path / "feed.parquet"
        pa = pytest.importorskip("pyarrow")
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"url": urls, "id": ["a", "b", "c", "d"]}), manifest)
        db = tmp_path / "s3.db"
        report = api.scan([], db=db, manifest=manifest, path_column="url", id_column="id", workers=0)
        assert report.errors == 1
        with Catalog(db) as catalog:
            assert catalog.get_file("memory://bucket/a/gone.jpg").error == "not found"
            assert catalog.get_file("memory://bucket/a/coffee.jpg").item_id == "a"
        pairs = api.find_duplicates(db).pairs
        assert [(p.a_id, p.b_id, p.kind) for p in pairs] == [("b", "a", "exact")] or \
            [(p.a_id, p.b_id, p.kind) for p in pairs] == [("a", "b", "exact")]
        assert api.scan([], db=db, manifest=manifest, path_column="url", id_column="id", workers=0).unchanged == 3
    finally:
        fs.rm("/bucket", recursive=True)


def test_bad_manifest_is_one_clear_error(tmp_path, runner):
    manifest = tmp_path / "feed.csv"
    manifest.write_text("sku,url\n1,http://127.0.0.1:9/x.jpg\n")
    res = runner.invoke(app, ["scan", "--manifest", str(manifest), "--path-column", "image", "--db", str(tmp_path / "x.db")])
    assert res.exit_code == 2
    assert "error:" in res.output and "no column 'image'" in res.output and "sku, url" in res.output
    assert not (tmp_path / "x.db").exists()
    res = runner.invoke(app, ["scan", "--db", str(tmp_path / "x.db")])
    assert res.exit_code == 2 and "nothing to scan" in res.output


def test_list_inputs_resolves_manifest_paths_and_dedupes(tmp_path, photo_dir):
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"path,id\n{photo_dir.name}/coffee.jpg,1\n{photo_dir / 'coffee.jpg'},2\nnope.jpg,3\n,4\n")
    items = list(list_inputs(manifest=manifest, path_column="path", id_column="id"))
    assert [(c.path, c.item_id, c.error) for c in items] == [
        (str(photo_dir / "coffee.jpg"), "1", None), (str(tmp_path / "nope.jpg"), "3", "no such file")]


def test_the_normal_cli_path_never_imports_ray(photo_dir, tmp_path):
    """Ray is imported only by --ray: a plain scan and dupes in a fresh interpreter leave it unloaded."""
    import subprocess
    import sys

    db = str(tmp_path / "x.db")
    code = ("import sys\nfrom typer.testing import CliRunner\nfrom embeddr.cli import app\n"
            f"r = CliRunner().invoke(app, ['scan', {str(photo_dir)!r}, '--db', {db!r}, '-q', '--workers', '0'])\n"
            "assert r.exit_code == 0, r.output\n"
            f"r = CliRunner().invoke(app, ['dupes', '--db', {db!r}, '--format', 'json'])\n"
            "assert r.exit_code == 0, r.output\n"
            "loaded = sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.'))\n"
            "assert not loaded, loaded[:5]\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
