"""Prognosis on the epoch path (gateway/epochs.py): each run's prognosis is made from
what is stored after its epochs, and a run that asked to stop once hopeless is stopped
when its prognosis says so.

Only a run that stops once hopeless needs its verdict before its epoch is answered; every
other run's prognosis is made in a batch, at most `every_seconds` later (and at once when
the run ends). A prognosis an epoch was a read of the curve, a thread and a write each:
with a thousand reported runs at once, a third of the gateway's event loop, which every
epoch's acknowledgement and watcher waited behind. A batch is one read, one thread and
one write for every run that had an epoch since the last, and a run of short epochs gets
one prognosis per batch, not one per epoch.
"""

from __future__ import annotations

import asyncio
import logging
from itertools import islice

from gateway.curves.live import Curves
from gateway.epochs import Run, RunWatch

log = logging.getLogger(__name__)

# How long a run's prognosis may lag its newest epoch (unless it stops once hopeless).
PROGNOSIS_SECONDS = 1.0
# Runs in one statement of a batch.
BATCH = 500


class PrognosisWatcher:
    """The epoch watcher, and the loop (gateway/server.py's Background) that makes the
    deferred prognoses."""

    name = "prognosis"

    def __init__(self, curves: Curves, every_seconds: float = PROGNOSIS_SECONDS) -> None:
        self._curves = curves
        self._every = every_seconds
        # Runs with an epoch since their last prognosis: attempt id -> the run's fence.
        self._due: dict[int, int | None] = {}
        # Runs the last batch did not keep and handed to the next: tried once again only.
        self._retried: set[int] = set()

    async def watch(self, run: Run) -> RunWatch | None:
        return _RunPrognosis(self, run)

    def defer(self, run: Run) -> None:
        self._due[run.attempt_id] = run.fence

    def take(self, run: Run) -> bool:
        """Whether the run was waiting for a batch (it is not any more)."""
        return self._due.pop(run.attempt_id, _NONE) is not _NONE

    async def update(self, run: Run) -> str | None:
        found = await self._curves.update(run.attempt_id, run.fence)
        if found is None or not found.hopeless or not run.stop_when_hopeless:
            return None
        return found.reason

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._every)
            if not self._due:
                continue
            due, self._due = self._due, {}
            items = iter(due.items())
            chunk: list[tuple[int, int | None]] = []
            missed: dict[int, int | None] = {}
            try:
                while chunk := list(islice(items, BATCH)):
                    kept = await self._curves.update_many(chunk)
                    missed.update((a, f) for a, f in chunk if a not in kept)
                # A row another statement held was skipped: the next batch tries it once
                # more (a run the fence or a newer prognosis refused, or without epochs,
                # is tried once more for nothing).
                for attempt_id, fence in missed.items():
                    if attempt_id not in self._retried:
                        self._due.setdefault(attempt_id, fence)
                self._retried = set(missed) - self._retried
            except asyncio.CancelledError:
                raise
            except Exception:  # the database away: what was not made waits for the next
                log.exception("making %d prognoses", len(due))
                for attempt_id, fence in [*chunk, *items]:
                    self._due.setdefault(attempt_id, fence)


_NONE = object()


class _RunPrognosis:
    def __init__(self, watcher: PrognosisWatcher, run: Run) -> None:
        self._watcher = watcher
        self._run = run

    async def after_epoch(self, epoch: int) -> str | None:
        if not self._run.stop_when_hopeless:
            self._watcher.defer(self._run)
            return None
        reason = await self._watcher.update(self._run)
        return None if reason is None else f"stopped at epoch {epoch} as hopeless: {reason}"

    async def before_end(self) -> None:
        # Made now, while the run's lease still holds it (a batch after its end would be
        # fenced out).
        if self._watcher.take(self._run):
            await self._watcher.update(self._run)
