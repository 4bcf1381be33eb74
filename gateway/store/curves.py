"""Every SQL statement about curves: what a prognosis reads of an attempt, where it is
kept, the finished runs the curve model learns from, and the model's versions.

What learns is evidence (issue 25): the curve model, and a task's best that a prognosis
holds a run to, read runs trained here and the claims (imports, reported runs) of admins
and trusted owners only (migration 0012's `trusted_run`), so another writer's fake perfect imports
neither teach the model nor make everyone's real runs look hopeless.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg_pool
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from gateway.store.database import translate_db_errors
from gateway.store.work import EVENTS

# Statuses whose epochs are a whole run: what the model learns from, and a task's best.
_FINISHED = ["TRAINED", "COMPLETE"]
# At most this many finished runs are learnt from (bounds a fit's memory and time: about
# a minute on one core), taken across tasks (see `CurveStore.finished`).
MAX_RUNS = 5_000
# A task's best is read from its newest this many finished runs.
_BEST_OF = 2_000
# Told, with the version, when a model is fitted: every replica loads it at once.
CURVES = "metalearn_curves"
# The advisory lock one replica holds while it fits (others wait, or skip a due refit).
_FIT_LOCK = 0x6375727665  # "curve"

_EPOCH_ARRAYS = (
    "(SELECT array_agg(e.epoch ORDER BY e.epoch) FROM attempt_epochs e"
    " WHERE e.attempt_id = a.id) AS epochs,"
    " (SELECT array_agg(e.loss ORDER BY e.epoch) FROM attempt_epochs e"
    " WHERE e.attempt_id = a.id) AS losses,"
    " (SELECT array_agg(e.learning_rate ORDER BY e.epoch) FROM attempt_epochs e"
    " WHERE e.attempt_id = a.id) AS learning_rates,"
    " (SELECT array_agg(e.val_loss ORDER BY e.epoch) FROM attempt_epochs e"
    " WHERE e.attempt_id = a.id) AS val_losses,"
    " (SELECT array_agg(e.val_accuracy ORDER BY e.epoch) FROM attempt_epochs e"
    " WHERE e.attempt_id = a.id) AS val_accuracies"
)
_FEATURES = (
    "(SELECT t.features FROM tasks t WHERE t.key = a.task_key AND t.state = 'READY'"
    # The key's profile as store/tasks.py picks it: from images or a sample first.
    " ORDER BY t.source = 'DECLARED', t.id DESC LIMIT 1) AS features"
)


# A run's task is its key's md5: the key holds every label (up to 10,000 of 256
# characters), and thousands of runs' keys would be the largest thing a fit holds.
_RUN_COLUMNS = "a.id, md5(a.task_key) AS task_key, a.status, a.provenance, a.doc"


@dataclass(frozen=True)
class CurveRow:
    """An attempt's epochs with what shaped them."""

    attempt_id: int
    task_key: str  # the md5 of the task's key (`_RUN_COLUMNS`)
    command: dict[str, Any]
    n_epoch: int
    epochs: list[int]
    losses: list[float]
    learning_rates: list[float]
    val_losses: list[float]
    val_accuracies: list[float]
    features: dict[str, float]
    status: str = ""
    # The best final validation accuracy of the task's other finished runs (None: none).
    task_best: float | None = None
    # Where its numbers come from: what it weighs in a fit (learning/provenance.py).
    provenance: str = "TRAINED"
    # The data it trained on as its trainer reported it (DatasetFingerprint as JSON):
    # its classes' counts say what chance is (learning/curves/chance.py).
    dataset: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelRow:
    version: int
    fitted_at: dt.datetime
    attempts: int
    tasks: int
    quality: dict[str, float]
    seconds: float
    model: bytes | None  # None when not asked for


def _declared(doc: dict[str, Any]) -> dict[str, Any]:
    """What a reported run says of itself, in a command's words as the rules read them:
    its declared labels (chance is 1/labels) and a learning rate among its params."""
    reported = doc.get("reported") or {}
    found: dict[str, Any] = {"label_names": list((reported.get("task") or {}).get("labels") or [])}
    lr = (reported.get("params") or {}).get("lr")
    if isinstance(lr, int | float) and not isinstance(lr, bool):
        found["optimizer"] = {"lr": lr}
    return found


