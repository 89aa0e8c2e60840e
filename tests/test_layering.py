"""The layering of the first-party packages, read from the source with :mod:`ast`.

``orchestratex`` is the library every service and every client imports: it never imports ``services`` or
``gateway``. And no import cycle exists among ``orchestratex``, ``services`` and ``gateway``. Every import
counts, wherever it is written: at module level, inside a function, under ``if TYPE_CHECKING:``, in a
``try:``, or as ``importlib.import_module("literal")`` — a deferred import does not make a cycle go away,
it only hides it until the day the deferred code runs first.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator, Mapping, Set
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("orchestratex", "services", "gateway")
LIBRARY = "orchestratex"
APPLICATIONS = frozenset({"services", "gateway"})


@dataclass(frozen=True)
class Import:
    """One import written in a module: what it names (absolute) and where."""

    target: str
    """The imported name, absolute (``a.b`` for ``from a import b`` and for ``import a.b``)."""
    line: int
    dynamic: bool = False
    """Written as ``importlib.import_module(...)``; ``target`` may then be only the constant prefix."""


def discover(root: Path, packages: Iterable[str]) -> dict[str, Path]:
    """Every module of ``packages`` under ``root``: dotted name -> file (``pkg/__init__.py`` is ``pkg``)."""
    modules: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if "__pycache__" in parts:
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def imports_in(module: str, path: Path) -> Iterator[Import]:
    """Every import in the file, at any depth, relative ones made absolute."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, is_package, node.module, node.level)
            for alias in node.names:
                yield Import(base if alias.name == "*" else f"{base}.{alias.name}", node.lineno)
        elif isinstance(node, ast.Call) and _is_dynamic_import(node.func) and node.args:
            prefix = _constant_prefix(node.args[0])
            if prefix:
                yield Import(prefix.rstrip("."), node.lineno, dynamic=True)


def _absolute(module: str, is_package: bool, name: str | None, level: int) -> str:
    if level == 0:
        return name or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[: len(package) - (level - 1)]
    return ".".join([*base, name] if name else base)


def _is_dynamic_import(func: ast.expr) -> bool:
    if isinstance(func, ast.Attribute):
        return func.attr == "import_module" and isinstance(func.value, ast.Name) and func.value.id == "importlib"
    return isinstance(func, ast.Name) and func.id in {"import_module", "__import__"}


def _constant_prefix(arg: ast.expr) -> str:
    """The string, or the constant start of an f-string (``f"services.{name}.server"`` -> ``services.``)."""
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value
    if isinstance(arg, ast.JoinedStr) and arg.values:
        first = arg.values[0]
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            return first.value
    return ""


def resolve(target: str, modules: Set[str]) -> str | None:
    """The first-party module an import loads: the longest known prefix of ``target`` (None if third-party).

    ``from a.b import c`` loads ``a.b.c`` when that is a module, else ``a.b`` (``c`` is then a name in it).
    The parent packages are loaded too, but before the module and never because of it: no edge for them,
    or every package that re-exports its own submodules would look like a cycle.
    """
    parts = target.split(".")
    for end in range(len(parts), 0, -1):
        name = ".".join(parts[:end])
        if name in modules:
            return name
    return None


def import_graph(modules: Mapping[str, Path]) -> dict[str, set[str]]:
    """Module -> the first-party modules it imports (anywhere in its source)."""
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets = (resolve(imp.target, modules.keys()) for imp in imports_in(module, path))
        graph[module] = {t for t in targets if t is not None and t != module}
    return graph


def cycles(graph: Mapping[str, Set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(start: str) -> None:
        # Iterative, so that a long chain of imports cannot hit the recursion limit.
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = len(index)
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(sorted(graph.get(succ, ())))))
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component: list[str] = []
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
    return sorted(found)


def cycle_path(graph: Mapping[str, Set[str]], component: list[str]) -> list[str]:
    """One concrete loop through ``component``, for the failure message: ``a -> b -> a``."""
    members = set(component)
    start = component[0]
    path = [start]
    seen = {start}
    node = start
    while True:
        succ = sorted(graph[node] & members)
        nxt = next((s for s in succ if s == start), None) if len(path) > 1 else None
        if nxt is None:
            nxt = next((s for s in succ if s not in seen), succ[0])
        path.append(nxt)
        if nxt in seen:
            return path[path.index(nxt) :]
        seen.add(nxt)
        node = nxt


