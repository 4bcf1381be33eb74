"""What a reporter sends, checked whole before anything is stored: a run's start, each
batch of epochs and points, its end. Pure: no database, no gRPC.

The known metrics of an epoch get the checks a trainer's do (gateway/trainers/checks.py):
finite, fractions in [0, 1], nothing negative; a NaN loss is the run diverging, as it is
a trainer's. A named metric may hold any double (NaN and infinities are what MLflow
users log too); its name, step and time are bounded.
"""

from __future__ import annotations

import itertools
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from google.protobuf import struct_pb2

from gateway.attempts.validation import (
    check_labels,
    check_request_id,
    check_tags,
    text_problem,
)
from gateway.config import Limits
from gateway.datasets import imaging
from gateway.names import check_name
from gateway.store import EpochRecord
from learning.tasks import declared
from metalearn import errors
from metalearn import limits as command_limits
from metalearn.v1 import attempt_pb2, reporting_service_pb2, task_pb2

rpb = reporting_service_pb2

# A metric's name, as MLflow allows them (and the database's CHECK).
KEY_RE = re.compile(r"\A[A-Za-z0-9 ._/:-]{1,250}\Z")
DATASET_RE = re.compile(r"\A[A-Za-z0-9._/:-]{1,128}\Z")
MAX_KEYS = 1_000
# Validation examples of one label at most: past any real dataset, and far inside int64.
MAX_EXAMPLES = 10**12
MAX_BATCH_POINTS = 100_000
MAX_BATCH_EPOCHS = 1_000
# A task's sample (UploadTaskSample), as trainers bound it too (metalearn/limits.py).
MAX_SAMPLE_IMAGES = command_limits.MAX_SAMPLE_IMAGES
MAX_SAMPLE_BYTES = command_limits.MAX_SAMPLE_BYTES
MAX_SAMPLE_PIXELS = command_limits.MAX_SAMPLE_PIXELS
SAMPLE_FORMATS = frozenset(command_limits.SAMPLE_FORMATS)
# What one run may hold of named points: 10 million is 100 metrics logged every step
# of a 100,000-step run; about 600 MB of the database.
MAX_RUN_POINTS = 10_000_000
MAX_STEP = 2**53
# Times a point may carry: from 2000 to a day from now (a clock a little ahead is fine).
MIN_TIME_MS = 946_684_800_000
MAX_PARAMS_BYTES = 64 * 1024
MAX_PARAMS_DEPTH = 8
MAX_CLIENT_CHARS = 128
# The system an imported run comes from ("mlflow", "optuna").
ORIGIN_SYSTEM = re.compile(r"[A-Za-z0-9._-]{1,32}")
MAX_ERROR_CHARS = 4096
DEFAULT_HEARTBEAT = 600
HEARTBEAT_RANGE = (10, 86_400)


@dataclass(frozen=True)
class Points:
    """One metric's points of a batch, as the store takes them."""

    key: str
    steps: list[int]
    values: list[float]
    at_ms: list[int]


@dataclass
class Batch:
    """A batch that passed its checks."""

    sequence: int
    # Epochs not stored yet, in order (the batch's earlier ones were: a batch sent again).
    epochs: list[EpochRecord] = field(default_factory=list)
    # The first new epoch whose loss is not finite, and why: the run diverged there.
    diverged: tuple[int, str] | None = None
    points: list[Points] = field(default_factory=list)

    @property
    def point_count(self) -> int:
        return sum(len(p.steps) for p in self.points)


def _depth(value: struct_pb2.Value, level: int = 1) -> int:
    kind = value.WhichOneof("kind")
    if kind == "struct_value":
        return max((_depth(v, level + 1) for v in value.struct_value.fields.values()),
                   default=level)  # fmt: skip
    if kind == "list_value":
        return max((_depth(v, level + 1) for v in value.list_value.values), default=level)
    return level


