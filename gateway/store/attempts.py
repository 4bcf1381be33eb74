"""Every SQL statement about attempts and their epochs; returns plain dataclasses."""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import psycopg_pool
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from gateway.store.database import translate_db_errors
from gateway.store.requests import RequestKey, remember, replayed, replayed_all
from metalearn import errors

# States in which a trainer owns the attempt: its commands and its row stay put.
LIVE_STATUSES = ("QUEUED", "TRAINING", "TESTING")


@dataclass(frozen=True)
class EpochRecord:
    """One finished epoch."""

    epoch: int
    loss: float
    learning_rate: float = 0.0
    seconds: float = 0.0
    samples_per_second: float = 0.0
    val_loss: float = 0.0
    val_accuracy: float = 0.0


@dataclass(frozen=True)
class Stored:
    """An attempt's document fields: `spec` serialized, or (older rows) only `doc`."""

    spec: bytes | None
    doc: dict[str, Any] | None


# Makes an attempt's new document, in both stored forms (spec, doc), from its current one.
Rewrite = Callable[[Stored], tuple[bytes, dict[str, Any]]]


@dataclass(frozen=True)
class AttemptRecord:
    """An attempt row with its loss history (and epoch detail when asked for)."""

    id: int
    name: str
    status: str
    created_at: dt.datetime
    updated_at: dt.datetime
    current_epoch: int
    restart_count: int
    trainer: str
    error: str
    stored: Stored
    # `training_losses`, already encoded (empty before the first epoch).
    losses_wire: bytes
    # The value ListAttempts orders by accuracy on; untested attempts sort last.
    accuracy_key: float
    # The FULL view's epochs, already encoded as `Attempt.epochs` entries.
    epochs_wire: bytes | None = None
    # The principal that created it ('' before tokens existed).
    owner: str = ""
    # The value of ListQuery.sort_key (a listing in Order.FIELD only; None: no number).
    sort_key: float | None = None
    # The newest `Attempt.prognosis`, encoded (None: none made yet).
    prognosis_wire: bytes | None = None


@dataclass(frozen=True)
class Imported:
    """An attempt recorded elsewhere, to store as history (ImportAttempts).

    Made where the documents are checked, in a worker process (gateway/workers.py), in
    the forms the statements take as they are: its document and prognosis as JSON text,
    its epochs as array literals (`epoch_columns`). Dumping a thousand documents and
    200,000 epochs as Python values here, on the event loop, took it from every other
    call for seconds; text crosses the process boundary and the driver as one copy."""

    name: str
    status: str
    spec: bytes
    doc: str  # JSON
    # `epoch_columns` of its epochs (None: it has none), and the last epoch's number.
    epochs: tuple[str, ...] | None
    current_epoch: int
    error: str = ""
    # When it was made and last changed there (None: now).
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None
    # Its prognosis from the rules (None: no epochs), encoded and in filter form (JSON).
    prognosis_wire: bytes | None = None
    prognosis: str | None = None


