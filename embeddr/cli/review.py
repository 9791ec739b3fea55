"""Review commands: ``report`` (HTML / JSON / table with savings) and ``verdicts import|list``."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

# the retention-policy and price options are shared with `embeddr apply` (same names, same meaning)
from .act import savings_table as _savings_table
from .common import (DEFAULT_DB_PATH, CurrencyOpt, DbOpt, KeepInOpt, OutputOpt, PolicyOpt, PreferOpt, PriceOpt,
                     RuleOpt, ThresholdOpt, TableOrJson, WaitOpt, build_policy, check_format, emit, emit_chunks, handle_errors, say,
                     to_json)


def savings_table(savings: dict, width: int = 120) -> str:
    console = Console(file=io.StringIO(), width=width, record=True, color_system=None, markup=False, highlight=False)
    _savings_table(savings, console)
    return console.export_text()


def register(app: typer.Typer) -> None:
    @app.command()
    @handle_errors(writes=lambda kw: kw.get("html") is not None)
    def report(
        html: Annotated[Optional[Path], typer.Option("--html", help="Write the self-contained HTML review report into this folder (index.html, pages/, thumbs/).")] = None,
        db: DbOpt = DEFAULT_DB_PATH,
        threshold: ThresholdOpt = None,
        policy: PolicyOpt = None,
        keep_in: KeepInOpt = None,
        prefer: PreferOpt = None,
        rule: RuleOpt = None,
        price_per_gb: PriceOpt = 0.023,
        currency: CurrencyOpt = "USD",
        fmt: Annotated[TableOrJson, typer.Option("--format", "-f", help="What to print: table (savings) or json (groups, decisions, savings).")] = "table",
        output: OutputOpt = None,
        thumb_size: Annotated[int, typer.Option("--thumb-size", min=16, help="Long side of the thumbnails, in pixels.")] = 256,
        page_size: Annotated[int, typer.Option("--page-size", min=1, help="Groups per page of the HTML report.")] = 50,
        open_: Annotated[bool, typer.Option("--open", help="Open the HTML report in the default browser.")] = False,
    ):
        """Review duplicates: savings per top-level folder, and a static HTML report to check groups by eye.

        The HTML report opens from disk (no server, no network): thumbnails side by side, scores,
        sizes, dimensions, formats, the copy the retention policy keeps and why; most borderline
        groups first, 50 per page. Tick 'not a duplicate' on groups or copies, download
        verdicts.json and import it with `embeddr verdicts import`. Savings count the copies the
        policy would act on: files, duplicate files, duplication rate, bytes reclaimable and the
        monthly cost at --price-per-gb (GB = 2^30 bytes). --format json prints groups, pairs,
        decisions and savings.

        Example: embeddr report --db photos.db --html review/ --keep-in ~/photos/masters --price-per-gb 0.02 --currency EUR
        """
        from .. import api

        fmt = check_format(fmt, ("table", "json"))
        result = api.review(db, threshold=threshold, policy=build_policy(policy, rule, keep_in, prefer),
                                   price_per_gb_month=price_per_gb, currency=currency, html_dir=html,
                                   thumb_size=thumb_size, page_size=page_size)
        if fmt == "json":
            from ..output import stream_json

            emit_chunks(stream_json(result.as_stream(), default=str), output)  # a group, pair, decision at a time
        else:
            emit(savings_table(result.savings), output)
        if result.html is not None:
            h = result.html
            say(f"wrote {h.index} ({h.groups} groups on {h.pages} page(s), {h.thumbnails} thumbnails"
                + (f", {h.thumbnail_errors} files without preview" if h.thumbnail_errors else "") + ")")
            if open_:
                import webbrowser

                webbrowser.open(h.index.resolve().as_uri())
        elif open_:
            say("--open needs --html OUT")

    verdicts = typer.Typer(name="verdicts", help="Reviewer verdicts (not a duplicate) that every later dupes and apply honour.\n\nExample: embeddr verdicts import verdicts.json --db photos.db",
                           no_args_is_help=True, rich_markup_mode=None)
    app.add_typer(verdicts)

    @verdicts.command("import")
    @handle_errors
    def import_(
        file: Annotated[Path, typer.Argument(help="verdicts.json downloaded from the HTML report.")],
        db: DbOpt = DEFAULT_DB_PATH,
        wait: WaitOpt = False,
    ):
        """Store the 'not a duplicate' verdicts of a verdicts.json file in the catalog.

        The file is validated first; nothing is stored from an invalid file. Those pairs are
        never grouped again by `dupes`, and `apply` never acts on them. Importing twice is harmless:
        the second import reports 0 new pairs and how many were already present.

        Example: embeddr verdicts import ~/Downloads/verdicts.json --db photos.db
        """
        from ..review import import_verdicts

        got = import_verdicts(db, file, wait=wait)
        say(f"imported {got.new} new not-duplicate pair(s) from {file} into {db}"
            + (f" ({got.already} already present)" if got.already else ""))
        if got.rejected:
            why = ", ".join(f"{n} {reason}" for reason, n in sorted(got.rejected.items()))
            say(f"rejected {sum(got.rejected.values())} pair(s): {why}")

    @verdicts.command("list")
    @handle_errors(writes=False)
    def list_(
        db: DbOpt = DEFAULT_DB_PATH,
        json_out: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
    ):
        """List the verdicts stored in the catalog (pair, verdict, where it came from, when).

        Example: embeddr verdicts list --db photos.db --json
        """
        from ..review import list_verdicts

        rows = list_verdicts(db)
        if json_out:
            emit(to_json(rows), None)
            return
        if not rows:
            emit("no verdicts", None)
            return
        emit("\n".join(f"{r['verdict']}  {r['a']}  {r['b']}  ({r['source'] or 'unknown source'}, {r['created']})" for r in rows), None)
