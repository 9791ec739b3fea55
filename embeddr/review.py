"""Review stage: a self-contained static HTML report of duplicate groups, and reviewer verdicts.

:func:`write_html_report` writes a folder that opens from disk with no server and no network::

    OUT/index.html        summary, savings per top-level folder, the viewer (inline CSS and JS)
    OUT/pages/0001.js     group data, ``page_size`` groups per file, loaded on demand
    OUT/thumbs/<hash>.jpg one JPEG thumbnail per distinct content (made with Pillow from the originals)

Groups are ordered from most to least borderline (lowest ``min_score`` first). Each member shows
its thumbnail, score against the canonical copy, size, dimensions and format; the canonical copy
is marked with the rule that chose it. Reviewers tick "not a duplicate" on whole groups or single
members; the marks are kept in the browser's localStorage and downloaded as ``verdicts.json``::

    {"db": "/abs/photos.db", "model": "sscd-distilled",
     "verdicts": [{"a": "/abs/x.jpg", "b": "/abs/y.jpg", "verdict": "not_duplicate"}]}

A marked group yields every pair of its members; a marked member yields a pair between it and
every other member of its group. :func:`import_verdicts` stores such a file in the catalog, and
every later ``dupes`` and ``apply`` drops those pairs before grouping.

Every name and path is data: escaped with :func:`html.escape` in the HTML, embedded as JSON with
``<``, ``>`` and ``&`` escaped, and put on the page with ``textContent``/``setAttribute`` only.
A Content-Security-Policy with a per-report nonce blocks any script the report did not write.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import os
import re
import secrets
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from .catalog import Catalog, FileRow, opened
from .decode import load_image
from .sources import FetchError, FetchOptions, fetch, is_remote
from .dupes import DuplicateReport, Group
from .errors import DecodeError, ReviewError
from .fsutil import common_root
from .output import human_bytes
from .savings import money

VERDICTS = ("not_duplicate",)
PAGE_FILE = re.compile(r"^\d{4,}\.js$")


# -- escaping ------------------------------------------------------------------------------------

def script_json(data) -> str:
    """JSON that is safe inside a ``<script>`` element or a .js file: no ``<``, ``>``, ``&``, U+2028/9."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a file name that is not UTF-8: \udcXX escapes keep it exactly
        text = json.dumps(data, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def _e(value) -> str:
    return html.escape(str(value), quote=True)


# -- thumbnails ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Thumb:
    """The thumbnail of one content hash: a file name under ``thumbs/``, or the reason there is none."""

    name: str | None
    error: str | None = None


def _thumb_key(row: FileRow) -> str:
    if row.hash:
        return row.hash[:32]
    import hashlib

    return "p" + hashlib.sha256(row.path.encode("utf-8", "surrogateescape")).hexdigest()[:31]


def _make_thumb(paths: Sequence[str], target: Path, size: int) -> Thumb:
    if target.is_file() and target.stat().st_size > 0:
        return Thumb(target.name)
    error = "no file"
    for path in paths:  # any copy with these bytes will do
        try:
            data = None
            if is_remote(path):  # a URL from a manifest scan: fetched again for its thumbnail
                data = fetch(path, FetchOptions(retries=1)).data
            image, _ = load_image(path, min_side=size, data=data)
        except FetchError as exc:
            error = exc.reason
            continue
        except DecodeError as exc:
            error = exc.reason
            continue
        image.thumbnail((size, size), _resample())
        tmp = target.with_name(target.name + ".tmp")
        image.save(tmp, "JPEG", quality=82, optimize=True)
        tmp.replace(target)
        return Thumb(target.name)
    return Thumb(None, error)


def _resample():
    from PIL import Image

    return Image.Resampling.LANCZOS


def make_thumbnails(groups: Iterable[Group], thumbs_dir: Path, *, size: int = 256,
                    workers: int | None = None) -> dict[str, Thumb]:
    """One JPEG thumbnail (long side ``size``) per distinct content among the groups' members.

    Returns ``thumb key -> Thumb``; an existing thumbnail is reused, an unreadable file gives a
    :class:`Thumb` with the reason (never an exception).
    """
    thumbs_dir.mkdir(parents=True, exist_ok=True)
    paths_of: dict[str, list[str]] = {}
    for g in groups:
        for m in g.members:
            paths_of.setdefault(_thumb_key(m), []).append(m.path)
    workers = workers or min(4, os.cpu_count() or 1)
    keys = sorted(paths_of)
    with ThreadPoolExecutor(max_workers=workers) as pool:  # Pillow releases the GIL while decoding
        results = pool.map(lambda k: _make_thumb(paths_of[k], thumbs_dir / f"{k}.jpg", size), keys)
        return dict(zip(keys, results))


# -- page data -----------------------------------------------------------------------------------

def _pair_scores(report: DuplicateReport) -> Callable[[str, str], float | None]:
    scores = {(p.a, p.b): p.score for p in report.pairs}

    def score(a: str, b: str) -> float | None:
        return scores.get((a, b) if a < b else (b, a))

    return score


def _common_root(report: DuplicateReport) -> str:
    return common_root(m.path for g in report.groups for m in g.members)


def _uri(path: str) -> str:
    if path.lower().startswith(("http://", "https://")):
        return path
    try:
        return Path(path).as_uri()
    except ValueError:
        return ""


def group_payload(group: Group, decision, thumbs: dict[str, Thumb], score: Callable[[str, str], float | None],
                  root: str) -> dict:
    """The JSON-ready data of one group as the viewer shows it."""
    canonical = decision.canonical.path if decision is not None else None
    protected = {r.path for r in decision.protected} if decision is not None else set()
    duplicates = {r.path for r in decision.duplicates} if decision is not None else set()
    members = sorted(group.members, key=lambda m: (m.path != canonical, m.path))
    out = []
    for m in members:
        role = ("canonical" if m.path == canonical else "protected" if m.path in protected
                else "duplicate" if m.path in duplicates else "member")
        thumb = thumbs.get(_thumb_key(m), Thumb(None, "no thumbnail"))
        rel = os.path.relpath(m.path, root) if root else m.path
        out.append({
            "path": m.path, "rel": rel, "uri": _uri(m.path), "role": role, "item_id": m.item_id,
            "size": m.size, "size_h": human_bytes(m.size), "width": m.width, "height": m.height,
            "format": m.format or "?",
            "score": None if canonical is None or m.path == canonical else _round(score(canonical, m.path)),
            "thumb": f"thumbs/{thumb.name}" if thumb.name else None, "thumb_error": thumb.error,
        })
    return {
        "id": group.id, "min_score": _round(group.min_score), "max_score": _round(group.max_score),
        "members": out,
        "rule": decision.rule if decision is not None else None,
        "reason": decision.reason if decision is not None else None,
    }


def _round(x: float | None) -> float | None:
    return None if x is None else round(float(x), 4)


def borderline_order(groups: Iterable[Group]) -> list[Group]:
    """Most borderline first: lowest ``min_score``, then group id."""
    return sorted(groups, key=lambda g: (g.min_score, g.id))


# -- the report folder ---------------------------------------------------------------------------

def _template(name: str) -> str:
    return resources.files("embeddr").joinpath("templates", name).read_text(encoding="utf-8")


def _fill(template: str, values: dict[str, str]) -> str:
    def sub(match: re.Match) -> str:
        return values[match.group(1)]

    return re.sub(r"\{\{([A-Z_]+)\}\}", sub, template)


def _savings_html(savings: dict | None) -> str:
    if not savings:
        return "<p class=\"muted\">No savings computed.</p>"
    cur = savings.get("currency", "")
    head = ("<table class=\"savings\"><thead><tr><th>folder</th><th>files</th><th>duplicate files</th>"
            "<th>duplication rate</th><th>reclaimable</th><th>monthly cost</th></tr></thead><tbody>")

    def row(label: str, r: dict, cls: str = "") -> str:
        return (f"<tr class=\"{cls}\"><td class=\"path\">{_e(label)}</td><td>{int(r['files']):,}</td>"
                f"<td>{int(r['duplicate_files']):,}</td><td>{float(r['duplication_rate']) * 100:.1f}%</td>"
                f"<td title=\"{int(r['bytes_reclaimable'])} bytes\">{_e(human_bytes(r['bytes_reclaimable']))}</td>"
                f"<td>{_e(money(float(r['monthly_cost']), cur))}</td></tr>")

    rows = [row(f.get("folder", "?"), f) for f in savings.get("folders", [])]
    rows.append(row("overall", savings["overall"], "overall"))
    note = (f"<p class=\"muted\">Monthly cost at {_e(savings.get('price_per_gb_month'))} {_e(cur)} per GB-month "
            f"(GB = 2<sup>30</sup> bytes) of the duplicate copies the retention policy would act on.</p>")
    return head + "".join(rows) + "</tbody></table>" + note


@dataclass
class HtmlReport:
    """What :func:`write_html_report` wrote."""

    index: Path
    groups: int
    pages: int
    thumbnails: int
    thumbnail_errors: int

    def as_dict(self) -> dict:
        return {"index": str(self.index), "groups": self.groups, "pages": self.pages,
                "thumbnails": self.thumbnails, "thumbnail_errors": self.thumbnail_errors}


def write_html_report(report: DuplicateReport, decisions, savings: dict | None, out_dir: str | os.PathLike, *,
                      thumb_size: int = 256, page_size: int = 50, db: str | os.PathLike | None = None,
                      workers: int | None = None) -> Path:
    """Write the static review report into ``out_dir``; returns the path of ``index.html``.

    ``decisions``: the policy's :class:`~embeddr.policy.Decision` list (or ``None``: no canonical
    marked). ``savings``: :func:`embeddr.savings.savings`' dict (or ``None``). ``db`` is recorded in
    the exported verdicts. Re-running into the same folder reuses existing thumbnails.
    """
    return write_html_report_details(report, decisions, savings, out_dir, thumb_size=thumb_size,
                                     page_size=page_size, db=db, workers=workers).index


GENERATOR = '<meta name="generator" content="embeddr">'  # in every index.html embeddr writes (report.html)


def check_html_dir(out_dir: str | os.PathLike) -> Path:
    """``out_dir`` as a folder the HTML report may be written into, else :class:`ReviewError`: a file, or
    a folder whose ``index.html`` is not an earlier embeddr report (never overwritten). Touches nothing."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ReviewError(f"{out}: exists and is not a folder; the HTML report is a folder (index.html, pages/, thumbs/)")
    index = out / "index.html"
    if os.path.lexists(index):
        try:
            with open(index, "rb") as fh:
                head = fh.read(4096)
        except OSError:
            head = b""
        if not os.path.isfile(index) or os.path.islink(index) or GENERATOR.encode() not in head:
            raise ReviewError(f"{index} exists and is not an embeddr report: it is never overwritten; "
                              "give --html another folder (or move that file away)")
    return out


def write_html_report_details(report: DuplicateReport, decisions, savings: dict | None, out_dir: str | os.PathLike,
                              *, thumb_size: int = 256, page_size: int = 50, db: str | os.PathLike | None = None,
                              workers: int | None = None) -> HtmlReport:
    """:func:`write_html_report`, returning counts (groups, pages, thumbnails) as well."""
    if page_size < 1:
        raise ReviewError(f"page size must be at least 1, not {page_size}")
    if thumb_size < 16:
        raise ReviewError(f"thumbnail size must be at least 16 pixels, not {thumb_size}")
    out = check_html_dir(out_dir)
    pages_dir = out / "pages"
    pages_dir.mkdir(parents=True, exist_ok=True)
    for stale in pages_dir.iterdir():  # pages of an earlier report in the same folder
        if PAGE_FILE.match(stale.name):
            stale.unlink()

    groups = borderline_order(report.groups)
    thumbs = make_thumbnails(groups, out / "thumbs", size=thumb_size, workers=workers)
    decision_of = {d.group_id: d for d in (decisions or [])}
    score = _pair_scores(report)
    root = _common_root(report)
    n_pages = max(1, -(-len(groups) // page_size))
    for p in range(n_pages):
        chunk = groups[p * page_size:(p + 1) * page_size]
        data = [group_payload(g, decision_of.get(g.id), thumbs, score, root) for g in chunk]
        (pages_dir / f"{p + 1:04d}.js").write_text(f"window.EMBEDDR.page({p + 1},{script_json(data)});\n", encoding="utf-8")

    db_path = str(Path(db).resolve()) if db is not None else ""
    meta = {
        "db": db_path, "catalog_id": _catalog_id(db), "model": report.model, "threshold": report.threshold, "score": report.score,
        "groups": len(groups), "pages": n_pages, "page_size": page_size, "root": root,
        "generated": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
    }
    dup_files = sum(len(g.members) - 1 for g in report.groups)
    nonce = secrets.token_urlsafe(18)
    page = _fill(_template("report.html"), {
        "NONCE": nonce,
        "TITLE": _e(f"embeddr review: {len(groups)} duplicate groups"),
        "CSS": _template("report.css"),
        "JS": _template("report.js"),
        "META": script_json(meta),
        "MODEL": _e(report.model),
        "THRESHOLD": _e(f"{report.threshold:g}"),
        "SCORE": _e(report.score),
        "FILES": _e(f"{report.files:,}"),
        "GROUPS": _e(f"{len(groups):,}"),
        "DUP_FILES": _e(f"{dup_files:,}"),
        "ROOT": _e(root or "(various)"),
        "DB": _e(db_path or "(not recorded)"),
        "GENERATED": _e(meta["generated"]),
        "SAVINGS": _savings_html(savings),
    })
    index = out / "index.html"
    tmp = out / "index.html.tmp"
    tmp.write_text(page, encoding="utf-8", errors="backslashreplace")  # non-UTF-8 names shown escaped
    tmp.replace(index)
    made = sum(1 for t in thumbs.values() if t.name)
    return HtmlReport(index=index, groups=len(groups), pages=n_pages, thumbnails=made,
                      thumbnail_errors=len(thumbs) - made)


# -- verdicts ------------------------------------------------------------------------------------

def verdict_pairs(group_paths: Sequence[str], marked_members: Iterable[str] = (), *, whole: bool = False) -> set[tuple[str, str]]:
    """The not-duplicate pairs a review mark means (the same rule the viewer's export uses)."""
    paths = sorted(set(group_paths))
    out: set[tuple[str, str]] = set()
    if whole:
        out.update((a, b) for i, a in enumerate(paths) for b in paths[i + 1:])
    for m in marked_members:
        out.update((min(m, o), max(m, o)) for o in paths if o != m)
    return out


MAX_VERDICTS_BYTES = 64 << 20  # a verdicts file larger than this is refused before it is parsed
MAX_PATH_BYTES = 4096  # PATH_MAX: a longer "path" names no file


def _catalog_id(db) -> str | None:
    if db is None or isinstance(db, Catalog):
        return db.catalog_id if isinstance(db, Catalog) else None
    try:
        with Catalog(db, create=False) as cat:
            return cat.catalog_id
    except Exception:  # noqa: BLE001 - the report is still useful without it
        return None


def _load_verdicts_json(path: Path) -> dict:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ReviewError(f"{path}: no such verdicts file") from None
    except OSError as exc:
        raise ReviewError(f"{path}: cannot read verdicts file ({exc.strerror or exc})") from None
    if size > MAX_VERDICTS_BYTES:
        raise ReviewError(f"{path}: {size:,} bytes is more than a verdicts file can be ({MAX_VERDICTS_BYTES:,}); "
                          "not imported")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ReviewError(f"{path}: cannot read verdicts file ({exc})") from None
    except json.JSONDecodeError as exc:
        raise ReviewError(f"{path}: not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except RecursionError:
        raise ReviewError(f"{path}: JSON nested too deeply to be a verdicts file; not imported") from None


def read_verdicts(path: str | os.PathLike) -> list[tuple[str, str, str]]:
    """Validate a ``verdicts.json`` file; returns ``(a, b, verdict)`` triples. Raises :class:`ReviewError`."""
    path = Path(path)
    data = _load_verdicts_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("verdicts"), list):
        raise ReviewError(f"{path}: expected an object with a \"verdicts\" list, "
                          "as written by the HTML report's Download verdicts button")
    out: list[tuple[str, str, str]] = []
    for i, item in enumerate(data["verdicts"]):
        where = f"{path}: verdicts[{i}]"
        if not isinstance(item, dict):
            raise ReviewError(f"{where} is not an object with a, b and verdict")
        missing = [k for k in ("a", "b", "verdict") if k not in item]
        if missing:
            raise ReviewError(f"{where} lacks {', '.join(missing)}")
        a, b, verdict = item["a"], item["b"], item["verdict"]
        if not isinstance(a, str) or not isinstance(b, str) or not a or not b:
            raise ReviewError(f"{where}: a and b must be non-empty path strings")
        if a == b:
            raise ReviewError(f"{where}: a and b are the same file ({a!r})")
        if verdict not in VERDICTS:
            raise ReviewError(f"{where}: verdict {verdict!r} is not one of {', '.join(VERDICTS)}")
        out.append((a, b, verdict))
    return out


@dataclass(frozen=True)
class VerdictImport:
    """What an import stored: ``new`` pairs (or pairs whose verdict changed), ``already`` present as they
    are, and the pairs ``rejected`` (count per reason)."""

    new: int
    already: int
    rejected: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.new + self.already


def _path_problem(p: str) -> str | None:
    if "\x00" in p:
        return "with a NUL byte in a path"
    try:
        raw = os.fsencode(p)  # names that are not UTF-8 arrive as \udcXX escapes: those are fine
    except UnicodeEncodeError:
        return "with a path that is not valid Unicode"
    if len(raw) > MAX_PATH_BYTES:
        return "with a path longer than any file name can be"
    if not os.path.isabs(p):
        return "with a relative path"
    return None


def import_verdicts(catalog: Catalog | str | os.PathLike, path: str | os.PathLike, *, wait: bool = False) -> VerdictImport:
    """Store the verdicts of a ``verdicts.json`` file in the catalog (open or a path).

    The file's shape is validated first (nothing is stored from an invalid file). A file made from
    another catalog (its ``catalog_id``) is refused. Pairs naming a path this catalog has no file
    for, or a path no file can have (NUL, not Unicode, longer than PATH_MAX, relative), are
    rejected and counted, not stored (all rejected: a :class:`ReviewError`). Pairs are stored with
    the smaller path first; importing the same file again changes nothing (``new`` is 0). Holds
    the catalog's writer lock.
    """
    from .lock import writer

    triples = read_verdicts(path)
    made_for = _load_verdicts_json(Path(path)).get("catalog_id") if triples else None
    with writer(catalog.path if isinstance(catalog, Catalog) else catalog, wait=wait), opened(catalog) as cat:
        if made_for is not None and made_for != cat.catalog_id:
            raise ReviewError(f"{path}: made from another catalog (id {made_for}), not {cat.path} "
                              f"(id {cat.catalog_id}); not imported")
        rejected: dict[str, int] = {}
        ok: list[tuple[str, str, str]] = []
        for a, b, v in triples:
            why = _path_problem(a) or _path_problem(b)
            if why:
                rejected[why] = rejected.get(why, 0) + 1
            else:
                ok.append((a, b, v))
        known = cat.known_paths({p for a, b, _ in ok for p in (a, b)})
        keep = [(a, b, v) for a, b, v in ok if a in known and b in known]
        if len(keep) < len(ok):
            rejected["naming a file this catalog does not have"] = len(ok) - len(keep)
        if rejected and not keep:
            why = ", ".join(f"{k} {reason}" for reason, k in sorted(rejected.items()))
            raise ReviewError(f"{path}: no pair imported: {sum(rejected.values())} rejected ({why})")
        distinct = len({(min(a, b), max(a, b)) for a, b, _ in keep})
        new = cat.add_verdicts(keep, source=f"file:{Path(path).resolve()}") if keep else 0
    return VerdictImport(new=new, already=distinct - new, rejected=rejected)


def list_verdicts(catalog: Catalog | str | os.PathLike) -> list[dict]:
    """Every verdict in the catalog (open or a path): a, b, verdict, source, created (ISO time, UTC)."""
    with opened(catalog) as cat:
        rows = cat.verdicts()
    return [{**v, "created": _dt.datetime.fromtimestamp(v["created"], tz=_dt.timezone.utc).isoformat(timespec="seconds")}
            for v in rows]


# -- the review job's result (the job itself is embeddr.jobs.review) ----------------------------

@dataclass
class Review:
    """A duplicate report with the policy's decisions and the savings; optionally written as HTML."""

    report: DuplicateReport
    decisions: list
    savings: dict
    policy: dict = field(default_factory=dict)
    html: HtmlReport | None = None

    def as_dict(self) -> dict:
        return {k: list(v) if isinstance(v, Iterator) else v for k, v in self.as_stream().items()}

    def as_stream(self) -> dict:
        """:meth:`as_dict` with groups, pairs and decisions as iterators (for :func:`embeddr.output.stream_json`)."""
        out = self.report.as_stream()
        out["policy"] = self.policy
        out["decisions"] = (d.as_dict() for d in self.decisions)
        out["savings"] = self.savings
        if self.html is not None:
            out["html"] = self.html.as_dict()
        return out
