"""Live events: one LISTEN connection per gateway, fanned out to in-process subscribers.

Writers send `pg_notify` inside their transaction (see `gateway.store.work`), so every
replica hears of an epoch or a status change once it is committed, whichever replica
ran the trainer. An epoch is read from the database once per replica and handed to
every subscriber: a thousand watchers of one attempt cost the database what one does.
The replica whose dispatcher stored it reads nothing: it hands over what it stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg

from gateway.store import AttemptStore
from gateway.store.curves import CURVES
from gateway.store.studies import STUDIES
from gateway.store.tasks import TASKS
from gateway.store.tokens import TOKENS
from gateway.store.work import EVENTS, QUEUE
from metalearn.errors import NotFound
from metalearn.waiting import cancel_and_wait, within

log = logging.getLogger(__name__)

# A subscriber this far behind is dropped; its watch resumes from the database.
_QUEUE_DEPTH = 10_000


@dataclass(frozen=True)
class Event:
    """What a subscriber receives: `kind` is "epoch", "status", "progress", "prognosis",
    "resync" (notifications may have been missed: read what is stored) or "closing" (this
    gateway is stopping)."""

    kind: str
    attempt_id: int
    epoch: int = 0
    # "epoch": the encoded `Attempt.epochs` entry; "status": the encoded Attempt;
    # "prognosis": the encoded Prognosis.
    payload: bytes = b""
    done: int = 0
    total: int = 0
    # "epoch": the same epoch as an encoded `WatchAttemptResponse`, made once for every
    # watcher of this replica (b"": each watcher encodes its own).
    response: bytes = b""


@dataclass(eq=False)  # hashed by identity: each watcher's own
class Wake:
    """Set when what a study watcher follows may have changed (it looks again); `closing`
    when this gateway stops. Until the watcher narrows it to its study and that study's
    attempts, every change sets it; queue changes always do (a trial may be new)."""

    event: asyncio.Event
    closing: bool = False
    study_id: int | None = None
    attempt_ids: frozenset[int] | None = None


class EventHub:
    """Listens for the database's notifications and hands them to subscribers."""

    def __init__(self, conninfo: str, attempts: AttemptStore, status_of: Any) -> None:
        self._conninfo = conninfo
        self._attempts = attempts
        # Builds the encoded Attempt of a status event (so this module needs no protos).
        self.status_of = status_of
        # Encodes an epoch's `WatchAttemptResponse` once for all of this replica's
        # watchers (set by the server; None: each watcher encodes its own, the baseline
        # bench/orchestration.py measures beside it).
        self.encode_epoch: Callable[[bytes], bytes] | None = None
        self._subscribers: dict[int, set[asyncio.Queue[Event]]] = {}
        # Subscribers of statuses alone, and how many of each attempt's want everything.
        self._statuses_only: set[asyncio.Queue[Event]] = set()
        self._watchers: dict[int, int] = {}
        self._wakes: set[Wake] = set()
        # Epochs of the runs this replica's dispatcher drives: those it handed to its
        # watchers itself (their notifications then read nothing), and those whose
        # notification came first (the dispatcher then hands nothing). Per run.
        self._told: dict[int, set[int]] = {}
        self._heard: dict[int, set[int]] = {}
        self.queue_changed = asyncio.Event()
        # The same news for the study driver (each waiter clears its own event): a run
        # ended, an attempt was queued or cancelled, a slot may be free.
        self.studies_changed = asyncio.Event()
        # For the task profiler: a task was added or profiled, or an attempt queued (a
        # new task may need a profile). Warm-started studies waiting for a profile too.
        self.tasks_changed = asyncio.Event()
        # Called when any token changed, or notifications may have been missed (the
        # authenticator then forgets the tokens it cached).
        self.tokens_changed: Callable[[], None] = lambda: None
        # Called when a curve model was fitted (on any replica), or notifications may have
        # been missed: this replica's curves look for the newest model at their next use.
        self.curves_changed: Callable[[], None] = lambda: None
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="event-hub")
        await within(self._ready.wait(), 30)

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)

    @contextlib.contextmanager
    def subscribe(
        self, attempt_id: int, statuses_only: bool = False
    ) -> Iterator[asyncio.Queue[Event]]:
        """Events of one attempt, from now on, until the block ends. `statuses_only`: its
        status changes (and resyncs, and closing) alone, as the dispatcher needs to hear
        of a cancellation: an attempt nobody else here watches then costs no read of its
        epochs."""
        queue: asyncio.Queue[Event] = asyncio.Queue(_QUEUE_DEPTH)
        self._subscribers.setdefault(attempt_id, set()).add(queue)
        if statuses_only:
            self._statuses_only.add(queue)
        else:
            self._watchers[attempt_id] = self._watchers.get(attempt_id, 0) + 1
        try:
            yield queue
        finally:
            subscribers = self._subscribers.get(attempt_id)
            if subscribers is not None:
                subscribers.discard(queue)
                if not subscribers:
                    del self._subscribers[attempt_id]
            if statuses_only:
                self._statuses_only.discard(queue)
            elif self._watchers.get(attempt_id, 0) <= 1:
                self._watchers.pop(attempt_id, None)
            else:
                self._watchers[attempt_id] -= 1

    @contextlib.contextmanager
    def running_here(self, attempt_id: int) -> Iterator[None]:
        """While this replica's dispatcher runs the attempt: it hands each epoch it stores
        to `stored_epoch`, and the epoch's notification reads nothing back."""
        told: set[int] = set()
        self._told[attempt_id], self._heard[attempt_id] = told, set()
        try:
            yield
        finally:
            if self._told.get(attempt_id) is told:  # not a later run's of the same attempt
                del self._told[attempt_id], self._heard[attempt_id]

    def stored_epoch(self, attempt_id: int, epoch: int, wire: bytes) -> None:
        """An epoch this replica has just stored (committed), as `epochs_after` would read
        it: its watchers here get it now, without waiting for the notification and without
        a read of what was just written. (Each epoch is stored once, so it comes here once
        and its notification once, in either order; a watcher skips an epoch it has.)"""
        told, heard = self._told.get(attempt_id), self._heard.get(attempt_id)
        if told is None or heard is None:
            return  # not running here: its notification brings it
        if epoch in heard:
            heard.discard(epoch)  # the notification came first and has been handed out
            return
        told.add(epoch)
        if attempt_id in self._watchers:
            encode = self.encode_epoch
            response = encode(wire) if encode is not None else b""
            self._publish(Event("epoch", attempt_id, epoch=epoch, payload=wire, response=response))

    @contextlib.contextmanager
    def subscribe_all(self) -> Iterator[Wake]:
        """A wake-up on any change until the block ends, or on those of a study and its
        attempts once the watcher names them (watchers of many attempts)."""
        wake = Wake(asyncio.Event())
        self._wakes.add(wake)
        try:
            yield wake
        finally:
            self._wakes.discard(wake)

    def _wake_all(self) -> None:
        for wake in list(self._wakes):
            wake.event.set()

    def end_watches(self) -> None:
        """Tells every subscriber this gateway is stopping ("closing")."""
        for attempt_id in list(self._subscribers):
            self._publish(Event("closing", attempt_id))
        for wake in list(self._wakes):
            wake.closing = True
        self._wake_all()

    def _publish(self, event: Event) -> None:
        everything = event.kind in ("epoch", "prognosis", "progress")
        for queue in list(self._subscribers.get(event.attempt_id, ())):
            if everything and queue in self._statuses_only:
                continue
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                log.warning("a watcher of attempt %s fell behind; it resyncs", event.attempt_id)
                queue.get_nowait()
                queue.put_nowait(Event("resync", event.attempt_id))

    async def _listen(self) -> None:
        """Keeps one LISTEN connection up; after a reconnect every subscriber resyncs."""
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._conninfo, autocommit=True
                ) as conn:
                    await conn.execute(f"LISTEN {EVENTS}")
                    await conn.execute(f"LISTEN {QUEUE}")
                    await conn.execute(f"LISTEN {TOKENS}")
                    await conn.execute(f"LISTEN {STUDIES}")
                    await conn.execute(f"LISTEN {TASKS}")
                    await conn.execute(f"LISTEN {CURVES}")
                    self.tokens_changed()
                    self.curves_changed()
                    for attempt_id in list(self._subscribers):
                        self._publish(Event("resync", attempt_id))
                    self._wake_all()
                    self._ready.set()
                    async for note in conn.notifies():
                        await self._handle(note.channel, note.payload)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # the database went away: retry, watchers resync
                log.warning("event listener lost its connection (%s); reconnecting", err)
                await asyncio.sleep(1)

    async def _handle(self, channel: str, payload: str) -> None:
        if channel == QUEUE:
            self.queue_changed.set()
            self.studies_changed.set()
            self.tasks_changed.set()
            self._wake_all()
            return
        if channel == STUDIES:
            for wake in list(self._wakes):
                if wake.study_id is None or str(wake.study_id) == payload:
                    wake.event.set()
            return
        if channel == TOKENS:
            self.tokens_changed()
            return
        if channel == CURVES:
            self.curves_changed()
            return
        if channel == TASKS:
            self.tasks_changed.set()
            self.studies_changed.set()  # a warm start may have waited for this profile
            return
        try:
            data = json.loads(payload)
            attempt_id = int(data["id"])
        except (ValueError, KeyError, TypeError):
            return
        # Every epoch of every attempt comes here: only the watchers of its study look.
        for wake in list(self._wakes):
            if wake.attempt_ids is None or attempt_id in wake.attempt_ids:
                wake.event.set()
        kind = data.get("kind")
        if kind == "epoch" and attempt_id in self._told:
            epoch = int(data.get("epoch", 0))
            if epoch in self._told[attempt_id]:
                self._told[attempt_id].discard(epoch)
                return  # handed out already by this replica's dispatcher
            self._heard[attempt_id].add(epoch)
        if attempt_id not in self._subscribers:
            return  # nobody here watches it: read nothing
        if kind != "status" and attempt_id not in self._watchers:
            return  # only its statuses are wanted here
        try:
            if kind == "epoch":
                epoch = int(data["epoch"])
                wire = await self._attempts.epochs_after(attempt_id, epoch - 1, epoch)
                if wire:
                    encode = self.encode_epoch
                    response = encode(wire) if encode is not None else b""
                    self._publish(
                        Event("epoch", attempt_id, epoch=epoch, payload=wire, response=response)
                    )
            elif kind == "status":
                self._publish(Event("status", attempt_id, payload=await self.status_of(attempt_id)))
            elif kind == "prognosis":
                prognosis = await self._attempts.prognosis_wire(attempt_id)
                if prognosis is not None:
                    self._publish(Event("prognosis", attempt_id, payload=prognosis))
            elif kind == "progress":
                self._publish(
                    Event("progress", attempt_id, done=int(data["done"]), total=int(data["total"]))
                )
        except NotFound:
            self._publish(Event("status", attempt_id))  # deleted: empty payload
