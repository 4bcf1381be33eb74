"""Which stored file a trainer may read: that of a run its principal's trainer holds.

A run's checkpoint (to resume from) and weights (to test) are read by the trainer it was
handed to, from the gateway, rather than sent inside its request. Only the run's current
claim opens them: its attempt, its fence (the claim count the dispatcher handed out),
still running the work the file is for, on a trainer of the caller's principal.
"""

from __future__ import annotations

import psycopg_pool

from gateway.store.database import translate_db_errors

# The work a file kind is read for, and the status the attempt has while it runs.
_WORK = {"checkpoint": ("train", "TRAINING"), "weights": ("test", "TESTING")}


class RunFileStore:
    """The one question ReadRunFile asks the database before it streams a file."""

    def __init__(self, pool: psycopg_pool.AsyncConnectionPool) -> None:
        self._pool = pool

    async def held(self, principal: str | None, attempt_id: int, fence: int, kind: str) -> bool:
        """Whether a trainer of `principal` (None: any, for an admin) holds the run of
        `attempt_id` under claim `fence`, running the work a `kind` file is read for."""
        work, status = _WORK[kind]
        with translate_db_errors():
            async with self._pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT 1 FROM attempts a WHERE a.id = %s AND a.claims = %s"
                    " AND a.work = %s AND a.status = %s AND (%s::text IS NULL OR EXISTS"
                    " (SELECT 1 FROM trainers t WHERE t.address = a.trainer"
                    " AND t.principal = %s))",
                    (attempt_id, fence, work, status, principal, principal),
                )
                return await cur.fetchone() is not None
