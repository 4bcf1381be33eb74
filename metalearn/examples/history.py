"""The recorded history: the learning-curve tables, made through metalearn by
`python -m bench.metalearning.build_table`, as the attempt documents another metalearn
would export, built here at import time.

Two suites, each a family of tasks and a grid of commands, every command trained on
every task for 10 epochs: `CLASSIC` (`table.json.gz`, 24 tasks x 64 commands: digits,
shapes, letters; the demo's history) and `WIDE` (`wide.json.gz`, issue 29: colours,
arrows, textures, painted shapes, imbalanced and mislabelled tasks beside some of the
first suite's, over a grid whose best command differs between tasks)."""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from metalearn.examples import grid, tasks
from metalearn.v1 import attempt_pb2

TABLE = Path(__file__).with_name("table.json.gz")
WIDE_TABLE = Path(__file__).with_name("wide.json.gz")


@dataclass(frozen=True)
class Suite:
    """Tasks, the commands each is trained with, and where their table is pinned."""

    name: str
    tasks: tuple[tasks.Task, ...]
    grid: grid.Grid
    path: Path


CLASSIC = Suite("classic", tasks.FAMILY, grid.CLASSIC, TABLE)
WIDE = Suite("wide", tasks.WIDE, grid.WIDE, WIDE_TABLE)
SUITES = {s.name: s for s in (CLASSIC, WIDE)}


def table(path: Path = TABLE) -> dict[str, Any]:
    """A pinned table, as `build_table` wrote it."""
    with gzip.open(path, "rt") as f:
        loaded: dict[str, Any] = json.load(f)
    return loaded


def history(table: dict[str, Any]) -> list[attempt_pb2.Attempt]:
    """The table as TRAINED attempt documents, one per run, with every epoch."""
    commands = grid.GRIDS[table.get("grid", grid.CLASSIC.name)]
    found = []
    for task in table["tasks"]:
        for i, (point, row) in enumerate(zip(table["points"], task["points"], strict=True)):
            attempt = attempt_pb2.Attempt(name=f"table-{task['name']}-{i:03d}")
            json_format.ParseDict(
                commands.command(task["labels"], point), attempt.training_commands
            )
            attempt.n_epoch = grid.EPOCHS
            for epoch, (acc, val_loss, loss) in enumerate(
                zip(row["val_accuracy"], row["val_loss"], row["loss"], strict=True), 1
            ):
                attempt.epochs.add(epoch=epoch, val_accuracy=acc, val_loss=val_loss, loss=loss)
            attempt.status = attempt_pb2.ATTEMPT_STATUS_TRAINED
            found.append(attempt)
    return found
