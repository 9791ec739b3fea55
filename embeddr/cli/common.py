"""Shared CLI pieces: reusable options, error handling, output helpers."""

from __future__ import annotations

import functools
import json
import re
import sys
from contextlib import nullcontext
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperGroup

try:  # typer >= 0.2x carries its own copy of click; older ones use click itself
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - depends on the installed typer
    from click import exceptions as click_exceptions


from ..catalog import DEFAULT_DB, shown
from ..errors import EmbeddrError
from ..fsutil import atomic_write
from ..policy import RULES, Policy

# markup=False: a file name such as "IMG_0001 [copy].jpg" is printed as it is, never read as Rich markup
err_console = Console(stderr=True, markup=False, highlight=False)


def working(message: str):
    """A spinner on a terminal's stderr while a long step runs without other output (``dupes``' looks can take
    minutes on a CPU); nothing when stderr is not a terminal (pipes, logs, tests)."""
    return err_console.status(message) if err_console.is_terminal else nullcontext()


def say(*parts: str | Text, style: str | None = None) -> None:
    """Print on stderr as plain text: names and paths from the user or the disk are never read as markup."""
    err_console.print(Text.assemble(*parts, style=style or ""), highlight=False, soft_wrap=True)


def print_error(message: str) -> None:
    say(("error:", "red"), " ", str(message))


# -- closed value sets: typer validates them at the boundary ------------------------------------
class Score(str, Enum):
    raw = "raw"
    normalized = "normalized"
    normalised = "normalised"  # the British spelling, accepted as the same score


def score_name(score: Score | str | None) -> str | None:
    """The library's name of a ``--score`` value (``normalised`` is ``normalized``)."""
    if score is None:
        return None
    value = score.value if isinstance(score, Enum) else str(score)
    return "normalized" if value == "normalised" else value


class Precision(str, Enum):
    auto = "auto"
    fp32 = "fp32"
    fp16 = "fp16"
    bf16 = "bf16"


