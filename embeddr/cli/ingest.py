"""Ingest gate commands: ``check`` (exit codes for shell pipelines) and ``serve`` (HTTP)."""

from __future__ import annotations

import csv
import io
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..decode import DEFAULT_MAX_PIXELS
from ..ingest import DEFAULT_MAX_DECODES, CheckResult, Gate, collect
from .common import (DEFAULT_DB_PATH, DbOpt, DeviceOpt, ModelOpt, OutputOpt, PrecisionOpt, TextFormatOpt,
                     ThresholdOpt, WaitOpt, check_format, emit, handle_errors, say, to_json, value_of)

EXIT_UNIQUE, EXIT_DUPLICATE, EXIT_ERROR = 0, 1, 2
LogLevel = Enum("LogLevel", {n: n for n in ("critical", "error", "warning", "info", "debug")}, type=str)
MaxPixelsOpt = Annotated[int, typer.Option("--max-pixels", min=0, help="Pixel budget per decode: larger images are refused before decoding (0 = no limit).")]


def exit_code(results: list[CheckResult]) -> int:
    """2 if any input could not be read, else 1 if any is a duplicate, else 0."""
    if any(r.status == "error" for r in results):
        return EXIT_ERROR
    return EXIT_DUPLICATE if any(r.duplicate for r in results) else EXIT_UNIQUE


