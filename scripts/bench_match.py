#!/usr/bin/env python3
"""Time and memory of `embeddr dupes` (match + normalise + group) on a large synthetic catalog.

    python scripts/bench_match.py --n 100000 [--dim 512] [--dups 0.2] [--score normalized|raw] [--approximate]

Builds a catalog of N unit vectors without images: random vectors, of which a fraction ``--dups``
are given a near-copy (cosine ~0.95) and a further looser variant (~0.75), the way a catalogue
holds thumbnails and crops. Then runs `embeddr.find_duplicates` and reports seconds, peak resident
memory, pairs found and recall of the planted pairs. Each run is a fresh process, so the peak is the
run's own. Exact search costs O(N^2 * dim) multiply-adds (chunked: memory stays O(N * dim)).
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from embeddr.catalog import Catalog, FileRecord  # noqa: E402
from embeddr.dupes import find_duplicates  # noqa: E402
from embeddr.presets import get_preset  # noqa: E402


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def build(db: Path, n: int, dim: int, dup_fraction: float, seed: int = 0) -> set[tuple[str, str]]:
    rng = np.random.default_rng(seed)
    n_base = int(n / (1 + 2 * dup_fraction))
    n_dup = int(n_base * dup_fraction)
    planted: set[tuple[str, str]] = set()
    with Catalog(db) as catalog:
        catalog.bind_model("sscd-distilled", dim)
        run = catalog.begin_run("sscd-distilled", ["synthetic"])
        for start in range(0, n_base, 20000):
            base = unit(rng.normal(size=(min(20000, n_base - start), dim)))
            records, vectors = [], {}
            for i, v in enumerate(base):
                k = start + i
                name = f"/synthetic/{k:08d}.jpg"
                records.append(FileRecord(name, 1000, 0, f"h{k}", 100, 100, "JPEG"))
                vectors[f"h{k}"] = v
                if k < n_dup:
                    for tag, noise in (("copy", 0.33), ("variant", 0.9)):  # cosine ~0.95 and ~0.75
                        w = unit((v + noise / np.sqrt(dim) * rng.normal(size=dim))[None])[0]
                        path = f"/synthetic/{k:08d}_{tag}.jpg"
                        records.append(FileRecord(path, 900, 0, f"h{k}{tag}", 100, 100, "JPEG"))
                        vectors[f"h{k}{tag}"] = w
                        if tag == "copy":
                            planted.add(tuple(sorted((name, path))))
            catalog.record_batch(records, vectors, run, "sscd-distilled")
        catalog.finish_run(run, "done", {})
    return planted


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--dups", type=float, default=0.2)
    ap.add_argument("--score", default="normalized", choices=("raw", "normalized"))
    ap.add_argument("--approximate", action="store_true", help="IVF search (dupes --approximate); also runs the exact "
                    "search afterwards to report the share of its pairs found")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "synthetic.db"
        t = time.perf_counter()
        planted = build(db, args.n, args.dim, args.dups)
        build_s = time.perf_counter() - t
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        t = time.perf_counter()
        with Catalog(db) as catalog:
            report = find_duplicates(catalog, get_preset("sscd-distilled"), score=args.score, approximate=args.approximate)
        dupes_s = time.perf_counter() - t
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        n_files = report.files
        note = ""
        if args.approximate:
            t = time.perf_counter()
            with Catalog(db) as catalog:
                exact = find_duplicates(catalog, get_preset("sscd-distilled"), score=args.score)
            exact_pairs = {(p.a, p.b) for p in exact.pairs}
            share = len(exact_pairs & {(p.a, p.b) for p in report.pairs}) / max(1, len(exact_pairs))
            note = (f"approximate (nlist {report.extra['nlist']}, nprobe {report.extra['nprobe']}): {share:.4f} of the exact "
                    f"search's {len(exact_pairs):,} pairs, exact search {time.perf_counter() - t:.1f} s; ")
    found = {(p.a, p.b) for p in report.pairs}
    recall = len(planted & found) / max(1, len(planted))
    vec_mb = n_files * args.dim * 4 / 2**20
    print(f"| {n_files:,} | {args.score} | {dupes_s:.1f} | {peak:.0f} | {vec_mb:.0f} | {len(report.pairs):,} | "
          f"{len(report.groups):,} | {recall:.3f} | {note}catalog built in {build_s:.1f} s, RSS before dupes {rss_before:.0f} MiB |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