def check_declared_task(
    v: errors.Violations, field: str, task: attempt_pb2.DeclaredTask, limits: Limits
) -> None:
    """A task as a reported run or an external study declares it (learning/tasks/declared.py
    makes its profile from it)."""
    if task.dataset and not DATASET_RE.fullmatch(task.dataset):
        v.add(f"{field}.dataset", "1-128 letters, digits, '.', '_', '/', ':' or '-'")
    if len(task.labels) == 1:
        v.add(f"{field}.labels", "a task has at least 2 labels (or none declared)")
    check_labels(v, f"{field}.labels", task.labels, limits)
    if len(task.input_shape) > 4:
        v.add(f"{field}.input_shape", "at most 4 dimensions")
    for i, side in enumerate(task.input_shape):
        if not 1 <= side <= 1_000_000:
            v.add(f"{field}.input_shape[{i}]", f"must be between 1 and 1000000, got {side}")
    shape = list(task.input_shape)
    if len(shape) == 3 and shape[2] in (1, 3, 4) and shape[0] > 4:
        # [32, 32, 3] read as channels first would be 32 channels of 32 x 3 pixels.
        v.add(f"{field}.input_shape", f"channels first, C x H x W: {shape} looks like"
              f" H x W x C; give {[shape[2], shape[0], shape[1]]}")  # fmt: skip
    if task.train_size < 0:
        v.add(f"{field}.train_size", f"must not be negative, got {task.train_size}")
    counts = list(task.validation_images_per_label)
    if counts:
        where = f"{field}.validation_images_per_label"
        if len(counts) != len(task.labels):
            v.add(where, f"one count per label: {len(task.labels)} labels, {len(counts)} counts")
        elif any(not 0 <= c <= MAX_EXAMPLES for c in counts):
            v.add(where, f"each between 0 and {MAX_EXAMPLES:,}")
        elif sum(counts) == 0:
            v.add(where, "at least one validation example in all")
    if len(task.features) > declared.MAX_DECLARED:
        v.add(f"{field}.features", f"at most {declared.MAX_DECLARED} features")
    for name, why in declared.problems(task.features):
        v.add(f"{field}.features[{name[:64]}]", why)


def check_sample(sample: bytes, labels: int, limits: Limits) -> None:
    """Checks a serialized TaskSample of a task with `labels` declared labels whole:
    every image decoded (so run in a worker process: gateway/workers.py), every label an
    index of one of them, at least two shown. INVALID_ARGUMENT names each bad field."""
    parsed = task_pb2.TaskSample.FromString(sample)
    v = errors.Violations()
    where = "sample.images"
    if not parsed.images:
        v.add(where, "send at least one image of each of 2 or more labels")
    if len(parsed.images) > MAX_SAMPLE_IMAGES:
        v.add(where, f"at most {MAX_SAMPLE_IMAGES} images, got {len(parsed.images)}")
    total = sum(len(image.data) for image in parsed.images)
    if total > MAX_SAMPLE_BYTES:
        v.add(where, f"at most {MAX_SAMPLE_BYTES} bytes of images in all, got {total}")
    v.raise_if_any()
    bounded = replace(
        limits,
        max_image_pixels=min(limits.max_image_pixels, MAX_SAMPLE_PIXELS),
        max_image_bytes=MAX_SAMPLE_BYTES,
    )
    for i, image in enumerate(parsed.images):
        if not 0 <= image.label < labels:
            v.add(f"{where}[{i}].label", f"an index of the run's {labels} declared labels,"
                  f" got {image.label}")  # fmt: skip
        try:
            found = imaging.inspect_image(image.data, bounded)
        except imaging.RejectedImage as err:
            v.add(f"{where}[{i}].data", str(err))
            continue
        if found.format not in SAMPLE_FORMATS:
            v.add(f"{where}[{i}].data", f"a PNG or JPEG image, got {found.format}")
    shown = {image.label for image in parsed.images if 0 <= image.label < labels}
    if not v.items and len(shown) < 2:
        v.add(where, "show at least 2 of the run's labels")
    v.raise_if_any()


