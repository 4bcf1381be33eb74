"""Builds the trainer's gRPC server and runs it until SIGTERM or SIGINT."""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from concurrent import futures
from types import FrameType

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from metalearn.standard_services import HealthServicer, enable_server_reflection
from metalearn.tls import NO_PORT_SHARING, listen_on
from metalearn.v1 import trainer_service_pb2, trainer_service_pb2_grpc
from trainer.auth import GatewayCredential, GatewayOnly
from trainer.config import TrainerConfig
from trainer.registration import Announcer, advertised
from trainer.service import TrainerServicer
from trainer.workers import Workers

log = logging.getLogger(__name__)

SERVICE_NAME = trainer_service_pb2.DESCRIPTOR.services_by_name["TrainerService"].full_name


# The largest request the trainer takes: the gateway's own default limit on a message.
_REQUEST_BYTES = 32 * 1024 * 1024


def create_server(
    config: TrainerConfig,
    workers: Workers | None = None,
    credential: GatewayCredential | None = None,
) -> tuple[grpc.Server, int, health.HealthServicer, Workers]:
    """A trainer server bound to `config.listen` (port 0 picks a free one), not started.

    It answers only calls bearing `credential` (by default `config.gateway_credential`;
    the daemon's is set by each registration)."""
    workers = workers or Workers(config)
    credential = credential or GatewayCredential(config.gateway_credential)
    size = config.max_message_bytes
    # Threads for every slot's stream plus the small calls (info, health) beside them.
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=config.capacity + 8),
        interceptors=[GatewayOnly(credential)],
        options=[
            # A request is a command and at most a file's reference (the run reads the
            # file itself from the gateway): as much as a gateway takes from a client.
            ("grpc.max_receive_message_length", _REQUEST_BYTES),
            ("grpc.max_send_message_length", size),
            ("grpc.keepalive_time_ms", 30_000),
            # The gateway pings every 5 s to notice a dead trainer; an epoch may run for
            # minutes without a message, and those pings must not be taken for abuse.
            ("grpc.http2.min_ping_interval_without_data_ms", 1_000),
            ("grpc.http2.max_ping_strikes", 0),
            NO_PORT_SHARING,
        ],
    )
    trainer_service_pb2_grpc.add_TrainerServiceServicer_to_server(
        TrainerServicer(config, workers), server
    )
    health_servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in (SERVICE_NAME, ""):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    # v1 and v1alpha reflection, and Health/List: what grpcurl and `buf curl` expect.
    enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME), server)
    port = listen_on(server, config.listen, config.tls)
    return server, port, health_servicer, workers


def run_trainer(config: TrainerConfig, on_ready: Callable[[str], None] = print) -> None:
    """Serves until SIGTERM/SIGINT; then runs checkpoint and end before the server stops."""
    credential = GatewayCredential(config.gateway_credential)
    server, port, health_servicer, workers = create_server(config, credential=credential)
    server.start()
    address = advertised(config.listen, port, config.advertise)
    announcer = Announcer(config, address, workers, credential).start()
    # A plain flag, not a threading.Event: Event.set() in a signal handler deadlocks when
    # the signal lands while the main thread holds the Event's own lock in wait().
    stop: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.append(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    host = config.listen.rsplit(":", 1)[0]
    on_ready(f"metalearn trainer listening on {host}:{port}")
    while not stop:
        time.sleep(0.2)
    log.info("stopping: runs checkpoint after their current epoch")
    health_servicer.enter_graceful_shutdown()
    workers.interrupt_all()
    server.stop(config.stop_grace_seconds + 60).wait()
    workers.close()
    announcer.stop()
