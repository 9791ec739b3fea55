"""Acting on duplicates: apply, undo, report, verdicts (issue 4)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    return None
