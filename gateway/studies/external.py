"""Trials run anywhere: an external study's trials are asked for by workers outside
metalearn (AskTrial, `metalearn agent`) and reported as runs of their code
(gateway/reporting/). Each trial's run is a reported attempt named `STUDY-k`, owned by
the study's owner and linked to its trial, so the epoch path judges it with the study's
pruner and its end is the trial's outcome, as for trials trained here.

A trial is stored under the study's lock (its number, values and the sampler's state),
then its run is started with a request id of its own (AIP-155): a gateway that dies
between the two leaves a trial without a run, which the driver's next pass starts
exactly once (gateway/studies/driver.py). A trial whose worker went silent is FAILED as
lost when its heartbeat lapses (gateway/reporting/lapses.py); its values are handed out
again as a new trial before the sampler is asked for anything new, as Optuna's
RetryFailedTrialCallback does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format
from optuna.trial import TrialState

from gateway import workers
from gateway.attempts import convert
from gateway.config import Limits
from gateway.store.reports import ReportStore
from gateway.store.requests import RequestKey
from gateway.store.studies import StudyRecord, StudyStore, TrialRecord
from gateway.studies import asking, model
from gateway.studies.checks import DEFAULT_TRIAL_HEARTBEAT
from metalearn import errors
from metalearn.v1 import attempt_pb2
from metalearn.v1 import study_service_pb2 as pb

# A worker told to wait asks again after this long.
WAIT_SECONDS = 2.0
# Asks that found the study changed under them are tried again this often, at most.
_TRIES = 5
MAX_WORKER_CHARS = 128


@dataclass(frozen=True)
class Asked:
    """AskTrial's answer: a trial (with its run), a wait, or the study done."""

    trial: pb.Trial | None = None
    wait_seconds: float = 0.0
    done: pb.Study | None = None


def _lost(outcome: model.Outcome) -> bool:
    return outcome.state == TrialState.FAIL and outcome.error.startswith("lost:")


class ExternalTrials:
    def __init__(self, studies: StudyStore, reports: ReportStore, limits: Limits) -> None:
        self._studies = studies
        self._reports = reports
        self._limits = limits

    async def start(
        self, record: StudyRecord, study: pb.Study, number: int, values: dict[str, Any],
        worker: str = "",
    ) -> int | None:  # fmt: skip
        """Starts trial `number`'s run once (a retry replays it); its attempt id, or None
        when it could not start (the trial then counts as failed)."""
        external = study.external
        heartbeat = external.heartbeat_seconds or DEFAULT_TRIAL_HEARTBEAT
        spec = attempt_pb2.Attempt(n_epoch=external.n_epoch)
        spec.tags.update({"study": record.name, "trial": str(number)})
        if worker:
            spec.tags["worker"] = worker
        spec.trial.study, spec.trial.number = record.name, number
        json_format.ParseDict(values, spec.trial.params)
        json_format.ParseDict(values, spec.reported.params)
        spec.reported.task.CopyFrom(external.task)
        spec.reported.heartbeat_seconds = heartbeat
        spec.reported.client = f"study {record.name}"
        wire, doc = convert.stored_forms(spec)
        try:
            attempt_id = await self._reports.start(
                model.trial_name(record.name, number), wire, doc, record.owner, heartbeat,
                RequestKey(record.owner, f"study-{record.id}-trial-{number}", "start-run"),
            )  # fmt: skip
        except errors.AlreadyExists as err:
            await self._studies.trial_refused(record.id, number, f"AlreadyExists: {err}")
            return None
        await self._studies.trial_queued(record.id, number, attempt_id)
        return attempt_id

    async def ask(
        self, name: str, scope: str | None, worker: str, request: RequestKey | None
    ) -> Asked:
        """The next trial of study `name` for a worker of `scope` (None: an admin)."""
        if request is not None:
            done = await self._reports.asked(request)
            if done is not None:
                return Asked(trial=await self._trial_of(name, done))
        for _ in range(_TRIES):
            record, trials = await self._studies.get(name)
            if scope is not None and record.owner != scope:
                raise errors.PermissionDenied(f"study {name!r} belongs to another owner")
            study = model.spec_of(record)
            if not study.HasField("external"):
                raise errors.FailedPrecondition(
                    f"study {name!r} runs its trials on metalearn's trainers: nothing to ask"
                )
            asked = await self._ask_once(record, study, trials, worker)
            if asked is None:
                continue  # another ask stored a trial meanwhile: ask from where it stands
            if asked.trial is not None and request is not None:
                await self._reports.keep(request, asked.trial.attempt_id)
            return asked
        return Asked(wait_seconds=WAIT_SECONDS)

    async def _ask_once(
        self, record: StudyRecord, study: pb.Study, trials: list[TrialRecord], worker: str
    ) -> Asked | None:
        outcomes = [model.outcome(study, t) for t in trials]
        running = sum(o.state == TrialState.RUNNING for o in outcomes)
        if (
            record.state != "RUNNING"
            or record.trials_made >= study.n_trials
            or model.timed_out(study, record)
        ):
            if running:
                return Asked(wait_seconds=WAIT_SECONDS)
            return Asked(done=model.study_proto(record, trials))
        if study.max_parallel and running >= study.max_parallel:
            return Asked(wait_seconds=WAIT_SECONDS)
        lost = next(
            (t for t, o in zip(trials, outcomes, strict=True)
             if _lost(o) and not t.sampler_state.get("asked_again")),
            None,
        )  # fmt: skip
        if lost is not None:
            proposed = asking.Proposed(
                record.trials_made, dict(lost.params), dict(lost.internal),
                {"again_of": lost.number}, dict(record.sampler_state), "", None,
            )  # fmt: skip
        else:
            if study.HasField("warm_start") and record.warm_plan is None:
                # The driver makes the plan (its task's profile first): ask again soon.
                return Asked(wait_seconds=WAIT_SECONDS)
            found = await workers.run(
                asking.propose, self._limits, record, study, trials, record.warm_plan, 1,
                asking.ASK_SECONDS,
            )  # fmt: skip
            proposed = found[0]
        async with self._studies.locked(record.id, wait=True) as locked:
            if locked is None:
                return None
            now = locked.study
            if now.trials_made != record.trials_made or now.state != record.state:
                return None
            await locked.add_trial(proposed.number, proposed.values, proposed.internal,
                                   proposed.trial_state, proposed.error,
                                   proposed.seeded_by)  # fmt: skip
            await locked.update(
                trials_made=now.trials_made + 1,
                sampler_state=proposed.study_state,
                state=now.state,
                stop_reason=now.stop_reason,
            )
        if lost is not None:
            await self._studies.merge_trial_state(record.id, lost.number, {"asked_again": True})
        attempt_id = await self.start(record, study, proposed.number, proposed.values, worker)
        if attempt_id is None:
            return None
        return Asked(trial=await self._trial_of(record.name, attempt_id))

    async def _trial_of(self, name: str, attempt_id: int) -> pb.Trial:
        record, trials = await self._studies.get(name)
        study = model.spec_of(record)
        for trial in trials:
            if trial.attempt_id == attempt_id:
                return model.trial_proto(study, trial)
        raise errors.NotFound(f"attempt id {attempt_id} is no trial of study {name!r}")
