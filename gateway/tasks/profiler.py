"""Has trainers profile tasks: a new kind of work beside train and test.

Woken when a task is added and when anything is queued (a new task may come with it),
and at least every `study_tick_seconds`. Each pass first looks for task keys that
attempts use and no task row has yet (trained, studied or imported) and for tasks whose
labels' images changed, and registers them (PENDING), and declares the tasks of reported
runs that have none (gateway/tasks/declaring.py); then it claims PENDING tasks one
at a time (`FOR UPDATE SKIP LOCKED`, held for a lease, so replicas share the work and a
replica that dies only delays one) and calls a live trainer's `ProfileTask`.

A profile is a few seconds of a trainer's CPU, so it is not queued behind training: it
goes to a live trainer at once, and one that is busy profiling says RESOURCE_EXHAUSTED
(then another is tried, or the task waits a moment). A task declared by reported runs
with a sample of its images is profiled the same way, the sample sent with the call.

While no task waits, a READY task whose profile lacks features trainers compute now (it
was profiled before they did) is profiled again, one at a time; it keeps its old profile
until the new one is stored, and if no trainer can make one.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from dataclasses import dataclass

import grpc
from google.protobuf import json_format

from gateway.config import GatewayConfig
from gateway.events import EventHub
from gateway.store.database import DatabaseDown
from gateway.store.tasks import TASKS, TaskRecord, TaskStore
from gateway.store.trainers import Trainer, TrainerStore
from gateway.store.work import QUEUE
from gateway.tasks import declaring
from gateway.trainers.channel import trainer_channel
from learning.tasks import declared
from metalearn import errors
from metalearn.credentials import authorization
from metalearn.v1 import attempt_pb2, task_pb2, trainer_service_pb2, trainer_service_pb2_grpc
from metalearn.waiting import wait_set

log = logging.getLogger(__name__)

# A claimed task is held this long; a profile takes seconds.
LEASE_SECONDS = 120.0
# A trainer gets this long for one profile.
CALL_SECONDS = 90.0
# Tries (trainer gone, busy, unreachable) before a task is FAILED.
MAX_TRIES = 8
# A READY task profiled again (its profile lacked features) is not tried again for this
# long, whether it worked (a trainer that computes fewer features would else be asked
# again at once) or not.
REFRESH_HOLD_SECONDS = 3600.0
SWEEP_LIMIT = 50
# The sweep reads every attempt's task key: at most once a second, however busy the queue.
SWEEP_EVERY_SECONDS = 1.0
# Codes that are the task's fault: FAILED at once, no other trainer would do better.
_TASK_FAULTS = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.NOT_FOUND,
}


# What a profile may hold (the names task.proto documents; a newer trainer may send
# fewer of them, never others).
FEATURES = declared.PROFILE_FEATURES
_MAX_FEATURE = declared.MAX_FEATURE


def profile_problem(profile: task_pb2.TaskProfile) -> str:
    """Why a trainer's profile cannot be stored ('' when it can)."""
    unknown = sorted(set(profile.features) - FEATURES)
    if unknown:
        return f"unknown features {unknown[:5]}"
    if len(profile.features) < len(FEATURES) // 2:
        return f"{len(profile.features)} features, too few to compare tasks by"
    for name, value in profile.features.items():
        if not math.isfinite(value) or abs(value) > _MAX_FEATURE:
            return f"feature {name} = {value!r}"
    if profile.images < 0 or profile.classes < 0 or len(profile.input_shape) > 4:
        return "a profile with impossible sizes"
    if not math.isfinite(profile.seconds) or profile.seconds < 0:
        return f"seconds = {profile.seconds!r}"
    return ""


def key_of(record: TaskRecord) -> task_pb2.TaskKey:
    key = task_pb2.TaskKey(label_names=record.label_names)
    for op in record.image_ops:
        json_format.ParseDict(op, key.image_ops.add())
    return key


