"""The package's import graph, read from the source (not by importing it): no cycles, and no
private name imported across modules.

Every ``import`` and ``from ... import`` in a module counts, at module level or inside a function
or an ``if TYPE_CHECKING:`` block alike: a cycle dodged by a function-local import is still a
cycle. Importing ``a.b.c`` runs the package ``a.b``'s ``__init__`` too; that implicit edge to a
parent package is not counted (every submodule would otherwise be in a cycle with the
``__init__`` that re-exports it).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "influence_widgets"


def module_files(*top: str) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under the folders ``top``."""
    modules = {}
    for folder in top:
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def imports(module: str, path: Path) -> Iterator[tuple[str, list[str], int]]:
    """(imported module, names imported from it, line) for every import statement of a module,
    relative imports resolved."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, [], node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            yield base, [alias.name for alias in node.names], node.lineno


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the modules of ``modules`` it imports (``from pkg import mod`` is an edge to
    ``pkg.mod`` when that is a module, else to ``pkg``)."""
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        edges = set()
        for base, names, _ in imports(module, path):
            targets = [f"{base}.{n}" for n in names if f"{base}.{n}" in modules]
            if len(targets) < len(names) or not names:
                targets.append(base)
            edges.update(t for t in targets if t in modules and t != module)
        graph[module] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a path that returns to its start) per strongly connected component of more
    than one module, by Tarjan's algorithm."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = stack[stack.index(v) :]
            del stack[stack.index(v) :]
            if len(component) > 1:
                found.append(path_around(graph, set(component), v))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def path_around(graph: dict[str, set[str]], component: set[str], start: str) -> list[str]:
    """A shortest path from ``start`` back to itself inside ``component`` (breadth first)."""
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & component):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if w not in previous:
                    previous[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"{start} is in no cycle")


def test_the_checker_finds_a_cycle_and_its_path():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}}
    assert cycles(graph) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_checker_reads_function_level_relative_and_type_checking_imports(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from pkg import b\n")
    (pkg / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import f\n"
    )
    modules = {"pkg": pkg / "__init__.py", "pkg.a": pkg / "a.py", "pkg.b": pkg / "b.py"}
    assert import_graph(modules) == {"pkg": set(), "pkg.a": {"pkg.b"}, "pkg.b": {"pkg.a"}}


def test_the_package_has_no_import_cycles():
    graph = import_graph(module_files(PACKAGE))
    assert len(graph) > 40 and graph[f"{PACKAGE}.core.influence"]  # the walk saw the package
    found = cycles(graph)
    assert not found, "import cycles: " + "; ".join(" -> ".join(c) for c in found)


def private_imports(modules: dict[str, Path], importers: tuple[str, ...]) -> list[str]:
    """``file:line: from X import _name`` for every private name that a module under one of
    ``importers`` imports from another module of ``modules``."""
    found = []
    for module, path in modules.items():
        if not module.startswith(importers):
            continue
        for base, names, line in imports(module, path):
            if base not in modules or base == module:
                continue
            for name in names:
                if name.startswith("_") and not name.startswith("__"):
                    found.append(f"{path.relative_to(ROOT)}:{line}: from {base} import {name}")
    return found


# The engine, data and magic: their private names stay private now.
ENGINE = tuple(
    f"{PACKAGE}.{m}"
    for m in ("core", "methods", "analysis", "dataset", "datasets", "models", "training", "magic")
)


def test_no_private_name_crosses_a_module_of_the_engine():
    found = private_imports(module_files(PACKAGE, "tests"), ENGINE)
    assert not found, "private names imported across modules:\n" + "\n".join(found)


def test_no_private_name_crosses_a_module():
    found = private_imports(module_files(PACKAGE, "tests"), (PACKAGE, "tests"))
    assert not found, "private names imported across modules:\n" + "\n".join(found)
