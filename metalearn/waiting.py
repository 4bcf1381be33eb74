"""Waiting with a time limit that a cancellation always ends.

Not `asyncio.wait_for`: on Python 3.11 it swallows a cancellation that arrives in the
same turn as the awaited thing finishing (CPython gh-86296, fixed in 3.12 by
reimplementing it on `asyncio.timeout`). A background loop that waits on an event which
is set often (the dispatcher's queue, the profiler's tasks) then goes on running after
its stop cancelled it, and the gateway's shutdown waits for it forever: seen as a
gateway that did not exit after SIGTERM. `asyncio.timeout` counts cancellations
(`Task.uncancel`) and re-raises them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

T = TypeVar("T")


async def within(awaitable: Awaitable[T], seconds: float) -> T:
    """The awaitable's result; TimeoutError after `seconds`."""
    async with asyncio.timeout(seconds):
        return await awaitable


async def wait_set(event: asyncio.Event, seconds: float) -> bool:
    """True once `event` is set, False after `seconds` without it."""
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True


async def cancel_and_wait(task: asyncio.Task[Any], patience: float = 1.0) -> None:
    """Cancels `task` and waits until it has ended, cancelling again every `patience`
    seconds. One cancel is not always enough on Python 3.11: a cancellation that
    arrives as an inner `wait_for` finishes is swallowed (gh-86296), and libraries wait
    that way (psycopg_pool's getconn, its scheduler), so a background loop can absorb
    one cancel inside a database call and go on. A task's own exception is raised."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=patience)
    if not task.cancelled():
        task.result()
