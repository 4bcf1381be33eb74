"""`metalearn import mlflow`: MLflow runs brought in as reported attempts.

The source is read through MLflow's own client (`MlflowClient(tracking_uri=...)`), so
whatever MLflow reads works: an `http(s)://` tracking server, a `sqlite:///` (or other
SQL) store, a file store's directory. MLflow is an optional extra, imported only here
and only when an import runs (`pip install 'metalearn[mlflow]'`).

How an MLflow run maps onto a reported attempt (ReportingService):

- name `mlflow-<run id>`; origin `{system: "mlflow", id: run id, uri: the tracking URI
  without credentials or query, group: the experiment's name}`.
- params: MLflow keeps every param as text. A text that Python's `float()` reads as a
  finite number (`"0.01"`, `"32"`, `"1e-3"`) is stored as that number, anything else
  (`"adam"`, `"nan"`, `"True"`) stays a string. Integers beyond 2^53 stay strings (a
  double would change them). Params past the gateway's 64 KiB bound are left out, counted.
- tags: MLflow's tags (`mlflow.runName`, `mlflow.parentRunId` of a nested run,
  `mlflow.user`, ... first), plus `mlflow.status`, `mlflow.experiment_id`,
  `mlflow.start_time` and `mlflow.end_time` (ISO 8601, UTC: nothing else of a reported
  attempt holds them). The gateway takes 64 tags with keys of `[A-Za-z0-9._/-]{1,63}`
  and values of 256 characters: other keys and tags past 64 are left out, longer values
  cut; each counted.
- metrics: every metric's whole history as a series (step, value, time in ms; NaN and
  infinities kept). The gateway keeps one point per (key, step), steps rising: a
  metric logged without steps (every point at step 0) is numbered 0, 1, 2, ... in time
  order; elsewhere a step logged twice keeps its last value; each counted. Times
  before 2000 or in the future are replaced by the import's time (counted).
- epochs (opt-in, `epoch_metrics`, e.g. loss=train_loss, val_accuracy=val_acc): the
  loss metric's steps, in step order, become epochs 1, 2, ... N; each other mapped
  field takes its metric's value at the same step (none there: left unset; out of the
  gateway's range, e.g. an accuracy above 1: left out, counted). Epochs stop before the
  first non-finite loss (metalearn would end the run as diverged) and at 10,000.
- task (DeclaredTask): from the params and tags the mapping names, else the run's first
  dataset input (`run.inputs.dataset_inputs`), then params and tags named `dataset` or
  `dataset_name`; labels from `labels` or `classes` (a JSON list, or names separated by
  commas); `train_size`; `input_shape` (a JSON list, or `3x32x32`). A value the gateway
  would refuse is left out, counted, and the run imported without it.
- status: FINISHED, FAILED and KILLED end the attempt the same way (FinishRun). A run
  still RUNNING (or SCHEDULED) is imported as it is and left TRAINING with the longest
  heartbeat (a day): a later import sends its points again (each (key, step) is stored
  once) and finishes it once MLflow says it ended. A run left longer than a day is
  FAILED as lost by the gateway, and later imports leave it so (counted as already
  there).
- artifacts (opt-in): the run's model, once the run has ended, as one file through
  UploadModel: a directory of the run's artifacts holding an `MLmodel` file, else the
  first model MLflow 3 logged from the run, else all of the run's artifacts; a directory
  is zipped. Larger than the bound (the gateway's 2 GiB): not uploaded, counted.

Idempotent: a run whose attempt exists and has ended is skipped; one still TRAINING is
sent again and finished when it has ended in MLflow. Deleted runs (and the runs of
deleted experiments) are skipped, counted. A run the gateway refuses is counted with
the gateway's reason, and the import goes on.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import math
import operator
import re
import sys
import tempfile
import threading
import time
import zipfile
from collections import Counter, deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

import grpc
from google.protobuf import struct_pb2

from metalearn import limits as command_limits
from metalearn.v1 import (
    attempt_pb2,
    attempt_service_pb2,
    attempt_service_pb2_grpc,
    reporting_service_pb2,
    reporting_service_pb2_grpc,
)

rpb = reporting_service_pb2

INSTALL_HINT = "pip install 'metalearn[mlflow]'"
NAME_PREFIX = "mlflow-"
ORIGIN_SYSTEM = "mlflow"
EPOCH_FIELDS = ("loss", "val_loss", "val_accuracy", "learning_rate", "seconds",
                "samples_per_second")  # fmt: skip

# The gateway's rules (gateway/reporting/checks.py, gateway/attempts/validation.py,
# gateway/names.py), kept here so that a value it would refuse is left out of one run
# and counted instead of failing the run: the SDK does not import the gateway.
_NAME_RE = re.compile(r"\A[A-Za-z0-9._-]{1,128}\Z")
_KEY_RE = re.compile(r"\A[A-Za-z0-9 ._/:-]{1,250}\Z")
_TAG_KEY_RE = re.compile(r"\A[A-Za-z0-9._/-]{1,63}\Z")
_DATASET_RE = re.compile(r"\A[A-Za-z0-9._/:-]{1,128}\Z")
MAX_TAGS = 64
MAX_TAG_VALUE = 256
MAX_LABEL_CHARS = 256
MAX_KEYS = 1_000
MAX_PARAMS_BYTES = 64 * 1024
MAX_STEP = 2**53
MIN_TIME_MS = 946_684_800_000
MAX_BATCH_EPOCHS = 1_000
MAX_EPOCHS = command_limits.COMMAND_LIMITS.max_epochs
MAX_ERROR_CHARS = 4096
MAX_MODEL_BYTES = 2 * 1024**3
# Points a ReportRun batch carries: half the gateway's 100,000, so that the gateway
# stores one batch while the next is read from MLflow.
BATCH_POINTS = 50_000
# The longest heartbeat the gateway takes: a run still RUNNING in MLflow stays TRAINING
# here for a day, for a later import to go on with.
HEARTBEAT_SECONDS = 86_400
_CHUNK = 1024 * 1024
_RPC_TIMEOUT = 60.0
_ENDS = {"FINISHED": rpb.RUN_END_FINISHED, "FAILED": rpb.RUN_END_FAILED,
         "KILLED": rpb.RUN_END_KILLED}  # fmt: skip
# Tags that say most about a run, kept first when a run has more than 64.
_FIRST_TAGS = ("mlflow.runName", "mlflow.parentRunId", "mlflow.user", "mlflow.source.name",
               "mlflow.source.type", "mlflow.source.git.commit")  # fmt: skip


class MlflowMissing(ImportError):
    """MLflow is not installed (it is an optional extra)."""


class SourceProblem(ValueError):
    """The tracking URI or the chosen experiments cannot be read: nothing was imported."""


def local_store(uri: str) -> bool:
    """Whether MLflow's client reads the store in this process (a file or database),
    rather than asking a tracking server."""
    scheme = urlsplit(uri).scheme
    return scheme not in ("http", "https") and not scheme.startswith("databricks")


def check_source(uri: str) -> None:
    """A sqlite file or a file store that does not exist is refused: MLflow would
    create an empty store there and import nothing from a mistyped path."""
    parts = urlsplit(uri)
    if parts.scheme == "sqlite" and parts.path not in ("", "/", "/:memory:"):
        # SQLAlchemy's spelling: sqlite:///relative.db, sqlite:////absolute.db.
        path = Path(parts.path[1:])
        if not path.is_file():
            raise SourceProblem(f"{uri}: no MLflow sqlite store at {path}")
    elif parts.scheme in ("", "file") and not Path(parts.path if parts.scheme else uri).is_dir():
        raise SourceProblem(f"{uri}: no MLflow file store (a directory) there")


def mlflow_client(uri: str) -> Any:
    """MLflow's own client for `uri` (MLflow imported here, and only when it is used)."""
    check_source(uri)
    try:
        from mlflow.tracking import MlflowClient
    except ImportError as err:
        raise MlflowMissing(f"importing from MLflow needs MLflow: {INSTALL_HINT}") from err
    return MlflowClient(tracking_uri=uri)


