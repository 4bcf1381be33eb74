"""The suite's table as history another metalearn would export: one TRAINED attempt
document per run, with its epochs (`make demo` and the benchmark import it)."""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from bench.metalearning import grid
from bench.metalearning.build_table import TABLE
from metalearn import documents
from metalearn.v1 import attempt_pb2


def history(table: dict[str, Any]) -> list[attempt_pb2.Attempt]:
    """The table as attempt documents, as another metalearn would export them."""
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


def main() -> None:
    """python -m bench.metalearning.export OUT.ndjson: the table's runs, one per line."""
    with gzip.open(TABLE, "rt") as f:
        table = json.load(f)
    lines = [json.dumps(documents.attempt_to_document(a)) for a in history(table)]
    Path(sys.argv[1]).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
