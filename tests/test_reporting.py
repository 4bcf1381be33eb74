"""ReportingService (issue 27): runs of users' own code, reported over gRPC, are attempts
like any other, stored exactly once, checked as a trainer's, and told when to stop."""

from __future__ import annotations

import hashlib
import math
import queue
import time
import uuid
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2

from metalearn.v1 import attempt_pb2, attempt_service_pb2, attempt_service_pb2_grpc
from metalearn.v1 import reporting_service_pb2 as rpb
from metalearn.v1 import reporting_service_pb2_grpc as rgrpc
from tests.harness import GatewayThread
from tests.rpc import violations


def _name() -> str:
    return f"run-{uuid.uuid4().hex[:10]}"


def _start(stub: rgrpc.ReportingServiceStub, **kwargs: Any) -> attempt_pb2.Attempt:
    params = struct_pb2.Struct()
    params.update(kwargs.pop("params", {"lr": 0.01, "model": {"depth": 3}}))
    request = rpb.StartRunRequest(
        name=kwargs.pop("name", None) or _name(),
        task=attempt_pb2.DeclaredTask(dataset="pets", labels=["cat", "dog"]),
        params=params,
        **kwargs,
    )
    return stub.StartRun(request).attempt


class Reporter:
    """One ReportRun stream, driven a message at a time."""

    def __init__(self, stub: rgrpc.ReportingServiceStub, attempt_id: int) -> None:
        self._out: queue.Queue[rpb.ReportRunRequest | None] = queue.Queue()
        self._out.put(rpb.ReportRunRequest(attempt_id=attempt_id))
        self.call = stub.ReportRun(iter(self._out.get, None), timeout=60)
        self.sequence = 0

    def send(
        self, *epochs: rpb.ReportedEpoch, metrics: tuple[rpb.MetricSeries, ...] = ()
    ) -> rpb.ReportRunResponse:
        self.sequence += 1
        self._out.put(
            rpb.ReportRunRequest(
                batch=rpb.ReportBatch(sequence=self.sequence, epochs=epochs, metrics=metrics)
            )
        )
        return next(self.call)

    def close(self) -> None:
        self._out.put(None)


def _epoch(n: int, loss: float = 1.0, **kwargs: Any) -> rpb.ReportedEpoch:
    return rpb.ReportedEpoch(epoch=n, loss=loss, **kwargs)


@pytest.fixture()
def reporting(channel: grpc.Channel) -> rgrpc.ReportingServiceStub:
    return rgrpc.ReportingServiceStub(channel)


def test_a_reported_run_is_an_attempt_with_its_epochs_params_and_provenance(
    reporting: rgrpc.ReportingServiceStub, attempts: attempt_service_pb2_grpc.AttemptServiceStub
) -> None:
    run = _start(reporting, n_epoch=3, tags={"team": "vision"})
    assert run.status == attempt_pb2.ATTEMPT_STATUS_TRAINING
    assert run.provenance == attempt_pb2.PROVENANCE_REPORTED
    assert run.reported.params["lr"] == 0.01
    reporter = Reporter(reporting, run.id)
    reply = reporter.send(
        _epoch(1, 0.9, val_accuracy=0.5, val_loss=1.1, learning_rate=0.01),
        _epoch(2, 0.7, val_accuracy=0.6, val_loss=0.9, metrics={"f1": 0.55}),
    )
    assert reply.acknowledged.sequence == 1 and reply.acknowledged.current_epoch == 2
    # Sent again (its answer lost): stored once.
    reply = reporter.send(_epoch(2, 0.7, val_accuracy=0.6), _epoch(3, 0.5, val_accuracy=0.7))
    assert reply.acknowledged.current_epoch == 3
    reporter.close()
    done = reporting.FinishRun(
        rpb.FinishRunRequest(
            attempt_id=run.id,
            end=rpb.RUN_END_FINISHED,
            last_epoch=3,
            test_result=attempt_pb2.TestResult(accuracy=0.68, loss=0.8, images=200),
        )
    ).attempt
    assert done.status == attempt_pb2.ATTEMPT_STATUS_COMPLETE
    assert done.accuracy == pytest.approx(0.68)  # exact: the double sent back
    got = attempts.GetAttempt(
        attempt_service_pb2.GetAttemptRequest(id=run.id, view=attempt_service_pb2.ATTEMPT_VIEW_FULL)
    ).attempt
    assert list(got.training_losses) == [0.9, 0.7, 0.5]
    assert [e.val_accuracy for e in got.epochs] == [0.5, 0.6, 0.7]
    assert got.best_val_accuracy == 0.7
    assert got.reported.metric_keys == ["f1"]
    assert got.reported.task.labels == ["cat", "dog"]
    assert got.tags["team"] == "vision"
    history = reporting.GetMetricHistory(
        rpb.GetMetricHistoryRequest(attempt_id=run.id, key="f1", after_step=-1)
    )
    assert list(history.steps) == [2] and list(history.values) == [0.55]
    # Retried, the finish answers the same; another ending is refused.
    again = reporting.FinishRun(
        rpb.FinishRunRequest(
            attempt_id=run.id,
            end=rpb.RUN_END_FINISHED,
            test_result=attempt_pb2.TestResult(accuracy=0.68),
        )
    )
    assert again.attempt.status == attempt_pb2.ATTEMPT_STATUS_COMPLETE
    with pytest.raises(grpc.RpcError) as err:
        reporting.FinishRun(rpb.FinishRunRequest(attempt_id=run.id, end=rpb.RUN_END_FAILED))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    # Filters see it like any other attempt.
    listed = attempts.ListAttempts(
        attempt_service_pb2.ListAttemptsRequest(filter='provenance = "REPORTED"')
    )
    assert [a.id for a in listed.attempts] == [run.id]


