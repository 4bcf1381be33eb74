"""A trainer obeys its gateway only: every TrainerService call must carry the credential
the gateway handed over at registration (`Bearer <credential>`).

Health checks and reflection stay open, as on the gateway. The check is a constant-time
comparison against one in-memory value, so it costs nothing per call.
"""

from __future__ import annotations

import hmac
import threading
from collections.abc import Callable
from typing import Any

import grpc

from metalearn.credentials import is_open, presented


class GatewayCredential:
    """What the trainer accepts: the credential each registration hands over (a new one
    replaces the old at once) and, if its operator gave one, a fixed credential too
    (for a trainer called directly, without a gateway's dispatcher)."""

    def __init__(self, fixed: str = "") -> None:
        self._lock = threading.Lock()
        self._fixed = fixed.encode()
        self._learned = b""

    def set(self, value: str) -> None:
        with self._lock:
            self._learned = value.encode()

    def accepts(self, presented: str) -> bool:
        given = presented.encode()
        with self._lock:
            expected = [c for c in (self._fixed, self._learned) if c]
        # Before the first registration (and with no fixed one) nothing is accepted.
        return any(hmac.compare_digest(given, c) for c in expected)


def _refusal(handler: Any, code: grpc.StatusCode, message: str) -> Any:
    """A handler of the same kind as `handler` that ends the call with `code`."""

    def refuse(request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(code, message)

    make: Callable[..., Any]
    if handler.request_streaming and handler.response_streaming:
        make = grpc.stream_stream_rpc_method_handler
    elif handler.request_streaming:
        make = grpc.stream_unary_rpc_method_handler
    elif handler.response_streaming:
        make = grpc.unary_stream_rpc_method_handler
    else:
        make = grpc.unary_unary_rpc_method_handler
    return make(refuse, handler.request_deserializer, handler.response_serializer)


class GatewayOnly(grpc.ServerInterceptor):  # type: ignore[misc]
    """Lets through only calls that carry the gateway's credential."""

    def __init__(self, credential: GatewayCredential) -> None:
        self._credential = credential

    def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Any], details: Any
    ) -> Any:
        method: str = details.method
        handler = continuation(details)
        if handler is None or is_open(method):
            return handler
        token = presented(details.invocation_metadata)
        if token is None:
            return _refusal(
                handler, grpc.StatusCode.UNAUTHENTICATED, "only the gateway may call a trainer"
            )
        if not self._credential.accepts(token):
            return _refusal(
                handler, grpc.StatusCode.UNAUTHENTICATED, "not this trainer's gateway credential"
            )
        return handler
