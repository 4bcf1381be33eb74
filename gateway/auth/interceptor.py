"""The gateway's one server interceptor: every call is authenticated, authorized and
decoded here before a servicer sees it.

It covers the four RPC kinds by wrapping each method's handler once (cached per
method): the wrapper checks the bearer token and the role, records the principal for
the servicer (`gateway.auth.roles.current`), holds one of the principal's call or
stream slots while the call runs (`gateway.auth.budget`), and turns a request protobuf cannot parse
(invalid UTF-8, garbage, nesting past the parser's depth limit) into INVALID_ARGUMENT
instead of grpc's UNKNOWN. Health checks and reflection pass untouched.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from gateway.auth.budget import REPORT_STREAMS, PrincipalBudget
from gateway.auth.roles import POLICY, Principal, Role, set_current
from gateway.auth.tokens import Authenticator, bearer
from gateway.interceptors import WrappingInterceptor
from metalearn import errors
from metalearn.credentials import is_open
from metalearn.status import to_status

# With authentication switched off (loopback only), every caller is this.
ANONYMOUS = Principal("anonymous", Role.ADMIN)


class _Undecodable:
    """Stands in for a request protobuf could not parse, so the wrapper can refuse it
    with a proper status once the caller is known."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _tolerant(parse: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if parse is None:
        return None

    def run(data: bytes) -> Any:
        try:
            return parse(data)
        except Exception as err:  # any parse failure is the sender's malformed message
            return _Undecodable(str(err)[:200])

    return run


def _passing_encoded(serialize: Callable[[Any], bytes] | None) -> Callable[[Any], bytes] | None:
    """The response serializer, letting through responses a servicer already encoded
    (WatchAttempt's epochs, encoded once for all of a replica's watchers)."""
    if serialize is None:
        return None
    inner = serialize

    def run(response: Any) -> bytes:
        return response if isinstance(response, bytes) else inner(response)

    return run


def _undecodable(request: _Undecodable) -> errors.InvalidArgument:
    return errors.InvalidArgument.one("request", f"not a valid message: {request.reason}")


class AuthInterceptor(WrappingInterceptor):
    """Authenticates with `authenticator` (None: authentication off, loopback only)."""

    def __init__(
        self, authenticator: Authenticator | None, budget: PrincipalBudget | None = None
    ) -> None:
        super().__init__()
        self._auth = authenticator
        self._budget = budget or PrincipalBudget()

    def wrap(self, method: str, handler: Any) -> Any | None:
        if is_open(method):
            return None
        return self._wrap(
            handler, POLICY.get(method, frozenset()), "report" if method in REPORT_STREAMS else ""
        )

    async def _enter(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        roles: frozenset[Role],
        stack: contextlib.AsyncExitStack,
        streaming: bool,
        kind: str = "",
    ) -> None:
        """Checks the caller and takes one of its slots (released when `stack` closes);
        aborts the call with UNAUTHENTICATED, PERMISSION_DENIED or RESOURCE_EXHAUSTED."""
        try:
            if self._auth is None:
                principal = ANONYMOUS
            else:
                principal = await self._auth.principal(
                    bearer(context.invocation_metadata()), context.peer()
                )
            if principal.role not in roles:
                # Decided before anything is looked up: says nothing of what exists.
                raise errors.PermissionDenied(
                    f"a {principal.role.value} token may not call this method"
                )
            budget = self._budget
            if kind == "report":
                slot = budget.report(principal)
            else:
                slot = budget.stream(principal) if streaming else budget.call(principal)
            await stack.enter_async_context(slot)
        except errors.DomainError as err:  # the boundary for calls that never reach a servicer
            await context.abort_with_status(to_status(err))
        set_current(principal)

    def _wrap(self, handler: Any, roles: frozenset[Role], kind: str = "") -> Any:
        enter = self._enter
        parse = _tolerant(handler.request_deserializer)
        serialize = _passing_encoded(handler.response_serializer)

        async def refuse(context: Any, request: _Undecodable) -> None:
            await context.abort_with_status(to_status(_undecodable(request)))

        if not handler.request_streaming and not handler.response_streaming:
            inner_uu = handler.unary_unary

            async def unary_unary(request: Any, context: Any) -> Any:
                async with contextlib.AsyncExitStack() as stack:
                    await enter(context, roles, stack, False)
                    if isinstance(request, _Undecodable):
                        await refuse(context, request)
                    return await inner_uu(request, context)

            return grpc.unary_unary_rpc_method_handler(unary_unary, parse, serialize)

        if not handler.request_streaming:
            inner_us = handler.unary_stream

            async def unary_stream(request: Any, context: Any) -> AsyncIterator[Any]:
                async with contextlib.AsyncExitStack() as stack:
                    await enter(context, roles, stack, True)
                    if isinstance(request, _Undecodable):
                        await refuse(context, request)
                    async for response in inner_us(request, context):
                        yield response

            return grpc.unary_stream_rpc_method_handler(unary_stream, parse, serialize)

        async def checked(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
            async for request in requests:
                if isinstance(request, _Undecodable):
                    raise _undecodable(request)  # inside the servicer: its boundary answers
                yield request

        if not handler.response_streaming:
            inner_su = handler.stream_unary

            async def stream_unary(requests: Any, context: Any) -> Any:
                async with contextlib.AsyncExitStack() as stack:
                    await enter(context, roles, stack, True)
                    return await inner_su(checked(requests), context)

            return grpc.stream_unary_rpc_method_handler(stream_unary, parse, serialize)

        inner_ss = handler.stream_stream

        async def stream_stream(requests: Any, context: Any) -> AsyncIterator[Any]:
            async with contextlib.AsyncExitStack() as stack:
                await enter(context, roles, stack, True, kind)
                async for response in inner_ss(checked(requests), context):
                    yield response

        return grpc.stream_stream_rpc_method_handler(stream_stream, parse, serialize)
