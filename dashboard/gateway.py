"""The dashboard's only way to the data: the gateway's own API over one gRPC channel,
every call carrying the signed-in user's token (so the gateway, not the dashboard,
decides what each user may see and do)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Protocol

import grpc
from google.protobuf import field_mask_pb2

from dashboard.config import UiConfig
from metalearn.client import MetalearnError, translate
from metalearn.credentials import authorization
from metalearn.v1 import (
    attempt_pb2,
    attempt_service_pb2,
    attempt_service_pb2_grpc,
    dataset_service_pb2,
    dataset_service_pb2_grpc,
    study_service_pb2,
    study_service_pb2_grpc,
    task_pb2,
    task_service_pb2,
    task_service_pb2_grpc,
    token_service_pb2,
    token_service_pb2_grpc,
)

apb = attempt_service_pb2
spb = study_service_pb2
kpb = task_service_pb2

# How many attempts a page fetches from the gateway at once (compare, a study's trials).
_PARALLEL = 16
# The most studies or tasks a list page shows.
_MOST = 2000


class Gateway:
    """The calls the pages make. Each raises a `MetalearnError` subclass when the gateway
    refuses (the app turns those into pages); `token` is the caller's bearer secret."""

    def __init__(self, config: UiConfig) -> None:
        # Made inside the event loop that uses it (grpc.aio binds a channel to its loop).
        options = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
        if config.tls is not None:
            self._channel = grpc.aio.secure_channel(
                config.gateway, config.tls.credentials(), options=options + config.tls.options()
            )
        else:
            self._channel = grpc.aio.insecure_channel(config.gateway, options=options)
        self._timeout = config.rpc_timeout
        self.attempts = attempt_service_pb2_grpc.AttemptServiceStub(self._channel)
        self.studies = study_service_pb2_grpc.StudyServiceStub(self._channel)
        self.tasks = task_service_pb2_grpc.TaskServiceStub(self._channel)
        self.tokens = token_service_pb2_grpc.TokenServiceStub(self._channel)
        self.datasets = dataset_service_pb2_grpc.DatasetServiceStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()

    async def call(self, method: Any, request: Any, token: str, deadline: float = 0.0) -> Any:
        try:
            return await method(
                request, metadata=authorization(token), timeout=deadline or self._timeout
            )
        except grpc.RpcError as err:
            raise translate(err) from None

    async def stream(self, method: Any, request: Any, token: str) -> AsyncIterator[Any]:
        """A server stream's messages; it is cancelled when the caller stops reading."""
        call = method(request, metadata=authorization(token))
        try:
            async for message in call:
                yield message
        except grpc.RpcError as err:
            raise translate(err) from None
        finally:
            call.cancel()

    # Who is calling.
    async def whoami(self, token: str) -> token_service_pb2.Token:
        reply = await self.call(self.tokens.WhoAmI, token_service_pb2.WhoAmIRequest(), token)
        result: token_service_pb2.Token = reply.token
        return result

    # Attempts.
    async def list_attempts(
        self, token: str, request: apb.ListAttemptsRequest
    ) -> apb.ListAttemptsResponse:
        reply: apb.ListAttemptsResponse = await self.call(
            self.attempts.ListAttempts, request, token
        )
        return reply

    async def attempt(self, token: str, attempt_id: int, full: bool = True) -> attempt_pb2.Attempt:
        view = apb.ATTEMPT_VIEW_FULL if full else apb.ATTEMPT_VIEW_BASIC
        reply = await self.call(
            self.attempts.GetAttempt, apb.GetAttemptRequest(id=attempt_id, view=view), token
        )
        result: attempt_pb2.Attempt = reply.attempt
        return result

    async def attempt_named(self, token: str, name: str) -> attempt_pb2.Attempt:
        request = apb.GetAttemptRequest(name=name, view=apb.ATTEMPT_VIEW_BASIC)
        reply = await self.call(self.attempts.GetAttempt, request, token)
        result: attempt_pb2.Attempt = reply.attempt
        return result

    async def attempts_by_id(self, token: str, ids: list[int]) -> list[attempt_pb2.Attempt]:
        """Several attempts (FULL), in the order asked, a bounded number at a time."""
        gate = asyncio.Semaphore(_PARALLEL)

        async def one(attempt_id: int) -> attempt_pb2.Attempt:
            async with gate:
                return await self.attempt(token, attempt_id)

        return list(await asyncio.gather(*(one(i) for i in ids)))

    def watch_attempt(
        self, token: str, attempt_id: int, from_epoch: int
    ) -> AsyncIterator[apb.WatchAttemptResponse]:
        request = apb.WatchAttemptRequest(id=attempt_id, from_epoch=from_epoch)
        return self.stream(self.attempts.WatchAttempt, request, token)

    async def cancel(self, token: str, name: str) -> attempt_pb2.Attempt:
        reply = await self.call(
            self.attempts.CancelAttempt, apb.CancelAttemptRequest(name=name), token
        )
        result: attempt_pb2.Attempt = reply.attempt
        return result

    async def test(self, token: str, name: str, request_id: str) -> attempt_pb2.Attempt:
        reply = await self.call(
            self.attempts.Test, apb.TestRequest(name=name, request_id=request_id), token
        )
        result: attempt_pb2.Attempt = reply.attempt
        return result

    async def set_tags(
        self, token: str, attempt_id: int, tags: dict[str, str]
    ) -> attempt_pb2.Attempt:
        """Replaces an attempt's tags (UpdateAttempt with the mask `tags`)."""
        request = apb.UpdateAttemptRequest(
            attempt=attempt_pb2.Attempt(id=attempt_id, tags=tags),
            update_mask=field_mask_pb2.FieldMask(paths=["tags"]),
        )
        reply = await self.call(self.attempts.UpdateAttempt, request, token)
        result: attempt_pb2.Attempt = reply.attempt
        return result

    async def train(
        self, token: str, name: str, command: attempt_pb2.TrainCommand, request_id: str
    ) -> attempt_pb2.Attempt:
        request = apb.TrainRequest(name=name, command=command, request_id=request_id)
        reply = await self.call(self.attempts.Train, request, token)
        result: attempt_pb2.Attempt = reply.attempt
        return result

    async def label_counts(self, token: str) -> dict[str, int]:
        """Every label with its number of images."""
        request = dataset_service_pb2.ListLabelsRequest()
        reply = await self.call(self.datasets.ListLabels, request, token)
        return {label.name: label.image_count for label in reply.labels}

    def download(self, token: str, attempt_id: int) -> AsyncIterator[apb.DownloadModelResponse]:
        request = apb.DownloadModelRequest(id=attempt_id)
        return self.stream(self.attempts.DownloadModel, request, token)

    # Studies.
    async def _pages(self, method: Any, request: Any, field: str, token: str) -> list[Any]:
        """Every item of a paged list, up to `_MOST` (a page shows no more)."""
        items: list[Any] = []
        while True:
            reply = await self.call(method, request, token)
            items += getattr(reply, field)
            if not reply.next_page_token or len(items) >= _MOST:
                return items
            request.page_token = reply.next_page_token

    async def list_studies(self, token: str) -> list[spb.Study]:
        request = spb.ListStudiesRequest(page_size=200)
        return await self._pages(self.studies.ListStudies, request, "studies", token)

    async def study(self, token: str, name: str) -> spb.Study:
        reply = await self.call(self.studies.GetStudy, spb.GetStudyRequest(name=name), token)
        result: spb.Study = reply.study
        return result

    def watch_study(self, token: str, name: str) -> AsyncIterator[spb.WatchStudyResponse]:
        return self.stream(self.studies.WatchStudy, spb.WatchStudyRequest(name=name), token)

    # Tasks.
    async def list_tasks(self, token: str) -> list[task_pb2.Task]:
        request = kpb.ListTasksRequest(page_size=200)
        return await self._pages(self.tasks.ListTasks, request, "tasks", token)

    async def similar_tasks(self, token: str, fingerprint: str) -> kpb.FindSimilarTasksResponse:
        request = kpb.FindSimilarTasksRequest(fingerprint=fingerprint, limit=5, attempts_per_task=3)
        reply: kpb.FindSimilarTasksResponse = await self.call(
            self.tasks.FindSimilarTasks, request, token
        )
        return reply

    async def suggest(self, token: str, task: task_pb2.Task) -> kpb.SuggestCommandResponse:
        key = task_pb2.TaskKey(label_names=task.label_names, image_ops=task.image_ops)
        reply: kpb.SuggestCommandResponse = await self.call(
            self.tasks.SuggestCommand, kpb.SuggestCommandRequest(task=key), token, deadline=70.0
        )
        return reply


__all__ = ["Gateway", "MetalearnError"]


class Ui(Protocol):
    """What a page's handler outside app.py needs of the dashboard: its gateway (so those
    modules need not import app.py, which imports them)."""

    @property
    def gateway(self) -> Gateway: ...
