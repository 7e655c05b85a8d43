"""The layering rule, checked on the source: imports point down, and no module imports itself in a circle.

``streams`` (Kafka wiring) may use ``processors``, ``schemas`` and ``infra``; ``processors`` (plain typed stages)
only ``schemas``; ``infra`` (settings, services) only ``schemas``; ``schemas`` nothing of the project. Every import
counts, including the ones inside functions and under ``TYPE_CHECKING``: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("streams", "processors", "schemas", "infra")
ALLOWED: dict[str, set[str]] = {
    "streams": {"streams", "processors", "schemas", "infra"},
    "processors": {"processors", "schemas"},
    "infra": {"infra", "schemas"},
    "schemas": {"schemas"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    return {
        module_name(path): path
        for layer in LAYERS
        for path in sorted((ROOT / layer).rglob("*.py"))
        if "__pycache__" not in path.parts
    }


def imported_modules(path: Path, name: str, known: set[str]) -> Iterator[tuple[str, int]]:
    """(imported project module, line) for every import in the file, resolved to the deepest known module."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text("utf-8"), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from pkg import mod`` imports the submodule when one exists, else a name of ``pkg``
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        for imported in targets:
            target = imported
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target.split(".")[0] in LAYERS:
                yield target, node.lineno


def import_graph() -> dict[str, dict[str, int]]:
    modules = project_modules()
    known = set(modules)
    graph: dict[str, dict[str, int]] = {}
    for name, path in modules.items():
        edges: dict[str, int] = {}
        for target, line in imported_modules(path, name, known):
            if target != name:
                edges.setdefault(target, line)
        graph[name] = edges
    return graph


def test_imports_point_down_the_layers() -> None:
    upward = [
        f"{name} -> {target} (line {line})"
        for name, edges in import_graph().items()
        for target, line in edges.items()
        if target.split(".")[0] not in ALLOWED[name.split(".")[0]]
    ]
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_no_module_imports_itself_through_a_cycle() -> None:
    graph = import_graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for target in graph.get(node, {}):
            # a package's __init__ importing its own submodules is not a cycle
            if target.startswith(node + "."):
                continue
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in cycles)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from processors.query import QueryProcessor\n", "processors.query"),
        ("import infra.settings\n", "infra.settings"),
        ("from . import codec\n", "schemas.codec"),
    ],
)
def test_the_import_walker_resolves_absolute_and_relative_imports(tmp_path: Path, source: str, expected: str) -> None:
    path = tmp_path / "schemas" / "events.py"
    path.parent.mkdir()
    path.write_text(source)
    known = {"processors.query", "infra.settings", "schemas", "schemas.codec", "schemas.events"}
    found = [target for target, _ in imported_modules(path, "schemas.events", known)]
    assert found == [expected]
