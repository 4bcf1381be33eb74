"""TrainerRegistryService: trainer daemons announce themselves, send heartbeats, and read
the stored files their runs start from."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

from google.protobuf import json_format

from gateway.auth import Role, current
from gateway.config import GatewayConfig
from gateway.slots import Slots
from gateway.store.run_files import RunFileStore
from gateway.store.trainers import TrainerStore
from gateway.store.work import WorkStore
from metalearn.errors import NotFound, Violations
from metalearn.status import translate_errors
from metalearn.v1 import trainer_registry_service_pb2 as pb
from metalearn.v1 import trainer_registry_service_pb2_grpc, trainer_service_pb2

# The store's name of each kind of file a run reads.
_KINDS = {
    trainer_service_pb2.RUN_FILE_KIND_CHECKPOINT: "checkpoint",
    trainer_service_pb2.RUN_FILE_KIND_WEIGHTS: "weights",
}
# Files streamed to trainers at once, apart from users' downloads (which cannot starve
# them). A trainer reads one only as a run starts; one more waits its turn this long.
RUN_FILE_READS = 4
RUN_FILE_WAIT_SECONDS = 60.0

# HOST:PORT, where HOST is a name, an IPv4 address or a bracketed IPv6 one.
ADDRESS_RE = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]{1,253}):[0-9]{1,5}")


def _check_address(v: Violations, address: str) -> None:
    if not ADDRESS_RE.fullmatch(address) or not 0 < int(address.rsplit(":", 1)[-1]) < 65536:
        v.add("address", f"{address[:64]!r} is not HOST:PORT")


class TrainerRegistryServicer(trainer_registry_service_pb2_grpc.TrainerRegistryServiceServicer):
    """Keeps the `trainers` table current; the dispatcher reads it."""

    def __init__(
        self, trainers: TrainerStore, config: GatewayConfig, work: WorkStore, files: RunFileStore
    ) -> None:
        self._trainers = trainers
        self._config = config
        self._work = work
        self._files = files
        self.reads = Slots("run-file reads", RUN_FILE_READS, RUN_FILE_WAIT_SECONDS)

    @translate_errors
    async def RegisterTrainer(
        self, request: pb.RegisterTrainerRequest, context: Any
    ) -> pb.RegisterTrainerResponse:
        v = Violations()
        _check_address(v, request.address)
        if not 1 <= request.capacity <= 1024:
            v.add("capacity", "must be between 1 and 1024")
        if len(request.devices) > 64:
            v.add("devices", "at most 64")
        if len(request.version) > 64:
            v.add("version", "at most 64 characters")
        v.raise_if_any()
        devices = [json_format.MessageToDict(d) for d in request.devices]
        # A fresh credential each time: the trainer then obeys calls bearing it only. It
        # is made from a salt and a key outside the database, never stored itself.
        credential = await self._trainers.register(
            request.address,
            request.capacity,
            devices,
            request.version,
            current().name,
            self._config.trainer_timeout_seconds,
        )
        return pb.RegisterTrainerResponse(
            heartbeat_seconds=self._config.heartbeat_seconds, gateway_credential=credential
        )

    @translate_errors
    async def Heartbeat(self, request: pb.HeartbeatRequest, context: Any) -> pb.HeartbeatResponse:
        v = Violations()
        _check_address(v, request.address)
        if not 0 <= request.busy_slots <= 1024:
            v.add("busy_slots", "must be between 0 and 1024")
        v.raise_if_any()
        if not await self._trainers.heartbeat(request.address, request.busy_slots, current().name):
            raise NotFound(
                f"no trainer registered at {request.address}, or its credential is of a"
                " key this gateway does not hold: register again"
            )
        return pb.HeartbeatResponse()

    @translate_errors
    async def ReadRunFile(
        self, request: pb.ReadRunFileRequest, context: Any
    ) -> AsyncIterator[pb.ReadRunFileResponse]:
        v = Violations()
        if request.attempt_id <= 0:
            v.add("attempt_id", f"must be positive, got {request.attempt_id}")
        if request.fence <= 0:
            v.add("fence", f"must be positive, got {request.fence}")
        kind = _KINDS.get(request.kind)
        if kind is None:
            v.add("kind", "must be RUN_FILE_KIND_CHECKPOINT or RUN_FILE_KIND_WEIGHTS")
        v.raise_if_any()
        assert kind is not None
        caller = current()
        # An admin may do everything; a trainer token reads its own principal's runs only.
        principal = None if caller.role is Role.ADMIN else caller.name
        # Streamed from the database a piece at a time (1 MiB): a read holds one piece,
        # never the file (up to `max_artifact_bytes`), and only so many run at once.
        async with self.reads.slot():
            # One answer for a run that is not the caller's, not held under this claim,
            # or without such a file: nothing is learnt of others' work.
            missing = NotFound(
                f"no {kind} file of a run that a trainer of yours holds as attempt"
                f" {request.attempt_id}, claim {request.fence}"
            )
            if not await self._files.held(principal, request.attempt_id, request.fence, kind):
                raise missing
            layout = await self._work.artifact_layout(request.attempt_id, kind)
            if layout is None:
                raise missing
            async for piece in self._work.read_artifact(layout):
                yield pb.ReadRunFileResponse(data=piece)
