"""What the gateway's server interceptors share: each wraps a method's handler once,
the first time the method is called, and keeps the wrapped one (grpc asks for the
handler on every call)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc


class WrappingInterceptor(grpc.aio.ServerInterceptor):
    """Subclasses say how to wrap one method's handler (`wrap`; None: leave it as is)."""

    def __init__(self) -> None:
        self._wrapped: dict[str, Any] = {}

    def wrap(self, method: str, handler: Any) -> Any | None:
        raise NotImplementedError

    async def intercept_service(  # type: ignore[override]
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        details: grpc.HandlerCallDetails,
    ) -> Any:
        method: str = details.method  # type: ignore[attr-defined]
        cached = self._wrapped.get(method)
        if cached is not None:
            return cached
        handler = await continuation(details)
        if handler is None:
            return None
        wrapped = self.wrap(method, handler)
        if wrapped is None:
            return handler
        self._wrapped[method] = wrapped
        return wrapped
