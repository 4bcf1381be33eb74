"""A run's files as its trainer streams them (checkpoints and weights): each chunk
checked (trainers/checks.ArtifactReceiver) and written to PostgreSQL as it comes, under
the run's claim, so a file is never held whole; a file whose last chunk verifies is
swapped in at once."""

from __future__ import annotations

from gateway.store.work import Claimed, WorkStore
from gateway.trainers.checks import ArtifactReceiver, EpochChecker, TrainerLied
from metalearn.v1 import attempt_pb2, trainer_service_pb2


class RunUploads:
    def __init__(
        self, work: WorkStore, claimed: Claimed, limit: int, n_epoch: int, first_epoch: int
    ) -> None:
        self._work = work
        self._claimed = claimed
        self._limit = limit
        # At most one checkpoint an epoch (and one on SIGTERM), and one file of weights:
        # a trainer cannot make the gateway write the same file forever.
        self._most = {"checkpoint": n_epoch + 2, "weights": 1}
        self._written = {"checkpoint": 0, "weights": 0}
        self._last_epoch = {"checkpoint": first_epoch - 1, "weights": 0}
        self._open: dict[str, ArtifactReceiver] = {}
        # The verified weights, once their last chunk came.
        self.weights: attempt_pb2.ArtifactInfo | None = None

    async def accept(
        self, kind: str, chunk: trainer_service_pb2.ArtifactChunk, epochs: EpochChecker
    ) -> bool:
        """Checks and stores one chunk of a `kind` file; False when the claim is gone
        (cancelled, or reclaimed): the trainer is stopped. Raises TrainerLied."""
        claimed = self._claimed
        if kind not in self._open:
            self._written[kind] += 1
            if self._written[kind] > self._most[kind]:
                raise TrainerLied(f"sent {self._written[kind]} {kind} files")
            self._open[kind] = ArtifactReceiver(kind, self._limit, self._last_epoch[kind])
        receiver = self._open[kind]
        index = receiver.chunks
        last = receiver.accept(chunk, epochs)
        # A file of one chunk is stored and committed in one transaction.
        whole = (chunk.epoch, chunk.data) if index == 0 and last else None
        if whole is None and not await self._work.upload_chunk(
            claimed.id, claimed.fence, kind, chunk.epoch, index, chunk.data
        ):
            return False
        if not last:
            return True
        del self._open[kind]
        self._last_epoch[kind] = receiver.epoch
        # Its digest (verified by the receiver) is kept with it: a download sends it
        # first, without reading the file twice.
        digest = bytes.fromhex(chunk.sha256)
        if not await self._work.commit_upload(claimed.id, claimed.fence, kind, whole, digest):
            return False
        if kind == "weights":
            self.weights = attempt_pb2.ArtifactInfo(
                size_bytes=receiver.total, sha256=chunk.sha256.lower()
            )
        return True