def public_uri(uri: str) -> str:
    """The tracking URI as it is kept in a run's origin: without user:password@, its
    query (tokens ride there) and fragment; a path made absolute."""
    parts = urlsplit(uri)
    if not parts.scheme:
        return str(Path(uri).resolve())[:1024]
    # Cut as text, not rebuilt: urlunsplit would drop the empty host of sqlite:////x.
    text = uri.split("#", 1)[0].split("?", 1)[0]
    if "@" in parts.netloc:
        text = text.replace(parts.netloc, parts.netloc.rsplit("@", 1)[-1], 1)
    return text[:1024]


@dataclass(frozen=True)
class TaskMapping:
    """Which params and tags of a run name its task, and which metrics are its epochs
    (field -> MLflow metric key; `loss` is required when any is given)."""

    dataset_param: str | None = None
    dataset_tag: str | None = None
    labels_param: str | None = None
    labels_tag: str | None = None
    train_size_param: str | None = None
    input_shape_param: str | None = None
    epoch_metrics: Mapping[str, str] = field(default_factory=dict)

    def check(self) -> None:
        unknown = sorted(set(self.epoch_metrics) - set(EPOCH_FIELDS))
        if unknown:
            raise ValueError(f"epoch fields are {', '.join(EPOCH_FIELDS)}; not {unknown}")
        if self.epoch_metrics and "loss" not in self.epoch_metrics:
            raise ValueError("an epoch needs its loss: map loss=METRIC too")


@dataclass(frozen=True)
class Options:
    uri: str
    experiments: Sequence[str] = ()
    # Only runs started at or after this (ms since 1970).
    since_ms: int | None = None
    artifacts: bool = False
    max_artifact_bytes: int = MAX_MODEL_BYTES
    dry_run: bool = False
    # Runs streamed at once: reading MLflow and the gateway storing overlap.
    workers: int = 4
    # Processes reading a local store's metrics, forked (0: the import's own threads).
    # MLflow makes each point an ORM object, about 25 µs of Python, so one interpreter
    # reads about 40,000 points/s: readers read faster where cores are free, but on 2
    # cores shared with a local gateway and PostgreSQL they only compete (measured:
    # slower end to end), hence 0 by default. A server's store is read by the server.
    readers: int = 0
    mapping: TaskMapping = field(default_factory=TaskMapping)