def render_check(gate: Gate, results: list[CheckResult], fmt: str) -> str:
    if fmt == "json":
        return to_json({"model": gate.model, "threshold": gate.threshold, "score": gate.score,
                        "results": [r.as_dict() for r in results]})
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        ids = any(m.item_id is not None for r in results for m in r.matches)  # a catalog scanned from a manifest
        writer.writerow(["path", "status", "error", "duplicate", "added", "match", "score", "kind"] + (["match_id"] if ids else []))
        for r in results:
            base = [r.path, r.status, r.error or "", int(r.duplicate), int(r.added)]
            if not r.matches:
                writer.writerow(base + ["", "", ""] + ([""] if ids else []))
            for m in r.matches:
                writer.writerow(base + [m.path, f"{m.score:.6f}", m.kind] + ([m.item_id or ""] if ids else []))
        return buf.getvalue()
    n_dup = sum(r.duplicate for r in results)
    n_err = sum(r.status == "error" for r in results)
    n_add = sum(r.added for r in results)
    lines = [f"model {gate.model} · threshold {gate.threshold:g} · {len(results)} checked · {n_dup} duplicate · "
             f"{n_err} error" + (f" · {n_add} added" if n_add else "")]
    for r in results:
        added = "  (added)" if r.added else ""
        if r.status == "error":
            lines.append(f"ERROR      {r.path}: {r.error}")
        elif r.duplicate:
            lines.append(f"DUPLICATE  {r.path}{added}")
            lines += [f"  {m.kind:<6} {m.score:.4f}  {m.path}" + (f"  [{m.item_id}]" if m.item_id is not None else "")
                      for m in r.matches]
            if r.n_matches > len(r.matches):
                lines.append(f"  ... and {r.n_matches - len(r.matches)} more")
        else:
            lines.append(f"unique     {r.path}{added}")
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    @app.command()
    @handle_errors(writes=lambda kw: kw.get("add") or kw.get("add_all"))
    def check(
        paths: Annotated[list[Path], typer.Argument(help="New files, and folders (walked recursively), to check.")],
        db: DbOpt = DEFAULT_DB_PATH,
        threshold: ThresholdOpt = None,
        fmt: TextFormatOpt = "table",
        output: OutputOpt = None,
        add: Annotated[bool, typer.Option("--add", help="Add the files that are not duplicates to the catalog and index.")] = False,
        add_all: Annotated[bool, typer.Option("--add-all", help="Add every readable file, duplicates included.")] = False,
        model: ModelOpt = None,
        device: DeviceOpt = "auto",
        precision: PrecisionOpt = "auto",
        exclude: Annotated[Optional[list[str]], typer.Option("--exclude", "-x", help="Glob to skip (relative path or name); repeatable.")] = None,
        max_pixels: MaxPixelsOpt = DEFAULT_MAX_PIXELS,
        wait: WaitOpt = False,
        verify: Annotated[Optional[bool], typer.Option("--verify/--no-verify", help="A second, geometric look at matches scored near the threshold, as `embeddr dupes` does (default: on for presets with a [verify] table).")] = None,
    ):
        """Check new files against the catalog: exact (same bytes) and near duplicates, without adding them.

        Exit code: 0 = no duplicate, 1 = duplicates found, 2 = error (a file that cannot be read,
        no catalog, a --model other than the catalog's). --add adds the files that are not
        duplicates (--add-all: all readable files) in one transaction per batch; the index grows
        incrementally. JSON: {model, threshold, score, results: [{path, status, error, duplicate,
        matches: [{path, score, kind, item_id*}], added, stored}]}; CSV: one row per match
        (*: and a match_id column, when the catalog was scanned from a manifest with --id-column).

        Example: embeddr check incoming/ --db photos.db --add && echo "all new" || echo "duplicates or errors"
        """
        fmt = check_format(fmt)
        if add and add_all:
            raise typer.BadParameter("use --add or --add-all, not both")
        with Gate(db, model=model, threshold=threshold, device=device, precision=value_of(precision),
                  max_pixels=max_pixels or None, wait=wait, verify=verify) as gate:
            items = collect(paths, exclude=exclude or ())
            results = gate.add(items, only_new=not add_all) if (add or add_all) else gate.check(items)
            emit(render_check(gate, results, fmt), output)
        raise typer.Exit(exit_code(results))

    @app.command()
    @handle_errors
    def serve(
        db: DbOpt = DEFAULT_DB_PATH,
        host: Annotated[str, typer.Option("--host", help="Address to bind. The service has no authentication: keep it on loopback or behind a proxy.")] = "127.0.0.1",
        port: Annotated[int, typer.Option("--port", "-p", min=0, max=65535, help="Port (0: a free one, printed at start).")] = 8000,
        max_upload_mb: Annotated[float, typer.Option("--max-upload-mb", min=0.001, help="Largest request body accepted, in MiB (2^20 bytes, despite the option's name); larger ones get 413.")] = 50.0,
        store: Annotated[Optional[Path], typer.Option("--store", help="Folder where added uploads are kept as <sha256><ext>. Default: DB.uploads/ beside the catalog.")] = None,
        threshold: ThresholdOpt = None,
        model: ModelOpt = None,
        device: DeviceOpt = "auto",
        precision: PrecisionOpt = "auto",
        micro_batch: Annotated[Optional[bool], typer.Option("--micro-batch/--no-micro-batch", help="Encode concurrent requests together. Default: on when the model runs on a CUDA GPU.")] = None,
        log_level: Annotated[LogLevel, typer.Option("--log-level", help="uvicorn log level: critical, error, warning, info, debug.")] = "info",
        max_pixels: MaxPixelsOpt = DEFAULT_MAX_PIXELS,
        max_decodes: Annotated[int, typer.Option("--max-decodes", min=1, help="Uploads decoded at once (each within --max-pixels): bounds the service's memory.")] = DEFAULT_MAX_DECODES,
        lock_wait: Annotated[float, typer.Option("--lock-wait", min=0, help="Seconds an add waits for another command writing to the catalog (a scan, an apply) before answering 503.")] = 30.0,
        verify: Annotated[Optional[bool], typer.Option("--verify/--no-verify", help="A second, geometric look at matches scored near the threshold, as `embeddr dupes` does (default: on for presets with a [verify] table).")] = None,
    ):
        """Serve the ingest gate over HTTP: POST /check, POST /add, GET /health, GET /stats, docs at /docs.

        Uploads are multipart (field `files`, one or more). The model stays loaded; checks run in
        parallel, adds one at a time; adds are in the catalog, so a restart finds them. Errors are
        JSON {"error": {"type", "message", "file"}}: 413 over --max-upload-mb, 422 for a non-image
        or corrupt upload.

        Example: embeddr serve --db photos.db --port 8000 & curl -F files=@new.jpg http://127.0.0.1:8000/check
        """
        from ..server import serve as run_server

        if host not in ("127.0.0.1", "localhost", "::1"):
            say(f"warning: binding {host}: the service has no authentication")
        with Gate(db, model=model, threshold=threshold, device=device, precision=value_of(precision), store=store,
                  micro_batch=micro_batch, max_pixels=max_pixels or None, max_decodes=max_decodes, wait=lock_wait,
                  verify=verify) as gate:
            run_server(gate, host=host, port=port, max_upload_mb=max_upload_mb, log_level=value_of(log_level))
