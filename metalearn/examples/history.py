"""The recorded history: the learning-curve table (`table.json.gz`, 24 tasks x 64 commands x
10 epochs, made through metalearn by `python -m bench.metalearning.build_table`) as the
attempt documents another metalearn would export, built here at import time."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from metalearn.examples import grid
from metalearn.v1 import attempt_pb2

TABLE = Path(__file__).with_name("table.json.gz")


def table() -> dict[str, Any]:
    """The pinned table, as `build_table` wrote it."""
    with gzip.open(TABLE, "rt") as f:
        loaded: dict[str, Any] = json.load(f)
    return loaded


def history(table: dict[str, Any]) -> list[attempt_pb2.Attempt]:
    """The table as TRAINED attempt documents, one per run, with every epoch."""
    found = []
    for task in table["tasks"]:
        for i, (point, row) in enumerate(zip(table["points"], task["points"], strict=True)):
            attempt = attempt_pb2.Attempt(name=f"table-{task['name']}-{i:03d}")
            json_format.ParseDict(grid.command(task["labels"], point), attempt.training_commands)
            attempt.n_epoch = grid.EPOCHS
            for epoch, (acc, val_loss, loss) in enumerate(
                zip(row["val_accuracy"], row["val_loss"], row["loss"], strict=True), 1
            ):
                attempt.epochs.add(epoch=epoch, val_accuracy=acc, val_loss=val_loss, loss=loss)
            attempt.status = attempt_pb2.ATTEMPT_STATUS_TRAINED
            found.append(attempt)
    return found
