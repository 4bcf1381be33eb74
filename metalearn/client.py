"""`metalearn.Client`: the gateway from Python, with Python exceptions instead of gRPC codes.

from metalearn import Client

with Client("127.0.0.1:50051") as ml:
    ml.train("lenet", command)                 # queued at once
    for event in ml.watch("lenet"):            # snapshot, epochs, status changes
        if isinstance(event, EpochMetrics):
            print(event.epoch, event.loss)
    ml.test("lenet")
    print(ml.wait("lenet").accuracy)
    ml.download("lenet", "models/")
    suggestion = ml.suggest_command(["cat", "dog"])  # from the most similar past tasks
    ml.train("cats", suggestion.command)
    ml.create_study(study_dict, warm_start={"similar_tasks": 5})
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc

from metalearn import documents
from metalearn.credentials import find_token, open_channel
from metalearn.outgoing import AlreadyExistsError as AlreadyExistsError
from metalearn.outgoing import InvalidRequest as InvalidRequest
from metalearn.outgoing import MetalearnError as MetalearnError
from metalearn.outgoing import NotFoundError as NotFoundError
from metalearn.outgoing import PermissionDeniedError as PermissionDeniedError
from metalearn.outgoing import UnauthenticatedError as UnauthenticatedError
from metalearn.outgoing import UnavailableError as UnavailableError
from metalearn.outgoing import WrongStateError as WrongStateError
from metalearn.outgoing import translate as translate
from metalearn.tls import ClientTls
from metalearn.v1 import (
    attempt_pb2,
    attempt_service_pb2,
    attempt_service_pb2_grpc,
    curve_service_pb2,
    curve_service_pb2_grpc,
    dataset_service_pb2,
    dataset_service_pb2_grpc,
    study_service_pb2,
    study_service_pb2_grpc,
    task_pb2,
    task_service_pb2,
    task_service_pb2_grpc,
    token_service_pb2,
    token_service_pb2_grpc,
    trainer_service_pb2,
)
from metalearn.views.attempts import status_text as status_text

pb = attempt_service_pb2
Attempt = attempt_pb2.Attempt
EpochMetrics = attempt_pb2.EpochMetrics
TestProgress = trainer_service_pb2.TestProgress
Study = study_service_pb2.Study
WarmStart = study_service_pb2.WarmStart
Task = task_pb2.Task
ImageOp = attempt_pb2.ImageOp
# Statuses after which nothing happens without a new request.
TERMINAL = frozenset(
    {
        attempt_pb2.ATTEMPT_STATUS_TRAINED,
        attempt_pb2.ATTEMPT_STATUS_COMPLETE,
        attempt_pb2.ATTEMPT_STATUS_FAILED,
        attempt_pb2.ATTEMPT_STATUS_CANCELLED,
        attempt_pb2.ATTEMPT_STATUS_PRUNED,
        attempt_pb2.ATTEMPT_STATUS_INCOMPLETE,
    }
)


# Pauses between tries of a call that changes something (the gateway unreachable).
_RETRY_PAUSES = (0.2, 0.5, 1.0, 2.0)
# The deadline of a call that may wait for a task's profile: the gateway waits at most
# 60 s, then answers DEADLINE_EXCEEDED itself ("call again").
_PROFILE_WAIT = 65.0


def _key(name_or_id: str | int) -> dict[str, Any]:
    return {"id": name_or_id} if isinstance(name_or_id, int) else {"name": name_or_id}


def task_key(
    labels: Iterable[str], image_ops: Iterable[ImageOp | dict[str, Any]] | None = None
) -> task_pb2.TaskKey:
    """The task that `labels` (with `image_ops`, as a TrainCommand's: messages or their
    JSON as dicts, e.g. {"resize": {"size": [32, 32]}}) make."""
    if isinstance(labels, str):  # one label is a list of one, not of its letters
        labels = [labels]
    key = task_pb2.TaskKey(label_names=list(labels))
    for i, op in enumerate(image_ops or ()):
        if isinstance(op, dict):
            try:
                op = documents.parse(op, ImageOp(), f"image_ops[{i}]")
            except documents.DocumentError as err:
                raise InvalidRequest("INVALID_ARGUMENT", str(err)) from None
        key.image_ops.append(op)
    return key


def _warm_start(value: WarmStart | dict[str, Any]) -> WarmStart:
    if isinstance(value, WarmStart):
        return value
    try:
        return documents.parse(value, WarmStart(), "study.warm_start")
    except documents.DocumentError as err:
        raise InvalidRequest("INVALID_ARGUMENT", str(err)) from None


class Client:
    """A connection to a gateway. Every method raises a `MetalearnError` subclass."""

    def __init__(
        self,
        address: str = "127.0.0.1:50051",
        timeout: float = 30.0,
        *,
        token: str | None = None,
        tls: ClientTls | None = None,
    ) -> None:
        """`token`: else METALEARN_TOKEN, else the local gateway's ./.metalearn/admin.token.
        `tls`: what to trust (None: plaintext, for a gateway on this machine)."""
        self._channel = open_channel(
            address,
            find_token(token),
            tls,
            options=[
                ("grpc.max_send_message_length", 32 * 1024 * 1024),
                # An import's answer echoes what it stored: more than the default 4 MiB.
                ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ],
        )
        self._attempts = attempt_service_pb2_grpc.AttemptServiceStub(self._channel)
        self._datasets = dataset_service_pb2_grpc.DatasetServiceStub(self._channel)
        self._tokens = token_service_pb2_grpc.TokenServiceStub(self._channel)
        self._studies = study_service_pb2_grpc.StudyServiceStub(self._channel)
        self._tasks = task_service_pb2_grpc.TaskServiceStub(self._channel)
        self._curves = curve_service_pb2_grpc.CurveServiceStub(self._channel)
        self._timeout = timeout

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _call(self, method: Any, request: Any, timeout: float | None = None) -> Any:
        try:
            return method(request, timeout=timeout or self._timeout)
        except grpc.RpcError as err:
            raise translate(err) from None

    def _call_safely(self, method: Any, request: Any) -> Any:
        """A call that changes something, retried when the gateway could not be reached
        or did not answer in time: its `request_id` (AIP-155) makes the gateway carry it
        out once however often it arrives."""
        if not request.request_id:
            request.request_id = str(uuid.uuid4())
        for pause in _RETRY_PAUSES:
            try:
                return self._call(method, request)
            except UnavailableError:
                time.sleep(pause)
        return self._call(method, request)  # the last try: its error is the caller's

    # The store.
    def create(self, attempt: Attempt) -> Attempt:
        """Stores a new attempt (INCOMPLETE)."""
        reply = self._call_safely(
            self._attempts.CreateAttempt, pb.CreateAttemptRequest(attempt=attempt)
        )
        result: Attempt = reply.attempt
        return result

    def import_attempts(
        self, attempts: Sequence[Attempt], *, skip_existing: bool = False
    ) -> pb.ImportAttemptsResponse:
        """Stores documents from elsewhere (the prototype's, another metalearn's) as
        recorded history, all or nothing; `skip_existing` leaves out names taken."""
        request = pb.ImportAttemptsRequest(attempts=list(attempts), skip_existing=skip_existing)
        reply: pb.ImportAttemptsResponse = self._call_safely(self._attempts.ImportAttempts, request)
        return reply

    def get(self, name_or_id: str | int, *, full: bool = False) -> Attempt:
        """One attempt; `full` adds every epoch's detail."""
        view = pb.ATTEMPT_VIEW_FULL if full else pb.ATTEMPT_VIEW_BASIC
        reply = self._call(
            self._attempts.GetAttempt, pb.GetAttemptRequest(view=view, **_key(name_or_id))
        )
        result: Attempt = reply.attempt
        return result

    def update(self, attempt: Attempt, fields: Iterable[str]) -> Attempt:
        """Writes the named fields of `attempt` (training_commands, testing_commands,
        n_epoch, limit, tags: a whole map) to the stored one of its name (or id)."""
        request = pb.UpdateAttemptRequest(attempt=attempt)
        request.update_mask.paths.extend(fields)
        reply = self._call(self._attempts.UpdateAttempt, request)
        result: Attempt = reply.attempt
        return result

    def delete(self, name_or_id: str | int) -> None:
        """Removes an attempt with its epochs and weights (not while queued or running)."""
        self._call(self._attempts.DeleteAttempt, pb.DeleteAttemptRequest(**_key(name_or_id)))

    def list(
        self,
        *,
        prefix: str = "",
        label: str = "",
        statuses: Iterable[Any] = (),
        filter: str = "",
        order_by_field: str = "",
    ) -> Iterator[Attempt]:
        """Every matching attempt, fetched a page at a time. `filter` is an AIP-160
        expression, e.g. 'training_commands.optimizer.name = "Adam"'; `order_by_field` a
        numeric field, e.g. "accuracy desc" (default: id order)."""
        request = pb.ListAttemptsRequest(
            page_size=200,
            name_prefix=prefix,
            label_name=label,
            statuses=list(statuses),
            filter=filter,
            order_by_field=order_by_field,
        )
        while True:
            reply = self._call(self._attempts.ListAttempts, request)
            yield from reply.attempts
            if not reply.next_page_token:
                return
            request.page_token = reply.next_page_token

    # Running.
    def train(self, name: str, command: attempt_pb2.TrainCommand) -> Attempt:
        """Queues training (an existing `name` starts over); returns at once."""
        reply = self._call_safely(self._attempts.Train, pb.TrainRequest(name=name, command=command))
        result: Attempt = reply.attempt
        return result

    def test(self, name: str, command: attempt_pb2.TestCommand | None = None) -> Attempt:
        """Queues a test of a trained attempt; returns at once."""
        request = pb.TestRequest(name=name)
        if command is not None:
            request.command.CopyFrom(command)
        reply = self._call_safely(self._attempts.Test, request)
        result: Attempt = reply.attempt
        return result

    def cancel(self, name: str) -> Attempt:
        reply = self._call(self._attempts.CancelAttempt, pb.CancelAttemptRequest(name=name))
        result: Attempt = reply.attempt
        return result

    def watch(
        self, name: str, from_epoch: int = 0
    ) -> Iterator[Attempt | EpochMetrics | TestProgress | attempt_pb2.Prognosis]:
        """The attempt first, then each epoch, each new prognosis, each status change (an
        Attempt) and test progress, until a terminal state. Resume with `from_epoch` = the
        last epoch seen."""
        request = pb.WatchAttemptRequest(name=name, from_epoch=from_epoch)
        call = self._attempts.WatchAttempt(request)
        try:
            for event in call:
                kind = event.WhichOneof("event")
                yield getattr(event, kind)
        except grpc.RpcError as err:
            raise translate(err) from None
        finally:
            # A reader that stops early (Ctrl-C in `metalearn watch`, a `break`) ends the
            # stream here, not when the channel closes under it (a no-op once it ended).
            call.cancel()

    def wait(self, name: str) -> Attempt:
        """Blocks until the attempt stops (trained, complete, failed or cancelled)."""
        for _ in self.watch(name):
            pass
        return self.get(name)

    def download(self, name: str, directory: str | Path) -> Path:
        """Saves the trained weights (safetensors, with their model spec) in `directory`,
        as `<name>.safetensors`: the file is named from `name`, never from the server."""
        if "/" in name or "\\" in name or name in ("", ".", ".."):
            raise InvalidRequest("INVALID_ARGUMENT", f"{name!r} cannot name a file")
        data, digest = bytearray(), ""
        try:
            for chunk in self._attempts.DownloadModel(pb.DownloadModelRequest(name=name)):
                data += chunk.data
                digest = chunk.sha256
        except grpc.RpcError as err:
            raise translate(err) from None
        if hashlib.sha256(data).hexdigest() != digest:
            raise UnavailableError("DATA_LOSS", "the download arrived damaged; try again")
        path = Path(directory) / f"{name}.safetensors"  # the caller's name, not the server's
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(bytes(data))
        return path

    # Studies: searches over training commands, each trial an attempt `STUDY-k`.
    def create_study(
        self, study: Study | dict[str, Any], *, warm_start: WarmStart | dict[str, Any] | None = None
    ) -> Study:
        """Checks a study whole and starts it; `study` is a Study or its JSON as a dict
        (prototype-style names: `base_command`, `search_space`, `n_trials`, `warm_start`,
        ...). `warm_start` (a WarmStart or its JSON, e.g. {"similar_tasks": 5} or
        {"studies": ["digits"]}) replaces the study's own: it starts from the best
        commands of past tasks, then searches with their trials as prior knowledge."""
        if isinstance(study, dict):
            doc = dict(study)
            if isinstance(doc.get("warm_start"), WarmStart):
                given = doc.pop("warm_start")
                warm_start = given if warm_start is None else warm_start
            try:
                study = documents.parse(doc, Study(), "study")
            except documents.DocumentError as err:
                raise InvalidRequest("INVALID_ARGUMENT", str(err)) from None
        if warm_start is not None:
            copy = Study()
            copy.CopyFrom(study)  # the caller's message stays as it was
            copy.warm_start.CopyFrom(_warm_start(warm_start))
            study = copy
        # No request_id on CreateStudy: a retry could meet its own study (ALREADY_EXISTS).
        reply = self._call(
            self._studies.CreateStudy, study_service_pb2.CreateStudyRequest(study=study)
        )
        result: Study = reply.study
        return result

    def study(self, name: str) -> Study:
        """One study with every trial (params, state, epochs, value) and the best."""
        reply = self._call(self._studies.GetStudy, study_service_pb2.GetStudyRequest(name=name))
        result: Study = reply.study
        return result

    def watch_study(self, name: str) -> Iterator[study_service_pb2.WatchStudyResponse]:
        """The study with its trials first, then each trial started, each epoch of a
        trial, each trial pruned or finished, each new best, and the finished study."""
        request = study_service_pb2.WatchStudyRequest(name=name)
        try:
            yield from self._studies.WatchStudy(request)
        except grpc.RpcError as err:
            raise translate(err) from None

    def studies(self) -> Iterator[Study]:
        """Every study, newest first, fetched a page at a time (without their trials)."""
        request = study_service_pb2.ListStudiesRequest(page_size=200)
        while True:
            reply = self._call(self._studies.ListStudies, request)
            yield from reply.studies
            if not reply.next_page_token:
                return
            request.page_token = reply.next_page_token

    def stop_study(self, name: str, cancel_running: bool = False) -> Study:
        """Asks for no more trials; running ones finish, or are cancelled with
        `cancel_running`. Returns the study as it then stands (DONE once none runs)."""
        request = study_service_pb2.StopStudyRequest(name=name, cancel_running=cancel_running)
        reply = self._call(self._studies.StopStudy, request)
        result: Study = reply.study
        return result

    def delete_study(self, name: str) -> None:
        """Removes a study that no longer runs; its trials stay as attempts."""
        self._call(self._studies.DeleteStudy, study_service_pb2.DeleteStudyRequest(name=name))

    # Tasks: what metalearn learns from its history (labels + image ops + their images).
    def profile_task(
        self,
        labels: Iterable[str],
        image_ops: Iterable[ImageOp | dict[str, Any]] | None = None,
        wait: bool = True,
    ) -> Task:
        """The task these labels make, with its profile (meta-features) if stored; else it
        is queued for a trainer and, with `wait`, awaited (at most 60 s: then
        UnavailableError, code DEADLINE_EXCEEDED; call again)."""
        request = task_service_pb2.ProfileTaskRequest(task=task_key(labels, image_ops), wait=wait)
        timeout = max(self._timeout, _PROFILE_WAIT) if wait else None
        reply = self._call(self._tasks.ProfileTask, request, timeout)
        result: Task = reply.task
        return result

    def tasks(self, page_size: int = 200, all_versions: bool = False) -> Iterator[Task]:
        """Every task (one row per labels and ops, or every version), newest first,
        fetched `page_size` at a time."""
        request = task_service_pb2.ListTasksRequest(page_size=page_size, all_versions=all_versions)
        while True:
            reply = self._call(self._tasks.ListTasks, request)
            yield from reply.tasks
            if not reply.next_page_token:
                return
            request.page_token = reply.next_page_token

    def similar_tasks(
        self,
        labels: Iterable[str] | None = None,
        fingerprint: str | None = None,
        limit: int = 5,
        attempts_per_task: int = 3,
        *,
        image_ops: Iterable[ImageOp | dict[str, Any]] | None = None,
    ) -> task_service_pb2.FindSimilarTasksResponse:
        """Past tasks (those with trained attempts) ranked by distance to the task of
        `labels` (profiled first if need be) or to the stored task `fingerprint`, each
        with its best attempts; and the distance used (learned or standardized)."""
        if (labels is None) == (fingerprint is None):
            raise InvalidRequest(
                "INVALID_ARGUMENT", "give labels or a fingerprint", {"target": "one of the two"}
            )
        request = task_service_pb2.FindSimilarTasksRequest(
            limit=limit, attempts_per_task=attempts_per_task
        )
        if fingerprint is not None:
            request.fingerprint = fingerprint
        else:
            request.task.CopyFrom(task_key(labels or (), image_ops))
        reply: task_service_pb2.FindSimilarTasksResponse = self._call(
            self._tasks.FindSimilarTasks, request, max(self._timeout, _PROFILE_WAIT)
        )
        return reply

    def suggest_command(
        self,
        labels: Iterable[str],
        neighbours: int = 5,
        *,
        image_ops: Iterable[ImageOp | dict[str, Any]] | None = None,
    ) -> task_service_pb2.SuggestCommandResponse:
        """The command metalearn would start this task with (with its labels and image
        ops), the reason and the past attempts it came from; `fallback` when there is no
        history to draw from. Train it with `train(name, reply.command)`."""
        request = task_service_pb2.SuggestCommandRequest(
            task=task_key(labels, image_ops), neighbours=neighbours
        )
        reply: task_service_pb2.SuggestCommandResponse = self._call(
            self._tasks.SuggestCommand, request, max(self._timeout, _PROFILE_WAIT)
        )
        return reply

    def fit_task_distance(self) -> task_service_pb2.TaskDistance:
        """Refits the learned task distance on the store now (admins only); too little
        history keeps the standardized one."""
        reply = self._call(self._tasks.FitTaskDistance, task_service_pb2.FitTaskDistanceRequest())
        result: task_service_pb2.TaskDistance = reply.distance
        return result

    # The curve model.
    def fit_curve_model(self, timeout: float = 600.0) -> curve_service_pb2.CurveModel:
        """Fits a new version of the curve model now (admins only; up to a minute or so on
        a large store); FailedPreconditionError saying how much data there is when there
        is too little."""
        reply = self._call(
            self._curves.FitCurveModel, curve_service_pb2.FitCurveModelRequest(), timeout
        )
        result: curve_service_pb2.CurveModel = reply.model
        return result

    def curve_model(self) -> curve_service_pb2.CurveModel:
        """The newest curve model and its quality; NotFoundError (with why) when none."""
        reply = self._call(self._curves.GetCurveModel, curve_service_pb2.GetCurveModelRequest())
        result: curve_service_pb2.CurveModel = reply.model
        return result

    # Tokens (admins only).
    def create_token(
        self, name: str, role: str, expires_in_days: float = 0.0
    ) -> token_service_pb2.CreateTokenResponse:
        """A new principal's token; `role` is reader, writer, admin or trainer. The
        reply's `secret` is shown only here."""
        try:
            role_value = token_service_pb2.Role.Value(f"ROLE_{role.upper()}")
        except ValueError:
            raise InvalidRequest(
                "INVALID_ARGUMENT", "bad role", {"role": "reader, writer, admin or trainer"}
            ) from None
        request = token_service_pb2.CreateTokenRequest(
            name=name,
            role=role_value,  # type: ignore[arg-type]
            expires_in_days=expires_in_days,
        )
        reply: token_service_pb2.CreateTokenResponse = self._call(self._tokens.CreateToken, request)
        return reply

    def tokens(self) -> tuple[token_service_pb2.Token, ...]:
        """Every token: names, roles and times (never a secret)."""
        reply = self._call(self._tokens.ListTokens, token_service_pb2.ListTokensRequest())
        return tuple(reply.tokens)

    def whoami(self) -> token_service_pb2.Token:
        """The token this client calls with: its name and role (any token may ask)."""
        reply = self._call(self._tokens.WhoAmI, token_service_pb2.WhoAmIRequest())
        token: token_service_pb2.Token = reply.token
        return token

    def revoke_token(self, name: str) -> None:
        self._call(self._tokens.RevokeToken, token_service_pb2.RevokeTokenRequest(name=name))

    # Images.
    def upload_images(
        self,
        images: Iterable[tuple[str, bytes]] | Iterable[dataset_service_pb2.UploadImagesRequest],
    ) -> dataset_service_pb2.UploadImagesResponse:
        """Uploads (label, encoded image) pairs in one stream; bad images are reported,
        never lose the good ones."""

        def requests() -> Iterator[dataset_service_pb2.UploadImagesRequest]:
            for item in images:
                if isinstance(item, dataset_service_pb2.UploadImagesRequest):
                    yield item
                else:
                    label, data = item
                    yield dataset_service_pb2.UploadImagesRequest(label=label, data=data)

        try:
            reply: dataset_service_pb2.UploadImagesResponse = self._datasets.UploadImages(
                requests()
            )
        except grpc.RpcError as err:
            raise translate(err) from None
        return reply

    def labels(self) -> dict[str, int]:
        """Each label's image count."""
        reply = self._call(self._datasets.ListLabels, dataset_service_pb2.ListLabelsRequest())
        return {label.name: label.image_count for label in reply.labels}

    def delete_images(self, labels: Iterable[str]) -> int:
        """Deletes every image of these labels (admins only); returns how many."""
        request = dataset_service_pb2.DeleteImagesRequest(label_names=list(labels))
        reply = self._call(self._datasets.DeleteImages, request)
        return int(reply.deleted)