@dataclass
class Summary:
    """What an import did; `unmapped` counts what could not be carried over, by what."""

    experiments: int = 0
    runs: int = 0
    imported: int = 0
    resumed: int = 0
    finished: int = 0
    left_running: int = 0
    skipped_existing: int = 0
    skipped_deleted: int = 0
    skipped_before_since: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    points: int = 0
    nan_points: int = 0
    epochs: int = 0
    artifacts: int = 0
    artifact_bytes: int = 0
    unmapped: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    dry_run: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "experiments": self.experiments,
            "runs": self.runs,
            "imported": self.imported,
            "resumed": self.resumed,
            "finished": self.finished,
            "left_running": self.left_running,
            "skipped": {
                "already_there": self.skipped_existing,
                "deleted": self.skipped_deleted,
                "before_since": self.skipped_before_since,
            },
            "failed": [{"run_id": run, "reason": why} for run, why in self.failed],
            "points": self.points,
            "nan_points": self.nan_points,
            "epochs": self.epochs,
            "artifacts": self.artifacts,
            "artifact_bytes": self.artifact_bytes,
            "not_mapped": dict(sorted(self.unmapped.items())),
            "seconds": round(self.seconds, 3),
            "points_per_s": round(self.points / self.seconds, 1) if self.seconds else 0.0,
            "dry_run": self.dry_run,
        }

    def text(self) -> str:
        verb = "would import" if self.dry_run else "imported"
        lines = [
            f"experiments: {self.experiments}",
            f"runs: {self.runs}: {verb} {self.imported} (again, still running before:"
            f" {self.resumed}; finished: {self.finished}; left running: {self.left_running})",
            f"skipped: {self.skipped_existing} already there, {self.skipped_deleted} deleted,"
            f" {self.skipped_before_since} before --since",
            f"failed: {len(self.failed)}",
        ]
        lines += [f"  {run}: {why}" for run, why in self.failed]
        rate = self.points / self.seconds if self.seconds else 0.0
        lines.append(f"points: {self.points:,} ({self.nan_points:,} NaN), {rate:,.0f} points/s;"
                     f" epochs: {self.epochs:,}")  # fmt: skip
        if self.artifacts:
            lines.append(f"models uploaded: {self.artifacts} ({self.artifact_bytes:,} bytes)")
        if self.unmapped:
            lines.append("not mapped:")
            lines += [f"  {why}: {n:,}" for why, n in sorted(self.unmapped.items())]
        return "\n".join(lines)


@dataclass
class _Series:
    key: str
    steps: list[int]
    values: list[float]
    times: list[int] | None  # None: out of range, the gateway stamps them


@dataclass
class _Outcome:
    """One run's part of the summary (merged under the importer's lock)."""

    kind: str  # imported, resumed, existing, failed
    finished: bool = False
    points: int = 0
    nan_points: int = 0
    epochs: int = 0
    artifact_bytes: int | None = None
    unmapped: Counter[str] = field(default_factory=Counter)
    reason: str = ""


class _Progress:
    """Runs done and points a second on stderr, at most every 2 s, once an import has
    gone on for 2 s (a short one prints only its summary)."""

    def __init__(self, total: int, out: TextIO | None) -> None:
        self._total, self._out = total, out
        self._start = self._last = time.monotonic()
        self._lock = threading.Lock()
        self.runs = 0
        self.points = 0

    def add(self, points: int = 0, runs: int = 0) -> None:
        with self._lock:
            self.points += points
            self.runs += runs
            now = time.monotonic()
            if self._out is None or now - self._last < 2.0:
                return
            self._last = now
            rate = self.points / max(now - self._start, 1e-9)
            self._out.write(f"mlflow import: {self.runs}/{self._total} runs, {self.points:,}"
                            f" points, {rate:,.0f} points/s\n")  # fmt: skip
            self._out.flush()


