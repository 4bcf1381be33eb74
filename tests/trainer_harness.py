"""Helpers for tests that train: the example command and a Train call's events collected."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from google.protobuf import json_format

from gateway.inprocess import GatewayThread
from metalearn.v1 import (
    attempt_pb2,
    attempt_service_pb2,
    attempt_service_pb2_grpc,
    trainer_service_pb2,
)
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


# The work a file is read for, and the status its attempt has meanwhile.
_HELD = {"checkpoint": ("train", "TRAINING"), "weights": ("test", "TESTING")}


def stored_file(
    gateway: GatewayThread, data: bytes, kind: str, trainer: str = "", epoch: int = 1
) -> trainer_service_pb2.RunFile:
    """`data` stored as the `kind` file of a new attempt that is running (as a claim makes
    it, on `trainer`'s address; '' for none, which only an admin's token reads), and the
    reference a Train or Test request names it by: a trainer reads it from `gateway`."""
    from tests.test_attempts import make_attempt

    name = f"file-{uuid.uuid4().hex[:12]}"
    with gateway.channel() as channel:  # stored, never queued: no dispatcher claims it
        attempt_service_pb2_grpc.AttemptServiceStub(channel).CreateAttempt(
            attempt_service_pb2.CreateAttemptRequest(attempt=make_attempt(name))
        )
    work, status = _HELD[kind]
    digest = hashlib.sha256(data).digest()
    with psycopg.connect(gateway.database_url) as conn:
        row = conn.execute(
            "UPDATE attempts SET status = %s, work = %s, claims = claims + 1, trainer = %s"
            " WHERE name = %s RETURNING id, claims",
            (status, work, trainer, name),
        ).fetchone()
        assert row is not None
        conn.execute(
            "INSERT INTO artifacts (attempt_id, kind, epoch, chunk, data, sha256)"
            " VALUES (%s, %s, %s, 0, %s, %s)",
            (row[0], kind, epoch, data, digest),
        )
    kinds = {
        "checkpoint": trainer_service_pb2.RUN_FILE_KIND_CHECKPOINT,
        "weights": trainer_service_pb2.RUN_FILE_KIND_WEIGHTS,
    }
    return trainer_service_pb2.RunFile(
        attempt_id=row[0], fence=row[1], kind=kinds[kind], size=len(data), sha256=digest.hex()
    )