def _curve(r: dict[str, Any]) -> CurveRow:
    doc = r.get("doc") or {}
    return CurveRow(
        attempt_id=int(r["id"]),
        task_key=r["task_key"] or "",
        command=doc.get("training_commands") or _declared(doc),
        n_epoch=int(doc.get("n_epoch") or (doc.get("training_commands") or {}).get("n_epoch") or 0),
        epochs=list(r["epochs"] or []),
        losses=list(r["losses"] or []),
        learning_rates=list(r["learning_rates"] or []),
        val_losses=list(r["val_losses"] or []),
        val_accuracies=list(r["val_accuracies"] or []),
        features=r["features"] or {},
        status=r["status"],
        task_best=r.get("task_best"),
        provenance=r.get("provenance") or "TRAINED",
        dataset=doc.get("dataset") or _declared_dataset(doc),
    )


def _declared_dataset(doc: dict[str, Any]) -> dict[str, Any]:
    """What a reported run declares of its validation split, as a trainer's
    DatasetFingerprint says it ({}: nothing, chance is 1/labels)."""
    task = (doc.get("reported") or {}).get("task") or {}
    counts = task.get("validation_images_per_label")
    return {"validation_images_per_label": counts} if counts else {}


def _model(r: dict[str, Any]) -> ModelRow:
    return ModelRow(
        int(r["version"]),
        r["fitted_at"],
        int(r["attempts"]),
        int(r["tasks"]),
        dict(r["quality"]),
        float(r["seconds"]),
        r.get("model"),
    )


# The finished runs the model may learn from (the same in what a fit reads and in the
# count that decides when to refit).
_LEARNABLE = (
    "a.status = ANY(%(finished)s) AND a.task_key IS NOT NULL AND a.current_epoch > 0"
    # A run thinned by retention (migration 0025) is no whole curve any more.
    " AND a.compacted_at IS NULL"
    " AND trusted_run(a.provenance, a.owner, %(trusted)s::text[])"
)


# Prognoses kept in one statement (`CurveStore.save_prognoses`), waiting for their rows'
# locks or skipping rows another statement holds.
_SAVE_PROGNOSES = sql.SQL(
    "WITH u AS (SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::bytea[],"
    " %s::jsonb[]) AS u(id, fence, wire, doc)),"
    " free AS (SELECT a.id FROM attempts a JOIN u ON a.id = u.id"
    " WHERE (u.fence IS NULL OR a.claims = u.fence)"
    " AND a.current_epoch >= (u.doc ->> 'epoch')::int"
    " AND COALESCE((a.prognosis ->> 'epoch')::int, 0) <= (u.doc ->> 'epoch')::int"
    " ORDER BY a.id FOR UPDATE OF a {})"
    " UPDATE attempts a SET prognosis_wire = u.wire, prognosis = u.doc"
    " FROM u JOIN free ON free.id = u.id WHERE a.id = u.id RETURNING a.id"
)
_LOCKING = {True: sql.SQL(""), False: sql.SQL("SKIP LOCKED")}


