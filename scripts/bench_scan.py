#!/usr/bin/env python3
"""Measure `embeddr scan` speed end to end and per stage, against imagehash.phash on the same files.

    python scripts/bench_scan.py [FOLDER] [--model sscd-distilled] [--workers N] [--batch-size B]
                                 [--limit N] [--every K] [--threads T] [--device auto] [--main-encode]

FOLDER defaults to ../shared/data/realimages/images. In one run, on the same files (page cache warmed
first so every contender reads from memory):

0. `embeddr scan` in a new process (start-up included) against pHash in a new process;
1. full scan into a fresh temporary catalog (discover, hash + decode (+ encode) in worker processes,
   store, index) via the API (`embeddr.scan`): images/s end to end, and the scan's own stage times;
2. decode stage alone (hash + decode + resize with the same worker processes), images/s;
3. encode stage alone (pre-decoded batches), images/s;
4. pHash the usual way (`imagehash.phash(Image.open(path))`), in one process and with a pool of as many
   worker processes as the scan's decode workers (fair comparison), images/s.

Prints a Markdown table ready to paste into docs/benchmarks.md, plus the ratios scan / pHash.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from multiprocessing import get_context
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

import embeddr  # noqa: E402
from embeddr.api import encoder_threads  # noqa: E402
from embeddr.discover import discover  # noqa: E402
from embeddr.encoders import load_encoder  # noqa: E402
from embeddr.pipeline import default_workers, iter_decoded  # noqa: E402

DEFAULT_FOLDER = REPO.parent / "shared" / "data" / "realimages" / "images"


def _phash_one(path: str) -> str | None:
    import imagehash
    from PIL import Image

    try:
        with Image.open(path) as im:
            return str(imagehash.phash(im))
    except Exception:  # a broken file: pHash tools skip it too
        return None


def bench_phash(paths: list[str], workers: int) -> float:
    """Seconds to pHash every file (workers <= 1: in this process)."""
    t = time.perf_counter()
    if workers <= 1:
        for p in paths:
            _phash_one(p)
    else:
        with get_context("fork").Pool(workers) as pool:
            pool.map(_phash_one, paths, chunksize=16)
    return time.perf_counter() - t


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(next(line for line in open("/proc/meminfo") if line.startswith("MemTotal")).split()[1])
        mem = f", {kb / 2**20:.0f} GiB"
    except (OSError, StopIteration):
        pass
    gpu = ""
    try:
        import torch

        if torch.cuda.is_available():
            gpu = f", GPU {torch.cuda.get_device_name(0)}"
    except Exception:
        pass
    return f"{os.cpu_count()} CPUs ({cpu}){mem}{gpu or ', no GPU'}"


def _with_upscaled(args, argv) -> int:
    from PIL import Image

    cands = [c for c in discover([args.folder]) if c.error is None][: args.limit or None]
    with tempfile.TemporaryDirectory(prefix="embeddr_bench_large_") as tmp:
        for i, c in enumerate(cands):
            with Image.open(c.path) as im:
                im = im.convert("RGB")
                scale = args.upscale / max(im.size)
                im.resize((round(im.width * scale), round(im.height * scale)), Image.Resampling.BICUBIC).save(
                    Path(tmp) / f"{i:05d}.jpg", quality=90)
        rest = [a for a in (argv if argv is not None else sys.argv[1:])]
        keep, skip = [], False
        for a in rest:  # same options, on the temporary folder, without --upscale/--limit/folder
            if skip:
                skip = False
                continue
            if a in ("--upscale", "--limit"):
                skip = True
                continue
            if a.startswith(("--upscale=", "--limit=")) or a == args.folder:
                continue
            keep.append(a)
        print(f"(photos: the first {len(cands)} of {args.folder}, upscaled to a {args.upscale} px long side, JPEG q90)")
        return main([tmp, *keep])


PHASH_SCRIPT = """
import sys, time
t0 = time.perf_counter()
import imagehash
from PIL import Image
for p in open(sys.argv[1]).read().split("\\n"):
    try:
        with Image.open(p) as im:
            imagehash.phash(im)
    except Exception:
        pass
"""


def cpu_breakdown(paths: list[str], encoder) -> dict[str, float]:
    """CPU milliseconds per image of each stage, one image at a time in this process (``time.thread_time``:
    what a stage costs a core, whatever else the box runs), with the encoder's one-thread twin at batch 16."""
    import imagehash
    from PIL import Image

    from embeddr.decode import content_hash, fit, load_image

    tt = time.thread_time
    cost = {"hash": 0.0, "decode": 0.0, "resize": 0.0, "encode": 0.0, "phash": 0.0}
    pixels = []
    for p in paths:
        t = tt()
        content_hash(p)
        t1 = tt()
        try:
            image, _ = load_image(p, min_side=encoder.input_size)
        except Exception:
            continue
        t2 = tt()
        pixels.append(fit(image, encoder.input_size, encoder.resize))
        t3 = tt()
        with Image.open(p) as im:
            imagehash.phash(im)
        t4 = tt()
        cost["hash"] += t1 - t
        cost["decode"] += t2 - t1
        cost["resize"] += t3 - t2
        cost["phash"] += t4 - t3
    factory = encoder.worker_factory(len(paths))
    one = factory() if factory is not None else encoder
    x = np.stack(pixels)
    one.encode(x[:2])
    t = tt()
    for s0 in range(0, len(x), 16):
        one.encode(x[s0 : s0 + 16])
    cost["encode"] = tt() - t
    return {k: 1000 * v / len(pixels) for k, v in cost.items()}


