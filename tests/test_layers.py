"""The import structure: layers import only downwards, and modules import in no circle.

Layers, top to bottom: the CLI; experiments (sweeps, store, reports) and the public API with its
integrations; training; measure; data, tokenization, models. Every ``from kcap... import`` counts,
at module level or inside a function (a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).parents[1] / "src"
#: Packages that sit above the ones that must not import them.
UPPER = {"cli", "experiments", "api", "integrations"}
LOWER = {"training", "measure", "data", "tokenization", "models", "errors"}
#: Circles allowed to remain (none: each data family is one module that never imports the
#: registry in `kcap.data.dataset`).
PENDING: set[frozenset[str]] = set()


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for path in (SRC / "kcap").rglob("*.py"):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("kcap"):
                graph[name].add(node.module)
            elif isinstance(node, ast.Import):
                graph[name].update(a.name for a in node.names if a.name.startswith("kcap"))
    return graph


def package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_lower_layers_never_import_upper_ones():
    wrong = sorted(
        (a, b)
        for a, deps in import_graph().items()
        for b in deps
        if package(a) in LOWER and package(b) in UPPER
    )
    assert wrong == []


def test_no_import_circles():
    graph = import_graph()
    circles = set()
    for start in graph:  # every circle through `start`, by depth-first search
        stack = [(start, (start,))]
        while stack:
            node, path = stack.pop()
            for nxt in graph.get(node, ()):
                if nxt == start:
                    circles.add(frozenset(path))
                elif nxt not in path:
                    stack.append((nxt, (*path, nxt)))
    assert circles <= PENDING, sorted(sorted(c) for c in circles - PENDING)


def test_the_graph_sees_lazy_imports():
    """The check reads imports inside functions too (measure dispatches lazily)."""
    graph = import_graph()
    assert {"kcap.measure.knowledge", "kcap.measure.memorization"} <= graph["kcap.measure"]
    assert "kcap.measure.knowledge" not in graph["kcap.measure.memorization"]
