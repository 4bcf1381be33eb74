"""Slots: at most so many of one kind of costly work at once, whoever asks.

Per-principal limits (`gateway.auth.budget`) stop one token from taking the service;
they do not stop ten tokens. Work whose cost the caller chooses (a filtered scan of
the store, a stream of a large file) also takes a share of the whole: at most `limit`
at once, and one more waits its turn (holding nothing but its place: no connection)
up to `wait_seconds`, then is refused with RESOURCE_EXHAUSTED, which a client retries
later. What stays free (connections, the database's CPU) serves everything else.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from metalearn import errors


class Slots:
    """At most `limit` of `what` at once; a caller waits up to `wait_seconds` for one."""

    def __init__(self, what: str, limit: int, wait_seconds: float) -> None:
        self.what = what
        self.limit = limit
        self.wait_seconds = wait_seconds
        self._slots = asyncio.Semaphore(limit)

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        try:
            async with asyncio.timeout(self.wait_seconds):
                await self._slots.acquire()
        except TimeoutError:
            raise errors.ResourceExhausted(
                f"{self.limit} {self.what} are under way, the most this gateway runs at"
                f" once, and none ended within {self.wait_seconds:g} s: try again later"
            ) from None
        try:
            yield
        finally:
            self._slots.release()
