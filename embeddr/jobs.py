"""Whole jobs, above the stages: what the CLI, the service and the Python API call.

Data flows one way: discover -> decode -> encode -> store/index -> match -> score -> group ->
canonical -> act/report. The stage modules (:mod:`embeddr.pipeline`, :mod:`embeddr.dupes`,
:mod:`embeddr.policy`, :mod:`embeddr.actions`, :mod:`embeddr.review`, :mod:`embeddr.tune`, ...)
never import this module or :mod:`embeddr.api`; a job here strings stages together (open the
catalog, find the duplicates, decide, act, count the savings). :mod:`embeddr.api` re-exports them.
"""

from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path

import numpy as np

from . import actions
from .catalog import DEFAULT_DB, Catalog, opened
from .decode import DEFAULT_MAX_PIXELS
from .dupes import DuplicateReport
from .dupes import find_duplicates as _find_duplicates
from .encoders import catalog_preset, load_encoder, resolve_preset
from .errors import EmbeddrError, PolicyError
from .lock import is_free, writer
from .pipeline import ScanReport, scan_into
from .policy import Policy, decide, links_into
from .presets import DEFAULT_MODEL, Preset, score_and_threshold
from .savings import savings

# Loaded by the jobs that use them (a command's start-up pays only for its own): embeddr.review, .tune,
# .bench, .evaluate, .metrics, .plots.

CatalogLike = str | os.PathLike | Catalog


def scan(roots: Iterable[str | os.PathLike], *, db: CatalogLike = DEFAULT_DB, model: str | Preset | None = None,
         device: str = "auto", precision: str = "auto", checkpoint: str | os.PathLike | None = None,
         exclude: Iterable[str] = (), batch_size: int = 64, workers: int | None = None,
         max_pixels: int | None = DEFAULT_MAX_PIXELS, progress: Callable[[int, int], None] | None = None,
         encoder=None, manifest: str | os.PathLike | None = None, path_column: str = "path",
         id_column: str | None = None, fetch_options=None, ray: str | None = None, wait: bool = False,
         jpeg_decode: str = "auto") -> ScanReport:
    """Scan folders, files and URLs (and a manifest's rows) into the catalog ``db`` (created if needed);
    incremental and resumable.

    ``model``: a preset name (see ``embeddr models``) or a ``.onnx``/TorchScript file; defaults to
    the catalog's model, or ``sscd-distilled`` for a new catalog. A different model than the
    catalog's is refused (:class:`~embeddr.errors.ModelMismatch`). A failed start (unknown model,
    weights that cannot be loaded) leaves no catalog behind (see :func:`embeddr.pipeline.scan_into`).

    ``manifest``: a CSV or Parquet product feed; ``path_column`` names its path/URL column and
    ``id_column`` (optional) the item id carried into every result. URLs (http(s)://, s3://, gs://)
    are fetched with ``fetch_options`` (:class:`embeddr.sources.FetchOptions`). ``ray``: run the scan
    as a Ray Data job on that cluster (``local``, ``auto``, ``ray://host:port``; :mod:`embeddr.ray_scan`).
    ``jpeg_decode``: ``auto`` (batched nvJPEG on the GPU when the encoder runs on CUDA, else Pillow),
    ``pillow``, or a torch device for the batched decoder (:func:`embeddr.pipeline.batch_jpeg_device`).
    """
    run = None
    if ray is not None:
        from .ray_cluster import check_address, require_ray

        check_address(ray)  # a mistyped address, or no Ray installed, fails before a catalog is made
        require_ray()  # Ray itself is imported when the scan has work for the cluster (ray_scan)
        from .ray_scan import ray_scan

        def run(roots, catalog, preset):
            return ray_scan(roots, catalog, preset, address=ray, exclude=exclude, batch_size=batch_size,
                            max_pixels=max_pixels, progress=progress, manifest=manifest, path_column=path_column,
                            id_column=id_column, fetch_options=fetch_options, device=device, precision=precision,
                            checkpoint=checkpoint)

    return scan_into(roots, db=db, model=model, device=device, precision=precision, checkpoint=checkpoint,
                     exclude=exclude, batch_size=batch_size, workers=workers, max_pixels=max_pixels,
                     progress=progress, encoder=encoder, manifest=manifest, path_column=path_column,
                     id_column=id_column, fetch_options=fetch_options, run=run, wait=wait, jpeg_decode=jpeg_decode)


