"""Helpers for tests that train: the example command and a Train call's events collected."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from metalearn.v1 import attempt_pb2, trainer_service_pb2
from trainer.artifacts import assemble

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def lenet_doc() -> dict[str, Any]:
    """The README's digits example as JSON."""
    doc: dict[str, Any] = json.loads((EXAMPLES / "digits_lenet.json").read_text())
    return doc


def lenet_command(**changes: Any) -> attempt_pb2.TrainCommand:
    """The README's digits example, with top-level fields changed."""
    doc = lenet_doc()
    doc.update(changes)
    return json_format.ParseDict(doc, attempt_pb2.TrainCommand())


@dataclass
class TrainRun:
    """What one Train call streamed, sorted by kind."""

    started: trainer_service_pb2.TrainStarted | None = None
    epochs: list[attempt_pb2.EpochMetrics] = field(default_factory=list)
    checkpoints: dict[int, bytes] = field(default_factory=dict)
    weights: bytes = b""
    finished: trainer_service_pb2.TrainFinished | None = None
    order: list[str] = field(default_factory=list)

    @property
    def losses(self) -> list[float]:
        return [e.loss for e in self.epochs]


def collect(events: Iterable[trainer_service_pb2.TrainerServiceTrainResponse]) -> TrainRun:
    run = TrainRun()
    pieces: dict[str, list[Any]] = {"checkpoint": [], "weights": []}
    for event in events:
        kind = event.WhichOneof("event")
        assert kind is not None
        if not run.order or run.order[-1] != kind:
            run.order.append(kind)
        if kind == "started":
            run.started = event.started
        elif kind == "epoch":
            run.epochs.append(event.epoch)
        elif kind == "finished":
            run.finished = event.finished
        else:
            chunk = getattr(event, kind)
            pieces[kind].append(chunk)
            if chunk.sha256:  # the last chunk of a file
                data = assemble(pieces[kind])
                pieces[kind] = []
                if kind == "checkpoint":
                    run.checkpoints[chunk.epoch] = data
                else:
                    run.weights = data
    return run
