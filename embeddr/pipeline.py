"""The scan pipeline: discover -> (hash + decode in worker processes) -> encode -> catalog.

Memory is bounded: the decode workers (a process pool, at most two batches in flight per
worker) hand over fixed-size uint8 arrays a batch at a time, and each batch is committed to the
catalog in one transaction before the next is taken, so an interrupted scan (Ctrl-C, kill -9,
power loss) resumes after the last committed batch.

Workers die with the scan (``PR_SET_PDEATHSIG`` on Linux, and a thread watching the parent
everywhere): a killed scan leaves no orphans. A worker that dies (the OOM killer, a crashing
decoder) costs its batch, not the scan: the pool is recreated, the batches that were in flight
are decoded again one at a time, and the one that kills a worker again is recorded as per-file
errors ("decode worker died").

A local file is read twice (hash, then decode): its size, mtime and inode are compared before
and after, and a file rewritten meanwhile is read again (or, if it keeps changing, recorded as
an error), so a record never has the size of one version and the hash of another.

One writer at a time: :func:`scan_into` holds the catalog's writer lock (:mod:`embeddr.lock`).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import numpy as np

from .catalog import Catalog, FileRecord
from .decode import DEFAULT_MAX_PIXELS, content_hash, fit, jpeg_header, load_image, read_file
from .discover import Candidate, not_regular
from .encoders.base import Encoder
from .errors import CatalogError, DecodeError, EmbeddrError
from .lock import writer
from .presets import DEFAULT_MODEL, Preset
from .sources import FetchError, FetchOptions, fetch, is_remote, list_inputs, manifest_rows, stat


@dataclass
class StageTimes:
    """Wall-clock seconds of the main process per stage, plus the work done in the decode workers
    (``hash``, ``decode``, ``worker_encode``: seconds summed over all workers, overlapped with the rest)."""

    discover: float = 0.0
    decode_wait: float = 0.0  # time the main process waited for decoded (or, see worker_encode, encoded) batches
    encode: float = 0.0  # the main process's own encoder calls
    store: float = 0.0
    index: float = 0.0
    hash: float = 0.0  # SHA-256 of the files' bytes, summed over the workers
    decode: float = 0.0  # decode + resize, summed over the workers
    worker_encode: float = 0.0  # encoding done in the decode workers (CPU ONNX encoders), summed over the workers
    batch_decode: float = 0.0  # JPEGs decoded in batches on the encoder's device (GPU path), in a thread one batch ahead

    def as_dict(self) -> dict:
        return {k: round(v, 3) for k, v in self.__dict__.items()}


@dataclass
class ScanReport:
    run_id: int
    model: str
    seen: int = 0  # image candidates found
    unchanged: int = 0  # skipped: same path, size and mtime as in the catalog
    links: int = 0  # symlinks / hard links to a file scanned under another path (not duplicates)
    processed: int = 0  # hashed and decoded this run
    encoded: int = 0  # vectors computed this run
    exact_reused: int = 0  # new files whose bytes already had a vector
    errors: int = 0
    missing: int = 0  # catalogued files under the roots that are gone
    interrupted: bool = False
    seconds: float = 0.0
    times: StageTimes = field(default_factory=StageTimes)
    error_samples: list[tuple[str, str]] = field(default_factory=list)
    unwalked: list[str] = field(default_factory=list)  # folders that could not be listed
    device: str = ""  # where the encoder ran (as its runtime reports it)
    precision: str = ""  # the arithmetic it ran in
    jpeg_decode: str = "pillow"  # "pillow" (CPU, decode workers) or the torch device JPEGs were batch-decoded on

    def as_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k not in ("times", "error_samples", "unwalked")}
        d["times"] = self.times.as_dict()
        d["error_samples"] = [{"path": p, "error": e} for p, e in self.error_samples]
        d["images_per_second"] = round(self.processed / self.seconds, 2) if self.seconds else None
        return d


class Decoded(NamedTuple):
    """What a decode worker returns for one file: its catalog record (``status``/``error`` set when
    it could not be read) and, when it could, the pixels for the encoder, or (when the worker encodes,
    :class:`WorkerEncoding`) the vector instead. Never an exception."""

    record: FileRecord
    pixels: np.ndarray | None = None
    vector: np.ndarray | None = None
    data: bytes | None = None  # a JPEG's bytes, left for the main process's batched decoder (GPU path)
    orientation: int = 1  # that JPEG's EXIF orientation (from its header), applied after the batched decode


class DecodedBatch(list):
    """A batch of :class:`Decoded`, in input order, with the seconds the worker spent on it per stage."""

    hash_s: float = 0.0
    decode_s: float = 0.0
    encode_s: float = 0.0
    batch_decode_s: float = 0.0  # the main process's batched JPEG decode (GPU path)


@dataclass(frozen=True)
class WorkerEncoding:
    """Decode workers that also encode their batch, each with its own one-thread CPU encoder.

    On the CPU this beats decoding in workers and encoding in the main process: no pixels cross
    between processes (a 512-d vector does instead), no intra-op thread synchronisation, and every
    core runs decode and encode back to back (measured: scripts/bench_scan.py, docs/benchmarks.md).
    ``build`` (picklable) makes the worker's encoder once per worker process; ``catalog`` (optional)
    is read-only looked up so that bytes already holding a vector are not encoded again.
    """

    build: Callable[[], Encoder]
    key: tuple
    catalog: str | None = None


_WORKER: dict = {}  # in a worker process: the encoder built from a WorkerEncoding, and its catalog connection
_TIMES = {"hash": 0.0, "decode": 0.0}  # per process: seconds spent in content_hash and load_image + fit


class DecodeDataset:
    """Map-style dataset: index -> :class:`Decoded` (runs inside DataLoader worker processes)."""

    def __init__(self, items: Sequence[Candidate], size: int, resize: str, max_pixels: int | None,
                 fetch_options: FetchOptions | None = None):
        self.items, self.size, self.resize, self.max_pixels = items, size, resize, max_pixels
        self.fetch_options = fetch_options or FetchOptions()

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Decoded:
        return decode_one(self.items[i], self.size, self.resize, self.max_pixels, self.fetch_options)


def decode_one(c: Candidate, size: int, resize: str, max_pixels: int | None,
               fetch_options: FetchOptions | None = None, attempts: int = 3, jpeg_bytes: bool = False) -> Decoded:
    """Hash and decode one input (reading a URL's bytes first); failures become the record's error.

    A local file is stat'ed before and after it is read; if it changed meanwhile it is read again
    (at most ``attempts`` times), so the record's size, mtime and hash are of one version."""
    if c.error:
        return Decoded(FileRecord(c.path, c.size or None, c.mtime_ns or None, None, status="error", error=c.error,
                                  item_id=c.item_id))
    if is_remote(c.path):
        return _decode_remote(c, size, resize, max_pixels, fetch_options)

    def failed(error: str, digest: str | None = None, st: os.stat_result | None = None) -> Decoded:
        sz, mt = (st.st_size, st.st_mtime_ns) if st is not None else (c.size or None, c.mtime_ns or None)
        return Decoded(FileRecord(c.path, sz, mt, digest, status="error", error=error, item_id=c.item_id))

    for _ in range(attempts):
        try:
            before = os.stat(c.path)
        except FileNotFoundError:
            return failed("file is gone (deleted or renamed during the scan)")
        except OSError as exc:
            return failed(f"cannot stat: {exc.strerror or exc}")
        why = not_regular(before.st_mode)
        if why:
            return failed(why, st=before)
        result = (_read_for_batch_decode if jpeg_bytes else _read_local)(c, before, size, resize, max_pixels, failed)
        try:
            after = os.stat(c.path)
        except OSError:
            return failed("file is gone (deleted or renamed during the scan)")
        if _same_version(before, after):
            return result
    return failed(f"file changed while it was being read ({attempts} tries); scan again once it is written")


def _same_version(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_size, a.st_mtime_ns, a.st_ino, a.st_dev) == (b.st_size, b.st_mtime_ns, b.st_ino, b.st_dev)


def _read_local(c: Candidate, st: os.stat_result, size: int, resize: str, max_pixels: int | None, failed) -> Decoded:
    t0 = time.perf_counter()
    try:
        digest = content_hash(c.path)
    except OSError as exc:
        return failed(f"cannot read: {exc.strerror or exc}", st=st)
    t1 = time.perf_counter()
    _TIMES["hash"] += t1 - t0
    return _decode_to_record(c, st, st.st_size, digest, size, resize, max_pixels, failed, t1)


def _decode_to_record(c: Candidate, st: os.stat_result, nbytes: int, digest: str, size: int, resize: str,
                      max_pixels: int | None, failed, t1: float, data: bytes | None = None) -> Decoded:
    """Decode (from ``data`` when given, else the file) and fit to the model; the file's record, or its error."""
    try:
        image, meta = load_image(c.path, min_side=size, max_pixels=max_pixels, data=data)
        pixels = fit(image, size, resize)
    except DecodeError as exc:
        return failed(exc.reason, digest, st)
    except Exception as exc:  # a decoder bug must not stop the scan: record it against the file
        return failed(f"cannot decode: {type(exc).__name__}: {exc}", digest, st)
    finally:
        _TIMES["decode"] += time.perf_counter() - t1
    return Decoded(FileRecord(c.path, nbytes, st.st_mtime_ns, digest, meta.width, meta.height, meta.format,
                              content_width=meta.content_width, content_height=meta.content_height,
                              item_id=c.item_id), pixels)


BATCH_DECODE_MAX_BYTES = 64 << 20  # larger files are not held in memory for the GPU path


def _read_for_batch_decode(c: Candidate, st: os.stat_result, size: int, resize: str, max_pixels: int | None, failed) -> Decoded:
    """GPU path: read the file once and hash its bytes; a JPEG that can be decoded whole goes back as bytes
    (decoded in a batch on the device by the main process), anything else is decoded here as usual (and a
    file over :data:`BATCH_DECODE_MAX_BYTES` is streamed by the CPU path instead of read into memory)."""
    if st.st_size > BATCH_DECODE_MAX_BYTES:
        return _read_local(c, st, size, resize, max_pixels, failed)
    t0 = time.perf_counter()
    try:
        data = read_file(c.path)
    except OSError as exc:
        return failed(f"cannot read: {exc.strerror or exc}", st=st)
    digest = hashlib.sha256(data).hexdigest()
    t1 = time.perf_counter()
    _TIMES["hash"] += t1 - t0
    header = jpeg_header(c.path, data, max_pixels) if data[:3] == b"\xff\xd8\xff" else None  # never raises
    if header is not None:
        meta, orientation = header
        _TIMES["decode"] += time.perf_counter() - t1
        return Decoded(FileRecord(c.path, len(data), st.st_mtime_ns, digest, meta.width, meta.height, meta.format,
                                  item_id=c.item_id), data=data, orientation=orientation)
    return _decode_to_record(c, st, len(data), digest, size, resize, max_pixels, failed, t1, data)


def finish_jpegs(batch: list[Decoded], size: int, resize: str, device: str, max_pixels: int | None) -> list[Decoded]:
    """Decode, in one batch on ``device``, the JPEG bytes the workers left in ``batch`` (GPU path); a file the
    batched decoder refuses is decoded on the CPU from the same bytes, and one that fails there too becomes
    its per-file error. Returns the batch with pixels (and the records' size and border from the decode)."""
    from .gpu_decode import decode_jpegs

    idx = [i for i, d in enumerate(batch) if d.data is not None]
    if not idx:
        return batch
    try:
        got = decode_jpegs([batch[i].data for i in idx], size, resize, device, [batch[i].orientation for i in idx])
    except Exception:  # the device failed the batch (out of memory...): every file goes to the CPU decoder
        got = [None] * len(idx)
    out = list(batch)
    for i, r in zip(idx, got):
        d = out[i]
        if r is not None:
            pixels, (w, h), box = r
            out[i] = Decoded(replace(d.record, width=w, height=h, content_width=box[0] if box else None,
                                     content_height=box[1] if box else None), pixels)
            continue
        try:
            image, meta = load_image(d.record.path, min_side=size, max_pixels=max_pixels, data=d.data)
            out[i] = Decoded(replace(d.record, width=meta.width, height=meta.height, format=meta.format,
                                     content_width=meta.content_width, content_height=meta.content_height),
                             fit(image, size, resize))
        except DecodeError as exc:
            out[i] = Decoded(replace(d.record, status="error", error=exc.reason))
        except Exception as exc:  # a decoder bug must not stop the scan
            out[i] = Decoded(replace(d.record, status="error", error=f"cannot decode: {type(exc).__name__}: {exc}"))
    return out


def _timed_finish(batch: DecodedBatch, encoder: Encoder, device: str, max_pixels: int | None) -> DecodedBatch:
    t = time.perf_counter()
    out = DecodedBatch(finish_jpegs(batch, encoder.input_size, encoder.resize, device, max_pixels))
    out.hash_s, out.decode_s, out.encode_s = batch.hash_s, batch.decode_s, batch.encode_s
    out.batch_decode_s = time.perf_counter() - t
    return out


def _ahead(batches, fn):
    """``fn(b)`` for each of ``batches``, in order, computed one batch ahead in a thread (the GPU path: nvJPEG
    decodes batch k+1 while the main thread encodes and stores batch k; both release the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1, thread_name_prefix="embeddr-jpeg") as pool:
        pending = None
        for b in batches:
            nxt = pool.submit(fn, b)
            if pending is not None:
                yield pending.result()
            pending = nxt
        if pending is not None:
            yield pending.result()


def batch_jpeg_device(requested: str | None, encoder: Encoder) -> str | None:
    """Where a scan decodes its JPEGs: a torch device for the batched decoder (:mod:`embeddr.gpu_decode`),
    or None for Pillow in the decode workers.

    ``auto``: the encoder's CUDA device when the encoder runs on one and torchvision is installed, else
    Pillow. ``pillow``: always Pillow. A torch device (``cuda``, ``cuda:1``, ``cpu``): that one (``cpu``
    runs the same batched code on torch's CPU, for tests); one that cannot be had is an error. Models that
    pad (``resize = pad``) keep Pillow."""
    from . import gpu_decode

    requested = (requested or "auto").lower()
    if requested == "pillow":
        return None
    if requested == "auto":
        device = str(encoder.device)
        ok = device.startswith("cuda") and encoder.resize in gpu_decode.RESIZE_MODES and gpu_decode.available()
        return device if ok else None
    if not (requested == "cpu" or requested.startswith("cuda")):
        raise EmbeddrError(f"--jpeg-decode {requested!r}: use auto, pillow, cuda[:N] or cpu")
    if not gpu_decode.available():
        raise EmbeddrError(f"--jpeg-decode {requested}: needs torchvision (pip install 'embeddr[gpu]'), or use pillow")
    if requested.startswith("cuda"):
        from .devices import _cuda_available

        if not _cuda_available():
            raise EmbeddrError(f"--jpeg-decode {requested}: CUDA is not available here; use auto or pillow")
    if encoder.resize not in gpu_decode.RESIZE_MODES:
        raise EmbeddrError(f"--jpeg-decode {requested}: model {encoder.name} resizes with {encoder.resize!r}, "
                           f"which the batched decoder does not do; use auto or pillow")
    return requested


def _decode_remote(c: Candidate, size: int, resize: str, max_pixels: int | None,
                   fetch_options: FetchOptions | None) -> Decoded:
    def failed(error: str, digest: str | None = None, size: int | None = None, etag: str | None = None) -> Decoded:
        return Decoded(FileRecord(c.path, size or c.size or None, c.mtime_ns or None, digest, status="error", error=error,
                                  item_id=c.item_id, etag=etag))

    try:
        got = fetch(c.path, fetch_options or FetchOptions())
    except FetchError as exc:
        return failed(exc.reason)
    data, etag = got.data, got.etag
    digest = hashlib.sha256(data).hexdigest()
    try:
        image, meta = load_image(c.path, min_side=size, max_pixels=max_pixels, data=data)
        pixels = fit(image, size, resize)
    except DecodeError as exc:
        return failed(exc.reason, digest, len(data), etag)
    except Exception as exc:  # a decoder bug must not stop the scan: record it against the file
        return failed(f"cannot decode: {type(exc).__name__}: {exc}", digest, len(data), etag)
    return Decoded(FileRecord(c.path, len(data), None, digest, meta.width, meta.height, meta.format,
                              content_width=meta.content_width, content_height=meta.content_height,
                              item_id=c.item_id, etag=etag), pixels)


def decode_batch(items: Sequence[Candidate], size: int, resize: str, max_pixels: int | None,
                 fetch_options: FetchOptions | None = None, encoding: WorkerEncoding | None = None,
                 jpeg_bytes: bool = False) -> DecodedBatch:
    """Decode ``items`` (and, with ``encoding``, encode them here too; with ``jpeg_bytes``, leave JPEGs as
    bytes for the main process's batched decoder): a :class:`DecodedBatch`."""
    _TIMES["hash"] = _TIMES["decode"] = 0.0
    out = DecodedBatch(decode_one(c, size, resize, max_pixels, fetch_options, jpeg_bytes=jpeg_bytes) for c in items)
    out.hash_s, out.decode_s = _TIMES["hash"], _TIMES["decode"]
    if encoding is not None:
        try:
            out.encode_s = _encode_here(out, encoding)
        except Exception:  # noqa: BLE001 - the worker's encoder failed (cannot load, out of memory): the main process encodes
            pass
    return out


def _known_hashes(encoding: WorkerEncoding, hashes: list[str]) -> set[str]:
    """Hashes that already have a vector in the catalog (read-only, from a worker); empty on any error."""
    if encoding.catalog is None or not hashes:
        return set()
    import sqlite3

    try:
        conn = _WORKER.get(("conn", encoding.catalog))
        if conn is None:
            conn = _WORKER[("conn", encoding.catalog)] = sqlite3.connect(f"file:{encoding.catalog}?mode=ro", uri=True, timeout=5)
        q = f"SELECT hash FROM vectors WHERE hash IN ({','.join('?' * len(hashes))})"
        return {r[0] for r in conn.execute(q, hashes)}
    except sqlite3.Error:  # the main process decides again; at worst a vector is computed twice
        return set()


def _encode_here(batch: DecodedBatch, encoding: WorkerEncoding) -> float:
    """Replace, in place, the pixels of each new content in ``batch`` by its vector (first occurrence of a
    hash); returns the seconds spent encoding (the worker's encoder is built on first use, not counted)."""
    if _WORKER.get("key") != encoding.key:
        _WORKER.clear()
        _WORKER["key"], _WORKER["encoder"] = encoding.key, encoding.build()
    first: dict[str, int] = {}
    for i, d in enumerate(batch):
        if d.pixels is not None and d.record.hash not in first:
            first[d.record.hash] = i
    known = _known_hashes(encoding, list(first)) if len(first) <= 500 else set()
    todo = [i for h, i in first.items() if h not in known]
    if not todo:
        return 0.0
    t = time.perf_counter()
    vectors = _WORKER["encoder"].encode(np.stack([batch[i].pixels for i in todo]))
    for i, v in zip(todo, vectors):
        batch[i] = Decoded(batch[i].record, None, v)
    for i, d in enumerate(batch):  # later copies of an encoded content need no pixels: the main process reuses the vector
        if d.pixels is not None and first.get(d.record.hash) != i and d.record.hash not in known:
            batch[i] = Decoded(d.record)
    return time.perf_counter() - t


WORKER_DIED = "decode worker died while decoding this batch (killed, or out of memory?); scan again to retry"


def _worker_init(parent: int) -> None:
    """In each decode worker: die with the parent, leave Ctrl-C to it, drop inherited catalog locks."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):  # pragma: no cover
            pass
    if os.getppid() != parent:  # the parent died before the line above ran
        os._exit(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    from . import lock

    for fd, _depth in list(lock._HELD.values()):  # the lock must go when the parent goes, not when we do
        try:
            os.close(fd)
        except OSError:
            pass
    lock._HELD.clear()

    def watch() -> None:  # other platforms (and belt and braces): poll the parent
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="embeddr-parent-watch", daemon=True).start()


def _new_pool(workers: int) -> ProcessPoolExecutor:
    import multiprocessing as mp

    ctx = mp.get_context("fork") if os.name == "posix" else None
    return ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init, initargs=(os.getpid(),))


def _pool_batches(batches: list[list[Candidate]], args: tuple, workers: int):
    """Decode ``batches`` in a process pool, in order; a dead worker costs its batch, not the scan."""
    pool = _new_pool(workers)
    pending = deque(batches)
    inflight: deque = deque()
    try:
        while pending or inflight:
            broken = False
            while pending and len(inflight) < 2 * workers:
                try:
                    fut = pool.submit(decode_batch, pending[0], *args)
                except BrokenProcessPool:
                    broken = True
                    break
                inflight.append((pending.popleft(), fut))
            if not broken:
                try:
                    out = inflight[0][1].result()
                except BrokenProcessPool:
                    broken = True
                else:
                    inflight.popleft()
                    yield out
                    continue
            # A worker died. Which batch killed it is unknown: each batch that was in flight (and did not
            # finish) is decoded again alone in a fresh pool; one that breaks that pool too is the culprit.
            suspects = list(inflight)
            inflight.clear()
            pool.shutdown(wait=False, cancel_futures=True)
            pool = _new_pool(workers)
            for b, fut in suspects:
                if fut.done() and not fut.cancelled() and fut.exception() is None:
                    yield fut.result()
                    continue
                try:
                    got = pool.submit(decode_batch, b, *args).result()
                except BrokenProcessPool:
                    pool.shutdown(wait=False, cancel_futures=True)
                    pool = _new_pool(workers)
                    got = DecodedBatch(Decoded(FileRecord(c.path, c.size or None, c.mtime_ns or None, status="error",
                                                           error=WORKER_DIED, item_id=c.item_id)) for c in b)
                yield got
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def iter_decoded(items: Sequence[Candidate], *, size: int, resize: str, max_pixels: int | None,
                 batch_size: int, workers: int, fetch_options: FetchOptions | None = None,
                 encoding: WorkerEncoding | None = None, jpeg_bytes: bool = False):
    """Batches of :class:`Decoded`, in input order, decoded by ``workers`` processes (0 = inline).

    ``encoding``: the workers encode too (:class:`WorkerEncoding`; local files and ``workers`` > 0 only):
    each new content's :class:`Decoded` then carries its vector instead of pixels.

    When some inputs are URLs, a pool of ``fetch_options.concurrency`` threads fetches and decodes
    them (network-bound: threads, not processes), one batch ahead of the encoder.
    """
    fetch_options = fetch_options or FetchOptions()
    dataset = DecodeDataset(items, size, resize, max_pixels, fetch_options)
    if any(is_remote(c.path) for c in items):  # (URLs: decoded by Pillow here; jpeg_bytes applies to local files)
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=max(1, fetch_options.concurrency), thread_name_prefix="embeddr-fetch") as pool:
            starts = list(range(0, len(items), batch_size))
            pending = [pool.submit(dataset.__getitem__, i) for i in range(0, min(len(items), batch_size))] if starts else []
            for n, start in enumerate(starts):
                nxt = starts[n + 1] if n + 1 < len(starts) else None
                ahead = ([pool.submit(dataset.__getitem__, i) for i in range(nxt, min(nxt + batch_size, len(items)))]
                         if nxt is not None else [])
                yield [f.result() for f in pending]
                pending = ahead
        return
    if workers <= 0:
        for start in range(0, len(items), batch_size):
            yield decode_batch(items[start : start + batch_size], size, resize, max_pixels, fetch_options, None, jpeg_bytes)
        return
    batches = [list(items[i : i + batch_size]) for i in range(0, len(items), batch_size)]
    yield from _pool_batches(batches, (size, resize, max_pixels, fetch_options, encoding, jpeg_bytes), workers)


def encoder_threads(workers: int | None) -> int:
    """CPU threads for the main process's encoder: every core.

    Used when the main process encodes (a GPU, torch models, URLs, ``--workers 0``); a CPU ONNX encoder
    in a scan with decode workers is run in the workers instead, one thread each (:class:`WorkerEncoding`).
    Measured on the 2-core dev box (scripts/bench_scan.py on ../shared/data/realimages, 2 decode workers):
    1 encoder thread 161 img/s, 2 threads 205 img/s. On a GPU it only sets onnxruntime's intra-op threads.
    """
    return max(1, os.cpu_count() or 1)


WORKER_BATCH = 16  # images per worker batch when the workers encode: short batches keep every core busy to the end


def worker_encoding(encoder: Encoder, catalog: Catalog | None, workers: int, items: Sequence[Candidate]) -> WorkerEncoding | None:
    """The :class:`WorkerEncoding` for this scan, or None: the encoder must say how to rebuild itself in a
    worker (:meth:`~embeddr.encoders.base.Encoder.worker_factory`: CPU ONNX encoders), there must be decode
    workers, and only local files (URLs are fetched by threads in the main process)."""
    factory = encoder.worker_factory(len(items)) if workers > 0 else None
    if factory is None or any(is_remote(c.path) for c in items):
        return None
    path = str(catalog.path) if catalog is not None and getattr(catalog, "path", None) else None
    key = (encoder.name, id(encoder), os.getpid(), repr(getattr(factory, "keywords", None)))
    return WorkerEncoding(build=factory, key=key, catalog=path)


def scan_into(roots: Iterable[str | os.PathLike], *, db: Catalog | str | os.PathLike,
              model: str | Preset | None = None, device: str = "auto", precision: str = "auto",
              checkpoint: str | os.PathLike | None = None, exclude: Iterable[str] = (), batch_size: int = 64,
              workers: int | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS,
              progress: Callable[[int, int | None], None] | None = None, encoder: Encoder | None = None,
              manifest: str | os.PathLike | None = None, path_column: str = "path", id_column: str | None = None,
              fetch_options: FetchOptions | None = None,
              run: Callable[[list, Catalog, Preset], ScanReport] | None = None, wait: bool = False,
              jpeg_decode: str = "auto") -> ScanReport:
    """Scan ``roots`` (folders, files, URLs) and a ``manifest``'s rows into the catalog ``db`` (an open
    catalog, or a path: created if needed).

    ``manifest``: a CSV or Parquet product feed; ``path_column`` names its path/URL column and
    ``id_column`` (optional) the item id carried into every result (:mod:`embeddr.sources`). URLs are
    fetched with ``fetch_options``. ``run(roots, catalog, preset)``: scan with that instead of the local
    pipeline, after the same checks (:func:`embeddr.ray_scan.ray_scan` for ``scan --ray``).

    ``model`` defaults to the catalog's, or :data:`~embeddr.presets.DEFAULT_MODEL` for a new catalog.
    A failed start (missing root, unknown model, weights that cannot be loaded, a model that is not
    the catalog's) raises before anything is written: a new catalog is only created once its
    encoder is loaded, so no empty catalog is left behind to bind a later scan to another model.

    Holds the catalog's writer lock (:mod:`embeddr.lock`) throughout: another writer makes it fail
    at once with :class:`~embeddr.errors.CatalogBusy`, or wait for it with ``wait=True``.
    """
    roots = list(roots)
    missing = [str(r) for r in roots if not is_remote(os.fspath(r)) and not os.path.lexists(r)]
    if missing:
        raise EmbeddrError(f"no such file or folder: {', '.join(missing)}")
    if not roots and manifest is None:
        raise EmbeddrError("nothing to scan: give folders, files or URLs, or --manifest FILE")
    if manifest is not None:
        next(iter(manifest_rows(manifest, path_column, id_column)), None)  # a bad manifest fails before anything is created
    with writer(db.path if isinstance(db, Catalog) else db, wait=wait):
        return _scan_into(roots, db, model, device, precision, checkpoint, exclude, batch_size, workers, max_pixels,
                          progress, encoder, manifest, path_column, id_column, fetch_options, run, jpeg_decode)


def _scan_into(roots, db, model, device, precision, checkpoint, exclude, batch_size, workers, max_pixels, progress,
               encoder, manifest, path_column, id_column, fetch_options, run, jpeg_decode="auto") -> ScanReport:
    from .encoders import load_encoder, resolve_preset

    if isinstance(db, Catalog):
        catalog, owned = db, False
    elif os.path.exists(db):
        catalog, owned = Catalog(db, create=False), True
    else:
        catalog, owned = None, True  # created once the encoder is loaded
    try:
        if catalog is not None:
            catalog.interrupt_stale_runs()  # we hold the lock: a run still 'running' died with its process
        if encoder is None:
            preset = resolve_preset(model or (catalog.model if catalog is not None else None) or DEFAULT_MODEL)
            if catalog is not None and catalog.model is not None:
                catalog.bind_model(preset.name, preset.dim)  # refuse a mismatch before loading weights
            if run is not None:  # another runner (embeddr.ray_scan): the model is loaded where it encodes
                if catalog is not None:
                    return run(roots, catalog, preset)
                catalog = Catalog(db, create=True)
                try:
                    return run(roots, catalog, preset)
                except BaseException:  # a failed start (Ray unreachable...): the catalog it made goes again
                    if catalog.stats()["files"] == 0:
                        catalog.close()
                        catalog = None
                        _remove_catalog(db)
                    raise
            encoder = load_encoder(preset, device=device, precision=precision, checkpoint=checkpoint,
                                   threads=encoder_threads(workers))
        batch_jpeg_device(jpeg_decode, encoder)  # an impossible --jpeg-decode fails before a catalog is created
        if catalog is None:
            catalog = Catalog(db, create=True)
        return scan(roots, catalog, encoder, exclude=exclude, batch_size=batch_size, workers=workers,
                    max_pixels=max_pixels, progress=progress, manifest=manifest, path_column=path_column,
                    id_column=id_column, fetch_options=fetch_options, jpeg_decode=jpeg_decode)
    finally:
        if owned and catalog is not None:
            catalog.close()


def _remove_catalog(db: str | os.PathLike) -> None:
    """Remove a catalog this scan created and recorded no file in (with SQLite's side files)."""
    base = os.fspath(db)
    for suffix in ("", "-wal", "-shm", "-journal"):
        try:
            os.unlink(base + suffix)
        except FileNotFoundError:
            pass


def default_workers(gpu: bool = False) -> int:
    """Decode workers by default: every core, at most 8; feeding a GPU encoder, at most 32 (nvJPEG decodes,
    the workers read, hash and parse headers, and decode the other formats)."""
    return max(1, min(32 if gpu else 8, (os.cpu_count() or 2)))


def scan(roots: Iterable[str | os.PathLike], catalog: Catalog, encoder: Encoder, *, exclude: Iterable[str] = (),
         batch_size: int = 64, workers: int | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS,
         progress: Callable[[int, int | None], None] | None = None, max_error_samples: int = 20,
         wave: int = 20_000, manifest: str | os.PathLike | None = None, path_column: str = "path",
         id_column: str | None = None, fetch_options: FetchOptions | None = None,
         jpeg_decode: str | None = "auto") -> ScanReport:
    """Scan ``roots`` into ``catalog`` with ``encoder``; incremental and resumable.

    ``jpeg_decode``: where JPEGs are decoded (:func:`batch_jpeg_device`): by default Pillow in the decode
    workers, or, when the encoder runs on CUDA, in batches on the GPU (nvJPEG) by the main process.

    ``progress(done, total)`` is called after each batch (``total`` is None while discovery is
    still running: it is then only known to be at least ``done``). Raises ``KeyboardInterrupt`` after
    recording the run as interrupted (everything committed so far stays).
    """
    roots = [os.fspath(r) if is_remote(os.fspath(r)) else os.path.abspath(os.fspath(r)) for r in roots]
    fetch_options = fetch_options or FetchOptions()
    jpeg_device = batch_jpeg_device(jpeg_decode, encoder)  # an impossible request fails before the run is recorded
    catalog.bind_model(encoder.name, encoder.dim)
    run_id = catalog.begin_run(encoder.name, roots + ([os.path.abspath(manifest)] if manifest is not None else []))
    report = ScanReport(run_id=run_id, model=encoder.name, device=str(encoder.device), precision=str(encoder.precision),
                        jpeg_decode=jpeg_device or "pillow")
    t0 = time.perf_counter()
    gpu = str(encoder.device).startswith("cuda")
    workers = default_workers(gpu) if workers is None else workers
    status = "interrupted"
    done = total = 0
    try:
        if progress:
            progress(0, None)
        # Discovery feeds waves of at most `wave` files, so memory stays bounded on any collection.
        inputs = list_inputs(roots, manifest=manifest, path_column=path_column, id_column=id_column, exclude=exclude)
        for wave_candidates, finished in _waves(inputs, wave, report):
            t_disc = time.perf_counter()
            todo = _changed(wave_candidates, catalog, run_id, report, fetch_options)
            report.times.discover += time.perf_counter() - t_disc
            total += len(todo)
            if progress:
                progress(done, total if finished else None)
            t_wait = time.perf_counter()
            n_workers = min(workers, max(0, len(todo) // 4))
            encoding = None if jpeg_device else worker_encoding(encoder, catalog, n_workers, todo)
            batches = iter_decoded(todo, size=encoder.input_size, resize=encoder.resize, max_pixels=max_pixels,
                                   batch_size=min(batch_size, WORKER_BATCH) if encoding else batch_size,
                                   workers=n_workers, fetch_options=fetch_options, encoding=encoding,
                                   jpeg_bytes=jpeg_device is not None)
            if jpeg_device is not None:  # the next batch's JPEGs are decoded on the device while this one is encoded
                batches = _ahead(batches, lambda b: _timed_finish(b, encoder, jpeg_device, max_pixels))
            for batch in batches:
                report.times.decode_wait += time.perf_counter() - t_wait
                report.times.hash += getattr(batch, "hash_s", 0.0)
                report.times.decode += getattr(batch, "decode_s", 0.0)
                report.times.worker_encode += getattr(batch, "encode_s", 0.0)
                report.times.batch_decode += getattr(batch, "batch_decode_s", 0.0)
                _process_batch(batch, catalog, encoder, run_id, report, max_error_samples)
                done += len(batch)
                if progress:
                    progress(done, total if finished else None)
                t_wait = time.perf_counter()
        if progress:
            progress(done, total)
        t_store = time.perf_counter()
        report.missing = catalog.mark_missing([r for r in roots if not is_remote(r)], run_id, unwalked=report.unwalked)
        report.times.store += time.perf_counter() - t_store
        t_index = time.perf_counter()
        from .index import refresh

        refresh(catalog)  # reads the FAISS index only when this scan added vectors (or it is missing or stale)
        from .searchindex import update as update_search

        try:
            update_search(catalog)  # the search structure `dupes` maps, grown incrementally (never rebuilt per command)
        except OSError:  # pragma: no cover - read-only folder: dupes reads the catalog instead
            pass
        report.times.index = time.perf_counter() - t_index
        status = "done"
    except KeyboardInterrupt:
        report.interrupted = True
        raise
    finally:
        report.seconds = time.perf_counter() - t0
        try:
            catalog.finish_run(run_id, status, report.as_dict())
        except CatalogError:
            if status == "done":
                raise  # else the error on its way out says more than this one
    return report


def _waves(candidates: Iterable[Candidate], size: int, report: ScanReport):
    """Chunks of ``size`` candidates, each with a flag: True once discovery has finished."""
    chunk: list[Candidate] = []
    t = time.perf_counter()  # the walk itself runs inside this loop: count it as the discover stage
    for cand in candidates:
        report.seen += 1
        if cand.error and cand.error.startswith(("cannot read folder", "cannot list folder")):
            report.unwalked.append(cand.path)  # its files are not "gone": this scan did not look
        chunk.append(cand)
        if len(chunk) >= size:
            report.times.discover += time.perf_counter() - t
            yield chunk, False
            chunk = []
            t = time.perf_counter()
    report.times.discover += time.perf_counter() - t
    yield chunk, True


def _changed(candidates: list[Candidate], catalog: Catalog, run_id: int, report: ScanReport,
             fetch_options: FetchOptions | None = None) -> list[Candidate]:
    """Drop files the catalog already has unchanged (same size and mtime, status ok); mark them seen.

    A URL is unchanged when the catalog has it ``ok`` with a version and its current size and version
    (HEAD / object metadata, fetched ``fetch_options.concurrency`` at a time) are the same.
    """
    local = [c for c in candidates if not is_remote(c.path)]
    known = catalog.file_states_for(c.path for c in local)
    remote_unchanged = _unchanged_urls([c for c in candidates if is_remote(c.path)], catalog, fetch_options)
    todo, unchanged, links = [], [], []
    for cand in candidates:
        if cand.link_of is not None:  # the same file under another scanned path: recorded, never decoded
            links.append(FileRecord(cand.path, cand.size, cand.mtime_ns, status="link", error=f"same file as {cand.link_of}",
                                    item_id=cand.item_id))
            continue
        if cand.path in remote_unchanged:
            unchanged.append(cand)
            continue
        state = known.get(cand.path)
        if cand.error is None and state and state[0] == cand.size and state[1] == cand.mtime_ns and state[2] == "ok":
            unchanged.append(cand)
        else:
            todo.append(cand)
    catalog.touch([c.path for c in unchanged], run_id)
    if any(c.item_id is not None for c in unchanged):
        catalog.set_item_ids((c.path, c.item_id) for c in unchanged if c.item_id is not None)
    if links:
        catalog.record_batch(links, {}, run_id, report.model)
    report.unchanged += len(unchanged)
    report.links += len(links)
    return todo


def _unchanged_urls(candidates: list[Candidate], catalog: Catalog, fetch_options: FetchOptions | None) -> set[str]:
    if not candidates:
        return set()
    fetch_options = fetch_options or FetchOptions()
    states = catalog.url_states_for(c.path for c in candidates)
    check = [c.path for c in candidates if (st := states.get(c.path)) and st[2] == "ok" and st[1]]
    if not check:
        return set()
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(1, fetch_options.concurrency), thread_name_prefix="embeddr-stat") as pool:
        now = dict(zip(check, pool.map(lambda u: stat(u, fetch_options), check)))
    return {u for u, cur in now.items() if cur is not None and cur[1] == states[u][1] and cur[0] in (None, states[u][0])}


def _process_batch(batch: list[Decoded], catalog: Catalog, encoder: Encoder, run_id: int, report: ScanReport,
                   max_error_samples: int) -> None:
    ok = [d.record for d in batch if d.record.status == "ok"]
    have = catalog.hashes_with_vectors(r.hash for r in ok)
    to_encode: dict[str, np.ndarray] = {}
    vectors: dict[str, np.ndarray] = {}  # new vectors; some already computed by a worker (WorkerEncoding)
    for d in batch:
        h = d.record.hash
        if d.record.status != "ok":
            continue
        if h in have or h in to_encode or h in vectors:
            report.exact_reused += 1
        elif d.vector is not None:
            vectors[h] = d.vector
        else:
            to_encode[h] = d.pixels
    if vectors:  # encoded in a worker: counted as this encoder's work
        encoder.calls += 1
        encoder.images += len(vectors)
        report.encoded += len(vectors)
    if to_encode:
        t = time.perf_counter()
        out = encoder.encode(np.stack(list(to_encode.values())))
        report.times.encode += time.perf_counter() - t
        vectors.update(zip(to_encode.keys(), out))
        report.encoded += len(out)
    store_batch(catalog, [d.record for d in batch], vectors, run_id, encoder.name, report, max_error_samples)


def store_batch(catalog: Catalog, records: list[FileRecord], vectors: dict[str, np.ndarray], run_id: int, model: str,
                report: ScanReport, max_error_samples: int) -> None:
    """Record one batch in one transaction (files upserted by path, new vectors by hash) and count it in
    ``report``: processed files, errors with their first samples, time spent storing. The local and the
    Ray scan both end each batch here."""
    report.processed += len(records)
    for r in records:
        if r.status == "error":
            report.errors += 1
            if len(report.error_samples) < max_error_samples:
                report.error_samples.append((r.path, r.error))
    t = time.perf_counter()
    catalog.record_batch(records, vectors, run_id, model)
    report.times.store += time.perf_counter() - t