def check_start(request: rpb.StartRunRequest, limits: Limits) -> int:
    """Checks a StartRun request whole; returns its heartbeat in seconds."""
    v = errors.Violations()
    check_name(v, "name", request.name)
    check_declared_task(v, "task", request.task, limits)
    size = request.params.ByteSize()
    if size > MAX_PARAMS_BYTES:
        v.add("params", f"at most {MAX_PARAMS_BYTES} bytes encoded, got {size}")
    elif any(_depth(value) > MAX_PARAMS_DEPTH for value in request.params.fields.values()):
        v.add("params", f"nested at most {MAX_PARAMS_DEPTH} deep")
    else:
        _check_params(v, "params", request.params)
    check_tags(v, "tags", request.tags)
    if not 0 <= request.n_epoch <= limits.max_epochs:
        v.add("n_epoch", f"must be between 0 and {limits.max_epochs}, got {request.n_epoch}")
    low, high = HEARTBEAT_RANGE
    if request.heartbeat_seconds and not low <= request.heartbeat_seconds <= high:
        v.add("heartbeat_seconds", f"must be 0 or between {low} and {high}, got"
              f" {request.heartbeat_seconds}")  # fmt: skip
    if problem := text_problem(request.client, MAX_CLIENT_CHARS):
        v.add("client", problem)
    if request.HasField("origin"):
        check_origin(v, "origin", request.origin)
    check_request_id(v, "request_id", request.request_id)
    v.raise_if_any()
    return request.heartbeat_seconds or DEFAULT_HEARTBEAT


def check_origin(v: errors.Violations, field: str, origin: attempt_pb2.RunOrigin) -> None:
    """Where an imported run was first recorded: a system's name and bounded texts."""
    if not ORIGIN_SYSTEM.fullmatch(origin.system):
        v.add(f"{field}.system", "1-32 letters, digits, '.', '_' or '-' (e.g. \"mlflow\")")
    for name, most in (("id", 256), ("uri", 1024), ("group", 256)):
        if problem := text_problem(getattr(origin, name), most):
            v.add(f"{field}.{name}", problem)


def _check_params(v: errors.Violations, field: str, params: struct_pb2.Struct) -> None:
    """Keys and strings PostgreSQL can store (no NUL), numbers it can (finite)."""
    for key, value in params.fields.items():
        if "\x00" in key or not key:
            v.add(field, "keys are non-empty, without NUL characters")
            return
        _check_value(v, f"{field}.{key[:64]}", value)


def _check_value(v: errors.Violations, field: str, value: struct_pb2.Value) -> None:
    kind = value.WhichOneof("kind")
    if kind == "number_value" and not math.isfinite(value.number_value):
        v.add(field, "must be a finite number")
    elif kind == "string_value" and "\x00" in value.string_value:
        v.add(field, "must not contain NUL characters")
    elif kind == "struct_value":
        _check_params(v, field, value.struct_value)
    elif kind == "list_value":
        for i, item in enumerate(value.list_value.values):
            _check_value(v, f"{field}[{i}]", item)


def reported_spec(request: rpb.StartRunRequest, heartbeat: int) -> attempt_pb2.Attempt:
    """The document of a run about to start (checked already)."""
    spec = attempt_pb2.Attempt(n_epoch=request.n_epoch)
    spec.tags.update(request.tags)
    reported = spec.reported
    reported.params.CopyFrom(request.params)
    reported.task.CopyFrom(request.task)
    reported.heartbeat_seconds = heartbeat
    reported.client = request.client
    reported.stop_when_hopeless = request.stop_when_hopeless
    if request.HasField("origin"):
        reported.origin.CopyFrom(request.origin)
    return spec


def _fraction(v: errors.Violations, field: str, value: float) -> None:
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        v.add(field, f"must be a fraction in [0, 1], got {value}")


def _non_negative(v: errors.Violations, field: str, value: float) -> None:
    if not (math.isfinite(value) and value >= 0.0):
        v.add(field, f"must be a finite number >= 0, got {value}")


