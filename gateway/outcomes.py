"""How a run's end is recorded: what its trainer said (trained, diverged, interrupted),
what its call's status means (the command's fault, the trainer's, nobody's), and what
happens to a trainer that lied. The dispatcher streams runs; this decides their fate.
"""

from __future__ import annotations

import logging

import grpc

from gateway.attempts import convert
from gateway.config import GatewayConfig
from gateway.store.trainers import Trainer, TrainerStore
from gateway.store.work import Claimed, WorkStore
from gateway.trainers.checks import EpochChecker, TrainerLied
from metalearn.outgoing import translate
from metalearn.v1 import attempt_pb2, trainer_service_pb2

log = logging.getLogger(__name__)
tpb = trainer_service_pb2

# The trainer's answer says the command itself is wrong: retrying cannot help.
_COMMAND_ERRORS = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.NOT_FOUND,
    }
)


def _refuses_checkpoint(err: grpc.aio.AioRpcError) -> bool:
    """Whether a trainer's answer refuses the run's resume checkpoint: INVALID_ARGUMENT
    with a field violation on `resume_checkpoint`, as `trainer.artifacts` raises it."""
    if err.code() != grpc.StatusCode.INVALID_ARGUMENT:
        return False
    return "resume_checkpoint" in translate(err).violations


class Outcomes:
    def __init__(self, config: GatewayConfig, work: WorkStore, trainers: TrainerStore) -> None:
        self._config = config
        self._work = work
        self._trainers = trainers

    async def lied(self, claimed: Claimed, trainer: Trainer, err: TrainerLied) -> None:
        """Never the command's fault: the run goes back to the queue as a crash of this
        trainer, which gets no work for a while."""
        reason = f"trainer {trainer.address} sent an impossible result: {err}"
        log.warning("%s: %s", claimed.name, reason)
        # Its principal's: the same token registered at another port stays benched.
        await self._trainers.quarantine(
            trainer.principal, trainer.address, str(err), self._config.quarantine_seconds
        )
        await self._work.requeue(
            claimed.id, claimed.fence, reason, self._config.max_restarts, failed=True
        )

    async def diverged(self, claimed: Claimed, reason: str) -> None:
        """Its loss went non-finite: the command's fate, not a trainer's fault."""
        await self._work.finish(claimed.id, claimed.fence, "FAILED", f"diverged: {reason[:500]}")

    async def gateway_error(self, claimed: Claimed, err: Exception) -> None:
        """A bug here, or the database went away mid-run: requeued, counted."""
        await self._work.requeue(
            claimed.id,
            claimed.fence,
            # Its type only: an exception's text may carry a database row.
            f"gateway error: {type(err).__name__}",
            self._config.max_restarts,
            failed=True,
        )

    async def failed_call(
        self, claimed: Claimed, trainer: Trainer, err: grpc.aio.AioRpcError, heard: bool
    ) -> None:
        address = trainer.address
        # Bounded: the message is the trainer's, stored and shown to users.
        code, details = err.code(), (err.details() or "")[:2000]
        if claimed.work == "train" and _refuses_checkpoint(err):
            await self._refused_checkpoint(claimed, address, details)
        elif (code == grpc.StatusCode.UNAVAILABLE and not heard) or (
            code == grpc.StatusCode.UNAUTHENTICATED
        ):
            # The trainer never answered (gone, or not up yet), or it does not know the
            # credential read a moment ago (it restarted and registered anew): no fault
            # of the command. It gets no more work until its next heartbeat.
            await self._trainers.mark_unreachable(address)
            await self._work.requeue(
                claimed.id, claimed.fence, details, self._config.max_restarts, failed=False
            )
        elif code in _COMMAND_ERRORS:
            await self._work.finish(claimed.id, claimed.fence, "FAILED", f"{code.name}: {details}")
        elif code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            # The trainer is full (another replica filled it first, or a run it is still
            # releasing): not the command's fault, and that trainer is left alone a while.
            await self._trainers.back_off(address, self._config.refusal_backoff_seconds)
            await self._work.requeue(
                claimed.id, claimed.fence, details, self._config.max_restarts, failed=False
            )
        else:
            reason = f"trainer {code.name}: {details}"
            status = await self._work.requeue(
                claimed.id, claimed.fence, reason, self._config.max_restarts, failed=True
            )
            log.warning("%s: %s; now %s", claimed.name, reason, status)

    async def _refused_checkpoint(self, claimed: Claimed, address: str, details: str) -> None:
        """The trainer refused the checkpoint it was to resume from (planted, unreadable,
        of another command or model): never the command's fault, and never made by an
        honest trainer. The principal whose trainer stored it is quarantined, the
        checkpoint and the epochs it stood for are dropped, and the run starts again from
        scratch, uncounted, on another trainer. (The gateway cannot read a checkpoint
        itself: a refusing trainer that lies frames the maker, at the cost of a run
        trained again; both hold trainer tokens, which only an admin gives.)"""
        reason = f"trainer {address} refused its checkpoint ({details[:500]}): trained again"
        stored_by = await self._work.restart_without_checkpoint(
            claimed.id, claimed.fence, f"restarted from scratch: {reason}"
        )
        log.warning("%s: %s (the checkpoint was stored by %r)", claimed.name, reason, stored_by)
        if stored_by:  # None: the lease is gone; '': a checkpoint of unknown origin
            await self._trainers.quarantine(
                stored_by,
                "",
                f"stored a checkpoint of {claimed.name} that trainer {address} refused:"
                f" {details[:300]}",
                self._config.quarantine_seconds,
            )

    async def ended_early(self, claimed: Claimed) -> None:
        """The stream ended without its last message: the trainer went away."""
        await self._work.requeue(
            claimed.id,
            claimed.fence,
            "the trainer's stream ended early",
            self._config.max_restarts,
            failed=True,
        )

    async def trained(
        self,
        claimed: Claimed,
        f: tpb.TrainFinished,
        epochs: EpochChecker,
        weights: attempt_pb2.ArtifactInfo | None,
        dataset: attempt_pb2.DatasetFingerprint | None,
    ) -> None:
        """Records how a run ended, as its trainer says (checked against what it sent)."""
        if f.outcome == tpb.TRAIN_OUTCOME_COMPLETED:
            if weights is None or not epochs.complete:
                raise TrainerLied(
                    f"finished after epoch {epochs.last} of {epochs.n_epoch}"
                    + ("" if weights is not None else " without verified weights")
                )
            await self._work.finish(
                claimed.id, claimed.fence, "TRAINED", rewrite=convert.trained(weights, dataset)
            )
        elif f.outcome == tpb.TRAIN_OUTCOME_DIVERGED:
            await self.diverged(claimed, f.reason)
        elif f.outcome == tpb.TRAIN_OUTCOME_INTERRUPTED:
            # The trainer is stopping and checkpointed: resume elsewhere.
            await self._work.requeue(
                claimed.id, claimed.fence, f.reason[:500], self._config.max_restarts, failed=False
            )
        else:
            raise TrainerLied(f"finished with unknown outcome {f.outcome}")
