"""Every SQL statement about tasks, their profiles, the evaluations that the task distance
and warm starts learn from, and the fitted distance; returns plain dataclasses.

A task's key is computed by the database's `task_key()` (migration 0010), the same
function that fills `attempts.task_key`, so an attempt and its task always agree.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
import psycopg_pool
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from gateway.store.database import translate_db_errors
from metalearn import errors
from metalearn.v1 import task_pb2

# Told at commit when a task is added or profiled: profilers and waiters look again.
TASKS = "metalearn_tasks"
# Statuses whose epochs are a whole run (a pruned run's best is not its task's evidence).
_FINISHED = ("TRAINED", "COMPLETE")


@dataclass(frozen=True)
class TaskRecord:
    id: int
    fingerprint: str
    key: str
    label_names: list[str]
    image_ops: list[Any]
    state: str
    profile: bytes | None
    features: dict[str, float] | None
    error: str
    created_at: dt.datetime
    profiled_at: dt.datetime | None
    tries: int
    # Finished attempts on this task's key and their best validation accuracy.
    attempts: int = 0
    best_val_accuracy: float | None = None
    # Where its profile comes from (migration 0018): IMAGES, SAMPLE or DECLARED; for a
    # task declared by reported runs, their owner and the dataset they named.
    source: str = "IMAGES"
    owner: str = ""
    dataset: str = ""

    @property
    def declared(self) -> bool:
        """Declared by runs of users' own code (their params, not commands, were tried)."""
        return self.source != "IMAGES"


@dataclass(frozen=True)
class Evaluation:
    """A finished attempt on some task: its command and how well it did, where its
    numbers come from (the `provenance` column: TRAINED or IMPORTED) and whose it is."""

    key: str
    attempt_id: int
    name: str
    command: dict[str, Any]
    best_val_accuracy: float
    provenance: str = "TRAINED"
    owner: str = ""


@dataclass(frozen=True)
class History:
    """A task's finished runs of one provenance that learning may read (migration 0023):
    how many, the newest one's id, and a version that moves whenever they change."""

    key: str
    provenance: str
    runs: int
    newest_id: int
    version: int


@dataclass(frozen=True)
class TriedCommand:
    """One command tried on one task (without the task's own keys): its runs, their mean
    best validation accuracy, and the best of them."""

    key: str
    command: dict[str, Any]
    runs: int
    value: float
    best: Evaluation


# What a run tried: its command, or the params a reported run's code ran with.
_WHAT_WAS_TRIED = sql.SQL(
    "COALESCE(a.doc -> 'training_commands', a.doc -> 'reported' -> 'params', '{}'::jsonb)"
)


def _evaluation(row: dict[str, Any]) -> Evaluation:
    return Evaluation(
        row["key"],
        row["attempt_id"],
        row["name"],
        row["command"] or {},
        float(row["best_val_accuracy"]),
        row["provenance"],
        row["owner"],
    )


_TASK = sql.SQL(
    "t.id, t.fingerprint, t.key, t.label_names, t.image_ops, t.state, t.profile, t.features,"
    " t.error, t.created_at, t.profiled_at, t.tries, t.source, t.owner, t.dataset"
)
# A key's profile: its newest READY version made from images or a sample, else its newest
# declared one (a declaration sent after a sample must not hide the sample's profile).
_PREFERRED = "t.source = 'DECLARED', t.id DESC"
_WITH_COUNTS = sql.SQL(
    "SELECT {}, COALESCE(s.attempts, 0) AS attempts, s.best_val_accuracy FROM tasks t"
    " LEFT JOIN LATERAL (SELECT count(*) AS attempts, max(a.best_val_accuracy)"
    # Each run's stored best (migration 0021), not its every epoch; an accuracy only.
    " FILTER (WHERE a.best_val_accuracy BETWEEN 0 AND 1) AS best_val_accuracy"
    " FROM attempts a"
    # From the finished runs' own index (migration 0018), not every run of the task.
    " WHERE md5(a.task_key) = md5(t.key) AND a.task_key = t.key"
    " AND a.status IN ('TRAINED', 'COMPLETE')) s ON true"
).format(_TASK)


def _record(row: dict[str, Any]) -> TaskRecord:
    return TaskRecord(**{k: row[k] for k in TaskRecord.__dataclass_fields__ if k in row})


