"""`metalearn optuna-proxy`: Optuna's gRPC storage protocol on loopback, forwarded to the
gateway with the user's token (and TLS).

Optuna's own proxy protocol has no credentials, so clients that speak only it (Optuna's
`GrpcStorageProxy`, OptunaSharp) cannot call the gateway themselves. This process sits
next to such a worker: it accepts their calls on a loopback address only (anyone who
reaches it acts with the token it holds) and forwards each one unchanged, bytes in and
bytes out, adding the token; the gateway's answer, its error status and details
included, goes back as it came. Nothing is cached here: every worker sees the gateway's
state, as through `metalearn.optuna.Storage`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc

from metalearn.credentials import open_channel
from metalearn.tls import NO_PORT_SHARING, ClientTls, is_loopback

log = logging.getLogger(__name__)

SERVICE = "optuna.StorageService"
# Optuna's client reads a study's trials in one answer, with no limit of its own.
_UNLIMITED = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
# How long one forwarded call may take before the worker hears DEADLINE_EXCEEDED (a
# client's own deadline, when shorter, is kept).
CALL_SECONDS = 60.0


def _identity(data: bytes) -> bytes:
    return data


class _Forward(grpc.GenericRpcHandler):
    """Every unary method of Optuna's storage service, forwarded as raw bytes."""

    def __init__(self, upstream: grpc.Channel) -> None:
        self._upstream = upstream
        self._calls: dict[str, Callable[..., Any]] = {}

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any] | None:
        method = details.method
        if not method.startswith(f"/{SERVICE}/"):
            return None  # UNIMPLEMENTED: this proxy carries Optuna's storage calls only
        call = self._calls.get(method)
        if call is None:
            call = self._upstream.unary_unary(
                method, request_serializer=_identity, response_deserializer=_identity
            )
            self._calls[method] = call

        def forward(request: bytes, context: grpc.ServicerContext) -> bytes:
            remaining = context.time_remaining()
            timeout = CALL_SECONDS if remaining is None else min(remaining, CALL_SECONDS)
            try:
                response: bytes = call(request, timeout=timeout)
                return response
            except grpc.RpcError as err:
                # The gateway's status as it is (google.rpc details in its trailers):
                # the worker's Optuna client maps its code to its own exceptions.
                found: Any = err  # a grpc.Call too; the stubs type it as an RpcError only
                trailers = tuple(
                    (str(k), v) for k, v in (found.trailing_metadata() or ()) if k.endswith("-bin")
                )
                context.set_trailing_metadata(trailers)
                context.abort(found.code(), found.details() or "")

        return grpc.unary_unary_rpc_method_handler(
            forward, request_deserializer=_identity, response_serializer=_identity
        )


def make_server(
    gateway: str,
    token: str | None,
    tls: ClientTls | None,
    host: str = "127.0.0.1",
    port: int = 13000,
    workers: int = 16,
) -> tuple[grpc.Server, int]:
    """A proxy server bound to `host:port` (port 0 picks one), not started, and its port.
    ValueError unless `host` is a loopback address."""
    if not is_loopback(f"{host}:{port}"):
        raise ValueError(
            f"{host} is not a loopback address: Optuna's protocol has no credentials, so"
            " anyone who reaches this proxy would act with your token"
        )
    upstream = open_channel(gateway, token, tls, options=_UNLIMITED)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers),
        handlers=[_Forward(upstream)],
        options=[*_UNLIMITED, NO_PORT_SHARING],
    )
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot listen on {host}:{port}")
    return server, bound
