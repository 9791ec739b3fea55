"""Data flows one way: stage modules never import the API facade or the jobs above them, and no
import cycle exists among embeddr's modules (imports inside functions included)."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import embeddr

PKG = Path(embeddr.__file__).resolve().parent
# The layers above the stages: the facade, the jobs, the two front ends and `python -m embeddr`.
ABOVE = ("embeddr.api", "embeddr.jobs", "embeddr.server", "embeddr.cli", "embeddr.__main__")


def all_modules() -> dict[str, Path]:
    out = {"embeddr": PKG / "__init__.py"}
    for info in pkgutil.walk_packages([str(PKG)], prefix="embeddr."):
        if info.name.startswith("embeddr._presets"):
            continue
        rel = info.name.split(".")[1:]
        path = PKG.joinpath(*rel)
        out[info.name] = path / "__init__.py" if info.ispkg else path.with_suffix(".py")
    return out


MODULES = all_modules()


def is_above(name: str) -> bool:
    return any(name == a or name.startswith(a + ".") for a in ABOVE)


STAGES = sorted(m for m in MODULES if m != "embeddr" and not is_above(m))


def imports_of(name: str, path: Path) -> set[str]:
    """embeddr modules ``name`` imports anywhere in its file (module level and inside functions)."""
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            bases = [a.name for a in node.names]
            names: list[str] = []
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            bases = [base]
            names = [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for target in [*bases, *names]:
            if target in MODULES and target != name:
                out.add(target)
    return out


GRAPH = {name: imports_of(name, path) for name, path in MODULES.items()}


def test_the_walk_sees_the_stages():
    for stage in ("embeddr.pipeline", "embeddr.dupes", "embeddr.actions", "embeddr.review", "embeddr.tune",
                  "embeddr.evaluate", "embeddr.ingest", "embeddr.plots", "embeddr.fsutil", "embeddr.encoders.onnx"):
        assert stage in STAGES
    assert "embeddr.api" not in STAGES and "embeddr.jobs" not in STAGES


def test_importing_a_stage_loads_no_api_or_jobs():
    """``python -c "import embeddr.<stage>"`` in a fresh interpreter: neither embeddr.api nor embeddr.jobs is loaded."""
    code = ("import importlib, sys\n"
            "bad = []\n"
            "for name in sys.argv[1:]:\n"
            "    for m in [k for k in sys.modules if k == 'embeddr' or k.startswith('embeddr.')]:\n"
            "        del sys.modules[m]\n"
            "    importlib.import_module(name)\n"
            "    bad += [f'{name} -> {m}' for m in ('embeddr.api', 'embeddr.jobs') if m in sys.modules]\n"
            "print('\\n'.join(bad))\n")
    # one fresh interpreter per stage, as the check is stated (each is ~0.2 s)
    failures = []
    for stage in STAGES:
        out = subprocess.run([sys.executable, "-c", code, stage], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, f"import {stage} failed: {out.stderr[-2000:]}"
        failures += [line for line in out.stdout.splitlines() if line]
    assert not failures, "stage modules load the API or jobs layer:\n" + "\n".join(failures)


@pytest.mark.parametrize("stage", STAGES)
def test_stage_source_never_imports_upward(stage):
    """Not even inside a function: a stage never reaches up to api, jobs, the CLI or the service."""
    upward = sorted(t for t in GRAPH[stage] if is_above(t))
    assert not upward, f"{stage} imports {upward}"


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    WHITE, GREY, BLACK = 0, 1, 2
    colour = dict.fromkeys(graph, WHITE)
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        colour[n] = GREY
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if colour.get(m) == GREY:
                return stack[stack.index(m):] + [m]
            if colour.get(m) == WHITE:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        colour[n] = BLACK
        return None

    for n in sorted(graph):
        if colour[n] == WHITE:
            found = visit(n)
            if found:
                return found
    return None


def test_no_import_cycle_among_embeddr_modules():
    """Every import, also the ones inside functions, counts. A subpackage's implicit import of its
    parent package is not an edge (Python does that for any submodule); explicit imports are."""
    graph = {n: {t for t in targets if not n.startswith(t + ".")} for n, targets in GRAPH.items()}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_graph_sees_function_level_imports():
    # ingest imports embeddr.normalize only inside functions: the walk must see it
    assert "embeddr.normalize" in GRAPH["embeddr.ingest"]
