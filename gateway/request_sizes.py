"""A size budget for each RPC's request, checked before protobuf parses it.

grpc's `max_receive_message_length` is one limit for the whole server, set for the
largest request (an image upload, an import): a ReadImages of 30 MB (a million labels)
fits under it, and parsing it into Python objects costs about twice its size before
validation refuses it. Here each method gets the budget of the largest request it can
legitimately carry, derived from the same limits validation applies, and a request
over it is refused from its length alone: RESOURCE_EXHAUSTED (what grpc itself
answers for a message over its limit), naming the method and its budget.

The check runs in the request deserializer, but an exception there would become
INTERNAL, so the deserializer returns a marker instead and the wrapped behaviour aborts
the call. This interceptor sits inside the authentication interceptor: a caller
without a valid token is refused as UNAUTHENTICATED first and learns nothing else.
"""

from __future__ import annotations

import asyncio
import ctypes
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, cast

import grpc

from gateway.attempts.validation import MAX_LABEL_CHARS
from gateway.config import Limits
from gateway.interceptors import WrappingInterceptor
from gateway.reporting.checks import MAX_SAMPLE_BYTES, MAX_SAMPLE_IMAGES
from metalearn import errors
from metalearn.status import to_status

# Requests that name things (a key, a filter of at most 2,000 characters, a page token,
# a few scalars): 1 MiB is far more than the largest of them needs, and parsing a
# message that size costs little, while letting through the forged page tokens and
# names that validation answers field by field.
SMALL = 1024 * 1024
# Image ids a ReadImages, ListImages or TestCommand may list, as validation bounds them.
MAX_IDS = 100_000
# What a command holds besides its labels and ids (layers, image ops, transforms, tags).
COMMAND_REST = 1024 * 1024

_ATTEMPTS = "/metalearn.v1.AttemptService/"
_DATASETS = "/metalearn.v1.DatasetService/"
_TASKS = "/metalearn.v1.TaskService/"
_STUDIES = "/metalearn.v1.StudyService/"
_REPORTING = "/metalearn.v1.ReportingService/"


def budgets(limits: Limits) -> dict[str, int]:
    """Each method's request budget in bytes; methods not named get SMALL."""
    # Every label at its longest in UTF-8 (4 bytes a character) with its tag and
    # length; every id a 10-byte varint.
    labels = limits.max_labels * (MAX_LABEL_CHARS * 4 + 3)
    ids = MAX_IDS * 10 + 8
    selection = labels + ids + 1024  # labels, ids and a few scalars
    command = labels + ids + COMMAND_REST
    whole = limits.max_message_bytes  # several commands, an image, many documents
    return {
        _ATTEMPTS + "CreateAttempt": whole,
        _ATTEMPTS + "UpdateAttempt": whole,
        _ATTEMPTS + "ImportAttempts": whole,
        _ATTEMPTS + "BatchCreateAttempts": whole,
        _ATTEMPTS + "Train": command,
        _ATTEMPTS + "Test": command,
        _DATASETS + "UploadImages": whole,  # each message of the stream: one image
        _DATASETS + "ReadImages": selection,
        _DATASETS + "ListImages": selection,
        _DATASETS + "DeleteImages": selection,
        _TASKS + "ProfileTask": command,
        _TASKS + "FindSimilarTasks": command,
        _TASKS + "SuggestCommand": command,
        _STUDIES + "CreateStudy": whole,
        # A run's declared labels and its parameters (64 KiB) with the rest.
        _REPORTING + "StartRun": labels + COMMAND_REST,
        # Each message of the stream: a batch of at most 100,000 points, each at most a
        # 10-byte step, an 8-byte value and a 10-byte time, with 1,000 names.
        _REPORTING + "ReportRun": 100_000 * 28 + SMALL,
        # Each message: a chunk of at most 1 MiB, with its tag and length.
        _REPORTING + "UploadModel": SMALL + 64,
        # The sample's images (8 MiB in all) with a tag, a label and a length each.
        _REPORTING + "UploadTaskSample": MAX_SAMPLE_BYTES + MAX_SAMPLE_IMAGES * 16 + SMALL,
        # A whole trial (copied or enqueued by an Optuna client), its attributes included;
        # an attribute's value alone may be 256 KiB (gateway/optuna/checks.py).
        "/optuna.StorageService/CreateNewTrial": whole,
    }


