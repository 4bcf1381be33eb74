"""Runs queued attempts on trainers: claims work, streams it, persists every event.

Each gateway replica runs one `Dispatcher`. It claims queued attempts for live trainers
with free slots (`FOR UPDATE SKIP LOCKED`, so replicas never take the same one), then
one task per attempt streams the trainer's events into PostgreSQL: each epoch its own
commit, fenced by the lease's token, before anyone hears of it. Leases are renewed while
the stream lives; a replica that dies stops renewing and another requeues its work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any

import grpc

from gateway.attempts import convert
from gateway.config import GatewayConfig
from gateway.epochs import EpochPath, Run
from gateway.events import Event, EventHub
from gateway.outcomes import Outcomes
from gateway.store.images import ImageStore
from gateway.store.trainers import Trainer, TrainerStore
from gateway.store.work import QUEUE, Claimed, WorkStore
from gateway.trainers.channel import trainer_channel
from gateway.trainers.checks import (
    Diverged,
    EpochChecker,
    TrainerLied,
    check_test_result,
)
from gateway.trainers.files import run_file
from gateway.trainers.uploads import RunUploads
from metalearn import errors
from metalearn.credentials import authorization
from metalearn.v1 import attempt_pb2, trainer_service_pb2, trainer_service_pb2_grpc
from metalearn.waiting import cancel_and_wait, wait_set

log = logging.getLogger(__name__)
tpb = trainer_service_pb2


class Dispatcher:
    """One replica's share of the work."""

    def __init__(
        self,
        config: GatewayConfig,
        work: WorkStore,
        trainers: TrainerStore,
        images: ImageStore,
        hub: EventHub,
        epochs: EpochPath,
    ) -> None:
        self._config = config
        # How each run's end is recorded (requeued, failed, trained, its trainer benched).
        self._outcomes = Outcomes(config, work, trainers)
        # Where each epoch a trainer sends goes: stored, told, judged by its watchers.
        self._epochs = epochs
        self._work = work
        self._trainers = trainers
        # Counts of a task's images: what a trainer's claims are checked against.
        self._images = images
        self._hub = hub
        self.gateway_id = f"gateway-{uuid.uuid4().hex[:12]}"
        self._running: dict[int, asyncio.Task[None]] = {}
        # What each running task holds, and where: handed back when this gateway stops.
        self._claims: dict[int, tuple[Claimed, Trainer]] = {}
        # Whether a run's trainer has answered at all (an event, or the first message).
        self._heard: dict[int, bool] = {}
        self._task: asyncio.Task[None] | None = None
        self._leases: asyncio.Task[None] | None = None
        # Set when the queue may have changed (or a slot here was freed): look now.
        self._queue_changed = asyncio.Event()

    def register(self, hub: EventHub) -> None:
        hub.listen(QUEUE, lambda _: self.wake())

    def wake(self) -> None:
        self._queue_changed.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="dispatcher")
        self._leases = asyncio.create_task(self._keep_leases(), name="dispatcher-leases")

    async def stop(self) -> None:
        """Stops claiming and hands its work back: running streams are cancelled and
        their attempts requeued at once, not counted as failures, so another replica
        (or this one restarted) resumes them from their checkpoints without waiting for
        a lease to lapse. If the database cannot be reached the leases lapse instead."""
        if self._task is not None:
            await cancel_and_wait(self._task)
        held = list(self._claims.values())
        # First ask each trainer to checkpoint at its epoch's end: a run that does ends
        # INTERRUPTED and is requeued by its own task, losing nothing.
        await asyncio.gather(*(self._interrupt(c, t) for c, t in held))
        running = list(self._running.values())
        if running:
            await asyncio.wait(running, timeout=self._config.handback_seconds)
        for task in list(self._running.values()):
            task.cancel()
        await asyncio.gather(*self._running.values(), return_exceptions=True)
        for claimed, _ in held:
            try:
                await self._work.requeue(
                    claimed.id,
                    claimed.fence,
                    "its gateway stopped: it resumes from its last checkpoint",
                    self._config.max_restarts,
                    failed=False,
                )
            except errors.DomainError as err:  # e.g. Unavailable: the lease will lapse
                log.warning("could not hand back %s (%s): its lease will lapse", claimed.name, err)
        if self._leases is not None:
            await cancel_and_wait(self._leases)  # renewed through the hand-back, not after

    async def _loop(self) -> None:
        while True:
            try:
                await self._dispatch()
            except asyncio.CancelledError:
                raise
            except errors.Unavailable as err:
                log.warning("dispatcher: database unavailable (%s)", err)
            except Exception:  # a bug must not stop dispatching: log it and go on
                log.exception("dispatcher")
            self._queue_changed.clear()
            await wait_set(self._queue_changed, self._config.dispatch_seconds)

    async def _keep_leases(self) -> None:
        """Renews this replica's leases every third of a lease and takes back the lapsed
        leases of replicas that stopped renewing, on a timer of its own: renewed from the
        dispatch loop, a slow pass (claims under load) delayed a renewal until its lease
        lapsed and another replica took the run back, counting a restart of a run that
        was alive. A lease is taken back only once it has lapsed by a third of ours too,
        so a replica a moment late is not mistaken for a dead one."""
        every = self._config.lease_seconds / 3
        while True:
            try:
                await self._work.renew(
                    self.gateway_id, list(self._running), self._config.lease_seconds
                )
                lost = await self._work.reclaim_expired(self._config.max_lost_runs, every)
                if lost:
                    log.warning("took back attempts %s: their gateway stopped renewing", lost)
                await self._work.forget_old_requests()
            except asyncio.CancelledError:
                raise
            except errors.Unavailable as err:
                log.warning("dispatcher: leases wait for the database (%s)", err)
            except Exception:  # a bug must not stop renewing: log it and go on
                log.exception("dispatcher: leases")
            await asyncio.sleep(every)

    async def _dispatch(self) -> None:
        # (free slots, capacity) of trainers whose claim found nothing: a trainer with no
        # more free slots and no less capacity would find nothing either (usually: the
        # queue is empty). Capacity counts since a wide attempt that waited too long
        # holds back trainers that could run it (`WorkStore.claim`), not smaller ones.
        found_nothing: list[tuple[int, int]] = []
        for trainer in await self._trainers.live_trainers(self._config.trainer_timeout_seconds):
            free = trainer.capacity - trainer.running
            while free > 0 and not any(
                free <= f and trainer.capacity >= c for f, c in found_nothing
            ):
                claimed = await self._work.claim(
                    self.gateway_id,
                    trainer.address,
                    self._config.lease_seconds,
                    free,
                    trainer.capacity,
                    self._config.wide_reserve_seconds,
                )
                if claimed is None:
                    found_nothing.append((free, trainer.capacity))
                    break
                free -= claimed.slots
                log.info(
                    "%s %s (id %s) on %s", claimed.work, claimed.name, claimed.id, trainer.address
                )
                task = asyncio.create_task(
                    self._run(claimed, trainer), name=f"attempt-{claimed.id}"
                )
                self._running[claimed.id] = task
                self._claims[claimed.id] = (claimed, trainer)

    async def _interrupt(self, claimed: Claimed, trainer: Trainer) -> None:
        """Asks `trainer` to checkpoint and end the run of `claimed` (best effort)."""
        if claimed.work != "train":
            return  # a test has nothing to keep: it is simply run again
        try:
            async with self._channel(trainer.address) as channel:
                stub = trainer_service_pb2_grpc.TrainerServiceStub(channel)
                await stub.Interrupt(
                    tpb.InterruptRequest(attempt_name=claimed.name),
                    metadata=authorization(trainer.credential),
                    timeout=2.0,
                )
        except grpc.aio.AioRpcError as err:  # gone, or older: the run is cancelled instead
            log.info("could not interrupt %s on %s: %s", claimed.name, trainer.address, err.code())

    def _channel(self, address: str) -> grpc.aio.Channel:
        return trainer_channel(self._config, address)

    async def _run(self, claimed: Claimed, trainer: Trainer) -> None:
        try:
            await self._run_and_settle(claimed, trainer)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # recording the end failed (the database went away)
            # Never an unretrieved task exception: the lease, no longer renewed, lapses
            # and any replica requeues the attempt.
            log.warning("%s: could not record how its run ended (%s)", claimed.name, err)
        finally:
            self._running.pop(claimed.id, None)
            self._claims.pop(claimed.id, None)
            self._heard.pop(claimed.id, None)
            # A slot is free: look at the queue now rather than at the next poll.
            self.wake()

    async def _run_and_settle(self, claimed: Claimed, trainer: Trainer) -> None:
        address = trainer.address
        try:
            async with self._channel(address) as channel:
                stub = trainer_service_pb2_grpc.TrainerServiceStub(channel)
                # The trainer obeys only calls that carry what it got at registration.
                metadata = authorization(trainer.credential)
                with (
                    self._hub.subscribe(claimed.id, statuses_only=True) as events,
                    self._hub.running_here(claimed.id),
                ):
                    runner = self._train if claimed.work == "train" else self._test
                    call_task = asyncio.create_task(runner(claimed, stub, metadata))
                    cancel_task = asyncio.create_task(self._until_cancelled(claimed.id, events))
                    try:
                        done, _ = await asyncio.wait(
                            {call_task, cancel_task}, return_when=asyncio.FIRST_COMPLETED
                        )
                    finally:  # also when this run is cancelled (the gateway stops)
                        for task in (call_task, cancel_task):
                            task.cancel()
                        await asyncio.gather(call_task, cancel_task, return_exceptions=True)
                    if call_task in done and not call_task.cancelled() and call_task.exception():
                        raise call_task.exception()  # type: ignore[misc]
        except asyncio.CancelledError:
            raise
        except grpc.aio.AioRpcError as err:
            heard = bool(self._heard.get(claimed.id))
            await self._outcomes.failed_call(claimed, trainer, err, heard=heard)
        except Diverged as err:
            await self._outcomes.diverged(claimed, str(err))
        except TrainerLied as err:
            await self._outcomes.lied(claimed, trainer, err)
        except Exception as err:
            log.exception("running %s", claimed.name)
            await self._outcomes.gateway_error(claimed, err)
        finally:
            with contextlib.suppress(Exception):  # best effort: the next upload drops them too
                await self._work.discard_uploads(claimed.id)

    async def _until_cancelled(self, attempt_id: int, events: asyncio.Queue[Event]) -> None:
        """Returns when the attempt is no longer ours to run (cancelled, or deleted)."""
        while True:
            event = await events.get()
            if event.kind not in ("status", "resync"):
                continue
            payload = event.payload
            if event.kind == "resync":  # the lost notification may be the cancellation
                try:
                    payload = await self._hub.status_of(attempt_id)
                except errors.NotFound:
                    payload = b""
            attempt = attempt_pb2.Attempt.FromString(payload) if payload else None
            if attempt is None or attempt.status == attempt_pb2.ATTEMPT_STATUS_CANCELLED:
                log.info("attempt %s cancelled: stopping its trainer", attempt_id)
                return

    async def _train(self, claimed: Claimed, stub: Any, metadata: Any) -> None:
        spec = convert.spec_of(claimed.stored)
        command = attempt_pb2.TrainCommand()
        command.CopyFrom(spec.training_commands)
        if not command.n_epoch:
            command.n_epoch = spec.n_epoch
        request = tpb.TrainerServiceTrainRequest(attempt_name=claimed.name, command=command)
        # Both read at once: each is a round trip before the trainer is called.
        checkpoint, available = await asyncio.gather(
            run_file(self._work, claimed, "checkpoint"),
            self._images.count(list(command.label_names)),
        )
        first_epoch = 1
        if checkpoint is not None:
            # The trainer reads the file itself, with ReadRunFile under this claim.
            first_epoch = checkpoint[0] + 1
            request.resume_checkpoint.CopyFrom(checkpoint[1])
        epochs = EpochChecker(command.n_epoch, first_epoch, tuple(command.label_names))
        uploads = RunUploads(
            self._work, claimed, self._config.max_artifact_bytes, command.n_epoch, first_epoch
        )
        started: tpb.TrainStarted | None = None
        path = await self._epochs.open(
            Run(
                claimed.id,
                claimed.name,
                claimed.fence,
                command.n_epoch,
                stop_when_hopeless=command.stop_when_hopeless,
                study_trial=bool(spec.trial.study),
            )
        )
        async for event in stub.Train(request, metadata=metadata):
            self._heard[claimed.id] = True
            kind = event.WhichOneof("event")
            if kind == "started":
                epochs.start(event.started, available)
                started = event.started
            elif kind == "epoch":
                epochs.epoch(event.epoch)
                try:
                    reason = await path.record(convert.epoch_record(event.epoch))
                except errors.FailedPrecondition:
                    return  # cancelled, or the lease went elsewhere: stop the trainer
                if reason is not None:
                    # Ending the stream stops the trainer within one batch; its epochs stay.
                    await self._work.finish(claimed.id, claimed.fence, "PRUNED", reason)
                    return
            elif kind in ("checkpoint", "weights"):
                if not await uploads.accept(kind, getattr(event, kind), epochs):
                    return  # the lease is gone (cancelled, or reclaimed): stop
            elif kind == "finished":
                await path.ending()
                dataset = started.dataset if started is not None else None
                await self._outcomes.trained(
                    claimed, event.finished, epochs, uploads.weights, dataset
                )
                return
        await self._outcomes.ended_early(claimed)

    async def _test(self, claimed: Claimed, stub: Any, metadata: Any) -> None:
        spec = convert.spec_of(claimed.stored)
        weights = await run_file(self._work, claimed, "weights")
        if weights is None:
            await self._work.finish(claimed.id, claimed.fence, "FAILED", "its weights are gone")
            return
        command = attempt_pb2.TestCommand()
        command.CopyFrom(spec.testing_commands)
        if not command.limit and spec.limit:
            command.limit = spec.limit
        # The trainer reads the file itself, with ReadRunFile under this claim.
        request = tpb.TrainerServiceTestRequest(
            attempt_name=claimed.name, command=command, weights=weights[1]
        )
        # The model's labels, in its order: those of the data it was trained on.
        labels = list(spec.dataset.label_names or spec.training_commands.label_names)
        available = len(set(command.ids)) if command.ids else await self._images.count(labels)
        loop = asyncio.get_running_loop()
        told = -1.0
        async for event in stub.Test(request, metadata=metadata):
            self._heard[claimed.id] = True
            if event.WhichOneof("event") == "progress":
                done, total = event.progress.done, event.progress.total
                if not 0 <= done <= total <= available:
                    raise TrainerLied(f"test progress {done}/{total} of {available} images")
                # Each becomes a notification: a flood of them is passed on 5 a second.
                if loop.time() - told >= 0.2 or done == total:
                    told = loop.time()
                    await self._work.progress(claimed.id, done, total)
            else:
                result = event.result
                check_test_result(result, labels, available)
                await self._work.finish(
                    claimed.id, claimed.fence, "COMPLETE", rewrite=convert.tested(result)
                )
                return
        await self._outcomes.ended_early(claimed)