def find_duplicates(db: CatalogLike = DEFAULT_DB, *, threshold: float | None = None, score: str | None = None,
                    model: str | None = None, approximate: bool = False, ray: str | None = None,
                    search: str | None = None, device: str = "auto", verify: bool | None = None) -> DuplicateReport:
    """Duplicate pairs and groups among the catalog's files.

    ``threshold``: defaults to the model preset's calibrated value. ``score``: ``raw`` cosine or
    ``normalized`` (see :mod:`embeddr.normalize`); defaults to the preset's. ``search``: ``auto``
    (exact below 30,000 distinct images, the approximate k-means self-join above: it reports its estimated
    recall in the report's JSON), ``exact`` or ``approximate`` (= ``approximate=True``); ``device``: where the
    approximate search runs (``auto``: a GPU when torch sees one; ``cuda`` without one is an error). ``ray``: run the exact
    pair search (and the background statistics) as Ray tasks over tiles of the index on that cluster
    (``local``, ``auto``, ``ray://host:port``; :mod:`embeddr.ray_dupes`); the report is the same. ``verify``:
    give pairs scored near the threshold a second, geometric look at their images (:mod:`embeddr.verify`;
    default: on for presets with a ``[verify]`` table, and only with the preset's own score).
    """
    engine = None
    if ray is not None:
        if approximate or search == "approximate":
            raise EmbeddrError("--ray runs the exact search; it cannot be combined with --approximate")
        from .ray_cluster import check_address
        from .ray_dupes import ray_search

        check_address(ray)

        engine = ray_search(ray)
    with opened(db) as catalog:
        preset = catalog_preset(catalog, model)
        score, threshold = score_and_threshold(preset, score, threshold)
        return _find_duplicates(catalog, preset, threshold=threshold, score=score, approximate=approximate, engine=engine,
                                search=search, device=device, verify=verify)


def missed_by(db: CatalogLike = DEFAULT_DB, baseline: str = "phash", *, threshold: float | None = None,
              score: str | None = None, model: str | None = None, baseline_threshold: float | None = None) -> DuplicateReport:
    """The near pairs :func:`find_duplicates` reports that ``baseline`` (``phash`` or ``dhash``) at its
    default threshold does not find (see :func:`missed_report`)."""
    return missed_report(find_duplicates(db, threshold=threshold, score=score, model=model), baseline,
                         threshold=baseline_threshold)


def missed_report(report: DuplicateReport, baseline: str = "phash", *, threshold: float | None = None):
    """Near pairs of a :class:`~embeddr.dupes.DuplicateReport` that ``baseline`` (a hash preset) at
    ``threshold`` (default: its preset's) does NOT find: what only the embedding catches.

    Returns a new report whose pairs carry the embedding score and, in ``extra``, the baseline's score
    of each pair. Only the files of reported pairs are hashed again (bounded by the pairs, not N x N).
    """
    from .decode import fit, load_image

    base = resolve_preset(baseline)
    t = base.threshold.value if threshold is None else float(threshold)
    encoder = load_encoder(base)
    cache: dict[str, np.ndarray | None] = {}

    def vec(path: str):
        if path not in cache:
            try:
                image, _ = load_image(path, min_side=base.input_size)
                cache[path] = encoder.encode(fit(image, base.input_size, base.resize)[None])[0]
            except Exception:  # noqa: BLE001 - unreadable now: cannot say what the hash would do
                cache[path] = None
        return cache[path]

    kept, base_scores = [], []
    for p in report.pairs:
        if p.kind != "near":
            continue
        va, vb = vec(p.a), vec(p.b)
        if va is None or vb is None:
            continue
        s = float(np.dot(va, vb))
        if s < t - 1e-6:
            kept.append(p)
            base_scores.append({"a": p.a, "b": p.b, f"{base.name}_score": round(s, 6)})
    extra = {**report.extra, "missed_by": base.name, "missed_by_threshold": t, "baseline_scores": base_scores}
    ends = {p.a for p in kept} | {p.b for p in kept}
    groups = [g for g in report.groups if any(m.path in ends for m in g.members)]
    return replace(report, pairs=kept, groups=groups, extra=extra)


def apply_duplicates(db: CatalogLike | os.PathLike, *, action: str = "report", policy=None,
                     quarantine: str | os.PathLike | None = None, journal: str | os.PathLike | None = None,
                     yes: bool = False, really_delete: bool = False, threshold: float | None = None,
                     score: str | None = None, price_per_gb_month: float = 0.023, currency: str = "USD",
                     wait: bool = False) -> actions.ApplyResult:
    """Find duplicates, decide canonicals by ``policy``, plan ``action`` and apply it (dry run unless ``yes``).

    The result's ``extra`` holds the policy, each group's decision with its reason, and the savings
    (:func:`embeddr.savings.savings`). ``journal`` defaults to :func:`embeddr.actions.default_journal_path`.
    Acting (``yes``) holds the catalog's writer lock from planning to the end, so two applies never
    plan on the same state (``wait``: wait for another writer instead of refusing).
    """
    kwargs = dict(action=action, policy=policy or Policy(), quarantine=quarantine, journal=journal, yes=yes,
                  really_delete=really_delete, threshold=threshold, score=score,
                  price_per_gb_month=price_per_gb_month, currency=currency)
    if yes and action != "report":
        with writer(db.path if isinstance(db, Catalog) else db, wait=wait):
            return _apply_duplicates(db, **kwargs)
    return _apply_duplicates(db, **kwargs)