class MlflowImporter:
    """Imports the runs of an MLflow tracking store through `channel` (None: a dry run)."""

    def __init__(
        self, options: Options, channel: grpc.Channel | None, progress: TextIO | None = sys.stderr
    ) -> None:
        options.mapping.check()
        self.options = options
        self._channel = channel
        self._progress_out = progress
        self._summary = Summary(dry_run=options.dry_run)
        self._origin_uri = public_uri(options.uri)
        self._client_name = f"metalearn-import-mlflow/{_version()}"
        self._readers: Any = None
        if channel is not None:
            self._reports = reporting_service_pb2_grpc.ReportingServiceStub(channel)
            self._attempts = attempt_service_pb2_grpc.AttemptServiceStub(channel)

    # The whole import.
    def run(self) -> Summary:
        started = time.monotonic()
        check_source(self.options.uri)
        readers = self.options.readers if local_store(self.options.uri) else 0
        if readers > 0:
            # Forked before this process opens the store (see _reader_start), and
            # before the threads below exist.
            import multiprocessing

            pool = multiprocessing.get_context("fork").Pool(
                readers, initializer=_reader_start, initargs=(self.options.uri,)
            )
            with pool:
                self._readers = pool
                try:
                    return self._run(started)
                finally:
                    self._readers = None
        return self._run(started)

    def _run(self, started: float) -> Summary:
        client = mlflow_client(self.options.uri)
        summary = self._summary
        try:
            experiments = self._experiments(client)
            listed = [(e, list(self._runs(client, e.experiment_id))) for e in experiments]
        except SourceProblem:
            raise
        except Exception as err:  # MLflow's: a server that does not answer, an old schema
            raise SourceProblem(f"{self.options.uri}: {type(err).__name__}: {err}") from err
        summary.experiments = len(experiments)
        existing = self._existing() if self._channel is not None else {}
        todo: list[tuple[Any, str]] = []
        for experiment, runs in listed:
            deleted = experiment.lifecycle_stage == "deleted"
            for run in runs:
                summary.runs += 1
                if deleted or run.info.lifecycle_stage == "deleted":
                    summary.skipped_deleted += 1
                elif (
                    self.options.since_ms is not None
                    and (run.info.start_time or 0) < self.options.since_ms
                ):
                    summary.skipped_before_since += 1
                else:
                    todo.append((run, experiment.name))
        progress = _Progress(len(todo), self._progress_out)
        workers = max(1, min(self.options.workers, len(todo) or 1))
        with ThreadPoolExecutor(workers, thread_name_prefix="mlflow-import") as pool:
            outcomes = pool.map(
                lambda item: self._one(client, item[0], item[1], existing, progress), todo
            )
            for (run, _), outcome in zip(todo, outcomes, strict=True):
                self._merge(run.info.run_id, outcome)
        summary.seconds = time.monotonic() - started
        return summary

    def _experiments(self, client: Any) -> list[Any]:
        from mlflow.entities import ViewType

        if self.options.experiments:
            found = []
            for name in self.options.experiments:
                experiment = client.get_experiment_by_name(name)
                if experiment is None:
                    raise SourceProblem(f"{self.options.uri}: no experiment named {name!r}")
                found.append(experiment)
            return found
        experiments: list[Any] = []
        token = None
        while True:
            page = client.search_experiments(
                view_type=ViewType.ALL, max_results=1000, page_token=token
            )
            experiments.extend(page)
            token = page.token
            if not token:
                return experiments

    @staticmethod
    def _runs(client: Any, experiment_id: str) -> Iterator[Any]:
        from mlflow.entities import ViewType

        token = None
        while True:
            page = client.search_runs(
                [experiment_id], run_view_type=ViewType.ALL, max_results=1000,
                order_by=["attributes.start_time ASC"], page_token=token,
            )  # fmt: skip
            yield from page
            token = page.token
            if not token:
                return

    def _existing(self) -> dict[str, tuple[int, int]]:
        """Attempts imported before: name -> (id, status). One paged listing (by the
        names' prefix) rather than a call per run."""
        found: dict[str, tuple[int, int]] = {}
        token = ""
        while True:
            reply = self._attempts.ListAttempts(
                attempt_service_pb2.ListAttemptsRequest(
                    page_size=1000, page_token=token, name_prefix=NAME_PREFIX
                ),
                timeout=_RPC_TIMEOUT,
            )
            for attempt in reply.attempts:
                found[attempt.name] = (attempt.id, attempt.status)
            token = reply.next_page_token
            if not token:
                return found

    def _merge(self, run_id: str, outcome: _Outcome) -> None:
        s = self._summary
        s.unmapped.update(outcome.unmapped)
        if outcome.kind == "existing":
            s.skipped_existing += 1
            return
        s.points += outcome.points
        s.nan_points += outcome.nan_points
        s.epochs += outcome.epochs
        if outcome.artifact_bytes is not None:
            s.artifacts += 1
            s.artifact_bytes += outcome.artifact_bytes
        if outcome.kind == "failed":
            s.failed.append((run_id, outcome.reason))
            return
        s.imported += 1
        s.resumed += outcome.kind == "resumed"
        if outcome.finished:
            s.finished += 1
        else:
            s.left_running += 1

    # One run.
    def _one(
        self,
        client: Any,
        run: Any,
        experiment: str,
        existing: Mapping[str, tuple[int, int]],
        progress: _Progress,
    ) -> _Outcome:
        outcome = _Outcome("imported")
        try:
            self._import(client, run, experiment, existing, progress, outcome)
        except grpc.RpcError as err:
            outcome.kind = "failed"
            outcome.reason = f"{err.code().name}: {err.details()}"
        except Exception as err:  # MLflow's errors, a file that cannot be read: this run only
            outcome.kind = "failed"
            outcome.reason = f"{type(err).__name__}: {err}"[:1000]
        progress.add(runs=1)
        return outcome

    def _import(
        self,
        client: Any,
        run: Any,
        experiment: str,
        existing: Mapping[str, tuple[int, int]],
        progress: _Progress,
        outcome: _Outcome,
    ) -> None:
        info = run.info
        name = NAME_PREFIX + info.run_id
        if not _NAME_RE.fullmatch(name):
            outcome.kind, outcome.reason = "failed", f"run id {info.run_id!r} makes no attempt name"
            return
        status = str(info.status)
        end = _ENDS.get(status)
        unmapped = outcome.unmapped
        start = rpb.StartRunRequest(
            name=name,
            task=declared_task(run, self.options.mapping, unmapped),
            params=params_struct(run.data.params, unmapped),
            tags=run_tags(run, unmapped),
            heartbeat_seconds=HEARTBEAT_SECONDS,
            client=self._client_name,
            origin=attempt_pb2.RunOrigin(
                system=ORIGIN_SYSTEM, id=info.run_id[:256], uri=self._origin_uri,
                group=experiment[:256],
            ),
        )  # fmt: skip
        sender = _RunSender(client, run, self.options.mapping, unmapped, progress, self._readers)
        if self._channel is None:  # a dry run: read and map everything, send nothing
            for batch in sender.batches():
                outcome.points += sender.batch_points[batch.sequence]
                progress.add(points=sender.batch_points[batch.sequence])
            outcome.nan_points, outcome.epochs, outcome.finished = sender.nan, sender.epochs, True
            return
        attempt_id: int
        found = existing.get(name)
        if found is not None:
            if found[1] != attempt_pb2.ATTEMPT_STATUS_TRAINING:
                outcome.kind = "existing"
                return
            attempt_id, outcome.kind = found[0], "resumed"
        else:
            try:
                attempt_id = self._reports.StartRun(start, timeout=_RPC_TIMEOUT).attempt.id
            except grpc.RpcError as err:
                if err.code() != grpc.StatusCode.ALREADY_EXISTS:
                    raise
                # Imported meanwhile (another import at once, or a reply lost).
                attempt = self._attempts.GetAttempt(
                    attempt_service_pb2.GetAttemptRequest(name=name), timeout=_RPC_TIMEOUT
                ).attempt
                if attempt.status != attempt_pb2.ATTEMPT_STATUS_TRAINING:
                    outcome.kind = "existing"
                    return
                attempt_id, outcome.kind = attempt.id, "resumed"
        stop = sender.send(self._reports, attempt_id)
        outcome.points, outcome.nan_points, outcome.epochs = sender.acked, sender.nan, sender.epochs
        if stop is not None:
            outcome.kind = "failed"
            state = attempt_pb2.AttemptStatus.Name(stop.status)
            outcome.reason = f"the gateway stopped the run ({state}): {stop.reason}"
            return
        if end is None:
            return  # still running in MLflow: a later import goes on with it
        if self.options.artifacts:
            outcome.artifact_bytes = self._upload_model(client, run, attempt_id, unmapped)
        error = (
            f"the MLflow run {info.run_id} ended {status}" if end != rpb.RUN_END_FINISHED else ""
        )
        self._reports.FinishRun(
            rpb.FinishRunRequest(
                attempt_id=attempt_id, end=end, error=error[:MAX_ERROR_CHARS],
                last_epoch=sender.epochs,
            ),
            timeout=_RPC_TIMEOUT,
        )  # fmt: skip
        outcome.finished = True

    def _upload_model(
        self, client: Any, run: Any, attempt_id: int, unmapped: Counter[str]
    ) -> int | None:
        """Uploads the run's model (see the module's docstring); its size, or None."""
        with tempfile.TemporaryDirectory(prefix="metalearn-mlflow-") as tmp:
            path = _model_file(client, run, Path(tmp), self.options.max_artifact_bytes, unmapped)
            if path is None:
                return None
            size = path.stat().st_size
            if size > self.options.max_artifact_bytes:
                unmapped["models over the size bound (not uploaded)"] += 1
                return None
            if size == 0:
                unmapped["empty models (not uploaded)"] += 1
                return None
            digest = hashlib.sha256()
            with path.open("rb") as f:
                for piece in iter(lambda: f.read(_CHUNK), b""):
                    digest.update(piece)
            header = rpb.UploadHeader(
                attempt_id=attempt_id, size_bytes=size, sha256=digest.hexdigest()
            )

            def messages() -> Iterator[rpb.UploadModelRequest]:
                yield rpb.UploadModelRequest(header=header)
                with path.open("rb") as f:
                    for piece in iter(lambda: f.read(_CHUNK), b""):
                        yield rpb.UploadModelRequest(chunk=piece)

            self._reports.UploadModel(messages(), timeout=3600)
            return size


