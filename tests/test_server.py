"""The HTTP ingest gate: the REAL server (`embeddr serve` in a subprocess on a loopback port)
answering real uploads over HTTP, surviving a restart; plus the app's error shape in-process."""

from __future__ import annotations

import io
import os
import queue
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from conftest import save_photo
from PIL import Image

from embeddr import api
from embeddr.encoders import load_encoder

CATALOGUED = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field")
READY_TIMEOUT = 120.0  # bound for start-up on a busy machine (import + model load), not a sleep


class Server:
    """`embeddr serve --port 0` in a subprocess; the real port comes from its first stderr line."""

    def __init__(self, db: Path, store: Path, max_upload_mb: float = 1.0):
        cmd = [sys.executable, "-c", "from embeddr.cli import main; main()", "serve", "--db", str(db), "--port", "0",
               "--store", str(store), "--max-upload-mb", str(max_upload_mb), "--log-level", "warning", "--device", "cpu"]
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.lines: queue.Queue = queue.Queue()
        self.log: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()
        self.url = self._wait_listening()
        self._wait_healthy()
        self.client = httpx.Client(base_url=self.url, timeout=60)

    def _pump(self) -> None:
        for line in self.proc.stderr:
            self.lines.put(line)
        self.lines.put(None)

    def _wait_listening(self) -> str:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            if line is None:
                raise AssertionError(f"server exited ({self.proc.wait()}): {''.join(self.log)}")
            self.log.append(line)
            m = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line)
            if m:
                return m.group(1)
        raise AssertionError(f"server did not start: {''.join(self.log)}")

    def _wait_healthy(self) -> None:
        """Bounded readiness poll on /health: each try waits on the process (which also catches a crash)."""
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            try:
                code = self.proc.wait(timeout=0.05)
                raise AssertionError(f"server exited ({code}): {''.join(self.log)}")
            except subprocess.TimeoutExpired:
                pass
        raise AssertionError("server never became healthy")

    def stop(self) -> None:
        self.client.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:  # pragma: no cover
            self.proc.kill()
            self.proc.wait()


def jpeg_bytes(path: Path, frac: float = 0.0) -> bytes:
    with Image.open(path) as im:
        w, h = im.size
        if frac:
            im = im.crop((int(w * frac), int(h * frac), int(w * (1 - frac)), int(h * (1 - frac))))
        buf = io.BytesIO()
        im.convert("RGB").save(buf, "JPEG", quality=88)
        return buf.getvalue()


@pytest.fixture(scope="module")
def served(tmp_path_factory, photo_arrays):
    root = tmp_path_factory.mktemp("serve")
    photos = root / "photos"
    for name in CATALOGUED:
        save_photo(photo_arrays[name], photos / f"{name}.jpg")
    unrelated = save_photo(photo_arrays["camera"], root / "camera.jpg")
    other = save_photo(photo_arrays["coins"], root / "coins.jpg")
    db = root / "cat.db"
    api.scan([photos], db=db, encoder=load_encoder("sscd-distilled", device="cpu"), workers=0)
    state = {"root": root, "photos": photos, "db": db, "unrelated": unrelated, "other": other,
             "server": Server(db, root / "store")}
    yield state
    state["server"].stop()  # the one running now (a test restarts it)


def post(server: Server, route: str, files: list[tuple[str, bytes]], **params) -> httpx.Response:
    return server.client.post(route, files=[("files", (n, b, "application/octet-stream")) for n, b in files], params=params)


def assert_error(r: httpx.Response, status: int, type_: str, file: str | None = None) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"type", "message", "file"}
    assert body["error"]["type"] == type_ and body["error"]["message"]
    if file is not None:
        assert body["error"]["file"] == file
    return body["error"]


