"""The import graph of the whole project (scripts/import_graph.py): no cycle among its
modules, and no import from a lower layer up into a higher one (docs/architecture.md §6).
Every import counts: TYPE_CHECKING and function-level ones too."""

from __future__ import annotations

from scripts.import_graph import ALLOWED, cycles, graph, layer, upward


def test_no_module_imports_itself_back() -> None:
    assert cycles(graph()) == []


def test_each_layer_imports_only_what_stands_below_it() -> None:
    assert upward(graph()) == []


def test_the_rules_see_every_layer() -> None:
    layers = {layer(module) for module in graph()}
    assert layers == set(ALLOWED)


def test_the_checks_catch_a_cycle_and_an_upward_import() -> None:
    edges = {"gateway.a": {"gateway.b"}, "gateway.b": {"gateway.a"}, "learning.x": {"gateway.a"}}
    assert cycles(edges) == [["gateway.a", "gateway.b"]]
    assert upward(edges) == ["learning.x -> gateway.a"]
