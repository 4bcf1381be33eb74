"""Advances studies: asks for trials as slots free, queues them, ends studies.

Woken by every queue notification (a run ended, an attempt was queued or cancelled)
and at least every `study_tick_seconds`. A study is advanced under its row lock
(`FOR UPDATE SKIP LOCKED`): of several replicas one advances it and the others skip
it. Asking and queueing are two steps: a trial is asked and committed with its values,
then queued with a request id of its own (AIP-155), so a replica that dies between the
two leaves a trial that the next pass queues exactly once. The sampler is asked before
the lock is taken, in a worker process (asking.py), for about a second of asks a pass;
what it asked is stored under the lock only if the study still stands where it was
asked from (another replica's pass may have stored trials meanwhile).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from google.protobuf import json_format
from optuna.trial import TrialState

from gateway import workers
from gateway.attempts import convert
from gateway.config import GatewayConfig
from gateway.events import EventHub
from gateway.store import Rewrite, Stored
from gateway.store.database import DatabaseDown
from gateway.store.requests import RequestKey
from gateway.store.studies import Locked, StudyStore
from gateway.store.tasks import TASKS
from gateway.store.trainers import TrainerStore
from gateway.store.work import QUEUE, WorkStore
from gateway.studies import asking, model
from gateway.studies.checks import parameters, trial_command
from learning.studies import space

if TYPE_CHECKING:
    from gateway.studies.external import ExternalTrials
    from gateway.tasks.warm import WarmStarter
from metalearn import errors
from metalearn.v1 import attempt_pb2
from metalearn.v1 import study_service_pb2 as pb
from metalearn.waiting import wait_set

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ahead:
    """What a pass reads and asks before it takes the study's lock."""

    slots: int
    plan: dict[str, Any] | None
    # Trials asked from an unlocked read, stored only if the study still stands where
    # they were asked from: `made` trials and this sampler state.
    made: int = 0
    sampler_state: dict[str, Any] = field(default_factory=dict)
    proposed: list[asking.Proposed] = field(default_factory=list)


trial_name = model.trial_name


def _rewrite(
    command: attempt_pb2.TrainCommand,
    study: str,
    number: int,
    values: dict[str, Any],
    seeded_by: int | None,
) -> Rewrite:
    def rewrite(stored: Stored) -> tuple[bytes, dict[str, Any]]:
        spec = attempt_pb2.Attempt(n_epoch=command.n_epoch)
        spec.training_commands.CopyFrom(command)
        spec.tags.update({"study": study, "trial": str(number)})
        spec.trial.study, spec.trial.number = study, number
        if seeded_by is not None:
            spec.trial.seeded_by_attempt_id = seeded_by
        json_format.ParseDict(values, spec.trial.params)
        return convert.stored_forms(spec)

    return rewrite


