"""The shape of the package, as ARCHITECTURE.md describes it: small modules, no import circle, a runner that
knows nothing of reports, and a command line that starts without the heavy libraries."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "tuner"
MAX_LINES = 700


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str) -> set[str]:
    """The tuner modules ``name`` imports anywhere in its source: at the top, inside functions (lazy imports)
    and under ``TYPE_CHECKING``. ``from a.b import c`` counts as an import of ``a.b.c`` where that is a module."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], base]).strip(".")
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: _imports(name) for name in MODULES}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _reachable(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for other in GRAPH[todo.pop()]:
            if other not in seen:
                seen.add(other)
                todo.append(other)
    return seen


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_is_over_700_lines(name):
    lines = len(MODULES[name].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{MODULES[name]} has {lines} lines: split it by job (see ARCHITECTURE.md)"


def test_no_import_circle_among_tuners_modules():
    assert _cycles(GRAPH) == []


def test_the_checker_finds_a_circle_and_lazy_imports():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert "tuner.runner" in GRAPH["tuner.cli"]  # imported inside the `run` command: counted


def test_the_runner_knows_nothing_of_reports_or_the_dashboard():
    reached = _reachable("tuner.runner") | GRAPH["tuner.runner"]
    assert not {m for m in reached if m.startswith("tuner.reports")}, sorted(reached)


def test_private_library_apis_are_used_in_one_module_each():
    """``optuna.<x>._<y>``, ``optuna_dashboard._<x>`` and pyannote's private names are imported by their internals
    module alone."""
    owners = {
        "optuna": "tuner.store.optuna_internals",
        "optuna_dashboard": "tuner.reports.dashboard_internals",
        "pyannote": "tuner.objectives.pyannote_internals",
    }
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                library, *rest = node.module.split(".")
                private = any(part.startswith("_") for part in rest) or any(
                    alias.name.startswith("_") and not alias.name.startswith("__") for alias in node.names
                )
                if library in owners and private:
                    assert name == owners[library], f"{name} imports {node.module}: move it to {owners[library]}"


def test_the_command_line_starts_without_the_heavy_libraries():
    heavy = "('torch', 'optuna', 'plotly', 'lightning')"
    code = f"import sys, tuner.cli; print(' '.join(m for m in {heavy} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == ""
