"""The trainer's import graph: no cycle among its modules, and no import of the server side.

Every `import` counts, wherever it stands: at the top of a module, under
`if TYPE_CHECKING:`, or inside a function (a lazy import is a cycle put off, not removed).
The graph is scripts/import_graph.py's, which tests/test_layers.py holds for the whole
project; these are the trainer's own cases.
"""

from __future__ import annotations

from scripts.import_graph import cycles, graph, imports_of, modules

# The gateway, the dashboard and the learning maths are other processes' code: the
# trainer talks to the gateway over gRPC and shares only `metalearn`.
FORBIDDEN = {"gateway", "dashboard", "learning"}


def _trainer_graph() -> dict[str, set[str]]:
    """Each trainer module and the trainer modules it imports."""
    return {
        name: {t for t in targets if t.startswith("trainer.")}
        for name, targets in graph().items()
        if name.startswith("trainer.")
    }


def test_the_graph_sees_every_kind_of_import() -> None:
    trainer = _trainer_graph()
    assert "trainer.run" in trainer and "trainer.fitting" in trainer["trainer.run"]
    # Under TYPE_CHECKING (loop annotates with Team) and inside a function (a test of
    # the checker itself, below).
    assert "trainer.team" in trainer["trainer.loop"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_lazy_and_type_checking_imports_count() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from trainer.run import Recipe\n"
        "def f():\n    from trainer import loop\n    import trainer.data\n"
    )
    found = imports_of(source, "trainer.m", False, modules())
    assert {"trainer.run", "trainer.loop", "trainer.data"} <= found


def test_no_cycle_among_trainer_modules() -> None:
    found = cycles(_trainer_graph())
    assert found == [], " / ".join(" -> ".join(cycle) for cycle in found)


def test_the_trainer_never_imports_the_gateway_dashboard_or_learning() -> None:
    offending = {
        f"{name} imports {target}"
        for name, targets in graph().items()
        if name.split(".")[0] == "trainer"
        for target in targets
        if target.split(".")[0] in FORBIDDEN
    }
    assert not offending, sorted(offending)
