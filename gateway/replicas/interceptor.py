"""Notes, after each call that may write, the primary's WAL position for its caller
(`ReadRouter.wrote`), so that caller's next reads wait for a replica that has it.

A call may write what the replicas serve (attempts, studies, reported runs) when writers
may make it and readers may not (`auth.roles.POLICY`): a trainer's heartbeats and an
admin's token calls write nothing a caller reads there, and cost no extra statement.
It is noted once the call ends, however it ended: a failed write wrote nothing, but a
stream may have stored part of what it carried. Installed
inside authentication (the caller is known), and only when there are replicas.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from gateway.auth.roles import POLICY, Role, current
from gateway.interceptors import WrappingInterceptor
from gateway.replicas.router import ReadRouter


class ReadYourWrites(WrappingInterceptor):
    def __init__(self, router: ReadRouter) -> None:
        super().__init__()
        self._router = router

    def wrap(self, method: str, handler: Any) -> Any | None:
        roles = POLICY.get(method, frozenset())
        if Role.WRITER not in roles or Role.READER in roles:
            return None  # reads, trainers' and admins' own calls, health: nothing to note
        return _wrap(handler, self._router)


def _wrap(handler: Any, router: ReadRouter) -> Any:
    parse, serialize = handler.request_deserializer, handler.response_serializer

    async def noted() -> None:
        await router.wrote(current().name)

    if not handler.request_streaming and not handler.response_streaming:
        inner_uu = handler.unary_unary

        async def unary_unary(request: Any, context: Any) -> Any:
            try:
                return await inner_uu(request, context)
            finally:
                await noted()

        return grpc.unary_unary_rpc_method_handler(unary_unary, parse, serialize)

    if not handler.request_streaming:
        inner_us = handler.unary_stream

        async def unary_stream(request: Any, context: Any) -> AsyncIterator[Any]:
            try:
                async for response in inner_us(request, context):
                    yield response
            finally:
                await noted()

        return grpc.unary_stream_rpc_method_handler(unary_stream, parse, serialize)

    if not handler.response_streaming:
        inner_su = handler.stream_unary

        async def stream_unary(requests: Any, context: Any) -> Any:
            try:
                return await inner_su(requests, context)
            finally:
                await noted()

        return grpc.stream_unary_rpc_method_handler(stream_unary, parse, serialize)

    inner_ss = handler.stream_stream

    async def stream_stream(requests: Any, context: Any) -> AsyncIterator[Any]:
        try:
            async for response in inner_ss(requests, context):
                yield response
        finally:
            await noted()

    return grpc.stream_stream_rpc_method_handler(stream_stream, parse, serialize)