def check_batch(
    batch: rpb.ReportBatch, current_epoch: int, n_epoch: int, now_ms: int | None = None
) -> Batch:
    """Checks a batch whole against its run (its newest stored epoch, the epochs it
    declared: 0 for no bound); INVALID_ARGUMENT naming every bad field."""
    v = errors.Violations()
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    checked = Batch(batch.sequence)
    if len(batch.epochs) > MAX_BATCH_EPOCHS:
        v.add("batch.epochs", f"at most {MAX_BATCH_EPOCHS} epochs a batch")
        v.raise_if_any()
    extra: dict[str, tuple[list[int], list[float]]] = {}
    expected = None
    for i, e in enumerate(batch.epochs):
        f = f"batch.epochs[{i}]"
        if expected is None:
            if not 1 <= e.epoch <= current_epoch + 1:
                v.add(f"{f}.epoch", f"epoch {e.epoch} cannot follow epoch {current_epoch}:"
                      " epochs are 1, 2, ... each once")  # fmt: skip
        elif e.epoch != expected:
            v.add(f"{f}.epoch", f"epoch {e.epoch} cannot follow epoch {expected - 1} in a batch")
        expected = e.epoch + 1
        if n_epoch and e.epoch > n_epoch:
            v.add(f"{f}.epoch", f"the run declared {n_epoch} epochs")
        for name in ("learning_rate", "seconds", "samples_per_second", "val_loss"):
            if e.HasField(name):
                _non_negative(v, f"{f}.{name}", getattr(e, name))
        if e.HasField("val_accuracy"):
            _fraction(v, f"{f}.val_accuracy", e.val_accuracy)
        for key, value in e.metrics.items():
            if not KEY_RE.fullmatch(key):
                v.add(f"{f}.metrics[{key[:64]!r}]", _KEY_RULE)
            else:
                steps, values = extra.setdefault(key, ([], []))
                steps.append(e.epoch)
                values.append(value)
        if e.epoch <= current_epoch:
            continue  # stored already: this batch is being sent again
        if not math.isfinite(e.loss):
            if checked.diverged is None:
                checked.diverged = (e.epoch, f"loss {e.loss} at epoch {e.epoch}")
            continue
        if checked.diverged is None:
            checked.epochs.append(
                EpochRecord(
                    e.epoch,
                    e.loss,
                    e.learning_rate,
                    e.seconds,
                    e.samples_per_second,
                    e.val_loss,
                    e.val_accuracy,
                )
            )
    total = sum(len(s.steps) for s in batch.metrics) + sum(len(s) for s, _ in extra.values())
    if total > MAX_BATCH_POINTS:
        v.add("batch.metrics", f"at most {MAX_BATCH_POINTS} points a batch, got {total}")
        v.raise_if_any()
    seen: set[str] = set()
    for i, series in enumerate(batch.metrics):
        f = f"batch.metrics[{i}]"
        if not KEY_RE.fullmatch(series.key):
            v.add(f"{f}.key", _KEY_RULE)
            continue
        if series.key in seen:
            v.add(f"{f}.key", f"{series.key!r} has a series earlier in the batch")
            continue
        seen.add(series.key)
        points = _series(v, f, series, now)
        if points is not None and points.steps:  # an empty series names nothing to store
            checked.points.append(points)
    now_list = [now]
    for key, (steps, values) in extra.items():
        if key in seen:
            v.add("batch.metrics", f"{key!r} is both an epoch's metric and a series")
            continue
        checked.points.append(Points(key, steps, values, now_list * len(steps)))
    v.raise_if_any()
    return checked


_KEY_RULE = "names are 1-250 letters, digits, spaces, '.', '_', '-', '/' or ':'"