class CurveStore:
    def __init__(self, pool: psycopg_pool.AsyncConnectionPool, trusted: Sequence[str] = ()) -> None:
        self._pool = pool
        # Owners whose claims count as evidence (GatewayConfig.trusted_owners).
        self._trusted = list(trusted)

    async def curve(self, attempt_id: int) -> CurveRow | None:
        """An attempt's curve so far, its task's profile features and its task's best."""
        found = await self.curves([attempt_id])
        return found[0] if found else None

    async def profile(self, fingerprint: str) -> dict[str, float] | None:
        """A stored task's profile features ({} while it is not profiled; None: no
        task has this fingerprint)."""
        with translate_db_errors():
            async with self._pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT CASE WHEN state = 'READY' THEN features END FROM tasks"
                    " WHERE fingerprint = %s",
                    (fingerprint,),
                )
                found = await cur.fetchone()
        if found is None:
            return None
        return {k: float(v) for k, v in (found[0] or {}).items()
                if isinstance(v, int | float) and not isinstance(v, bool)}  # fmt: skip

    async def curves(self, attempt_ids: Sequence[int]) -> list[CurveRow]:
        """Curves of these attempts (those that exist), as `curve` reads one: what a batch
        of prognoses reads in one statement."""
        query = (
            f"SELECT {_RUN_COLUMNS}, {_EPOCH_ARRAYS}, {_FEATURES},"  # noqa: S608 - constant text
            " (SELECT max(s.final) FROM (SELECT (SELECT e.val_accuracy FROM attempt_epochs e"
            " WHERE e.attempt_id = b.id ORDER BY e.epoch DESC LIMIT 1) AS final"
            # The finished runs of the task, newest first, from their own index
            # (migration 0018): not every run of a task with a thousand running.
            " FROM attempts b WHERE md5(b.task_key) = md5(a.task_key)"
            " AND b.task_key = a.task_key AND b.status IN ('TRAINED', 'COMPLETE')"
            " AND b.id <> a.id"
            # Evidence, and the run's own owner's claims (their bar, their word).
            " AND trusted_run(b.provenance, b.owner, array_append(%(trusted)s::text[], a.owner))"
            " ORDER BY md5(b.task_key), b.id DESC LIMIT %(best_of)s) s"
            # An accuracy, not NaN (PostgreSQL's NaN equals itself) or nonsense.
            " WHERE s.final BETWEEN 0 AND 1) AS task_best"
            " FROM attempts a WHERE a.id = ANY(%(ids)s)"
        )
        params = {"ids": list(attempt_ids), "best_of": _BEST_OF, "trusted": self._trusted}
        with translate_db_errors():
            async with self._pool.connection() as conn:
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute(query, params)  # type: ignore[arg-type]
                return [_curve(row) for row in await cur.fetchall()]

    async def finished(self, limit: int = MAX_RUNS) -> list[CurveRow]:
        """Finished runs with epochs that are evidence, what the curve model learns from:
        at most `limit`, stratified by task. One run of each task first, then a second
        of each, and so on, so that a store of a million runs gives a sample in which
        every task is represented and none is most of it (the newest `limit` runs would
        be whatever the busiest recent study tried). Within a task the runs come in an
        order fixed by a hash of their id: neither the newest (a study's late trials
        crowd where it converged) nor the oldest, but a spread of what was tried."""
        query = (
            f"SELECT {_RUN_COLUMNS}, {_EPOCH_ARRAYS}, {_FEATURES}"  # noqa: S608 - constant text
            " FROM (SELECT a.id, row_number() OVER (PARTITION BY md5(a.task_key)"
            f" ORDER BY md5(a.id::text)) AS turn FROM attempts a WHERE {_LEARNABLE}) pick"
            " JOIN attempts a ON a.id = pick.id ORDER BY pick.turn, md5(a.id::text)"
            " LIMIT %(limit)s"
        )
        params = {"finished": _FINISHED, "trusted": self._trusted, "limit": limit}
        with translate_db_errors():
            async with self._pool.connection() as conn:
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute(query, params)  # type: ignore[arg-type]
                return [_curve(r) for r in await cur.fetchall()]

    async def without_prognosis(self, limit: int) -> list[int]:
        """Attempts at rest with epochs and no prognosis (from before migration 0011)."""
        with translate_db_errors():
            async with self._pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT id FROM attempts WHERE prognosis_wire IS NULL AND current_epoch > 0"
                    " AND status <> ALL(%s) ORDER BY id LIMIT %s",
                    (["QUEUED", "TRAINING", "TESTING"], limit),
                )
                return [int(r[0]) for r in await cur.fetchall()]

    async def count_finished(self) -> int:
        """Finished runs with a validation accuracy that may be learned from (what decides
        when to refit): from the counts the writes keep per task (migration 0023), not
        by counting the runs (seconds at a million attempts, every REFIT_CHECK_SECONDS)."""
        with translate_db_errors():
            async with self._pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT COALESCE(sum(runs), 0) FROM task_history"
                    " WHERE trusted_run(provenance, owner, %s::text[])",
                    (self._trusted,),
                )
                row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def save_prognosis(
        self, attempt_id: int, fence: int | None, wire: bytes, doc: dict[str, Any]
    ) -> bool:
        """Keeps an attempt's newest prognosis and tells its watchers (at commit). With a
        fence, only while no other lease took the run (a stale trainer's run writes
        nothing)."""
        return attempt_id in await self.save_prognoses([(attempt_id, fence, wire, doc)], wait=True)

    async def save_prognoses(
        self, prognoses: Sequence[tuple[int, int | None, bytes, dict[str, Any]]], wait: bool = False
    ) -> set[int]:
        """Keeps (attempt id, fence, wire form, filter form) prognoses in one statement;
        the ids kept. A fence holds while no other lease took the run since (its claims):
        a batch may come just after the run ended, and its prognosis, made from the
        epochs stored, is still the run's. A prognosis is kept only over an older one and
        while the run still has the epochs it was made from (a retried run's were
        deleted). Without `wait`, rows another statement holds are skipped, not waited for
        (a report's statement locks its runs in an order of its own: a batch waiting for
        several could deadlock), and their next prognosis comes with their next epoch or
        their end; one run's (`wait`) waits, which cannot deadlock."""
        if not prognoses:
            return set()
        ids, fences, wires, docs = zip(*sorted(prognoses, key=lambda p: p[0]), strict=True)
        with translate_db_errors():
            async with self._pool.connection() as conn, conn.transaction():
                cur = conn.cursor()
                await cur.execute(
                    _SAVE_PROGNOSES.format(_LOCKING[wait]),
                    (list(ids), list(fences), list(wires), [Jsonb(d) for d in docs]),
                )
                kept = {int(row[0]) for row in await cur.fetchall()}
                if kept:
                    await cur.execute(
                        "SELECT pg_notify(%s, json_build_object('id', k, 'kind',"
                        " 'prognosis')::text) FROM unnest(%s::bigint[]) AS k",
                        (EVENTS, sorted(kept)),
                    )
        return kept

    @contextlib.asynccontextmanager
    async def fitting(self, wait: bool) -> AsyncIterator[bool]:
        """Holds the cluster-wide fit lock while the block runs (one replica fits at a
        time); without `wait`, yields False at once when another replica holds it."""
        with translate_db_errors():
            async with self._pool.connection() as conn:
                if wait:
                    await conn.execute("SELECT pg_advisory_lock(%s)", (_FIT_LOCK,))
                    held = True
                else:
                    cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (_FIT_LOCK,))
                    row = await cur.fetchone()
                    held = bool(row and row[0])
                try:
                    yield held
                finally:
                    if held:
                        await conn.execute("SELECT pg_advisory_unlock(%s)", (_FIT_LOCK,))

    async def newest_model(self, with_model: bool = True) -> ModelRow | None:
        columns = "version, fitted_at, attempts, tasks, quality, seconds" + (
            ", model" if with_model else ""
        )
        with translate_db_errors():
            async with self._pool.connection() as conn:
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute(
                    f"SELECT {columns} FROM curve_models ORDER BY version DESC LIMIT 1"  # noqa: S608 - constant columns
                )
                row = await cur.fetchone()
        return _model(row) if row is not None else None

    async def newest_version(self) -> int | None:
        with translate_db_errors():
            async with self._pool.connection() as conn:
                cur = await conn.execute("SELECT max(version) FROM curve_models")
                row = await cur.fetchone()
        return int(row[0]) if row and row[0] is not None else None

    async def save_model(
        self, model: bytes, attempts: int, tasks: int, quality: dict[str, float], seconds: float
    ) -> ModelRow:
        with translate_db_errors():
            async with self._pool.connection() as conn:
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute(
                    "INSERT INTO curve_models (attempts, tasks, quality, seconds, model)"
                    " VALUES (%s, %s, %s, %s, %s)"
                    " RETURNING version, fitted_at, attempts, tasks, quality, seconds",
                    (attempts, tasks, Jsonb(quality), seconds, model),
                )
                row = await cur.fetchone()
                assert row is not None
                await cur.execute("SELECT pg_notify(%s, %s)", (CURVES, str(row["version"])))
        return _model(row)