class StudyDriver:
    """One per gateway; any number of replicas may run one."""

    def __init__(
        self,
        config: GatewayConfig,
        studies: StudyStore,
        work: WorkStore,
        trainers: TrainerStore,
        warm: WarmStarter | None = None,
        external: ExternalTrials | None = None,
    ) -> None:
        self._config = config
        self._external = external
        self._studies = studies
        self._work = work
        self._trainers = trainers
        self._warm = warm
        # Set when a study may move on (each waiter here clears its own event).
        self._changed = asyncio.Event()

    def register(self, hub: EventHub) -> None:
        """A run ended, an attempt was queued or cancelled, a slot may be free (the
        queue); a task was profiled, which a warm start may have waited for (tasks)."""
        hub.listen(QUEUE, lambda _: self.wake())
        hub.listen(TASKS, lambda _: self.wake())

    def wake(self) -> None:
        self._changed.set()

    async def register_task(self, study: pb.Study, owner: str) -> None:
        """A new study's task is profiled now, not when its first trial ends: a warm
        start waits for that profile (an external study's declared task is made now)."""
        if self._warm is None:
            return
        try:
            await self._warm.register(study, owner)
        except errors.DomainError as err:  # the study is sound; its profile can wait
            log.warning("study %s: its task cannot be profiled yet: %s", study.name, err)

    async def run(self) -> None:
        while True:
            self._changed.clear()
            try:
                for study_id in await self._studies.active():
                    await self.advance(study_id)
            except (DatabaseDown, errors.Unavailable) as err:
                log.warning("studies wait for the database: %s", err)
            except Exception:
                log.exception("advancing studies")
            await wait_set(self._changed, self._config.study_tick_seconds)

    async def _slots(self, study: pb.Study) -> int:
        if study.max_parallel:
            return study.max_parallel
        live = await self._trainers.live_trainers(self._config.trainer_timeout_seconds)
        return max(1, sum(t.capacity for t in live))

    async def advance(self, study_id: int, *, wait: bool = False) -> None:
        """Asks what the study's budget and slots allow, queues what was asked, and ends
        the study when nothing runs and nothing more will be asked. Skips a study another
        replica is advancing, unless `wait` (a caller that needs this pass's outcome)."""
        # What needs other connections (the trainers' slots, a warm start's plan) is read
        # before the study's lock is taken: a transaction held open while it awaits
        # another connection deadlocks, unseen by PostgreSQL, against any lock request
        # queued between the two (a migration's ALTER during a rolling restart). The
        # sampler is asked then too, in a worker process: seconds of CPU are neither
        # spent on the event loop nor under a lock that StopStudy waits for.
        ahead = await self._ahead(study_id)
        async with self._studies.locked(study_id, wait=wait) as locked:
            if locked is None:
                return
            record = locked.study
            study = model.spec_of(record)
            params = parameters(study)
            best_to_test = await self._advance_locked(locked, study, ahead)
        # Queued under the lock again (waiting for it): a study stopped meanwhile queues
        # nothing more, and StopStudy, which takes the same lock, sees every trial queued.
        async with self._studies.locked(study_id, wait=True) as again:
            stopped = again is None or again.study.state != "RUNNING"
            for number, values, seeded_by in await self._studies.unqueued(study_id):
                if stopped:
                    await self._studies.trial_refused(
                        study_id, number, "the study stopped before this trial was queued"
                    )
                else:
                    await self._queue(record.id, record.name, record.owner, study, params,
                                      number, values, seeded_by)  # fmt: skip
        if best_to_test is not None:
            try:
                await self._work.queue_test(
                    best_to_test,
                    None,
                    None,
                    RequestKey(record.owner, f"study-{study_id}-test", "test"),
                )
            except errors.DomainError as err:
                log.warning("study %s: testing its best trial: %s", record.name, err)

    async def _ahead(self, study_id: int) -> Ahead:
        """The slots a study may fill now, its warm start's plan (None: not made, or not
        wanted) and the trials they let it ask, from reads that take no lock."""
        record = await self._studies.running(study_id)
        if record is None:
            return Ahead(1, None)
        study = model.spec_of(record)
        plan = record.warm_plan
        wanted = record.state == "RUNNING" and plan is None and study.HasField("warm_start")
        if wanted and self._warm is not None:
            plan = await self._warm.plan(study, parameters(study), record.owner)
        ahead = Ahead(await self._slots(study), plan, record.trials_made,
                      dict(record.sampler_state))  # fmt: skip
        if (
            record.state != "RUNNING"
            or study.HasField("external")  # its workers ask for its trials
            or self._waiting(study, plan)
            or model.timed_out(study, record)
            or record.trials_made >= study.n_trials
        ):
            return ahead
        trials = await self._studies.trials(study_id)
        if len(trials) != record.trials_made:  # a trial was added between the two reads
            return ahead
        running = sum(model.outcome(study, t).state == TrialState.RUNNING for t in trials)
        count = min(ahead.slots - running, study.n_trials - record.trials_made)
        if count <= 0:
            return ahead
        proposed = await workers.run(asking.propose, self._config.limits, record, study,
                                     trials, plan, count, asking.ASK_SECONDS)  # fmt: skip
        return replace(ahead, proposed=proposed)

    def _waiting(self, study: pb.Study, plan: dict[str, Any] | None) -> bool:
        """A warm start waits for its task's profile before the first trial."""
        return plan is None and study.HasField("warm_start") and self._warm is not None

    async def _advance_locked(self, locked: Locked, study: pb.Study, ahead: Ahead) -> str | None:
        """Stores the trials asked ahead and updates the study row, under its lock;
        returns the best trial's attempt when the study just ended and tests its best."""
        record = locked.study
        trials = await locked.trials()
        state, reason = record.state, record.stop_reason
        if state == "RUNNING" and model.timed_out(study, record):
            state, reason = "STOPPING", f"time limit of {study.timeout_seconds:g} s reached"
        made = record.trials_made
        sampler_state = dict(record.sampler_state)
        running = sum(model.outcome(study, t).state == TrialState.RUNNING for t in trials)
        plan = record.warm_plan
        if state == "RUNNING" and plan is None and study.HasField("warm_start") and self._warm:
            plan = ahead.plan
        # An external study's trials are asked for by its workers (gateway/studies/external.py).
        if state == "RUNNING" and not self._waiting(study, plan) and not study.HasField("external"):
            wanted = max(min(ahead.slots - running, study.n_trials - made), 0)
            # Asked from where the study stood before the lock: stale if another pass
            # (a replica's) stored trials meanwhile; that one asked what was wanted.
            fresh = ahead.made == made and ahead.sampler_state == sampler_state
            for proposed in ahead.proposed[:wanted] if fresh else []:
                await locked.add_trial(proposed.number, proposed.values, proposed.internal,
                                       proposed.trial_state, proposed.error,
                                       proposed.seeded_by)  # fmt: skip
                sampler_state = proposed.study_state
                running += 0 if proposed.error else 1
                made += 1
            if made - record.trials_made < wanted:
                self.wake()  # the rest is asked by the next pass, from what this one stored
        best_to_test = None
        if running == 0 and (state == "STOPPING" or made >= study.n_trials):
            state = "DONE"
            top = model.best(study, trials)
            if study.test_best and top is not None and top.attempt_name:
                best_to_test = top.attempt_name
        await locked.update(
            trials_made=made,
            sampler_state=sampler_state,
            state=state,
            stop_reason=reason,
            warm_plan=plan if record.warm_plan is None else None,
        )
        return best_to_test

    async def _queue(
        self,
        study_id: int,
        study_name: str,
        owner: str,
        study: pb.Study,
        params: Sequence[space.Parameter],
        number: int,
        values: dict[str, Any],
        seeded_by: int | None = None,
    ) -> None:
        """Queues an asked trial once (a retry of its request id is a replay); an external
        study's trial is started as a run its worker reports instead."""
        if study.HasField("external"):
            if self._external is not None:
                record = await self._studies.running(study_id)
                if record is not None:
                    await self._external.start(record, study, number, values)
            return
        name = trial_name(study_name, number)
        try:
            command = trial_command(study, params, values)
            attempt_id = await self._work.queue_train(
                name,
                _rewrite(command, study_name, number, values, seeded_by),
                owner,
                None,
                RequestKey(owner, f"study-{study_id}-trial-{number}", "train"),
                create_only=True,
            )
        except (errors.AlreadyExists, errors.FailedPrecondition, errors.InvalidArgument) as err:
            await self._studies.trial_refused(study_id, number, f"{type(err).__name__}: {err}")
            return
        await self._studies.trial_queued(study_id, number, attempt_id)
