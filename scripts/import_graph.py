"""The project's import graph and its largest code, as evidence for its layout
(docs/architecture.md §6): `python -m scripts.import_graph` prints JSON.

Every import counts, wherever it stands: at the top of a module, under
`if TYPE_CHECKING:` or inside a function (a lazy import is a cycle put off, not removed).
The generated stubs (metalearn/v1) are leaves and left out.

Layers, from the bottom: `metalearn` (shared code: errors, status, documents, the client,
views) ← `learning` (pure maths) ← `gateway`; `trainer` and `dashboard` stand on
`metalearn` alone; `metalearn.cli` starts every process, so it may import them all.
"""

from __future__ import annotations

import ast
import json
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("metalearn", "learning", "gateway", "trainer", "dashboard")
# What each layer may import besides itself.
ALLOWED = {
    "metalearn": set(),
    "learning": {"metalearn"},
    "gateway": {"learning", "metalearn"},
    "trainer": {"metalearn"},
    "dashboard": {"metalearn"},
    "cli": {"metalearn", "learning", "gateway", "trainer", "dashboard"},
}


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[:2] == ("metalearn", "v1"):
                continue
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports_of(source: str, name: str, package: bool, known: dict[str, Path]) -> set[str]:
    """The first-party modules (of `known`) that the module `name` imports, given its
    source; `from a import b` is `a.b` when that is a module, else `a`."""

    def resolve(dotted: str) -> str | None:
        while dotted and dotted not in known:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    parent = name if package else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(source, name)):
        if isinstance(node, ast.Import):
            targets.update(filter(None, (resolve(a.name) for a in node.names)))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from its package, or one `.` further up per dot
                parts = parent.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            if base.startswith("metalearn.v1"):
                continue
            for alias in node.names:
                full = f"{base}.{alias.name}"
                target = full if full in known else resolve(base)
                if target:
                    targets.add(target)
    return targets - {name}


def graph() -> dict[str, set[str]]:
    """Each first-party module and the first-party modules it imports."""
    known = modules()
    return {
        name: imports_of(path.read_text(), name, path.name == "__init__.py", known)
        for name, path in known.items()
    }


def layer(module: str) -> str:
    if module == "metalearn.cli" or module.startswith("metalearn.cli."):
        return "cli"
    return module.split(".")[0]


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The graph's strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def layer_edges(edges: dict[str, set[str]]) -> dict[tuple[str, str], list[str]]:
    """Imports from one layer into another: (from, to) -> ['a -> b', ...]."""
    found: dict[tuple[str, str], list[str]] = defaultdict(list)
    for a, targets in edges.items():
        for b in targets:
            if layer(a) != layer(b):
                found[(layer(a), layer(b))].append(f"{a} -> {b}")
    return found


def upward(edges: dict[str, set[str]]) -> list[str]:
    """Imports a layer may not make."""
    return sorted(
        edge
        for (a, b), found in layer_edges(edges).items()
        if b not in ALLOWED[a]
        for edge in found
    )


def largest(count: int = 8) -> dict[str, list[tuple[str, int]]]:
    """The longest classes and functions (lines, docstrings included)."""
    classes: list[tuple[str, int]] = []
    functions: list[tuple[str, int]] = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if node_lines := getattr(node, "end_lineno", None):
                size = node_lines - node.lineno + 1  # type: ignore[attr-defined]
                if isinstance(node, ast.ClassDef):
                    classes.append((f"{name}.{node.name}", size))
                elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    functions.append((f"{name}.{node.name}", size))
    by_size = sorted(classes, key=lambda c: -c[1])[:count]
    return {"classes": by_size, "functions": sorted(functions, key=lambda f: -f[1])[:count]}


def main() -> None:
    edges = graph()
    print(
        json.dumps(
            {
                "modules": len(edges),
                "imports": sum(len(t) for t in edges.values()),
                "cycles": cycles(edges),
                "layer_edges": {
                    f"{a} -> {b}": len(found)
                    for (a, b), found in sorted(layer_edges(edges).items())
                },
                "upward": upward(edges),
                **largest(),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
