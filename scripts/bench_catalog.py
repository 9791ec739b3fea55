#!/usr/bin/env python3
"""Wall time and peak memory of the catalog-side commands at N files (issue 9, item 2).

    python scripts/bench_catalog.py --n 100000 [--dir /tmp/embeddr-bench-catalog] [--steps rescan,plan,report]
                                    [--search stub|real] [--code REPO] [--json]

Builds (once; reused while ``--dir`` holds it for the same N) a collection of N tiny real JPEG files on disk
(1,000 per folder, all the same 8x8 picture: nothing is decoded by a rescan of unchanged files) and a
catalog of them made without encoding anything: one row per file with the size and mtime it has on disk,
1 % of the files exact copies (same content hash) of another, one 512-d vector per distinct content
(random unit vectors), the FAISS index and the search structure beside it, as `scan` leaves them.

Each step then runs the real command line (``embeddr ...``) in a fresh process, start-up included, and
reports its wall seconds and peak RSS (``ru_maxrss`` of that process):

* ``rescan``: ``embeddr scan DIR --db DB``: every file unchanged;
* ``plan``: ``embeddr apply --db DB --format json`` (dry run: the plan and the savings, written to a file);
* ``report``: ``embeddr report --db DB --html OUT --format json`` (the HTML report with a thumbnail per
  distinct content in the groups, and the JSON).

``--search stub`` (default) replaces the pair search inside ``dupes`` (:func:`embeddr.dupes.content_pairs`) by
a fixed set of content pairs (2 % of the distinct contents start a group of 2-3 near copies): it measures
everything around the search (catalog reads, grouping, policy, plan, savings, output) without the search
itself, whose time and memory ``scripts/bench_match.py`` measures. ``--search real`` runs the real search
(and builds the real search structure, minutes at 100k and over half an hour at 1M on 2 cores).
``--code REPO`` runs the steps with another checkout's ``embeddr`` (e.g. an export of ``main``) on the same
catalog, to compare before and after.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MODEL = "sscd-distilled"
PER_FOLDER = 1000


def tiny_jpeg() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (120, 60, 30)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def file_path(files: Path, i: int) -> str:
    return str(files / f"d{i // PER_FOLDER:05d}" / f"{i:08d}.jpg")


def build(root: Path, n: int, search: str, seed: int = 0) -> dict:
    """The collection and its catalog under ``root`` (kept: a later run with the same N reuses it)."""
    stamp = root / f"built-{n}-{search}.json"
    if stamp.exists():
        return json.loads(stamp.read_text())
    if root.exists():
        shutil.rmtree(root)
    files = root / "files"
    sys.path.insert(0, str(REPO))
    from embeddr.catalog import Catalog, FileRecord
    from embeddr.index import load_index
    from embeddr.searchindex import update

    t0 = time.perf_counter()
    data = tiny_jpeg()
    rng = np.random.default_rng(seed)
    copy_of = np.arange(n)
    dup = rng.random(n) < 0.01  # 1 % exact copies: the same content hash as the file before them
    dup[0] = False
    copy_of[dup] = np.arange(n)[dup] - 1
    while True:  # a copy of a copy points at the first one
        nxt = copy_of[copy_of]
        if np.array_equal(nxt, copy_of):
            break
        copy_of = nxt
    db = root / "bench.db"
    with Catalog(db) as catalog:
        catalog.bind_model(MODEL, 512)
        run = catalog.begin_run(MODEL, [str(files)])
        for s in range(0, n, 20_000):
            records, vectors = [], {}
            for i in range(s, min(n, s + 20_000)):
                p = file_path(files, i)
                if i % PER_FOLDER == 0:
                    os.makedirs(os.path.dirname(p), exist_ok=True)
                fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.write(fd, data)
                os.close(fd)
                st = os.stat(p)
                h = f"h{copy_of[i]:09d}"
                records.append(FileRecord(p, st.st_size, st.st_mtime_ns, h, 8, 8, "JPEG"))
                if copy_of[i] == i:
                    vectors[h] = None
            vecs = rng.standard_normal((len(vectors), 512), dtype=np.float32)
            vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
            catalog.record_batch(records, dict(zip(vectors, vecs)), run, MODEL)
        catalog.finish_run(run, "done", {})
        t_rows = time.perf_counter() - t0
        load_index(catalog)  # the FAISS index `scan` keeps beside the catalog
        if search == "real":
            update(catalog)
        else:  # the search structure without training k-means (never searched with --search stub)
            from embeddr import search as engine

            below = engine.EXACT_BELOW
            engine.EXACT_BELOW = 1 << 62
            try:
                update(catalog)
            finally:
                engine.EXACT_BELOW = below
            _fake_layout(catalog)
    info = {"n": n, "distinct": int((copy_of == np.arange(n)).sum()), "search": search,
            "build_seconds": round(time.perf_counter() - t0, 1), "rows_seconds": round(t_rows, 1)}
    stamp.write_text(json.dumps(info))
    return info


def _fake_layout(catalog) -> None:
    """A layout generation as `scan` leaves it (centroids, probes per vector), untrained: what a rescan reads."""
    from embeddr import search as engine
    from embeddr.searchindex import _locked, _read_meta, _write_meta, search_path

    folder = search_path(catalog)
    with _locked(folder, exclusive=True):
        meta = _read_meta(folder)
        n = int(meta["n"])
        if n < engine.EXACT_BELOW:
            return
        nlist = max(1, n // engine.LIST_SIZE)
        probes = min(engine.MAX_PROBES, nlist)
        vecs = np.memmap(folder / "vecs.f32", np.float32, "r", shape=(n, int(meta["dim"])))
        (folder / "centroids.1.f32").write_bytes(np.ascontiguousarray(vecs[:nlist]).tobytes())
        with open(folder / "probes.1.i32", "wb") as fh:
            for s in range(0, n, 65536):
                m = min(n, s + 65536) - s
                fh.write(((np.arange(s, s + m)[:, None] + np.arange(probes)) % nlist).astype(np.int32).tobytes())
        meta["layout"] = {"gen": 1, "nlist": nlist, "probes": probes, "trained_n": n}
        _write_meta(folder, meta)


# -- the stubbed search (installed in the step's process) ----------------------------------------------

def stub_pairs(live_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """2 % of the contents start a group of 2-3 near copies (every pair listed), scores 0.90-0.99."""
    ids = np.sort(np.asarray(live_ids, np.int64))
    rng = np.random.default_rng(1)
    starts = np.flatnonzero(rng.random(len(ids)) < 0.02)
    starts = starts[starts + 3 < len(ids)]
    starts = starts[np.r_[True, np.diff(starts) > 3]] if len(starts) else starts
    size = rng.integers(2, 4, len(starts))
    a, b = [], []
    for j in range(1, 3):
        for k in range(j):
            sel = size > j
            a.append(ids[starts[sel] + k])
            b.append(ids[starts[sel] + j])
    a = np.concatenate(a) if a else np.zeros(0, np.int64)
    b = np.concatenate(b) if b else np.zeros(0, np.int64)
    s = (0.90 + 0.09 * rng.random(len(a))).astype(np.float32)
    return a, b, s


def install_stub() -> None:
    import embeddr.dupes as dupes
    from embeddr.normalize import NO_BACKGROUND
    from embeddr.searchindex import open_index

    def content_pairs(catalog, scorer, threshold, *, search="auto", live_ids=None, device="auto", references=None):
        index = open_index(catalog, update_first=False)
        if live_ids is None:
            live_ids = np.sort(np.fromiter(catalog.live_vector_ids().values(), np.int64))
        a, b, s = stub_pairs(live_ids)
        return a, b, s, np.full(len(live_ids), NO_BACKGROUND, np.float32), {"search": "stub"}, index

    dupes.content_pairs = content_pairs


def step_child(argv: list[str], stub: bool) -> None:
    """In the step's own process: run ``embeddr ARGV`` as the console script does; report wall and RSS."""
    t = time.perf_counter()
    from embeddr.cli import main

    if stub:
        install_stub()
    sys.argv = ["embeddr", *argv]
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code or 0
    print(json.dumps({"seconds": round(time.perf_counter() - t, 2), "exit": code, "peak_rss_mib": peak_rss_mib()}),
          file=sys.stderr)


