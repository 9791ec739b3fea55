"""Shared CLI pieces: reusable options, error handling, output helpers."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from ..catalog import DEFAULT_DB
from ..errors import EmbeddrError

err_console = Console(stderr=True)

DbOpt = Annotated[Path, typer.Option("--db", help="Catalog database (SQLite); the FAISS index sits beside it as DB.faiss.", envvar="EMBEDDR_DB")]
DEFAULT_DB_PATH = Path(DEFAULT_DB)
ModelOpt = Annotated[Optional[str], typer.Option("--model", "-m", help="Model preset (see `embeddr models`) or a .onnx / TorchScript file. Default: the catalog's model, or sscd-distilled.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto (cuda, then mps, then cpu), cuda, cuda:N, mps or cpu.")]
PrecisionOpt = Annotated[str, typer.Option("--precision", help="auto (fp16 on GPU, fp32 on CPU), fp32, fp16 or bf16.")]
CheckpointOpt = Annotated[Optional[Path], typer.Option("--checkpoint", help="Local weights file (open_clip checkpoint, .onnx or TorchScript) instead of downloading.")]
ThresholdOpt = Annotated[Optional[float], typer.Option("--threshold", "-t", help="Score at or above which two images are duplicates. Default: the preset's calibrated threshold.")]
FormatOpt = Annotated[str, typer.Option("--format", "-f", help="table, json or csv.")]
OutputOpt = Annotated[Optional[Path], typer.Option("--output", "-o", help="Write to this file instead of standard output.")]


def handle_errors(func):
    """Turn embeddr's exceptions into one 'error: ...' line on stderr and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except EmbeddrError as exc:
            err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err_console.print("interrupted: everything committed so far is kept; run the same command again to resume")
            raise typer.Exit(130) from None

    return wrapper


def check_format(fmt: str, allowed: tuple[str, ...] = ("table", "json", "csv")) -> str:
    fmt = fmt.lower()
    if fmt not in allowed:
        raise EmbeddrError(f"--format {fmt!r} is not one of {', '.join(allowed)}")
    return fmt


def emit(text: str, output: Path | None) -> None:
    """Write ``text`` to ``output`` (atomically) or to stdout."""
    if output is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
    tmp.replace(output)
    err_console.print(f"wrote {output}")


def to_json(data) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False, default=str)