def test_points_are_stored_once_each_with_any_double(
    reporting: rgrpc.ReportingServiceStub,
) -> None:
    run = _start(reporting)
    reporter = Reporter(reporting, run.id)
    series = rpb.MetricSeries(
        key="train/loss", steps=range(0, 1000), values=[x / 7 for x in range(1000)]
    )
    odd = rpb.MetricSeries(key="grad norm", steps=[0, 1, 2], values=[math.nan, math.inf, -math.inf])
    assert reporter.send(metrics=(series, odd)).acknowledged.sequence == 1
    assert reporter.send(metrics=(series,)).acknowledged.sequence == 2  # a batch sent again
    more = rpb.MetricSeries(key="train/loss", steps=range(1000, 1500), values=[1.0] * 500)
    reporter.send(metrics=(more,))
    reporter.close()
    pages, after = [], -1
    while after != -1 or not pages:
        page = reporting.GetMetricHistory(
            rpb.GetMetricHistoryRequest(
                attempt_id=run.id, key="train/loss", after_step=after, page_size=600
            )
        )
        pages.append(page)
        after = page.next_after_step
    steps = [s for p in pages for s in p.steps]
    values = [v for p in pages for v in p.values]
    assert steps == list(range(1500))
    # Bit for bit: each double travels as its shortest repr and is read back the same.
    assert values[:1000] == [x / 7 for x in range(1000)]
    odd_back = reporting.GetMetricHistory(
        rpb.GetMetricHistoryRequest(attempt_id=run.id, key="grad norm", after_step=-1)
    )
    assert math.isnan(odd_back.values[0]) and list(odd_back.values[1:]) == [math.inf, -math.inf]


def test_bad_batches_name_their_field_and_store_nothing(
    reporting: rgrpc.ReportingServiceStub, attempts: attempt_service_pb2_grpc.AttemptServiceStub
) -> None:
    run = _start(reporting, n_epoch=5)
    cases = [
        ((_epoch(2),), (), "batch.epochs[0].epoch"),
        ((_epoch(1, val_accuracy=1.5),), (), "batch.epochs[0].val_accuracy"),
        ((_epoch(1, seconds=-1),), (), "batch.epochs[0].seconds"),
        ((_epoch(1), _epoch(3)), (), "batch.epochs[1].epoch"),
        ((_epoch(6),), (), "batch.epochs[0].epoch"),
        ((), (rpb.MetricSeries(key="a\tb", steps=[1], values=[1]),), "batch.metrics[0].key"),
        ((), (rpb.MetricSeries(key="m", steps=[2, 1], values=[1, 2]),), "batch.metrics[0].steps"),
        ((), (rpb.MetricSeries(key="m", steps=[1, 2], values=[1]),), "batch.metrics[0].values"),
        (
            (),
            (rpb.MetricSeries(key="m", steps=[1], values=[1], timestamps_ms=[5]),),
            "batch.metrics[0].timestamps_ms",
        ),
    ]
    for epochs, metrics, field in cases:
        reporter = Reporter(reporting, run.id)
        with pytest.raises(grpc.RpcError) as err:
            reporter.send(*epochs, metrics=metrics)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, field
        assert field in violations(err.value), (field, err.value.details())
    got = attempts.GetAttempt(attempt_service_pb2.GetAttemptRequest(id=run.id)).attempt
    assert got.current_epoch == 0 and got.status == attempt_pb2.ATTEMPT_STATUS_TRAINING


