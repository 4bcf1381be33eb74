"""The connection pool, migrations, and the inner error boundary (psycopg -> domain).

`Database` is what the stores are handed: a pool that knows whether PostgreSQL is there
(docs/architecture.md §9). While it is down, calls fail at once with UNAVAILABLE instead of waiting
for the pool's timeout, health listeners hear of it, and once it is back a fresh pool
serves within one probe, whatever the pool's own reconnection backoff had grown to.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import datetime
from importlib import resources

import psycopg
import psycopg.conninfo
import psycopg_pool
from psycopg import errors as pg_errors
from psycopg.rows import TupleRow

from metalearn import errors
from metalearn.waiting import cancel_and_wait, wait_set

log = logging.getLogger(__name__)

# Any constant works: replicas starting together take turns at migrating.
_MIGRATION_LOCK = 0x6D6C_6D69_6772

# How often the monitor asks the server whether it is there (a call's connection error
# asks at once). While it is down this bounds the wait once it is back.
PROBE_SECONDS = 0.5
# A probe that takes this long counts as a failure (libpq's shortest connect timeout).
PROBE_TIMEOUT = 2.0
# A fresh pool must hold its first connections within this, or the server is not back.
REOPEN_TIMEOUT = 5.0

# Called with True when the database is back, False when it went away.
HealthListener = Callable[[bool], Awaitable[None]]


def with_statement_timeout(conninfo: str, seconds: float | None) -> str:
    """`conninfo` whose sessions cancel any statement running past `seconds`.

    Set as a startup option (libpq's `options`), so it costs no round trip and holds
    for every statement of every connection, whatever the code running on it forgets.
    """
    if not seconds:
        return conninfo
    params = psycopg.conninfo.conninfo_to_dict(conninfo)
    ms = max(1, round(seconds * 1000))
    options = f"{params.get('options') or ''} -c statement_timeout={ms}".strip()
    return psycopg.conninfo.make_conninfo(conninfo, options=options)


class DatabaseDown(psycopg.OperationalError):
    """Raised at once, with nothing sent, while the database is known to be down.

    An OperationalError, like the pool's own timeouts, so anything that handles a
    database that cannot be reached handles this one too.
    """


@contextlib.contextmanager
def translate_db_errors() -> Iterator[None]:
    """Turns the database errors a client can cause into domain errors."""
    try:
        yield
    except pg_errors.UniqueViolation as err:
        raise errors.AlreadyExists(f"already exists ({_names(err)})") from err
    # Validation names the field first; this backstop keeps any value PostgreSQL refuses
    # (class 22, data exceptions) a client error rather than a bug.
    except (pg_errors.CheckViolation, psycopg.DataError) as err:
        raise errors.InvalidArgument.one(
            "request", f"refused by the database ({_names(err)})"
        ) from err
    except pg_errors.ProgramLimitExceeded as err:
        # A value past one of PostgreSQL's own limits (an index entry's size, a JSON
        # nesting depth): the request's data, not the server's state.
        raise errors.InvalidArgument.one(
            "request", f"too large for the database to store ({_names(err)})"
        ) from err
    except (pg_errors.DiskFull, pg_errors.OutOfMemory) as err:
        # The server is there but cannot take this write: the transaction rolled back,
        # so nothing of the call was kept, and nothing acknowledged before is touched.
        log.warning("database out of resources: %s", type(err).__name__)
        what = "disk space" if isinstance(err, pg_errors.DiskFull) else "memory"
        raise errors.ResourceExhausted(
            f"the database is out of {what}: nothing of this call was kept;"
            " try again once an operator made room"
        ) from err
    except DatabaseDown as err:
        # Known down: the monitor logged the outage once, not once per call.
        raise errors.Unavailable("database unavailable") from err
    except pg_errors.QueryCanceled as err:
        # The request's statement budget ran out (statement_timeout): the caller asked
        # for more work than one request may cost; the server itself is fine.
        raise errors.ResourceExhausted(
            "the query took longer than one request may take on this gateway:"
            " narrow the filter, or ask for a smaller page"
        ) from err
    except psycopg.OperationalError as err:  # PoolTimeout and PoolClosed are ones too
        log.warning("database unavailable: %s", err)
        raise errors.Unavailable(f"database unavailable ({type(err).__name__})") from err


def _names(err: psycopg.Error) -> str:
    """The table, column and constraint an error is about, from its diagnostic fields.

    Never the messages: PostgreSQL's detail quotes the row ("Key (name)=(...) already
    exists", "Failing row contains (...)") and its primary message often the value
    ('invalid input syntax for type integer: "..."'), which would hand other rows, or
    parts of documents the client never sees, back in an error.
    """
    diag = err.diag
    parts = [
        f"{what} {name}"
        for what, name in (
            ("table", diag.table_name),
            ("column", diag.column_name),
            ("constraint", diag.constraint_name),
        )
        if name
    ]
    return ", ".join([*parts, type(err).__name__])


def _migrations() -> list[tuple[int, str, str]]:
    """Every migration shipped with the package, as (version, name, sql), in order."""
    found = []
    for entry in resources.files("gateway.store").joinpath("migrations").iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append((version, entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found)


# A migration waits at most this long for a table's lock, then gives up and tries again.
# Running replicas may hold a transaction open (a study's row lock) while they await a
# query on another connection; that query queues behind the migration's ALTER, and the
# three wait on each other in a cycle PostgreSQL cannot see. Giving up breaks it (the
# practice of strong_migrations and GitLab's migration helpers).
_MIGRATION_LOCK_TIMEOUT = "5s"
_MIGRATION_TRIES = 30


async def migrate(conninfo: str) -> list[str]:
    """Applies the migrations this database lacks; returns their names."""
    for attempt in range(1, _MIGRATION_TRIES + 1):
        try:
            return await _migrate_once(conninfo)
        except pg_errors.LockNotAvailable:
            if attempt == _MIGRATION_TRIES:
                raise
            log.warning("migrations: a table is busy (try %d): trying again", attempt)
            await asyncio.sleep(min(attempt, 5))
    raise AssertionError("unreachable")


async def _migrate_once(conninfo: str) -> list[str]:
    applied: list[str] = []
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=False) as conn:
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        await conn.execute(f"SET LOCAL lock_timeout = '{_MIGRATION_LOCK_TIMEOUT}'")
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        cur = await conn.execute("SELECT version FROM schema_migrations")
        done = {row[0] for row in await cur.fetchall()}
        for version, name, sql in _migrations():
            if version in done:
                continue
            log.info("applying migration %s", name)
            await conn.execute(sql.encode())
            await conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, name)
            )
            applied.append(name)
        await conn.commit()
    return applied


def _means_unreachable(err: psycopg.OperationalError) -> bool:
    """Whether an error says the server may be gone (then it is probed at once).

    Deadlocks, serialisation failures, lock and statement timeouts are OperationalErrors
    too, but they come from a server that is there; client-side errors (no SQLSTATE:
    a broken socket, the pool's timeout), connection exceptions (08) and shutdowns
    (57P) are the ones worth a look.
    """
    state = err.sqlstate
    return state is None or state.startswith(("08", "57P"))


class Database(psycopg_pool.AsyncConnectionPool[psycopg.AsyncConnection[TupleRow]]):
    """A connection pool that watches its server, and renews itself when it returns.

    Stores keep using `connection()` and `conninfo` as they would on a pool (this class
    is one for their type's sake; its own pool machinery is never opened: every
    connection comes from the live inner pool, replaced as a whole after an outage).
    Only `connection()` is served; `getconn`/`putconn` are not. (Being a subclass, its
    private names must not clash with the pool's: the pool has a `_check`, for one.)

    A monitor task probes the server every `probe_seconds` on a connection of its own,
    and at once when a call meets a connection error. A failed probe marks the database
    down: calls then raise `DatabaseDown` without touching the network, the pool is
    closed (its waiting callers fail now, not after `timeout`), and listeners hear
    False. A probe that succeeds again opens a new pool, swaps it in, and listeners hear
    True. A server that restarted between two probes (its start time changed) gets a new
    pool too: every connection of the old one is broken.
    """

    def __init__(
        self,
        conninfo: str,
        min_size: int,
        max_size: int,
        *,
        timeout: float = 10.0,
        probe_seconds: float = PROBE_SECONDS,
        statement_timeout: float | None = None,
        service_size: int = 0,
        service_statement_timeout: float | None = None,
        prepare: Callable[[str], Awaitable[object]] | None = None,
    ) -> None:
        super().__init__(
            conninfo, min_size=min_size, max_size=max_size, open=False, timeout=timeout
        )
        self.up = False
        self._dsn = conninfo
        self._request_dsn = with_statement_timeout(conninfo, statement_timeout)
        self._probe_seconds = probe_seconds
        self._live: psycopg_pool.AsyncConnectionPool | None = None
        self._probe_conn: psycopg.AsyncConnection[TupleRow] | None = None
        self._server_started: datetime | None = None
        self._last_error: BaseException | None = None
        self._down_since = 0.0
        self._generation = 0
        self._listeners: list[HealthListener] = []
        self._suspect = asyncio.Event()
        self._monitor: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()
        # Run once before the first connection is used (migrations), when the server
        # is first reached: at open, or later if it was not there then.
        self._prepare = prepare
        self._serving = asyncio.Event()
        # The service's own lane (dispatcher, study driver, profiler, fits): connections
        # no request can take, so a flood of calls never stops training (docs/architecture.md §9).
        self.service: Database = self
        if service_size > 0:
            self.service = Database(
                conninfo,
                min(min_size, service_size),
                service_size,
                timeout=timeout,
                probe_seconds=probe_seconds,
                statement_timeout=service_statement_timeout,
            )

    def add_listener(self, listener: HealthListener) -> None:
        """`listener(up)` is awaited whenever the database goes away or comes back."""
        self._listeners.append(listener)

    @contextlib.asynccontextmanager
    async def connection(  # the pool's signature, timeout included
        self,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> AsyncIterator[psycopg.AsyncConnection[TupleRow]]:
        live = self._live
        if live is None or not self.up:
            raise DatabaseDown("the database is unavailable")
        try:
            async with live.connection(timeout) as conn:
                yield conn
        except psycopg.OperationalError as err:
            # Noticed by a call before the timer: probe now, so the next calls fail
            # fast and health changes within a round trip.
            if _means_unreachable(err):
                self._suspect.set()
            raise

    async def open(
        self,
        wait: bool = False,
        timeout: float = 30.0,  # noqa: ASYNC109
        *,
        allow_down: bool = False,
    ) -> None:
        """Connects and starts watching. A server that cannot be reached raises, or
        with `allow_down` counts as down: calls fail with UNAVAILABLE and health
        listeners hear True once it is there (`until_up` waits for that)."""
        if self._monitor is not None:
            return
        started = await self._probe()
        if started is None and not allow_down:
            raise psycopg.OperationalError(f"cannot reach the database: {self._last_error}")
        if started is not None:
            await self._run_prepare()
            self._live = await self._new_pool(timeout if wait else None)
            self._server_started = started
            self._mark_up()
        else:
            self._down_since = asyncio.get_running_loop().time()
            log.warning(
                "the database cannot be reached (%s): waiting for it; calls fail with"
                " UNAVAILABLE until it is there",
                self._last_error,
            )
        self._monitor = asyncio.create_task(self._watch(), name="database-monitor")
        if self.service is not self:
            await self.service.open(wait, timeout, allow_down=allow_down)

    async def until_up(self) -> None:
        """Returns once the database serves (at once if it does)."""
        await self._serving.wait()
        if self.service is not self:
            await self.service.until_up()

    def _mark_up(self) -> None:
        self.up = True
        self._serving.set()

    async def _run_prepare(self) -> None:
        if self._prepare is not None:
            await self._prepare(self._dsn)
            self._prepare = None

    async def close(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        if self.service is not self:
            await self.service.close(timeout)
        if self._monitor is not None:
            await cancel_and_wait(self._monitor)
            self._monitor = None
        self.up = False
        self._serving.clear()
        live, self._live = self._live, None
        if live is not None:
            await live.close(timeout)
        await asyncio.gather(*self._closing, return_exceptions=True)
        await self._drop_probe_connection()

    async def _watch(self) -> None:
        while True:  # `open` has just probed: wait first
            await wait_set(self._suspect, self._probe_seconds)
            # Cleared before the probe: a call failing meanwhile asks for another.
            self._suspect.clear()
            try:
                await self._look()
            except asyncio.CancelledError:
                raise
            except Exception:  # the monitor must outlive any surprise: log it, go on
                log.exception("database monitor")
            # However many calls fail at once, at most one probe per round trip or so.
            await asyncio.sleep(0.02)

    async def _look(self) -> None:
        started = await self._probe()
        if started is None:
            if self.up:
                await self._went_down()
            return
        if self.up and started == self._server_started:
            return
        try:
            await self._run_prepare()
        except psycopg.Error as err:  # e.g. still starting up, or a lock held by a peer
            log.warning("the database answers but its schema cannot be brought up yet (%s)", err)
            return
        # Back, or restarted under us. A new pool starts with no reconnection backoff
        # and no broken connections; the old one (already closed if we were down) goes.
        try:
            pool = await self._new_pool(REOPEN_TIMEOUT)
        except psycopg.OperationalError as err:  # PoolTimeout: not accepting yet
            log.warning("the database answers but the pool cannot connect yet (%s)", err)
            self._last_error = err
            if self.up:
                await self._went_down()
            return
        old, self._live = self._live, pool
        self._server_started = started
        if old is not None:
            self._close_later(old)
        if self.up:
            log.warning("the database restarted: connections renewed")
            return
        self._mark_up()
        down_for = asyncio.get_running_loop().time() - self._down_since
        log.warning("the database is back after %.1f s: serving again", down_for)
        await self._tell(True)

    async def _went_down(self) -> None:
        self.up = False  # first: calls fail fast from here on
        self._serving.clear()
        self._down_since = asyncio.get_running_loop().time()
        log.warning(
            "the database cannot be reached (%s): calls fail with UNAVAILABLE until it is back",
            self._last_error,
        )
        live, self._live = self._live, None
        if live is not None:
            # Closing fails the callers waiting for a connection now; it would also
            # stop the pool's reconnection attempts, which only back off further.
            self._close_later(live)
        await self._tell(False)

    async def _probe(self) -> datetime | None:
        """The server's start time, or None when it cannot be reached.

        The probe keeps its connection between probes (one round trip each). One that
        broke is replaced once before the server counts as down, so a backend that was
        killed alone is no outage; a refused connection is, at once.
        """
        for _ in range(2):
            fresh = self._probe_conn is None
            try:
                async with asyncio.timeout(PROBE_TIMEOUT):
                    if self._probe_conn is None:
                        self._probe_conn = await psycopg.AsyncConnection.connect(
                            self._dsn, autocommit=True, connect_timeout=int(PROBE_TIMEOUT)
                        )
                    cur = await self._probe_conn.execute("SELECT pg_postmaster_start_time()")
                    row = await cur.fetchone()
                assert row is not None and isinstance(row[0], datetime)
                return row[0]
            except pg_errors.TooManyConnections:
                # The server is there, only full; our pool holds its connections.
                return self._server_started
            except (psycopg.Error, OSError, TimeoutError) as err:
                self._last_error = err
                await self._drop_probe_connection()
                if fresh:
                    break
        return None

    async def _drop_probe_connection(self) -> None:
        conn, self._probe_conn = self._probe_conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def _new_pool(self, wait: float | None) -> psycopg_pool.AsyncConnectionPool:
        self._generation += 1
        pool: psycopg_pool.AsyncConnectionPool = psycopg_pool.AsyncConnectionPool(
            self._request_dsn,
            min_size=self.min_size,
            max_size=self.max_size,
            open=False,
            timeout=self.timeout,
            name=f"{self.name}.{self._generation}",
        )
        try:
            await pool.open(wait=wait is not None, timeout=wait or 0.0)
        except BaseException:
            await pool.close()
            raise
        return pool

    def _close_later(self, pool: psycopg_pool.AsyncConnectionPool) -> None:
        # In the background: closing waits for the pool's workers, which may be in the
        # middle of a connection attempt; the monitor has probing to do.
        task = asyncio.create_task(pool.close(), name=f"close-{pool.name}")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _tell(self, up: bool) -> None:
        for listener in list(self._listeners):
            try:
                await listener(up)
            except Exception:  # one broken listener must not silence the others
                log.exception("database health listener")


@contextlib.asynccontextmanager
async def open_pool(
    conninfo: str,
    min_size: int,
    max_size: int,
    *,
    probe_seconds: float = PROBE_SECONDS,
    statement_timeout: float | None = None,
    service_size: int = 0,
    service_statement_timeout: float | None = None,
) -> AsyncIterator[Database]:
    """Opens a watched pool after bringing the schema up to date; closes it on exit.

    `statement_timeout` bounds every statement of the pool's (request) connections;
    `service_size` > 0 gives the service's own work a lane of that many connections
    (`Database.service`) with `service_statement_timeout`.
    """
    await migrate(conninfo)
    database = Database(
        conninfo,
        min_size,
        max_size,
        probe_seconds=probe_seconds,
        statement_timeout=statement_timeout,
        service_size=service_size,
        service_statement_timeout=service_statement_timeout,
    )
    await database.open(wait=True)
    try:
        yield database
    finally:
        await database.close()
