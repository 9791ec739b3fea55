"""Source stage: what a scan's inputs are, and their bytes.

Inputs are local folders and files (walked by :func:`embeddr.discover.discover`), URLs, and
manifests (a product feed as CSV or Parquet: one row per item, a path/URL column and an optional
id column). :func:`list_inputs` turns them into :class:`~embeddr.discover.Candidate` descriptors
(path or URL, size, mtime, the manifest's id); :func:`fetch` reads the bytes of a URL.

URLs: ``http://`` and ``https://`` (standard library, no extra needed) and object stores through
fsspec (``s3://``, ``gs://``, ``az://``, ``memory://`` ...; ``pip install "embeddr[cloud]"``). Each
fetch has a timeout, a size cap and retries with exponential back-off for what may pass (timeouts,
connection errors, HTTP 429 and 5xx); a 404, a timeout after the last retry or an oversized body is
a :class:`FetchError` that the scan records against the item, never a stopped scan. Concurrency is
bounded by the caller (the scan's thread pool of ``FetchOptions.concurrency`` threads).

A fetched URL is catalogued with its version (``etag:<ETag>`` or ``lm:<Last-Modified>``) and size;
on a rescan :func:`stat` (an HTTP HEAD, or the object store's metadata) tells whether it changed, and
an unchanged URL is not fetched again.

Both the local pipeline (:mod:`embeddr.pipeline`) and the Ray pipeline (:mod:`embeddr.ray_scan`)
use this module. It imports nothing above the stage layer.
"""

from __future__ import annotations

import csv
import os
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .discover import Candidate, discover
from .errors import EmbeddrError

USER_AGENT = "embeddr (near-duplicate image scan)"


@dataclass(frozen=True)
class FetchOptions:
    timeout: float = 30.0  # seconds without progress on one request (connect, headers, each read)
    retries: int = 3  # further attempts after a retryable failure
    backoff: float = 0.5  # first wait between attempts (seconds); doubles each time
    max_bytes: int = 64 << 20  # larger bodies are refused (per-item error)
    concurrency: int = 16  # fetches in flight at once (threads of the scan)


class FetchError(Exception):
    """One URL could not be fetched; ``reason`` is what the catalog records."""

    def __init__(self, reason: str, retryable: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


@dataclass(frozen=True)
class Fetched:
    data: bytes
    etag: str | None  # "etag:..." or "lm:..." (None when the server gives neither)


def is_remote(path: str) -> bool:
    """True for a URL that is fetched (http(s) or an fsspec object store), False for a local path."""
    head, sep, _ = str(path).partition("://")
    return bool(sep) and head.isalnum() and head.lower() != "file" and len(head) > 1


def _is_http(url: str) -> bool:
    return url.lower().startswith(("http://", "https://"))


def _version(etag: str | None, last_modified: str | None) -> str | None:
    if etag:
        return f"etag:{etag}"
    if last_modified:
        return f"lm:{last_modified}"
    return None


# -- fetching ----------------------------------------------------------------------------------------------
def fetch(url: str, options: FetchOptions = FetchOptions()) -> Fetched:
    """The bytes of ``url`` and its version; retries what may pass, raises :class:`FetchError` otherwise."""
    attempt = 0
    while True:
        try:
            return _fetch_http(url, options) if _is_http(url) else _fetch_fsspec(url, options)
        except FetchError as exc:
            if not exc.retryable or attempt >= options.retries:
                if exc.retryable and attempt:
                    raise FetchError(f"{exc.reason} (after {attempt + 1} attempts)") from None
                raise
        attempt += 1
        time.sleep(options.backoff * (2 ** (attempt - 1)))


def _fetch_http(url: str, options: FetchOptions) -> Fetched:
    import urllib.error  # here, not at the top: http/ssl/email cost every command's start-up ~20 ms
    import urllib.request

    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=options.timeout) as response:
            length = response.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > options.max_bytes:
                raise FetchError(f"too large: {int(length)} bytes is over the size cap of {options.max_bytes} bytes")
            data = response.read(options.max_bytes + 1)
            if len(data) > options.max_bytes:
                raise FetchError(f"too large: over the size cap of {options.max_bytes} bytes")
            return Fetched(data, _version(response.headers.get("ETag"), response.headers.get("Last-Modified")))
    except urllib.error.HTTPError as exc:
        retryable = exc.code == 429 or exc.code >= 500
        raise FetchError(f"HTTP {exc.code} {exc.reason}", retryable=retryable) from None
    except (TimeoutError, socket.timeout):
        raise FetchError(f"timed out after {options.timeout:g} s", retryable=True) from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, (TimeoutError, socket.timeout)):
            raise FetchError(f"timed out after {options.timeout:g} s", retryable=True) from None
        raise FetchError(f"cannot fetch: {reason}", retryable=True) from None
    except (ConnectionError, OSError) as exc:  # reset mid-body, http.client.IncompleteRead, ...
        raise FetchError(f"cannot fetch: {exc}", retryable=True) from None


def _filesystem(url: str):
    try:
        import fsspec
    except ImportError:
        raise FetchError(f'{url.partition("://")[0]}:// needs fsspec: pip install "embeddr[cloud]"') from None
    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:
        raise FetchError(f'no filesystem for this URL ({exc}); pip install "embeddr[cloud]"') from None


def _info_version(info: dict) -> str | None:
    etag = info.get("ETag") or info.get("etag") or info.get("md5Hash") or info.get("generation")
    modified = info.get("LastModified") or info.get("last_modified") or info.get("updated") or info.get("mtime") or info.get("created")
    return _version(str(etag) if etag else None, str(modified) if modified else None)


