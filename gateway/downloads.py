"""How many stored files a gateway streams out at once.

Each download holds one piece of its file (1 MiB) and what grpc buffers for a slow
reader, and takes a short database statement per piece: cheap, but not free, and a
caller could open hundreds. So at most `limit` run at once; one more waits its turn up
to `wait_seconds` (holding nothing but its place), then is refused with
RESOURCE_EXHAUSTED, which a client retries later.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from metalearn import errors

DOWNLOADS = 4
WAIT_SECONDS = 10.0


class DownloadSlots:
    """At most `limit` downloads at once; a caller waits up to `wait_seconds` for one."""

    def __init__(self, limit: int = DOWNLOADS, wait_seconds: float = WAIT_SECONDS) -> None:
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
                f"{self.limit} downloads are under way, the most this gateway streams at"
                f" once, and none ended within {self.wait_seconds:g} s: try again later"
            ) from None
        try:
            yield
        finally:
            self._slots.release()
