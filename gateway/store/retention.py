"""Every SQL statement of retention (`metalearn retention`): old runs' per-step data
thinned, their summaries untouched.

A run at rest whose last change is older than a cutoff keeps at most `keep` epochs: its
first HEAD epochs (what the curve model and the rules read first), its best by
validation accuracy, its last, and epochs evenly spaced between; a reported run's metric
series keep as many points each (first, last, lowest, highest, evenly spaced). What the
attempt row says (status, best validation accuracy, current epoch, prognosis, document)
does not change: the best and last epochs stay, so the epochs' delete trigger (migration
0021) finds the same best. The run is marked `compacted_at` (migration 0025), so the
curve model no longer learns from it as a whole curve.

Each batch of attempts is its own short transaction (what a busy store can afford while
trainers append), and a run compacted once is passed over.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import psycopg_pool
from psycopg import sql

from gateway.store.database import translate_db_errors

# A run's first epochs are kept whole.
HEAD = 10
# Statuses of a run at rest (nothing will append to it).
AT_REST = ["TRAINED", "COMPLETE", "FAILED", "CANCELLED", "PRUNED"]

# The runs one batch thins: at rest since before the cutoff, not thinned yet, in id order.
_CHOSEN = sql.SQL(
    "SELECT id FROM attempts WHERE status = ANY(%(rest)s) AND updated_at < %(before)s"
    " AND compacted_at IS NULL AND id > %(after)s ORDER BY id LIMIT %(batch)s"
)

# An epoch goes unless it is among the first HEAD, the best (by validation accuracy, then
# the earliest), the last, or the first past one of `keep` even steps of the run: at most
# keep + HEAD + 2 stay.
_EPOCHS = sql.SQL(
    "WITH chosen AS ({chosen}),"
    " ranked AS (SELECT e.attempt_id, e.epoch, count(*) OVER w AS n,"
    " max(e.epoch) OVER w AS last, row_number() OVER (PARTITION BY e.attempt_id"
    " ORDER BY e.val_accuracy DESC NULLS LAST, e.epoch) AS best_rank"
    " FROM attempt_epochs e JOIN chosen c ON c.id = e.attempt_id"
    " WINDOW w AS (PARTITION BY e.attempt_id)),"
    " doomed AS (SELECT attempt_id, epoch FROM ranked r WHERE r.n > %(keep)s"
    " AND r.epoch > %(head)s AND r.best_rank > 1 AND r.epoch <> r.last"
    " AND (r.epoch::bigint * %(keep)s) / r.last = ((r.epoch - 1)::bigint * %(keep)s) / r.last),"
    " gone AS (DELETE FROM attempt_epochs d USING doomed x WHERE NOT %(dry)s"
    " AND d.attempt_id = x.attempt_id AND d.epoch = x.epoch RETURNING d.attempt_id),"
    " marked AS (UPDATE attempts a SET compacted_at = now() FROM chosen c"
    " WHERE a.id = c.id AND NOT %(dry)s RETURNING a.id)"
    " SELECT (SELECT count(*) FROM chosen), (SELECT max(id) FROM chosen),"
    " CASE WHEN %(dry)s THEN (SELECT count(*) FROM doomed) ELSE (SELECT count(*) FROM gone) END,"
    " (SELECT count(*) FROM marked)"
).format(chosen=_CHOSEN)

# The same for a reported run's metric points, per series: its first HEAD steps, its
# lowest and highest value (which is best depends on the metric), its last, and evenly
# spaced ones; each series' count of points follows.
_POINTS = sql.SQL(
    "WITH chosen AS ({chosen}),"
    " ranked AS (SELECT p.series_id, p.step, count(*) OVER w AS n,"
    " max(p.step) OVER w AS last, min(p.step) OVER w AS first,"
    " row_number() OVER (PARTITION BY p.series_id ORDER BY p.value DESC, p.step) AS high,"
    " row_number() OVER (PARTITION BY p.series_id ORDER BY p.value, p.step) AS low,"
    " row_number() OVER (PARTITION BY p.series_id ORDER BY p.step) AS place"
    " FROM metric_points p JOIN metric_series s ON s.id = p.series_id"
    " JOIN chosen c ON c.id = s.attempt_id WINDOW w AS (PARTITION BY p.series_id)),"
    " doomed AS (SELECT series_id, step FROM ranked r WHERE r.n > %(keep)s"
    " AND r.place > %(head)s AND r.high > 1 AND r.low > 1 AND r.step <> r.last"
    " AND ((r.step - r.first) * %(keep)s) / GREATEST(r.last - r.first, 1)"
    "   = ((r.step - r.first - 1) * %(keep)s) / GREATEST(r.last - r.first, 1)),"
    " gone AS (DELETE FROM metric_points d USING doomed x WHERE NOT %(dry)s"
    " AND d.series_id = x.series_id AND d.step = x.step RETURNING d.series_id),"
    " counted AS (UPDATE metric_series s SET points = s.points - g.n"
    " FROM (SELECT series_id, count(*) AS n FROM gone GROUP BY series_id) g"
    " WHERE s.id = g.series_id RETURNING s.id)"
    " SELECT CASE WHEN %(dry)s THEN (SELECT count(*) FROM doomed)"
    " ELSE (SELECT count(*) FROM gone) END, (SELECT count(*) FROM counted)"
).format(chosen=_CHOSEN)


@dataclass(frozen=True)
class Compacted:
    """What one batch did (or, in a dry run, would do)."""

    attempts: int
    epochs_removed: int
    points_removed: int
    last_id: int | None


class RetentionStore:
    def __init__(self, pool: psycopg_pool.AsyncConnectionPool) -> None:
        self._pool = pool

    async def compact(
        self,
        before: dt.datetime,
        keep: int,
        after_id: int = 0,
        batch: int = 200,
        dry_run: bool = False,
    ) -> Compacted:
        """Thins the next `batch` runs at rest since before `before` with ids past
        `after_id` (their points first, then their epochs, in one transaction)."""
        args = {
            "rest": AT_REST, "before": before, "after": after_id, "batch": batch,
            "keep": keep, "head": HEAD, "dry": dry_run,
        }  # fmt: skip
        with translate_db_errors():
            async with self._pool.connection() as conn, conn.transaction():
                cur = await conn.execute(_POINTS, args)
                points = await cur.fetchone()
                cur = await conn.execute(_EPOCHS, args)
                epochs = await cur.fetchone()
        assert points is not None and epochs is not None
        chosen, last_id, epochs_removed, _ = epochs
        return Compacted(int(chosen), int(epochs_removed or 0), int(points[0] or 0), last_id)
