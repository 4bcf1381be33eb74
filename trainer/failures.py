"""How a pass over a split ends early: stopped, diverged, or refused by the command.

A module of its own, below `trainer.loop` and `trainer.team`, because both raise them:
one rank raises what it met, and a team makes every rank raise what any rank met.
"""

from __future__ import annotations


class Stopped(Exception):
    """`should_stop` said so between two batches."""


class Diverged(Exception):
    """The loss became NaN or infinite."""


class CommandFailed(Exception):
    """A part of the command itself, its transforms or its loss, refused the real data:
    BCELoss given scores outside [0, 1], a crop larger than the image... The same
    command fails the same way on any trainer, so it is the command's mistake, never a
    reason to retry. Out of memory and our own bugs are not wrapped (see
    `transforms.command_fault`)."""

    def __init__(self, stage: str, batch: int, err: BaseException) -> None:
        # "transform" or "criterion": which part of the command failed.
        self.stage = stage
        self.batch = batch
        self.error = err
        super().__init__(f"{stage} failed at batch {batch}: {err}")