def fresh_process(cmd: list[str]) -> float:
    """Wall seconds of a new Python process running ``cmd`` (start-up included)."""
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", nargs="?", default=str(DEFAULT_FOLDER))
    ap.add_argument("--model", default="sscd-distilled")
    ap.add_argument("--workers", type=int, default=None, help="decode worker processes (default: the scan's default)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--limit", type=int, default=None, help="at most this many files (sorted order, after --every)")
    ap.add_argument("--every", type=int, default=1, metavar="K",
                    help="every K-th file only (a short run that keeps the folder's mix of formats and sizes)")
    ap.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads (default: what `embeddr scan` uses, embeddr.api.encoder_threads)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--main-encode", action="store_true",
                    help="encode in the main process (the scan before issue 9), not in the decode workers")
    ap.add_argument("--cpu-breakdown", action="store_true",
                    help="also measure each stage's CPU milliseconds per image (one image at a time) and the bound "
                         "they set on a scan that keeps every core busy")
    ap.add_argument("--upscale", type=int, default=None, metavar="PX",
                    help="first write each selected photo resized to a PX long side (JPEG q90) into a temporary "
                         "folder and benchmark those: camera-sized photos (e.g. --upscale 4000 --limit 48)")
    args = ap.parse_args(argv)
    if args.upscale:
        return _with_upscaled(args, argv)

    workers = default_workers() if args.workers is None else args.workers
    cands = [c for c in discover([args.folder]) if c.error is None][:: max(1, args.every)]
    if args.limit:
        cands = cands[: args.limit]
    paths = [c.path for c in cands]
    if not paths:
        print(f"no images under {args.folder}", file=sys.stderr)
        return 1
    total_bytes = 0
    for p in paths:  # warm the page cache so every contender reads from memory
        with open(p, "rb") as fh:
            total_bytes += len(fh.read())
    n = len(paths)
    load_before = os.getloadavg()
    print(f"{n} files, {total_bytes / 2**20:.1f} MiB, workers={workers}, batch={args.batch_size}, model={args.model}", file=sys.stderr)

    threads = encoder_threads(workers) if args.threads is None else args.threads
    encoder = load_encoder(args.model, device=args.device, precision=args.precision, threads=threads)
    if args.main_encode:
        encoder.worker_factory = lambda *a: None
    print(f"encoder: {encoder.describe()}", file=sys.stderr)

    with tempfile.TemporaryDirectory() as tmp:
        listing = Path(tmp) / "paths.txt"
        listing.write_text("\n".join(paths))
        # 0. the real command, in a new process: interpreter and imports, model load, scan, index
        cli = [sys.executable, "-c", "from embeddr.cli import main; main()", "scan", *paths, "--db", str(Path(tmp) / "cli.db"),
               "--quiet", "--model", args.model, "--device", args.device, "--precision", args.precision,
               "--batch-size", str(args.batch_size), "--workers", str(workers)]
        cli_s = None if args.main_encode else fresh_process(cli)
        ph_fresh_s = fresh_process([sys.executable, "-c", PHASH_SCRIPT, str(listing)])

        # 1. end to end (fresh catalog, encoder already loaded), through the public API
        t = time.perf_counter()
        report = embeddr.scan(paths, db=Path(tmp) / "bench.db", encoder=encoder, batch_size=args.batch_size, workers=workers)
        scan_s = time.perf_counter() - t
    assert report.processed == n, (report.processed, n)
    stage = report.times

    # 2. decode stage alone (hash + decode + resize, same workers)
    t = time.perf_counter()
    batches = []
    for batch in iter_decoded(cands, size=encoder.input_size, resize=encoder.resize, max_pixels=None,
                              batch_size=args.batch_size, workers=workers):
        batches.append(np.stack([d.pixels for d in batch if d.pixels is not None]))
    decode_s = time.perf_counter() - t

    # 3. encode stage alone: the main encoder (``threads`` threads), and one thread (what each worker runs)
    t = time.perf_counter()
    for b in batches:
        encoder.encode(b)
    encode_s = time.perf_counter() - t
    factory = encoder.worker_factory(n) if not args.main_encode else None
    one = factory() if factory is not None else None
    encode1_s = None
    if one is not None:
        one.encode(batches[0][:2])
        t = time.perf_counter()
        for b in batches:
            for s0 in range(0, len(b), 16):
                one.encode(b[s0 : s0 + 16])
        encode1_s = time.perf_counter() - t
    del batches

    # 4. pHash, the usual way
    ph1_s = bench_phash(paths, 1)
    phw_s = bench_phash(paths, workers) if workers > 1 else ph1_s
    cost = cpu_breakdown(paths, encoder) if args.cpu_breakdown else None
    load_after = os.getloadavg()

    rate = lambda s: n / s if s and s > 0 else float("inf")  # noqa: E731
    scan_rate, ph1, phw = rate(scan_s), rate(ph1_s), rate(phw_s)
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = "?"
    cmd = "python scripts/bench_scan.py " + " ".join(argv if argv is not None else sys.argv[1:])
    mode = ("encoded in the main process" if args.main_encode or not stage.worker_encode
            else f"encoded in the {workers} decode workers, 1 thread each")
    print(f"\nMeasured {when} at commit {commit} on {machine()}; load average (1/5/15 min) "
          f"{' '.join(f'{x:.2f}' for x in load_before)} before, {' '.join(f'{x:.2f}' for x in load_after)} after.")
    print(f"Command: `{cmd.strip()}` — {n} files ({total_bytes / 2**20:.1f} MiB), encoder {encoder.describe()}, "
          f"{workers} decode workers, {mode}, {threads} main encoder thread(s), batch {args.batch_size}.\n")
    print("| what | seconds | images/s |")
    print("|---|---:|---:|")
    if cli_s is not None:
        print(f"| **`embeddr scan` in a new process** (start-up, model load, scan, index; fresh catalog) | {cli_s:.2f} | **{rate(cli_s):.1f}** |")
    print(f"| **imagehash.phash in a new process** (start-up, 1 process) | {ph_fresh_s:.2f} | **{rate(ph_fresh_s):.1f}** |")
    print(f"| embeddr scan through the API (model already loaded; fresh catalog) | {scan_s:.2f} | {scan_rate:.1f} |")
    print(f"| &nbsp; scan stage: discover + incremental check | {stage.discover:.2f} | |")
    print(f"| &nbsp; scan stage: main process waiting for workers (overlapped with their work) | {stage.decode_wait:.2f} | |")
    print(f"| &nbsp; &nbsp; in the workers: SHA-256 (process-seconds, summed) | {stage.hash:.2f} | |")
    print(f"| &nbsp; &nbsp; in the workers: decode + resize (process-seconds, summed) | {stage.decode:.2f} | |")
    print(f"| &nbsp; &nbsp; in the workers: encode (process-seconds, summed) | {stage.worker_encode:.2f} | |")
    print(f"| &nbsp; scan stage: encode in the main process | {stage.encode:.2f} | |")
    print(f"| &nbsp; scan stage: store (SQLite commits) | {stage.store:.2f} | |")
    print(f"| &nbsp; scan stage: index (FAISS add + search structure, atomic writes) | {stage.index:.2f} | |")
    print(f"| decode alone (hash + decode + resize, {workers} workers) | {decode_s:.2f} | {rate(decode_s):.1f} |")
    print(f"| encode alone, {threads} thread(s), batch {args.batch_size} | {encode_s:.2f} | {rate(encode_s):.1f} |")
    if encode1_s is not None:
        print(f"| encode alone, 1 thread, batch 16 (one worker's encoder) | {encode1_s:.2f} | {rate(encode1_s):.1f} |")
    print(f"| imagehash.phash, 1 process (in this process) | {ph1_s:.2f} | {ph1:.1f} |")
    print(f"| imagehash.phash, {workers} processes | {phw_s:.2f} | {phw:.1f} |")
    if cost is not None:
        total = cost["hash"] + cost["decode"] + cost["resize"] + cost["encode"]
        cores = os.cpu_count() or 1
        print(f"\nCPU cost per image, one at a time (`time.thread_time`, {n} files):\n")
        print("| stage | CPU ms per image |")
        print("|---|---:|")
        for k, label in (("hash", "SHA-256"), ("decode", "decode (JPEG draft, EXIF, RGB, border)"),
                         ("resize", f"resize to {encoder.input_size} ({encoder.resize})"),
                         ("encode", f"encode ({encoder.name}, 1 thread, batch 16)")):
            print(f"| {label} | {cost[k]:.2f} |")
        print(f"| **scan total** | **{total:.2f}** |")
        print(f"| imagehash.phash (open, full decode, 32x32, DCT) | {cost['phash']:.2f} |")
        print(f"\nbound for a scan that keeps all {cores} cores busy: {cores * 1000 / total:.0f} images/s = "
              f"**{cores * cost['phash'] / total:.2f}x** pHash in one process ({1000 / cost['phash']:.0f} images/s)")
    if cli_s is not None:
        print(f"\nstart-up included: `embeddr scan` / pHash (new process each) = **{rate(cli_s) / rate(ph_fresh_s):.2f}x**")
    print(f"in-process: scan / pHash (1 process) = **{scan_rate / ph1:.2f}x**; scan / pHash ({workers} processes) = **{scan_rate / phw:.2f}x**")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