# The reader processes' own client (one a process, made by _reader_start).
_READER: Any = None
# Metrics a run asks the readers for ahead of the one it sends.
READ_AHEAD = 4


def _reader_start(uri: str) -> None:
    """A reader process's start. Forked, it holds the parent's SQLAlchemy engines (MLflow
    keeps one per database URI); SQLAlchemy's rule for a forked child is to drop the
    inherited pool's connections without closing them (`dispose(close=False)`), so this
    process opens its own and never shares a sqlite connection with its parent."""
    global _READER
    try:
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        for engine in list(getattr(SqlAlchemyStore, "_engine_map", {}).values()):
            engine.dispose(close=False)
    except ImportError:
        pass
    from mlflow.tracking import MlflowClient

    _READER = MlflowClient(tracking_uri=uri)


def _read_columns(run_id: str, key: str) -> tuple[list[int], list[float], list[int]]:
    """In a reader process: one metric's points. Its errors come back as RuntimeError
    with their words (an MLflow exception may not survive pickling back)."""
    try:
        return columns(_READER.get_metric_history(run_id, key))
    except Exception as err:
        raise RuntimeError(f"{type(err).__name__}: {err}") from None


class _RunSender:
    """One run's metrics read from MLflow and streamed as ReportRun batches, read while
    the gateway stores the batch before (the request iterator runs on gRPC's thread)."""

    def __init__(
        self,
        client: Any,
        run: Any,
        mapping: TaskMapping,
        unmapped: Counter[str],
        progress: _Progress,
        readers: Any = None,
    ) -> None:
        self._client, self._run, self._mapping = client, run, mapping
        self._readers = readers
        self._unmapped, self._progress = unmapped, progress
        self.batch_points: dict[int, int] = {}
        self.acked = 0
        self.nan = 0
        self.epochs = 0
        self.error: BaseException | None = None

    def send(self, stub: Any, attempt_id: int) -> rpb.Stop | None:
        """Streams every batch; the gateway's Stop when it ended the stream instead."""

        def requests() -> Iterator[rpb.ReportRunRequest]:
            yield rpb.ReportRunRequest(attempt_id=attempt_id)
            try:
                for batch in self.batches():
                    yield rpb.ReportRunRequest(batch=batch)
            except Exception as err:  # raised again below, on the caller's thread
                self.error = err

        stop = None
        for reply in stub.ReportRun(requests()):
            if reply.WhichOneof("kind") == "acknowledged":
                points = self.batch_points.get(reply.acknowledged.sequence, 0)
                self.acked += points
                self._progress.add(points=points)
            else:
                stop = reply.stop
        if self.error is not None:
            raise self.error
        return stop

    def _histories(
        self, run_id: str, keys: Sequence[str]
    ) -> Iterator[tuple[list[int], list[float], list[int]]]:
        """Each key's points in order: read here, or by the reader processes a few keys
        ahead (a bounded window: a run of many long metrics is not held whole)."""
        if self._readers is None:
            for key in keys:
                yield columns(self._client.get_metric_history(run_id, key))
            return
        ahead: deque[Any] = deque()
        rest = iter(keys)
        for key in itertools.islice(rest, READ_AHEAD):
            ahead.append(self._readers.apply_async(_read_columns, (run_id, key)))
        while ahead:
            found = ahead.popleft().get()
            for key in itertools.islice(rest, 1):
                ahead.append(self._readers.apply_async(_read_columns, (run_id, key)))
            yield found

    def batches(self) -> Iterator[rpb.ReportBatch]:
        run_id = self._run.info.run_id
        keys = sorted(self._run.data.metrics)
        unmapped = self._unmapped
        bad = [k for k in keys if not _KEY_RE.fullmatch(k)]
        if bad:
            unmapped["metrics with a name metalearn refuses (left out)"] += len(bad)
            keys = [k for k in keys if _KEY_RE.fullmatch(k)]
        if len(keys) > MAX_KEYS:
            unmapped[f"metrics past {MAX_KEYS} a run (left out)"] += len(keys) - MAX_KEYS
            keys = keys[:MAX_KEYS]
        # The epochs' metrics first: the epochs go out as soon as they are known.
        wanted = set(self._mapping.epoch_metrics.values())
        keys.sort(key=lambda k: k not in wanted)
        for_epochs: dict[str, _Series] = {}
        pending: list[rpb.MetricSeries] = []
        pending_points = 0
        sequence = 0
        epochs: list[rpb.ReportedEpoch] = []
        # The epochs are made once the last of their metrics this run has is read.
        epochs_after = sum(k in wanted for k in keys) if wanted else -1

        def flush() -> rpb.ReportBatch:
            nonlocal pending, pending_points, sequence, epochs
            sequence += 1
            batch = rpb.ReportBatch(sequence=sequence, metrics=pending,
                                    epochs=epochs[:MAX_BATCH_EPOCHS])  # fmt: skip
            self.batch_points[sequence] = pending_points
            epochs = epochs[MAX_BATCH_EPOCHS:]
            pending, pending_points = [], 0
            return batch

        if epochs_after == 0:
            epochs_from(for_epochs, self._mapping, unmapped)  # counts the run without them
        for index, (key, found) in enumerate(
            zip(keys, self._histories(run_id, keys), strict=True), 1
        ):
            series = metric_series(key, *found, unmapped)
            if series is not None and key in wanted:
                for_epochs[key] = series
            if index == epochs_after:
                epochs = epochs_from(for_epochs, self._mapping, unmapped)
                self.epochs = len(epochs)
                while len(epochs) > MAX_BATCH_EPOCHS:
                    yield flush()
            if series is None:
                continue
            self.nan += sum(map(math.isnan, series.values))
            n, first = len(series.steps), 0
            while first < n:
                room = BATCH_POINTS - pending_points
                if room <= 0:
                    yield flush()
                    continue
                last = min(n, first + room)
                pending.append(rpb.MetricSeries(
                    key=key, steps=series.steps[first:last], values=series.values[first:last],
                    timestamps_ms=series.times[first:last] if series.times is not None else (),
                ))  # fmt: skip
                pending_points += last - first
                first = last
        while pending or epochs:
            yield flush()


