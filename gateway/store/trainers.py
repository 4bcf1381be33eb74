"""Every SQL statement about trainer daemons: who they are, whether they live, what they
may read, and which principals are quarantined. The queue and leases are
`gateway.store.work`'s.

A quarantine is the principal's (its trainer token's), not an address's: anyone holding
the token can register a trainer at another port, so the token is the only identity it
can hold on to. Every trainer of that principal, registered before or after, gets no
work until it ends. A deployment where every trainer shares one token (the "trainers"
token of docker-compose and Kubernetes) therefore benches them all for one liar: give
each trainer machine a token of its own (`metalearn tokens create --role trainer`) and a
liar benches only itself. Each quarantine keeps its reason and the address that lied;
`quarantines` lists them and `lift_quarantine` ends one early (an admin's decision; the
gateway logs each quarantine as it begins).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg_pool
from psycopg import sql
from psycopg.types.json import Jsonb

from gateway.store.database import translate_db_errors
from gateway.store.work import LIVE_TRAINER, RUNNING_SLOTS, notify_queue
from gateway.trainers.credentials import CredentialKey, process_key
from metalearn import errors

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Trainer:
    address: str
    capacity: int
    # Slots taken: one per device of each attempt it runs.
    running: int
    # What the gateway presents on its calls to this trainer.
    credential: str = ""
    # Whose trainer token registered it: what a quarantine holds on to.
    principal: str = ""


@dataclass(frozen=True)
class Quarantine:
    """A principal whose trainers get no work until `until`."""

    principal: str
    until: datetime
    reason: str
    # The trainer that lied (its address then; '' when not known).
    address: str
    since: datetime


class TrainerStore:
    """The `trainers` and `trainer_quarantines` tables.

    `key` makes the credential the gateway presents to each trainer (never stored, see
    `gateway.trainers.credentials`); every store of a process shares the process's."""

    def __init__(
        self, pool: psycopg_pool.AsyncConnectionPool, key: CredentialKey | None = None
    ) -> None:
        self._pool = pool
        self._key = key or process_key()

    async def register(
        self,
        address: str,
        capacity: int,
        devices: list[Any],
        version: str,
        principal: str,
        stale_seconds: float,
    ) -> str:
        """Announces a trainer of `principal` at `address`; returns the fresh credential
        the trainer is to obey (a new one each time). PermissionDenied when the address
        belongs to another principal's trainer that is still alive."""
        salt = CredentialKey.new_salt()
        with translate_db_errors():
            async with self._pool.connection() as conn, conn.transaction():
                cur = await conn.execute(
                    "INSERT INTO trainers (address, capacity, devices, version, principal,"
                    " credential_salt, credential_key) VALUES (%s, %s, %s, %s, %s, %s, %s)"
                    " ON CONFLICT (address) DO UPDATE SET capacity = excluded.capacity,"
                    " devices = excluded.devices, version = excluded.version,"
                    " principal = excluded.principal,"
                    " credential_salt = excluded.credential_salt,"
                    " credential_key = excluded.credential_key,"
                    " registered_at = now(), last_seen = now()"
                    " WHERE trainers.principal IN (excluded.principal, '')"
                    " OR trainers.last_seen < now() - make_interval(secs => %s) RETURNING"
                    " (SELECT q.until FROM trainer_quarantines q WHERE q.principal = %s"
                    " AND q.until > now())",
                    (address, capacity, Jsonb(devices), version, principal, salt,
                     self._key.fingerprint, stale_seconds, principal),
                )  # fmt: skip
                row = await cur.fetchone()
                if row is None:
                    raise errors.PermissionDenied(
                        f"{address} is the address of another principal's live trainer"
                    )
                await notify_queue(conn.cursor())
        if row[0] is not None:
            log.warning(
                "trainer %s of %s registered while its principal is quarantined until %s",
                address, principal, row[0],
            )  # fmt: skip
        return self._key.credential(address, salt)

    async def heartbeat(self, address: str, busy: int, principal: str) -> bool:
        """Records that `principal`'s trainer at `address` is alive; False if unknown, or
        if its credential is of a key this gateway does not hold (a gateway restarted
        with a key of its own, a rotated key, a row from before credentials were keyed):
        either way it must register again."""
        with translate_db_errors():
            async with self._pool.connection() as conn:
                cur = await conn.execute(
                    "UPDATE trainers SET last_seen = now(), busy_slots = %s WHERE address = %s"
                    " AND principal = %s AND credential_key = %s RETURNING 1",
                    (busy, address, principal, self._key.fingerprint),
                )
                if await cur.fetchone() is not None:
                    return True
                cur = await conn.execute(
                    "SELECT 1 FROM trainers WHERE address = %s AND principal <> %s",
                    (address, principal),
                )
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

    async def quarantine(self, principal: str, address: str, reason: str, seconds: float) -> None:
        """`principal`, whose trainer at `address` lied, gets no work on any trainer for
        `seconds` (or longer, if already quarantined longer). Heartbeats, registering
        again and registering elsewhere do not lift it."""
        reason = reason[:500]
        with translate_db_errors():
            async with self._pool.connection() as conn, conn.transaction():
                await conn.execute(
                    "INSERT INTO trainer_quarantines (principal, until, reason, address)"
                    " VALUES (%s, now() + make_interval(secs => %s), %s, %s)"
                    " ON CONFLICT (principal) DO UPDATE SET until = GREATEST("
                    " trainer_quarantines.until, excluded.until), reason = excluded.reason,"
                    " address = excluded.address, since = now()",
                    (principal, seconds, reason, address),
                )
                # Which address lied, on its own row too.
                await conn.execute(
                    "UPDATE trainers SET quarantined_until = now() + make_interval(secs => %s),"
                    " quarantine_reason = %s WHERE address = %s",
                    (seconds, reason, address),
                )
        log.warning("trainers of %s quarantined for %ss: %s", principal, seconds, reason)

    async def quarantines(self) -> list[Quarantine]:
        """The quarantines in force, newest first."""
        with translate_db_errors():
            async with self._pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT principal, until, reason, address, since FROM trainer_quarantines"
                    " WHERE until > now() ORDER BY since DESC, principal LIMIT 1000"
                )
                return [Quarantine(*row) for row in await cur.fetchall()]

    async def lift_quarantine(self, principal: str) -> bool:
        """Ends `principal`'s quarantine now (an admin's call); False if there was none."""
        with translate_db_errors():
            async with self._pool.connection() as conn, conn.transaction():
                cur = await conn.execute(
                    "DELETE FROM trainer_quarantines WHERE principal = %s AND until > now()"
                    " RETURNING 1",
                    (principal,),
                )
                lifted = await cur.fetchone() is not None
                await conn.execute(
                    "UPDATE trainers SET quarantined_until = NULL WHERE principal = %s",
                    (principal,),
                )
                if lifted:
                    await notify_queue(conn.cursor())
        return lifted

    async def live_trainers(self, max_age_seconds: float) -> list[Trainer]:
        """Trainers heard from lately, whose principal is not quarantined and whose
        credential this gateway can make, with the slots their running attempts take."""
        with translate_db_errors():
            async with self._pool.connection() as conn:
                cur = await conn.execute(
                    sql.SQL(
                        "SELECT t.address, t.capacity, {running}, t.credential_salt,"
                        " t.principal FROM trainers t WHERE {live} AND t.credential_key = %s"
                        " ORDER BY t.address"
                    ).format(running=RUNNING_SLOTS, live=LIVE_TRAINER),
                    (max_age_seconds, self._key.fingerprint),
                )
                return [
                    Trainer(
                        r[0], int(r[1]), int(r[2]), self._key.credential(r[0], bytes(r[3])), r[4]
                    )
                    for r in await cur.fetchall()
                ]

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
                    # A task it was asked to profile (or to profile again: a READY one
                    # whose profile lacks features), while that request stands.
                    " UNION SELECT jsonb_array_elements_text(k.label_names) FROM tasks k"
                    " JOIN trainers t ON t.address = k.trainer WHERE t.principal = %s"
                    " AND k.state IN ('PENDING', 'READY') AND k.claimed_until > now()",
                    (principal, principal),
                )
                return {str(r[0]) for r in await cur.fetchall()}
