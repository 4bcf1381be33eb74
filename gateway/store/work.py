"""Every SQL statement of the orchestration: the queue, leases, artifacts, events.

Status changes happen only along the transitions of docs/architecture.md §3, each enforced in SQL by
expecting the current status. Notifications are sent inside the writing transaction,
so PostgreSQL delivers them only after the commit: an event is stored before anyone
hears of it.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import psycopg
import psycopg_pool
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from gateway.store.attempts import (
    LIVE_STATUSES,
    AttemptKey,
    Rewrite,
    Stored,
    _describe,
    _where_key,
    check_owner,
)
from gateway.store.database import translate_db_errors
from gateway.store.requests import RequestKey, forget_old, remember, replayed
from metalearn import errors

EVENTS = "metalearn_events"
QUEUE = "metalearn_queue"


# The trainer slots an attempt row `a` takes while it runs: one per device it trains on
# (TrainCommand.devices; 0 or absent is one), one for a test.
def slots_of(alias: str) -> sql.Composable:
    """The trainer slots the attempt row `alias` takes while it runs."""
    return sql.SQL(
        "CASE WHEN {a}.work = 'train' THEN GREATEST(1, COALESCE("
        "({a}.doc -> 'training_commands' ->> 'devices')::int, 1)) ELSE 1 END"
    ).format(a=sql.Identifier(alias))


SLOTS = slots_of("a")
# The slots trainer `t`'s running work takes.
RUNNING_SLOTS = sql.SQL(
    "(SELECT COALESCE(sum({slots}), 0) FROM attempts a WHERE a.trainer = t.address"
    " AND a.status IN ('TRAINING', 'TESTING'))"
).format(slots=SLOTS)
# Trainer `t` may be given work: heard from in the last `%s` seconds, its principal not
# quarantined, not backing off (the check of its credential is TrainerStore's).
LIVE_TRAINER = sql.SQL(
    "t.last_seen > now() - make_interval(secs => %s) AND t.credential_salt IS NOT NULL"
    " AND NOT EXISTS (SELECT 1 FROM trainer_quarantines q"
    " WHERE q.principal = t.principal AND q.until > now())"
    " AND (t.backoff_until IS NULL OR t.backoff_until < now())"
)
# Live trainers' capacity and free slots, as the dispatcher counts them.
_LIVE = sql.SQL(
    "SELECT t.capacity, t.capacity - {running} AS free FROM trainers t WHERE {live}"
).format(running=RUNNING_SLOTS, live=LIVE_TRAINER)


# What one read of a stored file takes from the database and holds: 1 MiB, the size
# of a download's message.
ARTIFACT_PIECE_BYTES = 1024 * 1024


@dataclass(frozen=True)
class ArtifactPart:
    """One stored row of a file."""

    chunk: int
    size: int
    # The row's version (its xmin): a row rewritten since belongs to another file.
    version: str


@dataclass(frozen=True)
class ArtifactLayout:
    """Where a stored checkpoint or weights file lies, without its bytes."""

    attempt_id: int
    kind: str
    epoch: int
    parts: tuple[ArtifactPart, ...]
    # The verified sha256 kept at commit; None for a file stored before it was kept.
    sha256: bytes | None

    @property
    def size(self) -> int:
        return sum(part.size for part in self.parts)


@dataclass(frozen=True)
class Claimed:
    """Work a gateway took from the queue, with its fencing token."""

    id: int
    name: str
    work: str
    fence: int
    stored: Stored
    # The trainer's slots it takes: its devices (a test takes one).
    slots: int = 1


async def notify(cur: psycopg.AsyncCursor[Any], attempt_id: int, kind: str, **extra: Any) -> None:
    payload = json.dumps({"id": attempt_id, "kind": kind, **extra})
    await cur.execute("SELECT pg_notify(%s, %s)", (EVENTS, payload))


async def _rewrite_document(
    cur: psycopg.AsyncCursor[Any], attempt_id: int, rewrite: Rewrite, row: dict[str, Any]
) -> None:
    """Writes both forms of the document `rewrite` makes of the locked row's."""
    spec, doc = rewrite(Stored(row["spec"], row["doc"]))
    await cur.execute(
        "UPDATE attempts SET spec = %s, doc = %s WHERE id = %s", (spec, Jsonb(doc), attempt_id)
    )