# Mapping, one piece at a time (pure: tests and the dry run use them alone).
def columns(history: Sequence[Any]) -> tuple[list[int], list[float], list[int]]:
    """MLflow's points (mlflow.entities.Metric) as steps, values and times."""
    return (
        [m.step for m in history],
        [float(m.value) for m in history],
        [m.timestamp for m in history],
    )


def metric_series(
    key: str, steps: list[int], values: list[float], times: list[int], unmapped: Counter[str]
) -> _Series | None:
    """One metric's points as the gateway takes them: steps rising, one point a step."""
    if not steps:
        return None
    if not all(map(operator.lt, steps, steps[1:])):
        if not any(steps):
            # Logged without a step (MLflow puts every point at step 0; it returns
            # them in time order): numbered 0, 1, 2, ... as they were logged.
            unmapped["metrics logged without steps (numbered in time order)"] += 1
            steps = list(range(len(steps)))
        else:
            last: dict[int, tuple[int, float]] = {}
            for step, at, value in zip(steps, times, values, strict=True):
                seen = last.get(step)
                if seen is None or at >= seen[0]:
                    last[step] = (at, value)
            unmapped["points at a step logged twice (the last kept)"] += len(steps) - len(last)
            steps = sorted(last)
            times = [last[s][0] for s in steps]
            values = [last[s][1] for s in steps]
    if steps[0] < 0 or steps[-1] > MAX_STEP:
        keep = [i for i, s in enumerate(steps) if 0 <= s <= MAX_STEP]
        unmapped["points at a step below 0 or above 2^53 (left out)"] += len(steps) - len(keep)
        if not keep:
            return None
        steps = [steps[i] for i in keep]
        values = [values[i] for i in keep]
        times = [times[i] for i in keep]
    kept_times: list[int] | None = times
    if min(times) < MIN_TIME_MS or max(times) > time.time() * 1000 + 3_600_000:
        unmapped["metrics with times before 2000 or ahead (stored at the import's time)"] += 1
        kept_times = None
    return _Series(key, steps, values, kept_times)


