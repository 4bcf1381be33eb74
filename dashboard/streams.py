"""Server-sent events from the gateway's watch streams, kept alive across a gateway's
restart: a stream that breaks with UNAVAILABLE (the gateway stopping, restarting, out
of reach) is opened again after a growing pause, from where it was (the caller's
`open` resumes from the last epoch it saw), while the browser is told it is
reconnecting. Other refusals end the events with `failure`; the stream's own end, `end`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.responses import Response, StreamingResponse

from metalearn.client import MetalearnError
from metalearn.waiting import within

# A comment on an idle event stream this often, so proxies keep it open.
KEEPALIVE = 15.0
# Seconds before each new try of a broken stream (the last repeats): about as long as a
# gateway takes to restart, then no more than one try every 10 s.
BACKOFF = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 10.0)
# What a gateway that is stopping, restarting or unreachable answers.
RETRYABLE = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED"})


@dataclass(frozen=True)
class Reconnecting:
    """The stream broke; it is opened again after `delay` seconds (try `tries`)."""

    message: str
    delay: float
    tries: int


def sse(event: str, data: Any, event_id: str | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, allow_nan=False)}\n\n"


async def resilient(
    open_stream: Callable[[], AsyncIterator[Any]], backoff: Sequence[float] = BACKOFF
) -> AsyncIterator[Any]:
    """The messages of `open_stream()`, opened again after a retryable failure (with a
    `Reconnecting` item before each pause); a `MetalearnError` that is not retryable is
    raised. The pauses start again from the first once a message arrives."""
    tries = 0
    while True:
        try:
            async for item in open_stream():
                tries = 0
                yield item
            return
        except MetalearnError as err:
            if err.code not in RETRYABLE:
                raise
            delay = backoff[min(tries, len(backoff) - 1)] * random.uniform(0.8, 1.2)
            tries += 1
            yield Reconnecting(err.message, round(delay, 2), tries)
            await asyncio.sleep(delay)


def event_stream(
    open_stream: Callable[[], AsyncIterator[Any]],
    encode: Callable[[Any], str | None],
    backoff: Sequence[float] = BACKOFF,
) -> Response:
    """Server-sent events from a gateway stream (opened again as `resilient` says), with
    keep-alive comments while it is quiet; `reconnecting` while the gateway is away,
    `end` when the gateway ends it, `failure` when it refuses."""

    async def events() -> AsyncIterator[str]:
        queue: asyncio.Queue[Any] = asyncio.Queue()
        done = object()

        async def pump() -> None:
            try:
                async for item in resilient(open_stream, backoff):
                    await queue.put(item)
                await queue.put(done)
            except MetalearnError as err:
                await queue.put(err)

        task = asyncio.create_task(pump())
        try:
            yield "retry: 1000\n\n"
            while True:
                try:
                    item = await within(queue.get(), KEEPALIVE)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                if item is done:
                    yield sse("end", {})
                    return
                if isinstance(item, MetalearnError):
                    yield sse("failure", {"code": item.code, "message": item.message})
                    return
                if isinstance(item, Reconnecting):
                    yield sse(
                        "reconnecting",
                        {"message": item.message, "delay": item.delay, "tries": item.tries},
                    )
                    continue
                text = encode(item)
                if text:
                    yield text
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, MetalearnError):
                await task

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"cache-control": "no-store", "x-accel-buffering": "no"},
    )