async def notify_queue(cur: psycopg.AsyncCursor[Any]) -> None:
    """Wakes every replica's dispatcher (at commit): the queue or the trainers changed."""
    await cur.execute("SELECT pg_notify(%s, '')", (QUEUE,))


class WorkStore:
    """The queue and everything a running attempt writes."""

    def __init__(self, pool: psycopg_pool.AsyncConnectionPool) -> None:
        self._pool = pool

    async def queue_train(
        self,
        name: str,
        rewrite: Rewrite,
        owner: str = "",
        scope: str | None = None,
        request: RequestKey | None = None,
        *,
        create_only: bool = False,
    ) -> int:
        """Queues training of `name`: a new attempt (owned by `owner`) whose document
        `rewrite` makes from nothing, or an existing one rewritten, its epochs, artifacts
        and results forgotten, if its owner is `scope` (None: anyone's) and not
        `create_only` (then AlreadyExists). Returns its id; a retry of `request` returns
        it without queueing again."""
        with translate_db_errors():
            async with self._pool.connection() as conn, conn.transaction():
                if (done := await replayed(conn, request)) is not None:
                    return done
                cur = conn.cursor(row_factory=dict_row, binary=True)
                await cur.execute(
                    "SELECT id, status, owner, spec, CASE WHEN spec IS NULL THEN doc END AS doc"
                    " FROM attempts WHERE name = %s FOR UPDATE",
                    (name,),
                )
                row = await cur.fetchone()
                if row is None:
                    spec, doc = rewrite(Stored(None, None))
                    await cur.execute(
                        "INSERT INTO attempts (name, spec, doc, owner, status, work, queued_at)"
                        " VALUES (%s, %s, %s, %s, 'QUEUED', 'train', now()) RETURNING id",
                        (name, spec, Jsonb(doc), owner),
                    )
                    created = await cur.fetchone()
                    assert created is not None
                    attempt_id = int(created["id"])
                else:
                    if create_only:
                        raise errors.AlreadyExists(f"attempt {name!r} exists")
                    check_owner(name, row["owner"], scope)
                    if row["status"] in LIVE_STATUSES:
                        raise errors.FailedPrecondition(
                            f"attempt {name!r} is {row['status']}: cancel it or wait for it"
                        )
                    attempt_id = int(row["id"])
                    spec, doc = rewrite(Stored(row["spec"], row["doc"]))
                    await cur.execute(
                        "DELETE FROM attempt_epochs WHERE attempt_id = %s", (attempt_id,)
                    )
                    await cur.execute("DELETE FROM artifacts WHERE attempt_id = %s", (attempt_id,))
                    await cur.execute(
                        "UPDATE attempts SET spec = %s, doc = %s, status = 'QUEUED',"
                        " work = 'train',"
                        " queued_at = now(), updated_at = now(), current_epoch = 0, failures = 0,"
                        " lost_leases = 0, restart_count = 0,"
                        " error = '', trainer = '', prognosis = NULL, prognosis_wire = NULL"
                        " WHERE id = %s",
                        (spec, Jsonb(doc), attempt_id),
                    )
                await remember(conn, request, attempt_id)
                await notify(cur, attempt_id, "status")
                await notify_queue(cur)
        return attempt_id

    async def queue_test(
        self,
        key: AttemptKey,
        rewrite: Rewrite | None,
        scope: str | None = None,
        request: RequestKey | None = None,
    ) -> int:
        """Queues a test of a trained attempt (its testing_commands rewritten if given),
        if its owner is `scope` (None: anyone's)."""
        where, params = _where_key(key)
        with translate_db_errors():
            async with self._pool.connection() as conn, conn.transaction():
                if (done := await replayed(conn, request)) is not None:
                    return done
                cur = conn.cursor(row_factory=dict_row, binary=True)
                await cur.execute(
                    sql.SQL(
                        "SELECT a.id, a.status, a.owner, a.spec,"
                        " CASE WHEN a.spec IS NULL THEN a.doc END"
                        " AS doc, EXISTS (SELECT 1 FROM artifacts r WHERE r.attempt_id = a.id"
                        " AND r.kind = 'weights') AS trained, a.doc @> '{{\"imported\": true}}'"
                        " AS imported, a.provenance FROM attempts a WHERE {} FOR UPDATE"
                    ).format(where),
                    params,
                )
                row = await cur.fetchone()
                if row is None:
                    raise errors.NotFound(f"{_describe(key)} not found")
                check_owner(key, row["owner"], scope)
                if row["status"] in LIVE_STATUSES:
                    raise errors.FailedPrecondition(
                        f"{_describe(key)} is {row['status']}: wait for it"
                    )
                if row["provenance"] == "REPORTED":
                    raise errors.FailedPrecondition(
                        f"{_describe(key)} was reported by its own code, which tests it"
                        " (FinishRun's test_result): its model is not one a trainer here can"
                        " load"
                    )
                if not row["trained"] and row["imported"]:
                    raise errors.FailedPrecondition(
                        f"{_describe(key)} was imported without its weights: Train it first"
                    )
                if not row["trained"]:
                    raise errors.FailedPrecondition(
                        f"{_describe(key)} has not been trained: Train it first"
                    )
                attempt_id = int(row["id"])
                if rewrite is not None:
                    await _rewrite_document(cur, attempt_id, rewrite, row)
                await remember(conn, request, attempt_id)
                await cur.execute(
                    "UPDATE attempts SET status = 'QUEUED', work = 'test', queued_at = now(),"
                    " updated_at = now(), failures = 0, lost_leases = 0, error = ''"
                    " WHERE id = %s",
                    (attempt_id,),
                )
                await notify(cur, attempt_id, "status")
                await notify_queue(cur)
        return attempt_id

    async def claim(
        self,
        gateway_id: str,
        trainer: str,
        lease_seconds: float,
        free_slots: int = 1,
        capacity: int | None = None,
        reserve_after: float = math.inf,
    ) -> Claimed | None:
        """Takes the oldest queued attempt that fits `trainer`'s `free_slots` (an attempt
        on N devices needs N); other replicas skip it. An older attempt that needs more
        slots than are free waits for a trainer that has them, while smaller ones pass,
        but only for `reserve_after` seconds: past that, a trainer whose `capacity` could
        run it takes nothing newer, so that its slots drain and the wide attempt gets
        them (without it, narrower attempts would take every slot freed, forever)."""
        reserved: sql.Composable = sql.SQL("")
        params: list[Any] = [gateway_id, trainer, lease_seconds, free_slots]
        if capacity is not None and math.isfinite(reserve_after):
            reserved = sql.SQL(
                " AND NOT EXISTS (SELECT 1 FROM attempts w WHERE w.status = 'QUEUED'"
                " AND w.queued_at < now() - make_interval(secs => %s)"
                " AND {w} > %s AND {w} <= %s AND (w.queued_at, w.id) < (a.queued_at, a.id))"
            ).format(w=slots_of("w"))
            params += [reserve_after, free_slots, capacity]
        with translate_db_errors():
            async with self._pool.connection() as conn, conn.transaction():
                cur = conn.cursor(row_factory=dict_row, binary=True)
                await cur.execute(
                    sql.SQL(
                        "UPDATE attempts a SET status = CASE a.work WHEN 'test' THEN 'TESTING'"
                        " ELSE 'TRAINING' END, leased_by = %s, trainer = %s,"
                        " lease_until = now() + make_interval(secs => %s), claims = a.claims"
                        " + 1, claimed_at = clock_timestamp(), updated_at = now()"
                        " WHERE a.id = (SELECT id FROM attempts a WHERE status = 'QUEUED'"
                        " AND {slots} <= %s{reserved} ORDER BY queued_at, id"
                        " FOR UPDATE SKIP LOCKED LIMIT 1)"
                        " RETURNING a.id, a.name, a.work, a.claims, {slots} AS slots,"
                        " a.spec, CASE WHEN a.spec IS NULL THEN a.doc END AS doc"
                    ).format(slots=SLOTS, reserved=reserved),
                    params,
                )
                row = await cur.fetchone()
                if row is None:
                    return None
                await notify(cur, row["id"], "status")
        return Claimed(
            row["id"],
            row["name"],
            row["work"],
            row["claims"],
            Stored(row["spec"], row["doc"]),
            row["slots"],
        )

    async def waiting(self, attempt_id: int, trainer_timeout: float, reserve_after: float) -> str:
        """Why a queued attempt has not started, in words ("" if it is not queued): the
        live trainers' slots against its own, and how long narrower attempts may pass
        it (`claim`). Trainers are counted as the dispatcher counts them, but for their
        credentials (a trainer whose key the gateway cannot check is counted too)."""
        with translate_db_errors():
            async with self._pool.connection() as conn:
                cur = await conn.execute(
                    sql.SQL(
                        "WITH live AS ({live}) SELECT {slots},"
                        " a.queued_at + make_interval(secs => %s),"
                        " (SELECT count(*) FROM attempts q WHERE q.status = 'QUEUED'"
                        " AND (q.queued_at, q.id) < (a.queued_at, a.id)),"
                        " (SELECT max(capacity) FROM live), (SELECT max(free) FROM live)"
                        " FROM attempts a WHERE a.id = %s AND a.status = 'QUEUED'"
                    ).format(live=_LIVE, slots=SLOTS),
                    (trainer_timeout, min(reserve_after, 10**9), attempt_id),
                )
                row = await cur.fetchone()
        if row is None:
            return ""
        slots, reserved_from, ahead, capacity, free = row
        if capacity is None:
            return "no trainer is live: it starts when one registers"
        if slots > capacity:
            return (f"it needs {slots} slots of one trainer and the largest live trainer has"
                    f" {capacity}: it starts when one that large registers")  # fmt: skip
        if slots > (free or 0):
            when = reserved_from.isoformat(timespec="seconds")
            if not math.isfinite(reserve_after):
                return (f"it needs {slots} free slots of one trainer (the most free now:"
                        f" {free or 0}); narrower attempts pass it meanwhile")  # fmt: skip
            return (f"it needs {slots} free slots of one trainer (the most free now:"
                    f" {free or 0}); narrower attempts pass it until {when}, then trainers"
                    f" of {slots} slots or more take nothing newer until it runs")  # fmt: skip
        if ahead:
            return f"{ahead} queued attempt{'s are' if ahead > 1 else ' is'} ahead of it"
        return ""

    async def renew(self, gateway_id: str, ids: list[int], lease_seconds: float) -> None:
        """Extends the leases this gateway holds (it is alive and streaming)."""
        if not ids:
            return
        with translate_db_errors():
            async with self._pool.connection() as conn:
                await conn.execute(
                    "UPDATE attempts SET lease_until = now() + make_interval(secs => %s)"
                    " WHERE id = ANY(%s) AND leased_by = %s AND status IN ('TRAINING', 'TESTING')",
                    (lease_seconds, ids, gateway_id),
                )

    async def finish(
        self,
        attempt_id: int,
        fence: int,
        status: str,
        error: str = "",
        rewrite: Rewrite | None = None,
    ) -> bool:
        """Ends the running work with `status` if the lease `fence` still holds."""
        with translate_db_errors():
            async with self._pool.connection() as conn, conn.transaction():
                cur = conn.cursor(row_factory=dict_row, binary=True)
                await cur.execute(
                    "SELECT spec, CASE WHEN spec IS NULL THEN doc END AS doc FROM attempts"
                    " WHERE id = %s AND claims = %s AND status IN ('TRAINING', 'TESTING')"
                    " FOR UPDATE",
                    (attempt_id, fence),
                )
                row = await cur.fetchone()
                if row is None:
                    return False
                if rewrite is not None:
                    await _rewrite_document(cur, attempt_id, rewrite, row)
                await cur.execute(
                    "UPDATE attempts SET status = %s, error = %s, leased_by = '',"
                    " lease_until = NULL,"
                    " work = NULL, updated_at = now() WHERE id = %s",
                    (status, error, attempt_id),
                )
                await notify(cur, attempt_id, "status")
                # Its trainer's slot is free: every replica's dispatcher looks again.
                await notify_queue(cur)
        return True

    async def requeue(
        self, attempt_id: int, fence: int, reason: str, max_restarts: int, *, failed: bool
    ) -> str | None:
        """Puts running work back in the queue (counted as a failure if `failed`), or
        FAILS it past `max_restarts`. Returns the new status, None if the lease is gone."""
        done = await self._requeue_where(
            sql.SQL("id = %(id)s AND claims = %(fence)s"),
            {"id": attempt_id, "fence": fence},
            reason,
            failed=int(failed),
            max_restarts=max_restarts,
        )
        return done[0][1] if done else None

    async def restart_without_checkpoint(
        self, attempt_id: int, fence: int, reason: str
    ) -> str | None:
        """Puts running training back in the queue from scratch, uncounted (no failure,
        no restart): the checkpoint it was to resume from was refused. The checkpoint is
        dropped, and with it every stored epoch, which the next run trains and stores
        again (a replayed epoch would otherwise be kept as first stored). Returns the
        principal whose trainer stored the checkpoint ('' if unknown); None when the
        lease `fence` no longer holds."""
        with translate_db_errors():
            async with self._pool.connection() as conn, conn.transaction():
                cur = conn.cursor()
                await cur.execute(
                    "SELECT 1 FROM attempts WHERE id = %s AND claims = %s"
                    " AND status = 'TRAINING' FOR UPDATE",
                    (attempt_id, fence),
                )
                if await cur.fetchone() is None:
                    return None
                await cur.execute(
                    "DELETE FROM artifacts WHERE attempt_id = %s"
                    " AND kind IN ('checkpoint', 'checkpoint.upload') RETURNING stored_by",
                    (attempt_id,),
                )
                stored_by = next((str(r[0]) for r in await cur.fetchall() if r[0]), "")
                await cur.execute("DELETE FROM attempt_epochs WHERE attempt_id = %s", (attempt_id,))
                await cur.execute(
                    "UPDATE attempts SET status = 'QUEUED', error = %s, current_epoch = 0,"
                    " prognosis = NULL, prognosis_wire = NULL, queued_at = now(),"
                    " leased_by = '', lease_until = NULL, updated_at = now() WHERE id = %s",
                    (reason, attempt_id),
                )
                await notify(cur, attempt_id, "status")
                await notify_queue(cur)
        return stored_by

    async def reclaim_expired(self, max_lost: int, grace_seconds: float = 0.0) -> list[int]:
        """Requeues work whose gateway stopped renewing its lease (it died) `grace_seconds`
        ago: not the run's fault, so counted apart, and FAILED only past `max_lost` such
        losses."""
        done = await self._requeue_where(
            # A reported run is its reporter's to renew: gateway/reporting/lapses.py.
            sql.SQL(
                "lease_until < now() - make_interval(secs => %(grace)s)"
                " AND provenance <> 'REPORTED'"
            ),
            {"grace": grace_seconds},
            "its gateway was lost",
            lost=1,
            max_lost=max_lost,
        )
        return [attempt_id for attempt_id, _ in done]

    async def _requeue_where(
        self,
        which: sql.Composable,
        params: dict[str, Any],
        reason: str,
        *,
        failed: int = 0,
        lost: int = 0,
        max_restarts: int = 0,
        max_lost: int = 0,
    ) -> list[tuple[int, str]]:
        """The one statement that takes running work back: QUEUED again, or FAILED once
        its failures pass `max_restarts` (or its lost leases `max_lost`). Returns (id, new
        status) of each attempt.

        A failure or a loss is a restart (`restart_count`) and leaves its reason in
        `error` while the attempt waits for its next run (the next finish clears it), so
        a crash is never silent. A refusal or a hand-over is neither."""
        query = sql.SQL(
            "UPDATE attempts SET failures = failures + %(failed)s,"
            " lost_leases = lost_leases + %(lost)s,"
            " status = CASE WHEN {give_up} THEN 'FAILED' ELSE 'QUEUED' END,"
            " restart_count = restart_count"
            " + CASE WHEN {give_up} THEN 0 ELSE %(failed)s + %(lost)s END,"
            " error = CASE WHEN failures + %(failed)s > %(max)s THEN %(error)s"
            " WHEN lost_leases + %(lost)s > %(max_lost)s THEN %(lost_error)s"
            " WHEN %(failed)s = 1 THEN 'restart ' || failures + 1 || ' of ' || %(max)s || ': '"
            " || %(reason)s"
            " WHEN %(lost)s = 1 THEN 'restarted: ' || %(reason)s ELSE error END,"
            " queued_at = now(), leased_by = '', lease_until = NULL, updated_at = now()"
            " WHERE status IN ('TRAINING', 'TESTING') AND {which} RETURNING id, status"
        ).format(
            give_up=sql.SQL(
                "(failures + %(failed)s > %(max)s OR lost_leases + %(lost)s > %(max_lost)s)"
            ),
            which=which,
        )
        args = {
            **params,
            "failed": failed,
            "lost": lost,
            # A limit that does not apply to this kind of requeue can never be passed.
            "max": max_restarts if failed else 2**31 - 1,
            "max_lost": max_lost if lost else 2**31 - 1,
            "error": f"gave up after {max_restarts} restarts: {reason}",
            "lost_error": f"gave up after {max_lost} lost runs: {reason}",
            "reason": reason,
        }
        with translate_db_errors():
            async with self._pool.connection() as conn, conn.transaction():
                cur = conn.cursor()
                await cur.execute(query, args)
                done = [(int(r[0]), str(r[1])) for r in await cur.fetchall()]
                for attempt_id, _ in done:
                    await notify(cur, attempt_id, "status")
                if done:
                    await notify_queue(cur)
        return done

    async def cancel(self, key: AttemptKey, scope: str | None = None) -> int:
        """Cancels queued or running work (of `scope`'s attempts; None: anyone's); the
        runner hears it and stops the trainer."""
        where, params = _where_key(key)
        with translate_db_errors():
            async with self._pool.connection() as conn, conn.transaction():
                cur = conn.cursor()
                await cur.execute(
                    sql.SQL("SELECT a.id, a.status, a.owner FROM attempts a WHERE {} FOR UPDATE")
                    .format(where),
                    params,
                )  # fmt: skip
                row = await cur.fetchone()
                if row is None:
                    raise errors.NotFound(f"{_describe(key)} not found")
                check_owner(key, row[2], scope)
                if row[1] not in LIVE_STATUSES:
                    raise errors.FailedPrecondition(
                        f"{_describe(key)} is {row[1]}: there is nothing to cancel"
                    )
                await cur.execute(
                    "UPDATE attempts SET status = 'CANCELLED', work = NULL, leased_by = '',"
                    " lease_until = NULL, updated_at = now() WHERE id = %s",
                    (row[0],),
                )
                await notify(cur, int(row[0]), "status")
                return int(row[0])

    async def forget_old_requests(self) -> None:
        """Request ids a day old: no retry comes that late."""
        await forget_old(self._pool)

    async def progress(self, attempt_id: int, done: int, total: int) -> None:
        """A running test's progress, for watchers only (not stored)."""
        with translate_db_errors():
            async with self._pool.connection() as conn:
                await notify(conn.cursor(), attempt_id, "progress", done=done, total=total)

    async def upload_chunk(
        self, attempt_id: int, fence: int, kind: str, epoch: int, index: int, data: bytes
    ) -> bool:
        """Stores one chunk of a `kind` file arriving from a trainer, as an upload that
        counts for nothing until `commit_upload`. The first chunk drops any earlier,
        unfinished upload. False when the lease `fence` no longer holds."""
        upload = f"{kind}.upload"
        with translate_db_errors():
            async with self._pool.connection() as conn, conn.transaction():
                cur = conn.cursor()
                if index == 0:
                    await cur.execute(
                        "DELETE FROM artifacts WHERE attempt_id = %s AND kind = %s",
                        (attempt_id, upload),
                    )
                await cur.execute(
                    "INSERT INTO artifacts (attempt_id, kind, epoch, chunk, data)"
                    " SELECT id, %s, %s, %s, %s FROM attempts WHERE id = %s"
                    " AND claims = %s AND status IN ('TRAINING', 'TESTING')",
                    (upload, epoch, index, data, attempt_id, fence),
                )
                return cur.rowcount == 1

    async def commit_upload(
        self,
        attempt_id: int,
        fence: int,
        kind: str,
        whole: tuple[int, bytes] | None = None,
        sha256: bytes | None = None,
    ) -> bool:
        """Makes the finished, verified upload the attempt's `kind` file, replacing the
        old one in the same transaction. False when the lease `fence` no longer holds.
        `whole`: a file of one chunk (its epoch and bytes), stored and committed at once
        (one transaction, not two). `sha256`: the file's verified digest, kept with it
        so a download can send it before the file."""
        upload = f"{kind}.upload"
        with translate_db_errors():
            async with self._pool.connection() as conn, conn.transaction():
                cur = conn.cursor()
                await cur.execute(
                    "SELECT 1 FROM attempts WHERE id = %s AND claims = %s"
                    " AND status IN ('TRAINING', 'TESTING') FOR UPDATE",
                    (attempt_id, fence),
                )
                if await cur.fetchone() is None:
                    return False
                if whole is not None:
                    await cur.execute(
                        "DELETE FROM artifacts WHERE attempt_id = %s AND kind IN (%s, %s)",
                        (attempt_id, kind, upload),
                    )
                    await cur.execute(
                        "INSERT INTO artifacts (attempt_id, kind, epoch, chunk, data, sha256)"
                        " VALUES (%s, %s, %s, 0, %s, %s)",
                        (attempt_id, kind, whole[0], whole[1], sha256),
                    )
                    return True
                await cur.execute(
                    "DELETE FROM artifacts WHERE attempt_id = %s AND kind = %s", (attempt_id, kind)
                )
                await cur.execute(
                    "UPDATE artifacts SET kind = %s, sha256 = %s WHERE attempt_id = %s"
                    " AND kind = %s",
                    (kind, sha256, attempt_id, upload),
                )
        return True

    async def discard_uploads(self, attempt_id: int) -> None:
        """Drops unfinished uploads (a run that ended before its file did)."""
        with translate_db_errors():
            async with self._pool.connection() as conn:
                await conn.execute(
                    "DELETE FROM artifacts WHERE attempt_id = %s AND kind LIKE '%%.upload'",
                    (attempt_id,),
                )

    async def artifact_layout(self, attempt_id: int, kind: str) -> ArtifactLayout | None:
        """Where the attempt's `kind` file lies (its rows, sizes and versions), read
        without its bytes; None if it has none. One statement: one snapshot."""
        with translate_db_errors():
            async with self._pool.connection() as conn:
                cur = conn.cursor(binary=True)
                # length() of an out-of-line bytea reads its size, not its bytes.
                await cur.execute(
                    "SELECT chunk, epoch, length(data), xmin::text, sha256 FROM artifacts"
                    " WHERE attempt_id = %s AND kind = %s ORDER BY chunk",
                    (attempt_id, kind),
                )
                rows = await cur.fetchall()
        if not rows:
            return None
        digest = rows[0][4]
        return ArtifactLayout(
            attempt_id,
            kind,
            int(rows[0][1]),
            tuple(ArtifactPart(int(r[0]), int(r[2]), str(r[3])) for r in rows),
            bytes(digest) if digest is not None else None,
        )

    async def read_artifact(
        self, layout: ArtifactLayout, piece_bytes: int = ARTIFACT_PIECE_BYTES
    ) -> AsyncIterator[bytes]:
        """The file `layout` describes, in pieces of at most `piece_bytes`: one short
        statement each, so memory stays one piece per reader however large the file,
        and no connection is held between pieces (a slow reader holds none).

        Each piece is read only from the row version the layout saw: a file replaced
        meanwhile (trained again, a newer checkpoint) raises Aborted, never a mix of
        two files."""
        for part in layout.parts:
            for start in range(0, part.size, piece_bytes):
                with translate_db_errors():
                    async with self._pool.connection() as conn:
                        cur = conn.cursor(binary=True)
                        # substring() of an uncompressed out-of-line value (STORAGE
                        # EXTERNAL) fetches only the TOAST slices it needs.
                        await cur.execute(
                            "SELECT substring(data FROM %s FOR %s) FROM artifacts"
                            " WHERE attempt_id = %s AND kind = %s AND chunk = %s"
                            " AND xmin::text = %s",
                            (
                                start + 1,
                                piece_bytes,
                                layout.attempt_id,
                                layout.kind,
                                part.chunk,
                                part.version,
                            ),
                        )
                        row = await cur.fetchone()
                if row is None:
                    raise errors.Aborted(
                        f"the {layout.kind} file changed while it was read"
                        " (the attempt was trained again): read it again"
                    )
                yield bytes(row[0])

    async def load_artifact(self, attempt_id: int, kind: str) -> tuple[int, bytes] | None:
        """The attempt's newest `kind` file and its epoch, or None: whole, for a caller
        that must hold it whole (prefer `artifact_layout` and `read_artifact`)."""
        layout = await self.artifact_layout(attempt_id, kind)
        if layout is None:
            return None
        whole = bytearray()
        async for piece in self.read_artifact(layout):
            whole += piece
        return layout.epoch, bytes(whole)
