#!/usr/bin/env python3
"""Time, peak memory and pair recall of `embeddr dupes` (search + score + group) on a large catalog.

    python scripts/bench_match.py --n 100000 [--source realistic|real|random] [--search auto|exact|approximate]
                                  [--score normalized|raw] [--check-exact] [--json] [--db-dir DIR]

Builds a catalog of N vectors without images (``--source realistic``: clusters of varying density,
look-alike crowds, copies at several similarities, bursts of renditions, see embeddr/synthetic.py;
``real``: the same structure around real sscd-distilled vectors of ../shared/data/realimages; ``random``:
uniform random vectors, the easy case) and its search structure (what `scan` keeps beside the catalog,
timed apart). Then runs `find_duplicates` -- the default decision end to end -- in a fresh process, so
the peak resident memory is its own. ``--check-exact`` also runs the exact search (another process) and
reports the share of its pairs found (``pair_recall``) and of those with raw cosine in [0.6, 0.8)
(``loose_pair_recall``). ``--json`` prints one JSON object. ``--db-dir DIR`` keeps the catalog (``DIR/bench.db``
and its search structure) instead of a temporary one, and reuses it when it was built with the same ``--n``,
``--dim``, ``--source`` and ``--seed`` (``DIR/bench.json`` says which): building 1M vectors takes minutes, so
several runs of `dupes` on one catalog need not rebuild it (``catalog_build_seconds`` and
``search_structure_seconds`` are then those of the first build; ``--build-only`` stops there). ``seconds`` is
``find_duplicates`` (``search_seconds``: its pair search, ``after_search_seconds``: the rest: verification band,
grouping, the groups' files); ``pairs_read_seconds`` is reading every pair of the report once, as a writer does. The catalog can be read with the CLI too
(``embeddr dupes --db DIR/bench.db``; its files do not exist, so the second look finds every pair unreadable).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MODEL = "sscd-distilled"


def path_of(i: int) -> str:
    return f"/synthetic/{i:09d}.jpg"


def real_vectors() -> np.ndarray | None:
    folder = REPO.parent / "shared" / "data" / "realimages" / "images"
    if not folder.is_dir():
        return None
    import embeddr
    from embeddr.catalog import Catalog

    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "real.db"
        embeddr.scan([folder], db=db, model=MODEL, device="cpu")
        with Catalog(db) as catalog:
            return np.vstack([v for _, v in catalog.vectors_after(0)])


def make_vectors(source: str, n: int, dim: int, seed: int) -> np.ndarray:
    from embeddr.synthetic import realistic, unit

    if source == "random":
        rng = np.random.default_rng(seed)
        return np.vstack([unit(rng.standard_normal((min(65536, n - s), dim), dtype=np.float32)) for s in range(0, n, 65536)])
    if source == "real":
        seeds = real_vectors()
        if seeds is None:
            sys.exit("--source real: ../shared/data/realimages is absent")
        return realistic(n, seeds.shape[1], seed, seeds=seeds)
    return realistic(n, dim, seed)


def build(db: Path, vecs: np.ndarray) -> float:
    from embeddr.catalog import Catalog, FileRecord
    from embeddr.searchindex import update

    with Catalog(db) as catalog:
        catalog.bind_model(MODEL, vecs.shape[1])
        run = catalog.begin_run(MODEL, ["/synthetic"])
        for s in range(0, len(vecs), 20000):
            chunk = vecs[s : s + 20000]
            records = [FileRecord(path_of(s + i), 1000, 0, f"h{s + i}", 100, 100, "JPEG") for i in range(len(chunk))]
            catalog.record_batch(records, {f"h{s + i}": v for i, v in enumerate(chunk)}, run, MODEL)
        catalog.finish_run(run, "done", {})
        t = time.perf_counter()
        update(catalog)  # what the scan does at its end
        return time.perf_counter() - t


def run_dupes(db: str, search: str, score: str, out: str) -> None:
    """Child process: find_duplicates, its seconds and peak RSS; the near pairs go to ``out`` (npz)."""
    from embeddr.catalog import Catalog
    from embeddr.dupes import find_duplicates
    from embeddr.presets import get_preset

    import embeddr.dupes as dupes

    searching = {"seconds": 0.0}
    content_pairs = dupes.content_pairs

    def timed(*args, **kwargs):  # the search's share of the time (the rest: the stage after it)
        t0 = time.perf_counter()
        try:
            return content_pairs(*args, **kwargs)
        finally:
            searching["seconds"] += time.perf_counter() - t0

    dupes.content_pairs = timed
    t = time.perf_counter()
    with Catalog(db) as catalog:
        report = find_duplicates(catalog, get_preset(MODEL), score=score, search=search)
    seconds = time.perf_counter() - t
    from array import array

    t = time.perf_counter()
    a, b = array("q"), array("q")  # the near pairs, streamed (no list of Pair objects)
    for p in report.pairs:
        if p.kind == "near":
            a.append(int(p.a[11:20])), b.append(int(p.b[11:20]))
    pairs_seconds = time.perf_counter() - t
    a, b = np.frombuffer(a, np.int64) if len(a) else np.zeros(0, np.int64), np.frombuffer(b, np.int64) if len(b) else np.zeros(0, np.int64)
    np.savez(out, a=a, b=b)
    info = {k: v for k, v in report.extra.items() if not isinstance(v, (list, dict))}
    print(json.dumps({"seconds": round(seconds, 2), "search_seconds": round(searching["seconds"], 2),
                      "after_search_seconds": round(seconds - searching["seconds"], 2),
                      "pairs_read_seconds": round(pairs_seconds, 2), "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                      "pairs": len(a), "groups": len(report.groups), "files": report.files, "search_info": info}))


def child(db: Path, search: str, score: str, out: Path) -> dict:
    cmd = [sys.executable, __file__, "--_child", str(db), "--search", search, "--score", score, "--_out", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    if res.returncode:
        sys.exit(f"dupes failed:\n{res.stderr}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--source", default="realistic", choices=("realistic", "real", "random"))
    ap.add_argument("--search", default="auto", choices=("auto", "exact", "approximate"))
    ap.add_argument("--score", default="normalized", choices=("raw", "normalized"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--check-exact", action="store_true", help="also run the exact search and report recall against it")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--db-dir", help="keep the catalog in DIR and reuse it when it matches (--n, --dim, --source, --seed)")
    ap.add_argument("--build-only", action="store_true", help="with --db-dir: build (or reuse) the catalog and stop")
    ap.add_argument("--_child", help=argparse.SUPPRESS)
    ap.add_argument("--_out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._child:
        run_dupes(args._child, args.search, args.score, args._out)
        return 0
    from embeddr.bench.record import finish, load_average

    load_before = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.db"
        spec = {"n": args.n, "dim": args.dim, "source": args.source, "seed": args.seed}
        kept = Path(args.db_dir) / "bench.json" if args.db_dir else None
        if kept is not None:
            db = kept.parent / "bench.db"
        if kept is not None and kept.is_file() and db.is_file() and json.loads(kept.read_text()).get("spec") == spec:
            built, reused = json.loads(kept.read_text()), True
            build_s, index_s = built["catalog_build_seconds"], built["search_structure_seconds"]
            vecs = make_vectors(args.source, args.n, args.dim, args.seed) if args.check_exact else None
        else:
            reused = False
            if kept is not None:  # another spec, or an unfinished build: start afresh
                kept.parent.mkdir(parents=True, exist_ok=True)
                kept.unlink(missing_ok=True)
                for old in kept.parent.glob("bench.db*"):
                    shutil.rmtree(old) if old.is_dir() else old.unlink()
            t = time.perf_counter()
            vecs = make_vectors(args.source, args.n, args.dim, args.seed)
            build_s = time.perf_counter() - t
            index_s = build(db, vecs)
            if kept is not None:
                kept.write_text(json.dumps({"spec": spec, "catalog_build_seconds": round(build_s, 1),
                                            "search_structure_seconds": round(index_s, 1)}))
        result = {"files": args.n, "source": args.source, "score": args.score, "search": args.search,
                  "catalog_build_seconds": round(build_s, 1), "search_structure_seconds": round(index_s, 1),
                  "reused_catalog": reused}
        if args.build_only:
            print(json.dumps(result))
            return 0
        main_run = child(db, args.search, args.score, Path(tmp) / "main.npz")
        result.update(seconds=main_run["seconds"], search_seconds=main_run["search_seconds"],
                      after_search_seconds=main_run["after_search_seconds"],
                      pairs_read_seconds=main_run["pairs_read_seconds"], peak_rss_mib=main_run["peak_rss_mib"], pairs=main_run["pairs"],
                      groups=main_run["groups"], search_info=main_run["search_info"])
        if args.check_exact:
            ex = child(db, "exact", args.score, Path(tmp) / "exact.npz")
            got, want = np.load(Path(tmp) / "main.npz"), np.load(Path(tmp) / "exact.npz")
            key = lambda z: np.minimum(z["a"], z["b"]) * args.n + np.maximum(z["a"], z["b"])  # noqa: E731
            wk, gk = key(want), key(got)
            found = np.isin(wk, gk)
            a, b = np.minimum(want["a"], want["b"]), np.maximum(want["a"], want["b"])
            raw = np.einsum("ij,ij->i", vecs[a], vecs[b]) if len(a) else np.zeros(0)
            loose = (raw >= 0.6) & (raw < 0.8)
            result.update(exact_seconds=ex["seconds"], exact_peak_rss_mib=ex["peak_rss_mib"], exact_pairs=int(len(wk)),
                          pair_recall=round(float(found.mean()) if len(wk) else 1.0, 5),
                          loose_pairs=int(loose.sum()),
                          loose_pair_recall=round(float(found[loose].mean()) if loose.any() else 1.0, 5),
                          extra_pairs=int((~np.isin(gk, wk)).sum()))
    return finish(result, args.json, load_average_before=load_before)


if __name__ == "__main__":
    raise SystemExit(main())