def test_bad_starts_name_their_field(reporting: rgrpc.ReportingServiceStub) -> None:
    cases = [
        (rpb.StartRunRequest(name="no spaces"), "name"),
        (
            rpb.StartRunRequest(name=_name(), task=attempt_pb2.DeclaredTask(labels=["one"])),
            "task.labels",
        ),
        (
            rpb.StartRunRequest(name=_name(), task=attempt_pb2.DeclaredTask(labels=["a", "a"])),
            "task.labels[1]",
        ),
        (rpb.StartRunRequest(name=_name(), heartbeat_seconds=3), "heartbeat_seconds"),
        (rpb.StartRunRequest(name=_name(), n_epoch=-1), "n_epoch"),
        (
            rpb.StartRunRequest(name=_name(), task=attempt_pb2.DeclaredTask(dataset="a b")),
            "task.dataset",
        ),
    ]
    for counts in ([5], [5, -1], [0, 0], [10**13, 1]):
        task = attempt_pb2.DeclaredTask(labels=["a", "b"], validation_images_per_label=counts)
        cases.append(
            (rpb.StartRunRequest(name=_name(), task=task), "task.validation_images_per_label")
        )
    for request, field in cases:
        with pytest.raises(grpc.RpcError) as err:
            reporting.StartRun(request)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in violations(err.value), (field, err.value.details())


def test_a_cancelled_run_tells_its_reporter_to_stop(
    reporting: rgrpc.ReportingServiceStub, attempts: attempt_service_pb2_grpc.AttemptServiceStub
) -> None:
    run = _start(reporting)
    reporter = Reporter(reporting, run.id)
    reporter.send(_epoch(1))
    attempts.CancelAttempt(attempt_service_pb2.CancelAttemptRequest(id=run.id))
    # The stop comes on the stream unasked, then the stream ends.
    reply = next(reporter.call)
    assert reply.stop.status == attempt_pb2.ATTEMPT_STATUS_CANCELLED
    with pytest.raises(StopIteration):
        next(reporter.call)
    # A reporter that comes back to it hears the same at once.
    again = Reporter(reporting, run.id)
    assert next(again.call).stop.status == attempt_pb2.ATTEMPT_STATUS_CANCELLED


def test_a_nan_loss_ends_the_run_as_diverged(reporting: rgrpc.ReportingServiceStub) -> None:
    run = _start(reporting)
    reporter = Reporter(reporting, run.id)
    reply = reporter.send(_epoch(1, 0.5), _epoch(2, math.nan))
    assert reply.stop.status == attempt_pb2.ATTEMPT_STATUS_FAILED
    assert "diverged" in reply.stop.reason


@pytest.mark.slow  # waits out a heartbeat of 10 s, the shortest a run may have
def test_a_silent_reporters_run_fails_as_lost(
    gateway: GatewayThread,
    reporting: rgrpc.ReportingServiceStub,
    attempts: attempt_service_pb2_grpc.AttemptServiceStub,
) -> None:
    run = _start(reporting, heartbeat_seconds=10)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        got = attempts.GetAttempt(attempt_service_pb2.GetAttemptRequest(id=run.id)).attempt
        if got.status != attempt_pb2.ATTEMPT_STATUS_TRAINING:
            break
        time.sleep(0.5)
    assert got.status == attempt_pb2.ATTEMPT_STATUS_FAILED
    assert "lost" in got.error


