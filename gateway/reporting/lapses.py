"""Runs whose reporter went silent: FAILED once their heartbeat has passed without a
report. A reporter's process that died, or a machine that went away, cannot say so; its
run would otherwise stay TRAINING for good. Every replica runs this loop: the statement
that fails a run expects it still TRAINING and lapsed, so two replicas never both do."""

from __future__ import annotations

import asyncio
import logging

from gateway.store.reports import ReportStore

log = logging.getLogger(__name__)

# How often lapsed runs are looked for: heartbeats are at least 10 s, so a run is failed
# within a few seconds of its lapse.
EVERY_SECONDS = 2.0


class Lapses:
    name = "reported-run-lapses"

    def __init__(self, reports: ReportStore, every_seconds: float = EVERY_SECONDS) -> None:
        self._reports = reports
        self._every = every_seconds

    async def run(self) -> None:
        while True:
            try:
                for attempt_id, name in await self._reports.expire_lost():
                    log.warning("reported run %s (id %d) lost: its reporter went silent",
                                name, attempt_id)  # fmt: skip
            except Exception as err:  # the database away a moment: the next pass finds them
                log.warning("looking for lapsed reported runs: %s", type(err).__name__)
            await asyncio.sleep(self._every)
