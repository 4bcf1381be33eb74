"""The trainer's import graph: no cycle among its modules, and no import of the server side.

Every `import` counts, wherever it stands: at the top of a module, under
`if TYPE_CHECKING:`, or inside a function (a lazy import is a cycle put off, not removed).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TRAINER = ROOT / "trainer"
# The gateway, the dashboard and the learning maths are other processes' code: the
# trainer talks to the gateway over gRPC and shares only `metalearn`.
FORBIDDEN = {"gateway", "dashboard", "learning"}


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module `path` imports, as dotted names; `from a import b` counts as `a.b`
    as well as `a` (b may be a module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from its package, or one `.` further up per dot
                package = _module(path).split(".")[: -1 if path.name != "__init__.py" else None]
                base = package[: len(package) - node.level + 1]
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            found.add(source)
            found.update(f"{source}.{alias.name}" for alias in node.names)
    return found


def _graph() -> dict[str, set[str]]:
    """Each trainer module and the trainer modules it imports."""
    modules = {_module(path): path for path in TRAINER.rglob("*.py")}
    return {
        name: {
            target
            for target in _imports(path)
            if target in modules and target != name and target != "trainer"
        }
        for name, path in modules.items()
    }


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as the modules along it, or None."""
    done: set[str] = set()
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return None
        path.append(node)
        for target in sorted(graph[node]):
            found = visit(target)
            if found:
                return found
        path.pop()
        done.add(node)
        return None

    for node in sorted(graph):
        found = visit(node)
        if found:
            return found
    return None


def test_the_graph_sees_every_kind_of_import() -> None:
    graph = _graph()
    assert "trainer.run" in graph and "trainer.fitting" in graph["trainer.run"]
    # Under TYPE_CHECKING (loop annotates with Team) and inside a function (a test of
    # the checker itself, below).
    assert "trainer.team" in graph["trainer.loop"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_lazy_and_type_checking_imports_count(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from trainer.run import Recipe\n"
        "def f():\n    from trainer import loop\n    import trainer.data\n"
    )
    found = _imports(source)
    assert {"trainer.run", "trainer.loop", "trainer.data"} <= found


def test_no_cycle_among_trainer_modules() -> None:
    cycle = _cycle(_graph())
    assert cycle is None, " -> ".join(cycle or [])


def test_the_trainer_never_imports_the_gateway_dashboard_or_learning() -> None:
    offending = {
        f"{path.relative_to(ROOT)} imports {name}"
        for path in TRAINER.rglob("*.py")
        for name in _imports(path)
        if name.split(".")[0] in FORBIDDEN
    }
    assert not offending, sorted(offending)
