"""The rankings every caller shares, kept fitted beside the server. A suggestion's first
ranking over a large store is a minute of reads and one core's CPU (500 tasks of a
million attempts); fitted here when the gateway starts, and refitted as the history
grows, it is ready before the first caller asks. Callers whose own claims change what
they learn from (`Learner._counted`) still fit their own on their first call."""

from __future__ import annotations

import asyncio
import logging

from gateway.tasks.learner import Learner, history_of_kind
from learning.tasks import transfer

log = logging.getLogger(__name__)

# How often the history is looked at: a cheap statement when nothing changed (the
# learning stamp), a refit in the background when the history grew enough.
EVERY_SECONDS = 60.0


class KeptRankings:
    name = "kept-rankings"

    def __init__(self, learner: Learner, every_seconds: float = EVERY_SECONDS) -> None:
        self._learner = learner
        self._every = every_seconds

    async def once(self) -> list[bool]:
        """Fits (or finds kept) the shared ranking of each kind with enough past tasks to
        rank from; returns the kinds (declared or not) it holds one for."""
        known = await self._learner.known()
        kinds = []
        for declared in (False, True):
            if history_of_kind(known, declared)[0] > transfer.MIN_TASKS:
                await self._learner.transfer(known, declared)
                kinds.append(declared)
        return kinds

    async def run(self) -> None:
        while True:
            try:
                await self.once()
            except Exception as err:  # the database away a moment: the next pass fits it
                log.warning("fitting the shared rankings: %s", type(err).__name__)
            await asyncio.sleep(self._every)
