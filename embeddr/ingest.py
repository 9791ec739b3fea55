"""Ingest gate: check new images against a catalog, and add the ones that pass.

One code path for ``embeddr check`` and the HTTP service (:mod:`embeddr.server`): a
:class:`Gate` holds the catalog, the loaded encoder and the FAISS index in memory, and
answers, for each new file or upload, which catalogued files it duplicates:

* ``exact``: catalogued ``ok`` files with the same content hash (score 1.0);
* ``near``: catalogued ``ok`` files whose vector scores at or above the threshold (FAISS
  ``range_search``: exact, no N x N matrix). The score is the preset's: raw cosine, or for
  presets with ``score = "normalized"`` the neighbourhood-corrected score of
  :mod:`embeddr.normalize` (the new item's background is its k-th nearest catalogued vector),
  the same score ``embeddr dupes`` uses.

:meth:`Gate.check` never writes. :meth:`Gate.add` adds the items that are not duplicates
(``only_new=False``: all of them): each batch is ONE catalog transaction
(:meth:`~embeddr.catalog.Catalog.record_batch`), then the in-memory index takes the new
vectors incrementally (ids only grow; nothing is rebuilt) and is saved atomically. Uploaded
bytes are first written durably to a store folder as ``<sha256><ext>``; that path is what the
catalog records. Items decided within one call see each other (two copies of one new photo:
the first is added, the second is reported as its duplicate).

Concurrency: many readers, one writer. Decoding and encoding run outside any lock; index
searches and catalog reads take a shared lock (each thread reads through its own SQLite
connection); adds and index updates take the exclusive lock. Before each search the gate
catches up with vectors other processes added to the catalog (``embeddr scan``, another
``embeddr check --add``). On a GPU, concurrent requests are encoded together by a
:class:`MicroBatcher`.
"""

from __future__ import annotations

import os
import queue
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .catalog import Catalog, FileRecord, from_db
from .normalize import Scorer, is_blank
from .decode import DEFAULT_MAX_PIXELS
from .discover import Candidate, discover
from .encoders import catalog_preset, load_encoder
from .errors import CatalogError
from .fsutil import atomic_write
from .lock import writer
from .search import EPS
from .pipeline import decode_one
from .presets import score_and_threshold

DEFAULT_MAX_MATCHES = 20  # matches reported per item (the best ones); the count of all is in n_matches
DEFAULT_MAX_DECODES = max(1, min(4, os.cpu_count() or 1))  # concurrent decodes in one gate (memory bound)
_EXT = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tif",
        "MPO": ".jpg", "HEIF": ".heic", "AVIF": ".avif", "ICO": ".ico", "PPM": ".ppm", "JPEG2000": ".jp2"}


@dataclass(frozen=True)
class Upload:
    """An uploaded file: its client-side name and its bytes."""

    name: str
    data: bytes


Item = str | os.PathLike | Candidate | Upload


@dataclass(frozen=True)
class Match:
    path: str  # the catalogued file
    score: float
    kind: str  # "exact" | "near"
    item_id: str | None = None  # the catalogued item's manifest id (scan --manifest --id-column)
    verified: bool | None = None  # True: a borderline match kept by the second look (embeddr.verify)

    def as_dict(self) -> dict:
        d = {"path": self.path, "score": round(self.score, 6), "kind": self.kind}
        if self.item_id is not None:
            d["item_id"] = self.item_id
        if self.verified is not None:
            d["verified"] = self.verified
        return d


@dataclass
class CheckResult:
    """The outcome for one input: data, never an exception."""

    path: str  # the input's path (absolute) or the upload's name
    status: str = "ok"  # "ok" | "error"
    error: str | None = None
    hash: str | None = None
    matches: list[Match] = field(default_factory=list)
    n_matches: int = 0  # all matches (``matches`` holds the best ``max_matches``)
    added: bool = False
    stored: str | None = None  # the path catalogued for this item when it was added

    @property
    def duplicate(self) -> bool:
        return self.n_matches > 0

    def as_dict(self) -> dict:
        return {"path": self.path, "status": self.status, "error": self.error, "hash": self.hash,
                "duplicate": self.duplicate, "n_matches": self.n_matches,
                "matches": [m.as_dict() for m in self.matches], "added": self.added, "stored": self.stored}


