"""Savings: what acting on the duplicates would reclaim, per top-level folder and overall.

For each top-level folder (the first path component under the common root of all files, or
under each of the given ``roots``) and overall:

* ``files``              ok files in the catalog (all of them, not only those in groups)
* ``bytes``              their total size
* ``duplicate_files``    files the policy marks as removable duplicates (never canonical or protected)
* ``duplication_rate``   duplicate_files / files (0 when there are no files)
* ``bytes_reclaimable``  total size of those duplicates, less those whose bytes stay on disk anyway: a
                         duplicate with another hard link (``st_nlink > 1``, in or outside the scanned
                         folders) frees nothing when it is moved or deleted, and one that a catalogued
                         symlink points to is left in place by ``apply`` (``Decision.links``)
* ``monthly_cost``       bytes_reclaimable in GB (2^30 bytes, as cloud storage bills a GB-month)
                         times ``price_per_gb_month``, in ``currency``

Files come from ``report.file_rows`` when a caller filled it, else from ``catalog`` if given (streamed from
the database: nothing is held per file, so a million files cost no more memory than a hundred), else only the
group members are known (``files`` then counts those).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence

from .catalog import Catalog, FileRow
from .dupes import DuplicateReport
from .errors import PolicyError
from .fsutil import common_root
from .policy import Decision

GB = 1 << 30


def _common_root(paths: Iterable[str]) -> str:
    """:func:`embeddr.fsutil.common_root` over a stream of paths, holding one path at a time."""
    root: str | None = None
    in_paths = False  # the root is itself one of the paths (a lone file: its folder is the root)
    for p in paths:
        if root is None:
            root = os.path.commonpath([p])
            in_paths = root == p
        elif p == root:
            in_paths = True
        elif not p.startswith(root.rstrip(os.sep) + os.sep):  # the common case (p under root) costs nothing
            new = os.path.commonpath([root, p])
            if new != root:
                root, in_paths = new, new == p
    if root is None:
        return ""
    return os.path.dirname(root) if in_paths else root


def _all_files(report: DuplicateReport, catalog: Catalog | None) -> Callable[[], Iterable[tuple[str, int]]]:
    """A function giving (path, size) of every file counted, afresh each call (a catalog is read twice,
    streamed, rather than held)."""
    rows: Iterable[FileRow] | None = getattr(report, "file_rows", None) or None
    if rows is None and catalog is not None:
        return catalog.path_sizes
    if rows is None:
        rows = (m for g in report.groups for m in g.members)
    seen: dict[str, int] = {}
    for r in rows:
        seen[r.path] = r.size or 0
    listed = sorted(seen.items())
    return lambda: listed


def _hard_linked(path: str) -> bool:
    """Whether the file has another hard link (its bytes stay on disk when this path goes)."""
    if "://" in path:
        return False
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_nlink > 1


def money(x: float, currency: str = "") -> str:
    """A cost as people read it: two decimals with thousands separators; ``<0.01`` for a tiny positive cost.

    The JSON outputs keep the exact figure; this is for tables and the HTML report only.
    """
    x = float(x)
    text = "<0.01" if 0 < x < 0.005 else f"{x:,.2f}"
    return f"{text} {currency}" if currency else text


def _folder_of(roots: Sequence[str]):
    """path -> (label, absolute folder) of its top-level folder under the deepest matching root."""
    roots = sorted({os.path.abspath(r).rstrip(os.sep) or os.sep for r in roots}, key=len, reverse=True)
    multi = len(roots) > 1
    base = os.path.commonpath(roots) if multi else ""

    def folder(path: str) -> tuple[str, str]:
        for root in roots:
            prefix = root if root.endswith(os.sep) else root + os.sep
            if path.startswith(prefix):
                rel = path[len(prefix):]
                head = rel.split(os.sep, 1)[0] if os.sep in rel else "."
                absolute = os.path.join(root, head) if head != "." else root
                label = os.path.relpath(absolute, base) if multi else head
                return label, absolute
        return OTHER, ""

    return folder


def _row(label: str, absolute: str, files: int, nbytes: int, dups: int, reclaim: int, price: float) -> dict:
    return {
        "folder": label,
        "path": absolute,
        "files": files,
        "bytes": nbytes,
        "duplicate_files": dups,
        "duplication_rate": round(dups / files, 6) if files else 0.0,
        "bytes_reclaimable": reclaim,
        "monthly_cost": round(reclaim / GB * price, 6),
    }


def savings(report: DuplicateReport, decisions: list[Decision], *, roots: list[str] | None = None,
            price_per_gb_month: float = 0.023, currency: str = "USD", catalog: Catalog | None = None) -> dict:
    """Files, duplicates, duplication rate, reclaimable bytes and monthly cost per top-level folder and overall.

    Returns a JSON-ready dict ``{"overall": {...}, "folders": [{...}], "price_per_gb_month": ..., "currency": ...}``;
    folders are sorted by bytes reclaimable (most first), then name.
    """
    if price_per_gb_month < 0:
        raise PolicyError(f"price per GB-month must be >= 0, not {price_per_gb_month}")
    files = _all_files(report, catalog)
    dup_size: dict[str, int] = {}
    for d in decisions:
        for row in d.duplicates:
            dup_size[row.path] = row.size or 0
    linked = {p for d in decisions for p in d.links}
    # removing it frees nothing (another hard link keeps the bytes), or apply leaves it (a symlink points to it)
    stays = {p for p in dup_size if p in linked or _hard_linked(p)}
    missing = dict(dup_size)  # duplicates missing from the file list still count

    def every_file() -> Iterator[tuple[str, int]]:
        for path, size in files():
            missing.pop(path, None)
            yield path, size
        yield from sorted(missing.items())

    if roots:
        local_folder = _folder_of(list(roots))
    else:
        common = _common_root(p for p, _ in every_file() if "://" not in p)
        local_folder = _folder_of([common]) if common else (lambda p: (OTHER, ""))
        missing = dict(dup_size)

    def folder(path: str) -> tuple[str, str]:  # a URL (manifest scan) counts under its scheme://host
        if "://" in path:
            scheme, _, rest = path.partition("://")
            site = f"{scheme}://{rest.split('/', 1)[0]}"
            return site, site
        return local_folder(path)
    agg: dict[tuple[str, str], list[int]] = {}
    for path, size in every_file():
        key = folder(path)
        a = agg.setdefault(key, [0, 0, 0, 0])
        a[0] += 1
        a[1] += size
        if path in dup_size:
            a[2] += 1
            a[3] += 0 if path in stays else size
    folders = [_row(label, absolute, *a, price_per_gb_month) for (label, absolute), a in agg.items()]
    folders.sort(key=lambda r: (-r["bytes_reclaimable"], r["folder"]))
    total = [sum(a[i] for a in agg.values()) for i in range(4)]
    overall = _row("(all)", "", *total, price_per_gb_month)
    overall.pop("folder")
    overall.pop("path")
    return {"overall": overall, "folders": folders, "price_per_gb_month": price_per_gb_month, "currency": currency}