def epochs_from(
    series: Mapping[str, _Series], mapping: TaskMapping, unmapped: Counter[str]
) -> list[rpb.ReportedEpoch]:
    """Epochs 1..N from the loss metric's steps (see the module's docstring)."""
    loss = series.get(mapping.epoch_metrics.get("loss", ""))
    if loss is None:
        unmapped["runs without the epochs' loss metric (no epochs)"] += 1
        return []
    at_step = {
        name: dict(zip(found.steps, found.values, strict=True))
        for name, key in mapping.epoch_metrics.items()
        if name != "loss" and (found := series.get(key)) is not None
    }
    epochs: list[rpb.ReportedEpoch] = []
    for number, (step, value) in enumerate(zip(loss.steps, loss.values, strict=True), 1):
        if number > MAX_EPOCHS:
            unmapped[f"epochs past {MAX_EPOCHS} (not mapped)"] += len(loss.steps) - MAX_EPOCHS
            break
        if not math.isfinite(value):
            unmapped["epochs from a non-finite loss on (not mapped)"] += (
                len(loss.steps) - number + 1
            )
            break
        epoch = rpb.ReportedEpoch(epoch=number, loss=value)
        for name, values in at_step.items():
            point = values.get(step)
            if point is None:
                continue
            if not (math.isfinite(point) and point >= 0 and (name != "val_accuracy" or point <= 1)):
                unmapped[f"epoch {name} values out of range (left out)"] += 1
                continue
            setattr(epoch, name, point)
        epochs.append(epoch)
    return epochs


def param_value(text: str) -> float | str:
    """A param's text as a number when it reads as a finite one, else the text."""
    try:
        number = float(text)
    except (TypeError, ValueError):
        return text
    if not math.isfinite(number) or (abs(number) > MAX_STEP and float(int(number)) == number
                                     and text.strip().lstrip("+-").isdigit()):  # fmt: skip
        return text
    return number


def params_struct(params: Mapping[str, str], unmapped: Counter[str]) -> struct_pb2.Struct:
    """A run's params within the gateway's bound (64 KiB encoded; keys without NUL)."""
    found: dict[str, float | str] = {}
    for key, text in params.items():
        if not key or "\x00" in key or "\x00" in str(text):
            unmapped["params with a NUL character (left out)"] += 1
            continue
        found[key] = param_value(str(text))
    struct = struct_pb2.Struct()
    struct.update(found)
    if struct.ByteSize() > MAX_PARAMS_BYTES:
        # The largest left out first, until the rest fits.
        for key in sorted(found, key=lambda k: len(k) + len(str(found[k])), reverse=True):
            del struct.fields[key]
            unmapped["params past the 64 KiB bound (left out)"] += 1
            if struct.ByteSize() <= MAX_PARAMS_BYTES:
                break
    return struct


def _iso(ms: int | None) -> str:
    return (
        dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="milliseconds")
        if ms
        else ""
    )


def run_tags(run: Any, unmapped: Counter[str]) -> dict[str, str]:
    """MLflow's tags and the run's own facts, within the gateway's tag rules."""
    info = run.info
    ours = {
        "mlflow.status": str(info.status),
        "mlflow.experiment_id": str(info.experiment_id),
        "mlflow.start_time": _iso(info.start_time),
        "mlflow.end_time": _iso(info.end_time),
    }
    theirs = dict(run.data.tags)
    if info.run_name and "mlflow.runName" not in theirs:
        theirs["mlflow.runName"] = info.run_name
    ordered = [(k, v) for k, v in ours.items() if v]
    ordered += [(k, theirs.pop(k)) for k in _FIRST_TAGS if k in theirs]
    ordered += sorted(theirs.items())
    tags: dict[str, str] = {}
    for key, value in ordered:
        if key in tags:
            continue
        if not _TAG_KEY_RE.fullmatch(key):
            unmapped["tags with a key metalearn refuses (left out)"] += 1
            continue
        if len(tags) >= MAX_TAGS:
            unmapped[f"tags past {MAX_TAGS} a run (left out)"] += 1
            continue
        value = str(value).replace("\x00", "")
        if len(value) > MAX_TAG_VALUE:
            unmapped[f"tag values cut to {MAX_TAG_VALUE} characters"] += 1
            value = value[: MAX_TAG_VALUE - 1] + "…"
        tags[key] = value
    return tags


def _pick(run: Any, param: str | None, tag: str | None, defaults: Sequence[str]) -> str | None:
    """The value the mapping names (its param, then its tag), else the first default
    name found among the params, then the tags."""
    params, tags = run.data.params, run.data.tags
    if param or tag:
        if param and param in params:
            return str(params[param])
        if tag and tag in tags:
            return str(tags[tag])
        return None
    for source in (params, tags):
        for name in defaults:
            if name in source:
                return str(source[name])
    return None


def parse_labels(text: str) -> list[str] | None:
    """A JSON list of names, or names separated by commas; None when neither."""
    text = text.strip()
    if text.startswith("["):
        try:
            found = json.loads(text)
        except ValueError:
            return None
        if not isinstance(found, list) or not all(isinstance(x, str | int) for x in found):
            return None
        return [str(x).strip() for x in found]
    return [part.strip() for part in text.split(",")] if text else None


def parse_shape(text: str) -> list[int] | None:
    """A JSON list of sides, or sides separated by 'x' or ','."""
    text = text.strip()
    try:
        found = json.loads(text) if text.startswith("[") else re.split(r"\s*[x,]\s*", text)
        return [int(x) for x in found]
    except (TypeError, ValueError):
        return None