def _find_malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, where the C library has one."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return cast("Callable[[int], int]", trim)


_MALLOC_TRIM = _find_malloc_trim()
_trimming = threading.Lock()
_TRIM_AFTER_SECONDS = 0.1


def _give_memory_back() -> None:
    """Returns the heap's free pages to the system. A refused request was received
    whole (grpc's buffer and its Python copy, twice its size) and freed at once, but
    glibc keeps large freed blocks for reuse: without this, a few refusals in a row
    left the gateway 170 MB larger for good. One trim at a time; others skip."""
    if _MALLOC_TRIM is None or not _trimming.acquire(blocking=False):
        return
    try:
        _MALLOC_TRIM(0)
    finally:
        _trimming.release()


class _Oversized:
    """Stands in for a request over its budget, which is never parsed."""

    __slots__ = ("size",)

    def __init__(self, size: int) -> None:
        self.size = size


def _checked(parse: Callable[[bytes], Any] | None, budget: int) -> Callable[[bytes], Any]:
    def run(data: bytes) -> Any:
        if len(data) > budget:
            return _Oversized(len(data))
        return parse(data) if parse is not None else data

    return run


class RequestSizes(WrappingInterceptor):
    """Refuses a request over its method's budget (`budgets`) before it is parsed."""

    def __init__(self, budget: Mapping[str, int], default: int = SMALL) -> None:
        super().__init__()
        self._budget = dict(budget)
        self._default = default

    @classmethod
    def for_limits(cls, limits: Limits) -> RequestSizes:
        return cls(budgets(limits))

    def wrap(self, method: str, handler: Any) -> Any | None:
        return _wrap(handler, method, self._budget.get(method, self._default))


def _wrap(handler: Any, method: str, budget: int) -> Any:
    parse = _checked(handler.request_deserializer, budget)
    serialize = handler.response_serializer
    name = method.rsplit("/", 1)[-1]

    async def refuse(context: Any, request: _Oversized) -> None:
        error = errors.ResourceExhausted(
            f"{name} takes requests of at most {budget} bytes, this one has"
            f" {request.size}: send less per call"
        )
        # Once the call has ended and grpc let go of the request's bytes, and off the
        # event loop: a trim walks the whole heap (milliseconds).
        loop = asyncio.get_running_loop()
        loop.call_later(_TRIM_AFTER_SECONDS, loop.run_in_executor, None, _give_memory_back)
        await context.abort_with_status(to_status(error))

    if not handler.request_streaming and not handler.response_streaming:
        inner_uu = handler.unary_unary

        async def unary_unary(request: Any, context: Any) -> Any:
            if isinstance(request, _Oversized):
                await refuse(context, request)
            return await inner_uu(request, context)

        return grpc.unary_unary_rpc_method_handler(unary_unary, parse, serialize)

    if not handler.request_streaming:
        inner_us = handler.unary_stream

        async def unary_stream(request: Any, context: Any) -> AsyncIterator[Any]:
            if isinstance(request, _Oversized):
                await refuse(context, request)
            async for response in inner_us(request, context):
                yield response

        return grpc.unary_stream_rpc_method_handler(unary_stream, parse, serialize)

    def checked(requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
        async def run() -> AsyncIterator[Any]:
            async for request in requests:
                if isinstance(request, _Oversized):
                    # Ends the call (AbortError passes every servicer's error boundary);
                    # what the stream committed before this message stays.
                    await refuse(context, request)
                yield request

        return run()

    if not handler.response_streaming:
        inner_su = handler.stream_unary

        async def stream_unary(requests: Any, context: Any) -> Any:
            return await inner_su(checked(requests, context), context)

        return grpc.stream_unary_rpc_method_handler(stream_unary, parse, serialize)

    inner_ss = handler.stream_stream

    async def stream_stream(requests: Any, context: Any) -> AsyncIterator[Any]:
        async for response in inner_ss(checked(requests, context), context):
            yield response

    return grpc.stream_stream_rpc_method_handler(stream_stream, parse, serialize)
