"""Idempotent retries (AIP-155): every SQL statement about remembered request ids.

A call that carries a `request_id` is remembered in the transaction that carries it
out; a retry with the same id finds it and gets the same attempt back. Concurrent
retries of one id wait for each other on an advisory lock, so exactly one does the work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
import psycopg_pool

from gateway.store.database import translate_db_errors
from metalearn import errors


@dataclass(frozen=True)
class RequestKey:
    """Who asked, under which id, for what."""

    principal: str
    request_id: str
    method: str


async def replayed(conn: psycopg.AsyncConnection[Any], key: RequestKey | None) -> int | None:
    """The attempt a call with this key already made (locking the key for this
    transaction), or None. InvalidArgument if the id was used for another method."""
    if key is None:
        return None
    cur = conn.cursor()
    await cur.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
        (f"{key.principal}/{key.request_id}",),
    )
    await cur.execute(
        "SELECT method, attempt_id FROM requests WHERE principal = %s AND request_id = %s",
        (key.principal, key.request_id),
    )
    row = await cur.fetchone()
    if row is None:
        return None
    method, attempt_id = row[0], row[1]
    if method != key.method:
        raise errors.InvalidArgument.one(
            "request_id", f"was used for {method}: give each call its own id"
        )
    return int(attempt_id)


async def remember(
    conn: psycopg.AsyncConnection[Any], key: RequestKey | None, attempt_id: int
) -> None:
    """Records that the call with `key` made (or changed) `attempt_id`."""
    if key is not None:
        await conn.execute(
            "INSERT INTO requests (principal, request_id, method, attempt_id)"
            " VALUES (%s, %s, %s, %s)",
            (key.principal, key.request_id, key.method, attempt_id),
        )


async def forget_old(pool: psycopg_pool.AsyncConnectionPool, hours: float = 24.0) -> None:
    """Drops request ids older than `hours`: retries come within minutes."""
    with translate_db_errors():
        async with pool.connection() as conn:
            await conn.execute(
                "DELETE FROM requests WHERE created_at < now() - make_interval(secs => %s)",
                (hours * 3600,),
            )