def declared_task(
    run: Any, mapping: TaskMapping, unmapped: Counter[str]
) -> attempt_pb2.DeclaredTask:
    """The task a run declares, from the mapping and the defaults; each value the
    gateway would refuse left out and counted."""
    task = attempt_pb2.DeclaredTask()
    dataset = None
    if mapping.dataset_param or mapping.dataset_tag:
        dataset = _pick(run, mapping.dataset_param, mapping.dataset_tag, ())
    else:
        inputs = getattr(getattr(run, "inputs", None), "dataset_inputs", None) or []
        if inputs:
            dataset = str(inputs[0].dataset.name)
        else:
            dataset = _pick(run, None, None, ("dataset", "dataset_name"))
    if dataset:
        if _DATASET_RE.fullmatch(dataset):
            task.dataset = dataset
        else:
            unmapped["dataset names metalearn refuses (left out)"] += 1
    labels_text = _pick(run, mapping.labels_param, mapping.labels_tag, ("labels", "classes"))
    if labels_text is not None:
        labels = parse_labels(labels_text)
        if labels is not None and _labels_ok(labels):
            task.labels.extend(labels)
        else:
            unmapped["label lists metalearn refuses (left out)"] += 1
    size_text = _pick(run, mapping.train_size_param, None, ("train_size",))
    if size_text is not None:
        try:
            size = float(size_text)
        except ValueError:
            size = -1.0
        if math.isfinite(size) and size >= 0 and size == int(size) and size <= MAX_STEP:
            task.train_size = int(size)
        else:
            unmapped["train sizes that are no count (left out)"] += 1
    shape_text = _pick(run, mapping.input_shape_param, None, ("input_shape",))
    if shape_text is not None:
        shape = parse_shape(shape_text)
        if shape is not None and _shape_ok(shape):
            task.input_shape.extend(shape)
        else:
            unmapped["input shapes metalearn refuses (left out)"] += 1
    return task


def _labels_ok(labels: Sequence[str]) -> bool:
    return (
        2 <= len(labels) <= command_limits.COMMAND_LIMITS.max_labels
        and len(set(labels)) == len(labels)
        and all(x and len(x) <= MAX_LABEL_CHARS and "\x00" not in x for x in labels)
    )


def _shape_ok(shape: Sequence[int]) -> bool:
    if not 1 <= len(shape) <= 4 or not all(1 <= side <= 1_000_000 for side in shape):
        return False
    # H x W x C given for C x H x W: the gateway refuses it rather than guess.
    return not (len(shape) == 3 and shape[2] in (1, 3, 4) and shape[0] > 4)


def _model_file(
    client: Any, run: Any, tmp: Path, bound: int, unmapped: Counter[str]
) -> Path | None:
    """The run's model as one local file (a directory zipped), or None without one."""
    run_id = run.info.run_id
    top = client.list_artifacts(run_id)
    source: str | None = None
    for item in top:
        if item.is_dir and any(
            Path(f.path).name == "MLmodel" for f in client.list_artifacts(run_id, item.path)
        ):
            source = item.path
            break
    if source is None:
        model = _logged_model(client, run)
        if model is not None:
            from mlflow.artifacts import download_artifacts

            local = Path(download_artifacts(artifact_uri=model, dst_path=str(tmp / "model")))
            return _one_file(local, tmp)
    if source is None and not top:
        unmapped["runs without artifacts (no model uploaded)"] += 1
        return None
    size = _artifact_size(client, run_id, source)
    if size > bound:
        unmapped["models over the size bound (not uploaded)"] += 1
        return None
    local = Path(client.download_artifacts(run_id, source or "", str(tmp)))
    return _one_file(local, tmp)


def _logged_model(client: Any, run: Any) -> str | None:
    """The artifact URI of the first model MLflow 3 logged from the run, if any."""
    try:
        models = client.search_logged_models(
            experiment_ids=[run.info.experiment_id],
            filter_string=f"source_run_id = '{run.info.run_id}'",
            max_results=1,
        )
    except Exception:  # an older server without logged models: the run's artifacts then
        return None
    return str(models[0].artifact_location) if models else None


def _artifact_size(client: Any, run_id: str, path: str | None) -> int:
    total = 0
    for item in client.list_artifacts(run_id, path):
        total += (
            _artifact_size(client, run_id, item.path) if item.is_dir else int(item.file_size or 0)
        )
    return total


def _one_file(local: Path, tmp: Path) -> Path:
    if local.is_file():
        return local
    archive = tmp / "model.zip"
    # Stored, not deflated: models are mostly dense numbers, and the bound is the size.
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        for path in sorted(local.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(local).as_posix())
    return archive


def parse_since(text: str) -> int:
    """--since: an ISO date or date and time (UTC unless it says otherwise), in ms."""
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"--since {text!r}: give a date (2024-05-01) or a date and time"
                         " (2024-05-01T12:00:00)") from None  # fmt: skip
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp() * 1000)


def parse_epoch_metrics(pairs: Sequence[str]) -> dict[str, str]:
    """--epoch-metric FIELD=METRIC, each field once."""
    found: dict[str, str] = {}
    for pair in pairs:
        name, sep, key = pair.partition("=")
        name, key = name.strip(), key.strip()
        if not sep or not name or not key:
            raise ValueError(f"--epoch-metric {pair!r}: give FIELD=METRIC, e.g. loss=train_loss")
        if name in found:
            raise ValueError(f"--epoch-metric: {name} is mapped twice")
        found[name] = key
    return found


def _version() -> str:
    try:
        return metadata.version("metalearn")
    except metadata.PackageNotFoundError:
        return "dev"


def import_mlflow(
    options: Options, channel: grpc.Channel | None, progress: TextIO | None = sys.stderr
) -> Summary:
    """Imports the runs of `options.uri` (see the module's docstring)."""
    return MlflowImporter(options, channel, progress).run()


__all__ = [
    "INSTALL_HINT",
    "MlflowImporter",
    "MlflowMissing",
    "Options",
    "SourceProblem",
    "Summary",
    "TaskMapping",
    "import_mlflow",
    "parse_epoch_metrics",
    "parse_since",
    "public_uri",
]
