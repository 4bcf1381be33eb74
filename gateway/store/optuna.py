"""Every SQL statement of the studies that Optuna's own clients make and drive
(gateway/optuna/): their studies, trials, parameters, values and attributes.

Such a study is a row of `studies` with `directions`; each trial a row of
`study_trials` with its own Optuna `state`, and an attempt `STUDY-number` (provenance
REPORTED, origin "optuna") made in the same statement, so the trial is an attempt like
any other. Its intermediate values are the attempt's metric `intermediate_value`, so
GetMetricHistory, compare and the dashboard read them as any reported metric.

Attribute values and distributions are kept as the JSON text Optuna's protocol carries
(Python's json writes NaN, which jsonb cannot hold), so a client reads back exactly what
it wrote. Writes name the caller's owner scope (None: an admin): a trial or study of
another owner is PERMISSION_DENIED, decided in the statement that changes it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
import psycopg_pool
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from gateway.store.database import translate_db_errors
from gateway.store.reports import FENCE, REPORTER
from gateway.store.studies import STUDIES
from gateway.store.work import EVENTS
from metalearn import errors

# The metric of a trial's attempt that holds its intermediate values.
INTERMEDIATE = "intermediate_value"
# An attempt's status for each Optuna state of its trial.
ATTEMPT_STATUS = {
    "WAITING": "INCOMPLETE",
    "RUNNING": "TRAINING",
    "COMPLETE": "TRAINED",
    "PRUNED": "PRUNED",
    "FAIL": "FAILED",
}
FINISHED = frozenset({"COMPLETE", "PRUNED", "FAIL"})
# Parameters, attributes and intermediate values of one trial, at most (a trial's share
# of the database is bounded like a reported run's).
MAX_TRIAL_ENTRIES = 10_000
MAX_INTERMEDIATE_VALUES = 1_000_000


@dataclass(frozen=True)
class OptunaStudyRow:
    id: int
    name: str
    owner: str
    directions: list[str]
    user_attrs: dict[str, str]
    system_attrs: dict[str, str]


@dataclass(frozen=True)
class OptunaTrialRow:
    id: int
    number: int
    state: str
    values: list[float] | None
    started_at: dt.datetime | None
    completed_at: dt.datetime | None
    distributions: dict[str, str]
    internal: dict[str, float]
    user_attrs: dict[str, str]
    system_attrs: dict[str, str]
    steps: list[int]
    intermediate: list[float]


@dataclass(frozen=True)
class Made:
    """A new trial: its id, number and start (None: it waits)."""

    id: int
    number: int
    started_at: dt.datetime | None
    # Whether the study had trials waiting when this one was made (start_trial only).
    waiting: bool = False


@dataclass(frozen=True)
class TrialTemplate:
    """A trial made whole at once (Optuna's `template_trial`: enqueued, copied, added)."""

    # Where it was first recorded, when brought in from another storage (None: here).
    origin: dict[str, str] | None
    state: str
    values: list[float] | None
    started_at: dt.datetime | None
    completed_at: dt.datetime | None
    params: dict[str, Any]
    internal: dict[str, float]
    distributions: dict[str, str]
    user_attrs: dict[str, str]
    system_attrs: dict[str, str]
    intermediate: dict[int, float]


_STUDY = sql.SQL("s.id, s.name, s.owner, s.directions, s.user_attrs, s.system_attrs")
# A trial with its intermediate values, from its attempt's metric.
_TRIAL = sql.SQL(
    "SELECT t.id, t.number, t.state, t.vals AS values, t.started_at, t.completed_at,"
    " t.distributions, t.internal, t.user_attrs, t.system_attrs,"
    " COALESCE(iv.steps, '{{}}') AS steps, COALESCE(iv.vals, '{{}}') AS intermediate"
    " FROM study_trials t LEFT JOIN LATERAL (SELECT array_agg(p.step ORDER BY p.step)"
    " AS steps, array_agg(p.value ORDER BY p.step) AS vals FROM metric_series se"
    " JOIN metric_points p ON p.series_id = se.id"
    " WHERE se.attempt_id = t.attempt_id AND se.key = {key}) iv ON true"
).format(key=sql.Literal(INTERMEDIATE))


def _study(row: dict[str, Any]) -> OptunaStudyRow:
    return OptunaStudyRow(**{k: row[k] for k in OptunaStudyRow.__dataclass_fields__})


def _trial(row: dict[str, Any]) -> OptunaTrialRow:
    return OptunaTrialRow(**{k: row[k] for k in OptunaTrialRow.__dataclass_fields__})


def _owned(what: str, owner: str, scope: str | None) -> None:
    if scope is not None and owner != scope:
        raise errors.PermissionDenied(
            f"{what} belongs to another principal: only its owner or an admin may change it"
        )


@asynccontextmanager
async def _statement(
    pool: psycopg_pool.AsyncConnectionPool,
) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A connection in autocommit, for calls of one statement: one round trip instead of
    three (BEGIN, the statement, COMMIT). Optuna's clients make one call for each
    parameter, intermediate value and attribute, and it shows: 166 against 287 us of CPU
    a statement on this machine."""
    async with pool.connection() as conn:
        await conn.set_autocommit(True)
        try:
            yield conn
        finally:
            if not conn.closed:
                await conn.set_autocommit(False)


class OptunaStore:
    def __init__(self, pool: psycopg_pool.AsyncConnectionPool) -> None:
        self._pool = pool

    # Studies.

    async def create_study(
        self, name: str, owner: str, directions: Sequence[str], spec: bytes
    ) -> int:
        """A new study; AlreadyExists when the name is taken, by a study or by attempts
        named as its trials would be."""
        with translate_db_errors():
            async with self._pool.connection() as conn, conn.transaction():
                cur = await conn.execute(
                    "SELECT name FROM attempts WHERE name LIKE %s AND name ~ %s LIMIT 1",
                    (_like_prefix(name) + "-%", "^" + _regex_literal(name) + "-[0-9]+$"),
                )
                taken = await cur.fetchone()
                if taken is not None:
                    raise errors.AlreadyExists(
                        f"attempt {taken[0]!r} exists: this study's trials would need its name"
                    )
                try:
                    cur = await conn.execute(
                        "INSERT INTO studies (name, owner, spec, directions) VALUES (%s, %s, %s,"
                        " %s) RETURNING id",
                        (name, owner, spec, list(directions)),
                    )
                except psycopg.errors.UniqueViolation as err:
                    raise errors.AlreadyExists(f"study {name!r} exists") from err
                row = await cur.fetchone()
        assert row is not None
        return int(row[0])

    async def study(self, study_id: int) -> OptunaStudyRow:
        with translate_db_errors():
            async with _statement(self._pool) as conn:
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute(
                    sql.SQL(
                        "SELECT {} FROM studies s WHERE s.id = %s AND s.directions IS NOT NULL"
                    ).format(_STUDY),
                    (study_id,),
                )
                row = await cur.fetchone()
        if row is None:
            raise errors.NotFound(f"study id {study_id} not found")
        return _study(row)

    async def study_id(self, name: str) -> int:
        with translate_db_errors():
            async with _statement(self._pool) as conn:
                cur = await conn.execute(
                    "SELECT id FROM studies WHERE name = %s AND directions IS NOT NULL", (name,)
                )
                row = await cur.fetchone()
        if row is None:
            raise errors.NotFound(f"study {name!r} not found")
        return int(row[0])

    async def studies(self) -> list[OptunaStudyRow]:
        with translate_db_errors():
            async with _statement(self._pool) as conn:
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute(
                    sql.SQL(
                        "SELECT {} FROM studies s WHERE s.directions IS NOT NULL ORDER BY s.id"
                    ).format(_STUDY)
                )
                return [_study(r) for r in await cur.fetchall()]

    async def delete_study(self, study_id: int, scope: str | None) -> None:
        """Removes the study and its trials (their attempts stay, as for every study)."""
        with translate_db_errors():
            async with self._pool.connection() as conn, conn.transaction():
                cur = await conn.execute(
                    "SELECT name, owner FROM studies WHERE id = %s AND directions IS NOT NULL"
                    " FOR UPDATE",
                    (study_id,),
                )
                row = await cur.fetchone()
                if row is None:
                    raise errors.NotFound(f"study id {study_id} not found")
                _owned(f"study {row[0]!r}", row[1], scope)
                await conn.execute("DELETE FROM studies WHERE id = %s", (study_id,))
                # Its watchers (WatchStudy) end at once, as for any deleted study.
                await conn.execute("SELECT pg_notify(%s, %s::text)", (STUDIES, study_id))

    async def set_study_attr(
        self, study_id: int, scope: str | None, system: bool, key: str, value: str
    ) -> None:
        column = sql.Identifier("system_attrs" if system else "user_attrs")
        with translate_db_errors():
            async with _statement(self._pool) as conn:
                cur = await conn.execute(
                    sql.SQL(
                        "UPDATE studies SET {c} = {c} || jsonb_build_object(%s::text, %s::text),"
                        " updated_at = now() WHERE id = %s AND directions IS NOT NULL"
                        " AND (%s::text IS NULL OR owner = %s)"
                        " AND ((SELECT count(*) FROM jsonb_object_keys({c})) < %s OR {c} ? %s)"
                        " RETURNING id"
                    ).format(c=column),
                    (key, value, study_id, scope, scope, MAX_TRIAL_ENTRIES, key),
                )
                if await cur.fetchone() is None:
                    found = await self.study(study_id)  # NotFound
                    _owned(f"study {found.name!r}", found.owner, scope)
                    raise errors.ResourceExhausted(
                        f"study {found.name!r} holds {MAX_TRIAL_ENTRIES} attributes of this kind"
                    )

    # Trials.

    async def start_trial(self, study_id: int, scope: str | None, doc: dict[str, Any]) -> Made:
        """A new RUNNING trial with its attempt, in one statement: the hot path of every
        Optuna worker (`create_trial` makes whole trials). The attempt keeps its document
        as JSON only (no serialized form, as the oldest attempts): `doc` is made for trial
        number 0 of a study named "-", and the statement sets the number it takes and the
        study's name."""
        with translate_db_errors():
            async with _statement(self._pool) as conn:
                cur = await conn.execute(
                    "WITH n AS (UPDATE studies SET trials_made = trials_made + 1,"
                    " updated_at = now() WHERE id = %(study)s AND directions IS NOT NULL"
                    " AND (%(scope)s::text IS NULL OR owner = %(scope)s)"
                    " RETURNING trials_made - 1 AS number, name, owner),"
                    " a AS (INSERT INTO attempts (name, doc, owner, status, claims, leased_by)"
                    " SELECT n.name || '-' || n.number, jsonb_set(jsonb_set(jsonb_set(jsonb_set("
                    "jsonb_set(jsonb_set(%(doc)s::jsonb, '{trial,number}', to_jsonb(n.number)),"
                    " '{tags,trial}', to_jsonb(n.number::text)), '{reported,origin,id}',"
                    " to_jsonb(%(study)s::text || '/' || n.number)), '{trial,study}',"
                    " to_jsonb(n.name)), '{tags,study}', to_jsonb(n.name)),"
                    " '{reported,origin,group}', to_jsonb(n.name)), n.owner, 'TRAINING',"
                    " %(fence)s, %(reporter)s FROM n RETURNING id),"
                    " se AS (INSERT INTO metric_series (attempt_id, key) SELECT id, %(key)s"
                    " FROM a RETURNING attempt_id),"
                    " tr AS (INSERT INTO study_trials (study_id, number, attempt_id, queued,"
                    " params, internal, state, started_at) SELECT %(study)s, n.number,"
                    " se.attempt_id, true, '{}', '{}', 'RUNNING', %(now)s FROM n, se"
                    " RETURNING id, number, started_at, attempt_id)"
                    " SELECT tr.id, tr.number, tr.started_at, pg_notify(%(events)s,"
                    " json_build_object('id', tr.attempt_id, 'kind', 'status')::text),"
                    # From its partial index (migration 0020): one probe.
                    " EXISTS (SELECT 1 FROM study_trials w WHERE w.study_id = %(study)s"
                    " AND w.state = 'WAITING') FROM tr",
                    {"study": study_id, "scope": scope, "doc": Jsonb(doc), "fence": FENCE,
                     "reporter": REPORTER, "key": INTERMEDIATE, "now": dt.datetime.now(dt.UTC),
                     "events": EVENTS},
                )  # fmt: skip
                made = await cur.fetchone()
        if made is None:
            found = await self.study(study_id)  # NotFound
            _owned(f"study {found.name!r}", found.owner, scope)
            raise errors.NotFound(f"study id {study_id} not found")
        return Made(int(made[0]), int(made[1]), made[2], bool(made[4]))

    async def write(
        self,
        trial_id: int,
        scope: str | None,
        intermediate: dict[int, float],
        state: str | None,
        values: Sequence[float] | None,
    ) -> bool:
        """Stores `intermediate` values (a step again replaces its value), then moves the
        trial to `state` (with `values`) and writes its parameters and values into its
        attempt's JSON document, in one statement: SetTrialIntermediateValue,
        SetTrialStateValues and WriteTrial. Refused whole. False when RUNNING was asked of
        a trial no longer WAITING (another worker took it), as Optuna's storages answer."""
        steps = sorted(intermediate)
        with translate_db_errors():
            async with _statement(self._pool) as conn:
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute(
                    "WITH t AS (SELECT t.id, t.state, t.attempt_id, s.owner"
                    " FROM study_trials t JOIN studies s ON s.id = t.study_id"
                    " WHERE t.id = %(id)s AND t.state IS NOT NULL FOR UPDATE OF t),"
                    " ok AS (SELECT * FROM t WHERE t.state IN ('WAITING', 'RUNNING')"
                    " AND (%(scope)s::text IS NULL OR t.owner = %(scope)s)),"
                    " se AS (SELECT m.id, m.points FROM metric_series m JOIN ok"
                    " ON m.attempt_id = ok.attempt_id WHERE m.key = %(key)s"
                    " AND m.points + cardinality(%(steps)s::bigint[]) <= %(cap)s),"
                    " put AS (INSERT INTO metric_points (series_id, step, value, at_ms)"
                    " SELECT se.id, p.step, p.value, %(at)s FROM se,"
                    " unnest(%(steps)s::bigint[], %(values_at)s::float8[]) AS p(step, value)"
                    " ON CONFLICT (series_id, step) DO UPDATE SET value = EXCLUDED.value,"
                    " at_ms = EXCLUDED.at_ms RETURNING series_id, xmax = 0 AS fresh),"
                    " cnt AS (UPDATE metric_series m SET points = m.points + f.n FROM"
                    " (SELECT series_id, count(*) FILTER (WHERE fresh) AS n FROM put"
                    " GROUP BY series_id) f WHERE m.id = f.series_id),"
                    # The state moves only when the values (if any) could all be stored.
                    " upd AS (UPDATE study_trials st SET state = %(state)s,"
                    " vals = COALESCE(%(vals)s::float8[], st.vals),"
                    " started_at = CASE WHEN %(state)s = 'RUNNING' THEN now()"
                    " ELSE st.started_at END,"
                    " completed_at = CASE WHEN %(state)s IN ('COMPLETE', 'PRUNED', 'FAIL')"
                    " THEN now() END FROM ok WHERE st.id = ok.id"
                    " AND %(state)s::text IS NOT NULL"
                    " AND NOT (%(state)s = 'RUNNING' AND ok.state <> 'WAITING')"
                    " AND (cardinality(%(steps)s::bigint[]) = 0 OR EXISTS (SELECT 1 FROM se))"
                    " RETURNING st.attempt_id, st.vals, st.params),"
                    " att AS (UPDATE attempts a SET status = %(status)s, updated_at = now(),"
                    " doc = jsonb_set(jsonb_set(jsonb_set(a.doc, '{trial,params}', upd.params),"
                    " '{reported,params}', upd.params), '{trial,values}', COALESCE((SELECT"
                    " jsonb_agg(CASE WHEN v = 'NaN'::float8 OR v IN ('Infinity'::float8,"
                    " '-Infinity'::float8) THEN to_jsonb(v::text) ELSE to_jsonb(v) END)"
                    " FROM unnest(upd.vals) AS v), '[]'::jsonb))"
                    " FROM upd WHERE a.id = upd.attempt_id RETURNING a.id)"
                    " SELECT (SELECT state FROM t) AS was, (SELECT owner FROM t) AS owner,"
                    " (SELECT attempt_id FROM t) AS attempt_id,"
                    " (SELECT count(*) FROM se) AS series, (SELECT count(*) FROM upd) AS moved,"
                    " (SELECT count(pg_notify(%(events)s, json_build_object('id', att.id,"
                    " 'kind', 'status')::text)) FROM att) AS told",
                    {"id": trial_id, "scope": scope, "key": INTERMEDIATE, "steps": steps,
                     "values_at": [intermediate[k] for k in steps], "at": _now_ms(),
                     "cap": MAX_INTERMEDIATE_VALUES, "state": state,
                     "vals": None if values is None else list(values),
                     "status": ATTEMPT_STATUS.get(state or "", "TRAINING"), "events": EVENTS},
                )  # fmt: skip
                row = await cur.fetchone()
        assert row is not None
        if row["was"] is None:
            raise errors.NotFound(f"trial id {trial_id} not found")
        label = f"trial of id {trial_id}"
        _owned(label, row["owner"], scope)
        if row["was"] in FINISHED:
            raise errors.FailedPrecondition(
                f"{label} has finished ({row['was']}): it cannot change"
            )
        if steps and not row["series"]:
            if row["attempt_id"] is None:
                raise errors.FailedPrecondition(f"{label}'s attempt was deleted: nothing to add to")
            raise errors.ResourceExhausted(
                f"{label} would hold more than {MAX_INTERMEDIATE_VALUES} intermediate values"
            )
        if state is None:
            return True
        return bool(row["moved"])

    async def create_trial(
        self,
        study_id: int,
        scope: str | None,
        doc_of: Callable[[str, int], dict[str, Any]],
        template: TrialTemplate,
    ) -> Made:
        """A trial made whole at once (enqueued, copied, imported), as `template` has it,
        with its attempt (whose document `doc_of(study name, number)` makes: JSON only,
        as `start_trial`'s)."""
        t = template
        with translate_db_errors():
            async with self._pool.connection() as conn, conn.transaction():
                cur = await conn.execute(
                    "UPDATE studies SET trials_made = trials_made + 1, updated_at = now()"
                    " WHERE id = %s AND directions IS NOT NULL RETURNING trials_made - 1, name,"
                    " owner",
                    (study_id,),
                )
                row = await cur.fetchone()
                if row is None:
                    raise errors.NotFound(f"study id {study_id} not found")
                number, name, owner = int(row[0]), str(row[1]), str(row[2])
                _owned(f"study {name!r}", owner, scope)
                cur = await conn.execute(
                    "WITH a AS (INSERT INTO attempts (name, doc, owner, status, claims,"
                    " leased_by) VALUES (%s, %s, %s, %s, %s, %s) RETURNING id),"
                    " se AS (INSERT INTO metric_series (attempt_id, key, points)"
                    " SELECT id, %s, %s FROM a RETURNING id, attempt_id)"
                    " INSERT INTO study_trials (study_id, number, attempt_id, queued, params,"
                    " internal, state, distributions, vals, user_attrs, system_attrs,"
                    " started_at, completed_at)"
                    " SELECT %s, %s, se.attempt_id, true, %s, %s, %s, %s, %s, %s, %s,"
                    " %s, %s FROM se RETURNING id, attempt_id, (SELECT id FROM se), started_at,"
                    # Told at commit, as `notify` tells (one statement fewer a trial).
                    " pg_notify(%s, json_build_object('id', attempt_id, 'kind', 'status')::text)",
                    (
                        f"{name}-{number}", Jsonb(doc_of(name, number)), owner,
                        ATTEMPT_STATUS[t.state], FENCE, REPORTER, INTERMEDIATE,
                        len(t.intermediate), study_id, number, Jsonb(t.params),
                        Jsonb(t.internal), t.state, Jsonb(t.distributions), t.values,
                        Jsonb(t.user_attrs), Jsonb(t.system_attrs), t.started_at,
                        t.completed_at, EVENTS,
                    ),
                )  # fmt: skip
                made = await cur.fetchone()
                assert made is not None
                trial_id, series_id = int(made[0]), int(made[2])
                started: dt.datetime | None = made[3]
                if t.intermediate:
                    async with conn.cursor() as points:
                        await points.executemany(
                            "INSERT INTO metric_points (series_id, step, value, at_ms)"
                            " VALUES (%s, %s, %s, %s)",
                            [(series_id, step, value, _now_ms())
                             for step, value in sorted(t.intermediate.items())],
                        )  # fmt: skip
        return Made(trial_id, number, started)

    async def trial_id(self, study_id: int, number: int) -> int:
        with translate_db_errors():
            async with _statement(self._pool) as conn:
                cur = await conn.execute(
                    "SELECT t.id FROM study_trials t JOIN studies s ON s.id = t.study_id"
                    " WHERE t.study_id = %s AND t.number = %s AND s.directions IS NOT NULL",
                    (study_id, number),
                )
                row = await cur.fetchone()
        if row is None:
            raise errors.NotFound(f"trial {number} of study id {study_id} not found")
        return int(row[0])

    async def trial(self, trial_id: int) -> OptunaTrialRow:
        with translate_db_errors():
            async with _statement(self._pool) as conn:
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute(
                    sql.SQL("{} WHERE t.id = %s AND t.state IS NOT NULL").format(_TRIAL),
                    (trial_id,),
                )
                row = await cur.fetchone()
        if row is None:
            raise errors.NotFound(f"trial id {trial_id} not found")
        return _trial(row)

    async def trials(
        self, study_id: int, included: Sequence[int], greater_than: int
    ) -> list[OptunaTrialRow]:
        """A study's trials with ids above `greater_than` or in `included`, by id. One
        statement (a client asks after every trial, and mostly finds nothing new): the
        study's row with each trial, or alone when there is none."""
        with translate_db_errors():
            async with _statement(self._pool) as conn:
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute(
                    sql.SQL(
                        "SELECT s.id AS found, r.* FROM studies s LEFT JOIN LATERAL ({}"
                        " WHERE t.study_id = s.id AND (t.id > %s OR t.id = ANY(%s))) r ON true"
                        " WHERE s.id = %s AND s.directions IS NOT NULL ORDER BY r.id"
                    ).format(_TRIAL),
                    (greater_than, list(included), study_id),
                )
                rows = await cur.fetchall()
        if not rows:
            raise errors.NotFound(f"study id {study_id} not found")
        return [_trial(r) for r in rows if r["id"] is not None]

    async def earlier_distribution(self, trial_id: int, name: str) -> str | None:
        """The distribution another trial of the same study gave parameter `name`."""
        with translate_db_errors():
            async with _statement(self._pool) as conn:
                cur = await conn.execute(
                    "SELECT o.distributions ->> %s FROM study_trials t JOIN study_trials o"
                    " ON o.study_id = t.study_id AND o.id <> t.id WHERE t.id = %s"
                    " AND o.distributions ? %s LIMIT 1",
                    (name, trial_id, name),
                )
                row = await cur.fetchone()
        return None if row is None else str(row[0])

    async def set_param(
        self,
        trial_id: int,
        scope: str | None,
        name: str,
        external: Any,
        internal: float,
        distribution: str,
    ) -> None:
        with translate_db_errors():
            async with _statement(self._pool) as conn:
                cur = await conn.execute(
                    sql.SQL(
                        "UPDATE study_trials t SET params = t.params || jsonb_build_object("
                        "%s::text, %s::jsonb), internal = t.internal || jsonb_build_object("
                        "%s::text, %s::float8), distributions = t.distributions ||"
                        " jsonb_build_object(%s::text, %s::text) FROM studies s WHERE t.id = %s"
                        " AND s.id = t.study_id {}"
                        " AND ((SELECT count(*) FROM jsonb_object_keys(t.internal)) < %s"
                        " OR t.internal ? %s)"
                        " RETURNING t.id"
                    ).format(_WRITABLE),
                    (name, Jsonb(external), name, internal, name, distribution, trial_id,
                     scope, scope, MAX_TRIAL_ENTRIES, name),
                )  # fmt: skip
                if await cur.fetchone() is None:
                    await self._refused(conn, trial_id, scope, "parameters")

    async def set_attr(
        self, trial_id: int, scope: str | None, system: bool, key: str, value: str
    ) -> None:
        column = sql.Identifier("system_attrs" if system else "user_attrs")
        with translate_db_errors():
            async with _statement(self._pool) as conn:
                cur = await conn.execute(
                    sql.SQL(
                        "UPDATE study_trials t SET {c} = t.{c} || jsonb_build_object(%s::text,"
                        " %s::text) FROM studies s WHERE t.id = %s AND s.id = t.study_id {w}"
                        " AND ((SELECT count(*) FROM jsonb_object_keys(t.{c})) < %s"
                        " OR t.{c} ? %s) RETURNING t.id"
                    ).format(c=column, w=_WRITABLE),
                    (key, value, trial_id, scope, scope, MAX_TRIAL_ENTRIES, key),
                )
                if await cur.fetchone() is None:
                    await self._refused(conn, trial_id, scope, "attributes of this kind")

    async def writable(self, trial_id: int, scope: str | None) -> None:
        """Raises what a write to trial `trial_id` would meet (NotFound, PermissionDenied,
        FailedPrecondition when it has finished); nothing when it may change."""
        with translate_db_errors():
            async with _statement(self._pool) as conn:
                cur = await conn.execute(
                    "SELECT t.state FROM study_trials t WHERE t.id = %s AND t.state IS NOT NULL",
                    (trial_id,),
                )
                row = await cur.fetchone()
                if row is None or row[0] in FINISHED or scope is not None:
                    try:
                        await self._refused(conn, trial_id, scope, "entries")
                    except errors.ResourceExhausted:
                        return

    async def _refused(
        self, conn: psycopg.AsyncConnection[Any], trial_id: int, scope: str | None, what: str
    ) -> None:
        """Why a write to trial `trial_id` changed nothing: raises."""
        cur = await conn.execute(
            "SELECT t.state, t.number, t.attempt_id, s.name, s.owner FROM study_trials t"
            " JOIN studies s ON s.id = t.study_id WHERE t.id = %s AND t.state IS NOT NULL",
            (trial_id,),
        )
        row = await cur.fetchone()
        if row is None:
            raise errors.NotFound(f"trial id {trial_id} not found")
        state, number, attempt_id, study, owner = row
        label = f"trial {number} of study {study!r}"
        _owned(label, owner, scope)
        if state in FINISHED:
            raise errors.FailedPrecondition(f"{label} has finished ({state}): it cannot change")
        if attempt_id is None:
            raise errors.FailedPrecondition(f"{label}'s attempt was deleted: nothing to add to")
        raise errors.ResourceExhausted(f"{label} holds as many {what} as a trial may")


# A trial another principal's or a finished one is not written (the caller says why).
_WRITABLE = sql.SQL(
    "AND t.state IN ('WAITING', 'RUNNING') AND s.directions IS NOT NULL"
    " AND (%s::text IS NULL OR s.owner = %s)"
)


def _now_ms() -> int:
    return int(dt.datetime.now(dt.UTC).timestamp() * 1000)


def _like_prefix(name: str) -> str:
    return name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _regex_literal(name: str) -> str:
    return "".join("\\" + c if c in ".^$*+?()[]{}|\\-" else c for c in name)
