"""StudyService: checks a study whole before it starts, then leaves it to the driver."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from gateway import workers
from gateway.attempts.validation import (
    check_labels_have_images,
    check_request_id,
    text_problem,
)
from gateway.auth import current
from gateway.config import Limits
from gateway.names import require_name
from gateway.pagination import before_id, before_token
from gateway.store.attempts import AttemptStore
from gateway.store.images import ImageStore
from gateway.store.requests import RequestKey
from gateway.store.studies import StudyStore
from gateway.store.work import WorkStore
from gateway.studies import checks, model
from gateway.studies.checks import MAX_STUDY_NAME
from gateway.studies.driver import StudyDriver, trial_name
from gateway.studies.external import MAX_WORKER_CHARS, ExternalTrials
from gateway.studies.wakes import StudyWakes
from metalearn.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
    Violations,
)
from metalearn.status import translate_errors
from metalearn.v1 import attempt_pb2, study_service_pb2_grpc
from metalearn.v1 import study_service_pb2 as pb
from metalearn.waiting import wait_set

# A watcher also looks when no notification came (a time limit, a missed one).
_WATCH_POLL_SECONDS = 5.0
_WRITABLE = ("name", "base_command", "search_space", "objective", "n_trials", "max_parallel",
             "timeout_seconds", "sampler", "pruner", "seed", "test_best",
             "warm_start", "external")  # fmt: skip


def _name(field: str, name: str) -> str:
    return require_name(field, name, MAX_STUDY_NAME)


class StudyServicer(study_service_pb2_grpc.StudyServiceServicer):
    def __init__(
        self,
        studies: StudyStore,
        attempts: AttemptStore,
        work: WorkStore,
        images: ImageStore,
        driver: StudyDriver,
        wakes: StudyWakes,
        limits: Limits,
        external: ExternalTrials,
    ) -> None:
        self._external = external
        self._studies = studies
        self._attempts = attempts
        self._wakes = wakes
        self._work = work
        self._images = images
        self._driver = driver
        self._limits = limits
        self._checking = asyncio.Semaphore(checks.MAX_CONCURRENT_CHECKS)

    @translate_errors
    async def CreateStudy(
        self, request: pb.CreateStudyRequest, context: Any
    ) -> pb.CreateStudyResponse:
        # The client's fields only; the rest is the server's.
        study = pb.Study()
        study.CopyFrom(request.study)
        for name in pb.Study.DESCRIPTOR.fields_by_name:
            if name not in _WRITABLE:
                study.ClearField(name)  # type: ignore[arg-type]
        if not study.sampler.name:
            study.sampler.name = "tpe"
        if not study.pruner.name:
            study.pruner.name = "none"
        # In a worker process: seconds of CPU for the largest space allowed.
        async with self._checking:
            found = await workers.run(checks.problems, study, self._limits)
        found.raise_if_any()
        if not study.HasField("external"):  # an external study's task is declared
            await check_labels_have_images(
                self._images, "study.base_command.label_names", study.base_command.label_names
            )
        if study.warm_start.studies:
            await self._warm_sources_exist(study)
        names = [trial_name(study.name, k) for k in range(study.n_trials)]
        record = await self._studies.create(
            study.name, current().name, study.SerializeToString(), names
        )
        await self._driver.register_task(study, record.owner)
        self._driver.wake()
        return pb.CreateStudyResponse(study=model.study_proto(record, []))

    async def _warm_sources_exist(self, study: pb.Study) -> None:
        for i, name in enumerate(study.warm_start.studies):
            try:
                await self._studies.get(name)
            except NotFound:
                raise InvalidArgument.one(
                    f"study.warm_start.studies[{i}]", f"no study {name!r}"
                ) from None

    @translate_errors
    async def GetStudy(self, request: pb.GetStudyRequest, context: Any) -> pb.GetStudyResponse:
        record, trials = await self._studies.get(_name("name", request.name))
        return pb.GetStudyResponse(study=model.study_proto(record, trials))

    @translate_errors
    async def ListStudies(
        self, request: pb.ListStudiesRequest, context: Any
    ) -> pb.ListStudiesResponse:
        if not 0 <= request.page_size <= self._limits.max_page_size:
            raise InvalidArgument.one(
                "page_size", f"must be between 0 and {self._limits.max_page_size}"
            )
        before = before_id(request.page_token)
        size = request.page_size or self._limits.default_page_size
        records = await self._studies.page(before, size + 1)
        response = pb.ListStudiesResponse()
        for record in records[:size]:
            # Without its trials, but with its best one, as GetStudy has it: a list of
            # studies is read for who is winning (the dashboard's Best column).
            study = response.studies.add()
            study.CopyFrom(model.study_proto(record))
            top = model.best(study, await self._studies.trials(record.id))
            if top is not None:
                study.best_trial.CopyFrom(model.trial_proto(study, top))
        if len(records) > size:
            response.next_page_token = before_token(records[size - 1].id)
        return response

    @translate_errors
    async def WatchStudy(
        self, request: pb.WatchStudyRequest, context: Any
    ) -> AsyncIterator[pb.WatchStudyResponse]:
        name = _name("name", request.name)
        # Woken before the first read, so nothing committed after it is missed; each wake
        # compares the study with what was sent (events coalesce, nothing is lost).
        with self._wakes.subscribe() as wake:
            record, trials = await self._studies.get(name)
            current = model.study_proto(record, trials)
            yield pb.WatchStudyResponse(snapshot=current)
            sent = {t.number: (t.state, t.epochs) for t in current.trials}
            best = current.best_trial.number if current.HasField("best_trial") else None
            wake.study_id = record.id
            while record.state != "DONE":
                wake.attempt_ids = frozenset(t.attempt_id for t in current.trials)
                await wait_set(wake.event, _WATCH_POLL_SECONDS)
                wake.event.clear()
                if wake.closing:
                    raise Unavailable("this gateway is stopping: watch again to resume")
                try:
                    record, trials = await self._studies.get(name)
                except NotFound:
                    raise NotFound(f"study {name!r} was deleted") from None
                current = model.study_proto(record, trials)
                for trial in current.trials:
                    async for event in self._changes(trial, sent.get(trial.number)):
                        yield event
                    sent[trial.number] = (trial.state, trial.epochs)
                if current.HasField("best_trial") and current.best_trial.number != best:
                    best = current.best_trial.number
                    yield pb.WatchStudyResponse(new_best=current.best_trial)
            yield pb.WatchStudyResponse(study_finished=current)

    async def _changes(
        self, trial: pb.Trial, before: tuple[int, int] | None
    ) -> AsyncIterator[pb.WatchStudyResponse]:
        """What happened to a trial since `before` (its state and epochs when last sent)."""
        if before is None:
            yield pb.WatchStudyResponse(trial_started=trial)
        state, epochs = before if before is not None else (pb.TRIAL_STATE_RUNNING, 0)
        if trial.attempt_id and trial.epochs > epochs:
            wire = await self._attempts.epochs_after(trial.attempt_id, epochs, trial.epochs)
            for metrics in attempt_pb2.Attempt.FromString(wire).epochs:
                yield pb.WatchStudyResponse(
                    trial_epoch=pb.TrialEpoch(trial=trial.number, epoch=metrics)
                )
        if trial.state != state:
            if trial.state == pb.TRIAL_STATE_PRUNED:
                yield pb.WatchStudyResponse(trial_pruned=trial)
            elif trial.state != pb.TRIAL_STATE_RUNNING:
                yield pb.WatchStudyResponse(trial_finished=trial)

    @translate_errors
    async def AskTrial(self, request: pb.AskTrialRequest, context: Any) -> pb.AskTrialResponse:
        name = _name("name", request.name)
        v = Violations()
        if problem := text_problem(request.worker, MAX_WORKER_CHARS):
            v.add("worker", problem)
        check_request_id(v, "request_id", request.request_id)
        v.raise_if_any()
        caller = current()
        key = (
            RequestKey(caller.name, request.request_id, "ask-trial") if request.request_id else None
        )
        asked = await self._external.ask(name, caller.owner_scope, request.worker, key)
        if asked.trial is not None:
            return pb.AskTrialResponse(trial=asked.trial)
        if asked.done is not None:
            self._driver.wake()  # it may end now
            return pb.AskTrialResponse(done=asked.done)
        return pb.AskTrialResponse(wait_seconds=asked.wait_seconds)

    @translate_errors
    async def StopStudy(self, request: pb.StopStudyRequest, context: Any) -> pb.StopStudyResponse:
        name = _name("name", request.name)
        caller = current()
        stopped = await self._studies.stop(name, caller.owner_scope, f"stopped by {caller.name}")
        if request.cancel_running:
            _, trials = await self._studies.get(name)
            for trial in trials:
                if trial.attempt_id is not None and trial.status in ("QUEUED", "TRAINING"):
                    with contextlib.suppress(FailedPrecondition):  # it ended meanwhile
                        await self._work.cancel(trial.attempt_id, None)
        await self._driver.advance(stopped.id, wait=True)  # done at once if nothing runs
        record, trials = await self._studies.get(name)
        return pb.StopStudyResponse(study=model.study_proto(record, trials))

    @translate_errors
    async def DeleteStudy(
        self, request: pb.DeleteStudyRequest, context: Any
    ) -> pb.DeleteStudyResponse:
        await self._studies.delete(_name("name", request.name), current().owner_scope)
        return pb.DeleteStudyResponse()
