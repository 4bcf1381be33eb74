"""Where a request's read goes: a streaming replica, or the primary.

Read-your-writes as GitLab's database load balancing does it: after a caller's write
its primary WAL position (LSN) is noted, and its reads go to a replica only once that
replica has replayed past it (one cheap statement on the replica's own connection:
`pg_last_wal_replay_lsn()`); until then to the primary. Callers are kept in an LRU of
`max_callers`; one dropped from it raises a floor every read must see, so memory stays
bounded and no caller ever reads before its own write.

A replica that is down (its `Database` watcher says so) or behind is skipped; with none
left the primary answers. Replicas are tried in turn (round-robin), so several share
the reads.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import psycopg
import psycopg_pool
from psycopg.rows import TupleRow

from gateway.auth.roles import current
from gateway.store.database import Database

log = logging.getLogger(__name__)

# The LSN the reads of this task must see beyond the caller's own writes (a watch asks
# for everything committed when it subscribed).
_AT_LEAST: contextvars.ContextVar[int] = contextvars.ContextVar("read_at_least", default=0)
MAX_CALLERS = 10_000
# Past any position: what a caller whose write's position is unknown must see.
UNKNOWN = 2**64 - 1


def lsn_value(text: str) -> int:
    """An LSN as PostgreSQL prints it ("16/B374D848") as a number."""
    high, low = text.split("/")
    return (int(high, 16) << 32) | int(low, 16)


def _caller() -> str | None:
    try:
        return current().name
    except Exception:  # the service's own work, outside any call: no caller to follow
        return None


class ReadRouter(psycopg_pool.AsyncConnectionPool[psycopg.AsyncConnection[TupleRow]]):
    """Reads over `replicas`, writes' positions from `primary`; with no replica every read
    is the primary's (and nothing is noted). A pool for the stores' sake, as `Database`
    is: only `connection()` is served, and its own pool machinery is never opened."""

    def __init__(
        self, primary: Database, replicas: Sequence[Database] = (), max_callers: int = MAX_CALLERS
    ) -> None:
        super().__init__(primary.conninfo, min_size=1, max_size=1, open=False)
        self.primary = primary
        self.replicas = list(replicas)
        self._max_callers = max_callers
        self._written: OrderedDict[str, int] = OrderedDict()
        self._floor = 0
        self._newest = 0
        self._turn = 0

    async def position(self) -> int:
        """The primary's WAL position now: everything committed so far lies before it."""
        async with self.primary.connection() as conn:
            cur = await conn.execute("SELECT pg_current_wal_lsn()::text")
            row = await cur.fetchone()
        assert row is not None
        return lsn_value(str(row[0]))

    async def wrote(self, caller: str) -> None:
        """Notes that `caller` may have written: its reads see the primary's position now.
        Never raises (it runs as a call ends): a position that cannot be had sends the
        caller's reads to the primary until its next write is noted."""
        if not self.replicas:
            return
        try:
            lsn = await self.position()
        except Exception as err:  # the primary is gone: its reads must not go stale
            log.warning("no WAL position for %s's write (%s): its reads go to the primary",
                        caller, type(err).__name__)  # fmt: skip
            lsn = UNKNOWN
        self._written[caller] = lsn  # positions only grow: the newest is the one to see
        self._written.move_to_end(caller)
        if lsn != UNKNOWN:
            self._newest = max(self._newest, lsn)
        while len(self._written) > self._max_callers:
            _, dropped = self._written.popitem(last=False)
            # (An unknown position becomes the newest known one: the floor must not
            # send every read to the primary for good.)
            self._floor = max(self._floor, min(dropped, self._newest))

    @contextlib.contextmanager
    def at_least(self, lsn: int) -> Iterator[None]:
        """Reads in this block see at least `lsn` (a watch: what was committed when it
        subscribed, so no epoch falls between its snapshot and its events)."""
        token = _AT_LEAST.set(max(lsn, _AT_LEAST.get()))
        try:
            yield
        finally:
            _AT_LEAST.reset(token)

    def _needed(self) -> int:
        caller = _caller()
        own = self._written.get(caller, 0) if caller is not None else 0
        return max(self._floor, own, _AT_LEAST.get())

    @contextlib.asynccontextmanager
    async def fresh(self) -> AsyncIterator[None]:
        """Reads in this block see everything committed before it began."""
        if not self.replicas:
            yield
            return
        with self.at_least(await self.position()):
            yield

    @contextlib.asynccontextmanager
    async def connection(  # the pool's signature, timeout included
        self,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> AsyncIterator[psycopg.AsyncConnection[TupleRow]]:
        """A connection for one read: a replica's that has replayed what the reader
        must see, else the primary's."""
        needed = self._needed()
        count = len(self.replicas)
        first = self._turn
        self._turn = (self._turn + 1) % max(count, 1)
        for i in range(count):
            replica = self.replicas[(first + i) % count]
            if not replica.up:
                continue
            async with contextlib.AsyncExitStack() as stack:
                try:
                    conn = await stack.enter_async_context(replica.connection(timeout))
                    if needed and not await _replayed(conn, needed):
                        continue
                except psycopg.OperationalError as err:  # gone: the next one, or the primary
                    log.warning("read replica unavailable: %s", type(err).__name__)
                    continue
                yield conn
                return
        async with self.primary.connection(timeout) as conn:
            yield conn


async def _replayed(conn: psycopg.AsyncConnection[Any], lsn: int) -> bool:
    cur = await conn.execute("SELECT pg_last_wal_replay_lsn()::text")
    row = await cur.fetchone()
    return row is not None and row[0] is not None and lsn_value(str(row[0])) >= lsn
