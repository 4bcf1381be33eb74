"""ReportingService: runs of users' own training code (docs/architecture.md §5, §7).

A reported run is held by its reporter as a trainer's run is held by its gateway: a
lease (renewed by each report; `gateway/reporting/lapses.py` fails the silent ones) and
a fencing token. Its epochs take the epoch path (`gateway/epochs.py`) like a trainer's,
so prognosis, pruning and watchers need nothing of their own for it; its named metrics
go to their own table in one statement a batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format

from gateway import workers
from gateway.attempts import convert
from gateway.auth import roles
from gateway.config import Limits
from gateway.epochs import EpochPath, Run, RunEpochs
from gateway.events import Event, EventHub
from gateway.reporting import checks
from gateway.reporting.writer import ReportWriter
from gateway.store.reports import FENCE, ReportedRow, ReportStore
from gateway.store.requests import RequestKey
from gateway.store.tasks import TaskStore
from gateway.store.work import WorkStore
from gateway.tasks import declaring
from gateway.tasks.convert import task_proto
from metalearn import errors
from metalearn.status import translate_errors
from metalearn.v1 import attempt_pb2, reporting_service_pb2, reporting_service_pb2_grpc

log = logging.getLogger(__name__)
rpb = reporting_service_pb2

# The most bytes of a model file one message carries.
MAX_CHUNK_BYTES = 1024 * 1024
MAX_HISTORY_PAGE = 100_000
DEFAULT_HISTORY_PAGE = 10_000


@dataclass
class _Session:
    """One ReportRun stream's view of its run."""

    row: ReportedRow
    heartbeat: int
    n_epoch: int
    current_epoch: int
    series: dict[str, int]
    points: int


def _reported(row: ReportedRow) -> dict[str, Any]:
    return dict(row.doc.get("reported") or {})


def _stop(status: str, reason: str) -> rpb.ReportRunResponse:
    return rpb.ReportRunResponse(stop=rpb.Stop(status=convert.status_value(status), reason=reason))


def _stop_for(row: ReportedRow) -> rpb.ReportRunResponse:
    reasons = {
        "CANCELLED": "the run was cancelled",
        "PRUNED": "the run was stopped early",
        "FAILED": "the run failed",
    }
    reason = row.error or reasons.get(row.status, f"the run is {row.status}")
    return _stop(row.status, reason)


