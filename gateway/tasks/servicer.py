"""TaskService: task profiles, similar tasks, suggested commands, the task distance."""

from __future__ import annotations

import asyncio
import math
import re
import time
from typing import Any

from google.protobuf import json_format

from gateway.attempts import convert
from gateway.attempts.convert import image_ops_json
from gateway.attempts.validation import check_labels_have_images, check_task_key
from gateway.auth.roles import current
from gateway.config import Limits
from gateway.pagination import before_id, before_token
from gateway.store.attempts import AttemptStore
from gateway.store.images import ImageStore
from gateway.store.tasks import TaskRecord, TaskStore
from gateway.tasks import declaring
from gateway.tasks.convert import provenance_value, task_proto
from gateway.tasks.learner import Fitted, Known, Learner, Suggestion
from gateway.tasks.profiler import TaskProfiler
from learning.tasks import defaults, transfer
from metalearn.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable, Violations
from metalearn.status import translate_errors
from metalearn.v1 import attempt_pb2, task_pb2, task_service_pb2_grpc
from metalearn.v1 import task_service_pb2 as pb

# The longest a call waits for a trainer to profile its task.
MAX_WAIT_SECONDS = 60.0
_POLL_SECONDS = 0.2
_FINGERPRINT = re.compile(r"(missing:)?[0-9a-f]{64}")


def distance_proto(fitted: Fitted) -> pb.TaskDistance:
    distance = fitted.distance
    found = pb.TaskDistance(
        kind=distance.kind,
        weights=dict(zip(distance.features, distance.weights, strict=True)),
        tasks=distance.tasks,
        pairs=distance.pairs,
        spearman=distance.spearman if math.isfinite(distance.spearman) else 0.0,
        standardized_spearman=(
            distance.standardized_spearman if math.isfinite(distance.standardized_spearman) else 0.0
        ),
    )
    found.fit_time.FromDatetime(fitted.at)
    return found


def _bounded(field: str, value: int, default: int, high: int) -> int:
    if not 0 <= value <= high:
        raise InvalidArgument.one(field, f"must be between 0 and {high}")
    return value or default


def _reason(suggestion: Suggestion) -> str:
    """Why this command, in a sentence: which ranking, on what history, and the run it
    copies."""
    choice = suggestion.choice
    tasks = choice.tasks if choice is not None else len(suggestion.sources)
    if suggestion.ranking == "learned" and choice is not None:
        how = (
            f"the learned ranking (task profile x command, fitted on {tasks} past tasks) puts"
            f" it first for this task, at {suggestion.score:.2f} of a task's best; on past"
            f" tasks it was not fitted on, its first 1 to {transfer.TOP} (this first, then"
            f" the static portfolio's) left a mean regret of {choice.learned_regret:.3f},"
            f" the static portfolio's {choice.static_regret:.3f}"
        )
    else:
        how = (
            f"the static portfolio's first: the command best across {tasks} past"
            f" {'task' if tasks == 1 else 'tasks'} of its kind, with no task distance"
            + (f" ({choice.why})" if choice is not None else "")
        )
    record, d, _, run, _ = suggestion.sources[0]
    came = "trained here" if run.provenance == "TRAINED" else f"imported by {run.owner}"
    labels = ", ".join(record.label_names[:4]) + ("…" if len(record.label_names) > 4 else "")
    at = f" at distance {d:.3g}" if math.isfinite(d) else ""
    return (
        f"{how}; nearest task that ran it: {labels}{at}, where {run.name} ({came}) reached"
        f" {run.best_val_accuracy:.3f} validation accuracy"
    )


