#!/usr/bin/env python3
"""Bounded load test of the ingest service on loopback: requests/s and p50/p99 latency of POST /check.

It builds a temporary catalog from scikit-image's real photos (each photo plus a few crops and
flips of it, with sscd-distilled by default), starts its own `embeddr serve` on 127.0.0.1 (a free
port), sends ``--requests`` uploads from ``--clients`` concurrent clients (each upload: a new
crop of a catalogued photo, or an unrelated photo), checks every answer, stops the server and
deletes the temporary files. Nothing leaves the machine.

    python scripts/bench_serve.py --clients 8 --requests 500
    python scripts/bench_serve.py --clients 8 --requests 500 --device cuda --micro-batch --json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import queue
import re
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "retina", "immunohistochemistry")
UNRELATED = ("camera", "coins", "moon")


def photo(name: str) -> Image.Image:
    import skimage.data

    arr = getattr(skimage.data, name)()
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    im = Image.fromarray(arr[..., :3].astype(np.uint8))
    im.thumbnail((512, 512), Image.Resampling.LANCZOS)
    return im


def crop(im: Image.Image, fx: float, fy: float, keep: float) -> Image.Image:
    w, h = im.size
    cw, ch = int(w * keep), int(h * keep)
    x, y = int((w - cw) * fx), int((h - ch) * fy)
    return im.crop((x, y, x + cw, y + ch))


def jpeg(im: Image.Image, quality: int = 88) -> bytes:
    buf = io.BytesIO()
    im.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def build_catalog(folder: Path, db: Path, model: str, device: str) -> int:
    """Each photo, two crops and a mirror of it -> a catalog; returns the number of files."""
    import embeddr

    folder.mkdir(parents=True)
    n = 0
    for name in PHOTOS:
        im = photo(name)
        for i, variant in enumerate((im, crop(im, 0.0, 0.0, 0.85), crop(im, 1.0, 1.0, 0.85), ImageOps.mirror(im))):
            (folder / f"{name}_{i}.jpg").write_bytes(jpeg(variant))
            n += 1
    embeddr.scan([folder], db=db, model=model, device=device, workers=0)
    return n


def queries(count: int) -> list[tuple[str, bytes, bool]]:
    """(name, bytes, expected duplicate): fresh crops of catalogued photos and unrelated photos, in turn."""
    rng = np.random.default_rng(0)
    base = {name: photo(name) for name in PHOTOS + UNRELATED}
    out = []
    for i in range(count):
        if i % 4 == 3:
            name = UNRELATED[i % len(UNRELATED)]
            out.append((f"{name}_{i}.jpg", jpeg(base[name], quality=80 + i % 15), False))
        else:
            name = PHOTOS[i % len(PHOTOS)]
            fx, fy = rng.uniform(0.3, 0.7, 2)
            out.append((f"{name}_crop{i}.jpg", jpeg(crop(base[name], fx, fy, 0.9)), True))
    return out


def start_server(db: Path, store: Path, device: str, micro_batch: bool | None) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-c", "from embeddr.cli import main; main()", "serve", "--db", str(db), "--port", "0",
           "--store", str(store), "--device", device, "--log-level", "warning"]
    if micro_batch is not None:
        cmd.append("--micro-batch" if micro_batch else "--no-micro-batch")
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    lines: queue.Queue = queue.Queue()

    def pump():
        for line in proc.stderr:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        if line is None:
            raise SystemExit(f"server exited with {proc.wait()}")
        m = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line)
        if m:
            url = m.group(1)
            break
    else:
        proc.kill()
        raise SystemExit("server did not start in 180 s")
    import httpx

    while time.monotonic() < deadline:  # bounded readiness poll
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        try:
            raise SystemExit(f"server exited with {proc.wait(timeout=0.05)}")
        except subprocess.TimeoutExpired:
            pass
    proc.kill()
    raise SystemExit("server never became healthy")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    ap.add_argument("--requests", type=int, default=500, help="total POST /check requests (default 500)")
    ap.add_argument("--model", default="sscd-distilled")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--micro-batch", dest="micro_batch", action="store_true", default=None)
    ap.add_argument("--no-micro-batch", dest="micro_batch", action="store_false")
    ap.add_argument("--warmup", type=int, default=8, help="requests sent before timing (default 8)")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    args = ap.parse_args()
    if not 1 <= args.clients <= 64 or not 1 <= args.requests <= 20000:
        raise SystemExit("bounded test: 1..64 clients, 1..20000 requests")
    import httpx

    with tempfile.TemporaryDirectory(prefix="embeddr-bench-serve-") as tmp:
        tmp = Path(tmp)
        n_files = build_catalog(tmp / "photos", tmp / "bench.db", args.model, args.device)
        work = queries(args.requests)
        payload_kb = sum(len(b) for _, b, _ in work) / len(work) / 1024
        proc, url = start_server(tmp / "bench.db", tmp / "store", args.device, args.micro_batch)
        try:
            clients = [httpx.Client(base_url=url, timeout=120) for _ in range(args.clients)]
            for i in range(args.warmup):
                clients[0].post("/check", files=[("files", work[i][:2])]).raise_for_status()
            latencies: list[float] = [0.0] * len(work)
            wrong: list[str] = []
            local = threading.local()
            ids = iter(range(args.clients))
            ids_lock = threading.Lock()

            def one(i: int) -> None:
                if not hasattr(local, "client"):
                    with ids_lock:
                        local.client = clients[next(ids)]
                name, data, dup = work[i]
                t = time.perf_counter()
                r = local.client.post("/check", files=[("files", (name, data, "image/jpeg"))])
                latencies[i] = time.perf_counter() - t
                if r.status_code != 200 or r.json()["results"][0]["duplicate"] != dup:
                    wrong.append(f"{name}: {r.status_code} {r.text[:200]}")

            t0 = time.perf_counter()
            with ThreadPoolExecutor(args.clients) as pool:
                list(pool.map(one, range(len(work))))
            wall = time.perf_counter() - t0
            stats = clients[0].get("/stats").json()
            health = clients[0].get("/health").json()
            for c in clients:
                c.close()
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    lat = np.array(latencies) * 1000
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}",
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "encoder": health["encoder"], "micro_batching": stats["micro_batching"],
        "encoder_batches": stats.get("encoder_batches"),
        "catalog_files": n_files, "clients": args.clients, "requests": len(work), "mean_upload_kb": round(payload_kb, 1),
        "wrong_answers": len(wrong), "seconds": round(wall, 2), "requests_per_second": round(len(work) / wall, 2),
        "p50_ms": round(float(np.percentile(lat, 50)), 1), "p90_ms": round(float(np.percentile(lat, 90)), 1),
        "p99_ms": round(float(np.percentile(lat, 99)), 1), "max_ms": round(float(lat.max()), 1),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for k, v in result.items():
            print(f"{k:>20}  {v}")
    for line in wrong[:5]:
        print("wrong:", line, file=sys.stderr)
    if wrong:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
