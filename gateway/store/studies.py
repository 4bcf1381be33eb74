"""Every SQL statement about studies and their trials; returns plain dataclasses.

A trial's outcome is not stored twice: its state and value are read from its attempt
(status and epochs) each time, so a study can never disagree with the attempts it made.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
import psycopg_pool
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from gateway.store.database import translate_db_errors
from metalearn import errors

# Told at commit whenever a study changes by itself (its state, a refused trial):
# watchers look again. (Its trials' own changes come on the attempts' channels.)
STUDIES = "metalearn_studies"
_NOTIFY = f"SELECT pg_notify('{STUDIES}', %s::text)"


@dataclass(frozen=True)
class TrialRecord:
    """A trial with what its attempt says of it now."""

    number: int
    attempt_id: int | None
    attempt_name: str | None
    # Queued once (its attempt may have been deleted since).
    queued: bool
    # The attempt's status ('' when it was never queued or was deleted).
    status: str
    # What it is queued for or running: 'train', 'test' ('' at rest).
    work: str
    params: dict[str, Any]
    internal: dict[str, Any]
    sampler_state: dict[str, Any]
    error: str
    # A warm start's zero-shot trial: the past attempt it repeats.
    seeded_by: int | None
    epochs: int
    best_val_accuracy: float | None
    last_val_accuracy: float | None
    best_val_loss: float | None
    last_val_loss: float | None
    # Every epoch's validation metrics, in epoch order (the pruner's curves).
    steps: list[int]
    val_accuracies: list[float]
    val_losses: list[float]
    # A trial of an Optuna client's study: its state and values as the client set them
    # (None: the trial's state is its attempt's).
    optuna_state: str | None = None
    values: list[float] | None = None


@dataclass(frozen=True)
class StudyRecord:
    id: int
    name: str
    owner: str
    spec: bytes
    state: str
    trials_made: int
    stop_reason: str
    sampler_state: dict[str, Any]
    created_at: dt.datetime
    updated_at: dt.datetime
    # A warm start's plan (None until made, or for a cold study).
    warm_plan: dict[str, Any] | None
    # An Optuna client's study: its objectives' directions (None: a study metalearn
    # samples for) and user attributes, each value as JSON text.
    directions: list[str] | None
    user_attrs: dict[str, str]


# The studies metalearn samples for itself: an Optuna client's study (with directions)
# is driven by its clients, never ended, stopped or asked for trials here.
_DRIVEN = sql.SQL("AND s.directions IS NULL")
_STUDY = sql.SQL(
    "s.id, s.name, s.owner, s.spec, s.state, s.trials_made, s.stop_reason, s.sampler_state,"
    " s.created_at, s.updated_at, s.warm_plan, s.directions, s.user_attrs"
)
# The objective's candidates come from the epochs (NaN, a diverged epoch, included: the
# caller refuses non-finite values).
_TRIALS_OF = (
    "SELECT t.number, t.attempt_id, a.name AS attempt_name, t.queued,"
    " COALESCE(a.status, '') AS status, COALESCE(a.work, '') AS work,"
    " t.params, t.internal, t.sampler_state,"
    " COALESCE(NULLIF(t.error, ''), a.error, '') AS error, t.seeded_by,"
    " COALESCE(e.epochs, 0) AS epochs, e.best_val_accuracy, e.last_val_accuracy,"
    " e.best_val_loss, e.last_val_loss, COALESCE(e.steps, '{{}}') AS steps,"
    " COALESCE(e.val_accuracies, '{{}}') AS val_accuracies,"
    " COALESCE(e.val_losses, '{{}}') AS val_losses, t.state AS optuna_state, t.vals AS values"
    " FROM study_trials t LEFT JOIN attempts a ON a.id = t.attempt_id"
    " LEFT JOIN LATERAL (SELECT count(*) AS epochs, max(val_accuracy) AS best_val_accuracy,"
    " (array_agg(val_accuracy ORDER BY epoch DESC))[1] AS last_val_accuracy,"
    " min(val_loss) AS best_val_loss,"
    " (array_agg(val_loss ORDER BY epoch DESC))[1] AS last_val_loss,"
    " array_agg(epoch ORDER BY epoch) AS steps,"
    " array_agg(val_accuracy ORDER BY epoch) AS val_accuracies,"
    " array_agg(val_loss ORDER BY epoch) AS val_losses"
    " FROM attempt_epochs WHERE attempt_id = t.attempt_id) e ON true"
    " WHERE t.study_id = {study}{only} ORDER BY t.number"
)
_TRIALS = _TRIALS_OF.format(study="%(study)s", only="")
_TRIALS_NUMBERED = _TRIALS_OF.format(study="%(study)s", only=" AND t.number = ANY(%(only)s)")
# The study whose trial an attempt is (one; an attempt is one trial's).
_STUDY_OF = "(SELECT study_id FROM study_trials WHERE attempt_id = {} ORDER BY study_id LIMIT 1)"
# A light row per trial, numbered, then what says it changed (its epochs aside: a trial
# at rest has no new ones without its attempt's `updated_at` moving, nor loses any
# without its `compacted_at` moving, and no pruner reads another running trial's). A
# pruning decision reads these (gateway/studies/decisions.py).
_TRIAL_KEYS_OF = (
    "SELECT t.number, t.attempt_id, t.queued, COALESCE(a.status, ''), COALESCE(a.work, ''),"
    " COALESCE(NULLIF(t.error, ''), a.error, ''), t.sampler_state::text, t.state, t.vals,"
    " a.updated_at, a.compacted_at"
    " FROM study_trials t LEFT JOIN attempts a ON a.id = t.attempt_id"
    " WHERE t.study_id = {study} ORDER BY t.number"
)
_TRIAL_KEYS = _TRIAL_KEYS_OF.format(study=_STUDY_OF.format("%(attempt)s"))
_OF_ATTEMPT = sql.SQL(
    "SELECT {}, t.number FROM study_trials t JOIN studies s ON s.id = t.study_id"
    " WHERE t.attempt_id = %s ORDER BY t.study_id LIMIT 1"
).format(_STUDY)
_TRIAL_OF_ATTEMPT = _TRIALS_OF.format(
    study=_STUDY_OF.format("%(attempt)s"), only=" AND t.attempt_id = %(attempt)s"
)


def _study(row: dict[str, Any]) -> StudyRecord:
    return StudyRecord(**{k: row[k] for k in StudyRecord.__dataclass_fields__})


def _trial(row: dict[str, Any]) -> TrialRecord:
    return TrialRecord(**{k: row[k] for k in TrialRecord.__dataclass_fields__})


class Locked:
    """A study held under its row lock for one transaction: what it can change."""

    def __init__(self, cur: psycopg.AsyncCursor[Any], study: StudyRecord) -> None:
        self._cur = cur
        self.study = study

    async def trials(self) -> list[TrialRecord]:
        await self._cur.execute(_TRIALS, {"study": self.study.id})
        return [_trial(r) for r in await self._cur.fetchall()]

    async def add_trial(
        self,
        number: int,
        params: dict[str, Any],
        internal: dict[str, Any],
        sampler_state: dict[str, Any],
        error: str = "",
        seeded_by: int | None = None,
    ) -> None:
        await self._cur.execute(
            "INSERT INTO study_trials (study_id, number, params, internal, sampler_state, error,"
            " seeded_by) VALUES (%s, %s, %s, %s, %s, %s,"
            " (SELECT id FROM attempts WHERE id = %s))",  # NULL if deleted meanwhile
            (
                self.study.id,
                number,
                Jsonb(params),
                Jsonb(internal),
                Jsonb(sampler_state),
                error,
                seeded_by,
            ),
        )

    async def update(
        self,
        *,
        trials_made: int,
        sampler_state: dict[str, Any],
        state: str,
        stop_reason: str,
        warm_plan: dict[str, Any] | None = None,
    ) -> None:
        await self._cur.execute(
            "UPDATE studies SET trials_made = %s, sampler_state = %s, state = %s,"
            " stop_reason = %s, warm_plan = COALESCE(%s, warm_plan), updated_at = now()"
            " WHERE id = %s",
            (
                trials_made,
                Jsonb(sampler_state),
                state,
                stop_reason,
                None if warm_plan is None else Jsonb(warm_plan),
                self.study.id,
            ),
        )
        if state != self.study.state:
            await self._cur.execute(_NOTIFY, (self.study.id,))


class StudyStore:
    """Studies in PostgreSQL; trials are rows beside the attempts they made."""

    def __init__(self, pool: psycopg_pool.AsyncConnectionPool) -> None:
        self._pool = pool

    async def create(
        self, name: str, owner: str, spec: bytes, trial_names: Sequence[str]
    ) -> StudyRecord:
        """A new RUNNING study; AlreadyExists if the name, or a trial's attempt name, is
        taken."""
        with translate_db_errors():
            async with self._pool.connection() as conn, conn.transaction():
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute(
                    "SELECT name FROM attempts WHERE name = ANY(%s) ORDER BY id LIMIT 1",
                    (list(trial_names),),
                )
                taken = await cur.fetchone()
                if taken is not None:
                    raise errors.AlreadyExists(
                        f"attempt {taken['name']!r} exists: this study's trials would need its name"
                    )
                try:
                    await cur.execute(
                        sql.SQL(
                            "INSERT INTO studies AS s (name, owner, spec) VALUES (%s, %s, %s)"
                            " RETURNING {}"
                        ).format(_STUDY),
                        (name, owner, spec),
                    )
                except psycopg.errors.UniqueViolation as err:
                    raise errors.AlreadyExists(f"study {name!r} exists") from err
                row = await cur.fetchone()
        assert row is not None
        return _study(row)

    async def get(self, name: str) -> tuple[StudyRecord, list[TrialRecord]]:
        """A study and its trials; NotFound."""
        with translate_db_errors():
            async with self._pool.connection() as conn, conn.transaction():
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute(
                    sql.SQL("SELECT {} FROM studies s WHERE s.name = %s").format(_STUDY), (name,)
                )
                row = await cur.fetchone()
                if row is None:
                    raise errors.NotFound(f"study {name!r} not found")
                study = _study(row)
                await cur.execute(_TRIALS, {"study": study.id})
                return study, [_trial(r) for r in await cur.fetchall()]

    async def page(self, before_id: int | None, limit: int) -> list[StudyRecord]:
        """Studies newest first, after the keyset position `before_id`."""
        with translate_db_errors():
            async with self._pool.connection() as conn:
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute(
                    sql.SQL(
                        "SELECT {} FROM studies s WHERE s.id < %s ORDER BY s.id DESC LIMIT %s"
                    ).format(_STUDY),
                    (before_id if before_id is not None else 2**63 - 1, limit),
                )
                return [_study(r) for r in await cur.fetchall()]

    async def running(self, study_id: int) -> StudyRecord | None:
        """A study not yet done, read without its lock (None: done or gone)."""
        with translate_db_errors():
            async with self._pool.connection() as conn:
                cur = conn.cursor(row_factory=dict_row)
                query = sql.SQL(
                    "SELECT {} FROM studies s WHERE s.id = %s AND s.state <> 'DONE' {}"
                ).format(_STUDY, _DRIVEN)
                await cur.execute(query, (study_id,))
                row = await cur.fetchone()
                return _study(row) if row is not None else None

    async def active(self) -> list[int]:
        """Studies not yet done."""
        with translate_db_errors():
            async with self._pool.connection() as conn:
                cur = await conn.execute(
                    sql.SQL("SELECT id FROM studies s WHERE state <> 'DONE' {} ORDER BY id").format(
                        _DRIVEN
                    )
                )
                return [int(r[0]) for r in await cur.fetchall()]

    @asynccontextmanager
    async def locked(self, study_id: int, *, wait: bool = False) -> AsyncIterator[Locked | None]:
        """The study under its row lock for one transaction, or None when it is done or
        another replica holds it (that one is advancing it: nothing to do here), unless
        `wait`: then its turn comes after that one's."""
        with translate_db_errors():
            async with self._pool.connection() as conn, conn.transaction():
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute(
                    sql.SQL(
                        "SELECT {} FROM studies s WHERE s.id = %s AND s.state <> 'DONE' {}"
                        " FOR UPDATE{}"
                    ).format(_STUDY, _DRIVEN, sql.SQL("" if wait else " SKIP LOCKED")),
                    (study_id,),
                )
                row = await cur.fetchone()
                yield Locked(cur, _study(row)) if row is not None else None

    async def unqueued(self, study_id: int) -> list[tuple[int, dict[str, Any], int | None]]:
        """Trials asked but not yet queued (nor refused): (number, params, seeded_by)."""
        with translate_db_errors():
            async with self._pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT number, params, seeded_by FROM study_trials WHERE study_id = %s"
                    " AND NOT queued AND error = '' ORDER BY number",
                    (study_id,),
                )
                return [(int(r[0]), r[1], r[2]) for r in await cur.fetchall()]

    async def trial_queued(self, study_id: int, number: int, attempt_id: int) -> None:
        with translate_db_errors():
            async with self._pool.connection() as conn:
                await conn.execute(
                    "UPDATE study_trials SET attempt_id = %s, queued = true"
                    " WHERE study_id = %s AND number = %s",
                    (attempt_id, study_id, number),
                )

    async def trial_refused(self, study_id: int, number: int, error: str) -> None:
        """A trial that could not be queued: it counts as failed."""
        with translate_db_errors():
            async with self._pool.connection() as conn:
                await conn.execute(
                    "UPDATE study_trials SET error = %s WHERE study_id = %s AND number = %s"
                    " AND NOT queued",
                    (error[:2000] or "refused", study_id, number),
                )
                await conn.execute(_NOTIFY, (study_id,))

    async def of_attempt(self, attempt_id: int) -> tuple[StudyRecord, int] | None:
        """The study whose trial `attempt_id` is, and the trial's number (None: none)."""
        with translate_db_errors():
            async with self._pool.connection() as conn:
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute(_OF_ATTEMPT, (attempt_id,))
                row = await cur.fetchone()
        return (_study(row), int(row["number"])) if row is not None else None

    async def trials(self, study_id: int) -> list[TrialRecord]:
        """A study's trials as they stand (no lock)."""
        with translate_db_errors():
            async with self._pool.connection() as conn:
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute(_TRIALS, {"study": study_id})
                return [_trial(r) for r in await cur.fetchall()]

    async def decision_rows(
        self, attempt_id: int
    ) -> tuple[StudyRecord, int, list[tuple[Any, ...]], TrialRecord] | None:
        """For a pruning decision, in one round trip: the study whose trial the attempt
        is, the trial's number, each trial's number and what says whether it changed (in
        number order), and the trial itself with its epochs (None: no study's trial)."""
        with translate_db_errors():
            async with self._pool.connection() as conn:
                study = conn.cursor(row_factory=dict_row)
                keys = conn.cursor()
                trial = conn.cursor(row_factory=dict_row)
                async with conn.pipeline():
                    await study.execute(_OF_ATTEMPT, (attempt_id,))
                    await keys.execute(_TRIAL_KEYS, {"attempt": attempt_id})
                    await trial.execute(_TRIAL_OF_ATTEMPT, {"attempt": attempt_id})
                found, current = await study.fetchone(), await trial.fetchone()
                rows = await keys.fetchall()
        if found is None or current is None:
            return None
        return _study(found), int(found["number"]), rows, _trial(current)

    async def trials_numbered(self, study_id: int, numbers: Sequence[int]) -> list[TrialRecord]:
        """The trials with these numbers, as they stand."""
        with translate_db_errors():
            async with self._pool.connection() as conn:
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute(_TRIALS_NUMBERED, {"study": study_id, "only": list(numbers)})
                return [_trial(r) for r in await cur.fetchall()]

    async def merge_trial_state(self, study_id: int, number: int, state: dict[str, Any]) -> None:
        """Adds keys to a trial's sampler state (a pruner's rungs). Its commit does not
        wait for the WAL's flush (a millisecond on the epoch path): a rung lost with a
        database crash is judged again at the trial's next epoch."""
        with translate_db_errors():
            async with self._pool.connection() as conn, conn.transaction():
                await conn.execute("SET LOCAL synchronous_commit TO off")
                await conn.execute(
                    "UPDATE study_trials SET sampler_state = sampler_state || %s"
                    " WHERE study_id = %s AND number = %s",
                    (Jsonb(state), study_id, number),
                )

    async def stop(self, name: str, scope: str | None, reason: str) -> StudyRecord:
        """A RUNNING study asks no more (STOPPING); PermissionDenied unless its owner is
        `scope` (None: anyone's); a stopped or done one is left as it is."""
        with translate_db_errors():
            async with self._pool.connection() as conn, conn.transaction():
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute(
                    sql.SQL("SELECT {} FROM studies s WHERE s.name = %s FOR UPDATE").format(_STUDY),
                    (name,),
                )
                row = await cur.fetchone()
                if row is None:
                    raise errors.NotFound(f"study {name!r} not found")
                _check(name, row["owner"], scope)
                if row["directions"] is not None:
                    raise errors.FailedPrecondition(
                        f"study {name!r} is driven by Optuna clients: they stop asking for"
                        " trials; there is nothing to stop here"
                    )
                await cur.execute(
                    sql.SQL(
                        "UPDATE studies s SET state = 'STOPPING', stop_reason = %s,"
                        " updated_at = now() WHERE s.id = %s AND s.state = 'RUNNING' RETURNING {}"
                    ).format(_STUDY),
                    (reason, row["id"]),
                )
                changed = await cur.fetchone()
        return _study(changed or row)

    async def delete(self, name: str, scope: str | None) -> None:
        """Removes a done study (its attempts stay)."""
        with translate_db_errors():
            async with self._pool.connection() as conn, conn.transaction():
                cur = await conn.execute(
                    "SELECT id, owner, state, directions IS NOT NULL FROM studies WHERE name = %s"
                    " FOR UPDATE",
                    (name,),
                )
                row = await cur.fetchone()
                if row is None:
                    raise errors.NotFound(f"study {name!r} not found")
                _check(name, row[1], scope)
                # An Optuna client's study never ends by itself: deleted when asked, as
                # Optuna's delete_study does.
                if row[2] != "DONE" and not row[3]:
                    raise errors.FailedPrecondition(
                        f"study {name!r} is {row[2]}: stop it and let its trials end first"
                    )
                await conn.execute("DELETE FROM studies WHERE id = %s", (row[0],))
                await conn.execute(_NOTIFY, (row[0],))  # its watchers end at once


def _check(name: str, owner: str, scope: str | None) -> None:
    if scope is not None and owner != scope:
        raise errors.PermissionDenied(
            f"study {name!r} belongs to another principal: only its owner or an admin may change it"
        )
