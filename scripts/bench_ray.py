#!/usr/bin/env python3
"""Images/s of `embeddr scan --ray` on a loopback Ray cluster (1 and 2 nodes of --cpus each) against
the local scan, on ../shared/data/realimages (or --images DIR).

    python scripts/bench_ray.py                      # local scan, Ray with 1 node, Ray with 2 nodes
    python scripts/bench_ray.py --limit 400 --json

Each run scans a fresh catalog (no file is unchanged). The Ray figure includes connecting to the
cluster and starting its actors (the model loads once per actor), not starting the cluster itself.
Prints the date, machine and load average beside the figures (docs/benchmarks.md wants them).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the loopback cluster helper the tests use


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=Path, default=REPO.parent / "shared" / "data" / "realimages" / "images")
    ap.add_argument("--limit", type=int, default=0, help="scan only the first N images (0: all)")
    ap.add_argument("--cpus", type=int, default=1, help="CPUs of each Ray node")
    ap.add_argument("--nodes", default="1,2", help="cluster sizes to measure (comma-separated)")
    ap.add_argument("--model", default="sscd-distilled")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args()
    if not args.images.is_dir():
        print(f"bench_ray: no image folder at {args.images} (the shared real-image set is not in this clone); "
              f"pass --images DIR", file=sys.stderr)
        return 2
    try:
        import ray  # noqa: F401
    except ImportError:
        print('bench_ray: Ray is not installed: pip install "embeddr[ray]"', file=sys.stderr)
        return 2
    from raycluster import LoopbackCluster

    from embeddr import api
    from embeddr.discover import discover

    work = Path(tempfile.mkdtemp(prefix="bench_ray"))
    try:
        images = work / "images"
        files = [Path(c.path) for c in discover([args.images]) if not c.error]
        if args.limit:
            files = files[: args.limit]
        for i, f in enumerate(files):  # symlinks keep the bytes where they are; one folder, flat names
            (images / f"{i:05d}").mkdir(parents=True, exist_ok=True)
            os.symlink(f, images / f"{i:05d}" / f.name)
        results = []

        def record(name: str, report, wall: float) -> None:
            results.append({"run": name, "images": report.processed, "errors": report.errors,
                            "seconds": round(report.seconds, 2), "wall_seconds": round(wall, 2),
                            "images_per_second": round(report.processed / report.seconds, 1), "load": _load()})
            print(f"{name:<24} {report.processed} images in {report.seconds:.1f}s: "
                  f"{report.processed / report.seconds:.1f} img/s  (load {_load()})", file=sys.stderr)

        t = time.perf_counter()
        report = api.scan([images], db=work / "local.db", model=args.model)
        record("local scan", report, time.perf_counter() - t)
        for n in [int(x) for x in args.nodes.split(",") if x]:
            with LoopbackCluster(nodes=n, cpus=args.cpus) as cluster:
                t = time.perf_counter()
                report = api.scan([images], db=work / f"ray{n}.db", model=args.model, ray=cluster.address)
                record(f"ray, {n} node(s) x {args.cpus} CPU", report, time.perf_counter() - t)
        meta = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
                "images": len(files), "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])}
        if args.json:
            print(json.dumps({**meta, "results": results}, indent=2))
        else:
            print(f"{meta['date']} · {meta['machine']} · {meta['images']} images · {meta['command']}")
            for r in results:
                print(f"| {r['run']} | {r['images']} | {r['seconds']} | {r['images_per_second']} | {r['load']} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