def test_a_model_upload_is_checked_and_downloadable(
    reporting: rgrpc.ReportingServiceStub, attempts: attempt_service_pb2_grpc.AttemptServiceStub
) -> None:
    run = _start(reporting)
    data = bytes(range(256)) * 9000  # 2.3 MB: three chunks
    digest = hashlib.sha256(data).hexdigest()

    def upload(sha: str, size: int) -> rpb.UploadModelResponse:
        header = rpb.UploadModelRequest(
            header=rpb.UploadHeader(attempt_id=run.id, size_bytes=size, sha256=sha)
        )
        chunks = [
            rpb.UploadModelRequest(chunk=data[i : i + (1 << 20)])
            for i in range(0, len(data), 1 << 20)
        ]
        return reporting.UploadModel(iter([header, *chunks]))

    with pytest.raises(grpc.RpcError) as err:
        upload("0" * 64, len(data))
    assert "header.sha256" in violations(err.value)
    stored = upload(digest, len(data)).model
    assert stored.sha256 == digest and stored.size_bytes == len(data)
    # Tested by its own code, never by a trainer here.
    reporting.FinishRun(rpb.FinishRunRequest(attempt_id=run.id, end=rpb.RUN_END_FINISHED))
    with pytest.raises(grpc.RpcError) as err:
        attempts.Test(attempt_service_pb2.TestRequest(name=run.name))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    body = b"".join(
        r.data
        for r in attempts.DownloadModel(attempt_service_pb2.DownloadModelRequest(name=run.name))
    )
    assert hashlib.sha256(body).hexdigest() == digest


def test_only_the_owner_reports_to_a_run(gateway: GatewayThread) -> None:
    alice = gateway.make_token(f"alice-{uuid.uuid4().hex[:6]}", "writer")
    bob = gateway.make_token(f"bob-{uuid.uuid4().hex[:6]}", "writer")
    with gateway.channel(alice) as a, gateway.channel(bob) as b:
        run = _start(rgrpc.ReportingServiceStub(a))
        reporter = Reporter(rgrpc.ReportingServiceStub(b), run.id)
        with pytest.raises(grpc.RpcError) as err:
            reporter.send(_epoch(1))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.RpcError) as err:
            rgrpc.ReportingServiceStub(b).FinishRun(
                rpb.FinishRunRequest(attempt_id=run.id, end=rpb.RUN_END_KILLED)
            )
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert run.owner.startswith("alice-")


def test_a_reported_run_at_chance_is_flagged_and_stopped_when_it_asked(
    reporting: rgrpc.ReportingServiceStub, attempts: attempt_service_pb2_grpc.AttemptServiceStub
) -> None:
    """The prognosis reads a reported run's declared labels (chance is 1/2 here): a run
    stuck there is flagged, and one that asked to stop once hopeless is stopped."""
    run = _start(reporting, n_epoch=20, stop_when_hopeless=True)
    reporter = Reporter(reporting, run.id)
    stop = None
    for epoch in range(1, 21):
        reply = reporter.send(_epoch(epoch, math.log(2), val_accuracy=0.5, val_loss=math.log(2)))
        if reply.WhichOneof("kind") == "stop":
            stop = reply.stop
            break
    got = attempts.GetAttempt(attempt_service_pb2.GetAttemptRequest(id=run.id)).attempt
    kinds = [f.kind for f in got.prognosis.flags]
    assert attempt_pb2.CURVE_FLAG_KIND_AT_CHANCE in kinds, got.prognosis
    assert stop is not None and stop.status == attempt_pb2.ATTEMPT_STATUS_PRUNED, got.prognosis
    assert "hopeless" in stop.reason and got.status == attempt_pb2.ATTEMPT_STATUS_PRUNED


