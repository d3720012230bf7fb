"""The package's import graph, read from the source (not by importing it): no cycles, and no
private name imported across modules; nor do tests and benchmarks reach a private name of the
package at all (attributes, modules, names given as strings).

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


# ----- private names reached from tests and benchmarks ------------------------------------------
# Not only imports: ``obj._name`` on a package object, ``getattr(obj, "_name")``,
# ``monkeypatch.setattr("influence_widgets.mod._name", ...)`` and ``import pkg._module`` all reach
# a private name. A file's own private helpers (defined in that file) are fine, and so is
# ``self._name`` / ``cls._name``.

# Private names of third-party libraries that a test cannot avoid, each with the reason.
THIRD_PARTY_PRIVATE = {
    "ipywidgets.widgets.widget._remove_buffers": (
        "splits a widget's state into JSON and binary buffers as the kernel sends it; ipywidgets "
        "has no public function for it (test_explorer checks that thumbnails go as buffers)"
    ),
    "captum.influence._core.arnoldi_influence_function.ArnoldiInfluenceFunction": (
        "Captum 0.9 exports its Arnoldi influence only from this module (captum.influence has no "
        "public name for it); the peers benchmark compares against it"
    ),
}

ATTRIBUTE_FUNCTIONS = {"getattr", "setattr", "hasattr", "delattr"}  # also monkeypatch.setattr


def is_private(name: str) -> bool:
    """``_name`` or ``__name``, but not a dunder such as ``__init__`` or ``__future__``."""
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def own_names(tree: ast.AST) -> set[str]:
    """The names a file defines itself: functions, classes, variables, arguments, and attributes
    it sets on ``self`` or ``cls``."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                names.add(node.attr)
    return names


def reached(node: ast.AST) -> Iterator[tuple[str, list[str], bool]]:
    """(what, its name's parts, whether a file may define it itself) for each name that ``node``
    reaches: an attribute (not of ``self`` or ``cls``), an imported module or name, an attribute
    named by a string (``getattr``, ``monkeypatch.setattr``), a dotted path into the package."""
    if isinstance(node, ast.Attribute):
        if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
            yield ast.unparse(node), [node.attr], True
    elif isinstance(node, ast.Import):
        yield from ((f"import {a.name}", a.name.split("."), False) for a in node.names)
    elif isinstance(node, ast.ImportFrom):
        module = node.module.split(".") if node.module else []
        where = "." * node.level + (node.module or "")
        for alias in node.names:
            yield f"from {where} import {alias.name}", [*module, alias.name], False
    elif isinstance(node, ast.Call):
        func = node.func
        called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
        for arg in node.args[:2] if called in ATTRIBUTE_FUNCTIONS else ():
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                yield f"{called}(..., {arg.value!r})", [arg.value], True
    elif isinstance(node, ast.Constant) and isinstance(node.value, str):
        if node.value.startswith(f"{PACKAGE}."):
            yield repr(node.value), node.value.split("."), False


def private_names_reached(path: Path) -> list[tuple[int, str]]:
    """(line, what) for every private name outside itself that the file at ``path`` reaches, but
    the third-party names of :data:`THIRD_PARTY_PRIVATE`."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    own = own_names(tree)
    found = []
    for node in ast.walk(tree):
        for what, parts, may_be_own in reached(node):
            if not any(map(is_private, parts)) or ".".join(parts) in THIRD_PARTY_PRIVATE:
                continue
            if may_be_own and parts[-1] in own:
                continue
            found.append((node.lineno, what))
    return found


def scanned_files() -> list[Path]:
    """Every .py file under tests/ and benchmarks/."""
    return sorted((ROOT / "tests").rglob("*.py")) + sorted((ROOT / "benchmarks").rglob("*.py"))


def test_the_private_name_checker_finds_attributes_imports_and_strings(tmp_path):
    source = tmp_path / "case.py"
    source.write_text(
        "import a._private.b\n"
        "from ipywidgets.widgets.widget import _remove_buffers\n"
        "from pkg import _name, public\n"
        "from pkg._mod import public\n"
        "from .conftest import _helper\n"
        "from __future__ import annotations\n"
        "def _own(x):\n"
        "    x._other, x._own, x.__class__, obj.public\n"
        "    monkeypatch.setattr(x, '_hidden', 1)\n"
        "    monkeypatch.setattr('influence_widgets.m._flag', 1)\n"
        "class C:\n"
        "    def f(self):\n"
        "        self._mine = self._theirs = cls._x = 1\n"
        "        return other._mine, other._theirs\n"
    )
    found = [what for _, what in private_names_reached(source)]
    assert sorted(found) == sorted(
        [
            "import a._private.b",
            "from pkg import _name",
            "from pkg._mod import public",
            "from .conftest import _helper",
            "x._other",
            "setattr(..., '_hidden')",
            "'influence_widgets.m._flag'",
        ]
    )


def test_tests_and_benchmarks_reach_no_private_name():
    files = scanned_files()
    assert len(files) > 60 and ROOT / "tests" / "conftest.py" in files  # the walk saw them
    found = [
        f"{path.relative_to(ROOT)}:{line}: {what}"
        for path in files
        for line, what in private_names_reached(path)
    ]
    assert not found, "private names reached:\n" + "\n".join(found)
