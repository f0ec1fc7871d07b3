"""The shape of the source tree: no import circles (imports inside functions count), no library module
importing the command layer, no module past ~450 lines. Read from the files with ``ast``; nothing is imported."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# the source folders and the package names they install as (pyproject's package-dir)
SOURCES = {"slimda": ROOT / "slimda", "slimda.profilers": ROOT / "profilers", "slimda.export": ROOT / "export"}
MAX_LINES = 450


def _modules() -> dict[str, Path]:
    found = {}
    for package, folder in SOURCES.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


def _is_package(name: str, modules: dict[str, Path]) -> bool:
    return modules[name].name == "__init__.py"


def _imports(name: str, modules: dict[str, Path]) -> set[str]:
    """The slimda modules ``name`` imports anywhere in its file (resolved to the longest known module)."""
    tree = ast.parse(modules[name].read_text())
    package = name if _is_package(name, modules) else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            candidates = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for candidate in candidates:
            while candidate and candidate not in modules:
                candidate = candidate.rpartition(".")[0]
            if candidate and candidate != name:
                targets.add(candidate)
                break
    # a registry: a package's __init__ loads its submodules, which import what the package defines. That
    # edge back to their own package is not counted; the package's edges to its submodules are, so a circle that
    # leaves the package and comes back through it (base -> elsewhere -> the package -> base) is found
    return {t for t in targets if not name.startswith(t + ".")}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {name: _imports(name, modules) for name in modules}
    # importing a.b.c runs a/__init__ and a/b/__init__ first: count those edges too
    for name in list(graph):
        for target in list(graph[name]):
            parent = target.rpartition(".")[0]
            while parent and parent in modules and not name.startswith(parent):
                graph[name].add(parent)
                parent = parent.rpartition(".")[0]
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_import_circle() -> None:
    cycle = _cycle(_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_the_checker_finds_a_circle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_library_never_imports_commands() -> None:
    graph = _graph()
    offenders = {name: sorted(t for t in targets if t.startswith("slimda.commands"))
                 for name, targets in graph.items()
                 if not name.startswith("slimda.commands") and name != "slimda.cli"}
    assert not {k: v for k, v in offenders.items() if v}


def test_commands_do_not_import_each_other() -> None:
    graph = _graph()
    shared = {"slimda.commands", "slimda.commands.options"}
    offenders = {name: sorted(t for t in targets if t.startswith("slimda.commands.") and t not in shared)
                 for name, targets in graph.items() if name.startswith("slimda.commands.")}
    assert not {k: v for k, v in offenders.items() if v}


@pytest.mark.parametrize("name", sorted(_modules()))
def test_module_size(name: str) -> None:
    lines = len(_modules()[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines; split it (limit {MAX_LINES})"


def test_every_package_is_in_the_wheel() -> None:
    """pyproject lists packages explicitly (profilers/ and export/ are mapped): a folder left out would be
    missing from the installed wheel while every test from the checkout still passed."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    modules = _modules()
    packages = {name for name in modules if _is_package(name, modules)}
    assert packages - listed == set()
