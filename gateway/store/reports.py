"""Every SQL statement of runs reported by users' own code (gateway/reporting/): starting
them, their named metrics' points, their leases, and those whose reporter went silent.

A reported run is an attempt in TRAINING with provenance REPORTED. Its writer holds it
as a trainer's run is held: by a lease (renewed by every report) and a fencing token
(`claims`, 1 for a reported run), so its epochs take the same fenced statement
(`AttemptStore.append_epoch`) and its end the same one (`WorkStore.finish`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg_pool
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from gateway.store.attempts import _COLUMNS, AttemptRecord, Rewrite, _record
from gateway.store.database import translate_db_errors
from gateway.store.requests import RequestKey, remember, replayed
from gateway.store.work import _rewrite_document, notify
from metalearn import errors

# What `leased_by` says of a reported run: no gateway or trainer holds it.
REPORTER = "reporter"
# The fencing token of every reported run: it is claimed once, when it starts.
FENCE = 1


@dataclass(frozen=True)
class ReportedRow:
    """What a report needs of its run."""

    id: int
    name: str
    owner: str
    status: str
    provenance: str
    current_epoch: int
    error: str
    doc: dict[str, Any]


@dataclass(frozen=True)
class MetricHistory:
    steps: list[int]
    values: list[float]
    at_ms: list[int]


class ReportStore:
    def __init__(self, pool: psycopg_pool.AsyncConnectionPool) -> None:
        self._pool = pool

    async def start(
        self,
        name: str,
        spec: bytes,
        doc: dict[str, Any],
        owner: str,
        heartbeat_seconds: int,
        request: RequestKey | None = None,
    ) -> int:
        """Stores a new run, TRAINING and held by its reporter for `heartbeat_seconds`;
        returns its id. AlreadyExists when the name is taken; a retry of `request`
        returns the first call's run."""
        try:
            with translate_db_errors():
                async with self._pool.connection() as conn, conn.transaction():
                    done = await replayed(conn, request)
                    if done is not None:
                        return done
                    cur = await conn.execute(
                        "INSERT INTO attempts (name, spec, doc, owner, status, claims,"
                        " leased_by, lease_until) VALUES (%s, %s, %s, %s, 'TRAINING', %s, %s,"
                        " now() + make_interval(secs => %s)) RETURNING id",
                        (name, spec, Jsonb(doc), owner, FENCE, REPORTER, heartbeat_seconds),
                    )
                    row = await cur.fetchone()
                    assert row is not None
                    await remember(conn, request, int(row[0]))
                    await notify(conn.cursor(), int(row[0]), "status")
                    return int(row[0])
        except errors.AlreadyExists as err:
            raise errors.AlreadyExists(f"attempt name {name!r} is taken") from err

    async def asked(self, request: RequestKey) -> int | None:
        """The attempt a request carried out already (AIP-155), or None."""
        with translate_db_errors():
            async with self._pool.connection() as conn, conn.transaction():
                return await replayed(conn, request)

    async def keep(self, request: RequestKey, attempt_id: int) -> None:
        """Remembers that `request` was answered with `attempt_id`."""
        with translate_db_errors():
            async with self._pool.connection() as conn, conn.transaction():
                await remember(conn, request, attempt_id)

    async def record(self, attempt_id: int) -> AttemptRecord:
        """The attempt as the API shows it (without epochs)."""
        query = sql.SQL(
            "SELECT {}, NULL::bytea AS losses_wire FROM attempts a WHERE a.id = %s"
        ).format(_COLUMNS)
        with translate_db_errors():
            async with self._pool.connection() as conn:
                cur = conn.cursor(row_factory=dict_row, binary=True)
                await cur.execute(query, (attempt_id,))
                row = await cur.fetchone()
        if row is None:
            raise errors.NotFound(f"attempt id {attempt_id} not found")
        return _record(row)

    async def run(self, attempt_id: int) -> ReportedRow:
        """A run by id; NotFound when there is none."""
        with translate_db_errors():
            async with self._pool.connection() as conn:
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute(
                    "SELECT id, name, owner, status, provenance, current_epoch, error, doc"
                    " FROM attempts WHERE id = %s",
                    (attempt_id,),
                )
                row = await cur.fetchone()
        if row is None:
            raise errors.NotFound(f"attempt id {attempt_id} not found")
        return ReportedRow(**row)

    async def series(
        self, attempt_id: int, keys: Sequence[str], most: int
    ) -> tuple[dict[str, int], int]:
        """The ids of the run's metrics named `keys`, made where new, and how many were
        made. ResourceExhausted, making none, when the run would have more than `most`."""
        with translate_db_errors():
            async with self._pool.connection() as conn, conn.transaction():
                cur = await conn.execute(
                    "SELECT key, id FROM metric_series WHERE attempt_id = %s AND key = ANY(%s)",
                    (attempt_id, list(keys)),
                )
                found = {str(r[0]): int(r[1]) for r in await cur.fetchall()}
                new = [k for k in keys if k not in found]
                if not new:
                    return found, 0
                cur = await conn.execute(
                    "SELECT count(*) FROM metric_series WHERE attempt_id = %s", (attempt_id,)
                )
                row = await cur.fetchone()
                held = int(row[0]) if row else 0
                if held + len(new) > most:
                    raise errors.ResourceExhausted(
                        f"the run would have {held + len(new)} metric names; it may have at"
                        f" most {most}"
                    )
                cur = await conn.execute(
                    # DO UPDATE (to itself) so that a name another stream made comes back too.
                    "INSERT INTO metric_series (attempt_id, key)"
                    " SELECT %s, k FROM unnest(%s::text[]) k"
                    " ON CONFLICT (attempt_id, key) DO UPDATE SET key = EXCLUDED.key"
                    " RETURNING key, id",
                    (attempt_id, new),
                )
                found.update({str(r[0]): int(r[1]) for r in await cur.fetchall()})
                return found, len(new)

    async def points(self, attempt_id: int) -> int:
        """The points the run's metrics hold."""
        with translate_db_errors():
            async with self._pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT coalesce(sum(points), 0) FROM metric_series WHERE attempt_id = %s",
                    (attempt_id,),
                )
                row = await cur.fetchone()
        assert row is not None
        return int(row[0])

    async def report(
        self,
        runs: Sequence[tuple[int, int]],
        points: tuple[str, str, str, str] | None,
    ) -> dict[int, int]:
        """Stores the points of several runs' reports at once (array literals of series
        ids, steps, values and times; each point once) and renews each run's lease
        (`runs`: attempt id and heartbeat seconds), for the runs still TRAINING. Returns
        those runs with the points each newly stored; a run missing from it is no
        longer live and stored nothing. One statement, however many runs.

        The lease is written only once a tenth of it has passed: a reporter sending ten
        batches a second would otherwise rewrite its attempt's row ten times a second."""
        sets = points or ("{}", "{}", "{}", "{}")
        query = (
            "WITH given AS (SELECT DISTINCT ON (id) id, hb FROM"
            " unnest(%(ids)s::int8[], %(hbs)s::float8[]) AS g(id, hb)),"
            " run AS (SELECT a.id, a.lease_until, given.hb FROM attempts a JOIN given"
            " ON a.id = given.id WHERE a.claims = %(fence)s AND a.status = 'TRAINING'"
            " AND a.leased_by = %(reporter)s),"
            " renew AS (UPDATE attempts a SET lease_until = now() + make_interval(secs => run.hb)"
            " FROM run WHERE a.id = run.id AND a.status = 'TRAINING'"
            " AND run.lease_until < now() + make_interval(secs => run.hb * 0.9) RETURNING 1),"
            " ins AS (INSERT INTO metric_points (series_id, step, value, at_ms)"
            " SELECT p.series_id, p.step, p.value, p.at_ms FROM unnest(%(series)s::text::int8[],"
            " %(steps)s::text::int8[], %(values)s::text::float8[], %(at)s::text::int8[])"
            " AS p(series_id, step, value, at_ms)"
            " JOIN metric_series s ON s.id = p.series_id JOIN run ON run.id = s.attempt_id"
            " ON CONFLICT DO NOTHING RETURNING series_id),"
            " counted AS (UPDATE metric_series s SET points = s.points + c.n FROM"
            " (SELECT series_id, count(*) AS n FROM ins GROUP BY series_id) c"
            " WHERE s.id = c.series_id RETURNING s.attempt_id, c.n)"
            " SELECT run.id, (SELECT coalesce(sum(n), 0) FROM counted"
            " WHERE counted.attempt_id = run.id), (SELECT count(*) FROM renew) FROM run"
        )
        params = {
            "ids": [r[0] for r in runs],
            "hbs": [float(r[1]) for r in runs],
            "fence": FENCE,
            "reporter": REPORTER,
            "series": sets[0],
            "steps": sets[1],
            "values": sets[2],
            "at": sets[3],
        }
        with translate_db_errors():
            async with self._pool.connection() as conn:
                cur = await conn.execute(query, params)
                return {int(r[0]): int(r[1]) for r in await cur.fetchall()}

    async def rewrite(self, attempt_id: int, rewrite: Rewrite) -> bool:
        """Rewrites a live run's document (its metric names); False once it has ended."""
        with translate_db_errors():
            async with self._pool.connection() as conn, conn.transaction():
                cur = conn.cursor(row_factory=dict_row, binary=True)
                await cur.execute(
                    "SELECT spec, CASE WHEN spec IS NULL THEN doc END AS doc FROM attempts"
                    " WHERE id = %s AND claims = %s AND status = 'TRAINING' FOR UPDATE",
                    (attempt_id, FENCE),
                )
                row = await cur.fetchone()
                if row is None:
                    return False
                await _rewrite_document(cur, attempt_id, rewrite, row)
        return True

    async def history(
        self, attempt_id: int, key: str, after_step: int, limit: int
    ) -> MetricHistory:
        """Points of one metric after `after_step`, in step order, at most `limit`."""
        with translate_db_errors():
            async with self._pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT coalesce(array_agg(step ORDER BY step), '{}'),"
                    " coalesce(array_agg(value ORDER BY step), '{}'),"
                    " coalesce(array_agg(at_ms ORDER BY step), '{}') FROM ("
                    " SELECT p.step, p.value, p.at_ms FROM metric_points p"
                    " JOIN metric_series s ON s.id = p.series_id"
                    " WHERE s.attempt_id = %s AND s.key = %s AND p.step > %s"
                    " ORDER BY p.step LIMIT %s) page",
                    (attempt_id, key, after_step, limit),
                )
                row = await cur.fetchone()
        assert row is not None
        return MetricHistory(list(row[0]), list(row[1]), list(row[2]))

    async def expire_lost(self) -> list[tuple[int, str]]:
        """Fails the runs whose reporter sent nothing for their heartbeat: (id, name)."""
        with translate_db_errors():
            async with self._pool.connection() as conn, conn.transaction():
                cur = conn.cursor()
                await cur.execute(
                    "UPDATE attempts SET status = 'FAILED', leased_by = '', lease_until = NULL,"
                    " error = 'lost: its reporter sent nothing for '"
                    " || coalesce(doc -> 'reported' ->> 'heartbeat_seconds', '?') || ' s',"
                    " updated_at = now()"
                    " WHERE status = 'TRAINING' AND provenance = 'REPORTED'"
                    " AND leased_by = %s AND lease_until < now() RETURNING id, name",
                    (REPORTER,),
                )
                lost = [(int(r[0]), str(r[1])) for r in await cur.fetchall()]
                for attempt_id, _ in lost:
                    await notify(cur, attempt_id, "status")
        return lost
