"""Wake-ups for the watchers of studies (WatchStudy): each looks again when what it
follows may have changed. Fed by the event hub's notifications, registered where the
server is assembled (`register`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass

from gateway.events import EventHub
from gateway.store.studies import STUDIES
from gateway.store.work import EVENTS, QUEUE


@dataclass(eq=False)  # hashed by identity: each watcher's own
class Wake:
    """Set when what a study watcher follows may have changed (it looks again); `closing`
    when this gateway stops. Until the watcher narrows it to its study and that study's
    attempts, every change sets it; queue changes always do (a trial may be new)."""

    event: asyncio.Event
    closing: bool = False
    study_id: int | None = None
    attempt_ids: frozenset[int] | None = None


class StudyWakes:
    def __init__(self) -> None:
        self._wakes: set[Wake] = set()

    def register(self, hub: EventHub) -> None:
        hub.listen(QUEUE, self._everything)
        hub.listen(STUDIES, self._study)
        hub.listen(EVENTS, self._attempt)
        hub.on_closing(self.close)

    @contextlib.contextmanager
    def subscribe(self) -> Iterator[Wake]:
        """A wake-up on any change until the block ends, or on those of a study and its
        attempts once the watcher names them."""
        wake = Wake(asyncio.Event())
        self._wakes.add(wake)
        try:
            yield wake
        finally:
            self._wakes.discard(wake)

    def close(self) -> None:
        for wake in list(self._wakes):
            wake.closing = True
        self._everything(None)

    def _everything(self, _payload: str | None) -> None:
        for wake in list(self._wakes):
            wake.event.set()

    def _study(self, payload: str | None) -> None:
        for wake in list(self._wakes):
            if payload is None or wake.study_id is None or str(wake.study_id) == payload:
                wake.event.set()

    def _attempt(self, payload: str | None) -> None:
        # Every epoch of every attempt comes here: only the watchers of its study look.
        if not self._wakes:
            return
        if payload is None:
            self._everything(None)
            return
        try:
            attempt_id = int(json.loads(payload)["id"])
        except (ValueError, KeyError, TypeError):
            return
        for wake in list(self._wakes):
            if wake.attempt_ids is None or attempt_id in wake.attempt_ids:
                wake.event.set()
