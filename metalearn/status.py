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
}


def to_status(error: errors.DomainError) -> grpc.Status:
    """Builds the rich gRPC status for a domain error."""
    code = next(c for t, c in _CODES.items() if isinstance(error, t))
    status = status_pb2.Status(code=code, message=str(error) or type(error).__name__)
    if isinstance(error, errors.InvalidArgument):
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=v.field, description=v.description
                )
                for v in error.violations
            ]
        )
        detail = any_pb2.Any()
        detail.Pack(bad)
        status.details.append(detail)
    result: grpc.Status = rpc_status.to_status(status)
    return result


F = TypeVar("F", bound=Callable[..., Any])


def translate_errors(method: F) -> F:
    """Wraps a unary or streaming servicer method so domain errors become statuses.

    Takes the asyncio methods of the gateway and the threaded ones of the trainer alike.
    """
    if inspect.isgeneratorfunction(method):

        @functools.wraps(method)
        def sync_stream_wrapper(
            self: Any, request: Any, context: grpc.ServicerContext
        ) -> Iterator[Any]:
            try:
                yield from method(self, request, context)
            except errors.DomainError as err:
                context.abort_with_status(to_status(err))
            except Exception:
                if context.code() is not None:  # type: ignore[attr-defined]  # aborted: a status
                    raise
                log.exception("bug in %s", method.__name__)
                context.abort(grpc.StatusCode.INTERNAL, "internal error")

        return sync_stream_wrapper  # type: ignore[return-value]

    if not inspect.iscoroutinefunction(method) and not inspect.isasyncgenfunction(method):

        @functools.wraps(method)
        def sync_unary_wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
            try:
                return method(self, request, context)
            except errors.DomainError as err:
                context.abort_with_status(to_status(err))
            except Exception:
                if context.code() is not None:  # type: ignore[attr-defined]
                    raise
                log.exception("bug in %s", method.__name__)
                context.abort(grpc.StatusCode.INTERNAL, "internal error")

        return sync_unary_wrapper  # type: ignore[return-value]

    if inspect.isasyncgenfunction(method):

        @functools.wraps(method)
        async def stream_wrapper(
            self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            try:
                async for item in method(self, request, context):
                    yield item
            except errors.DomainError as err:
                await context.abort_with_status(to_status(err))
            except (grpc.aio.AbortError, grpc.aio.UsageError):
                raise
            except Exception:
                log.exception("bug in %s", method.__name__)
                await context.abort(grpc.StatusCode.INTERNAL, "internal error")

        return stream_wrapper  # type: ignore[return-value]

    @functools.wraps(method)
    async def unary_wrapper(
        self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> Any:
        try:
            return await method(self, request, context)
        except errors.DomainError as err:
            await context.abort_with_status(to_status(err))
        except (grpc.aio.AbortError, grpc.aio.UsageError):
            raise
        except Exception:
            log.exception("bug in %s", method.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")

    return unary_wrapper  # type: ignore[return-value]