class TaskProfiler:
    """One per gateway; any number of replicas may run one."""

    def __init__(self, config: GatewayConfig, tasks: TaskStore, trainers: TrainerStore) -> None:
        self._config = config
        self._tasks = tasks
        self._trainers = trainers
        # Set when a task was added or profiled, or an attempt queued (a new task may
        # need a profile).
        self._changed = asyncio.Event()
        self._swept_at = -math.inf
        self._stale_checked_at = -math.inf  # when a search for a stale profile found none

    def register(self, hub: EventHub) -> None:
        hub.listen(QUEUE, lambda _: self.wake())
        hub.listen(TASKS, lambda _: self.wake())

    def wake(self) -> None:
        self._changed.set()

    async def run(self) -> None:
        while True:
            self._changed.clear()
            try:
                if time.monotonic() - self._swept_at >= SWEEP_EVERY_SECONDS:
                    self._swept_at = time.monotonic()
                    await self.sweep()
                # New tasks first; then, while there are none, profiles made before
                # trainers computed every feature, one at a time.
                while await self.profile_one() or await self.refresh_one():
                    pass
            except (DatabaseDown, errors.Unavailable) as err:
                log.warning("task profiles wait for the database: %s", err)
            except Exception:
                log.exception("profiling tasks")
            await wait_set(self._changed, self._config.study_tick_seconds)

    async def sweep(self) -> None:
        """Registers the tasks that attempts use and have no row yet, and new versions of
        tasks whose images changed."""
        for labels, ops in await self._tasks.unseen(SWEEP_LIMIT):
            try:
                await self._tasks.ensure(labels, ops)
            except errors.FailedPrecondition as err:
                await self._tasks.unprofilable(labels, ops, str(err))
        for owner, found in await self._tasks.undeclared(SWEEP_LIMIT):
            task = attempt_pb2.DeclaredTask()
            json_format.ParseDict(found, task, ignore_unknown_fields=True)
            await declaring.declare(self._tasks, owner, task)

    async def profile_one(self) -> bool:
        """Profiles one PENDING task; False when none could be tried now."""
        live = await self._trainers.live_trainers(self._config.trainer_timeout_seconds)
        if not live:
            return False
        task = await self._tasks.claim(LEASE_SECONDS)
        if task is None:
            return False
        if task.tries > MAX_TRIES:  # claimed and lost that often (a replica died each time?)
            await self._tasks.failed(task.id, f"given up after {MAX_TRIES} tries: {task.error}")
            return True
        found = await self._ask(task, live)
        if isinstance(found, _Fault):
            await self._tasks.failed(task.id, found.error)
            return True
        if isinstance(found, tuple):
            profile, features = found
            await self._tasks.profiled(task.id, profile.SerializeToString(), features)
            return True
        if task.tries >= MAX_TRIES:
            await self._tasks.failed(task.id, f"no trainer could profile it: {found}")
        else:
            await self._tasks.retry_later(task.id, min(2.0 * task.tries, 30.0), found)
        return False

    async def refresh_one(self) -> bool:
        """Profiles again one READY task whose profile lacks features trainers compute now
        (it was made before they did: the distance and the learned ranking would read it
        as missing them); it keeps its old profile until then, and if that fails.
        False when there was none, or no trainer could do it now."""
        if time.monotonic() - self._stale_checked_at < self._config.stale_profile_check_seconds:
            return False
        live = await self._trainers.live_trainers(self._config.trainer_timeout_seconds)
        if not live:
            return False
        task = await self._tasks.claim_stale(sorted(FEATURES), LEASE_SECONDS)
        if task is None:
            self._stale_checked_at = time.monotonic()
            return False
        found = await self._ask(task, live)
        if isinstance(found, tuple):
            profile, features = found
            await self._tasks.refreshed(
                task.id, profile.SerializeToString(), features, REFRESH_HOLD_SECONDS
            )
            return True
        reason = found.error if isinstance(found, _Fault) else found
        log.warning("task %s keeps its profile: %s", task.fingerprint[:12], reason)
        await self._tasks.keep_stale(task.id, REFRESH_HOLD_SECONDS)
        return isinstance(found, _Fault)

    async def _ask(
        self, task: TaskRecord, live: list[Trainer]
    ) -> tuple[task_pb2.TaskProfile, dict[str, float]] | _Fault | str:
        """The task's profile and the features to store, from the first live trainer
        that gives a sound one; a `_Fault` when the task itself is at fault (no trainer
        would do better); else why none did."""
        request = trainer_service_pb2.TrainerServiceProfileTaskRequest(task=key_of(task))
        if task.source == "SAMPLE":
            sample = await self._tasks.sample(task.id)
            if sample is None:  # deleted meanwhile
                return _Fault("its sample is gone")
            request.sample.ParseFromString(sample)
        # Idle trainers first, in random order among equals, so replicas spread out.
        random.shuffle(live)
        live.sort(key=lambda t: t.running / max(t.capacity, 1))
        last = ""
        for trainer in live:
            await self._tasks.assign(task.id, trainer.address, CALL_SECONDS + 30)
            async with trainer_channel(self._config, trainer.address) as channel:
                stub = trainer_service_pb2_grpc.TrainerServiceStub(channel)
                try:
                    response = await stub.ProfileTask(
                        request, timeout=CALL_SECONDS, metadata=authorization(trainer.credential)
                    )
                except grpc.aio.AioRpcError as err:
                    if err.code() in _TASK_FAULTS:
                        return _Fault(f"{err.code().name}: {err.details()}")
                    last = f"{trainer.address}: {err.code().name}: {err.details()}"
                    continue
            profile = response.profile
            if problem := profile_problem(profile):
                # Never stored (a feature that is not finite would reach the database and
                # every distance): an honest trainer rounds what is not finite to 0, so
                # this one is wrong, and another trainer is asked.
                last = f"{trainer.address}: an impossible profile: {problem}"
                log.warning("task %s: %s", task.fingerprint[:12], last)
                continue
            features = dict(profile.features)
            if task.source == "SAMPLE" and task.features and "log_images" in task.features:
                # A sample's size is not its task's: the declared training set's is.
                features["log_images"] = profile.features["log_images"] = float(
                    task.features["log_images"]
                )
            log.info(
                "task %s profiled by %s in %.1f s",
                task.fingerprint[:12],
                trainer.address,
                profile.seconds,
            )
            return profile, features
        return last


@dataclass(frozen=True)
class _Fault:
    """The task's own fault: no trainer would profile it."""

    error: str