def test_real_server_checks_adds_and_survives_restart(served):
    server = served["server"]
    health = server.client.get("/health").json()
    assert health["status"] == "ok" and health["model"] == "sscd-distilled" and health["index_vectors"] == len(CATALOGUED)

    # a crop of a catalogued photo is a duplicate; an unrelated photo is not (one request, two files)
    r = post(server, "/check", [("crop.jpg", jpeg_bytes(served["photos"] / "astronaut.jpg", 0.1)),
                                ("camera.jpg", served["unrelated"].read_bytes())])
    assert r.status_code == 200, r.text
    body = r.json()
    crop, cam = body["results"]
    assert body["duplicate"] and crop["duplicate"] and crop["path"] == "crop.jpg"
    assert crop["matches"][0]["path"] == str(served["photos"] / "astronaut.jpg") and crop["matches"][0]["kind"] == "near"
    assert body["threshold"] <= crop["matches"][0]["score"] < 1.0
    assert cam["duplicate"] is False and cam["matches"] == []

    # corrupt and non-image uploads: 422 in the one error shape, naming the file; nothing added
    cut = served["unrelated"].read_bytes()[:400]
    assert "truncated" in assert_error(post(server, "/check", [("cut.jpg", cut)]), 422, "DecodeError", "cut.jpg")["message"].lower()
    assert_error(post(server, "/add", [("camera.jpg", served["unrelated"].read_bytes()), ("notes.txt", b"plain text")]),
                 422, "DecodeError", "notes.txt")
    # oversized: 413 (limit 1 MiB)
    assert_error(post(server, "/check", [("huge.jpg", os.urandom(1_200_000))]), 413, "UploadTooLarge")
    assert_error(server.client.post("/check"), 422, "RequestValidationError")
    assert_error(server.client.get("/nowhere"), 404, "HTTPError")
    assert server.client.get("/stats").json()["ok"] == len(CATALOGUED)

    # add: the unrelated photo and another new one go in; the crop does not (duplicate)
    r = post(server, "/add", [("camera.jpg", served["unrelated"].read_bytes()), ("coins.jpg", served["other"].read_bytes()),
                              ("crop.jpg", jpeg_bytes(served["photos"] / "astronaut.jpg", 0.1))])
    assert r.status_code == 200, r.text
    added = {x["path"]: x for x in r.json()["results"]}
    assert added["camera.jpg"]["added"] and added["coins.jpg"]["added"] and not added["crop.jpg"]["added"]
    stored = Path(added["camera.jpg"]["stored"])
    assert stored.parent == (served["root"] / "store").resolve() and stored.read_bytes() == served["unrelated"].read_bytes()
    assert server.client.get("/stats").json()["ok"] == len(CATALOGUED) + 2
    assert post(server, "/check", [("c2.jpg", served["unrelated"].read_bytes())]).json()["results"][0]["matches"][0]["kind"] == "exact"

    # restart: a new process on the same catalog still has them
    server.stop()
    served["server"] = server = Server(served["db"], served["root"] / "store")
    assert server.client.get("/stats").json()["ok"] == len(CATALOGUED) + 2
    assert server.client.get("/health").json()["index_vectors"] == len(CATALOGUED) + 2
    r = post(server, "/check", [("again.jpg", served["unrelated"].read_bytes()), ("coins2.jpg", jpeg_bytes(served["other"], 0.05))])
    again, coins = r.json()["results"]
    assert again["matches"] == [{"path": str(stored), "score": 1.0, "kind": "exact"}]
    assert coins["duplicate"] and coins["matches"][0]["path"] == added["coins.jpg"]["stored"]


def test_real_server_concurrent_clients_and_docs(served):
    server = served["server"]
    crop = jpeg_bytes(served["photos"] / "chelsea.jpg", 0.08)
    with ThreadPoolExecutor(6) as pool:
        codes = list(pool.map(lambda i: post(server, "/check", [(f"c{i}.jpg", crop)]), range(12)))
    assert all(r.status_code == 200 and r.json()["results"][0]["matches"][0]["path"] == str(served["photos"] / "chelsea.jpg")
               for r in codes)
    assert server.client.get("/docs").status_code == 200
    spec = server.client.get("/openapi.json").json()
    assert {"/check", "/add", "/health", "/stats"} <= set(spec["paths"])
