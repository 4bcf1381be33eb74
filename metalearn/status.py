"""The outer error boundary: domain errors become gRPC statuses with details.

Every servicer method is wrapped by `translate_errors`. A `DomainError` becomes its
status code (with `google.rpc.BadRequest` field violations for INVALID_ARGUMENT);
anything else is a bug of ours, logged and answered with INTERNAL.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from metalearn import errors

log = logging.getLogger(__name__)

_CODES: dict[type[errors.DomainError], int] = {
    errors.InvalidArgument: code_pb2.INVALID_ARGUMENT,
    errors.NotFound: code_pb2.NOT_FOUND,
    errors.AlreadyExists: code_pb2.ALREADY_EXISTS,
    errors.FailedPrecondition: code_pb2.FAILED_PRECONDITION,
    errors.Unavailable: code_pb2.UNAVAILABLE,
    errors.ResourceExhausted: code_pb2.RESOURCE_EXHAUSTED,
    errors.Aborted: code_pb2.ABORTED,
    errors.Unauthenticated: code_pb2.UNAUTHENTICATED,
    errors.PermissionDenied: code_pb2.PERMISSION_DENIED,
}


# Bytes, so that non-ASCII text cannot multiply the size: the status (message included)
# travels base64-encoded (4/3) and the message again percent-encoded (up to 3x); together
# they stay near half of grpc's default 8 KiB limit on metadata. A larger status would
# reach the client as a bare INTERNAL, without its violations.
MAX_DETAILS_BYTES = 2048
MAX_MESSAGE_BYTES = 320


def _clip_utf8(text: str, max_bytes: int) -> str:
    """`text` cut to at most `max_bytes` of UTF-8, never inside a character."""
    data = text.encode("utf-8", errors="replace")
    if len(data) <= max_bytes:
        return text
    return data[: max_bytes - 3].decode("utf-8", errors="ignore") + "\u2026"


def _bad_request(error: errors.InvalidArgument) -> error_details_pb2.BadRequest:
    """The violations that fit `MAX_DETAILS_BYTES`, then one counting those left out."""
    bad = error_details_pb2.BadRequest()
    # Room kept for the count's own violation (field, "N more violations left out").
    budget = MAX_DETAILS_BYTES - 64 - len(errors.OMITTED_FIELD)
    kept = 0
    for v in error.violations:
        item = error_details_pb2.BadRequest.FieldViolation(
            field=_clip_utf8(v.field, errors.MAX_FIELD_CHARS),
            description=_clip_utf8(v.description, errors.MAX_DESCRIPTION_CHARS),
        )
        if bad.ByteSize() + item.ByteSize() + 4 > budget:  # 4: its tag and length
            break
        bad.field_violations.append(item)
        kept += 1
    omitted = error.omitted + len(error.violations) - kept
    if omitted:
        bad.field_violations.add(
            field=errors.OMITTED_FIELD, description=f"{omitted} more violations left out"
        )
    return bad


def to_status(error: errors.DomainError) -> grpc.Status:
    """Builds the rich gRPC status for a domain error, small enough to reach the client."""
    code = next(c for t, c in _CODES.items() if isinstance(error, t))
    message = _clip_utf8(str(error) or type(error).__name__, MAX_MESSAGE_BYTES)
    status = status_pb2.Status(code=code, message=message)
    if isinstance(error, errors.InvalidArgument):
        detail = any_pb2.Any()
        detail.Pack(_bad_request(error))
        status.details.append(detail)
    result: grpc.Status = rpc_status.to_status(status)
    return result


F = TypeVar("F", bound=Callable[..., Any])


def _abort(context: grpc.ServicerContext, name: str, err: Exception) -> None:
    """Ends a threaded call: a domain error becomes its status, anything else INTERNAL."""
    if isinstance(err, errors.DomainError):
        context.abort_with_status(to_status(err))
    if context.code() is not None:  # type: ignore[attr-defined]  # an abort's own exception
        raise err
    log.error("bug in %s", name, exc_info=err)
    context.abort(grpc.StatusCode.INTERNAL, "internal error")


async def _abort_async(
    context: grpc.aio.ServicerContext[Any, Any], name: str, err: Exception
) -> None:
    """Ends an asyncio call: a domain error becomes its status, anything else INTERNAL."""
    if isinstance(err, errors.DomainError):
        await context.abort_with_status(to_status(err))
    if isinstance(err, (grpc.aio.AbortError, grpc.aio.UsageError)):
        raise err
    log.error("bug in %s", name, exc_info=err)
    await context.abort(grpc.StatusCode.INTERNAL, "internal error")


def translate_errors(method: F) -> F:
    """Wraps a unary or streaming servicer method so domain errors become statuses.

    Takes the asyncio methods of the gateway and the threaded ones of the trainer alike.
    """
    name = method.__name__
    if inspect.isgeneratorfunction(method):

        @functools.wraps(method)
        def sync_stream_wrapper(
            self: Any, request: Any, context: grpc.ServicerContext
        ) -> Iterator[Any]:
            try:
                yield from method(self, request, context)
            except Exception as err:  # the boundary: every error ends here
                _abort(context, name, err)

        return sync_stream_wrapper  # type: ignore[return-value]

    if inspect.isasyncgenfunction(method):

        @functools.wraps(method)
        async def stream_wrapper(
            self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            try:
                async for item in method(self, request, context):
                    yield item
            except Exception as err:  # the boundary: every error ends here
                await _abort_async(context, name, err)

        return stream_wrapper  # type: ignore[return-value]

    if inspect.iscoroutinefunction(method):

        @functools.wraps(method)
        async def unary_wrapper(
            self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> Any:
            try:
                return await method(self, request, context)
            except Exception as err:  # the boundary: every error ends here
                await _abort_async(context, name, err)

        return unary_wrapper  # type: ignore[return-value]

    @functools.wraps(method)
    def sync_unary_wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except Exception as err:  # the boundary: every error ends here
            _abort(context, name, err)

    return sync_unary_wrapper  # type: ignore[return-value]