@dataclass
class _Prepared:
    result: CheckResult
    record: FileRecord | None = None
    vector: np.ndarray | None = None
    data: bytes | None = None  # upload bytes (stored on add)
    ext: str = ""
    bg: float = -1.0  # background similarity (normalised scores only)
    upload: bytes | None = None  # an upload's bytes, for the second look at borderline matches


def collect(paths: Iterable[str | os.PathLike], *, exclude: Iterable[str] = ()) -> list[Candidate]:
    """Files and folders (walked with :func:`embeddr.discover.discover`) -> candidates, sorted."""
    return list(discover(paths, exclude=exclude))


# -- concurrency helpers ------------------------------------------------------------------------
class RWLock:
    """Many readers or one writer; a waiting writer blocks new readers (no writer starvation)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    def acquire_read(self) -> None:
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1

    def release_read(self) -> None:
        with self._cond:
            self._readers -= 1
            if self._readers == 0:
                self._cond.notify_all()

    def acquire_write(self) -> None:
        with self._cond:
            self._writers_waiting += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writer = True

    def release_write(self) -> None:
        with self._cond:
            self._writer = False
            self._cond.notify_all()

    class _Ctx:
        def __init__(self, enter: Callable[[], None], leave: Callable[[], None]):
            self.enter, self.leave = enter, leave

        def __enter__(self):
            self.enter()

        def __exit__(self, *exc):
            self.leave()

    def read(self) -> "RWLock._Ctx":
        return self._Ctx(self.acquire_read, self.release_read)

    def write(self) -> "RWLock._Ctx":
        return self._Ctx(self.acquire_write, self.release_write)


class MicroBatcher:
    """Encode concurrent requests together: what arrives within ``max_wait_ms`` of the first
    request (up to ``max_batch`` images) goes through the encoder in one call.

    ``submit(batch)`` returns a :class:`~concurrent.futures.Future` of the batch's vectors;
    ``encode(batch)`` waits for it. One worker thread calls ``encode_fn``; an exception in
    ``encode_fn`` is set on every future of that batch.
    """

    def __init__(self, encode_fn: Callable[[np.ndarray], np.ndarray], *, max_batch: int = 64, max_wait_ms: float = 5.0):
        self.encode_fn = encode_fn
        self.max_batch = max(1, int(max_batch))
        self.max_wait = max(0.0, max_wait_ms) / 1000.0
        self.batches: list[int] = []  # images per encoder call (last 1000), for /stats and tests
        self._queue: queue.Queue = queue.Queue()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="embeddr-microbatcher", daemon=True)
        self._thread.start()

    def submit(self, batch: np.ndarray) -> Future:
        if self._closed:
            raise RuntimeError("micro-batcher is closed")
        fut: Future = Future()
        self._queue.put((batch, fut))
        return fut

    def encode(self, batch: np.ndarray) -> np.ndarray:
        return self.submit(batch).result()

    def close(self) -> None:
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        pending = None
        while True:
            first = pending if pending is not None else self._queue.get()
            pending = None
            if first is None:
                return
            jobs = [first]
            size = len(first[0])
            deadline = time.monotonic() + self.max_wait
            while size < self.max_batch:
                try:  # take what is already queued, then wait out the window for more
                    job = self._queue.get_nowait()
                except queue.Empty:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    try:
                        job = self._queue.get(timeout=left)
                    except queue.Empty:
                        break
                if job is None:
                    self._queue.put(None)  # close after this batch
                    break
                if size + len(job[0]) > self.max_batch:
                    pending = job  # starts the next batch
                    break
                jobs.append(job)
                size += len(job[0])
            self._flush(jobs)

    def _flush(self, jobs: list) -> None:
        try:
            out = self.encode_fn(np.concatenate([b for b, _ in jobs]))
        except BaseException as exc:  # noqa: BLE001 - handed to every waiting caller
            for _, fut in jobs:
                fut.set_exception(exc)
            return
        self.batches = (self.batches + [sum(len(b) for b, _ in jobs)])[-1000:]
        start = 0
        for batch, fut in jobs:
            fut.set_result(out[start : start + len(batch)])
            start += len(batch)


# -- the gate -----------------------------------------------------------------------------------
class Gate:
    """Check new images against a catalog and add the ones that pass; thread-safe.

    ``db``: an existing catalog with a model. ``model``: must be the catalog's (else
    :class:`~embeddr.errors.ModelMismatch`). ``threshold``: default the preset's.
    ``store``: where uploaded bytes are kept when added (default ``<db>.uploads/``).
    ``micro_batch``: encode concurrent requests together (default: on when the encoder runs on CUDA).
    ``encoder``: an already-loaded encoder of the catalog's model (tests, benchmarks).
    ``verify``: a second look at near matches scored close to the threshold (:mod:`embeddr.verify`), as
    ``dupes`` does; default: the preset's ``[verify]`` table.
    """

    def __init__(self, db: str | os.PathLike, *, model: str | None = None, threshold: float | None = None,
                 device: str = "auto", precision: str = "auto", checkpoint: str | os.PathLike | None = None,
                 store: str | os.PathLike | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                 max_matches: int = DEFAULT_MAX_MATCHES, batch_size: int = 32, micro_batch: bool | None = None,
                 max_wait_ms: float = 5.0, score: str | None = None, encoder=None,
                 max_decodes: int = DEFAULT_MAX_DECODES, wait: bool | float = False, verify: bool | None = None):
        self.catalog = Catalog(db, create=False)
        st = os.stat(self.catalog.path)
        self._identity = (st.st_dev, st.st_ino, self.catalog.catalog_id)
        self._decodes = threading.BoundedSemaphore(max(1, int(max_decodes)))
        self.wait = wait  # for the writer lock: False refuse, True wait, seconds: wait at most
        try:
            self.preset = catalog_preset(self.catalog, model)  # no model yet / mismatch: raises
            if encoder is not None and encoder.name != self.preset.name:
                self.catalog.bind_model(encoder.name, encoder.dim)  # raises ModelMismatch
            self.encoder = encoder or load_encoder(self.preset, device=device, precision=precision, checkpoint=checkpoint)
        except BaseException:
            self.catalog.close()
            raise
        self.db = self.catalog.path
        try:
            self.score, self.threshold = score_and_threshold(self.preset, score, threshold)
            self.scorer = Scorer.for_preset(self.preset, self.score)  # the same scorer as `embeddr dupes`
            # the same second look at borderline matches as `embeddr dupes` (embeddr.verify)
            vcfg = self.preset.verify
            self.verifying = ((vcfg.enabled if verify is None else bool(verify)) and self.score == self.preset.score
                              and not self.preset.is_hash)
            self.band = (vcfg.band(self.threshold, self.preset.threshold.value) if self.verifying
                         else (self.threshold, self.threshold))
            self._floor = min(self.band[0], self.threshold)  # scores searched for
            # ... and pairs below it whose raw cosine reaches far_raw (the far look), as dupes lists them
            self.scorer = self.scorer.with_far(vcfg.far_raw(self.threshold, self.preset.threshold.value)
                                               if self.verifying else None)
            self._verifier = None
            self._verify_lock = threading.Lock()
            self._uploads: dict[str, bytes] = {}
        except BaseException:
            self.catalog.close()
            raise
        self.store = Path(store) if store is not None else self.db.with_name(self.db.name + ".uploads")
        self.max_pixels, self.max_matches, self.batch_size = max_pixels, max_matches, max(1, batch_size)
        self._lock = RWLock()
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        from .index import load_index, max_id  # FAISS only once a gate is opened (fast CLI start-up)

        self.index = load_index(self.catalog)
        self._index_top = max_id(self.index)
        self._live: set[int] | None = self._live_ids() if self.score == "normalized" else None
        self._live_mask = self._mask()
        if micro_batch is None:
            micro_batch = str(self.encoder.device).startswith("cuda")
        self.batcher = MicroBatcher(self.encoder.encode, max_batch=max(64, batch_size), max_wait_ms=max_wait_ms) if micro_batch else None
        self.counters = {"checked": 0, "added": 0, "errors": 0, "duplicates": 0}

    # -- lifecycle ----------------------------------------------------------------------------
    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.close()
        with self._conns_lock:
            for conn in self._conns:
                conn.close()
            self._conns.clear()
        self.catalog.close()

    def __enter__(self) -> "Gate":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def model(self) -> str:
        return self.preset.name

    # -- public API ---------------------------------------------------------------------------
    def alive(self) -> str | None:
        """Why the catalog this gate serves is no longer there (deleted, replaced), or None when it is."""
        try:
            st = os.stat(self.db)
        except FileNotFoundError:
            return f"the catalog {self.db} was deleted while serving; restart with a catalog"
        except OSError as exc:
            return f"the catalog {self.db} cannot be read ({exc.strerror or exc})"
        if (st.st_dev, st.st_ino) != self._identity[:2]:
            return f"the catalog {self.db} was replaced by another file while serving; restart to serve it"
        return None

    def _ensure_alive(self) -> None:
        why = self.alive()
        if why:
            raise CatalogError(why)

    def check(self, items: Iterable[Item]) -> list[CheckResult]:
        """Exact and near matches of each item in the catalog; adds nothing."""
        self._ensure_alive()
        results: list[CheckResult] = []
        for chunk in _chunks(list(items), self.batch_size):
            prepared = self._prepare(chunk)
            self._sync()
            with self._lock.read():
                for p in prepared:
                    if p.vector is not None:
                        self._match(p, self._reader())
            results += [p.result for p in prepared]
        self._count(results)
        return results

    def add(self, items: Iterable[Item], *, only_new: bool = True, strict: bool = False) -> list[CheckResult]:
        """Check each item and add it to the catalog and index unless it is a duplicate
        (``only_new=False``: add every readable item). Each batch of ``batch_size`` items commits
        in one transaction. ``strict``: all items are one batch, and if any of them cannot be read,
        nothing is added (the HTTP service's all-or-nothing request)."""
        items = list(items)
        self._ensure_alive()
        results: list[CheckResult] = []
        for chunk in ([items] if strict else _chunks(items, self.batch_size)):
            prepared = self._prepare(chunk, keep_bytes=True)
            if strict and any(p.result.status == "error" for p in prepared):
                results += [p.result for p in prepared]
                break
            with self._lock.write(), writer(self.db, wait=self.wait):
                self._ensure_alive()  # never commit into a catalog that is gone: the caller hears of it
                self._sync_locked()
                accepted: list[_Prepared] = []
                for p in prepared:
                    if p.vector is None:
                        continue
                    self._match(p, self.catalog.conn, earlier=accepted)
                    if not only_new or not p.result.duplicate:
                        accepted.append(p)
                self._commit(accepted)
            results += [p.result for p in prepared]
        self._count(results)
        return results

    def stats(self) -> dict:
        self._ensure_alive()
        with self._lock.read():
            stats = self._reader_catalog_stats()
            stats.update({"index_vectors": int(self.index.ntotal), "threshold": self.threshold, "score": self.score,
                          "encoder": self.encoder.describe(), "store": str(self.store.resolve()),
                          "micro_batching": self.batcher is not None, "since_start": dict(self.counters)})
        if self.batcher is not None and self.batcher.batches:
            b = self.batcher.batches
            stats["encoder_batches"] = {"count": len(b), "mean_images": round(sum(b) / len(b), 2), "max_images": max(b)}
        return stats

    # -- internals ----------------------------------------------------------------------------
    def _count(self, results: list[CheckResult]) -> None:
        with self._conns_lock:
            self.counters["checked"] += len(results)
            self.counters["errors"] += sum(r.status == "error" for r in results)
            self.counters["duplicates"] += sum(r.duplicate for r in results)
            self.counters["added"] += sum(r.added for r in results)

    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.db, timeout=30, check_same_thread=False)
            self._local.conn = conn
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    def _reader_catalog_stats(self) -> dict:
        view = object.__new__(Catalog)  # the same catalog, read through this thread's own connection
        view.path, view.conn = self.catalog.path, self._reader()
        return view.stats()

    def _encode(self, pixels: np.ndarray) -> np.ndarray:
        return self.batcher.encode(pixels) if self.batcher is not None else self.encoder.encode(pixels)

    def _prepare(self, items: Sequence[Item], *, keep_bytes: bool = False) -> list[_Prepared]:
        """Hash + decode + encode (no lock held)."""
        prepared: list[_Prepared] = []
        pixels: list[np.ndarray] = []
        for item in items:
            p, px = self._decode(item, keep_bytes)
            prepared.append(p)
            if px is not None:
                pixels.append(px)
        if pixels:
            vecs = self._encode(np.stack(pixels))
            it = iter(vecs)
            for p in prepared:
                if p.result.status == "ok":
                    p.vector = next(it)
        return prepared

    def _decode(self, item: Item, keep_bytes: bool) -> tuple[_Prepared, np.ndarray | None]:
        """Hash + decode + fit one item with :func:`embeddr.pipeline.decode_one`, the function scan uses."""
        size, resize = self.encoder.input_size, self.encoder.resize
        if isinstance(item, Upload):
            name = item.name or "upload"
            fd, tmp = tempfile.mkstemp(prefix="embeddr-upload-")  # never the client's name or extension
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(item.data)
                with self._decodes:
                    decoded = decode_one(Candidate(tmp, len(item.data), None), size, resize, self.max_pixels)
            finally:
                os.unlink(tmp)
            rec = decoded.record
            if rec.status != "ok":
                return _Prepared(CheckResult(name, "error", rec.error, rec.hash)), None
            ext = extension_of(rec.format)  # the DETECTED format's, never the client's
            stored = str((self.store / f"{rec.hash}{ext}").resolve())  # where it is kept if added
            return (_Prepared(CheckResult(name, hash=rec.hash), replace(rec, path=stored),
                              data=item.data if keep_bytes else None, ext=ext, upload=item.data), decoded.pixels)
        cand = item if isinstance(item, Candidate) else _candidate(item)
        with self._decodes:
            decoded = decode_one(cand, size, resize, self.max_pixels)
        rec = decoded.record
        if rec.status != "ok":
            return _Prepared(CheckResult(cand.path, "error", rec.error, rec.hash)), None
        return _Prepared(CheckResult(cand.path, hash=rec.hash), rec), decoded.pixels

    def _match(self, p: _Prepared, conn: sqlite3.Connection, earlier: Sequence[_Prepared] = ()) -> None:
        """Fill ``p.result.matches``: exact (same hash) then near (index, then ``earlier`` items of this call)."""
        h = p.result.hash
        exact = [Match(from_db(r[0]), 1.0, "exact", r[1]) for r in
                 conn.execute("SELECT path, item_id FROM files WHERE hash = ? AND status = 'ok' ORDER BY path", (h,))]
        near: list[Match] = []
        uploads: dict[str, bytes] = {}  # items of this call not stored yet: their bytes, for a second look
        vector_of: dict[str, np.ndarray | int] = {}  # each near match's vector (or its vector id), ditto
        blank = _blank(p.record)  # a blank picture is only ever an exact copy (embeddr.normalize.is_blank)
        if self.index.ntotal and not blank:
            score_of = self._search(p)
            ids = list(score_of)
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                rows = conn.execute(
                    f"SELECT v.id, f.path, f.item_id, f.width, f.height, f.content_width, f.content_height "
                    f"FROM vectors v JOIN files f ON f.hash = v.hash "
                    f"WHERE f.status = 'ok' AND v.hash != ? AND v.id IN ({','.join('?' * len(chunk))})", [h, *chunk])
                for vid, path, item_id, *dims in rows:
                    if not is_blank(*dims):
                        near.append(Match(from_db(path), score_of[vid], "near", item_id))
                        vector_of[near[-1].path] = int(vid)
        for q in earlier:  # items accepted earlier in this call
            path = q.result.stored or q.record.path
            if q.result.hash == h:
                exact.append(Match(path, 1.0, "exact"))
            elif not blank and not _blank(q.record):
                raw = np.array([min(float(np.dot(q.vector, p.vector)), 1.0)], np.float32)
                s = float(self.scorer.score(raw, np.array([p.bg]), np.array([q.bg]))[0])
                if self.scorer.listed(raw, np.array([s]), self._floor)[0]:
                    near.append(Match(path, s, "near"))
                    vector_of[path] = q.vector
                    if q.upload is not None:
                        uploads[path] = q.upload
        near = self._second_look(p, near, uploads, vector_of)
        near.sort(key=lambda m: (-m.score, m.path))
        matches = exact + near
        p.result.n_matches = len(matches)
        p.result.matches = matches[: self.max_matches]

    def _second_look(self, p: _Prepared, near: list[Match], uploads: dict[str, bytes],
                     vector_of: dict[str, np.ndarray | int]) -> list[Match]:
        """The decision on near matches found at or above the search floor: the score alone, or with
        verification (the preset's ``[verify]``) a second look at those in the band, as ``dupes`` decides."""
        if not self.verifying:
            return [m for m in near if m.score >= self.threshold - EPS]
        if not near:
            return near
        from .verify import CONFIRMED, Verifier, decide_band

        key = f"\0item:{p.result.hash}"
        item_path = p.record.path if p.upload is None else None
        with self._verify_lock:
            self._uploads = dict(uploads)
            if p.upload is not None:
                self._uploads[key] = p.upload
            if self._verifier is None:
                self._verifier = Verifier(self.preset.verify, self._verify_path, image_of=self._verify_pixels,
                                          max_pixels=self.max_pixels, cache=256)
            self._verify_items = {key: item_path}
            scores = np.array([m.score for m in near], np.float32)
            rescuable, pages = self._reference_kinds(p, near, vector_of)
            in_band = (scores >= self.band[0] - EPS) & (scores < self.band[1] - EPS)
            far = scores < self.band[0] - EPS  # listed below the band only for their raw cosine (the far look)
            keep, effect = decide_band(scores, self.threshold, self.band, lambda idx, above: self._verifier.decide(
                [key] * len(idx), [near[i].path for i in idx], above, None if rescuable is None else rescuable[idx],
                None if pages is None else pages[idx], in_band[idx], far[idx]),
                also=np.ones(len(near), bool), far=far)  # Verifier.decide says which need a look (pages, scene)
            self._uploads.clear()
        return [replace(m, verified=True) if effect[i] == CONFIRMED else m for i, m in enumerate(near) if keep[i]]

    def _reference_kinds(self, p: _Prepared, near: list[Match], vector_of: dict
                         ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """``(rescuable, pages)``, as ``dupes`` decides: which near matches may be kept below the threshold by
        the second look (neither image looks like the preset's reference set; the far look too), and which are
        pairs of pages (both do: the page look, :meth:`embeddr.verify.Verifier.page_look`)."""
        from .verify import may_rescue, page_kinds

        cfg = self.preset.verify
        if may_rescue(cfg, self.scorer, [], []) is None and page_kinds(cfg, self.scorer, [], []) is None:
            return None, None
        from .index import stored

        ids, vecs = stored(self.index)
        rows = []
        for m in near:
            v = vector_of.get(m.path)
            if isinstance(v, int):
                v = vecs[int(np.searchsorted(ids, v))]
            rows.append(np.asarray(v, np.float32) if v is not None else np.zeros(len(p.vector), np.float32))
        ref = self.scorer.reference_background(np.stack([p.vector, *rows]))
        mine = np.full(len(rows), ref[0])
        return may_rescue(cfg, self.scorer, mine, ref[1:]), page_kinds(cfg, self.scorer, mine, ref[1:])

    def _verify_path(self, key: str) -> str | None:
        if key.startswith("\0item:"):
            return self._verify_items.get(key)
        return key if os.path.isfile(key) else None

    def _verify_pixels(self, key: str) -> np.ndarray | None:
        data = self._uploads.get(key)
        if data is None:
            return None
        from .decode import DecodeError, load_image

        try:
            image, _ = load_image(key, data=data, max_pixels=self.max_pixels)
        except DecodeError:
            return None
        return np.asarray(image)

    def _commit(self, accepted: list[_Prepared]) -> None:
        """Write uploads to the store, record the batch in one transaction, grow the index (write lock held)."""
        if not accepted:
            return
        records = []
        for p in accepted:
            record = p.record
            if p.data is not None:
                path = _store_bytes(Path(record.path), p.data)
                st = os.stat(path)
                record = replace(record, path=str(path), size=st.st_size, mtime_ns=st.st_mtime_ns)
                p.result.stored = str(path)
            else:
                p.result.stored = record.path
            records.append(record)
        have = self.catalog.hashes_with_vectors(r.hash for r in records)
        vectors = {p.result.hash: p.vector for p in accepted if p.result.hash not in have}
        run_id = self.catalog.begin_run(self.model, [r.path for r in records], kind="add")
        self.catalog.record_batch(records, vectors, run_id, self.model)
        self.catalog.finish_run(run_id, "done", {"seen": len(records), "processed": len(records), "errors": 0,
                                                 "encoded": len(vectors)})
        for p in accepted:
            p.result.added = True
        self._sync_locked(save=True)

    def _sync(self) -> None:
        """Catch up with vectors added to the catalog by other processes (cheap when none)."""
        top = self._reader().execute("SELECT COALESCE(MAX(id), 0) FROM vectors").fetchone()[0]
        if top > self._index_top:
            with self._lock.write():
                self._sync_locked(save=True)

    def _sync_locked(self, save: bool = False) -> None:
        changed = False
        for ids, vecs in self.catalog.vectors_after(self._index_top):
            self.index.add_with_ids(np.ascontiguousarray(vecs), ids)
            self._index_top = int(ids[-1])
            changed = True
        if self._live is not None:
            self._live = self._live_ids()
        self._live_mask = self._mask()
        if changed:
            from .searchindex import update

            try:
                update(self.catalog)  # the search structure dupes uses grows with the catalog (check --add, serve)
            except OSError:  # pragma: no cover - read-only folder: dupes reads the catalog instead
                pass
        if changed and save:
            from .index import index_path, write_atomic

            write_atomic(self.index, index_path(self.catalog), self.catalog)


    def _mask(self) -> np.ndarray | None:
        """Which of the index's stored vectors are live (``None``: all count, raw scores)."""
        if self._live is None:
            return None
        from .index import stored

        ids, _ = stored(self.index)
        return np.isin(ids, np.fromiter(self._live, np.int64, len(self._live)))

    def _live_ids(self) -> set[int]:
        """Vector ids some ``ok`` file uses (the backgrounds of normalised scores ignore the others)."""
        return set(self.catalog.live_vector_ids().values())

    def _search(self, p: _Prepared) -> dict[int, float]:
        """Scores (vector id -> score >= threshold) of ``p`` against the catalog: the same search and scorer as
        ``dupes`` (:func:`embeddr.search.query`, exact, over the index's vectors; live vectors only for
        normalised scores) and the item's own background in ``p.bg``."""
        from . import search
        from .index import stored

        ids, vecs = stored(self.index)
        scorer = self.scorer
        k = scorer.neighbours if scorer.normalized else 0
        live = self._live_mask
        own = self._own_id(p.result.hash)
        own_row = int(np.searchsorted(ids, own)) if own >= 0 else -1
        [(rows, raw, nn_s, nn_r)] = search.query(vecs, p.vector, scorer.min_raw(self._floor), k, live=live,
                                                 exclude=np.array([own_row]))
        if not scorer.normalized:
            return {int(i): float(x) for i, x in zip(ids[rows].tolist(), raw.tolist())}
        p.bg = float(scorer.backgrounds(np.array([-1]), p.vector[None, :], nn_s[None],
                                        np.where(nn_r >= 0, ids[np.maximum(nn_r, 0)], -1)[None])[0])
        if len(rows) == 0:
            return {}
        # the partners' own backgrounds (min_raw 2.0: no pairs wanted, only their neighbours)
        found = search.query(vecs, np.asarray(vecs[rows], np.float32), 2.0, k, live=live, exclude=rows)
        nn_s = np.stack([f[2] for f in found])
        nn_ids = np.where(np.stack([f[3] for f in found]) >= 0, ids[np.maximum(np.stack([f[3] for f in found]), 0)], -1)
        bgs = scorer.backgrounds(ids[rows], np.asarray(vecs[rows], np.float32), nn_s, nn_ids)
        scores = scorer.score(raw, np.float32(p.bg), bgs)
        keep = scorer.listed(raw, scores, self._floor)
        return {int(i): float(x) for i, x in zip(ids[rows][keep].tolist(), scores[keep].tolist())}

    def _own_id(self, content_hash: str | None) -> int:
        row = self._reader().execute("SELECT id FROM vectors WHERE hash = ?", (content_hash,)).fetchone()
        return int(row[0]) if row else -1


_PIL_EXT: dict[str, str] = {}


def extension_of(fmt: str | None) -> str:
    """The file extension uploads of Pillow format ``fmt`` are stored under (``.bin`` when unknown)."""
    if fmt in _EXT:
        return _EXT[fmt]
    if not _PIL_EXT:
        from PIL import Image

        for ext, f in sorted(Image.registered_extensions().items()):
            if f not in _PIL_EXT or ext == "." + f.lower():  # .tga for TGA, not .icb
                _PIL_EXT[f] = ext
    ext = _PIL_EXT.get(fmt or "", ".bin")
    return ext if ext.isascii() and ext[1:].isalnum() else ".bin"


def _blank(record) -> bool:
    return record is not None and is_blank(record.width, record.height, record.content_width, record.content_height)


def _chunks(items: list, n: int) -> Iterable[list]:
    for start in range(0, len(items), n):
        yield items[start : start + n]


def _candidate(path: str | os.PathLike) -> Candidate:
    path = os.path.abspath(os.fspath(path))
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return Candidate(path, error="file not found")
    except OSError as exc:
        return Candidate(path, error=f"cannot stat: {exc.strerror or exc}")
    if not os.path.isfile(path):
        return Candidate(path, error="not a regular file")
    return Candidate(path, st.st_size, st.st_mtime_ns)


def _store_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` (``<store>/<sha256><ext>``) durably (temporary file, fsync, rename)."""
    store = path.parent
    store.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.stat().st_size == len(data):
        return path
    return atomic_write(path, data)

