"""Reporting a run of your own training code to metalearn.

    import metalearn

    with metalearn.start_run(name="r1", labels=["cat", "dog"], params={"lr": 0.01}) as run:
        for epoch in range(1, 11):
            ...                                   # train one epoch
            run.log(epoch=epoch, loss=0.7, val_accuracy=0.6)
            if run.should_stop():                 # cancelled, pruned, or hopeless
                break

`log` never waits for the network: it checks its arguments and appends them to a
bounded queue; a background thread batches them, keeps them in a local spool file until
the gateway has stored them, and streams them (gateway/reporting/ on the other side).

The task a run learns is what it declares: `labels` (or a `dataset` name), `input_shape`,
`train_size`, and `task_features`, meta-features it knows of its data by the names a
task's profile has (e.g. `{"imbalance": 0.2, "pixel_std": 0.3}`). Opt-in, a sample of its
images makes metalearn profile the task from pixels instead:
`run.log_task_sample(x_train[:500], y_train[:500])` (sample.py: what it takes, and how
it stays off the training thread).
"""

from __future__ import annotations

import hashlib
import math
import numbers
import os
import re
import time
import uuid
import warnings
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import struct_pb2

from metalearn.credentials import find_token, open_channel
from metalearn.outgoing import translate
from metalearn.reporting.sender import Sender, StopInfo
from metalearn.reporting.spool import Spool
from metalearn.structs import integral_struct
from metalearn.tls import ClientTls
from metalearn.v1 import (
    attempt_pb2,
    attempt_service_pb2,
    attempt_service_pb2_grpc,
    reporting_service_pb2,
    reporting_service_pb2_grpc,
    task_pb2,
)

if TYPE_CHECKING:
    from metalearn.reporting.sample import SampleUpload

rpb = reporting_service_pb2

DEFAULT_GATEWAY = "127.0.0.1:50051"
# Set by `metalearn agent` for the script it runs: the study trial's run to report to.
RUN_ID_ENV = "METALEARN_RUN_ID"
CLIENT = "metalearn-python"
# The known metrics of an epoch, by the names `log` takes (`lr` is learning_rate).
_EPOCH_FIELDS = {
    "loss": "loss",
    "val_loss": "val_loss",
    "val_accuracy": "val_accuracy",
    "learning_rate": "learning_rate",
    "lr": "learning_rate",
    "seconds": "seconds",
    "samples_per_second": "samples_per_second",
}
_FRACTIONS = frozenset({"val_accuracy"})
_KEY_RE = re.compile(r"\A[A-Za-z0-9 ._/:-]{1,250}\Z")
# What the queue holds at most before `log` waits for the sender (which then is far
# behind: something is wrong with the machine, and losing metrics would be worse).
QUEUE_ITEMS = 200_000
_MODEL_CHUNK = 1024 * 1024


def _number(key: str, value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"metric {key!r}: {value!r} is not a number") from None


