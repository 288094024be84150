"""The house rules of `../shared/DESIGN.md`, read from the source: no import circles, no imports up the layers."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "mobilesam"


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


MODULES = _modules()


def _imports(module: str, *, at_import_time: bool) -> set[str]:
    """The mobilesam modules `module` imports: at import time only (module level), or anywhere (functions too)."""
    path = MODULES[module]
    tree = ast.parse(path.read_text())
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    nodes = tree.body if at_import_time else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else [])) if node.level else node.module
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name in MODULES and name != module}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [node, nxt] if nxt in path else [node, nxt]
            if nxt not in state and (found := visit(nxt, path + [node])):
                return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [])):
            return found
    return None


def test_no_import_circles_at_import_time():
    graph = {module: _imports(module, at_import_time=True) for module in MODULES}
    assert _cycle(graph) is None, f"import circle: {' -> '.join(_cycle(graph))}"


def test_modeling_imports_only_modeling():
    for module in MODULES:
        if module.startswith("mobilesam.modeling"):
            outside = {name for name in _imports(module, at_import_time=False) if not name.startswith("mobilesam.modeling")}
            assert not outside, f"{module} imports {sorted(outside)}"


@pytest.mark.parametrize("top", ["mobilesam.cli", "mobilesam.server"])
def test_nothing_below_the_top_imports_it(top):
    # The CLI may start the service; nothing else reaches up to either.
    allowed = ("mobilesam.cli", top)
    for module in MODULES:
        if module.startswith(allowed):
            continue
        upward = {name for name in _imports(module, at_import_time=False) if name.startswith(top)}
        assert not upward, f"{module} imports {sorted(upward)}, above it"


# Utilities that every layer uses; one import of ours from them would tie the layers together.
LEAVES = ["mobilesam.atomic", "mobilesam.errors", "mobilesam.masks"]


@pytest.mark.parametrize("leaf", LEAVES)
def test_leaves_import_nothing_of_ours(leaf):
    imported = _imports(leaf, at_import_time=False)
    assert not imported, f"{leaf} imports {sorted(imported)}"


# (lower, higher): the lower module never imports the higher one, not even inside a function.
# io/'s writers take `Results`; the registry's builder loads through weights.py.
BELOW = [("mobilesam.results", "mobilesam.io"), ("mobilesam.weights", "mobilesam.registry")]


@pytest.mark.parametrize(("lower", "higher"), BELOW)
def test_lower_layers_do_not_import_higher_ones(lower, higher):
    upward = {name for name in _imports(lower, at_import_time=False) if name == higher or name.startswith(higher + ".")}
    assert not upward, f"{lower} imports {sorted(upward)}, above it"
