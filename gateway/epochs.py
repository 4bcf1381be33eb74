"""One path for every epoch (docs/architecture.md §5).

An epoch is stored first, exactly once and fenced by whoever holds the run (a retried
epoch stores nothing and goes no further); then this replica's watchers of the attempt
get it from the event hub; then each registered `EpochWatcher` is asked, in the order
they were registered, whether the run stops there. The first reason wins: the run
ends (PRUNED) with its epochs kept. Prognosis (gateway/curves/watch.py) and study
pruning (gateway/studies/pruning.py) are such watchers; a new consumer implements the
protocol in its own package and is registered where the server is assembled
(gateway/server.py). The path knows nothing of curves or studies, and nothing of where
the epoch came from: a trainer's stream today, a run reported by users' own code next.

A watcher that fails is logged and skipped: what watches a run saves time or tells
about it, and never fails it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from gateway.events import EventHub
from gateway.store import AttemptStore, EpochRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Run:
    """What the path and its watchers know of a run."""

    attempt_id: int
    name: str
    # The fence of whoever writes its epochs: a write under an older one is refused.
    fence: int
    # The epochs its command declares.
    n_epoch: int
    # Its command asks to be stopped once its prognosis says it is hopeless.
    stop_when_hopeless: bool = False
    # Its document says it is a study's trial (the study may not have linked it yet).
    study_trial: bool = False


class RunWatch(Protocol):
    """A watcher's view of one run, from its first epoch here to its end."""

    async def after_epoch(self, epoch: int) -> str | None:
        """Called after each newly stored epoch: why the run stops there, or None."""
        ...

    async def before_end(self) -> None:
        """Called once when the run ends here (it finished, or a watcher stopped it)."""
        ...


class EpochWatcher(Protocol):
    """Something that follows runs epoch by epoch (prognosis, a study's pruner)."""

    name: str

    async def watch(self, run: Run) -> RunWatch | None:
        """Its view of `run`, or None when it has nothing to do with this run."""
        ...


class RunEpochs:
    """One run's epochs through the path."""

    def __init__(
        self,
        run: Run,
        attempts: AttemptStore,
        hub: EventHub,
        watches: Sequence[tuple[str, RunWatch]],
    ) -> None:
        self.run = run
        self._attempts = attempts
        self._hub = hub
        self._watches = watches
        self._ended = False

    async def record(self, epoch: EpochRecord) -> str | None:
        """Stores `epoch` and asks the watchers; why the run stops there, or None.
        Raises FailedPrecondition when the run is no longer its writer's (cancelled, or
        its lease went elsewhere): the writer stops."""
        wire = await self._attempts.append_epoch(self.run.attempt_id, self.run.fence, epoch)
        if wire is None:
            return None  # stored before: a retry, told and judged already
        self._hub.stored_epoch(self.run.attempt_id, epoch.epoch, wire)
        for name, watch in self._watches:
            try:
                reason = await watch.after_epoch(epoch.epoch)
            except Exception:
                log.exception("%s: %s after epoch %s", self.run.name, name, epoch.epoch)
                continue
            if reason is not None:
                await self.ending()
                return reason
        return None

    async def ending(self) -> None:
        """The run ends here: each watcher has its last word (once)."""
        if self._ended:
            return
        self._ended = True
        for name, watch in self._watches:
            try:
                await watch.before_end()
            except Exception:
                log.exception("%s: %s at its end", self.run.name, name)


class EpochPath:
    """Where every epoch goes: the store, the hub, the watchers registered with it."""

    def __init__(
        self, attempts: AttemptStore, hub: EventHub, watchers: Sequence[EpochWatcher]
    ) -> None:
        self._attempts = attempts
        self._hub = hub
        self._watchers = tuple(watchers)

    async def open(self, run: Run) -> RunEpochs:
        """The path of `run`'s epochs, with the view of each watcher that follows it."""
        watches: list[tuple[str, RunWatch]] = []
        for watcher in self._watchers:
            try:
                watch = await watcher.watch(run)
            except Exception:
                log.exception("%s: %s could not follow it", run.name, watcher.name)
                continue
            if watch is not None:
                watches.append((watcher.name, watch))
        return RunEpochs(run, self._attempts, self._hub, watches)
