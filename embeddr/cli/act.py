"""Acting on duplicates: apply (with a retention policy), undo, savings (issue 4)."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from .. import actions, api
from ..catalog import shown
from ..fsutil import common_root
from ..output import human_bytes
from ..savings import money
from .common import (DEFAULT_DB_PATH, Action, CurrencyOpt, DbOpt, FmtOpt, KeepInOpt, PolicyOpt, PreferOpt, PriceOpt,
                     RuleOpt, ThresholdOpt, WaitOpt, build_policy, check_format, emit, emit_chunks, handle_errors, say, to_json,
                     value_of)

ActionOpt = Annotated[Action, typer.Option("--action", "-a", help="report (list only), move (to --quarantine), hardlink, symlink or delete (to the journal's trash).")]


def _console() -> Console:
    return Console(file=io.StringIO(), width=140, record=True, color_system=None, markup=False, highlight=False)


def _rel(path: str, root: str) -> str:
    """``path`` under ``root`` as shown in a table (names that are not UTF-8 as \\xNN, before rich measures them)."""
    return shown(os.path.relpath(path, root) if root else path)


def savings_table(sv: dict, console: Console) -> None:
    cur = sv["currency"]
    table = Table(title=f"savings at {sv['price_per_gb_month']:g} {cur} per GB-month", title_justify="left")
    for col in ("folder", "files", "duplicates", "rate", "reclaimable", f"{cur}/month"):
        table.add_column(col, justify="left" if col == "folder" else "right")
    for row in [*sv["folders"], {**sv["overall"], "folder": "overall"}]:
        table.add_row(shown(row["folder"]), str(row["files"]), str(row["duplicate_files"]), f"{row['duplication_rate']:.1%}",
                      human_bytes(row["bytes_reclaimable"]), money(row["monthly_cost"]),
                      end_section=row["folder"] == "overall" or row is sv["folders"][-1])
    console.print(table)


def render_apply(result: actions.ApplyResult) -> str:
    console = _console()
    groups = result.extra.get("groups", [])
    paths = [p for g in groups for p in (g["canonical"], *g["duplicates"], *g["protected"])]
    root = common_root(paths)
    mode = "dry run: nothing touched (add --yes to act)" if result.dry_run else "applied"
    if result.action == "report":
        mode = "report only: nothing touched"
    elif not result.outcomes:
        mode = "nothing to do: no duplicate copy to act on (no journal written)"
    console.print(f"action {result.action} · {mode} · model {result.extra.get('model')} · threshold "
                  f"{result.extra.get('threshold', 0):g} · {len(groups)} groups · rules {', '.join(result.extra.get('policy', {}).get('rules', []))}")
    outcome_of = {o.step.path: o for o in result.outcomes}
    if groups:
        table = Table(show_lines=False)
        table.add_column("group", justify="right")
        table.add_column("role")
        table.add_column(f"file (under {shown(root)})" if root else "file", overflow="fold")
        table.add_column("status")
        table.add_column("why", overflow="fold")
        for g in groups:
            rows = [("keep", g["canonical"], "", shown(g["reason"]))]
            rows += [("protected", p, "", "under a --keep-in folder") for p in g["protected"]]
            for d in g["duplicates"]:
                o = outcome_of.get(d)
                rows.append(("duplicate", d, o.status if o else "-", shown(o.detail) if o else ""))
            for i, (role, path, status, why) in enumerate(rows):
                table.add_row(str(g["group"]) if i == 0 else "", role, _rel(path, root), status, why, end_section=i == len(rows) - 1)
        console.print(table)
    else:
        console.print("no duplicates at this threshold")
    if "savings" in result.extra:
        savings_table(result.extra["savings"], console)
    counts = ", ".join(f"{n} {k}" for k, n in sorted(result.counts.items())) or "nothing to do"
    console.print(f"steps: {counts}")
    if result.journal:
        console.print(f"journal: {result.journal}\nundo with: embeddr undo {result.journal}")
    return console.export_text()


def register(app: typer.Typer) -> None:
    @app.command("apply")
    @handle_errors(writes=lambda kw: kw.get("yes") and value_of(kw.get("action")) != "report")
    def apply_cmd(
        db: DbOpt = DEFAULT_DB_PATH,
        action: ActionOpt = "report",
        quarantine: Annotated[Optional[Path], typer.Option("--quarantine", help="Folder for --action move; files keep their path relative to the groups' common root.")] = None,
        journal: Annotated[Optional[Path], typer.Option("--journal", "-j", help="Journal to write (new file). Default: embeddr-journal-<UTC time>.jsonl beside the catalog.")] = None,
        yes: Annotated[bool, typer.Option("--yes", "-y", help="Act. Without it, only print the plan.")] = False,
        really_delete: Annotated[bool, typer.Option("--really-delete", help="Needed on top of --yes for --action delete.")] = False,
        policy: PolicyOpt = None,
        rule: RuleOpt = None,
        keep_in: KeepInOpt = None,
        prefer: PreferOpt = None,
        threshold: ThresholdOpt = None,
        fmt: FmtOpt = "table",
        price: PriceOpt = 0.023,
        currency: CurrencyOpt = "USD",
        wait: WaitOpt = False,
    ):
        """Pick the canonical copy of each duplicate group and act on the other copies, safely.

        Dry run by default: prints each group's canonical with the rule that chose it, the plan and
        the savings. --yes acts: every act is journaled (fsynced) before it happens, each file's
        content hash is checked against the catalog first (changed files are skipped and reported),
        canonical and --keep-in files are never touched. delete and link actions keep the original
        bytes in JOURNAL.trash; `embeddr undo JOURNAL` puts everything back.
        Default rules: most-pixels, lossless, largest-file, oldest, shortest-path. most-pixels counts
        the picture inside a uniform border; pictures within 5% of each other are the same size, and
        then the larger whole image wins, except that a border never beats a copy without one.
        A copy that a scanned symlink points to, or that has a second hard link, is kept first
        (linked); move and delete never break such a symlink (that copy is skipped), and savings do
        not count bytes another hard link keeps on disk.

        Example: embeddr apply --db photos.db --action move --quarantine ~/dupes --keep-in ~/photos/masters --yes
        """
        fmt = check_format(fmt, ("table", "json"))
        pol = build_policy(policy, rule, keep_in, prefer)
        result = api.apply_duplicates(db, action=value_of(action), policy=pol, quarantine=quarantine, journal=journal, yes=yes,
                                          really_delete=really_delete, threshold=threshold, price_per_gb_month=price,
                                          currency=currency, wait=wait)
        if fmt == "json":  # written a step at a time (a plan of a million files is never one string)
            from ..output import stream_json

            emit_chunks(stream_json(result.as_stream(), default=str), None)
        else:
            emit(render_apply(result), None)
        failed = result.counts.get("failed", 0)
        if failed:
            say(f"{failed} act(s) failed; the journal says which; `embeddr undo {result.journal}` restores")
            raise typer.Exit(1)

    @app.command("undo")
    @handle_errors
    def undo_cmd(
        journal: Annotated[Path, typer.Argument(help="Journal written by `embeddr apply --yes`.")],
        db: Annotated[Optional[Path], typer.Option("--db", help="Catalog to mark restored files ok in. Default: the one the journal names.")] = None,
        fmt: FmtOpt = "table",
        wait: WaitOpt = False,
    ):
        """Put back every file an apply touched, newest first, content verified by hash, mtime restored.

        Works after a crash mid-apply and is harmless to run twice. Restored files are marked ok
        again in the catalog the journal names (or --db), so dupes and apply list them at once, also
        when a scan ran in between; a file the catalog no longer knows is picked up by the next scan.
        A file whose path now holds other content is left alone and reported.

        Example: embeddr undo embeddr-journal-20250101T120000Z.jsonl
        """
        fmt = check_format(fmt, ("table", "json"))
        result = actions.undo(journal, catalog=db, wait=wait)
        if fmt == "json":
            emit(to_json(result.as_dict()), None)
        else:
            counts = ", ".join(f"{n} {k}" for k, n in sorted(result.counts.items())) or "nothing to undo"
            lines = [f"undo {result.journal}: {counts}"]
            lines += [f"  {p['path']}: {p['result']}" for p in result.problems]
            emit("\n".join(lines), None)
        if result.problems:
            raise typer.Exit(1)

    @app.command("savings")
    @handle_errors(writes=False)
    def savings_cmd(
        db: DbOpt = DEFAULT_DB_PATH,
        policy: PolicyOpt = None,
        rule: RuleOpt = None,
        keep_in: KeepInOpt = None,
        prefer: PreferOpt = None,
        threshold: ThresholdOpt = None,
        fmt: FmtOpt = "table",
        price: PriceOpt = 0.023,
        currency: CurrencyOpt = "USD",
    ):
        """What removing the duplicates would save, per top-level folder and overall.

        Files, duplicate files (copies the policy would not keep), duplication rate, bytes reclaimable
        and the monthly cost of those bytes at --price-per-gb (GB = 2^30 bytes) in --currency.

        Example: embeddr savings --db photos.db --price-per-gb 0.02 --currency EUR --format json
        """
        fmt = check_format(fmt, ("table", "json"))
        pol = build_policy(policy, rule, keep_in, prefer)
        result = api.apply_duplicates(db, action="report", policy=pol, threshold=threshold,
                                          price_per_gb_month=price, currency=currency)
        sv = result.extra["savings"]
        if fmt == "json":
            emit(to_json(sv), None)
            return
        console = _console()
        savings_table(sv, console)
        emit(console.export_text(), None)
