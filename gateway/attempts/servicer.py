"""AttemptService: converts protos, validates, and delegates to the store."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar, cast

from google.protobuf.message import Message

from gateway import pagination
from gateway.attempts import convert, importing
from gateway.attempts.downloads import DownloadSlots
from gateway.attempts.validation import (
    MAX_LABEL_CHARS,
    WRITABLE_FIELDS,
    check_labels_have_images,
    check_request_id,
    check_tag_paths,
    check_test_command,
    check_trainable,
    check_writable,
    tag_key,
    text_problem,
)
from gateway.auth import current
from gateway.config import SCAN_SLOTS, Limits, QueuePolicy
from gateway.events import EventHub
from gateway.names import check_name
from gateway.replicas.router import ReadRouter
from gateway.slots import Slots
from gateway.store import AttemptStore, ImageStore, ListQuery, Order
from gateway.store import filters as filtering
from gateway.store.attempts import AttemptKey
from gateway.store.requests import RequestKey
from gateway.store.work import WorkStore
from metalearn.errors import InvalidArgument, NotFound, Unavailable, Violations
from metalearn.status import translate_errors
from metalearn.v1 import (
    attempt_pb2,
    attempt_service_pb2,
    attempt_service_pb2_grpc,
    trainer_service_pb2,
)

pb = attempt_service_pb2
tpb = trainer_service_pb2

_ORDERS = {
    pb.ATTEMPT_ORDER_UNSPECIFIED: Order.ID,
    pb.ATTEMPT_ORDER_ID: Order.ID,
    pb.ATTEMPT_ORDER_ACCURACY: Order.ACCURACY,
    pb.ATTEMPT_ORDER_UPDATE_TIME: Order.UPDATE_TIME,
}
_SERVER_OWNED = frozenset(attempt_pb2.Attempt.DESCRIPTOR.fields_by_name) - set(WRITABLE_FIELDS)


def _key(request: Any, field_prefix: str = "") -> AttemptKey:
    """The name or id of a request with a `key` oneof."""
    which = request.WhichOneof("key")
    if which == "name":
        v = Violations()
        check_name(v, f"{field_prefix}name", request.name)
        v.raise_if_any()
        return str(request.name)
    if which == "id":
        if request.id <= 0:
            raise InvalidArgument.one(f"{field_prefix}id", f"must be positive, got {request.id}")
        return int(request.id)
    raise InvalidArgument.one(f"{field_prefix}key", "give a name or an id")


def _request(principal: str, request_id: str, method: str) -> RequestKey | None:
    return RequestKey(principal, request_id, method) if request_id else None


def _check_view(view: int, field: str = "view") -> None:
    if view not in pb.AttemptView.values():
        raise InvalidArgument.one(field, f"unknown view {view}")


# States after which a watch ends: nothing more will happen without a new request.
_TERMINAL = frozenset(
    {
        attempt_pb2.ATTEMPT_STATUS_INCOMPLETE,
        attempt_pb2.ATTEMPT_STATUS_TRAINED,
        attempt_pb2.ATTEMPT_STATUS_COMPLETE,
        attempt_pb2.ATTEMPT_STATUS_FAILED,
        attempt_pb2.ATTEMPT_STATUS_CANCELLED,
        attempt_pb2.ATTEMPT_STATUS_PRUNED,
    }
)
_DOWNLOAD_CHUNK = 1024 * 1024


_Response = TypeVar("_Response", bound=Message)


async def _encoded_off_loop(build: Callable[[], _Response]) -> _Response:
    """A large response built and encoded in a worker thread, not on the event loop that
    serves every other call. What returns is its wire form (bytes), typed as the
    response the RPC declares: the interceptor passes encoded responses through."""
    encoded = await asyncio.to_thread(lambda: build().SerializeToString())
    return cast("_Response", encoded)


async def status_wire(store: AttemptStore, attempt_id: int) -> bytes:
    """An attempt as a status event carries it: without its losses (the event hub
    builds its status events with it)."""
    attempt = convert.attempt_from_record(await store.get(attempt_id))
    attempt.ClearField("training_losses")
    return attempt.SerializeToString()


# A list's total is counted exactly up to this many attempts, estimated beyond (a count
# of a million rows would cost every first page seconds).
EXACT_TOTAL = 10_000
# Attempts one BatchCreateAttempts stores (AIP-233's usual bound; ImportAttempts' too).
MAX_BATCH = 1000


class AttemptServicer(attempt_service_pb2_grpc.AttemptServiceServicer):
    """The attempt store's RPCs, and the orchestration's."""

    def __init__(
        self,
        store: AttemptStore,
        work: WorkStore,
        hub: EventHub,
        limits: Limits,
        images: ImageStore,
        scans: Slots | None = None,
        queue: QueuePolicy | None = None,
        reads: ReadRouter | None = None,
    ) -> None:
        self._store = store
        # Reads that a streaming replica may answer (gateway/replicas/): gets, lists and
        # a watch's snapshot; everything else, and every write, on the primary.
        self._router = reads
        self._reads = AttemptStore(reads) if reads is not None else store
        # What a queued attempt's `waiting` is told against (the dispatcher's settings).
        self._queue = queue or QueuePolicy()
        # Filtered or field-ordered lists cost what the caller chose: a share of the
        # whole, whoever asks (`gateway.slots`).
        self._scans = scans or Slots("filtered lists", SCAN_SLOTS, 10.0)
        self._work = work
        # Train refuses labels without images up front, not a trainer after the queue.
        self._images = images
        self._hub = hub
        self._limits = limits
        self.downloads = DownloadSlots()
        # One import checked at a time (seconds of CPU each): the rest wait here, not in
        # the worker processes, which studies' asks and pruning decisions need as well.
        self._importing = asyncio.Semaphore(1)

    def _fresh(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Reads that see everything committed so far (a watch's snapshot)."""
        return self._router.fresh() if self._router is not None else contextlib.nullcontext()

    @translate_errors
    async def CreateAttempt(
        self, request: pb.CreateAttemptRequest, context: Any
    ) -> pb.CreateAttemptResponse:
        attempt = request.attempt
        v = Violations()
        check_name(v, "attempt.name", attempt.name)
        check_writable(v, "attempt", attempt, WRITABLE_FIELDS, self._limits)
        check_request_id(v, "request_id", request.request_id)
        v.raise_if_any()
        spec, doc = convert.stored_forms(convert.new_spec(attempt))
        caller = current().name
        record = await self._store.create(
            attempt.name, spec, doc, caller, _request(caller, request.request_id, "create")
        )
        return pb.CreateAttemptResponse(attempt=convert.attempt_from_record(record))

    @translate_errors
    async def BatchCreateAttempts(
        self, request: pb.BatchCreateAttemptsRequest, context: Any
    ) -> pb.BatchCreateAttemptsResponse:
        v = Violations()
        check_request_id(v, "request_id", request.request_id)
        if not 0 < len(request.requests) <= MAX_BATCH:
            v.add("requests", f"give 1 to {MAX_BATCH} attempts, got {len(request.requests)}")
        seen: set[str] = set()
        for i, item in enumerate(request.requests[:MAX_BATCH]):
            where = f"requests[{i}]"
            check_name(v, f"{where}.attempt.name", item.attempt.name)
            check_writable(v, f"{where}.attempt", item.attempt, WRITABLE_FIELDS, self._limits)
            if item.request_id:
                v.add(f"{where}.request_id", "leave it empty: set the batch's request_id")
            if item.attempt.name in seen:
                v.add(f"{where}.attempt.name", f"{item.attempt.name!r} is given twice")
            seen.add(item.attempt.name)
        v.raise_if_any()

        def forms() -> list[tuple[str, bytes, dict[str, Any]]]:
            return [
                (item.attempt.name, *convert.stored_forms(convert.new_spec(item.attempt)))
                for item in request.requests
            ]

        caller = current().name
        records = await self._store.create_many(
            await asyncio.to_thread(forms),  # a thousand documents: off the event loop
            caller,
            _request(caller, request.request_id, "batch_create"),
        )
        return await _encoded_off_loop(
            lambda: pb.BatchCreateAttemptsResponse(
                attempts=[convert.attempt_from_record(r) for r in records]
            )
        )

    @translate_errors
    async def ImportAttempts(
        self, request: pb.ImportAttemptsRequest, context: Any
    ) -> pb.ImportAttemptsResponse:
        v = Violations()
        check_request_id(v, "request_id", request.request_id)
        v.raise_if_any()
        async with self._importing:
            imports = await importing.check_imports_elsewhere(list(request.attempts), self._limits)
        caller = current().name
        records, skipped = await self._store.import_many(
            imports,
            caller,
            skip_existing=request.skip_existing,
            request=_request(caller, request.request_id, "import"),
        )
        # A thousand attempts with their losses.
        return await _encoded_off_loop(
            lambda: pb.ImportAttemptsResponse(
                attempts=[convert.attempt_from_record(r) for r in records], skipped=skipped
            )
        )

    @translate_errors
    async def GetAttempt(
        self, request: pb.GetAttemptRequest, context: Any
    ) -> pb.GetAttemptResponse:
        key = _key(request)
        _check_view(request.view)
        record = await self._reads.get(key, with_epochs=request.view == pb.ATTEMPT_VIEW_FULL)
        attempt = convert.attempt_from_record(record)
        if record.status == "QUEUED":
            attempt.waiting = await self._work.waiting(
                record.id, self._queue.trainer_timeout_seconds, self._queue.wide_reserve_seconds
            )
        return pb.GetAttemptResponse(attempt=attempt)

    @translate_errors
    async def UpdateAttempt(
        self, request: pb.UpdateAttemptRequest, context: Any
    ) -> pb.UpdateAttemptResponse:
        attempt = request.attempt
        v = Violations()
        key: AttemptKey
        if attempt.name:
            check_name(v, "attempt.name", attempt.name)
            key = attempt.name
        elif attempt.id > 0:
            key = attempt.id
        else:
            v.add("attempt.name", "give the name (or id) of the attempt to update")
            key = 0
        paths = list(request.update_mask.paths)
        if not paths:
            v.add("update_mask", f"name the fields to update, from {list(WRITABLE_FIELDS)}")
        for i, path in enumerate(paths):
            field = f"update_mask.paths[{i}]"
            if path in WRITABLE_FIELDS or tag_key(path) is not None:
                continue
            if path.split(".")[0] in _SERVER_OWNED:
                v.add(field, f"{path[:64]!r} is set by the server, not by clients")
            else:
                v.add(field, f"{path[:64]!r} is not a writable field; use {list(WRITABLE_FIELDS)}")
        v.raise_if_any()
        unique = tuple(dict.fromkeys(paths))
        check_writable(v, "attempt", attempt, unique, self._limits)
        check_tag_paths(v, "attempt.tags", paths, attempt.tags)
        if "tags" in unique and any(tag_key(p) is not None for p in unique):
            v.add("update_mask", "name either `tags` (the whole map) or single `tags.KEY`s")
        v.raise_if_any()
        # n_epoch, limit and tags may change at any time; commands not while a trainer runs them.
        guard = any(p in ("training_commands", "testing_commands") for p in unique)
        record = await self._store.update(
            key,
            convert.replacing(attempt, unique),
            guard_live=guard,
            scope=current().owner_scope,
        )
        return pb.UpdateAttemptResponse(attempt=convert.attempt_from_record(record))

    @translate_errors
    async def ListAttempts(
        self, request: pb.ListAttemptsRequest, context: Any
    ) -> pb.ListAttemptsResponse:
        v = Violations()
        limits = self._limits
        if not 0 <= request.page_size <= limits.max_page_size:
            v.add("page_size", f"must be between 0 and {limits.max_page_size}")
        statuses = []
        for i, status in enumerate(request.statuses):
            if status not in attempt_pb2.AttemptStatus.values() or status == 0:
                v.add(f"statuses[{i}]", f"unknown status {status}")
            else:
                statuses.append(convert.status_name(status))
        if request.order_by not in _ORDERS:
            v.add("order_by", f"unknown order {request.order_by}")
        if request.view == pb.ATTEMPT_VIEW_FULL:
            v.add("view", "FULL is for GetAttempt; lists return BASIC")
        elif request.view not in pb.AttemptView.values():
            v.add("view", f"unknown view {request.view}")
        if not 0.0 <= request.min_accuracy <= 1.0:  # also refuses NaN
            v.add("min_accuracy", "must be between 0 and 1")
        for field, max_chars in (
            ("label_name", MAX_LABEL_CHARS),
            ("name_prefix", 128),
            ("owner", 64),
        ):
            if problem := text_problem(getattr(request, field), max_chars):
                v.add(field, problem)
        if request.order_by_field and request.order_by != pb.ATTEMPT_ORDER_UNSPECIFIED:
            v.add("order_by_field", "set either order_by or order_by_field, not both")
        v.raise_if_any()
        parsed = filtering.parse(request.filter)
        field_order = filtering.parse_order(request.order_by_field)
        query = ListQuery(
            statuses=tuple(sorted(set(statuses))),
            label_name=request.label_name,
            name_prefix=request.name_prefix,
            min_accuracy=request.min_accuracy,
            owner=request.owner or None,
            condition=parsed.condition if parsed else None,
            condition_params=parsed.params if parsed else (),
            filter_text=request.filter,
            order=Order.FIELD if field_order else _ORDERS[request.order_by],
            sort_key=field_order.key if field_order else None,
            sort_params=field_order.params if field_order else (),
            sort_descending=field_order.descending if field_order else False,
            sort_text=request.order_by_field,
        )
        after = pagination.decode(query, request.page_token)
        size = request.page_size or limits.default_page_size
        scan = bool(request.filter or request.order_by_field)
        async with self._scans.slot() if scan else contextlib.nullcontext():
            try:
                records = await self._reads.list(query, after, size + 1)
            except InvalidArgument as err:  # a value of the filter the database refused
                refused = parsed.refusal(err) if parsed else None
                if refused is None:
                    raise
                raise refused from err

            total, estimated = 0, False
            if after is None:  # the first page says how many there are (AIP-158)
                total, estimated = await self._total(query, len(records), size)

            def page() -> pb.ListAttemptsResponse:
                response = pb.ListAttemptsResponse(
                    attempts=[convert.attempt_from_record(r) for r in records[:size]],
                    total_size=total,
                    total_size_estimated=estimated,
                )
                if len(records) > size:
                    response.next_page_token = pagination.encode(query, records[size - 1])
                return response

            # Up to 1,000 documents.
            return await _encoded_off_loop(page)

    async def _total(self, query: ListQuery, found: int, size: int) -> tuple[int, bool]:
        """How many attempts a list selects, and whether that is an estimate: a first
        page that is the last says it exactly; otherwise the fields' own conditions are
        counted up to EXACT_TOTAL (index scans that stop there), and a document filter's
        matches are PostgreSQL's estimate (finding 10,000 matches of a common path value
        read 40,000 documents: 75 ms at a million attempts, on every first page)."""
        if found <= size:
            return found, False
        if query.condition is None:
            return await self._reads.count(query, EXACT_TOTAL)
        estimate = await self._reads.estimate(query)
        return max(estimate, size + 1), True

    @translate_errors
    async def DeleteAttempt(
        self, request: pb.DeleteAttemptRequest, context: Any
    ) -> pb.DeleteAttemptResponse:
        await self._store.delete(_key(request), current().owner_scope)
        return pb.DeleteAttemptResponse()

    @translate_errors
    async def GetLatestIndex(
        self, request: pb.GetLatestIndexRequest, context: Any
    ) -> pb.GetLatestIndexResponse:
        return pb.GetLatestIndexResponse(latest_index=await self._store.latest_index())

    @translate_errors
    async def Train(self, request: pb.TrainRequest, context: Any) -> pb.TrainResponse:
        v = Violations()
        check_name(v, "name", request.name)
        check_trainable(v, "command", request.command, self._limits)
        check_request_id(v, "request_id", request.request_id)
        v.raise_if_any()
        await check_labels_have_images(
            self._images, "command.label_names", request.command.label_names
        )
        rewrite = convert.for_training(request.command)
        caller = current()
        attempt_id = await self._work.queue_train(
            request.name,
            rewrite,
            caller.name,
            caller.owner_scope,
            _request(caller.name, request.request_id, "train"),
        )
        record = await self._store.get(attempt_id)
        return pb.TrainResponse(attempt=convert.attempt_from_record(record))

    @translate_errors
    async def Test(self, request: pb.TestRequest, context: Any) -> pb.TestResponse:
        v = Violations()
        check_name(v, "name", request.name)
        given = request.HasField("command")
        if given:
            check_test_command(v, "command", request.command, self._limits)
        check_request_id(v, "request_id", request.request_id)
        v.raise_if_any()
        rewrite = convert.for_testing(request.command) if given else None
        caller = current()
        attempt_id = await self._work.queue_test(
            request.name,
            rewrite,
            caller.owner_scope,
            _request(caller.name, request.request_id, "test"),
        )
        return pb.TestResponse(
            attempt=convert.attempt_from_record(await self._store.get(attempt_id))
        )

    @translate_errors
    async def CancelAttempt(
        self, request: pb.CancelAttemptRequest, context: Any
    ) -> pb.CancelAttemptResponse:
        attempt_id = await self._work.cancel(_key(request), current().owner_scope)
        record = await self._store.get(attempt_id)
        return pb.CancelAttemptResponse(attempt=convert.attempt_from_record(record))

    @translate_errors
    async def DownloadModel(
        self, request: pb.DownloadModelRequest, context: Any
    ) -> AsyncIterator[pb.DownloadModelResponse]:
        key = _key(request)
        record = await self._store.get(key)
        # Streamed from the database a piece at a time: a download holds one piece
        # (1 MiB), never the file (up to `max_artifact_bytes`), and only so many run.
        async with self.downloads.slot():
            layout = await self._work.artifact_layout(record.id, "weights")
            if layout is None:
                raise NotFound(f"attempt {record.name!r} has no trained weights yet")
            if layout.sha256 is not None:
                digest = layout.sha256.hex()
            else:  # stored before digests were kept: hashed by one more streamed read
                hashed = hashlib.sha256()
                async for piece in self._work.read_artifact(layout, _DOWNLOAD_CHUNK):
                    hashed.update(piece)
                digest = hashed.hexdigest()
            total, offset = layout.size, 0
            if total == 0:
                yield pb.DownloadModelResponse(offset=0, total_size=0, sha256=digest)
            async for piece in self._work.read_artifact(layout, _DOWNLOAD_CHUNK):
                yield pb.DownloadModelResponse(
                    offset=offset, data=piece, total_size=total, sha256=digest
                )
                offset += len(piece)

    @translate_errors
    async def WatchAttempt(  # type: ignore[override] # also yields encoded responses
        self, request: pb.WatchAttemptRequest, context: Any
    ) -> AsyncIterator[pb.WatchAttemptResponse | bytes]:
        key = _key(request)
        if request.from_epoch < 0:
            raise InvalidArgument.one("from_epoch", "must not be negative")
        async with self._fresh():  # a watch may follow an attempt made a moment ago
            record = await self._reads.get(key)
        # Subscribe before reading, so nothing committed after the read is missed (on a
        # replica: one that has replayed what was committed when it subscribed).
        with self._hub.subscribe(record.id) as events:
            async with self._fresh():
                record = await self._reads.get(record.id)
                backlog = await self._reads.epochs_after(record.id, request.from_epoch)
            snapshot = convert.attempt_from_record(record)
            yield pb.WatchAttemptResponse(snapshot=snapshot)
            sent = request.from_epoch
            for metrics in _epochs(backlog):
                yield pb.WatchAttemptResponse(epoch=metrics)
                sent = metrics.epoch
            if snapshot.status in _TERMINAL:
                return
            # Waiting costs the database nothing: a missed notification shows up as a
            # "resync" (the hub's connection dropped, or this watcher fell behind).
            while True:
                event = await events.get()
                kind = event.kind
                if kind == "closing":
                    raise Unavailable(
                        f"this gateway is stopping: watch again with from_epoch {sent} to resume"
                    )
                if kind == "progress":
                    yield pb.WatchAttemptResponse(
                        test_progress=tpb.TestProgress(done=event.done, total=event.total)
                    )
                    continue
                if kind == "prognosis":
                    prognosis = attempt_pb2.Prognosis.FromString(event.payload)
                    if prognosis.epoch > sent:
                        # Its epoch first (the prognosis is made after the epoch is stored).
                        for metrics in _epochs(await self._store.epochs_after(record.id, sent)):
                            yield pb.WatchAttemptResponse(epoch=metrics)
                            sent = metrics.epoch
                    yield pb.WatchAttemptResponse(prognosis=prognosis)
                    continue
                if kind == "epoch" and event.epoch <= sent:
                    continue  # already sent (in the backlog)
                attempt: attempt_pb2.Attempt | None = None
                if kind == "status":
                    if not event.payload:
                        raise NotFound(f"attempt id {record.id} was deleted")
                    attempt = attempt_pb2.Attempt.FromString(event.payload)
                elif kind == "resync":
                    attempt = attempt_pb2.Attempt.FromString(
                        await status_wire(self._store, record.id)
                    )
                if kind == "epoch" and event.epoch == sent + 1:
                    if event.response:
                        # The common case: read and encoded once for every watcher (the
                        # interceptor lets encoded responses through as they are).
                        yield event.response
                        sent = event.epoch
                        continue
                    wire = event.payload  # the hub read it for every watcher
                elif attempt is None or attempt.current_epoch > sent:
                    # A missed notification, or epochs committed before a status change:
                    # what is stored past the last epoch sent, each once, in order.
                    wire = await self._store.epochs_after(record.id, sent)
                else:
                    wire = b""
                for metrics in _epochs(wire):
                    yield pb.WatchAttemptResponse(epoch=metrics)
                    sent = metrics.epoch
                if attempt is not None and (kind == "status" or attempt.status in _TERMINAL):
                    yield pb.WatchAttemptResponse(status=attempt)
                    if attempt.status in _TERMINAL:
                        return


def watch_response(wire: bytes) -> bytes:
    """One epoch's encoded `Attempt.epochs` entry as an encoded `WatchAttemptResponse`:
    what the event hub makes once for all of a replica's watchers."""
    [metrics] = _epochs(wire)
    return pb.WatchAttemptResponse(epoch=metrics).SerializeToString()


def _epochs(wire: bytes) -> list[attempt_pb2.EpochMetrics]:
    """Encoded `Attempt.epochs` entries as messages."""
    holder = attempt_pb2.Attempt()
    holder.MergeFromString(wire)
    return list(holder.epochs)
