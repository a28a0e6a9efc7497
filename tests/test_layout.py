"""The tree reads as the architecture: no import circles, the core never imports MCP, small modules."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("providers", "server")
MAX_MODULE_LINES = 400


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imported_names(module: str, path: Path) -> Iterator[str]:
    """Every module name an import statement in the file names, at any depth, but for `if TYPE_CHECKING:`."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]

    def visit(node: ast.AST) -> Iterator[str]:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            children: list[ast.AST] = list(node.orelse)
        else:
            children = list(ast.iter_child_nodes(node))
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                yield f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
        for child in children:
            yield from visit(child)

    yield from visit(ast.parse(path.read_text(encoding="utf-8")))


def import_graph() -> dict[str, set[str]]:
    """Our modules → our modules they import (function-level imports included: they run too)."""
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        graph[module] = {name for name in _imported_names(module, path) if name in MODULES and name != module}
    return graph


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    circles.append(sorted(component))
    return circles


def provider_modules() -> set[str]:
    """Modules that declare a provider: a module-level `PROVIDER = ...`."""
    return {
        module
        for module, path in MODULES.items()
        for node in ast.parse(path.read_text(encoding="utf-8")).body
        if isinstance(node, ast.Assign)
        and any(getattr(t, "id", None) == "PROVIDER" for t in node.targets)
        and "ProviderSpec" in ast.unparse(node.value)
    }


def test_the_import_graph_has_no_circles() -> None:
    assert import_circles(import_graph()) == []


def test_the_circle_finder_finds_a_circle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert import_circles(graph) == [["a", "b", "c"]]


def test_function_level_imports_count_as_edges() -> None:
    graph = import_graph()
    # The seam finds engines by name; registry and settings find providers by name.
    assert not graph["providers.jobs.engine"] & {"providers.batch_api.job_engine", "providers.ray_engine.job_engine"}
    for module in ("providers.registry", "providers.settings"):
        assert not graph[module] & provider_modules(), module


def test_providers_are_modules_at_the_top_of_the_core() -> None:
    assert provider_modules() >= {"providers.local", "providers.openai", "providers.compatible"}
    assert all(module.count(".") == 1 for module in provider_modules())


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("providers")))
def test_the_core_never_imports_mcp_or_the_server(module: str) -> None:
    names = set(_imported_names(module, MODULES[module]))
    assert not {n for n in names if n == "mcp" or n.startswith(("mcp.", "server"))}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_is_over_400_lines(module: str) -> None:
    assert len(MODULES[module].read_text(encoding="utf-8").splitlines()) <= MAX_MODULE_LINES