def _series(v: errors.Violations, f: str, series: rpb.MetricSeries, now_ms: int) -> Points | None:
    steps, values, times = list(series.steps), list(series.values), list(series.timestamps_ms)
    if len(values) != len(steps):
        v.add(f"{f}.values", f"{len(values)} values for {len(steps)} steps")
        return None
    if times and len(times) != len(steps):
        v.add(f"{f}.timestamps_ms", f"{len(times)} times for {len(steps)} steps (or none)")
        return None
    if steps and not (steps[0] >= 0 and steps[-1] <= MAX_STEP):
        v.add(f"{f}.steps", f"steps are between 0 and 2^53, got {steps[0]}..{steps[-1]}")
        return None
    if not all(a < b for a, b in itertools.pairwise(steps)):
        v.add(f"{f}.steps", "must increase strictly")
        return None
    if times:
        if min(times) < MIN_TIME_MS or max(times) > now_ms + 86_400_000:
            v.add(f"{f}.timestamps_ms", "times are milliseconds since 1970, from 2000 to a day"
                  " from now")  # fmt: skip
            return None
    else:
        times = [now_ms] * len(steps)
    return Points(series.key, steps, values, times)


def array_literals(points: Sequence[Points], ids: dict[str, int]) -> tuple[str, str, str, str]:
    """A batch's points as PostgreSQL array literals (series ids, steps, values, times):
    one text each, parsed by the server, rather than a Python value per point dumped by
    the driver (the same reason as `gateway.store.attempts.epoch_columns`)."""
    series: list[str] = []
    for p in points:
        series.extend([str(ids[p.key])] * len(p.steps))
    return (
        "{" + ",".join(series) + "}",
        "{" + ",".join(str(s) for p in points for s in p.steps) + "}",
        # repr: the shortest text that reads back as the same double; 'nan', 'inf' and
        # '-inf' are read by PostgreSQL as NaN and the infinities.
        "{" + ",".join(repr(x) for p in points for x in p.values) + "}",
        "{" + ",".join(str(t) for p in points for t in p.at_ms) + "}",
    )


def check_finish(request: rpb.FinishRunRequest, labels: Sequence[str]) -> tuple[str, str]:
    """Checks a FinishRun request; returns the run's new status and error."""
    v = errors.Violations()
    if request.attempt_id <= 0:
        v.add("attempt_id", "is required")
    if request.end == rpb.RUN_END_UNSPECIFIED or request.end not in rpb.RunEnd.values():
        v.add("end", "must be FINISHED, FAILED or KILLED")
    if problem := text_problem(request.error, MAX_ERROR_CHARS):
        v.add("error", problem)
    if request.last_epoch < 0:
        v.add("last_epoch", f"must not be negative, got {request.last_epoch}")
    tested = request.HasField("test_result")
    if tested:
        if request.end != rpb.RUN_END_FINISHED:
            v.add("test_result", "only a FINISHED run has a test result")
        _check_test(v, request.test_result, labels)
    v.raise_if_any()
    if request.end == rpb.RUN_END_FINISHED:
        return ("COMPLETE" if tested else "TRAINED"), ""
    if request.end == rpb.RUN_END_FAILED:
        return "FAILED", request.error or "its code failed"
    return "CANCELLED", request.error


def _check_test(
    v: errors.Violations, result: attempt_pb2.TestResult, labels: Sequence[str]
) -> None:
    f = "test_result"
    _fraction(v, f"{f}.accuracy", result.accuracy)
    _non_negative(v, f"{f}.loss", result.loss)
    if result.images < 0:
        v.add(f"{f}.images", f"must not be negative, got {result.images}")
    known = set(labels)
    for label, accuracy in result.per_label_accuracy.items():
        if label not in known:
            v.add(f"{f}.per_label_accuracy[{label[:64]!r}]", "not one of the run's declared labels")
        else:
            _fraction(v, f"{f}.per_label_accuracy[{label[:64]!r}]", accuracy)
    matrix = list(result.confusion_matrix)
    if matrix:
        if len(matrix) != len(labels) ** 2:
            v.add(f"{f}.confusion_matrix", f"{len(labels)} x {len(labels)} counts for the"
                  " declared labels")  # fmt: skip
        elif any(x < 0 for x in matrix):
            v.add(f"{f}.confusion_matrix", "counts are not negative")
