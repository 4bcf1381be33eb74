"""The meta-learning suites' pinned tables belong to the code that ships beside them:
every task of a suite, every command of its grid, ten epochs each, and each task's
split counts (what chance is read from) the ones the gateway's and the trainer's own
split functions give for the images drawn today."""

from __future__ import annotations

import pytest
from google.protobuf import json_format

from bench.metalearning.build_table import split_counts
from metalearn.examples import grid, history

# Thousands of images drawn again: not in `make test-fast`.
pytestmark = pytest.mark.slow


@pytest.mark.parametrize("suite", list(history.SUITES.values()), ids=list(history.SUITES))
def test_a_pinned_table_is_its_suite_trained_through_its_grid(suite: history.Suite) -> None:
    table = history.table(suite.path)
    assert table["grid"] == suite.grid.name and table["space"] == suite.grid.space
    assert table["points"] == suite.grid.points()
    assert [t["name"] for t in table["tasks"]] == [t.name for t in suite.tasks]
    for entry, task in zip(table["tasks"], suite.tasks, strict=True):
        assert entry["labels"] == list(task.labels)
        assert len(entry["points"]) == len(suite.grid.points())
        assert all(len(p["val_accuracy"]) == grid.EPOCHS for p in entry["points"])
        seed = int(suite.grid.base_command(task.labels)["seed"])
        train, validation = split_counts(task, seed)
        assert entry["images_per_label"] == train, task.name
        assert entry["validation_per_label"] == validation, task.name
    # The runs as documents carry the suite's own commands.
    runs = history.history(table)
    first = suite.tasks[0]
    assert runs[0].name == f"table-{first.name}-000"
    expected = suite.grid.command(first.labels, suite.grid.points()[0])
    stored = json_format.MessageToDict(runs[0].training_commands, preserving_proto_field_name=True)
    assert stored["optimizer"] == expected["optimizer"]
    assert stored["transform"] == expected["transform"]
    assert stored["label_names"] == list(first.labels)