class TaskServicer(task_service_pb2_grpc.TaskServiceServicer):
    def __init__(
        self,
        tasks: TaskStore,
        images: ImageStore,
        attempts: AttemptStore,
        learner: Learner,
        profiler: TaskProfiler,
        limits: Limits,
    ) -> None:
        self._tasks = tasks
        self._images = images
        self._attempts = attempts
        self._learner = learner
        self._profiler = profiler
        self._limits = limits

    async def _registered(self, field: str, key: task_pb2.TaskKey) -> TaskRecord:
        v = Violations()
        check_task_key(v, field, key, self._limits)
        v.raise_if_any()
        await check_labels_have_images(self._images, f"{field}.label_names", key.label_names)
        record = await self._tasks.ensure(list(key.label_names), image_ops_json(key.image_ops))
        if record.state == "PENDING":
            self._profiler.wake()
        return record

    async def _profiled(self, record: TaskRecord, context: Any) -> TaskRecord:
        """The task once a trainer has profiled it (or failed to), waiting at most until
        the call's deadline or MAX_WAIT_SECONDS; as it is then."""
        remaining = context.time_remaining() if context is not None else None
        wait = MAX_WAIT_SECONDS if remaining is None else min(MAX_WAIT_SECONDS, remaining - 0.5)
        deadline = time.monotonic() + wait
        while record.state == "PENDING" and time.monotonic() < deadline:
            await asyncio.sleep(_POLL_SECONDS)
            record = await self._tasks.get(record.fingerprint)
        return record

    async def _of_attempt(self, attempt_id: int) -> TaskRecord:
        """The task a stored attempt learns: a reported run's declared task, or its
        command's labels and image ops."""
        if attempt_id <= 0:
            raise InvalidArgument.one("attempt_id", "a stored attempt's id")
        record = await self._tasks.of_attempt(attempt_id)
        if record is not None:
            return record
        stored = convert.attempt_from_record(await self._attempts.get(attempt_id))
        if stored.HasField("reported"):  # declared before its task had a row: now
            declared = await declaring.declare(self._tasks, stored.owner, stored.reported.task)
            if declared is None:
                raise FailedPrecondition(
                    f"attempt id {attempt_id} declares no task (neither a dataset nor labels)"
                )
            return declared
        key = task_pb2.TaskKey(
            label_names=stored.training_commands.label_names,
            image_ops=stored.training_commands.image_ops,
        )
        return await self._registered("attempt_id", key)

    async def _target(
        self,
        key: task_pb2.TaskKey | None,
        fingerprint: str | None,
        context: Any,
        attempt_id: int | None = None,
    ) -> TaskRecord:
        """The task a request names, by its key, a stored fingerprint or an attempt,
        profiled."""
        if attempt_id is not None:
            record = await self._of_attempt(attempt_id)
        elif fingerprint is not None:
            if not _FINGERPRINT.fullmatch(fingerprint):
                raise InvalidArgument.one("fingerprint", "a task's fingerprint (64 hex digits)")
            record = await self._tasks.get(fingerprint)
        elif key is not None:
            record = await self._registered("task", key)
        else:
            raise InvalidArgument.one("task", "give the task's labels, or a fingerprint")
        return await self._profiled(record, context)

    @translate_errors
    async def ProfileTask(
        self, request: pb.ProfileTaskRequest, context: Any
    ) -> pb.ProfileTaskResponse:
        record = await self._registered("task", request.task)
        if request.wait:
            record = await self._profiled(record, context)
        return pb.ProfileTaskResponse(task=task_proto(record))

    @translate_errors
    async def ListTasks(self, request: pb.ListTasksRequest, context: Any) -> pb.ListTasksResponse:
        size = _bounded(
            "page_size",
            request.page_size,
            self._limits.default_page_size,
            self._limits.max_page_size,
        )
        records = await self._tasks.page(
            before_id(request.page_token), size + 1, request.all_versions
        )
        response = pb.ListTasksResponse(tasks=[task_proto(r) for r in records[:size]])
        if len(records) > size:
            response.next_page_token = before_token(records[size - 1].id)
        return response

    async def _best_attempts(self, known: Known, key: str, count: int) -> list[attempt_pb2.Attempt]:
        tried = sorted(
            known.tried.get(key, {}).values(),
            key=lambda t: (-t.best_attempt.best_val_accuracy, t.best_attempt.attempt_id),
        )
        found = []
        for t in tried[:count]:
            try:
                record = await self._attempts.get(t.best_attempt.attempt_id, with_epochs=True)
            except NotFound:  # deleted meanwhile
                continue
            found.append(convert.attempt_from_record(record))
        return found

    @translate_errors
    async def FindSimilarTasks(
        self, request: pb.FindSimilarTasksRequest, context: Any
    ) -> pb.FindSimilarTasksResponse:
        limit = _bounded("limit", request.limit, 5, 100)
        per_task = _bounded("attempts_per_task", request.attempts_per_task, 3, 20)
        which = request.WhichOneof("target")
        by = request.fingerprint if which == "fingerprint" else None
        key = request.task if which == "task" else None
        target = await self._target(
            key, by, context, request.attempt_id if which == "attempt_id" else None
        )
        if target.state == "FAILED":
            raise FailedPrecondition(f"the task could not be profiled: {target.error}")
        if target.state == "PENDING":
            raise Unavailable("the task is not profiled yet (is a trainer up?): call again")
        known = await self._learner.known(current().name)
        fitted = await self._learner.distance(known)
        response = pb.FindSimilarTasksResponse(
            target=task_proto(target), distance=distance_proto(fitted), trusted_owners=known.trusted
        )
        near = Learner.neighbours(known, fitted.distance, target, limit)
        known = await self._learner.with_tried(known, [record.key for record, _ in near])
        for record, d in near:
            similar = response.tasks.add(
                task=task_proto(await self._tasks.get(record.fingerprint)), distance=d
            )
            similar.best_attempts.extend(await self._best_attempts(known, record.key, per_task))
        return response

    @translate_errors
    async def SuggestCommand(
        self, request: pb.SuggestCommandRequest, context: Any
    ) -> pb.SuggestCommandResponse:
        k = _bounded("neighbours", request.neighbours, 5, 50)
        if not request.HasField("task"):
            raise InvalidArgument.one("task", "give the labels to suggest a command for")
        target = await self._target(request.task, None, context)
        known = await self._learner.known(current().name)
        fitted = await self._learner.distance(known)
        response = pb.SuggestCommandResponse(
            task=task_proto(target), distance=distance_proto(fitted), trusted_owners=known.trusted
        )
        suggestion = None
        if target.state == "READY":
            ranked = await self._learner.transfer(known, target.declared)
            known = await self._learner.with_tried(known, ranked.keys)
            suggestion = self._learner.suggest(known, fitted.distance, target, k, ranked)
        if suggestion is None or suggestion.command is None:
            command = defaults.command(
                list(request.task.label_names), image_ops_json(request.task.image_ops)
            )
            why = (
                "no past task has finished attempts to learn from (trained here, or imported by"
                " you, an admin or a trusted owner)"
                if not any(key != target.key for key in known.history)
                else f"the task could not be profiled ({target.state.lower()}: {target.error})"
                if target.state != "READY"
                else "no past task of its kind has finished attempts to learn from"
            )
            response.fallback = True
            response.ranking = pb.SUGGESTION_RANKING_DEFAULT
            response.reason = f"metalearn's default command: {why}"
        else:
            command = dict(suggestion.command)
            command["label_names"] = list(request.task.label_names)
            command["image_ops"] = image_ops_json(request.task.image_ops)
            # The source's own: its class count, and the name its weights were saved as.
            command.pop("n_labels", None)
            command.pop("model_name", None)
            response.reason = _reason(suggestion)
            response.score = suggestion.score
            response.ranking = (
                pb.SUGGESTION_RANKING_LEARNED
                if suggestion.ranking == "learned"
                else pb.SUGGESTION_RANKING_STATIC
            )
            for record, d, w, run, q in suggestion.sources:
                response.sources.add(
                    task=task_proto(record),
                    distance=d,
                    weight=w,
                    attempt_id=run.attempt_id,
                    attempt_name=run.name,
                    val_accuracy=run.best_val_accuracy,
                    quantile=q,
                    provenance=provenance_value(run.provenance),
                    owner=run.owner,
                )
        # A document stored by an older gateway may hold fields this one no longer has.
        json_format.ParseDict(command, response.command, ignore_unknown_fields=True)
        return response

    @translate_errors
    async def FitTaskDistance(
        self, request: pb.FitTaskDistanceRequest, context: Any
    ) -> pb.FitTaskDistanceResponse:
        return pb.FitTaskDistanceResponse(distance=distance_proto(await self._learner.fit()))
