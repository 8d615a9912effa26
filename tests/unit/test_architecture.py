"""The shape of the code: the layer contracts hold, and no import cycle anywhere.

The contracts live in pyproject.toml and run through `lint-imports` (import-linter);
the cycle check adds what a layers contract cannot see, a cycle between two modules of
one package, and checks that its own cycle finder finds cycles.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("eas", "processors", "eascmd")


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def module_graph() -> dict[str, set[str]]:
    """Every import between our modules, lazy and TYPE_CHECKING imports included; a
    package's `__init__` re-exporting its own modules is not a cycle of the design."""
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    out: dict[str, set[str]] = {}
    for module in graph.modules:
        targets = set()
        for imported in graph.find_modules_directly_imported_by(module):
            if imported.split(".")[0] not in PACKAGES:
                continue
            if imported.startswith(module + ".") and _is_package(module):
                continue  # a package's __init__ re-exporting its own modules
            targets.add(imported)
        out[module] = targets
    return out


def _is_package(module: str) -> bool:
    return (REPO / module.replace(".", "/") / "__init__.py").exists()


def test_the_cycle_finder_finds_cycles() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set(), "c": {"b"}}) == []


def test_no_module_imports_one_that_imports_it_back() -> None:
    graph = module_graph()
    assert "eas.gateway.core" in graph and "eas.instance.core" in graph
    assert cycles(graph) == []


def test_layer_contracts_hold() -> None:
    run = subprocess.run([str(Path(sys.executable).with_name("lint-imports")), "--no-cache"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
