"""The gateway's channel to a trainer: what the dispatcher streams runs over and the
task profiler asks for profiles with."""

from __future__ import annotations

import grpc

from gateway.config import GatewayConfig

CHANNEL_OPTIONS = [
    # What a trainer sends is bounded: events and 1 MiB artifact chunks. What the
    # gateway sends is a command and at most a file's reference (the trainer reads the
    # file itself, with ReadRunFile): grpc's default send limit is plenty.
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    # A trainer that dies mid-stream (kill -9, lost machine) is noticed within seconds.
    ("grpc.keepalive_time_ms", 5_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    # Otherwise grpc spaces pings minutes apart while the trainer sends nothing, and
    # waits a minute for an answer.
    ("grpc.http2.min_time_between_pings_ms", 5_000),
    ("grpc.http2.ping_timeout_ms", 5_000),
]


def trainer_channel(config: GatewayConfig, address: str) -> grpc.aio.Channel:
    """A channel to a trainer, with the TLS the gateway is configured to use for them."""
    tls = config.trainer_tls
    if tls is None:
        return grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
    return grpc.aio.secure_channel(
        address, tls.credentials(), options=CHANNEL_OPTIONS + tls.options()
    )
