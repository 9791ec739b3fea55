"""embeddr's Python API: what the CLI is a thin layer over.

>>> import embeddr
>>> report = embeddr.scan(["photos/"], db="photos.db", model="sscd-distilled")   # doctest: +SKIP
>>> dupes = embeddr.find_duplicates(db="photos.db")                              # doctest: +SKIP
>>> for group in dupes.groups:                                                    # doctest: +SKIP
...     print([m.path for m in group.members])

Each function opens the catalog it is given (a path or an open :class:`Catalog`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from contextlib import contextmanager

from .catalog import DEFAULT_DB, Catalog
from .decode import DEFAULT_MAX_PIXELS
from .dupes import DuplicateReport
from .dupes import find_duplicates as _find_duplicates
from .encoders import load_encoder, resolve_preset
from .errors import CatalogError, EmbeddrError
from .pipeline import ScanReport
from .pipeline import scan as _scan
from .presets import Preset

DEFAULT_MODEL = "sscd-distilled"

CatalogLike = str | os.PathLike | Catalog


@contextmanager
def _opened(db: CatalogLike, *, create: bool = False):
    if isinstance(db, Catalog):
        yield db
        return
    catalog = Catalog(db, create=create)
    try:
        yield catalog
    finally:
        catalog.close()


def open_catalog(db: str | os.PathLike = DEFAULT_DB, *, create: bool = False) -> Catalog:
    """Open a catalog (``create=False``: it must exist)."""
    return Catalog(db, create=create)


def catalog_preset(catalog: Catalog, model: str | None = None) -> Preset:
    """The preset of the catalog's model; ``model`` (if given) must match it."""
    name = catalog.model
    if name is None:
        raise CatalogError(f"{catalog.path} has no scanned images yet: run `embeddr scan DIR --db {catalog.path}`")
    if model is not None:
        wanted = resolve_preset(model)
        if wanted.name != name:
            catalog.bind_model(wanted.name, wanted.dim)  # raises ModelMismatch
    return resolve_preset(name)


def encoder_threads(workers: int | None) -> int:
    """CPU threads for the encoder: every core.

    The decode workers are mostly idle waiting for the encoder (decoding a batch is several times
    cheaper than encoding it), so leaving cores to them wastes them. Measured on the 2-core dev box
    (scripts/bench_scan.py on ../shared/data/realimages, 2 decode workers): 1 encoder thread 161 img/s,
    2 threads 205 img/s. On a GPU it only sets onnxruntime's intra-op threads.
    """
    return max(1, os.cpu_count() or 1)


def scan(roots: Iterable[str | os.PathLike], *, db: CatalogLike = DEFAULT_DB, model: str | Preset | None = None,
         device: str = "auto", precision: str = "auto", checkpoint: str | os.PathLike | None = None,
         exclude: Iterable[str] = (), batch_size: int = 64, workers: int | None = None,
         max_pixels: int | None = DEFAULT_MAX_PIXELS, progress: Callable[[int, int], None] | None = None,
         encoder=None) -> ScanReport:
    """Scan folders/files into the catalog ``db`` (created if needed); incremental and resumable.

    ``model``: a preset name (see ``embeddr models``) or a ``.onnx``/TorchScript file; defaults to
    the catalog's model, or ``sscd-distilled`` for a new catalog. A different model than the
    catalog's is refused (:class:`~embeddr.errors.ModelMismatch`).
    """
    roots = list(roots)
    missing = [str(r) for r in roots if not os.path.lexists(r)]
    if missing:
        raise EmbeddrError(f"no such file or folder: {', '.join(missing)}")
    with _opened(db, create=True) as catalog:
        if encoder is None:
            name = model or catalog.model or DEFAULT_MODEL
            preset = resolve_preset(name)
            if catalog.model is not None:
                catalog.bind_model(preset.name, preset.dim)  # refuse a mismatch before loading weights
            encoder = load_encoder(preset, device=device, precision=precision, checkpoint=checkpoint,
                                   threads=encoder_threads(workers))
        return _scan(roots, catalog, encoder, exclude=exclude, batch_size=batch_size, workers=workers,
                     max_pixels=max_pixels, progress=progress)


def find_duplicates(db: CatalogLike = DEFAULT_DB, *, threshold: float | None = None, score: str | None = None,
                    model: str | None = None, approximate: bool = False) -> DuplicateReport:
    """Duplicate pairs and groups among the catalog's files.

    ``threshold``: defaults to the model preset's calibrated value. ``score``: ``raw`` cosine or
    ``normalized`` (see :mod:`embeddr.normalize`); defaults to the preset's. ``approximate``: an
    IVF search, much faster on millions of images, that may miss a few pairs.
    """
    with _opened(db) as catalog:
        preset = catalog_preset(catalog, model)
        return _find_duplicates(catalog, preset, threshold=threshold, score=score, approximate=approximate)


def missed_by(db: CatalogLike = DEFAULT_DB, baseline: str = "phash", *, threshold: float | None = None,
              score: str | None = None, model: str | None = None, baseline_threshold: float | None = None) -> DuplicateReport:
    """The near pairs :func:`find_duplicates` reports that ``baseline`` (``phash`` or ``dhash``) at its
    default threshold does not find (see :func:`embeddr.tune.missed_by`)."""
    from .tune import missed_by as _missed_by

    return _missed_by(find_duplicates(db, threshold=threshold, score=score, model=model), baseline,
                      threshold=baseline_threshold)


def info(db: CatalogLike = DEFAULT_DB) -> dict:
    """The catalog's state: files, errors, model, index size, last runs."""
    from .index import index_path

    with _opened(db) as catalog:
        stats = catalog.stats()
        path = index_path(catalog)
        stats["index_file"] = str(path) if path.exists() else None
        stats["index_bytes"] = path.stat().st_size if path.exists() else 0
        stats["runs"] = catalog.runs(5)
        stats["error_files"] = [{"path": r.path, "error": r.error} for r in catalog.errors()]
        if catalog.model:
            preset = resolve_preset(catalog.model)
            stats["threshold"] = preset.threshold.value
            stats["threshold_provenance"] = preset.threshold.provenance
        return stats