def peak_rss_mib() -> int:
    """This process's peak resident set (VmHWM: its own, unlike ``ru_maxrss``, which Linux carries over from
    the process that forked it across ``exec``)."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024)
    except OSError:  # pragma: no cover - not Linux
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def run_step(name: str, argv: list[str], code: Path, stub: bool, out: Path) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_step", json.dumps(argv)] + (["--_stub"] if stub else [])
    env = {**os.environ, "PYTHONPATH": str(code)}
    t = time.perf_counter()
    with open(out, "w") as fh:
        res = subprocess.run(cmd, stdout=fh, stderr=subprocess.PIPE, text=True, env=env, cwd="/")
    wall = time.perf_counter() - t
    last = res.stderr.strip().splitlines()[-1] if res.stderr.strip() else "{}"
    try:
        got = json.loads(last)
    except ValueError:
        got = {}
    if res.returncode or got.get("exit"):
        sys.exit(f"{name} failed ({res.returncode}):\n{res.stderr[-3000:]}")
    return {"wall_seconds": round(wall, 2), "seconds_in_process": got.get("seconds"),
            "peak_rss_mib": got.get("peak_rss_mib"), "output_bytes": out.stat().st_size}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dir", type=Path, default=None, help="where the collection and catalog are built (kept)")
    ap.add_argument("--steps", default="rescan,plan,report")
    ap.add_argument("--search", default="stub", choices=("stub", "real"))
    ap.add_argument("--code", type=Path, default=REPO, help="the checkout whose embeddr runs the steps")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--_step", help=argparse.SUPPRESS)
    ap.add_argument("--_stub", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._step:
        step_child(json.loads(args._step), args._stub)
        return 0
    root = args.dir or Path(f"/tmp/embeddr-bench-catalog-{args.n}")
    sys.path.insert(0, str(REPO))
    from embeddr.bench.record import finish, load_average

    result = {"files": args.n, "code": str(args.code), "load_average_before": load_average()}
    result["build"] = build(root, args.n, args.search)
    db, files = root / "bench.db", root / "files"
    stub = args.search == "stub"
    steps = {
        "rescan": ["scan", str(files), "--db", str(db)],
        "plan": ["apply", "--db", str(db), "--format", "json"],
        "report": ["report", "--db", str(db), "--html", str(root / "html"), "--format", "json"],
    }
    for name in [s for s in args.steps.split(",") if s]:
        if name == "report":
            shutil.rmtree(root / "html", ignore_errors=True)  # no thumbnail left by an earlier run is reused
        result[name] = run_step(name, steps[name], args.code, stub, root / f"{name}.out")
    try:
        import subprocess as sp

        commit = sp.run(["git", "-C", str(args.code), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:  # pragma: no cover
        commit = ""
    return finish(result, args.json, commit=commit or None)


if __name__ == "__main__":
    raise SystemExit(main())
