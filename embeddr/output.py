"""Report stage: render a :class:`~embeddr.dupes.DuplicateReport` as a table, JSON or CSV."""

from __future__ import annotations

import csv
import io
import json
import os

from rich.console import Console
from rich.table import Table

from .dupes import DuplicateReport
from .fsutil import common_root


def human_bytes(n: int | None) -> str:
    if n is None:
        return "?"
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


def to_json(report: DuplicateReport) -> str:
    return json.dumps(report.as_dict(), indent=2, ensure_ascii=False)


def to_csv(report: DuplicateReport) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["a", "b", "score", "kind"])
    for p in report.pairs:
        writer.writerow([p.a, p.b, f"{p.score:.6f}", p.kind])
    return buf.getvalue()


def to_table(report: DuplicateReport, *, width: int | None = None, max_groups: int | None = None) -> str:
    console = Console(file=io.StringIO(), width=width or 120, record=True, color_system=None)
    dup_files = sum(len(g.members) - 1 for g in report.groups)
    console.print(
        f"model {report.model} · score {report.score} · threshold {report.threshold:g} · "
        f"{report.files} files · {len(report.groups)} groups · {dup_files} duplicate files · {len(report.pairs)} pairs"
    )
    if not report.groups:
        console.print("no duplicates at this threshold")
        return console.export_text()
    common = common_root(m.path for g in report.groups for m in g.members)
    table = Table(show_lines=False, expand=False)
    table.add_column("group", justify="right")
    table.add_column("min score", justify="right")
    table.add_column(f"file (under {common})" if common else "file", overflow="fold")
    table.add_column("size", justify="right")
    table.add_column("w x h", justify="right")
    shown = report.groups if max_groups is None else report.groups[:max_groups]
    for g in shown:
        for i, m in enumerate(g.members):
            rel = os.path.relpath(m.path, common) if common else m.path
            table.add_row(str(g.id) if i == 0 else "", f"{g.min_score:.3f}" if i == 0 else "", rel,
                          human_bytes(m.size), f"{m.width}x{m.height}", end_section=i == len(g.members) - 1)
    console.print(table)
    if max_groups is not None and len(report.groups) > max_groups:
        console.print(f"... {len(report.groups) - max_groups} more groups (use --format json for all)")
    return console.export_text()


def render(report: DuplicateReport, fmt: str, *, max_groups: int | None = None) -> str:
    """``max_groups`` limits the table only; JSON and CSV always hold everything."""
    if fmt == "table":
        return to_table(report, max_groups=max_groups)
    return {"json": to_json, "csv": to_csv}[fmt](report)
