"""TrainerRegistryService: trainer daemons announce themselves and send heartbeats."""

from __future__ import annotations

import re
from typing import Any

from google.protobuf import json_format

from gateway.auth import current
from gateway.config import GatewayConfig
from gateway.store.trainers import TrainerStore
from metalearn.errors import NotFound, Violations
from metalearn.status import translate_errors
from metalearn.v1 import trainer_registry_service_pb2 as pb
from metalearn.v1 import trainer_registry_service_pb2_grpc

# HOST:PORT, where HOST is a name, an IPv4 address or a bracketed IPv6 one.
ADDRESS_RE = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]{1,253}):[0-9]{1,5}")


def _check_address(v: Violations, address: str) -> None:
    if not ADDRESS_RE.fullmatch(address) or not 0 < int(address.rsplit(":", 1)[-1]) < 65536:
        v.add("address", f"{address[:64]!r} is not HOST:PORT")


class TrainerRegistryServicer(trainer_registry_service_pb2_grpc.TrainerRegistryServiceServicer):
    """Keeps the `trainers` table current; the dispatcher reads it."""

    def __init__(self, trainers: TrainerStore, config: GatewayConfig) -> None:
        self._trainers = trainers
        self._config = config

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