class ReportingServicer(reporting_service_pb2_grpc.ReportingServiceServicer):
    def __init__(
        self,
        reports: ReportStore,
        work: WorkStore,
        epochs: EpochPath,
        hub: EventHub,
        limits: Limits,
        max_model_bytes: int,
        writer: ReportWriter,
        tasks: TaskStore,
    ) -> None:
        self._writer = writer
        self._tasks = tasks
        self._reports = reports
        self._work = work
        self._epochs = epochs
        self._hub = hub
        self._limits = limits
        self._max_model_bytes = max_model_bytes

    async def _own(self, attempt_id: int, field: str = "attempt_id") -> ReportedRow:
        """The caller's reported run `attempt_id` (an admin's: anyone's)."""
        if attempt_id <= 0:
            raise errors.InvalidArgument.one(field, "is required: StartRun's attempt id")
        row = await self._reports.run(attempt_id)
        scope = roles.current().owner_scope
        if scope is not None and row.owner != scope:
            raise errors.PermissionDenied(f"attempt id {attempt_id} belongs to another owner")
        if row.provenance != "REPORTED":
            raise errors.FailedPrecondition(
                f"attempt {row.name!r} is not a reported run: its trainer reports it"
            )
        return row

    async def _attempt(self, attempt_id: int) -> attempt_pb2.Attempt:
        return convert.attempt_from_record(await self._reports.record(attempt_id))

    @translate_errors
    async def StartRun(self, request: rpb.StartRunRequest, context: Any) -> rpb.StartRunResponse:
        heartbeat = checks.check_start(request, self._limits)
        spec, doc = convert.stored_forms(checks.reported_spec(request, heartbeat))
        caller = roles.current().name
        key = RequestKey(caller, request.request_id, "start-run") if request.request_id else None
        attempt_id = await self._reports.start(request.name, spec, doc, caller, heartbeat, key)
        # Its task, profiled from the declaration at once (a retry finds it made).
        await declaring.declare(self._tasks, caller, request.task)
        return rpb.StartRunResponse(attempt=await self._attempt(attempt_id))

    @translate_errors
    async def UploadTaskSample(
        self, request: rpb.UploadTaskSampleRequest, context: Any
    ) -> rpb.UploadTaskSampleResponse:
        row = await self._own(request.attempt_id)
        task = attempt_pb2.DeclaredTask()
        json_format.ParseDict(_reported(row).get("task") or {}, task, ignore_unknown_fields=True)
        if len(task.labels) < 2:
            raise errors.FailedPrecondition(
                f"attempt id {row.id} declares no labels: a sample's images are labelled by them"
            )
        # Every image decoded: CPU work, in a worker process (gateway/workers.py).
        await workers.run(
            checks.check_sample, request.sample.SerializeToString(), len(task.labels),
            self._limits,
        )  # fmt: skip
        record = await declaring.sample(self._tasks, row.owner, task, request.sample)
        return rpb.UploadTaskSampleResponse(task=task_proto(record))

    @translate_errors
    async def ReportRun(  # type: ignore[override]
        self, requests: AsyncIterator[rpb.ReportRunRequest], context: Any
    ) -> AsyncIterator[rpb.ReportRunResponse]:
        messages = aiter(requests)
        try:
            first = await anext(messages)
        except StopAsyncIteration:
            return
        if first.WhichOneof("kind") != "attempt_id":
            raise errors.InvalidArgument.one(
                "attempt_id", "the first message names the run (StartRun's attempt id)"
            )
        row = await self._own(first.attempt_id)
        if row.status != "TRAINING":
            yield _stop_for(row)
            return
        reported = _reported(row)
        points = await self._reports.points(row.id)
        session = _Session(
            row=row,
            heartbeat=int(reported.get("heartbeat_seconds") or checks.DEFAULT_HEARTBEAT),
            n_epoch=int(row.doc.get("n_epoch") or 0),
            current_epoch=row.current_epoch,
            series={},
            points=points,
        )
        run = Run(
            row.id,
            row.name,
            FENCE,
            session.n_epoch,
            stop_when_hopeless=bool(reported.get("stop_when_hopeless")),
            study_trial="trial" in row.doc,
        )
        with (
            self._hub.subscribe(row.id, statuses_only=True) as events,
            self._hub.running_here(row.id),
        ):
            path = await self._epochs.open(run)
            try:
                async for response in self._serve(messages, events, session, path):
                    yield response
            finally:
                await path.ending()

    async def _serve(
        self,
        messages: AsyncIterator[rpb.ReportRunRequest],
        events: asyncio.Queue[Event],
        session: _Session,
        path: RunEpochs,
    ) -> AsyncIterator[rpb.ReportRunResponse]:
        """Batches and the run's status changes, as they come, until one ends it."""
        message: asyncio.Task[rpb.ReportRunRequest] = asyncio.ensure_future(anext(messages))
        event: asyncio.Task[Event] = asyncio.ensure_future(events.get())
        try:
            while True:
                await asyncio.wait((message, event), return_when=asyncio.FIRST_COMPLETED)
                if event.done():
                    kind = event.result().kind
                    if kind == "closing":
                        return  # this gateway stops: the reporter reconnects elsewhere
                    event = asyncio.ensure_future(events.get())
                    row = await self._reports.run(session.row.id)
                    if row.status != "TRAINING":
                        yield _stop_for(row)
                        return
                if message.done():
                    try:
                        request = message.result()
                    except StopAsyncIteration:
                        return  # the reporter closed its side
                    if request.WhichOneof("kind") != "batch":
                        raise errors.InvalidArgument.one(
                            "batch", "every message after the first is a batch"
                        )
                    response = await self._batch(request.batch, session, path)
                    yield response
                    if response.WhichOneof("kind") == "stop":
                        return
                    message = asyncio.ensure_future(anext(messages))
        finally:
            for task in (message, event):
                if not task.done():
                    task.cancel()
                with contextlib.suppress(BaseException):
                    await task  # its end (or error) is retrieved, never left unread

    async def _batch(
        self, batch: rpb.ReportBatch, session: _Session, path: RunEpochs
    ) -> rpb.ReportRunResponse:
        """Stores one batch (its epochs through the path, then its points); its answer.
        Epochs first: they are what watchers wait for, and points wait for the next group
        commit. A stop that an epoch brings is made once the points are stored."""
        run_id = session.row.id
        checked = checks.check_batch(batch, session.current_epoch, session.n_epoch)
        if checked.points:
            await self._bound(checked, session)
        reason = None
        for epoch in checked.epochs:
            try:
                reason = await path.record(epoch)
            except errors.FailedPrecondition:
                return _stop_for(await self._reports.run(run_id))
            session.current_epoch = epoch.epoch
            if reason is not None:
                break
        # Written with every other stream's waiting reports, in one statement.
        try:
            stored = await self._writer.report(
                run_id, session.heartbeat, checked.points, session.series
            )
        except Exception:
            if reason is not None:  # the epoch that brought it is stored: a resent one
                await self._work.finish(run_id, FENCE, "PRUNED", reason)  # is not judged
            raise
        if stored is None:
            return _stop_for(await self._reports.run(run_id))
        session.points += stored
        if reason is not None:
            await self._work.finish(run_id, FENCE, "PRUNED", reason)
            return _stop("PRUNED", reason)
        if checked.diverged is not None:
            reason = f"diverged: {checked.diverged[1]}"
            await path.ending()
            await self._work.finish(run_id, FENCE, "FAILED", reason)
            return _stop("FAILED", reason)
        return rpb.ReportRunResponse(
            acknowledged=rpb.Acknowledged(
                sequence=batch.sequence, current_epoch=session.current_epoch
            )
        )

    async def _bound(self, checked: checks.Batch, session: _Session) -> None:
        """The batch's metrics have ids, and the run stays within its share."""
        new = [p.key for p in checked.points if p.key not in session.series]
        if new:
            found, made = await self._reports.series(session.row.id, new, checks.MAX_KEYS)
            session.series.update(found)
            if made:
                await self._name_metrics(session)
        if session.points + checked.point_count > checks.MAX_RUN_POINTS:
            raise errors.ResourceExhausted(
                f"the run holds {session.points} points; it may hold at most"
                f" {checks.MAX_RUN_POINTS}"
            )

    async def _name_metrics(self, session: _Session) -> None:
        """Its document lists its metrics' names (what a reader looks up)."""
        names = sorted(session.series)

        def change(spec: attempt_pb2.Attempt) -> None:
            known = set(spec.reported.metric_keys) | set(names)
            del spec.reported.metric_keys[:]
            spec.reported.metric_keys.extend(sorted(known))

        await self._reports.rewrite(session.row.id, convert.rewrite_with(change))

    @translate_errors
    async def UploadModel(
        self, requests: AsyncIterator[rpb.UploadModelRequest], context: Any
    ) -> rpb.UploadModelResponse:
        messages = aiter(requests)
        try:
            first = await anext(messages)
        except StopAsyncIteration:
            raise errors.InvalidArgument.one("header", "the first message is the header") from None
        if first.WhichOneof("kind") != "header":
            raise errors.InvalidArgument.one("header", "the first message is the header")
        header = first.header
        v = errors.Violations()
        if not 1 <= header.size_bytes <= self._max_model_bytes:
            v.add("header.size_bytes", f"must be between 1 and {self._max_model_bytes}")
        digest = header.sha256.lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            v.add("header.sha256", "64 hex digits")
        v.raise_if_any()
        row = await self._own(header.attempt_id, "header.attempt_id")
        if row.status != "TRAINING":
            raise errors.FailedPrecondition(f"run {row.name!r} is {row.status}: it has ended")
        sha, total, index = hashlib.sha256(), 0, 0
        async for request in messages:
            if request.WhichOneof("kind") != "chunk":
                raise errors.InvalidArgument.one(
                    "chunk", "every message after the header is a chunk"
                )
            data = request.chunk
            if not data or len(data) > MAX_CHUNK_BYTES:
                raise errors.InvalidArgument.one(f"chunk[{index}]", f"1 to {MAX_CHUNK_BYTES} bytes")
            total += len(data)
            if total > header.size_bytes:
                raise errors.InvalidArgument.one(
                    f"chunk[{index}]", f"more than the header's {header.size_bytes} bytes"
                )
            sha.update(data)
            if not await self._work.upload_chunk(row.id, FENCE, "weights", 0, index, data):
                raise errors.FailedPrecondition(f"run {row.name!r} ended during the upload")
            index += 1
        if total != header.size_bytes:
            raise errors.InvalidArgument.one(
                "header.size_bytes", f"the header said {header.size_bytes} bytes; {total} came"
            )
        if sha.hexdigest() != digest:
            raise errors.InvalidArgument.one(
                "header.sha256", f"the file's sha256 is {sha.hexdigest()}"
            )
        if not await self._work.commit_upload(row.id, FENCE, "weights", None, sha.digest()):
            raise errors.FailedPrecondition(f"run {row.name!r} ended during the upload")
        model = attempt_pb2.ArtifactInfo(size_bytes=total, sha256=digest)
        await self._reports.rewrite(
            row.id, convert.rewrite_with(lambda spec: spec.model_artifact.CopyFrom(model))
        )
        return rpb.UploadModelResponse(model=model)

    @translate_errors
    async def FinishRun(self, request: rpb.FinishRunRequest, context: Any) -> rpb.FinishRunResponse:
        row = await self._own(request.attempt_id)
        labels = list((_reported(row).get("task") or {}).get("labels") or [])
        status, error = checks.check_finish(request, labels)
        if row.status == "TRAINING":
            if request.last_epoch > row.current_epoch:
                raise errors.FailedPrecondition(
                    f"run {row.name!r} has epochs up to {row.current_epoch}, not"
                    f" {request.last_epoch}: report the rest first"
                )
            result = request.test_result if request.HasField("test_result") else None
            rewrite = convert.tested(result) if result is not None else None
            if await self._work.finish(row.id, FENCE, status, error, rewrite=rewrite):
                return rpb.FinishRunResponse(attempt=await self._attempt(row.id))
            row = await self._reports.run(row.id)
        if row.status == status:
            # Finished this way already: a retry (its answer was lost).
            return rpb.FinishRunResponse(attempt=await self._attempt(row.id))
        raise errors.FailedPrecondition(
            f"run {row.name!r} has ended as {row.status}" + (f" ({row.error})" if row.error else "")
        )

    @translate_errors
    async def GetMetricHistory(
        self, request: rpb.GetMetricHistoryRequest, context: Any
    ) -> rpb.GetMetricHistoryResponse:
        v = errors.Violations()
        if request.attempt_id <= 0:
            v.add("attempt_id", "is required")
        if not checks.KEY_RE.fullmatch(request.key):
            v.add(
                "key", "a metric's name: 1-250 letters, digits, spaces, '.', '_', '-', '/' or ':'"
            )
        if request.after_step < -1:
            v.add("after_step", f"must be -1 or more, got {request.after_step}")
        if not 0 <= request.page_size <= MAX_HISTORY_PAGE:
            v.add("page_size", f"must be between 0 and {MAX_HISTORY_PAGE}")
        v.raise_if_any()
        await self._reports.run(request.attempt_id)  # NOT_FOUND for no such attempt
        limit = request.page_size or DEFAULT_HISTORY_PAGE
        found = await self._reports.history(
            request.attempt_id, request.key, request.after_step, limit
        )
        return rpb.GetMetricHistoryResponse(
            steps=found.steps,
            values=found.values,
            timestamps_ms=found.at_ms,
            next_after_step=found.steps[-1] if len(found.steps) == limit else -1,
        )
