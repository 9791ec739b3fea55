"""Quality commands: bench make, eval, tune (issue 3). Filled in by the quality work."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    return None