def _apply_duplicates(db, *, action, policy, quarantine, journal, yes, really_delete, threshold, score,
                      price_per_gb_month, currency) -> actions.ApplyResult:
    if action not in actions.ACTIONS:
        raise PolicyError(f"unknown action {action!r}; valid actions: {', '.join(actions.ACTIONS)}")
    if action == "delete" and yes and not really_delete:
        raise PolicyError("--action delete also needs --really-delete (originals go to the journal's trash folder, "
                          "and are gone for good once you empty it)")
    cat, owned = actions._open_catalog(db)
    try:
        if action == "move" and quarantine is not None:  # refused before anything is looked up or done
            quarantine = actions.check_quarantine(quarantine, cat)
        report = find_duplicates(cat, threshold=threshold, score=score)
        decisions = decide(report, policy, _links(cat, report))
        steps = actions.plan(decisions, action, quarantine=quarantine)
        if yes and action != "report" and steps and journal is None:
            journal = actions.default_journal_path(cat.path)
        # before acting: the savings stream every file from the catalog (as it was planned on)
        saved = savings(report, decisions, price_per_gb_month=price_per_gb_month, currency=currency, catalog=cat)
        result = actions.apply(steps, cat, journal, yes=yes, really_delete=really_delete, action=action)
    finally:
        if owned and cat is not None:
            cat.close()
    result.extra = {
        "model": report.model, "threshold": report.threshold, "policy": policy.as_dict(),
        "groups": [d.as_dict() for d in decisions],
        "savings": saved,
    }
    return result


def _links(catalog: Catalog, report: DuplicateReport) -> dict[str, tuple[str, ...]]:
    """Group member -> the catalogued symlinks and hard links that lead to it (nothing to look up without groups)."""
    if not report.groups:
        return {}
    return links_into(catalog.link_paths(), (m.path for g in report.groups for m in g.members))


def review(db, *, threshold: float | None = None, policy=None, price_per_gb_month: float = 0.023,
           currency: str = "USD", html_dir: str | os.PathLike | None = None, thumb_size: int = 256,
           page_size: int = 50) -> _review.Review:
    """Find duplicates in ``db``, decide canonicals with ``policy``, compute savings; write HTML if asked.

    ``policy``: a :class:`~embeddr.policy.Policy` (default: the documented default rules).
    ``html_dir``: write the static report there (see :func:`embeddr.review.write_html_report`).
    """
    from . import review as _review

    policy = policy or Policy()
    if html_dir is not None:
        _review.check_html_dir(html_dir)  # a folder the report may not be written into is refused before the search
    with opened(db) as catalog:
        preset = catalog_preset(catalog)
        report = _find_duplicates(catalog, preset, threshold=threshold)
        decisions = decide(report, policy, _links(catalog, report))
        saved = savings(report, decisions, price_per_gb_month=price_per_gb_month, currency=currency,
                                catalog=catalog)
        db_path = catalog.path
    result = _review.Review(report=report, decisions=decisions, savings=saved, policy=policy.as_dict())
    if html_dir is not None:
        result.html = _review.write_html_report_details(report, decisions, saved, html_dir, thumb_size=thumb_size,
                                                page_size=page_size, db=db_path)
    return result


def _seed_vectors(db: Path, preset: Preset, reuse: CatalogLike | None, paths: Iterable[str | os.PathLike]) -> int:
    """Put into the new catalog ``db`` the vectors ``reuse`` (a catalog of the same model) already holds for
    ``paths`` (files it has unchanged: same size and mtime), so the scan that follows does not embed them
    again. Returns how many vectors were reused (0 when ``reuse`` is absent or of another model)."""
    if reuse is None or (not isinstance(reuse, Catalog) and not os.path.exists(reuse)):
        return 0
    with opened(reuse) as source:
        if source.model != preset.name:
            return 0
        wanted = {}
        for path in (os.path.abspath(os.fspath(p)) for p in paths):
            try:
                st = os.stat(path)
            except OSError:
                continue
            wanted[path] = (st.st_size, st.st_mtime_ns)
        states = source.file_states_for(wanted)
        hashes = [h for p, (size, mtime, status, h) in states.items() if status == "ok" and h and (size, mtime) == wanted[p]]
        vectors = source.vectors_for(hashes)
        dim = source.dim
    if vectors:
        with Catalog(db, create=True) as target:
            target.bind_model(preset.name, dim)
            target.record_batch([], vectors, None, preset.name)
    return len(vectors)


