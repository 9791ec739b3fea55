"""The ``embeddr`` command line: a thin typer layer over :mod:`embeddr.api`.

Each command parses options, calls one API function, and formats the result. Library
exceptions become one clear ``error:`` line and exit code 2 (see :func:`.common.handle_errors`).
Commands live in one module per area, each with a ``register(app)`` function.
"""

from __future__ import annotations

import typer

from .. import __version__
from . import act, core, ingest, quality, review
from .common import EmbeddrGroup

app = typer.Typer(
    cls=EmbeddrGroup,
    name="embeddr",
    help="Find near-duplicate images with deep embeddings: scan folders into a catalog, list duplicate groups, "
    "act on them safely, and check new files at ingest.\n\nExample: embeddr scan photos/ && embeddr dupes",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)



def _version(value: bool) -> None:
    if value:
        typer.echo(f"embeddr {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(version: bool = typer.Option(False, "--version", "-V", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Find near-duplicate images with deep embeddings: scan folders into a catalog, list duplicate groups,
    act on them safely, and check new files at ingest.

    Example: embeddr scan photos/ && embeddr dupes
    """


for module in (core, quality, act, ingest, review):
    module.register(app)


def main() -> None:  # console script entry point
    app()
