"""Ingest gate: check, serve (issue 5)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    return None