def test_a_reported_runs_declared_validation_split_sets_its_chance(
    reporting: rgrpc.ReportingServiceStub, attempts: attempt_service_pb2_grpc.AttemptServiceStub
) -> None:
    """A run that validates on 90 cats and 10 dogs and names "cat" every time scores 0.9:
    chance for it, so flagged AT_CHANCE (and stopped, as it asked), where chance at 1/2
    would call it learning."""
    task = attempt_pb2.DeclaredTask(
        dataset="pets", labels=["cat", "dog"], validation_images_per_label=[90, 10]
    )
    counted = reporting.StartRun(
        rpb.StartRunRequest(name=_name(), task=task, n_epoch=20, stop_when_hopeless=True)
    ).attempt
    plain = _start(reporting, n_epoch=20, stop_when_hopeless=True)  # the same, no counts
    entropy = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))
    stopped = {}
    for run in (counted, plain):
        reporter = Reporter(reporting, run.id)
        for epoch in range(1, 7):
            reply = reporter.send(_epoch(epoch, entropy, val_accuracy=0.9, val_loss=entropy))
            if reply.WhichOneof("kind") == "stop":
                break
        stopped[run.id] = reply.WhichOneof("kind") == "stop"
        reporter.close()

    def flags(attempt_id: int) -> list[int]:
        got = attempts.GetAttempt(attempt_service_pb2.GetAttemptRequest(id=attempt_id)).attempt
        return [f.kind for f in got.prognosis.flags]

    assert attempt_pb2.CURVE_FLAG_KIND_AT_CHANCE in flags(counted.id)
    assert stopped[counted.id]
    assert attempt_pb2.CURVE_FLAG_KIND_AT_CHANCE not in flags(plain.id)
    assert not stopped[plain.id]


def test_a_run_holds_at_most_a_thousand_metric_names_across_its_streams(
    reporting: rgrpc.ReportingServiceStub,
) -> None:
    run = _start(reporting)
    names = [f"m{i}" for i in range(1000)]
    many = tuple(rpb.MetricSeries(key=k, steps=[0], values=[1.0]) for k in names)
    assert Reporter(reporting, run.id).send(metrics=many).acknowledged.sequence == 1
    # A new stream (a reporter that reconnected) may go on with the names it has...
    again = Reporter(reporting, run.id)
    more = tuple(rpb.MetricSeries(key=k, steps=[1], values=[2.0]) for k in names)
    assert again.send(metrics=more).acknowledged.sequence == 1
    # ...but not add one more.
    with pytest.raises(grpc.RpcError) as err:
        again.send(metrics=(rpb.MetricSeries(key="one-too-many", steps=[0], values=[1.0]),))
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_prognoses_of_runs_that_did_not_opt_in_come_in_batches_and_at_the_end(
    reporting: rgrpc.ReportingServiceStub, attempts: attempt_service_pb2_grpc.AttemptServiceStub
) -> None:
    """A run that does not stop once hopeless gets its prognosis from the next batch (a
    second at most), not on its epoch's path; a run that ends gets it at its end."""
    runs = [_start(reporting, n_epoch=10) for _ in range(3)]
    for run in runs:
        reporter = Reporter(reporting, run.id)
        for epoch in (1, 2):
            reporter.send(_epoch(epoch, 0.5, val_accuracy=0.7))
    deadline = time.monotonic() + 30  # a batch a second; generous for a loaded machine
    while True:
        got = [attempts.GetAttempt(attempt_service_pb2.GetAttemptRequest(id=r.id)).attempt
               for r in runs]  # fmt: skip
        if all(a.prognosis.epoch == 2 for a in got) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert [a.prognosis.epoch for a in got] == [2, 2, 2]
    # Its last epoch, then its end at once: the run's last prognosis is kept all the same
    # (by its stream's end, or the batch just after: no other lease took the run).
    last = _start(reporting, n_epoch=3)
    reporter = Reporter(reporting, last.id)
    for epoch in (1, 2, 3):
        reporter.send(_epoch(epoch, 0.5, val_accuracy=0.7))
    reporting.FinishRun(
        rpb.FinishRunRequest(attempt_id=last.id, end=rpb.RUN_END_FINISHED, last_epoch=3)
    )
    reporter.close()
    deadline = time.monotonic() + 30
    while True:
        ended = attempts.GetAttempt(attempt_service_pb2.GetAttemptRequest(id=last.id)).attempt
        if ended.prognosis.epoch == 3 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert ended.status == attempt_pb2.ATTEMPT_STATUS_TRAINED
    assert ended.prognosis.epoch == 3, ended.prognosis
