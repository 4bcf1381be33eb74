"""Every reporting stream's points, written together: a group commit.

A thousand runs reporting once a second each were a thousand statements a second, and
the gateway's event loop and PostgreSQL spent most of their time on statements rather
than points (watchers then heard of an epoch seconds late). Reports are queued here and
one loop writes all that waits in one statement (`ReportStore.report`), while the next
ones gather: the busier the gateway, the more each statement carries. Each report's
caller is answered once its points are committed, so an acknowledgement still means
stored. Hand-written: the batching is a list and a future per report.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from gateway.reporting.checks import Points, array_literals
from gateway.store.reports import ReportStore
from metalearn import errors
from metalearn.waiting import cancel_and_wait

log = logging.getLogger(__name__)

# The most points one statement carries (a report larger than this goes alone).
MAX_STATEMENT_POINTS = 200_000
# Statements in flight at once. One at a time, each report waited for the statement
# before it and then its own, and a statement's time is mostly waiting (PostgreSQL, and
# the busy event loop to resume it): with a thousand runs, 85 ms a statement at the
# median and the writer never idle (bench/reporting.py: watch p99 850 ms with one, 395
# with 3, 475 with 6, in one session). A stream sends its next batch only once the last
# is acknowledged, so statements in flight together hold one run's rows only when a
# reporter reconnected and sent again; should two then lock in opposite orders,
# PostgreSQL fails one of them and its reporters send again (each point is stored once).
STATEMENTS = 3


@dataclass
class _Report:
    attempt_id: int
    heartbeat: int
    points: list[Points]
    series: dict[str, int]
    done: asyncio.Future[int | None]

    @property
    def size(self) -> int:
        return sum(len(p.steps) for p in self.points)


def _joined(literals: list[str]) -> str:
    """Array literals of several reports as one."""
    return "{" + ",".join(x[1:-1] for x in literals if x != "{}") + "}"


class ReportWriter:
    name = "report-writer"

    def __init__(self, reports: ReportStore, statements: int = STATEMENTS) -> None:
        self._reports = reports
        self._waiting: list[_Report] = []
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(statements)

    async def report(
        self, attempt_id: int, heartbeat: int, points: list[Points], series: dict[str, int]
    ) -> int | None:
        """Stores a run's points and renews its lease; the points newly stored, or None
        when the run is no longer live."""
        done: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Report(attempt_id, heartbeat, points, series, done))
        self._wake.set()
        return await done

    async def run(self) -> None:
        writing: set[asyncio.Task[None]] = set()
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._waiting:
                    # What waits when a slot frees goes in one statement.
                    await self._slots.acquire()
                    task = asyncio.create_task(self._write_then_free(self._take()))
                    writing.add(task)
                    task.add_done_callback(writing.discard)
        finally:
            for task in list(writing):
                with contextlib.suppress(Exception):  # each told its reports already
                    await cancel_and_wait(task)
            # The gateway is stopping: whoever waits is told, not left hanging.
            for report in self._waiting:
                if not report.done.done():
                    report.done.set_exception(errors.Unavailable("the gateway is stopping"))
            self._waiting = []

    def _take(self) -> list[_Report]:
        """The waiting reports one statement carries: in order, up to its size."""
        size, count = 0, 0
        for report in self._waiting:
            if count and size + report.size > MAX_STATEMENT_POINTS:
                break
            size += report.size
            count += 1
        taken, self._waiting = self._waiting[:count], self._waiting[count:]
        return taken

    async def _write_then_free(self, taken: list[_Report]) -> None:
        try:
            await self._write(taken)
        finally:
            self._slots.release()

    async def _write(self, taken: list[_Report]) -> None:
        parts = [array_literals(r.points, r.series) for r in taken if r.points]
        points = tuple(_joined([p[i] for p in parts]) for i in range(4)) if parts else None
        try:
            live = await self._reports.report(
                [(r.attempt_id, r.heartbeat) for r in taken],
                points,  # type: ignore[arg-type]
            )
        except BaseException as err:
            for report in taken:
                if not report.done.done():
                    report.done.set_exception(
                        err if isinstance(err, Exception) else errors.Unavailable("stopping")
                    )
            if not isinstance(err, Exception):
                raise
            return
        for report in taken:
            if not report.done.done():
                report.done.set_result(live.get(report.attempt_id))