class Run:
    """A run being reported. Use it as a context manager, or call `finish` yourself."""

    def __init__(
        self,
        channel: grpc.Channel,
        start: rpb.StartRunRequest,
        attempt: attempt_pb2.Attempt | None,
        *,
        spool_dir: Path | None,
        flush_seconds: float,
        finish_timeout: float,
    ) -> None:
        self.name = start.name
        self._channel = channel
        self._stub = reporting_service_pb2_grpc.ReportingServiceStub(channel)
        # Appended without a lock (a deque's append is atomic) and drained by the sender.
        self._queue: deque[tuple[Any, ...]] = deque()
        self._spool = Spool(spool_dir, prefix=re.sub(r"[^A-Za-z0-9._-]", "_", start.name))
        heartbeat = start.heartbeat_seconds or 600
        self._sender = Sender(
            channel, self._queue, self._spool, start, attempt, flush_seconds,
            max(1.0, min(30.0, heartbeat / 4)),
        )  # fmt: skip
        self._labels = list(start.task.labels)
        self._finish_timeout = finish_timeout
        self._step = -1
        self._known: set[str] = set()
        # The epoch being logged (its fields merge until a later epoch is logged).
        self._epoch = 0
        self._epoch_values: dict[str, float] = {}
        self._epoch_extra: dict[str, float] = {}
        self._last_epoch = 0
        self._finished = False
        # Task samples sent (log_task_sample), the newest last; sample.py is imported
        # with the first (it needs numpy and Pillow, which a run without one never loads).
        self._samples: list[SampleUpload] = []
        self._sender.start()

    # What training calls.
    def log(
        self,
        metrics: Mapping[str, Any] | None = None,
        /,
        *,
        step: int | None = None,
        epoch: int | None = None,
        **values: Any,
    ) -> None:
        """Records metrics without waiting for the network.

        `run.log(epoch=3, loss=0.41, val_accuracy=0.88)`: epoch 3 (1, 2, ... in order;
        several calls for one epoch merge, as its training and validation finish apart).
        An epoch needs its mean training `loss`; `val_loss`, `val_accuracy`,
        `learning_rate` (or `lr`), `seconds`, `samples_per_second` are its other known
        metrics, and any other name is kept as a metric at step `epoch`.
        `run.log({"train/loss": 0.52}, step=1200)`: named metrics at a step (without
        `step`, one past the last, as W&B counts)."""
        # The common case first and in few steps: this runs between training steps, with
        # cold caches (bench/reporting.py measures it there).
        if self._finished or self._sender.over or epoch is not None:
            self._log_rarely(metrics, step, epoch, values)
            return
        given = {**metrics, **values} if metrics is not None else values
        known = self._known
        for key, value in given.items():
            if type(value) is not float or key not in known:
                given = self._numbers(given)
                break
        if step is None:
            step = self._step + 1
        elif type(step) is not int or step < 0:
            raise ValueError(f"step must be an integer >= 0, got {step!r}")
        if step > self._step:
            self._step = step
        if given:
            queue = self._queue
            queue.append(("points", step, time.time_ns() // 1_000_000, given))
            if len(queue) >= QUEUE_ITEMS:
                self._wait_for_sender()

    def _log_rarely(
        self,
        metrics: Mapping[str, Any] | None,
        step: int | None,
        epoch: int | None,
        values: dict[str, Any],
    ) -> None:
        """An epoch, or a run that has ended."""
        if self._finished:
            raise RuntimeError(f"run {self.name!r} has finished")
        if self._sender.stop is not None:
            return  # metalearn ended the run (should_stop says so): nothing more is kept
        if self._sender.error is not None:
            err = self._sender.error
            raise translate(err) if isinstance(err, grpc.RpcError) else err
        assert epoch is not None
        if step is not None:
            raise ValueError("log takes an epoch or a step, not both")
        self._log_epoch(epoch, {**metrics, **values} if metrics is not None else values)

    def _numbers(self, given: Mapping[str, Any]) -> dict[str, float]:
        """`given` checked: names a run may have, values that are numbers."""
        numbers: dict[str, float] = {}
        for key, value in given.items():
            if key not in self._known:
                self._check_key(key)
            numbers[key] = value if type(value) is float else _number(key, value)
        return numbers

    def _put(self, item: tuple[Any, ...]) -> None:
        self._queue.append(item)
        if len(self._queue) >= QUEUE_ITEMS:
            self._wait_for_sender()

    def _wait_for_sender(self) -> None:
        # The sender is far behind: wait for it rather than lose what was logged.
        while len(self._queue) >= QUEUE_ITEMS // 2 and self._sender.is_alive():
            time.sleep(0.01)

    def log_metric(self, key: str, value: float, step: int | None = None) -> None:
        """MLflow's spelling: one metric at a step."""
        self.log({key: value}, step=step)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """MLflow's spelling: several metrics at a step."""
        self.log(metrics, step=step)

    def should_stop(self) -> bool:
        """Whether metalearn asked this run to stop: it was cancelled, its study pruned
        it, or it asked to stop once hopeless and is. `stop_reason` says which."""
        return self._sender.stop is not None

    @property
    def stop_reason(self) -> str:
        found = self._sender.stop
        return f"{found.status}: {found.reason}" if found is not None else ""

    @property
    def params(self) -> dict[str, Any]:
        """The run's parameters: those given to `start_run`, or a study trial's sampled
        values when `metalearn agent` started this script."""
        return integral_struct(self._attempt().reported.params)

    @property
    def id(self) -> int:
        """The run's attempt id (waits until the gateway has started the run)."""
        return self._attempt().id

    def _attempt(self) -> attempt_pb2.Attempt:
        if not self._sender.started.wait(self._finish_timeout):
            raise TimeoutError(f"run {self.name!r}: the gateway has not started it yet")
        assert self._sender.attempt is not None
        return self._sender.attempt

    def log_model(self, path: str | os.PathLike[str]) -> attempt_pb2.ArtifactInfo:
        """Stores a file as the run's model (its size and sha256 checked by the gateway;
        `metalearn download` reads it back). Waits for the upload."""
        file = Path(path)
        digest = hashlib.sha256()
        with file.open("rb") as f:
            for piece in iter(lambda: f.read(_MODEL_CHUNK), b""):
                digest.update(piece)
        size = file.stat().st_size
        header = rpb.UploadHeader(attempt_id=self.id, size_bytes=size, sha256=digest.hexdigest())

        def messages() -> Iterator[rpb.UploadModelRequest]:
            yield rpb.UploadModelRequest(header=header)
            with file.open("rb") as f:
                for piece in iter(lambda: f.read(_MODEL_CHUNK), b""):
                    yield rpb.UploadModelRequest(chunk=piece)

        try:
            return self._stub.UploadModel(messages(), timeout=600).model
        except grpc.RpcError as err:
            raise translate(err) from None

    def log_task_sample(
        self, images: Sequence[Any], labels: Sequence[Any], *, max_images: int = 500,
        seed: int = 0,
    ) -> None:  # fmt: skip
        """Sends a sample of the images this run learns (opt-in), so that metalearn
        profiles its task from pixels: a seeded, uniform random sample of at most
        `max_images` (1 to 1,000) of `images`, each labelled by `labels` (an index into
        the run's declared labels, or one of their names). See sample.py for the images
        it takes. Bad input raises ValueError here; the encoding and the upload run in a
        background thread, and what the gateway answers lands in `task_sample_task` (or
        `task_sample_error`, also logged as a warning: never raised into training)."""
        from metalearn.reporting import sample

        if self._finished:
            raise RuntimeError(f"run {self.name!r} has finished")
        if (
            isinstance(max_images, bool)
            or not isinstance(max_images, int)
            or not (1 <= max_images <= sample.MAX_IMAGES)
        ):
            raise ValueError(f"max_images must be an integer from 1 to {sample.MAX_IMAGES},"
                             f" got {max_images!r}")  # fmt: skip
        if isinstance(images, (str, bytes)) or not hasattr(images, "__len__"):
            raise ValueError("images must be a sequence of images (a list, an array, a tensor)")
        indices = sample.label_indices(labels, self._labels)
        if len(images) != len(indices):
            raise ValueError(
                f"images and labels differ in length: {len(images)} images, {len(indices)} labels"
            )
        if not indices:
            raise ValueError("images is empty: a sample needs images of at least 2 labels")
        drawn = sample.draw(len(indices), max_images, seed)
        shown = {indices[i] for i in drawn}
        if len(shown) < 2:
            raise ValueError(
                f"the sample shows only the label {self._labels[next(iter(shown))]!r}: it"
                " needs images of at least 2 of the run's declared labels"
            )
        items = [sample.prepare(images[i], indices[i], f"images[{i}]") for i in drawn]
        upload = sample.SampleUpload(
            self._channel, items, self._started_id, self.name,
            self._samples[-1] if self._samples else None,
        )  # fmt: skip
        self._samples.append(upload)
        upload.start()

    @property
    def task_sample_task(self) -> task_pb2.Task | None:
        """The task version the last sample made (PENDING until a trainer profiles it),
        once the gateway has taken it; None before."""
        return self._samples[-1].task if self._samples else None

    @property
    def task_sample_error(self) -> str | None:
        """Why the last sample was not taken (the gateway's refusal, or an image that
        could not be read); None while it is on its way, once taken, or without one."""
        return self._samples[-1].error if self._samples else None

    def _started_id(self) -> int | None:
        """The run's attempt id once the gateway has started it; None when the sender
        has given up (the run will never start)."""
        while not self._sender.started.wait(0.5):
            if not self._sender.is_alive():
                return None
        assert self._sender.attempt is not None
        return self._sender.attempt.id

    # Its end.
    def finish(
        self,
        status: str = "FINISHED",
        *,
        error: str = "",
        test_accuracy: float | None = None,
        test_loss: float | None = None,
        test_result: attempt_pb2.TestResult | None = None,
    ) -> attempt_pb2.Attempt | None:
        """Sends what is left, then ends the run: FINISHED (TRAINED, or COMPLETE with a
        test result), FAILED (with `error`) or KILLED. Returns the run as stored (None
        when metalearn stopped it first: it has ended already)."""
        if self._finished:
            return None
        self._seal_epoch()
        self._finished = True
        self._sender.close()
        self._sender.join(self._finish_timeout)
        self._wait_for_samples()
        try:
            return self._end(status, error, test_accuracy, test_loss, test_result)
        finally:
            self._channel.close()

    def _wait_for_samples(self) -> None:
        """A sample still on its way gets a bounded wait: the run's end is not held up
        for long by what is only a help to meta-learning."""
        if not self._samples:
            return
        from metalearn.reporting.sample import FINISH_WAIT_SECONDS

        wait = min(FINISH_WAIT_SECONDS, self._finish_timeout)
        last = self._samples[-1]  # it waits for the ones before it
        last.join(wait)
        if last.is_alive():
            warnings.warn(
                f"metalearn: run {self.name!r}: its task sample was not sent within"
                f" {wait:.0f} s; it is dropped",
                stacklevel=3,
            )

    def _end(
        self,
        status: str,
        error: str,
        test_accuracy: float | None,
        test_loss: float | None,
        test_result: attempt_pb2.TestResult | None,
    ) -> attempt_pb2.Attempt | None:
        sender = self._sender
        if sender.is_alive():
            self._spool.close(keep=True)
            raise TimeoutError(
                f"run {self.name!r}: the gateway did not take the last batches within"
                f" {self._finish_timeout:.0f} s; they are kept in {self._spool.path}"
            )
        if sender.error is not None:
            self._spool.close(keep=True)
            err = sender.error
            raise translate(err) if isinstance(err, grpc.RpcError) else err
        self._spool.close()
        if sender.stop is not None:
            return None
        end = {"FINISHED": rpb.RUN_END_FINISHED, "FAILED": rpb.RUN_END_FAILED,
               "KILLED": rpb.RUN_END_KILLED}.get(status.upper())  # fmt: skip
        if end is None:
            raise ValueError(f"status is FINISHED, FAILED or KILLED, not {status!r}")
        request = rpb.FinishRunRequest(
            attempt_id=self._attempt().id, end=end, error=error[:4096], last_epoch=self._last_epoch
        )
        if test_result is not None:
            request.test_result.CopyFrom(test_result)
        elif test_accuracy is not None:
            request.test_result.accuracy = test_accuracy
            if test_loss is not None:
                request.test_result.loss = test_loss
        for pause in (0.5, 1, 2, 4, 8, 15, 30, 60, 60, 60, 60, 60):
            try:
                return self._stub.FinishRun(request, timeout=30).attempt
            except grpc.RpcError as err:
                if err.code() not in (
                    grpc.StatusCode.UNAVAILABLE,
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                ):
                    raise translate(err) from None
                time.sleep(pause)
        try:
            return self._stub.FinishRun(request, timeout=30).attempt
        except grpc.RpcError as err:
            raise translate(err) from None

    def __enter__(self) -> Run:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None:
            self.finish()
        elif issubclass(kind, KeyboardInterrupt):
            self.finish("KILLED", error="interrupted")
        else:
            try:
                self.finish("FAILED", error=f"{kind.__name__}: {err}")
            except Exception as finish_error:  # the training error is the one to see
                warnings.warn(f"metalearn: could not finish run {self.name!r}: {finish_error}",
                              stacklevel=2)  # fmt: skip

    # Checks, on the training thread: a mistake is raised where it was made.
    def _check_key(self, key: str) -> None:
        if not isinstance(key, str) or not _KEY_RE.fullmatch(key):
            raise ValueError(
                f"metric name {key!r}: 1-250 letters, digits, spaces, '.', '_', '-', '/' or ':'"
            )
        if len(self._known) >= 1000:
            raise ValueError("a run has at most 1000 metric names")
        self._known.add(key)

    def _log_epoch(self, epoch: int, given: Mapping[str, Any]) -> None:
        if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 1:
            raise ValueError(f"epoch must be an integer >= 1, got {epoch!r}")
        if epoch != self._epoch:
            self._seal_epoch()  # the open epoch is complete once a later one is logged
            if epoch != self._last_epoch + 1:
                raise ValueError(
                    f"epoch {epoch} after epoch {self._last_epoch}: epochs go 1, 2, 3, ..."
                )
            self._epoch = epoch
        known_values: dict[str, float] = {}
        extra: dict[str, float] = {}
        for key, value in given.items():
            known = _EPOCH_FIELDS.get(key)
            number = value if type(value) is float else _number(key, value)
            if known is not None:
                if known != "loss" and not (math.isfinite(number) and number >= 0):
                    raise ValueError(f"epoch {epoch}: {key} must be a finite number >= 0,"
                                     f" got {number}")  # fmt: skip
                if known in _FRACTIONS and number > 1:
                    raise ValueError(f"epoch {epoch}: {key} is a fraction in [0, 1], got {number}")
                known_values[known] = number
            else:
                if key not in self._known:
                    self._check_key(key)
                extra[key] = number
        # All or nothing: a call with a bad value changes nothing of its epoch.
        self._epoch_values.update(known_values)
        self._epoch_extra.update(extra)

    def _seal_epoch(self) -> None:
        """The epoch being logged is complete: it goes to the sender."""
        if not self._epoch or self._epoch == self._last_epoch:
            return
        if "loss" not in self._epoch_values:
            raise ValueError(
                f"epoch {self._epoch} has no loss: log(epoch={self._epoch}, loss=...) before"
                " the next epoch (other metrics can go at a step)"
            )
        epoch = rpb.ReportedEpoch(
            epoch=self._epoch, metrics=self._epoch_extra, **self._epoch_values
        )
        self._put(("epoch", epoch))
        self._last_epoch = self._epoch
        self._epoch_values, self._epoch_extra = {}, {}


def _version() -> str:
    """This package's version (read from its installed metadata: importing `metalearn`
    itself from here would make an import cycle with its lazy `start_run`)."""
    try:
        return metadata.version("metalearn")
    except metadata.PackageNotFoundError:
        return "dev"


def _struct(params: Mapping[str, Any] | None) -> struct_pb2.Struct:
    found = struct_pb2.Struct()
    if params:
        try:
            found.update(dict(params))
        except (ValueError, TypeError) as err:
            raise TypeError(
                f"params must be JSON-like (numbers, strings, lists, dicts): {err}"
            ) from None
    return found


def _features(given: Mapping[str, Any] | None) -> dict[str, float]:
    """Declared meta-features checked on the caller's thread: string names, finite
    numbers (which names a profile has is the gateway's to say)."""
    found: dict[str, float] = {}
    for key, value in (given or {}).items():
        if not isinstance(key, str):
            raise TypeError(f"task_features: the name {key!r} is not a string")
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"task_features[{key!r}]: {value!r} is not a number")
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(f"task_features[{key!r}]: {number} is not finite")
        found[key] = number
    return found


def start_run(
    name: str | None = None,
    *,
    labels: Sequence[str] = (),
    dataset: str = "",
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
    n_epoch: int = 0,
    input_shape: Sequence[int] = (),
    train_size: int = 0,
    task_features: Mapping[str, float] | None = None,
    validation_images_per_label: Sequence[int] = (),
    stop_when_hopeless: bool = False,
    heartbeat_seconds: int = 0,
    gateway: str | None = None,
    token: str | None = None,
    tls: ClientTls | None = None,
    spool_dir: str | os.PathLike[str] | None = None,
    flush_seconds: float = 0.5,
    finish_timeout: float = 600.0,
) -> Run:
    """Starts reporting a run (see the module's docstring).

    `gateway`: else METALEARN_GATEWAY, else 127.0.0.1:50051; `token`: else as the CLI
    finds it (METALEARN_TOKEN, METALEARN_TOKEN_FILE, the local gateway's admin token);
    `tls`: what to trust (None: METALEARN_TLS_CA when set, else plaintext). A request the
    gateway refuses raises `metalearn.MetalearnError` at once, naming the bad field; a
    gateway that cannot be reached is tried again in the background while `log` goes on.
    `task_features`: meta-features of the task that the run knows (see the module's
    docstring); their names are the gateway's to check, their values are checked here.
    `validation_images_per_label`: how many examples of each of `labels` the run
    validates on, so that chance (what learning nothing scores) is the largest label's
    share, not 1 / labels: a run stuck naming the common label is seen at chance.
    """
    address = gateway or os.environ.get("METALEARN_GATEWAY") or DEFAULT_GATEWAY
    if tls is None and (ca := os.environ.get("METALEARN_TLS_CA")):
        tls = ClientTls(Path(ca), server_name=os.environ.get("METALEARN_TLS_SERVER_NAME", ""))
    start = rpb.StartRunRequest(
        name=name or f"run-{uuid.uuid4().hex[:12]}",
        task=attempt_pb2.DeclaredTask(
            dataset=dataset,
            labels=list(labels),
            input_shape=list(input_shape),
            train_size=train_size,
            features=_features(task_features),
            validation_images_per_label=list(validation_images_per_label),
        ),
        params=_struct(params),
        tags=dict(tags or {}),
        n_epoch=n_epoch,
        stop_when_hopeless=stop_when_hopeless,
        heartbeat_seconds=heartbeat_seconds,
        client=f"{CLIENT}/{_version()}",
        request_id=str(uuid.uuid4()),
    )
    channel = open_channel(address, find_token(token), tls)
    if run_id := os.environ.get(RUN_ID_ENV, "").strip():
        # A study trial's run, started by `metalearn agent`: reported to, not started.
        return _attach(channel, int(run_id), spool_dir, flush_seconds, finish_timeout)
    attempt = None
    try:
        attempt = (
            reporting_service_pb2_grpc.ReportingServiceStub(channel)
            .StartRun(start, timeout=10)
            .attempt
        )
    except grpc.RpcError as err:
        if err.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            channel.close()
            raise translate(err) from None
        warnings.warn(
            f"metalearn: gateway {address} unreachable ({err.code().name}); run"
            f" {start.name!r} starts once it is back, its metrics kept until then",
            stacklevel=2,
        )
    return Run(
        channel, start, attempt,
        spool_dir=Path(spool_dir) if spool_dir is not None else None,
        flush_seconds=flush_seconds, finish_timeout=finish_timeout,
    )  # fmt: skip


def _attach(
    channel: grpc.Channel,
    attempt_id: int,
    spool_dir: str | os.PathLike[str] | None,
    flush_seconds: float,
    finish_timeout: float,
) -> Run:
    stub = attempt_service_pb2_grpc.AttemptServiceStub(channel)
    try:
        attempt = stub.GetAttempt(
            attempt_service_pb2.GetAttemptRequest(id=attempt_id), timeout=30
        ).attempt
    except grpc.RpcError as err:
        channel.close()
        raise translate(err) from None
    start = rpb.StartRunRequest(
        name=attempt.name,
        task=attempt.reported.task,
        n_epoch=attempt.n_epoch,
        heartbeat_seconds=attempt.reported.heartbeat_seconds,
    )
    run = Run(
        channel, start, attempt,
        spool_dir=Path(spool_dir) if spool_dir is not None else None,
        flush_seconds=flush_seconds, finish_timeout=finish_timeout,
    )  # fmt: skip
    run._last_epoch = run._epoch = attempt.current_epoch  # a trial run again goes on
    return run


__all__ = ["RUN_ID_ENV", "Run", "StopInfo", "start_run"]