def tune(folder: str | os.PathLike, *, precision: float = 0.99, model: str | None = None, sample: int = 200,
         per_image: int = 4, negatives: int = 2000, seed: int = 0, pairs: str | os.PathLike | None = None,
         out: str | os.PathLike | None = None, workers: int | None = None,
         reuse: CatalogLike | None = None) -> _tune.TuneResult:
    """The threshold that gives ``precision`` on ``folder`` (see the module docstring).

    ``reuse``: a catalog of the same model (e.g. the one ``folder`` was scanned into): the vectors it
    already holds for the folder's unchanged files are used instead of embedding them again (only the
    derived copies are embedded); ``result.reused`` counts them.
    """
    from . import tune as _tune
    from .bench import list_images, make_benchmark
    from .evaluate import EvalError, score_benchmark
    from .metrics import threshold_for_precision
    from .plots import histograms, pr_curves

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise EvalError(f"{folder}: not a folder")
    if not 0.0 < precision <= 1.0:
        raise EvalError(f"--precision {precision}: must be in (0, 1]")
    model = model or DEFAULT_MODEL
    preset = resolve_preset(model)
    with tempfile.TemporaryDirectory(prefix="embeddr_tune_") as tmp:
        db = Path(tmp) / "tune.db"
        set_aside = 0
        if pairs is not None:
            labelled = _tune.read_pairs(pairs)
            reused = _seed_vectors(db, preset, reuse, [*list_images(folder), *{p for a, b, _ in labelled for p in (a, b)}])
            ps = _tune.labelled_pair_scores(folder, Path(pairs), model, workers, db)
            source, n_files = str(pairs), len(ps.rows)
        else:
            images = list_images(folder)
            if len(images) < 2:
                raise EvalError(f"{folder}: needs at least 2 readable images, found {len(images)}")
            rng = random.Random(seed)
            chosen = sorted(rng.sample(range(len(images)), min(sample, len(images))))
            rest = [p for i, p in enumerate(images) if i not in set(chosen)]
            rest = sorted(rng.sample(rest, min(negatives, len(rest)))) if rest else []
            bench = Path(out) / "bench" if out is not None else Path(tmp) / "bench"
            truth = make_benchmark(folder, bench, seed=seed, per_image=per_image, doc_pages=0,
                                   sources=[images[i] for i in chosen], distractor_files=rest)
            # originals and distractors are byte copies of the folder's files: their vectors can be reused
            reused = _seed_vectors(db, preset, reuse, [*(images[i] for i in chosen), *rest])
            ps, set_aside = _tune.set_aside_existing_duplicates(score_benchmark(truth, model, db=db, workers=workers))
            source, n_files = "derived", len(ps.rows)
    scores = ps.scores(preset.score)
    t, p, r = threshold_for_precision(ps.label, scores, precision, ps.n_positives)
    result = _tune.TuneResult(model=preset.name, score=preset.score, target=precision, threshold=t, precision=round(p, 4),
                        recall=round(r, 4), positives=ps.n_positives, negatives=int((~ps.label).sum()), source=source,
                        default_threshold=preset.threshold.value, files=n_files, set_aside=set_aside,
                        reused=reused)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        mark = {f"threshold {t:.3f}": (r, p)} if t is not None else None
        result.plots["pr_curve"] = str(pr_curves([ps], out / "pr_curve.png", scores=(preset.score,), mark=mark))
        result.plots["histogram"] = str(histograms([ps], out / "histogram.png",
                                                   thresholds={ps.detector: t if t is not None else preset.threshold.value}))
    return result



def info(db: CatalogLike = DEFAULT_DB) -> dict:
    """The catalog's state: files, errors, model, index size, last runs."""
    with opened(db) as catalog:
        stats = catalog.stats()
        from .index import index_path

        path = index_path(catalog)
        stats["index_file"] = str(path) if path.exists() else None
        stats["index_bytes"] = path.stat().st_size if path.exists() else 0
        stats["runs"] = catalog.runs(5)
        if is_free(catalog.path):  # no writer alive: a run still 'running' died (kill -9, power loss)
            for run in stats["runs"]:
                if run["status"] == "running":
                    run["status"] = "interrupted"
        stats["error_files"] = [{"path": r.path, "error": r.error} for r in catalog.errors()]
        if catalog.model:
            preset = resolve_preset(catalog.model)
            stats["threshold"] = preset.threshold.value
            stats["threshold_provenance"] = preset.threshold.provenance
        return stats
