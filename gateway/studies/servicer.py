"""StudyService: checks a study whole before it starts, then leaves it to the driver."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
from collections.abc import AsyncIterator
from typing import Any

from google.protobuf import json_format

from gateway.auth import current
from gateway.config import Limits
from gateway.events import EventHub
from gateway.pagination import before_id, before_token
from gateway.store.attempts import AttemptStore
from gateway.store.images import ImageStore
from gateway.store.studies import StudyStore
from gateway.store.work import WorkStore
from gateway.studies import arguments, model, pruning, sampling, space
from gateway.studies.driver import StudyDriver, trial_command, trial_name
from gateway.validation import check_labels_have_images, check_trainable
from metalearn.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable, Violations
from metalearn.status import translate_errors
from metalearn.structs import plain_struct
from metalearn.v1 import attempt_pb2, study_service_pb2_grpc
from metalearn.v1 import study_service_pb2 as pb

NAME = re.compile(r"[A-Za-z0-9._-]{1,100}")
MAX_TRIALS = 1000
MAX_PARALLEL = 256
MAX_TIMEOUT_SECONDS = 30 * 24 * 3600.0
# CreateStudy builds and checks a command for every choice and range bound (_corners):
# each is a whole Train check, ~2 ms for a 256-layer command, so 32 parameters of 100
# choices each (3,200 commands) took seconds of CPU. 400 covers a real space (a dozen
# parameters of 30 choices); the check runs in a worker thread, at most
# MAX_CONCURRENT_CHECKS at a time.
MAX_CORNERS = 400
MAX_CONCURRENT_CHECKS = 2
# A watcher also looks when no notification came (a time limit, a missed one).
_WATCH_POLL_SECONDS = 5.0
_WRITABLE = ("name", "base_command", "search_space", "objective", "n_trials", "max_parallel",
             "timeout_seconds", "sampler", "pruner", "seed", "test_best",
             "warm_start")  # fmt: skip
# A warm start draws from at most this many tasks or studies.
MAX_WARM_SOURCES = 20


def _name(field: str, name: str) -> str:
    if not NAME.fullmatch(name):
        raise InvalidArgument.one(field, "letters, digits, '.', '_' and '-', at most 100")
    return name


def _corners(v: Violations, study: pb.Study, params: list[space.Parameter], limits: Limits) -> None:
    """The command at each bound and choice, checked as Train checks it, so that a space
    whose corner makes no command is refused now rather than failing trials later."""
    corners = space.corners(params)
    if len(corners) > MAX_CORNERS:
        v.add("study.search_space", f"at most {MAX_CORNERS} values to check in all (each"
              " choice, 2 for an int range, 3 for a float range); this space has"
              f" {len(corners)}")  # fmt: skip
        return
    base = space.command_json(study.base_command)
    for i, values in corners:
        parameter = params[i]
        field = f"study.search_space[{i}]"
        shown = json.dumps(values[parameter.path])[:80]
        try:
            command = trial_command(study, params, values, base)
        except json_format.ParseError as err:
            v.add(field, f"with {parameter.path} = {shown} the command does not parse: {err}")
            continue
        found = Violations()
        check_trainable(found, "command", command, limits)
        for item in found.items[:3]:
            v.add(field, f"with {parameter.path} = {shown}, {item.field}: {item.description}")


class StudyServicer(study_service_pb2_grpc.StudyServiceServicer):
    def __init__(
        self,
        studies: StudyStore,
        attempts: AttemptStore,
        work: WorkStore,
        images: ImageStore,
        driver: StudyDriver,
        hub: EventHub,
        limits: Limits,
    ) -> None:
        self._studies = studies
        self._attempts = attempts
        self._hub = hub
        self._work = work
        self._images = images
        self._driver = driver
        self._limits = limits
        self._checking = asyncio.Semaphore(MAX_CONCURRENT_CHECKS)

    def _check(self, study: pb.Study) -> list[space.Parameter]:
        """The study's search space, or InvalidArgument naming every problem. CPU-bound
        (seconds for the largest allowed space): called in a worker thread."""
        v = Violations()
        if not NAME.fullmatch(study.name):
            v.add("study.name", "letters, digits, '.', '_' and '-', at most 100")
        if not study.HasField("base_command"):
            v.add("study.base_command", "give the command every trial starts from")
        base_problems = Violations()
        check_trainable(base_problems, "study.base_command", study.base_command, self._limits)
        for item in base_problems.items:
            v.add(item.field, item.description)
        # Paths are checked against a base command that is sound, or not at all.
        params = (
            []
            if base_problems.items
            else space.parse(
                v, "study.search_space", space.command_json(study.base_command), study.search_space
            )
        )
        if study.objective not in pb.Objective.values():
            v.add("study.objective", f"unknown objective {study.objective}")
        if not 1 <= study.n_trials <= MAX_TRIALS:
            v.add("study.n_trials", f"between 1 and {MAX_TRIALS}")
        if not 0 <= study.max_parallel <= MAX_PARALLEL:
            v.add("study.max_parallel", f"between 0 (the live trainers' slots) and {MAX_PARALLEL}")
        if not (math.isfinite(study.timeout_seconds) and
                0 <= study.timeout_seconds <= MAX_TIMEOUT_SECONDS):  # fmt: skip
            v.add("study.timeout_seconds", f"between 0 (none) and {MAX_TIMEOUT_SECONDS:g}")
        if not 0 <= study.seed <= sampling.MAX_SEED:
            v.add("study.seed", f"between 0 and {sampling.MAX_SEED}")
        # plain_struct, not MessageToDict: that raises on NaN and infinity, which are the
        # client's mistakes to be named.
        sampler_args = plain_struct(study.sampler.args)
        scale = arguments.Scale(trials=MAX_TRIALS, epochs=self._limits.max_epochs)
        sampling.check_sampler(
            v, "study.sampler", study.sampler.name or "tpe", sampler_args, params, scale
        )
        pruning.check(
            v,
            "study.pruner",
            study.pruner.name or "none",
            plain_struct(study.pruner.args),
            study.base_command.n_epoch,
            scale,
            model.maximize(study),
        )
        if study.HasField("warm_start"):
            _check_warm(v, study)
        v.raise_if_any()
        _corners(v, study, params, self._limits)
        v.raise_if_any()
        return params

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
        async with self._checking:
            await asyncio.to_thread(self._check, study)
        await check_labels_have_images(
            self._images, "study.base_command.label_names", study.base_command.label_names
        )
        if study.warm_start.studies:
            await self._warm_sources_exist(study)
        names = [trial_name(study.name, k) for k in range(study.n_trials)]
        record = await self._studies.create(
            study.name, current().name, study.SerializeToString(), names
        )
        await self._driver.register_task(study)
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
        with self._hub.subscribe_all() as wake:
            record, trials = await self._studies.get(name)
            current = model.study_proto(record, trials)
            yield pb.WatchStudyResponse(snapshot=current)
            sent = {t.number: (t.state, t.epochs) for t in current.trials}
            best = current.best_trial.number if current.HasField("best_trial") else None
            wake.study_id = record.id
            while record.state != "DONE":
                wake.attempt_ids = frozenset(t.attempt_id for t in current.trials)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.event.wait(), _WATCH_POLL_SECONDS)
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


def _check_warm(v: Violations, study: pb.Study) -> None:
    warm, field = study.warm_start, "study.warm_start"
    if bool(warm.similar_tasks) == bool(warm.studies):
        v.add(field, "give similar_tasks (k) or studies (names), one of them")
    if not 0 <= warm.similar_tasks <= MAX_WARM_SOURCES:
        v.add(f"{field}.similar_tasks", f"between 1 and {MAX_WARM_SOURCES}")
    if len(warm.studies) > MAX_WARM_SOURCES:
        v.add(f"{field}.studies", f"at most {MAX_WARM_SOURCES} studies")
    for i, name in enumerate(warm.studies[:MAX_WARM_SOURCES]):
        if not NAME.fullmatch(name):
            v.add(f"{field}.studies[{i}]", "a study's name")
        elif name == study.name:
            v.add(f"{field}.studies[{i}]", "a study cannot warm-start from itself")
    if not -1 <= warm.zero_shot_trials <= study.n_trials:
        v.add(f"{field}.zero_shot_trials", "between -1 (none) and n_trials (0: the default)")