async def _inserted(cur: psycopg.AsyncCursor[dict[str, Any]], fingerprint: str) -> TaskRecord:
    """After an INSERT of a task version (RETURNING id when new): tells the profilers of a
    new one (at commit), and reads the version back with its counts."""
    if await cur.fetchone() is not None:
        await cur.execute("SELECT pg_notify(%s, %s)", (TASKS, fingerprint))
    await cur.execute(_WITH_COUNTS + sql.SQL(" WHERE t.fingerprint = %s"), (fingerprint,))
    found = await cur.fetchone()
    assert found is not None
    return _record(found)


async def _forget_seen(conn: psycopg.AsyncConnection[Any]) -> None:
    """Drops the notes of keys that have a task row by now (migration 0024)."""
    await conn.execute(
        "DELETE FROM unseen_task_keys u WHERE EXISTS (SELECT 1 FROM tasks t WHERE t.key = u.key)"
    )


class TaskStore:
    """The `tasks` and `task_distance` tables, and reads of the attempts per task."""

    def __init__(self, pool: psycopg_pool.AsyncConnectionPool) -> None:
        self._pool = pool

    async def ensure(self, labels: Sequence[str], ops: list[Any]) -> TaskRecord:
        """The task these labels and ops make with the images they have now: its row, made
        PENDING when new. FailedPrecondition names the labels without images."""
        with translate_db_errors():
            async with self._pool.connection() as conn, conn.transaction():
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute(
                    "SELECT task_key(%s, %s) AS key", (Jsonb(list(labels)), Jsonb(ops))
                )
                row = await cur.fetchone()
                assert row is not None
                key = str(row["key"])
                # Before the images are read: an upload committing after this statement
                # marks the task stale again, and the next look makes its new version.
                await cur.execute("UPDATE tasks SET stale = false WHERE key = %s AND stale", (key,))
                await cur.execute(
                    "SELECT label, encode(sha256(string_agg(sha256, ''::bytea"
                    " ORDER BY sha256)), 'hex') AS digest FROM images WHERE label = ANY(%s)"
                    " GROUP BY label ORDER BY label",
                    (sorted(set(labels)),),
                )
                digests = {r["label"]: r["digest"] for r in await cur.fetchall()}
                missing = sorted(set(labels) - set(digests))
                if missing:
                    raise errors.FailedPrecondition(
                        f"labels without images: {', '.join(missing[:10])}"
                    )
                material = key + "\n" + "\n".join(f"{k}={v}" for k, v in sorted(digests.items()))
                fingerprint = hashlib.sha256(material.encode()).hexdigest()
                await cur.execute(
                    "INSERT INTO tasks (fingerprint, key, label_names, image_ops)"
                    " VALUES (%s, %s, %s, %s) ON CONFLICT (fingerprint) DO NOTHING RETURNING id",
                    (fingerprint, key, Jsonb(sorted(set(labels))), Jsonb(ops)),
                )
                return await _inserted(cur, fingerprint)

    async def get(self, fingerprint: str) -> TaskRecord:
        with translate_db_errors():
            async with self._pool.connection() as conn:
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute(
                    _WITH_COUNTS + sql.SQL(" WHERE t.fingerprint = %s"), (fingerprint,)
                )
                row = await cur.fetchone()
        if row is None:
            raise errors.NotFound(f"no task {fingerprint!r}")
        return _record(row)

    async def of_attempt(self, attempt_id: int) -> TaskRecord | None:
        """The task a stored attempt learns, as its key's profile is picked (READY first,
        then from images or a sample); None when its key has no task row yet. NotFound
        when there is no such attempt."""
        with translate_db_errors():
            async with self._pool.connection() as conn:
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute("SELECT task_key FROM attempts WHERE id = %s", (attempt_id,))
                found = await cur.fetchone()
                if found is None:
                    raise errors.NotFound(f"attempt id {attempt_id} not found")
                await cur.execute(
                    _WITH_COUNTS
                    + sql.SQL(" WHERE t.key = %s ORDER BY t.state = 'READY' DESC, ")
                    + sql.SQL(_PREFERRED)
                    + sql.SQL(" LIMIT 1"),
                    (found["task_key"],),
                )
                row = await cur.fetchone()
        return None if row is None else _record(row)

    async def page(
        self, before_id: int | None, limit: int, all_versions: bool = False
    ) -> list[TaskRecord]:
        """Tasks newest first, below `before_id`: every version, or one per key (its
        newest version made from images, else its "labels without images" row)."""
        newest = sql.SQL(
            ""
            if all_versions
            else " AND t.id IN (SELECT DISTINCT ON (key) t.id FROM tasks t"  # noqa: S608 - constants
            " ORDER BY key, fingerprint LIKE 'missing:%%', " + _PREFERRED + ")"
        )
        with translate_db_errors():
            async with self._pool.connection() as conn:
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute(
                    _WITH_COUNTS
                    + sql.SQL(" WHERE (%s::bigint IS NULL OR t.id < %s)")
                    + newest
                    + sql.SQL(" ORDER BY t.id DESC LIMIT %s"),
                    (before_id, before_id, limit),
                )
                return [_record(r) for r in await cur.fetchall()]

    async def ready(self, trusted: Sequence[str]) -> list[TaskRecord]:
        """The newest profiled version of every task key that learning may read: every
        task of images held here, and the tasks declared by the `trusted` owners and by
        admins (migration 0012's `trusted_run`: anyone may declare any number of tasks,
        which must not grow every caller's reads nor move the shared distance)."""
        with translate_db_errors():
            async with self._pool.connection() as conn:
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute(
                    sql.SQL(
                        "SELECT DISTINCT ON (t.key) {} FROM tasks t WHERE t.state = 'READY'"
                        " AND (t.source = 'IMAGES' OR trusted_run('REPORTED', t.owner, %s))"
                        " ORDER BY t.key, {}"
                    ).format(_TASK, sql.SQL(_PREFERRED)),
                    (list(trusted),),
                )
                return [_record(r) for r in await cur.fetchall()]

    async def unseen(self, limit: int) -> list[tuple[list[str], list[Any]]]:
        """Labels and ops of task keys that trained, studied or imported attempts use and no
        task row has yet, and of tasks whose labels' images changed: what the profiler
        should look at."""
        with translate_db_errors():
            async with self._pool.connection() as conn:
                await _forget_seen(conn)
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute(
                    # Noted by the attempts' writes (migration 0024), not read from them.
                    "SELECT labels, ops FROM (SELECT labels, ops FROM unseen_task_keys"
                    " WHERE NOT reported ORDER BY noted_at, key) n"
                    " UNION ALL SELECT * FROM (SELECT DISTINCT ON (key) label_names, image_ops"
                    " FROM tasks WHERE stale AND source = 'IMAGES' ORDER BY key, id DESC) s"
                    " LIMIT %s",
                    (limit,),
                )
                return [(list(r["labels"]), list(r["ops"])) for r in await cur.fetchall()]

    async def unprofilable(self, labels: Sequence[str], ops: list[Any], error: str) -> None:
        """Records a key that cannot be profiled (labels without images) so the sweep
        stops looking at it; images uploaded later mark it stale."""
        with translate_db_errors():
            async with self._pool.connection() as conn, conn.transaction():
                cur = await conn.execute(
                    "SELECT task_key(%s, %s)", (Jsonb(list(labels)), Jsonb(ops))
                )
                row = await cur.fetchone()
                assert row is not None
                key = str(row[0])
                fingerprint = "missing:" + hashlib.sha256(key.encode()).hexdigest()
                await conn.execute(
                    "INSERT INTO tasks (fingerprint, key, label_names, image_ops, state, error)"
                    " VALUES (%s, %s, %s, %s, 'FAILED', %s) ON CONFLICT (fingerprint)"
                    " DO UPDATE SET stale = false, error = EXCLUDED.error",
                    (fingerprint, key, Jsonb(sorted(set(labels))), Jsonb(ops), error),
                )

    async def declare(
        self, owner: str, dataset: str, labels: Sequence[str], features: dict[str, float]
    ) -> TaskRecord:
        """The version of `owner`'s declared task that these features make with what its
        runs declared before (a run that declares less takes nothing away; a feature
        declared again takes its newest value), READY at once, or FAILED when there is
        nothing to compare it by. The same declaration again is the row it made."""
        error = (
            ""
            if features
            else "declares nothing to compare it by: give its labels, input_shape, train_size"
            " or features, or send a sample of its images"
        )
        return await self._declared_version(
            owner, dataset, labels, "DECLARED", sorted(features.items()), None,
            "READY" if features else "FAILED", features, error,
        )  # fmt: skip

    async def sampled(
        self, owner: str, dataset: str, labels: Sequence[str], sample: bytes,
        declared: dict[str, float],
    ) -> TaskRecord:  # fmt: skip
        """The version of `owner`'s declared task that this sample (a serialized
        TaskSample) makes, PENDING for a trainer's profile; the same sample again is the
        row it made. `declared` is kept as its features until then: what the profile keeps
        of the declaration (the training set's size) is read from it."""
        digest = hashlib.sha256(sample).hexdigest()
        return await self._declared_version(
            owner, dataset, labels, "SAMPLE", digest, sample, "PENDING", declared, ""
        )

    async def _declared_version(
        self, owner: str, dataset: str, labels: Sequence[str], source: str, material: Any,
        sample: bytes | None, state: str, features: dict[str, float], error: str,
    ) -> TaskRecord:  # fmt: skip
        with translate_db_errors():
            async with self._pool.connection() as conn, conn.transaction():
                cur = conn.cursor(row_factory=dict_row)
                # The key the runs' generated column holds (migration 0018), from the
                # same function.
                await cur.execute(
                    "SELECT declared_task_key(%s, %s) AS key",
                    (owner, Jsonb({"dataset": dataset, "labels": list(labels)})),
                )
                row = await cur.fetchone()
                assert row is not None and row["key"] is not None
                key = str(row["key"])
                if source == "DECLARED":
                    await cur.execute(
                        "SELECT features FROM tasks WHERE key = %s AND source = 'DECLARED'"
                        " AND state = 'READY' ORDER BY id DESC LIMIT 1",
                        (key,),
                    )
                    prior = await cur.fetchone()
                    if prior is not None:
                        features = {**dict(prior["features"] or {}), **features}
                        material, state, error = sorted(features.items()), "READY", ""
                fingerprint = hashlib.sha256(
                    f"{source}\n{key}\n{json.dumps(material)}".encode()
                ).hexdigest()
                profile = None
                if state == "READY":
                    profile = task_pb2.TaskProfile(
                        features=features, classes=len(labels)
                    ).SerializeToString()
                await cur.execute(
                    "INSERT INTO tasks (fingerprint, key, label_names, image_ops, state, profile,"
                    " features, error, source, owner, dataset, sample, profiled_at)"
                    " VALUES (%s, %s, %s, '[]', %s, %s, %s, %s, %s, %s, %s, %s,"
                    " CASE WHEN %s = 'READY' THEN now() END)"
                    " ON CONFLICT (fingerprint) DO NOTHING RETURNING id",
                    (fingerprint, key, Jsonb(sorted(set(labels))), state, profile,
                     Jsonb(features), error, source, owner, dataset, sample, state),
                )  # fmt: skip
                return await _inserted(cur, fingerprint)

    async def sample(self, task_id: int) -> bytes | None:
        """A SAMPLE version's images (a serialized TaskSample)."""
        with translate_db_errors():
            async with self._pool.connection() as conn:
                cur = await conn.execute("SELECT sample FROM tasks WHERE id = %s", (task_id,))
                row = await cur.fetchone()
        return None if row is None or row[0] is None else bytes(row[0])

    async def undeclared(self, limit: int) -> list[tuple[str, dict[str, Any]]]:
        """Owners and declared tasks of reported runs whose key has no task row yet (runs
        from before migration 0018, or a declaration that did not reach the store)."""
        with translate_db_errors():
            async with self._pool.connection() as conn:
                await _forget_seen(conn)
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute(
                    "SELECT owner, task FROM unseen_task_keys WHERE reported"
                    " ORDER BY noted_at, key LIMIT %s",
                    (limit,),
                )
                return [(r["owner"], dict(r["task"] or {})) for r in await cur.fetchall()]

    async def claim(self, lease_seconds: float) -> TaskRecord | None:
        """The oldest PENDING task nobody holds, held for `lease_seconds`."""
        return await self._claim("tries = tries + 1,", "state = 'PENDING'", (lease_seconds,))

    async def claim_stale(self, features: Sequence[str], lease_seconds: float) -> TaskRecord | None:
        """The oldest READY task profiled from images (its own or a sample) whose profile
        lacks one of `features` (made before a trainer computed them) and that nobody
        holds, held for `lease_seconds`: profiled again, it stays READY with its old
        profile meanwhile."""
        return await self._claim(
            "",
            "state = 'READY' AND source IN ('IMAGES', 'SAMPLE') AND NOT (features ?& %s::text[])",
            (lease_seconds, sorted(features)),
        )

    async def _claim(self, also: str, where: str, args: tuple[Any, ...]) -> TaskRecord | None:
        """The oldest task `where` nobody holds, held for the lease that `args` starts
        with (`also`: more assignments; both one of this module's constant texts)."""
        with translate_db_errors():
            async with self._pool.connection() as conn, conn.transaction():
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute(
                    sql.SQL(
                        "UPDATE tasks t SET claimed_until = now() + make_interval(secs => %s),"
                        " {} trainer = '' WHERE id = (SELECT id FROM tasks WHERE {} AND"
                        " (claimed_until IS NULL OR claimed_until < now())"
                        " ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING {}"
                    ).format(sql.SQL(also), sql.SQL(where), _TASK),
                    args,
                )
                row = await cur.fetchone()
                return None if row is None else _record(row)

    async def refreshed(
        self, task_id: int, profile: bytes, features: dict[str, float], hold_seconds: float
    ) -> None:
        """A READY task's new profile; the task is not claimed again as stale for
        `hold_seconds` (a trainer that computes fewer features would else be asked again
        at once)."""
        with translate_db_errors():
            async with self._pool.connection() as conn, conn.transaction():
                cur = await conn.execute(
                    "UPDATE tasks SET profile = %s, features = %s, profiled_at = now(),"
                    " claimed_until = now() + make_interval(secs => %s), trainer = ''"
                    " WHERE id = %s AND state = 'READY' RETURNING fingerprint",
                    (profile, Jsonb(features), hold_seconds, task_id),
                )
                row = await cur.fetchone()
                if row is not None:
                    await conn.execute("SELECT pg_notify(%s, %s)", (TASKS, row[0]))

    async def keep_stale(self, task_id: int, hold_seconds: float) -> None:
        """A stale READY task that could not be profiled again keeps its profile and is
        not claimed again for `hold_seconds`."""
        with translate_db_errors():
            async with self._pool.connection() as conn:
                await conn.execute(
                    "UPDATE tasks SET claimed_until = now() + make_interval(secs => %s),"
                    " trainer = '' WHERE id = %s AND state = 'READY'",
                    (hold_seconds, task_id),
                )

    async def assign(self, task_id: int, trainer: str, seconds: float) -> None:
        """The trainer asked to profile a claimed task, for at most `seconds`: it may read
        the task's images meanwhile, and the claim lasts as long."""
        with translate_db_errors():
            async with self._pool.connection() as conn:
                await conn.execute(
                    "UPDATE tasks SET trainer = %s,"
                    " claimed_until = now() + make_interval(secs => %s) WHERE id = %s",
                    (trainer, seconds, task_id),
                )

    async def profiled(self, task_id: int, profile: bytes, features: dict[str, float]) -> None:
        await self._settle(
            task_id,
            "state = 'READY', profile = %s, features = %s, profiled_at = now(), error = ''",
            (profile, Jsonb(features)),
        )

    async def failed(self, task_id: int, error: str) -> None:
        await self._settle(task_id, "state = 'FAILED', error = %s", (error[:2000],))

    async def retry_later(self, task_id: int, seconds: float, error: str) -> None:
        """Hands a claimed task back, to be tried again after `seconds`; no trainer may
        read its images meanwhile."""
        with translate_db_errors():
            async with self._pool.connection() as conn:
                await conn.execute(
                    "UPDATE tasks SET claimed_until = now() + make_interval(secs => %s),"
                    " error = %s, trainer = '' WHERE id = %s AND state = 'PENDING'",
                    (seconds, error[:2000], task_id),
                )

    async def _settle(self, task_id: int, assignments: str, args: tuple[Any, ...]) -> None:
        with translate_db_errors():
            async with self._pool.connection() as conn, conn.transaction():
                cur = await conn.execute(
                    sql.SQL(
                        "UPDATE tasks SET {}, claimed_until = NULL, trainer = ''"
                        " WHERE id = %s AND state = 'PENDING' RETURNING fingerprint"
                    ).format(sql.SQL(assignments)),  # one of this module's constant texts
                    (*args, task_id),
                )
                row = await cur.fetchone()
                if row is not None:
                    await conn.execute("SELECT pg_notify(%s, %s)", (TASKS, row[0]))

    async def learning_stamp(self) -> tuple[Any, ...]:
        """What changes whenever `history`, `tried` or `ready` may (a run finished,
        imported, deleted or validated again; a task profiled): one cheap statement over
        a row per task (migration 0023), so a learner keeps what it read until this moves.
        The sum of versions, not their max: a write that took its version first may
        commit last, and every change replaces a version by a larger one."""
        with translate_db_errors():
            async with self._pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT count(*), COALESCE(sum(version), 0) FROM task_history"
                )
                runs = await cur.fetchone()
                cur = await conn.execute(
                    "SELECT count(*), max(id), max(profiled_at), max(created_at) FROM tasks"
                )
                tasks = await cur.fetchone()
        return (*(runs or ()), *(tasks or ()))

    async def own_claims(self, owner: str, trusted: Sequence[str]) -> bool:
        """Whether `owner`'s own claims count for it and are not already counted for
        every caller trusting `trusted`: runs it imported or reported, or a task of its
        own (declared, or a sample it uploaded), while it is neither among `trusted` nor
        an admin (migrations 0026, 0027)."""
        with translate_db_errors():
            async with self._pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT NOT trusted_run('REPORTED', %(o)s, %(t)s) AND ("
                    " EXISTS (SELECT 1 FROM task_history WHERE owner = %(o)s"
                    " AND provenance <> 'TRAINED' AND runs > 0)"
                    " OR EXISTS (SELECT 1 FROM tasks WHERE owner = %(o)s"
                    " AND source <> 'IMAGES' AND state = 'READY'))",
                    {"o": owner, "t": list(trusted)},
                )
                row = await cur.fetchone()
        return bool(row and row[0])

    async def history(self, trusted: Sequence[str]) -> list[History]:
        """Per task key and provenance, the finished runs that learning may read (as
        `evaluations` selects them), from the counts the writes keep (migration 0023):
        a row per task, not per run."""
        with translate_db_errors():
            async with self._pool.connection() as conn:
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute(
                    "SELECT task_key AS key, provenance, sum(runs)::bigint AS runs,"
                    " COALESCE(max(newest_id), 0) AS newest_id,"
                    " sum(version)::bigint AS version FROM task_history"
                    " WHERE trusted_run(provenance, owner, %s)"
                    " GROUP BY task_key, provenance ORDER BY task_key, provenance",
                    (list(trusted),),
                )
                return [History(**r) for r in await cur.fetchall()]

    async def tried(
        self, keys: Sequence[str], trusted: Sequence[str], ignored: Sequence[str]
    ) -> list[TriedCommand]:
        """The commands tried on these tasks (a command without its `ignored` keys, or
        a reported run's params) by the runs `evaluations` would read: per task and
        command, its runs, their mean best validation accuracy and the best run. Grouped
        in the database, so a task's thousands of runs of a few commands come back as a
        few rows; a task's finished runs are read by their index (migration 0018)."""
        if not keys:
            return []
        # The index's hash of each key (a key may be longer than a B-tree entry).
        hashes = [hashlib.md5(k.encode(), usedforsecurity=False).hexdigest() for k in keys]
        with translate_db_errors():
            async with self._pool.connection() as conn:
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute(
                    sql.SQL(
                        "WITH runs AS (SELECT a.task_key AS key, a.id, a.best_val_accuracy AS best,"
                        " {tried} - %s::text[] AS tried FROM attempts a"
                        " WHERE md5(a.task_key) = ANY(%s) AND a.task_key = ANY(%s)"
                        " AND a.status IN ('TRAINED', 'COMPLETE')"
                        " AND a.best_val_accuracy BETWEEN 0 AND 1"
                        " AND trusted_run(a.provenance, a.owner, %s)),"
                        " groups AS (SELECT key, tried, count(*) AS runs, avg(best) AS value,"
                        " (array_agg(id ORDER BY best DESC, id))[1] AS best_id"
                        " FROM runs GROUP BY key, tried)"
                        " SELECT g.key, g.tried, g.runs, g.value, a.id AS attempt_id, a.name,"
                        " a.provenance, a.owner, {tried} AS command,"
                        " a.best_val_accuracy FROM groups g JOIN attempts a ON a.id = g.best_id"
                        " ORDER BY g.key, a.id"
                    ).format(tried=_WHAT_WAS_TRIED),
                    (list(ignored), hashes, list(keys), list(trusted)),
                )
                return [
                    TriedCommand(
                        r["key"],
                        r["tried"] or {},
                        int(r["runs"]),
                        float(r["value"]),
                        _evaluation(r),
                    )
                    for r in await cur.fetchall()
                ]

    async def evaluations(self, trusted: Sequence[str]) -> list[Evaluation]:
        """Every finished attempt with a validation accuracy that may be learned from,
        with its task key: every run trained here, and the claims (imported runs, and runs
        reported by users' code with the params they ran) of admins and of the `trusted`
        owners (migration 0012's `trusted_run`). Anyone may
        import anything: another writer's claims would steer everyone's suggestions."""
        with translate_db_errors():
            async with self._pool.connection() as conn:
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute(
                    sql.SQL(
                        "SELECT a.task_key AS key, a.id AS attempt_id, a.name, a.provenance,"
                        # What was tried: a command, or the params a reported run's code ran.
                        " a.owner, {} AS command, a.best_val_accuracy"
                        # The attempt's stored best (migration 0021): one row read per attempt,
                        # not its every epoch. An accuracy, not NaN (PostgreSQL's NaN equals
                        # itself) or nonsense; NULL where no epoch was validated.
                        " FROM attempts a WHERE a.best_val_accuracy BETWEEN 0 AND 1"
                        " AND a.status = ANY(%s) AND a.task_key IS NOT NULL"
                        " AND trusted_run(a.provenance, a.owner, %s) ORDER BY a.id"
                    ).format(_WHAT_WAS_TRIED),
                    (list(_FINISHED), list(trusted)),
                )
                return [_evaluation(r) for r in await cur.fetchall()]

    async def study_keys(self, names: Sequence[str]) -> dict[str, list[int]]:
        """The attempts of these studies' trials, by the study's name; NotFound for a
        study that does not exist."""
        with translate_db_errors():
            async with self._pool.connection() as conn:
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute(
                    "SELECT s.name, array_remove(array_agg(t.attempt_id), NULL) AS ids"
                    " FROM studies s LEFT JOIN study_trials t ON t.study_id = s.id"
                    " WHERE s.name = ANY(%s) GROUP BY s.name",
                    (list(names),),
                )
                found = {r["name"]: list(r["ids"]) for r in await cur.fetchall()}
        missing = [n for n in names if n not in found]
        if missing:
            raise errors.NotFound(f"no study {missing[0]!r}")
        return found

    async def studies_done(self) -> int:
        with translate_db_errors():
            async with self._pool.connection() as conn:
                cur = await conn.execute("SELECT count(*) FROM studies WHERE state = 'DONE'")
                row = await cur.fetchone()
                return int(row[0]) if row else 0

    async def distance(self) -> tuple[dict[str, Any], int, dt.datetime] | None:
        """The fitted distance (its model as JSON), the studies done when it was fitted,
        and when."""
        with translate_db_errors():
            async with self._pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT model, studies_done, fitted_at FROM task_distance WHERE id = 1"
                )
                row = await cur.fetchone()
        return None if row is None else (dict(row[0]), int(row[1]), row[2])

    async def save_distance(
        self, kind: str, model: dict[str, Any], studies_done: int
    ) -> dt.datetime:
        """Keeps a fitted distance; returns when it was fitted."""
        with translate_db_errors():
            async with self._pool.connection() as conn:
                cur = await conn.execute(
                    "INSERT INTO task_distance (id, kind, model, studies_done) VALUES"
                    " (1, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET kind = EXCLUDED.kind,"
                    " model = EXCLUDED.model, studies_done = EXCLUDED.studies_done,"
                    " fitted_at = now() RETURNING fitted_at",
                    (kind, Jsonb(model), studies_done),
                )
                row = await cur.fetchone()
        assert row is not None
        fitted_at: dt.datetime = row[0]
        return fitted_at