def _fetch_fsspec(url: str, options: FetchOptions) -> Fetched:
    fs, path = _filesystem(url)
    try:
        info = fs.info(path)
        size = info.get("size")
        if size is not None and size > options.max_bytes:
            raise FetchError(f"too large: {size} bytes is over the size cap of {options.max_bytes} bytes")
        with fs.open(path, "rb") as fh:
            data = fh.read(options.max_bytes + 1)
    except FetchError:
        raise
    except FileNotFoundError:
        raise FetchError("not found") from None
    except PermissionError as exc:
        raise FetchError(f"permission denied: {exc}") from None
    except (TimeoutError, socket.timeout):
        raise FetchError(f"timed out after {options.timeout:g} s", retryable=True) from None
    except Exception as exc:  # the object store's own errors
        raise FetchError(f"cannot fetch: {type(exc).__name__}: {exc}", retryable=True) from None
    if len(data) > options.max_bytes:
        raise FetchError(f"too large: over the size cap of {options.max_bytes} bytes")
    return Fetched(data, _info_version(info))


def stat(url: str, options: FetchOptions = FetchOptions()) -> tuple[int | None, str | None] | None:
    """(size, version) of ``url`` without its body (HTTP HEAD / object metadata); None when unknown."""
    try:
        if _is_http(url):
            import urllib.request

            request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": USER_AGENT})
            with urllib.request.urlopen(request, timeout=options.timeout) as response:
                length = response.headers.get("Content-Length")
                return (int(length) if length and length.isdigit() else None,
                        _version(response.headers.get("ETag"), response.headers.get("Last-Modified")))
        fs, path = _filesystem(url)
        info = fs.info(path)
        return info.get("size"), _info_version(info)
    except Exception:  # unknown: the item is fetched again, which is always safe
        return None


# -- listing -----------------------------------------------------------------------------------------------
def _local(path: str, item_id: str | None) -> Candidate:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return Candidate(path, error="no such file", item_id=item_id)
    except OSError as exc:
        return Candidate(path, error=f"cannot stat: {exc.strerror or exc}", item_id=item_id)
    if not os.path.isfile(path):
        return Candidate(path, error="not a regular file", item_id=item_id)
    return Candidate(path, st.st_size, st.st_mtime_ns, item_id=item_id)


def manifest_rows(manifest: str | os.PathLike, path_column: str, id_column: str | None = None) -> Iterator[tuple[str, str | None]]:
    """(path or URL, id) per row of a CSV or Parquet manifest; relative paths are relative to the manifest."""
    manifest = Path(manifest)
    if not manifest.is_file():
        raise EmbeddrError(f"--manifest {manifest}: no such file")
    columns = [path_column] + ([id_column] if id_column else [])
    if manifest.suffix.lower() in (".parquet", ".pq"):
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise EmbeddrError(f'--manifest {manifest}: reading Parquet needs pyarrow (pip install "embeddr[cloud]")') from None
        try:
            names = pq.read_schema(manifest).names
        except Exception as exc:
            raise EmbeddrError(f"--manifest {manifest}: not a readable Parquet file ({exc})") from None
        _check_columns(manifest, names, columns)
        for batch in pq.ParquetFile(manifest).iter_batches(columns=columns, batch_size=65536):
            paths = batch.column(0).to_pylist()
            ids = batch.column(1).to_pylist() if id_column else [None] * len(paths)
            yield from ((p, i) for p, i in zip(paths, ids))
        return
    with open(manifest, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        _check_columns(manifest, reader.fieldnames or [], columns)
        for row in reader:
            yield row[path_column], (row[id_column] if id_column else None)


def _check_columns(manifest: Path, names: list[str], columns: list[str]) -> None:
    missing = [c for c in columns if c not in names]
    if missing:
        raise EmbeddrError(f"--manifest {manifest}: no column {', '.join(map(repr, missing))} "
                           f"(columns: {', '.join(names) or 'none'})")


def list_inputs(roots: Iterable[str | os.PathLike] = (), *, manifest: str | os.PathLike | None = None,
                path_column: str = "path", id_column: str | None = None, exclude: Iterable[str] = ()) -> Iterator[Candidate]:
    """Candidates for every input: folders and files walked, URLs as given, manifest rows (each once)."""
    roots = list(roots)
    local = [r for r in roots if not is_remote(os.fspath(r))]
    seen: set[str] = set()
    # walked paths are remembered only when URLs or a manifest's rows may repeat them (a plain folder scan
    # of a million files keeps no set of a million paths)
    remember = manifest is not None or len(local) < len(roots)
    for cand in discover(local, exclude=exclude) if local else ():
        if remember:
            seen.add(cand.path)
        yield cand
    for r in roots:
        url = os.fspath(r)
        if is_remote(url) and url not in seen:
            seen.add(url)
            yield Candidate(url)
    if manifest is not None:
        base = Path(manifest).resolve().parent
        for value, item_id in manifest_rows(manifest, path_column, id_column):
            value = "" if value is None else str(value).strip()
            item_id = None if item_id is None or str(item_id) == "" else str(item_id)
            if not value:
                continue
            path = value if is_remote(value) else os.path.abspath(base / os.path.expanduser(value))
            if path in seen:
                continue
            seen.add(path)
            yield Candidate(path, item_id=item_id) if is_remote(path) else _local(path, item_id)
