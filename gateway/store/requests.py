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
    done = await replayed_all(conn, key)
    return done[0] if done else None


async def replayed_all(
    conn: psycopg.AsyncConnection[Any], key: RequestKey | None
) -> list[int] | None:
    """Every attempt a call with this key already made, in order (locking the key for
    this transaction), or None. InvalidArgument if the id was used for another method."""
    if key is None:
        return None
    cur = conn.cursor()
    await cur.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
        (f"{key.principal}/{key.request_id}",),
    )
    await cur.execute(
        "SELECT method, attempt_id FROM requests WHERE principal = %s AND request_id = %s"
        " ORDER BY attempt_id",
        (key.principal, key.request_id),
    )
    rows = await cur.fetchall()
    if not rows:
        return None
    if any(method != key.method for method, _ in rows):
        raise errors.InvalidArgument.one(
            "request_id", f"was used for {rows[0][0]}: give each call its own id"
        )
    return [int(attempt_id) for _, attempt_id in rows]


async def remember(
    conn: psycopg.AsyncConnection[Any], key: RequestKey | None, *attempt_ids: int
) -> None:
    """Records that the call with `key` made (or changed) `attempt_ids`."""
    if key is not None and attempt_ids:
        await conn.execute(
            "INSERT INTO requests (principal, request_id, method, attempt_id)"
            " SELECT %s, %s, %s, unnest(%s::bigint[])",
            (key.principal, key.request_id, key.method, list(attempt_ids)),
        )


async def forget_old(pool: psycopg_pool.AsyncConnectionPool, hours: float = 24.0) -> None:
    """Drops request ids older than `hours`: retries come within minutes."""
    with translate_db_errors():
        async with pool.connection() as conn:
            await conn.execute(
                "DELETE FROM requests WHERE created_at < now() - make_interval(secs => %s)",
                (hours * 3600,),
            )
