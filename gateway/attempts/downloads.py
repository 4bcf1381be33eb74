"""How many stored files a gateway streams out at once.

Each download holds one piece of its file (1 MiB) and what grpc buffers for a slow
reader, and takes a short database statement per piece: cheap, but not free, and a
caller could open hundreds. So at most `limit` run at once; one more waits its turn up
to `wait_seconds` (holding nothing but its place), then is refused with
RESOURCE_EXHAUSTED, which a client retries later.
"""

from __future__ import annotations

from gateway.slots import Slots

DOWNLOADS = 4
WAIT_SECONDS = 10.0


class DownloadSlots(Slots):
    """At most `limit` downloads at once; a caller waits up to `wait_seconds` for one."""

    def __init__(self, limit: int = DOWNLOADS, wait_seconds: float = WAIT_SECONDS) -> None:
        super().__init__("downloads", limit, wait_seconds)
