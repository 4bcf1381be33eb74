"""The connection pool, migrations, and the inner error boundary (psycopg -> domain)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from importlib import resources

import psycopg
import psycopg_pool
from psycopg import errors as pg_errors

from metalearn import errors

log = logging.getLogger(__name__)

# Any constant works: replicas starting together take turns at migrating.
_MIGRATION_LOCK = 0x6D6C_6D69_6772


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
    except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as err:
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


async def migrate(conninfo: str) -> list[str]:
    """Applies the migrations this database lacks; returns their names."""
    applied: list[str] = []
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=False) as conn:
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
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


@contextlib.asynccontextmanager
async def open_pool(
    conninfo: str, min_size: int, max_size: int
) -> AsyncIterator[psycopg_pool.AsyncConnectionPool]:
    """Opens a pool after bringing the schema up to date; closes it on exit."""
    await migrate(conninfo)
    pool = psycopg_pool.AsyncConnectionPool(
        conninfo, min_size=min_size, max_size=max_size, open=False, timeout=10.0
    )
    await pool.open(wait=True)
    try:
        yield pool
    finally:
        await pool.close()
