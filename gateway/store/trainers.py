"""Every SQL statement about trainer daemons: who they are, whether they live, and what
they may read. The queue and leases are `gateway.store.work`'s."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg_pool
from psycopg import sql
from psycopg.types.json import Jsonb

from gateway.store.database import translate_db_errors
from gateway.store.work import SLOTS, notify_queue
from metalearn import errors


@dataclass(frozen=True)
class Trainer:
    address: str
    capacity: int
    # Slots taken: one per device of each attempt it runs.
    running: int
    # What the gateway presents on its calls to this trainer.
    credential: str = ""


class TrainerStore:
    """The `trainers` table."""

    def __init__(self, pool: psycopg_pool.AsyncConnectionPool) -> None:
        self._pool = pool

    async def register(
        self,
        address: str,
        capacity: int,
        devices: list[Any],
        version: str,
        principal: str,
        credential: str,
        stale_seconds: float,
    ) -> None:
        """Announces a trainer of `principal` at `address`. PermissionDenied when the
        address belongs to another principal's trainer that is still alive."""
        with translate_db_errors():
            async with self._pool.connection() as conn, conn.transaction():
                cur = await conn.execute(
                    "INSERT INTO trainers (address, capacity, devices, version, principal,"
                    " credential) VALUES (%s, %s, %s, %s, %s, %s)"
                    " ON CONFLICT (address) DO UPDATE SET capacity = excluded.capacity,"
                    " devices = excluded.devices, version = excluded.version,"
                    " principal = excluded.principal, credential = excluded.credential,"
                    " registered_at = now(), last_seen = now()"
                    " WHERE trainers.principal IN (excluded.principal, '')"
                    " OR trainers.last_seen < now() - make_interval(secs => %s) RETURNING 1",
                    (address, capacity, Jsonb(devices), version, principal, credential,
                     stale_seconds),
                )  # fmt: skip
                if await cur.fetchone() is None:
                    raise errors.PermissionDenied(
                        f"{address} is the address of another principal's live trainer"
                    )
                await notify_queue(conn.cursor())

    async def heartbeat(self, address: str, busy: int, principal: str) -> bool:
        """Records that `principal`'s trainer at `address` is alive; False if unknown."""
        with translate_db_errors():
            async with self._pool.connection() as conn:
                cur = await conn.execute(
                    "UPDATE trainers SET last_seen = now(), busy_slots = %s WHERE address = %s"
                    " AND principal = %s RETURNING 1",
                    (busy, address, principal),
                )
                if await cur.fetchone() is not None:
                    return True
                cur = await conn.execute("SELECT 1 FROM trainers WHERE address = %s", (address,))
                if await cur.fetchone() is not None:
                    raise errors.PermissionDenied(f"{address} is another principal's trainer")
                return False

    async def mark_unreachable(self, address: str) -> None:
        """A trainer that did not answer gets no work until its next heartbeat."""
        with translate_db_errors():
            async with self._pool.connection() as conn:
                await conn.execute(
                    "UPDATE trainers SET last_seen = '-infinity' WHERE address = %s", (address,)
                )

    async def back_off(self, address: str, seconds: float) -> None:
        """A trainer that refused work (every slot busy) gets none for `seconds`."""
        with translate_db_errors():
            async with self._pool.connection() as conn:
                await conn.execute(
                    "UPDATE trainers SET backoff_until = now() + make_interval(secs => %s)"
                    " WHERE address = %s",
                    (seconds, address),
                )

    async def quarantine(self, address: str, reason: str, seconds: float) -> None:
        """A trainer that streamed something impossible gets no work for `seconds`
        (heartbeats and re-registration do not lift it)."""
        with translate_db_errors():
            async with self._pool.connection() as conn:
                await conn.execute(
                    "UPDATE trainers SET quarantined_until = now() + make_interval(secs => %s),"
                    " quarantine_reason = %s WHERE address = %s",
                    (seconds, reason[:500], address),
                )

    async def live_trainers(self, max_age_seconds: float) -> list[Trainer]:
        """Trainers heard from lately and not quarantined, with the slots their running
        attempts take now."""
        with translate_db_errors():
            async with self._pool.connection() as conn:
                cur = await conn.execute(
                    sql.SQL(
                        "SELECT t.address, t.capacity, (SELECT COALESCE(sum({slots}), 0) FROM"
                        " attempts a WHERE a.trainer = t.address"
                        " AND a.status IN ('TRAINING', 'TESTING')), t.credential"
                        " FROM trainers t WHERE t.last_seen > now() - make_interval(secs => %s)"
                        " AND (t.quarantined_until IS NULL OR t.quarantined_until < now())"
                        " AND (t.backoff_until IS NULL OR t.backoff_until < now())"
                        " ORDER BY t.address"
                    ).format(slots=SLOTS),
                    (max_age_seconds,),
                )
                return [Trainer(r[0], int(r[1]), int(r[2]), r[3]) for r in await cur.fetchall()]

    async def held_labels(self, principal: str) -> set[str]:
        """The labels of the work that `principal`'s trainers hold right now (attempts
        they run, tasks they are profiling)."""
        with translate_db_errors():
            async with self._pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT DISTINCT l.label FROM attempts a JOIN trainers t ON t.address ="
                    " a.trainer, LATERAL (SELECT jsonb_array_elements_text(COALESCE("
                    " a.doc -> 'training_commands' -> 'label_names', '[]')) UNION"
                    " SELECT jsonb_array_elements_text(COALESCE("
                    " a.doc -> 'testing_commands' -> 'label_names', '[]'))) AS l(label)"
                    " WHERE t.principal = %s AND a.status IN ('TRAINING', 'TESTING')"
                    # A task it was asked to profile, while that request stands.
                    " UNION SELECT jsonb_array_elements_text(k.label_names) FROM tasks k"
                    " JOIN trainers t ON t.address = k.trainer WHERE t.principal = %s"
                    " AND k.state = 'PENDING' AND k.claimed_until > now()",
                    (principal, principal),
                )
                return {str(r[0]) for r in await cur.fetchall()}
