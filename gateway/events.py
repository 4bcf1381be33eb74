"""Live events: one LISTEN connection per gateway, fanned out to in-process subscribers.

Writers send `pg_notify` inside their transaction (see `gateway.store.work`), so every
replica hears of an epoch or a status change once it is committed, whichever replica
ran the trainer. An epoch is read from the database once per replica and handed to
every subscriber: a thousand watchers of one attempt cost the database what one does.
The replica whose dispatcher stored it reads nothing: it hands over what it stored.

Attempts' events (epochs, statuses, prognoses, progress) are the hub's own. Every other
channel belongs to a feature, which registers a handler for it where the server is
assembled (`listen`): the dispatcher hears of the queue, studies of their changes, the
authenticator of tokens, the curves of new models. A handler is also called with None
when the listening connection (re)connects: notifications may have been missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

import psycopg

from gateway.store import AttemptStore
from gateway.store.work import EVENTS
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


class EventHub:
    """Listens for the database's notifications and hands them to subscribers."""

    def __init__(
        self,
        conninfo: str,
        attempts: AttemptStore,
        status_of: Callable[[int], Awaitable[bytes]],
        encode_epoch: Callable[[bytes], bytes] | None = None,
    ) -> None:
        self._conninfo = conninfo
        self._attempts = attempts
        # Builds the encoded Attempt of a status event (so this module needs no protos).
        self.status_of = status_of
        # Encodes an epoch's `WatchAttemptResponse` once for all of this replica's
        # watchers (None: each watcher encodes its own, the baseline
        # bench/orchestration.py measures beside it).
        self.encode_epoch = encode_epoch
        self._subscribers: dict[int, set[asyncio.Queue[Event]]] = {}
        # Subscribers of statuses alone, and how many of each attempt's want everything.
        self._statuses_only: set[asyncio.Queue[Event]] = set()
        self._watchers: dict[int, int] = {}
        # Epochs of the runs this replica's dispatcher drives: those it handed to its
        # watchers itself (their notifications then read nothing), and those whose
        # notification came first (the dispatcher then hands nothing). Per run.
        self._told: dict[int, set[int]] = {}
        self._heard: dict[int, set[int]] = {}
        # The features' handlers, by channel, and what to tell when this gateway stops.
        self._handlers: dict[str, list[Callable[[str | None], None]]] = {EVENTS: []}
        self._on_closing: list[Callable[[], None]] = []
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    def listen(self, channel: str, handler: Callable[[str | None], None]) -> None:
        """Calls `handler(payload)` on each notification of `channel`, and
        `handler(None)` whenever notifications may have been missed (a reconnect).
        Handlers are registered before the hub starts (where the server is assembled);
        they must be quick and not raise (they run on the listening task)."""
        if self._task is not None:
            raise RuntimeError("handlers are registered before the hub starts")
        self._handlers.setdefault(channel, []).append(handler)

    def on_closing(self, handler: Callable[[], None]) -> None:
        """Calls `handler()` when this gateway stops, beside telling attempts' watchers."""
        if self._task is not None:
            raise RuntimeError("handlers are registered before the hub starts")
        self._on_closing.append(handler)

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

    def end_watches(self) -> None:
        """Tells every subscriber this gateway is stopping ("closing")."""
        for attempt_id in list(self._subscribers):
            self._publish(Event("closing", attempt_id))
        for handler in self._on_closing:
            handler()

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
                    for channel in self._handlers:  # names of the stores' constants
                        await conn.execute(f"LISTEN {channel}")
                    for attempt_id in list(self._subscribers):
                        self._publish(Event("resync", attempt_id))
                    self._tell_all(None)
                    self._ready.set()
                    async for note in conn.notifies():
                        await self._handle(note.channel, note.payload)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # the database went away: retry, watchers resync
                log.warning("event listener lost its connection (%s); reconnecting", err)
                await asyncio.sleep(1)

    def _tell_all(self, payload: str | None) -> None:
        for handlers in self._handlers.values():
            self._tell(handlers, payload)

    def _tell(self, handlers: list[Callable[[str | None], None]], payload: str | None) -> None:
        for handler in handlers:
            try:
                handler(payload)
            except Exception:  # one broken feature must not silence the others
                log.exception("a handler of a notification")

    async def _handle(self, channel: str, payload: str) -> None:
        self._tell(self._handlers.get(channel, []), payload)
        if channel != EVENTS:
            return
        try:
            data = json.loads(payload)
            attempt_id = int(data["id"])
        except (ValueError, KeyError, TypeError):
            return
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
