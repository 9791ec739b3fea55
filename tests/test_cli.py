"""Every command of the CLI (including ones added later, and sub-apps) documents itself with an example."""

from __future__ import annotations

import pytest
import typer

from embeddr.cli import app


def walk(command, path: tuple[str, ...] = ()):
    yield path, command
    if hasattr(command, "commands"):  # a group (typer vendors its own click)
        for name, sub in sorted(command.commands.items()):
            yield from walk(sub, path + (name,))


COMMANDS = list(walk(typer.main.get_command(app)))


def test_the_core_commands_are_registered():
    names = {" ".join(p) for p, _ in COMMANDS}
    assert {"scan", "dupes", "info", "models", "demo"} <= names


@pytest.mark.parametrize("path,command", COMMANDS, ids=[" ".join(p) or "embeddr" for p, _ in COMMANDS])
def test_help_ends_with_an_example(path, command, runner):
    text = (command.help or "").strip()
    assert text, f"`embeddr {' '.join(path)}` has no help text"
    last = text.split("\n\n")[-1].strip()
    assert last.startswith("Example:") and "embeddr" in last, f"`embeddr {' '.join(path)}` help must end with 'Example: embeddr ...'"
    result = runner.invoke(app, [*path, "--help"])
    assert result.exit_code == 0 and "Example:" in result.stdout


LEAVES = [p for p, c in COMMANDS if p and not hasattr(c, "commands")]


@pytest.mark.parametrize("path", LEAVES, ids=[" ".join(p) for p in LEAVES])
def test_every_command_is_in_the_readme(path):
    from conftest import REPO

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert f"embeddr {' '.join(path)}" in readme, f"`embeddr {' '.join(path)}` is not documented in README.md"
