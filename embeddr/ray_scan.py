"""The scan as a Ray Data job: list -> read + hash + decode (CPU tasks) -> encode (actors) -> shards -> catalog.

    inputs (embeddr.sources, on the driver; unchanged files skipped as in the local scan)
      -> Ray Data blocks of rows (path/URL, size, mtime, id)
      -> map_batches(decode_batch)    CPU tasks: read bytes (files or URLs), SHA-256, decode, resize
      -> map_batches(EncodeActor)     actors that keep the model loaded: one per GPU (fp16) when the
                                      cluster has GPUs, CPU actors otherwise
      -> the driver, the single writer: each result batch is written as a vector shard file
         (<db>.ray-shards/, atomic rename), merged into the catalog in ONE transaction, then removed.

Fault tolerance: Ray retries a task whose worker died and restarts a dead actor, and a batch is
emitted once, so nothing is lost; the merge is keyed by path (files) and content hash (vectors),
so nothing is counted twice even if a batch came twice. A job that stops (Ctrl-C, driver killed)
keeps every merged shard; the next run first merges shard files written but not yet merged, then
skips the files the catalog has unchanged, so completed work is never redone.

Results equal the local scan's (:func:`embeddr.pipeline.scan`): the same records from the same
:func:`~embeddr.pipeline.decode_one`, the same encoder on the same pixels.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from .catalog import Catalog, FileRecord
from .decode import DEFAULT_MAX_PIXELS
from .discover import Candidate
from .errors import EmbeddrError
from .pipeline import ScanReport, _changed, _waves, decode_one, store_batch
from .presets import Preset
from .sources import FetchOptions, is_remote, list_inputs

SHARD_VERSION = 1
SHARD_ROWS = 512  # result rows per vector shard (one catalog transaction each)
KILL_ONCE_ENV = "EMBEDDR_RAY_KILL_ONCE"  # tests: "MARKER:ROW" SIGKILLs the worker decoding ROW, once

_STR = ("path", "item_id", "hash", "format", "status", "error", "etag")
_INT = ("size", "mtime_ns", "width", "height", "content_width", "content_height")


def shard_dir(catalog: Catalog) -> Path:
    return catalog.path.with_name(catalog.path.name + ".ray-shards")


# -- worker side -------------------------------------------------------------------------------------------
def decode_batch(batch: dict, *, size: int, resize: str, max_pixels: int | None, fetch_options: FetchOptions,
                 kill_once: str | None = None) -> dict:
    """Ray task: rows of inputs -> rows of records + pixels (zeros where the file failed)."""
    rows = batch["row"]
    if kill_once:
        marker, row = kill_once.rsplit(":", 1)
        if int(row) in set(int(r) for r in rows):
            try:
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                os.kill(os.getpid(), signal.SIGKILL)  # the worker dies mid-job; Ray must retry this task
            except FileExistsError:
                pass
    out: dict[str, list] = {k: [] for k in (*_STR, *_INT)}
    pixels = np.zeros((len(rows), size, size, 3), np.uint8)
    cands = [Candidate(str(batch["path"][i]), int(batch["size"][i]), int(batch["mtime_ns"][i]),
                       error=str(batch["error"][i]) or None, item_id=str(batch["item_id"][i]) or None)
             for i in range(len(rows))]
    if any(is_remote(c.path) for c in cands):  # URLs: fetched fetch_options.concurrency at a time
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=max(1, fetch_options.concurrency)) as pool:
            decoded = list(pool.map(lambda c: decode_one(c, size, resize, max_pixels, fetch_options), cands))
    else:
        decoded = [decode_one(c, size, resize, max_pixels, fetch_options) for c in cands]
    for i, d in enumerate(decoded):
        for k in _STR:
            out[k].append(getattr(d.record, k) or "")
        for k in _INT:
            v = getattr(d.record, k)
            out[k].append(-1 if v is None else int(v))
        if d.pixels is not None:
            pixels[i] = d.pixels
    res = {k: np.array(v, dtype=object) for k, v in out.items() if k in _STR}
    res.update({k: np.array(v, dtype=np.int64) for k, v in out.items() if k in _INT})
    res["row"] = np.asarray(rows, np.int64)
    res["pixels"] = pixels
    return res


class EncodeActor:
    """Ray actor: keeps the model loaded and turns pixels into vectors (unique contents only)."""

    def __init__(self, model: str, device: str, precision: str, checkpoint: str | None, threads: int):
        from .encoders import load_encoder

        self.encoder = load_encoder(model, device=device, precision=precision, checkpoint=checkpoint, threads=threads)

    def __call__(self, batch: dict) -> dict:
        n = len(batch["path"])
        vectors = np.zeros((n, self.encoder.dim), np.float32)
        first: dict[str, int] = {}
        for i in range(n):
            if batch["status"][i] == "ok" and batch["hash"][i] not in first:
                first[batch["hash"][i]] = i
        if first:
            rows = list(first.values())
            out = self.encoder.encode(np.ascontiguousarray(batch["pixels"][rows]))
            for i, v in zip(rows, out):
                vectors[i] = v
        result = {k: v for k, v in batch.items() if k != "pixels"}
        result["vector"] = vectors
        result["encoded"] = np.array([i in set(first.values()) for i in range(n)])
        return result


# -- driver side -------------------------------------------------------------------------------------------
def _records(batch: dict) -> tuple[list[FileRecord], dict[str, np.ndarray]]:
    records, vectors = [], {}
    for i in range(len(batch["path"])):
        kw = {k: (str(batch[k][i]) or None) for k in _STR}
        kw.update({k: (None if int(batch[k][i]) < 0 else int(batch[k][i])) for k in _INT})
        kw["path"] = str(batch["path"][i])
        kw["status"] = str(batch["status"][i])
        rec = FileRecord(**kw)
        records.append(rec)
        if rec.status == "ok" and bool(batch["encoded"][i]) and rec.hash not in vectors:
            vectors[rec.hash] = np.asarray(batch["vector"][i], np.float32)
    return records, vectors


def write_shard(folder: Path, model: str, batch: dict) -> Path:
    """A result batch as ``<uuid>.npz`` (written to a temporary name, fsynced, renamed)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{uuid.uuid4().hex}.npz"
    tmp = folder / f".{path.name}.tmp"
    with open(tmp, "wb") as fh:
        np.savez(fh, version=SHARD_VERSION, model=model, **{k: batch[k] for k in (*_STR, *_INT, "vector", "encoded")})
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def _merge(catalog: Catalog, batch: dict, run_id: int, model: str, report: ScanReport, max_error_samples: int) -> None:
    records, vectors = _records(batch)
    have = catalog.hashes_with_vectors(vectors)
    new = {h: v for h, v in vectors.items() if h not in have}
    ok = [r for r in records if r.status == "ok"]
    report.encoded += len(new)
    report.exact_reused += len(ok) - len(new)
    store_batch(catalog, records, new, run_id, model, report, max_error_samples)


