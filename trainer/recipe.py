"""What one rank of a run is handed: its Recipe, the Signals of its parent process, and
the Emit that carries its events upstream.

Below `trainer.run` (which makes a recipe of a checked command), `trainer.fitting` (which
trains one rank with it) and `trainer.distributed` (which pickles it for ranks 1..N-1), so
that these three share it without importing one another.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from metalearn.v1 import attempt_pb2, trainer_service_pb2
from trainer import artifacts, loop, model, optim
from trainer.transforms import Pipeline

pb = trainer_service_pb2
# Sends one response message upstream (rank 0's; the other ranks' go nowhere).
Emit = Callable[[Any], None]


@dataclass(frozen=True)
class Signals:
    """How the parent process talks to a run: cancel now, or stop after this epoch."""

    cancelled: Callable[[], bool]
    interrupted: Callable[[], bool]

    @staticmethod
    def never() -> Signals:
        """For a rank other than 0: rank 0 alone hears the trainer (see `distributed`)."""
        return Signals(cancelled=_no, interrupted=_no)


def _no() -> bool:
    return False


@dataclass(frozen=True)
class Recipe:
    """A checked command resolved against its prepared data: all a rank needs to train
    (rank 0 pickles it for the others, see `trainer.distributed`)."""

    cmd: attempt_pb2.TrainCommand
    resume: artifacts.Checkpoint | None
    fingerprint: str
    spec: model.ModelSpec
    pipeline: Pipeline
    criterion: optim.Named
    optimizer: optim.Named
    scheduler: optim.Named
    n_labels: int
    train_data: loop.TensorImages
    val_data: loop.TensorImages
    # The images are already converted and normalized: no transform runs per batch.
    prepared: bool
    # What `started` says, less what the model and devices add.
    started: pb.TrainStarted
    every_epochs: int
    every_seconds: float
    chunk_bytes: int
