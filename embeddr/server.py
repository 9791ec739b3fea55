"""The ingest gate over HTTP: FastAPI + uvicorn around one :class:`~embeddr.ingest.Gate`.

Endpoints (OpenAPI docs at ``/docs``):

* ``POST /check``  multipart upload (field ``files``, one or more) -> matches; adds nothing.
* ``POST /add``    the same, then adds the uploads that are not duplicates (``?all=true``: all);
                   the bytes are stored as ``<store>/<sha256><ext>`` and catalogued there.
* ``GET /health``  liveness + model; ``GET /stats`` catalog, index and request counters.

Every error has ONE JSON shape, ``{"error": {"type", "message", "file"}}``, with a status that
follows the exception: a body over ``--max-upload-mb`` -> 413; a non-image or corrupt upload
(:class:`~embeddr.errors.DecodeError`) -> 422 and nothing of that request is added; a missing
``files`` field -> 422; model mismatch -> 409; a broken catalog, or one deleted or replaced while
serving (``/health`` then answers 503 too), or another process holding the catalog's writer lock
for longer than ``--lock-wait`` seconds -> 503; anything else -> 500.

Uploads are stored under the extension of the format their bytes were decoded as (Pillow's
format name; ``.bin`` when unknown), never the client's; at most ``max_decodes`` uploads are
decoded at once, each within the ``--max-pixels`` budget.

The service binds 127.0.0.1 by default and has no authentication: put it behind a proxy
before exposing it. Requests run in a thread pool; the gate's lock lets checks run in
parallel and serialises adds.
"""

from __future__ import annotations

import json
import socket
import sys
from typing import Annotated

from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import __version__
from .errors import CatalogError, DecodeError, EmbeddrError, ModelMismatch, PresetNotFound
from .ingest import CheckResult, Gate, Upload

DEFAULT_MAX_UPLOAD_MB = 50.0
_DRAIN_LIMIT = 64 << 20  # bytes of an oversized body read (and dropped) so the client can read the 413


class UploadTooLarge(EmbeddrError):
    """A request body above the configured limit."""


STATUS = [  # most specific first
    (UploadTooLarge, 413),
    (DecodeError, 422),
    (ModelMismatch, 409),
    (CatalogError, 503),
    (PresetNotFound, 400),
    (EmbeddrError, 400),
]


def error_body(type_: str, message: str, file: str | None = None) -> dict:
    return {"error": {"type": type_, "message": message, "file": file}}


def status_of(exc: BaseException) -> int:
    return next((code for cls, code in STATUS if isinstance(exc, cls)), 500)


class UploadLimit:
    """ASGI middleware: refuse request bodies over ``max_bytes`` with 413 (by Content-Length, or
    while streaming when there is none), in the service's JSON error shape."""

    def __init__(self, app, max_mb: float):
        self.app, self.max_mb, self.max_bytes = app, max_mb, int(max_mb * (1 << 20))

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._drain(receive, int(declared))
            return await self._refuse(send, int(declared))
        seen = 0
        over = False

        async def limited_receive():
            nonlocal seen, over
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    over = True
                    raise UploadTooLarge("request body too large")
            return message

        async def guarded_send(message):
            if not over:
                await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except UploadTooLarge:
            pass
        if over:
            await self._refuse(send, None)

    async def _drain(self, receive, declared: int) -> None:
        if declared > _DRAIN_LIMIT:
            return
        while True:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body"):
                return

    async def _refuse(self, send, size: int | None) -> None:
        what = f"{size} bytes" if size is not None else "the request body"
        body = json.dumps(error_body("UploadTooLarge", f"{what} exceeds the upload limit of {self.max_mb:g} MiB (--max-upload-mb)")).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


class MatchOut(BaseModel):
    path: str
    score: float
    kind: str


class ResultOut(BaseModel):
    path: str
    status: str
    error: str | None
    hash: str | None
    duplicate: bool
    n_matches: int
    matches: list[MatchOut]
    added: bool
    stored: str | None


class CheckOut(BaseModel):
    model: str
    threshold: float
    score: str
    duplicate: bool
    results: list[ResultOut]


class ErrorDetail(BaseModel):
    type: str
    message: str
    file: str | None


class ErrorOut(BaseModel):
    error: ErrorDetail


Files = Annotated[list[UploadFile], File(description="One or more image files (multipart field `files`).")]