def library_violations(modules: Mapping[str, Path]) -> list[str]:
    """Every import of an application package (``services``, ``gateway``) written in the library."""
    found = []
    for module, path in modules.items():
        if module.split(".")[0] != LIBRARY:
            continue
        for imp in sorted(imports_in(module, path), key=lambda imp: imp.line):
            if imp.target.split(".")[0] in APPLICATIONS:
                how = "imports dynamically" if imp.dynamic else "imports"
                found.append(f"{module} (line {imp.line}) {how} {imp.target}")
    return found


# ------------------------------------------------------------------------- the tree


@pytest.fixture(scope="module")
def tree() -> dict[str, Path]:
    modules = discover(ROOT, PACKAGES)
    assert {"orchestratex", "services", "gateway", "orchestratex.v1.orchestrator_pb2"} <= modules.keys()
    return modules


def test_library_imports_no_application_package(tree: dict[str, Path]) -> None:
    violations = library_violations(tree)
    assert not violations, "orchestratex/ must not import services or gateway:\n" + "\n".join(violations)


def test_no_import_cycle(tree: dict[str, Path]) -> None:
    graph = import_graph(tree)
    loops = [" -> ".join(cycle_path(graph, component)) for component in cycles(graph)]
    assert not loops, "import cycles (deferred imports included):\n" + "\n".join(loops)


# ----------------------------------------------------- the checks can fail (synthetic trees)


def _write(root: Path, files: Mapping[str, str]) -> dict[str, Path]:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return discover(root, sorted({name.split("/")[0] for name in files}))


def test_cycles_on_a_small_graph() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e2"}, "e2": {"e"}, "f": {"a"}}
    assert cycles(graph) == [["a", "b", "c"], ["e", "e2"]]
    assert cycle_path(graph, ["a", "b", "c"]) == ["a", "b", "c", "a"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_a_deferred_cycle_is_found(tmp_path: Path) -> None:
    modules = _write(
        tmp_path,
        {
            "gateway/__init__.py": "",
            "gateway/state.py": (
                "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from gateway.ws import Connection\n"
            ),
            "gateway/ws.py": "from gateway.state import CONNECTIONS\n",
            "services/__init__.py": "",
            "services/classifier.py": "def load():\n    from .training import train\n    return train\n",
            "services/training.py": "from services import classifier\n",
            "services/ok.py": "import services.training\n",
        },
    )
    graph = import_graph(modules)
    assert graph["services.classifier"] == {"services.training"}
    assert graph["services.training"] == {"services.classifier"}
    assert cycles(graph) == [["gateway.state", "gateway.ws"], ["services.classifier", "services.training"]]


def test_a_package_that_reexports_its_submodules_is_no_cycle(tmp_path: Path) -> None:
    modules = _write(
        tmp_path,
        {
            "orchestratex/__init__.py": "from orchestratex.errors import OrxError\n",
            "orchestratex/errors.py": "from orchestratex import context\n",
            "orchestratex/context.py": "import uuid\n",
        },
    )
    graph = import_graph(modules)
    assert graph == {
        "orchestratex": {"orchestratex.errors"},
        "orchestratex.errors": {"orchestratex.context"},
        "orchestratex.context": set(),
    }
    assert cycles(graph) == []


def test_a_library_import_of_services_is_found(tmp_path: Path) -> None:
    modules = _write(
        tmp_path,
        {
            "orchestratex/__init__.py": "",
            "orchestratex/cli.py": (
                "import importlib\n"
                "def serve(name):\n"
                "    from services.providers import catalogue\n"
                "    return importlib.import_module(f'services.{name}.server')\n"
                "def gateway():\n"
                "    return importlib.import_module('gateway.app')\n"
            ),
            "services/__init__.py": "import orchestratex\n",
        },
    )
    assert library_violations(modules) == [
        "orchestratex.cli (line 3) imports services.providers.catalogue",
        "orchestratex.cli (line 4) imports dynamically services",
        "orchestratex.cli (line 6) imports dynamically gateway.app",
    ]
