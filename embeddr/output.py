"""Report stage: render a :class:`~embeddr.dupes.DuplicateReport` as a table, JSON or CSV."""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Iterator

from rich.console import Console
from rich.table import Table

from .catalog import shown as shown_path  # names that are not UTF-8 as \xNN, before the table is measured
from .dupes import DuplicateReport
from .fsutil import common_root


def human_bytes(n: int | None) -> str:
    """Binary units, named as such: 1 KiB = 1024 bytes, 1 MiB = 2^20, 1 GiB = 2^30."""
    if n is None:
        return "?"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


def to_json(report: DuplicateReport) -> str:
    return "".join(iter_json(report))


def iter_json(report: DuplicateReport) -> Iterator[str]:
    """:func:`to_json`'s text in pieces, a group or a pair at a time (the same text): what ``dupes --format
    json`` writes, so the text and the dicts of every pair never sit in memory at once."""
    fields = report.as_stream()
    return stream_json(fields)


_SURROGATE = re.compile("[\ud800-\udfff]")


def json_text(text: str) -> str:
    """JSON text made with ``ensure_ascii=False``, each lone surrogate in it written as a ``\\uXXXX`` escape.

    A file name that is not UTF-8 is held (Python's ``surrogateescape``) with each byte that does not
    decode, 0xNN, as the character U+DCNN: in JSON it appears as the escape ``\\udcNN``, which every
    JSON reader accepts (``json.loads`` gives the same string back, and ``os.fsencode`` of that gives the
    name's bytes). Left raw, such a character cannot be written as UTF-8 at all.
    """
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def stream_json(fields: dict, *, default=None) -> Iterator[str]:
    """``json.dumps(fields, indent=2, ensure_ascii=False, default=default)`` in pieces; values that are
    iterators (not lists, dicts or strings) are written as lists, an item at a time, without being gathered.
    Names that are not UTF-8 are escaped as :func:`json_text` says."""
    def dumps(value, indent: str) -> str:
        return json_text(json.dumps(value, indent=2, ensure_ascii=False, default=default)).replace("\n", "\n" + indent)

    if not fields:
        yield "{}"
        return
    yield "{"
    for n, (key, value) in enumerate(fields.items()):
        yield ("," if n else "") + "\n  " + json_text(json.dumps(key, ensure_ascii=False)) + ": "
        if isinstance(value, Iterator):
            first = True
            for item in value:
                yield ("[\n    " if first else ",\n    ") + dumps(item, "    ")
                first = False
            yield "[]" if first else "\n  ]"
        else:
            yield dumps(value, "  ")
    yield "\n}"


def to_csv(report: DuplicateReport) -> str:
    return "".join(iter_csv(report))


def iter_csv(report: DuplicateReport) -> Iterator[str]:
    """:func:`to_csv`'s text in pieces of up to 1,000 pairs."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    ids = any(p.a_id is not None or p.b_id is not None for p in report.pairs)  # a manifest scan: ids after the four columns
    writer.writerow(["a", "b", "score", "kind"] + (["a_id", "b_id"] if ids else []))
    for n, p in enumerate(report.pairs, start=1):
        writer.writerow([p.a, p.b, f"{p.score:.6f}", p.kind] + ([p.a_id or "", p.b_id or ""] if ids else []))
        if n % 1000 == 0:
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue()


def to_parquet(report: DuplicateReport, path: str | os.PathLike) -> None:
    """Every pair as a Parquet table (a, b, score, kind, a_id, b_id, group): pandas, polars and DuckDB read it.

    ``group`` is the id of the group both files ended in (null when they are in different groups).
    Written to a temporary file and renamed, so a reader never sees half of it.
    """
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        from .errors import EmbeddrError

        raise EmbeddrError('--format parquet needs pyarrow: pip install pyarrow (or "embeddr[cloud]")') from None
    group_of = {m.path: g.id for g in report.groups for m in g.members}
    pairs = list(report.pairs)
    table = pa.table({
        "a": pa.array([p.a for p in pairs], pa.string()),
        "b": pa.array([p.b for p in pairs], pa.string()),
        "score": pa.array([p.score for p in pairs], pa.float64()),
        "kind": pa.array([p.kind for p in pairs], pa.string()),
        "a_id": pa.array([p.a_id for p in pairs], pa.string()),
        "b_id": pa.array([p.b_id for p in pairs], pa.string()),
        "group": pa.array([group_of.get(p.a) if group_of.get(p.a) == group_of.get(p.b) else None for p in pairs], pa.int64()),
    }, metadata={"model": report.model, "threshold": str(report.threshold), "score": report.score})
    path = os.fspath(path)
    tmp = f"{path}.tmp{os.getpid()}"
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def to_table(report: DuplicateReport, *, width: int | None = None, max_groups: int | None = None) -> str:
    console = Console(file=io.StringIO(), width=width or 120, record=True, color_system=None, markup=False, highlight=False)
    dup_files = sum(len(g.members) - 1 for g in report.groups)
    console.print(
        f"model {report.model} · score {report.score} · threshold {report.threshold:g} · "
        f"{report.files} files · {len(report.groups)} groups · {dup_files} duplicate files · {len(report.pairs)} pairs"
    )
    if report.extra.get("search") == "approximate":
        x = report.extra
        console.print(f"approximate search (k-means self-join, {x.get('nlist')} lists, {x.get('nprobe')} probed): "
                      f"estimated pair recall {x.get('pair_recall_estimate', float('nan')):.4f}, loose pairs "
                      f"{x.get('loose_pair_recall_estimate', float('nan')):.4f}"
                      + (f", the far look's candidates {x['far_pair_recall_estimate']:.4f}" if "far_pair_recall_estimate" in x else "")
                      + f" (exact check of {x.get('recall_sample_rows')} files); --search exact for the exact search")
    if not report.groups:
        console.print("no duplicates at this threshold")
        return console.export_text()
    common = common_root(m.path for g in report.groups for m in g.members)
    table = Table(show_lines=False, expand=False)
    table.add_column("group", justify="right")
    table.add_column("min score", justify="right")
    table.add_column(f"file (under {shown_path(common)})" if common else "file", overflow="fold")
    table.add_column("size", justify="right")
    table.add_column("w x h", justify="right")
    shown = report.groups if max_groups is None else report.groups[:max_groups]
    for g in shown:
        for i, m in enumerate(g.members):
            rel = os.path.relpath(m.path, common) if common else m.path
            if m.item_id is not None:
                rel = f"{rel}  [{m.item_id}]"
            table.add_row(str(g.id) if i == 0 else "", f"{g.min_score:.3f}" if i == 0 else "", shown_path(rel),
                          human_bytes(m.size), f"{m.width}x{m.height}", end_section=i == len(g.members) - 1)
    console.print(table)
    if max_groups is not None and len(report.groups) > max_groups:
        console.print(f"... {len(report.groups) - max_groups} more groups (use --format json for all)")
    return console.export_text()


def render_chunks(report: DuplicateReport, fmt: str, *, max_groups: int | None = None) -> Iterator[str]:
    """:func:`render` in pieces (JSON and CSV are produced as they are written)."""
    if fmt == "table":
        return iter([to_table(report, max_groups=max_groups)])
    return {"json": iter_json, "csv": iter_csv}[fmt](report)


def render(report: DuplicateReport, fmt: str, *, max_groups: int | None = None) -> str:
    """``max_groups`` limits the table only; JSON and CSV always hold everything."""
    if fmt == "table":
        return to_table(report, max_groups=max_groups)
    return {"json": to_json, "csv": to_csv}[fmt](report)