class Format(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"
    parquet = "parquet"  # dupes only (a binary file: needs --output)


class TextFormat(str, Enum):  # what check prints: the text formats (no parquet)
    table = "table"
    json = "json"
    csv = "csv"


class TableOrJson(str, Enum):
    table = "table"
    json = "json"


class Action(str, Enum):
    report = "report"
    move = "move"
    hardlink = "hardlink"
    symlink = "symlink"
    delete = "delete"


class Hash(str, Enum):
    phash = "phash"
    dhash = "dhash"


Rule = Enum("Rule", {r.replace("-", "_"): r for r in RULES}, type=str)  # the retention rules (embeddr.policy.RULES)

_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def _device(value: str) -> str:
    if not _DEVICE.match(value):
        raise typer.BadParameter(f"{value!r} is not one of auto, cpu, cuda, cuda:N, mps")
    return value


def _fraction(why: str):
    """An option callback: the value (or None) must lie in (0, 1]; ``why`` ends the error line."""
    def check(value: float | None) -> float | None:
        if value is not None and not 0.0 < value <= 1.0:
            raise typer.BadParameter(f"{value:g} is outside (0, 1]: {why}")
        return value
    return check


_threshold = _fraction("scores are cosine similarities (1 = the same picture); a useful duplicate threshold lies "
                       "between about 0.5 and 1")
precision_target = _fraction("a precision is a fraction of the pairs found")


def value_of(choice):
    """The plain string of an enum option (typer hands enums to the command)."""
    return choice.value if isinstance(choice, Enum) else choice


DbOpt = Annotated[Path, typer.Option("--db", help="Catalog database (SQLite); the FAISS index sits beside it as DB.faiss.", envvar="EMBEDDR_DB")]
DEFAULT_DB_PATH = Path(DEFAULT_DB)
ModelOpt = Annotated[Optional[str], typer.Option("--model", "-m", help="Model preset (see `embeddr models`) or a .onnx / TorchScript file. Default: the catalog's model, or sscd-distilled.")]
DeviceOpt = Annotated[str, typer.Option("--device", callback=_device, help="auto (cuda, then mps, then cpu), cuda, cuda:N, mps or cpu.")]
PrecisionOpt = Annotated[Precision, typer.Option("--precision", help="auto (fp16 on GPU, fp32 on CPU), fp32, fp16 or bf16.")]
CheckpointOpt = Annotated[Optional[Path], typer.Option("--checkpoint", exists=True, dir_okay=False, help="Local weights file (open_clip checkpoint, .onnx or TorchScript) instead of downloading.")]
ThresholdOpt = Annotated[Optional[float], typer.Option("--threshold", "-t", callback=_threshold, help="Score at or above which two images are duplicates, in (0, 1]. Default: the preset's calibrated threshold.")]
ScoreOpt = Annotated[Optional[Score], typer.Option("--score", help="raw (cosine) or normalized (neighbourhood-corrected; also spelt normalised). Default: the preset's.")]
FormatOpt = Annotated[Format, typer.Option("--format", "-f", help="table, json, csv, or parquet (a binary file: needs --output).")]
TextFormatOpt = Annotated[TextFormat, typer.Option("--format", "-f", help="table, json or csv.")]
FmtOpt = Annotated[TableOrJson, typer.Option("--format", "-f", help="table or json.")]
WaitOpt = Annotated[bool, typer.Option("--wait", help="If another embeddr command is writing to the catalog, wait for it to finish instead of refusing.")]
OutputOpt = Annotated[Optional[Path], typer.Option("--output", "-o", help="Write to this file instead of standard output.")]

# The retention policy and the price: the same options for apply, savings and report.
PolicyOpt = Annotated[Optional[Path], typer.Option("--policy", exists=True, dir_okay=False, help="TOML file with [policy] rules = [...], keep_in = [...], prefer = [...].")]
RuleOpt = Annotated[Optional[list[Rule]], typer.Option("--rule", "-r", help=f"Retention rule, in order; repeatable; replaces the policy file's rules. One of: {', '.join(RULES)}.")]
KeepInOpt = Annotated[Optional[list[Path]], typer.Option("--keep-in", exists=True, file_okay=False, help="Protected reference folder (must exist): its files are kept (canonical first) and never touched; repeatable.")]
PreferOpt = Annotated[Optional[list[Path]], typer.Option("--prefer", exists=True, file_okay=False, help="Preferred folder (must exist): its copies win (the 'prefer' rule, put first unless --rule/--policy place it); repeatable, earlier wins.")]
PriceOpt = Annotated[float, typer.Option("--price-per-gb", min=0, help="Storage price per GB-month (GB = 2^30 bytes) for the savings.")]
CurrencyOpt = Annotated[str, typer.Option("--currency", help="Currency of --price-per-gb.")]


def build_policy(policy_file: Path | None, rules: list | None, keep_in: list[Path] | None, prefer: list[Path] | None) -> Policy:
    """The policy of the shared policy options (file, then --rule/--keep-in/--prefer on top)."""
    base = Policy.from_toml(policy_file) if policy_file else Policy()
    return base.with_overrides(rules=[value_of(r) for r in rules] if rules else None, keep_in=keep_in or (),
                               prefer=prefer or ())


_NO_ARGS = getattr(click_exceptions, "NoArgsIsHelpError", ())  # click >= 8.2
_ABORT = getattr(click_exceptions, "Abort", ())  # typer's own click has none: an unknown name here would turn every bug into AttributeError


class EmbeddrGroup(TyperGroup):
    """The command group: a usage error (unknown option, a value outside its set or range, a missing
    folder) is one ``error:`` line on stderr and exit status 2, like every other error."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _NO_ARGS as exc:  # bare `embeddr` / `embeddr bench`: the help
            exc.show()
            sys.exit(exc.exit_code)
        except click_exceptions.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else "embeddr"
            message = exc.format_message().replace("Value error, ", "")  # typer passes on pydantic's prefix
            print_error(f"{message} (see `{where} --help`)")
            sys.exit(2)
        except click_exceptions.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except _ABORT:
            say("aborted")
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


INTERRUPTED_WRITER = "interrupted: everything committed so far is kept; run the same command again to resume"
INTERRUPTED_READER = "interrupted: nothing was changed (this command writes nothing)"


def handle_errors(func=None, *, writes=True):
    """Turn embeddr's exceptions into one 'error: ...' line on stderr and exit code 2, and Ctrl-C into exit
    130 with one line that says what is left: ``writes`` (a bool, or a function of the command's keyword
    arguments, e.g. apply writes only with --yes) picks the line of a command that writes or of one that
    only reads. Use as ``@handle_errors`` or ``@handle_errors(writes=False)``."""
    if func is None:
        return functools.partial(handle_errors, writes=writes)

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except EmbeddrError as exc:
            print_error(shown(str(exc)))
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            wrote = writes(kwargs) if callable(writes) else writes
            say(INTERRUPTED_WRITER if wrote else INTERRUPTED_READER)
            raise typer.Exit(130) from None

    return wrapper


def check_format(fmt, allowed: tuple[str, ...] = ("table", "json", "csv")) -> str:
    fmt = str(value_of(fmt)).lower()
    if fmt not in allowed:
        raise EmbeddrError(f"--format {fmt!r} is not one of {', '.join(allowed)}")
    return fmt


def emit(text: str, output: Path | None) -> None:
    """Write ``text`` to ``output`` (atomically) or to stdout.

    File names that are not UTF-8 appear as ``\\xNN`` escapes in text and CSV; JSON text (:func:`to_json`,
    :func:`embeddr.output.stream_json`) holds them as ``\\udcNN`` escapes already, which this leaves alone."""
    text = shown(text)
    if output is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(output, (text if text.endswith("\n") else text + "\n").encode("utf-8"))
    say(f"wrote {output}")


def emit_chunks(chunks, output: Path | None) -> None:
    """:func:`emit` for text made in pieces (``dupes --format json/csv``): each piece is written as it comes,
    to stdout or to a temporary file renamed over ``output`` at the end; the whole text is never held."""
    def write(fh) -> None:
        last = ""
        for chunk in chunks:
            if chunk:
                fh.write(shown(chunk))
                last = chunk
        if not last.endswith("\n"):
            fh.write("\n")

    if output is None:
        write(sys.stdout)
        return
    output.parent.mkdir(parents=True, exist_ok=True)

    def to_file(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            write(fh)

    atomic_write(output, to_file)
    say(f"wrote {output}")


def to_json(data) -> str:
    """``data`` as JSON text; names that are not UTF-8 as ``\\udcNN`` escapes (:func:`embeddr.output.json_text`)."""
    from ..output import json_text

    return json_text(json.dumps(data, indent=2, ensure_ascii=False, default=str))
