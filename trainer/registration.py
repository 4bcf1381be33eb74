"""Announces a trainer to its gateway and keeps it known with heartbeats."""

from __future__ import annotations

import logging
import socket
import threading

import grpc

import metalearn
from metalearn.credentials import open_channel
from metalearn.v1 import trainer_registry_service_pb2 as pb
from metalearn.v1 import trainer_registry_service_pb2_grpc
from trainer.auth import GatewayCredential
from trainer.config import TrainerConfig
from trainer.service import devices
from trainer.workers import Workers

log = logging.getLogger(__name__)

_WILDCARDS = frozenset({"0.0.0.0", "[::]", "::", ""})  # noqa: S104 - names, not a bind


def advertised(listen: str, port: int, advertise: str) -> str:
    """The address the gateway should call: `advertise`, or the bound one (a wildcard
    host is replaced by this machine's name)."""
    if advertise:
        return advertise
    host = listen.rsplit(":", 1)[0]
    return f"{socket.gethostname() if host in _WILDCARDS else host}:{port}"


class Announcer:
    """A thread: registers, then sends a heartbeat every few seconds until stopped."""

    def __init__(
        self,
        config: TrainerConfig,
        address: str,
        workers: Workers,
        credential: GatewayCredential,
    ) -> None:
        self._config = config
        self._gateway = config.gateway
        self._address = address
        self._capacity = config.capacity
        self._workers = workers
        self._credential = credential
        self._stop = threading.Event()
        self._registered = threading.Event()
        self._thread = threading.Thread(target=self._run, name="announcer", daemon=True)

    def start(self, wait_seconds: float = 0.0) -> Announcer:
        self._thread.start()
        if wait_seconds:
            self._registered.wait(wait_seconds)
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        interval = 2.0
        config = self._config
        with open_channel(self._gateway, config.token, config.gateway_tls) as channel:
            stub = trainer_registry_service_pb2_grpc.TrainerRegistryServiceStub(channel)
            registered = False
            while not self._stop.is_set():
                try:
                    if not registered:
                        reply = stub.RegisterTrainer(
                            pb.RegisterTrainerRequest(
                                address=self._address, devices=devices(),
                                capacity=self._capacity, version=metalearn.__version__,
                            ),
                            timeout=10,
                        )  # fmt: skip
                        interval = reply.heartbeat_seconds or interval
                        if reply.gateway_credential:
                            self._credential.set(reply.gateway_credential)
                        registered = True
                        self._registered.set()
                        log.info("registered with gateway %s as %s", self._gateway, self._address)
                    else:
                        stub.Heartbeat(
                            pb.HeartbeatRequest(
                                address=self._address, busy_slots=self._workers.busy
                            ),
                            timeout=10,
                        )
                except grpc.RpcError as err:
                    # NOT_FOUND: the gateway forgot us (a fresh database): register again.
                    registered = err.code() != grpc.StatusCode.NOT_FOUND and registered
                    if err.code() != grpc.StatusCode.NOT_FOUND:
                        log.warning("gateway %s: %s", self._gateway, err.code().name)
                self._stop.wait(interval)