def merge_pending_shards(catalog: Catalog, run_id: int, model: str, report: ScanReport, max_error_samples: int = 20) -> set[str]:
    """Merge shard files a stopped job wrote but did not merge; returns the paths merged (the scan then
    finds them unchanged, or sends them again if they changed since)."""
    folder = shard_dir(catalog)
    merged: set[str] = set()
    for path in sorted(folder.glob("*.npz")) if folder.is_dir() else ():
        try:
            with np.load(path, allow_pickle=True) as z:
                batch = {k: z[k] for k in z.files}
        except Exception:  # a torn or foreign file: the work is simply redone
            path.unlink(missing_ok=True)
            continue
        if str(batch.get("model")) == model and int(batch.get("version", 0)) == SHARD_VERSION:
            _merge(catalog, batch, run_id, model, report, max_error_samples)
            merged.update(str(p) for p in batch["path"])
        path.unlink(missing_ok=True)
    return merged


def _plan(ray, device: str, precision: str, actors: int | None) -> dict:
    from .ray_cluster import cluster_resources

    cpus, gpus = cluster_resources(ray)
    if device.startswith("cuda") and gpus < 1:
        raise EmbeddrError(f"--device {device}: the Ray cluster has no GPU (resources: {cpus:g} CPUs); use --device auto or cpu")
    if gpus >= 1 and (device == "auto" or device.startswith("cuda")):
        n = actors or max(1, int(gpus))
        return {"actors": n, "num_gpus": 1, "actor_cpus": 1, "decode_cpus": 1, "device": "cuda",
                "precision": "fp16" if precision == "auto" else precision, "threads": 1}
    if cpus <= 2:  # a small cluster: one encoder beside the decode tasks (unequal shares: Ray keeps the stages apart)
        return {"actors": actors or 1, "num_gpus": 0, "actor_cpus": max(0.5, cpus / 2), "decode_cpus": max(0.25, cpus / 4),
                "device": "cpu", "precision": "fp32", "threads": 1}
    n = actors or max(1, int(cpus * 3 // 8))  # 2-CPU actors on 3/4 of the CPUs: encoding costs ~1.7x decoding (docs/benchmarks.md)
    return {"actors": n, "num_gpus": 0, "actor_cpus": 2, "decode_cpus": 1, "device": "cpu", "precision": "fp32", "threads": 2}


def ray_scan(roots: Iterable[str | os.PathLike], catalog: Catalog, preset: Preset, *, address: str = "local",
             exclude: Iterable[str] = (), batch_size: int = 64, max_pixels: int | None = DEFAULT_MAX_PIXELS,
             progress: Callable[[int, int | None], None] | None = None, manifest: str | os.PathLike | None = None,
             path_column: str = "path", id_column: str | None = None, fetch_options: FetchOptions | None = None,
             device: str = "auto", precision: str = "auto", checkpoint: str | os.PathLike | None = None,
             actors: int | None = None, block_rows: int = 32, wave: int = 200_000,
             max_error_samples: int = 20) -> ScanReport:
    """:func:`embeddr.pipeline.scan` on a Ray cluster; same catalog, same report fields."""
    from .ray_cluster import connected

    roots = [os.fspath(r) if is_remote(os.fspath(r)) else os.path.abspath(os.fspath(r)) for r in roots]
    fetch_options = fetch_options or FetchOptions()
    catalog.bind_model(preset.name, preset.dim)
    run_id = catalog.begin_run(preset.name, roots + ([os.path.abspath(manifest)] if manifest is not None else []))
    report = ScanReport(run_id=run_id, model=preset.name)
    t0 = time.perf_counter()
    status = "interrupted"
    done = total = 0
    try:
        from_shards = merge_pending_shards(catalog, run_id, preset.name, report, max_error_samples)
        sent: set[str] = set()
        with ExitStack() as stack:
            ray = plan = None  # connected when there is work for the cluster
            inputs = list_inputs(roots, manifest=manifest, path_column=path_column, id_column=id_column, exclude=exclude)
            for wave_candidates, finished in _waves(inputs, wave, report):
                todo = _changed(wave_candidates, catalog, run_id, report, fetch_options)
                sent.update(c.path for c in todo)
                total += len(todo)
                if todo and ray is None:  # connected before the progress bar shows: a failed connection prints no bar
                    ray = stack.enter_context(connected(address))
                    plan = _plan(ray, device, precision, actors)
                if progress:
                    progress(done, total if finished else None)
                if not todo:
                    continue
                for batch in _run_wave(ray, todo, preset, plan, batch_size, block_rows, max_pixels, fetch_options,
                                       checkpoint):
                    t = time.perf_counter()
                    shard = write_shard(shard_dir(catalog), preset.name, batch)
                    report.times.store += time.perf_counter() - t
                    _merge(catalog, batch, run_id, preset.name, report, max_error_samples)
                    shard.unlink(missing_ok=True)
                    done += len(batch["path"])
                    if progress:
                        progress(done, total if finished else None)
        try:
            shard_dir(catalog).rmdir()  # empty once every shard is merged
        except OSError:
            pass
        report.unchanged -= len(from_shards - sent)  # merged from shards this run: counted as processed
        report.missing = catalog.mark_missing([r for r in roots if not is_remote(r)], run_id)
        t_index = time.perf_counter()
        from .index import load_index

        load_index(catalog)
        report.times.index = time.perf_counter() - t_index
        status = "done"
    except KeyboardInterrupt:
        report.interrupted = True
        raise
    finally:
        report.seconds = time.perf_counter() - t0
        catalog.finish_run(run_id, status, {**report.as_dict(), "ray": address})
    return report


def _run_wave(ray, todo: list[Candidate], preset: Preset, plan: dict, batch_size: int, block_rows: int,
              max_pixels: int | None, fetch_options: FetchOptions, checkpoint):
    rows = [{"row": i, "path": c.path, "size": int(c.size or 0), "mtime_ns": int(c.mtime_ns or 0),
             "error": c.error or "", "item_id": c.item_id or ""} for i, c in enumerate(todo)]
    ds = ray.data.from_items(rows, override_num_blocks=max(1, -(-len(rows) // block_rows)))
    # a task whose worker dies is retried by Ray (max_retries: 3 by default for system failures)
    ds = ds.map_batches(decode_batch, batch_size=block_rows, batch_format="numpy", num_cpus=plan["decode_cpus"],
                        fn_kwargs={"size": preset.input_size, "resize": preset.resize, "max_pixels": max_pixels,
                                   "fetch_options": fetch_options, "kill_once": os.environ.get(KILL_ONCE_ENV)})
    # Ray Data restarts a dead actor (max_restarts=-1) and retries its batch
    ds = ds.map_batches(EncodeActor, batch_size=batch_size, batch_format="numpy",
                        compute=ray.data.ActorPoolStrategy(size=plan["actors"]),
                        num_cpus=plan["actor_cpus"], num_gpus=plan["num_gpus"],
                        fn_constructor_kwargs={"model": preset.name, "device": plan["device"],
                                               "precision": plan["precision"], "threads": plan["threads"],
                                               "checkpoint": os.fspath(checkpoint) if checkpoint else None})
    yield from ds.iter_batches(batch_size=SHARD_ROWS, batch_format="numpy", prefetch_batches=2)