def create_app(gate: Gate, *, max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB):
    """The FastAPI application around ``gate`` (which it does not close)."""
    errors = {code: {"model": ErrorOut} for code in (400, 409, 413, 422, 500, 503)}
    app = FastAPI(
        title="embeddr ingest gate",
        version=__version__,
        description="Check uploads against an embeddr catalog for exact and near duplicates, and add the new ones. "
        f"Model {gate.model}, threshold {gate.threshold:g}. Errors: {{\"error\": {{\"type\", \"message\", \"file\"}}}}.",
    )
    app.state.gate = gate

    @app.exception_handler(EmbeddrError)
    async def embeddr_error(request: Request, exc: EmbeddrError):
        file = exc.path if isinstance(exc, DecodeError) else None
        message = exc.reason if isinstance(exc, DecodeError) else str(exc)
        return JSONResponse(error_body(type(exc).__name__, message, file), status_code=status_of(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        parts = ["{}: {}".format(".".join(str(x) for x in e.get("loc", ())), e.get("msg", "")) for e in exc.errors()]
        return JSONResponse(error_body("RequestValidationError", "; ".join(parts) or "invalid request"), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return JSONResponse(error_body("HTTPError", str(exc.detail)), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        return JSONResponse(error_body("InternalError", f"{type(exc).__name__}: {exc}"), status_code=500)

    def read_uploads(files: list[UploadFile]) -> list[Upload]:
        return [Upload(f.filename or f"upload{i}", f.file.read()) for i, f in enumerate(files, start=1)]

    def reject_errors(results: list[CheckResult]) -> None:
        bad = [r for r in results if r.status == "error"]
        if bad:
            more = f" (and {len(bad) - 1} more bad file(s); nothing of this request was added)" if len(bad) > 1 else ""
            raise DecodeError(bad[0].path, f"{bad[0].error}{more}")

    def body(results: list[CheckResult]) -> dict:
        return {"model": gate.model, "threshold": gate.threshold, "score": gate.score,
                "duplicate": any(r.duplicate for r in results), "results": [r.as_dict() for r in results]}

    @app.post("/check", response_model=CheckOut, responses=errors, summary="Check uploads for duplicates (adds nothing)")
    def check(files: Files):
        """Exact (same bytes) and near (score >= threshold) matches of each upload in the catalog.
        A non-image or corrupt upload fails the request with 422 naming the file."""
        results = gate.check(read_uploads(files))
        reject_errors(results)
        return body(results)

    @app.post("/add", response_model=CheckOut, responses=errors, summary="Add the uploads that are not duplicates")
    def add(files: Files, add_all: Annotated[bool, Query(alias="all", description="Add duplicates too.")] = False):
        """Check each upload, then store and catalogue those that are not duplicates (`all=true`: every one).
        One transaction: a non-image or corrupt upload fails the request with 422 and nothing is added."""
        results = gate.add(read_uploads(files), only_new=not add_all, strict=True)
        reject_errors(results)
        return body(results)

    @app.get("/health", summary="Liveness and the model in use")
    def health():
        why = gate.alive()
        if why:  # the catalog was deleted or replaced under the service: not healthy
            return JSONResponse(error_body("CatalogError", why), status_code=503)
        return {"status": "ok", "model": gate.model, "threshold": gate.threshold, "encoder": gate.encoder.describe(),
                "index_vectors": int(gate.index.ntotal)}

    @app.get("/stats", summary="Catalog, index and request counters")
    def stats():
        return gate.stats()

    return UploadLimit(app, max_upload_mb) if max_upload_mb else app


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready socket on ``host:port`` (port 0: a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise EmbeddrError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def serve(gate: Gate, *, host: str = "127.0.0.1", port: int = 8000, max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
          log_level: str = "info") -> None:
    """Serve ``gate`` until interrupted (SIGINT/SIGTERM shut down gracefully). Prints
    ``embeddr: listening on http://HOST:PORT`` (the real port when ``port`` is 0) on stderr."""
    import uvicorn

    sock = bind(host, port)
    real_port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(gate, max_upload_mb=max_upload_mb), host=host, port=real_port,
                            log_level=log_level, timeout_graceful_shutdown=5)
    shown = f"[{host}]" if ":" in host else host
    print(f"embeddr: listening on http://{shown}:{real_port} (model {gate.model}, docs at /docs)", file=sys.stderr, flush=True)
    uvicorn.Server(config).run(sockets=[sock])