def _literal(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return repr(value)  # the shortest text that reads back as the same double


def epoch_columns(epochs: Sequence[EpochRecord]) -> tuple[str, ...]:
    """Epochs as PostgreSQL array literals, one per column of `_EPOCH_COLUMNS` (an
    imported run may hold a non-finite loss: it diverged)."""
    return (
        "{" + ",".join(str(e.epoch) for e in epochs) + "}",
        *(
            "{" + ",".join(_literal(float(getattr(e, column))) for e in epochs) + "}"
            for column in ("loss", "learning_rate", "seconds", "samples_per_second",
                           "val_loss", "val_accuracy")
        ),
    )  # fmt: skip


class Order(Enum):
    """Orders of a listing, each with its keyset columns."""

    ID = "id"
    ACCURACY = "accuracy"
    UPDATE_TIME = "update_time"
    # ListQuery.sort_key, then id.
    FIELD = "field"


@dataclass(frozen=True)
class ListQuery:
    """Filters of a listing; empty values filter nothing."""

    statuses: tuple[str, ...] = ()
    label_name: str = ""
    name_prefix: str = ""
    min_accuracy: float = 0.0
    owner: str | None = None
    # `ListAttempts.filter`, parsed (gateway.store.filters): a condition on `attempts a`.
    condition: sql.Composable | None = None
    condition_params: tuple[Any, ...] = ()
    filter_text: str = ""
    order: Order = Order.ID
    # Order.FIELD's key (`ListAttempts.order_by_field`, parsed): a float8 expression on
    # `attempts a`, NULL where the field holds no number (those come last).
    sort_key: sql.Composable | None = None
    sort_params: tuple[Any, ...] = ()
    sort_descending: bool = False
    sort_text: str = ""


AttemptKey = str | int

_ACCURACY = sql.SQL("COALESCE((a.doc ->> 'accuracy')::float8, -1)")
# Rows a filtered listing walks in order before it asks the document index instead.
_SCAN = 2000
# `Attempt.training_losses` (field 4) encoded by PostgreSQL, one double per epoch.
# Then `Attempt.best_val_accuracy` (field 25: tag 0xc9 0x01), where any epoch validated
# (its column, kept by the epoch writes: migration 0021).
_LOSSES = sql.SQL(
    "(SELECT string_agg(pb_double(x'21'::int, e.loss), ''::bytea ORDER BY e.epoch)"
    " FROM attempt_epochs e WHERE e.attempt_id = a.id)"
    " || CASE WHEN a.best_val_accuracy > 0"
    " THEN '\\xc901'::bytea || reverse(float8send(a.best_val_accuracy)) ELSE ''::bytea END"
    " AS losses_wire"
)
_EPOCHS_WIRE = sql.SQL(
    "(SELECT string_agg(e.wire, ''::bytea ORDER BY e.epoch) FROM attempt_epochs e"
    " WHERE e.attempt_id = a.id) AS epochs_wire"
)
# `doc` is decoded only for rows without `spec`: JSONB parsing is most of a read's cost.
_COLUMNS = sql.SQL(
    "a.id, a.name, a.status, a.created_at, a.updated_at, a.current_epoch,"
    " a.restart_count, a.trainer, a.error, a.owner, a.prognosis_wire, a.spec,"
    " CASE WHEN a.spec IS NULL THEN a.doc END"
    " AS doc, {} AS accuracy_key"
).format(_ACCURACY)
_EPOCH_COLUMNS = "epoch, loss, learning_rate, seconds, samples_per_second, val_loss, val_accuracy"


def _where_key(key: AttemptKey) -> tuple[sql.Composable, tuple[Any, ...]]:
    if isinstance(key, int):
        return sql.SQL("a.id = %s"), (key,)
    return sql.SQL("a.name = %s"), (key,)


def _describe(key: AttemptKey) -> str:
    return f"attempt id {key}" if isinstance(key, int) else f"attempt {key!r}"


def _record(row: dict[str, Any]) -> AttemptRecord:
    return AttemptRecord(
        id=row["id"],
        name=row["name"],
        status=row["status"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        current_epoch=row["current_epoch"],
        restart_count=row["restart_count"],
        trainer=row["trainer"],
        error=row["error"],
        stored=Stored(row["spec"], row["doc"]),
        losses_wire=row["losses_wire"] or b"",
        accuracy_key=row["accuracy_key"],
        epochs_wire=row.get("epochs_wire"),
        owner=row["owner"],
        sort_key=row.get("sort_key"),
        prognosis_wire=row.get("prognosis_wire"),
    )


def check_owner(key: AttemptKey, owner: str, scope: str | None) -> None:
    """PermissionDenied unless a principal limited to `scope`'s attempts (None: any)
    may change an attempt owned by `owner`."""
    if scope is not None and owner != scope:
        raise errors.PermissionDenied(
            f"{_describe(key)} belongs to another principal: only its owner or an admin"
            " may change it"
        )


def _where(query: ListQuery) -> tuple[sql.Composable, list[Any]]:
    """A list's whole selection (its fields and its filter), without a keyset position."""
    conds, params = _selection(query)
    if query.condition is not None:
        conds.append(query.condition)
        params += list(query.condition_params)
    return (sql.SQL(" AND ").join(conds) if conds else sql.SQL("true")), params


# A list's total (`count`) is counted only as long as this (ms), estimated beyond.
COUNT_MS = 1000


def _selection(query: ListQuery) -> tuple[list[sql.Composable], list[Any]]:
    """The conditions of a list's own fields (not its filter, not its keyset position)."""
    conds: list[sql.Composable] = []
    params: list[Any] = []
    if query.statuses:
        conds.append(sql.SQL("a.status = ANY(%s)"))
        params.append(list(query.statuses))
    if query.label_name:
        conds.append(sql.SQL("(a.doc -> 'training_commands' -> 'label_names') ? %s"))
        params.append(query.label_name)
    if query.name_prefix:
        conds.append(sql.SQL("starts_with(a.name, %s)"))
        params.append(query.name_prefix)
    if query.owner is not None:
        conds.append(sql.SQL("a.owner = %s"))
        params.append(query.owner)
    if query.min_accuracy > 0:
        conds.append(sql.SQL("{} >= %s").format(_ACCURACY))
        params.append(query.min_accuracy)
    return conds, params


class AttemptStore:
    """Attempts in PostgreSQL: one row each, epochs in their own table."""

    def __init__(self, pool: psycopg_pool.AsyncConnectionPool) -> None:
        self._pool = pool

    async def create(
        self,
        name: str,
        spec: bytes,
        doc: dict[str, Any],
        owner: str = "",
        request: RequestKey | None = None,
    ) -> AttemptRecord:
        """Inserts a new attempt owned by `owner`; AlreadyExists when the name is taken.
        A retry of `request` returns the attempt the first call made."""
        query = sql.SQL(
            "INSERT INTO attempts AS a (name, spec, doc, owner) VALUES (%s, %s, %s, %s)"
            " RETURNING {}, NULL::bytea AS losses_wire"
        ).format(_COLUMNS)
        try:
            with translate_db_errors():
                async with self._pool.connection() as conn, conn.transaction():
                    done = await replayed(conn, request)
                    if done is None:
                        cur = conn.cursor(row_factory=dict_row, binary=True)
                        await cur.execute(query, (name, spec, Jsonb(doc), owner))
                        row = await cur.fetchone()
                        assert row is not None
                        await remember(conn, request, row["id"])
        except errors.AlreadyExists as err:
            raise errors.AlreadyExists(f"attempt name {name!r} is taken") from err
        if done is not None:
            return await self.get(done)
        assert row is not None
        return _record(row)

    async def create_many(
        self,
        items: Sequence[tuple[str, bytes, dict[str, Any]]],
        owner: str = "",
        request: RequestKey | None = None,
    ) -> list[AttemptRecord]:
        """Inserts new attempts (name, spec, document) owned by `owner` in one statement,
        all or none, in their order; AlreadyExists naming a taken name. A retry of
        `request` returns the attempts the first call made."""
        query = sql.SQL(
            "INSERT INTO attempts AS a (name, spec, doc, owner) SELECT n, s, d::jsonb, %s"
            " FROM unnest(%s::text[], %s::bytea[], %s::text[]) WITH ORDINALITY AS i(n, s, d, k)"
            " ORDER BY k RETURNING {}, NULL::bytea AS losses_wire"
        ).format(_COLUMNS)
        names = [name for name, _, _ in items]
        try:
            with translate_db_errors():
                async with self._pool.connection() as conn, conn.transaction():
                    done = await replayed_all(conn, request)
                    if done is None:
                        cur = conn.cursor(row_factory=dict_row, binary=True)
                        await cur.execute(
                            query,
                            (owner, names, [spec for _, spec, _ in items],
                             [json.dumps(doc) for _, _, doc in items]),
                        )  # fmt: skip
                        rows = await cur.fetchall()
                        await remember(conn, request, *(row["id"] for row in rows))
        except errors.AlreadyExists as err:
            taken = await self._taken(names)
            raise errors.AlreadyExists(f"attempt name {taken!r} is taken") from err
        if done is not None:
            return await self._many(done)
        return [_record(row) for row in sorted(rows, key=lambda r: r["id"])]

    async def _taken(self, names: Sequence[str]) -> str:
        """The first of `names` an attempt already has (for a refusal's message)."""
        with translate_db_errors():
            async with self._pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT name FROM attempts WHERE name = ANY(%s) LIMIT 1", (list(names),)
                )
                row = await cur.fetchone()
        return str(row[0]) if row else "?"

    async def import_many(
        self,
        attempts: Sequence[Imported],
        owner: str,
        *,
        skip_existing: bool,
        request: RequestKey | None = None,
    ) -> tuple[list[AttemptRecord], list[str]]:
        """Stores recorded attempts with their epochs, all in one transaction; returns
        them and the names skipped as taken (with `skip_existing`; else AlreadyExists).
        A retry of `request` returns what the first call stored."""
        insert = sql.SQL(
            "INSERT INTO attempts AS a (name, status, spec, doc, owner, error, current_epoch,"
            " created_at, updated_at, prognosis_wire, prognosis) VALUES (%s, %s, %s,"
            " %s::text::jsonb, %s, %s, %s, COALESCE(%s, now()), COALESCE(%s, COALESCE(%s,"
            " now())), %s, %s::text::jsonb) {}"
            " RETURNING a.id"
        ).format(sql.SQL("ON CONFLICT (name) DO NOTHING" if skip_existing else ""))
        epochs = (
            f"INSERT INTO attempt_epochs (attempt_id, {_EPOCH_COLUMNS}) SELECT %s, * FROM"  # noqa: S608 - constant columns
            " unnest(%s::text::int[], %s::text::float8[], %s::text::float8[],"
            " %s::text::float8[], %s::text::float8[], %s::text::float8[], %s::text::float8[])"
        )
        ids: list[int] = []
        skipped: list[str] = []
        name = ""
        try:
            with translate_db_errors():
                async with self._pool.connection() as conn, conn.transaction():
                    done = await replayed_all(conn, request)
                    if done is None:
                        cur = conn.cursor(binary=True)
                        for item in attempts:
                            name = item.name
                            await cur.execute(
                                insert,
                                (
                                    item.name, item.status, item.spec, item.doc, owner,
                                    item.error, item.current_epoch, item.created_at,
                                    item.updated_at, item.created_at, item.prognosis_wire,
                                    item.prognosis,
                                ),
                            )  # fmt: skip
                            row = await cur.fetchone()
                            if row is None:
                                skipped.append(item.name)
                                continue
                            ids.append(int(row[0]))
                            if item.epochs:
                                await cur.execute(epochs, (row[0], *item.epochs))
                        await remember(conn, request, *ids)
        except errors.AlreadyExists as err:
            raise errors.AlreadyExists(
                f"attempt name {name!r} is taken (skip_existing leaves such names out)"
            ) from err
        records = await self._many(done if done is not None else ids)
        if done is not None:
            stored = {r.name for r in records}
            skipped = [a.name for a in attempts if a.name not in stored]
        return records, skipped

    async def _many(self, ids: Sequence[int]) -> list[AttemptRecord]:
        """Attempts by id, in id order."""
        query = sql.SQL("SELECT {}, {} FROM attempts a WHERE a.id = ANY(%s) ORDER BY a.id").format(
            _COLUMNS, _LOSSES
        )
        with translate_db_errors():
            async with self._pool.connection() as conn:
                cur = conn.cursor(row_factory=dict_row, binary=True)
                await cur.execute(query, (list(ids),))
                return [_record(row) for row in await cur.fetchall()]

    async def get(self, key: AttemptKey, *, with_epochs: bool = False) -> AttemptRecord:
        """One attempt by name or id; NotFound when there is none."""
        where, params = _where_key(key)
        extra = sql.SQL(", {}").format(_EPOCHS_WIRE) if with_epochs else sql.SQL("")
        # One statement, one snapshot: the row and its epochs as of the same instant.
        # (FOR UPDATE would re-read a row changed meanwhile, newer than its epochs.)
        query = sql.SQL("SELECT {}, {}{} FROM attempts a WHERE {}").format(
            _COLUMNS, _LOSSES, extra, where
        )
        with translate_db_errors():
            async with self._pool.connection() as conn:
                # Binary results: float8[] and bytea arrive without text parsing.
                cur = conn.cursor(row_factory=dict_row, binary=True)
                await cur.execute(query, params)
                row = await cur.fetchone()
        if row is None:
            raise errors.NotFound(f"{_describe(key)} not found")
        return _record(row)

    async def update(
        self,
        key: AttemptKey,
        rewrite: Rewrite,
        *,
        guard_live: bool,
        scope: str | None = None,
    ) -> AttemptRecord:
        """Replaces the document fields with `rewrite(current)` -> (spec, doc).

        The row is locked while `rewrite` runs, so concurrent updates apply one after the
        other. FailedPrecondition if `guard_live` and a trainer owns the attempt;
        PermissionDenied unless its owner is `scope` (None: anyone's).
        """
        where, params = _where_key(key)
        select = sql.SQL(
            "SELECT a.id, a.status, a.owner, a.spec, {} FROM attempts a WHERE {} FOR UPDATE"
        )
        doc_if_needed = sql.SQL("CASE WHEN a.spec IS NULL THEN a.doc END AS doc")
        write = sql.SQL(
            "UPDATE attempts AS a SET spec = %s, doc = %s, updated_at = now()"
            " WHERE a.id = %s RETURNING {}, {}"
        ).format(_COLUMNS, _LOSSES)
        with translate_db_errors():
            async with self._pool.connection() as conn, conn.transaction():
                cur = conn.cursor(row_factory=dict_row, binary=True)
                await cur.execute(select.format(doc_if_needed, where), params)
                current = await cur.fetchone()
                if current is None:
                    raise errors.NotFound(f"{_describe(key)} not found")
                check_owner(key, current["owner"], scope)
                if guard_live and current["status"] in LIVE_STATUSES:
                    raise errors.FailedPrecondition(
                        f"{_describe(key)} is {current['status']}:"
                        " its commands cannot change until it stops"
                    )
                spec, doc = rewrite(Stored(current["spec"], current["doc"]))
                await cur.execute(write, (spec, Jsonb(doc), current["id"]))
                row = await cur.fetchone()
        assert row is not None
        return _record(row)

    async def delete(self, key: AttemptKey, scope: str | None = None) -> None:
        """Removes an attempt and (by cascade) its epochs; refuses one a trainer owns,
        and one whose owner is not `scope` (None: anyone's)."""
        where, params = _where_key(key)
        select = sql.SQL("SELECT a.id, a.status, a.owner FROM attempts a WHERE {} FOR UPDATE")
        with translate_db_errors():
            async with self._pool.connection() as conn, conn.transaction():
                cur = await conn.execute(select.format(where), params)
                row = await cur.fetchone()
                if row is None:
                    raise errors.NotFound(f"{_describe(key)} not found")
                check_owner(key, row[2], scope)
                if row[1] in LIVE_STATUSES:
                    raise errors.FailedPrecondition(
                        f"{_describe(key)} is {row[1]}: cancel it before deleting it"
                    )
                await conn.execute("DELETE FROM attempts WHERE id = %s", (row[0],))

    async def latest_index(self) -> int:
        """The highest id ever given (deleted attempts included); 0 before the first."""
        with translate_db_errors():
            async with self._pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT pg_sequence_last_value(pg_get_serial_sequence('attempts', 'id'))"
                )
                row = await cur.fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    async def list(
        self, query: ListQuery, after: tuple[Any, ...] | None, limit: int
    ) -> list[AttemptRecord]:
        """A page of attempts after the keyset position `after`, in `query.order`."""
        conds, params = _selection(query)
        if query.order is Order.ID:
            order: sql.Composable = sql.SQL("a.id")
            if after is not None:
                conds.append(sql.SQL("a.id > %s"))
                params.append(after[0])
        elif query.order is Order.ACCURACY:
            order = sql.SQL("{} DESC, a.id").format(_ACCURACY)
            if after is not None:
                conds.append(
                    sql.SQL("({acc} < %s OR ({acc} = %s AND a.id > %s))").format(acc=_ACCURACY)
                )
                params += [after[0], after[0], after[1]]
        elif query.order is Order.FIELD:
            # `sort_key` is the lateral column below, computed once per row.
            direction = sql.SQL("<" if query.sort_descending else ">")
            order = sql.SQL("sort_key {} NULLS LAST, a.id").format(
                sql.SQL("DESC" if query.sort_descending else "ASC")
            )
            if after is not None and after[0] is None:
                conds.append(sql.SQL("(sort_key IS NULL AND a.id > %s)"))
                params.append(after[1])
            elif after is not None:
                conds.append(
                    sql.SQL(
                        "(sort_key {} %s OR (sort_key = %s AND a.id > %s) OR sort_key IS NULL)"
                    ).format(direction)
                )
                params += [after[0], after[0], after[1]]
        else:
            order = sql.SQL("a.updated_at DESC, a.id DESC")
            if after is not None:
                conds.append(sql.SQL("(a.updated_at, a.id) < (%s::timestamptz, %s)"))
                params += [after[0], after[1]]
        where = sql.SQL(" AND ").join(conds) if conds else sql.SQL("true")
        if query.order is Order.FIELD:
            return [*await self._list_by_field(query, where, params, order, limit)]
        if query.condition is not None:
            return [*await self._list_filtered(query, where, params, order, limit)]
        statement = sql.SQL("SELECT {}, {} FROM attempts a WHERE {} ORDER BY {} LIMIT %s").format(
            _COLUMNS, _LOSSES, where, order
        )
        with translate_db_errors():
            async with self._pool.connection() as conn:
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute(statement, [*params, limit])
                rows = await cur.fetchall()
        return [_record(row) for row in rows]

    async def count(self, query: ListQuery, exact_up_to: int) -> tuple[int, bool]:
        """How many attempts `query` selects, and whether that is PostgreSQL's estimate
        rather than a count: counted up to `exact_up_to` (a bounded scan), estimated
        beyond, or where the count would take longer than COUNT_MS."""
        where, params = _where(query)
        bounded = sql.SQL(
            "SELECT count(*) FROM (SELECT 1 FROM attempts a WHERE {} LIMIT %s) s"
        ).format(where)
        with translate_db_errors():
            async with self._pool.connection() as conn:
                counted = None
                try:
                    async with conn.transaction():
                        await conn.execute(f"SET LOCAL statement_timeout = {COUNT_MS}")
                        cur = await conn.execute(bounded, [*params, exact_up_to + 1], prepare=False)
                        row = await cur.fetchone()
                        counted = int(row[0]) if row else 0
                except pg_errors.QueryCanceled:
                    pass  # a filter that matches little of a large store: estimated
                if counted is not None and counted <= exact_up_to:
                    return counted, False
        return max(await self.estimate(query), counted or 0), True

    async def estimate(self, query: ListQuery) -> int:
        """PostgreSQL's estimate of how many attempts `query` selects (its plan's rows:
        no row is read)."""
        where, params = _where(query)
        explain = sql.SQL("EXPLAIN (FORMAT JSON) SELECT 1 FROM attempts a WHERE {}")
        with translate_db_errors():
            async with self._pool.connection() as conn:
                cur = await conn.execute(explain.format(where), params, prepare=False)
                row = await cur.fetchone()
        plan = row[0] if row else [{}]
        return int(plan[0].get("Plan", {}).get("Plan Rows", 0))

    async def _list_by_field(
        self,
        query: ListQuery,
        where: sql.Composable,
        params: Sequence[Any],
        order: sql.Composable,
        limit: int,
    ) -> Sequence[AttemptRecord]:
        """A page in the order of a document path. No index holds an arbitrary path, so
        every matching row's key is computed and the top of them kept: the sort carries
        ids alone, and only the page's rows are read whole afterwards (carrying whole
        rows through the sort tripled its time)."""
        assert query.sort_key is not None
        condition = query.condition if query.condition is not None else sql.SQL("true")
        # `sort_key` is the lateral column, computed once per row; the keyset condition in
        # `where` and `order` name it.
        statement = sql.SQL(
            "SELECT {cols}, {losses}, p.sort_key FROM (SELECT a.id, sort_key FROM attempts a"
            " CROSS JOIN LATERAL (SELECT {key} AS sort_key) s WHERE {where} AND {cond}"
            " ORDER BY {order} LIMIT %s) p JOIN attempts a ON a.id = p.id ORDER BY {order}"
        ).format(
            cols=_COLUMNS,
            losses=_LOSSES,
            key=query.sort_key,
            where=where,
            cond=condition,
            order=order,
        )
        values = [*query.sort_params, *params, *query.condition_params, limit]
        with translate_db_errors():
            async with self._pool.connection() as conn:
                cur = conn.cursor(row_factory=dict_row)
                # Planned for its own values each time (a generic plan sees no values).
                await cur.execute(statement, values, prepare=False)
                return [_record(row) for row in await cur.fetchall()]

    async def _list_filtered(
        self,
        query: ListQuery,
        where: sql.Composable,
        params: Sequence[Any],
        order: sql.Composable,
        limit: int,
    ) -> Sequence[AttemptRecord]:
        """A page under a document filter, in two tries.

        PostgreSQL cannot estimate how many documents a path predicate matches, so it
        guesses, and either guess is slow for half the filters: walking the ordered index
        reads all 100,000 rows for a rare value, and the document index rechecks 75,000
        rows for a common one. So: first walk the order for at most `_SCAN` rows (a common
        value fills its page there, in milliseconds); only if the page is not full, ask
        the document index (a rare value: a handful of rows), with the ordered index
        switched off for that one statement.
        """
        assert query.condition is not None
        first = sql.SQL(
            "SELECT {cols}, {losses} FROM (SELECT * FROM attempts a WHERE {where}"
            " ORDER BY {order} LIMIT %s) a WHERE {cond} ORDER BY {order} LIMIT %s"
        ).format(cols=_COLUMNS, losses=_LOSSES, where=where, order=order, cond=query.condition)
        second = sql.SQL(
            "SELECT {}, {} FROM attempts a WHERE {} AND {} ORDER BY {} LIMIT %s"
        ).format(_COLUMNS, _LOSSES, where, query.condition, order)
        filter_params = list(query.condition_params)
        with translate_db_errors():
            async with self._pool.connection() as conn, conn.transaction():
                cur = conn.cursor(row_factory=dict_row)
                # Planned for its own values each time (a generic plan sees no values).
                await cur.execute(first, [*params, _SCAN, *filter_params, limit], prepare=False)
                rows = await cur.fetchall()
                if len(rows) < limit:
                    await cur.execute("SET LOCAL enable_indexscan = off")
                    await cur.execute(second, [*params, *filter_params, limit], prepare=False)
                    rows = await cur.fetchall()
        return [_record(row) for row in rows]

    async def epochs_after(self, attempt_id: int, after: int, upto: int | None = None) -> bytes:
        """Epochs `after` < epoch <= `upto` of an attempt, encoded as `Attempt.epochs` entries."""
        with translate_db_errors():
            async with self._pool.connection() as conn:
                cur = conn.cursor(binary=True)
                await cur.execute(
                    "SELECT string_agg(wire, ''::bytea ORDER BY epoch) FROM attempt_epochs"
                    " WHERE attempt_id = %s AND epoch > %s AND epoch <= %s",
                    (attempt_id, after, upto if upto is not None else 2**31 - 1),
                )
                row = await cur.fetchone()
        return bytes(row[0]) if row and row[0] is not None else b""

    async def prognosis_wire(self, attempt_id: int) -> bytes | None:
        """The attempt's newest prognosis, encoded (what the hub sends its watchers)."""
        with translate_db_errors():
            async with self._pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT prognosis_wire FROM attempts WHERE id = %s", (attempt_id,)
                )
                row = await cur.fetchone()
        return bytes(row[0]) if row and row[0] is not None else None

    async def append_epoch(self, attempt_id: int, fence: int, epoch: EpochRecord) -> bytes | None:
        """Records one epoch exactly once, if `fence` is still the attempt's claim count
        and it is still training.

        Returns the stored epoch's wire form (an encoded `Attempt.epochs` entry), None for
        a replay of a stored epoch; FailedPrecondition for a stale lease or a missing
        attempt. One statement, one commit: O(1) whatever the history.
        """
        query = (
            "WITH lease AS (UPDATE attempts SET current_epoch = GREATEST(current_epoch, %(epoch)s),"  # noqa: S608 - constant columns
            " updated_at = now() WHERE id = %(id)s AND claims = %(fence)s"
            # Fenced by status too: once CancelAttempt answered, no epoch is stored.
            " AND status = 'TRAINING' RETURNING id),"
            f" ins AS (INSERT INTO attempt_epochs (attempt_id, {_EPOCH_COLUMNS})"
            " SELECT id, %(epoch)s, %(loss)s, %(learning_rate)s, %(seconds)s,"
            " %(samples_per_second)s, %(val_loss)s, %(val_accuracy)s FROM lease"
            " ON CONFLICT DO NOTHING RETURNING wire),"
            # Sent at commit, so a watcher never hears of an epoch before it is stored.
            " note AS (SELECT pg_notify('metalearn_events', json_build_object('id', %(id)s,"
            " 'kind', 'epoch', 'epoch', %(epoch)s)::text) FROM ins)"
            " SELECT (SELECT count(*) FROM lease), (SELECT wire FROM ins),"
            " (SELECT count(*) FROM note)"
        )
        params = {"id": attempt_id, "fence": fence, **epoch.__dict__}
        with translate_db_errors():
            async with self._pool.connection() as conn:
                cur = await conn.execute(query, params)
                row = await cur.fetchone()
        assert row is not None
        if row[0] == 0:
            raise errors.FailedPrecondition(
                f"attempt id {attempt_id} has no lease with fencing token {fence}"
            )
        return bytes(row[1]) if row[1] is not None else None
