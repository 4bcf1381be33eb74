"""Hypothesis-generated bad requests to every RPC: a precise status, nothing changed."""

from __future__ import annotations

import contextlib
import json
import re
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metalearn.v1 import (
    attempt_pb2,
    attempt_service_pb2_grpc,
    token_service_pb2_grpc,
    trainer_registry_service_pb2_grpc,
)
from metalearn.v1 import attempt_service_pb2 as apb
from metalearn.v1 import dataset_service_pb2 as dpb
from metalearn.v1 import token_service_pb2 as kpb
from metalearn.v1 import trainer_registry_service_pb2 as rpb
from metalearn.v1 import trainer_service_pb2 as tpb
from tests.harness import png, snapshot
from tests.test_attempts import make_attempt

NEVER = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}
SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,128}$")

odd_names = st.one_of(
    st.text(max_size=300).filter(lambda s: not NAME_RE.fullmatch(s)),
    st.just("x" * 129),
    st.just("a/b"),
    st.just("../etc/passwd"),
    st.just("name with space"),
    st.text(min_size=1, max_size=20).map(lambda s: s * 2000),  # huge
)
wrong_values = st.one_of(
    st.text(max_size=50).filter(lambda s: s not in ("auto", "n_labels", "same", "valid")),
    st.integers(max_value=-1).map(float),
    st.floats(allow_nan=True, allow_infinity=True).filter(
        lambda f: not (f == f and f.is_integer() and f >= 0)
    ),
    st.lists(st.text(max_size=3), min_size=1, max_size=3),
    st.just({"nested": 1}),
    st.none(),
)
size_args = st.sampled_from(["in_features", "out_features", "kernel_size", "stride", "padding"])


@st.composite
def bad_attempts(draw: Any) -> attempt_pb2.Attempt:
    attempt = make_attempt("fuzz-target")
    kind = draw(
        st.sampled_from(
            [
                "name",
                "layer_arg",
                "layer_name",
                "empty_op",
                "negative",
                "huge_label",
                "optimizer",
                "transform",
                "layer_count",
            ]
        )
    )
    cmd = attempt.training_commands
    if kind == "name":
        attempt.name = draw(odd_names)
    elif kind == "layer_arg":
        cmd.model.layers[1][draw(size_args)] = draw(wrong_values)
    elif kind == "layer_name":
        cmd.model.layers[0]["name"] = draw(
            st.one_of(st.text(max_size=40), st.integers().map(float), st.booleans())
        )
    elif kind == "empty_op":
        cmd.image_ops.add()
    elif kind == "negative":
        setattr(
            cmd,
            draw(st.sampled_from(["n_epoch", "batch_size", "n_labels"])),
            draw(st.integers(min_value=-(2**31), max_value=-1)),
        )
    elif kind == "huge_label":
        cmd.label_names.append(draw(st.text(min_size=1, max_size=10).map(lambda s: s * 300)))
    elif kind == "optimizer":
        cmd.optimizer["name"] = draw(
            st.text(max_size=30).filter(lambda s: s not in ("SGD", "Adam"))
        )
    elif kind == "transform":
        cmd.transform[draw(st.text(min_size=1, max_size=20))] = draw(wrong_values)
    else:
        for _ in range(300):
            cmd.model.layers.add().update({"name": "ReLU"})
    return attempt


def call_code(call: Any, request: Any) -> grpc.StatusCode | None:
    try:
        result = call(request)
        if hasattr(result, "__iter__") and not hasattr(result, "DESCRIPTOR"):
            list(result)
    except grpc.RpcError as err:
        return err.code()  # type: ignore[no-any-return]
    return None


@pytest.fixture()
def stored(gateway, attempts, datasets):
    """Some data that every bad request must leave exactly as it is."""
    attempts.CreateAttempt(apb.CreateAttemptRequest(attempt=make_attempt("keep-me")))
    datasets.UploadImages(iter([dpb.UploadImagesRequest(label="keep", data=png())]))
    return snapshot(gateway.database_url)


@SETTINGS
@given(attempt=bad_attempts())
def test_create_attempt(gateway, attempts, stored, attempt) -> None:
    code = call_code(attempts.CreateAttempt, apb.CreateAttemptRequest(attempt=attempt))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert snapshot(gateway.database_url) == stored


@SETTINGS
@given(good=st.integers(min_value=0, max_value=3), bad=bad_attempts())
def test_batch_create_attempts(gateway, attempts, stored, good, bad) -> None:
    """Good attempts around one bad one: refused whole, nothing stored."""
    batch = [make_attempt(f"fine-{i}") for i in range(good)]
    batch.insert(good // 2, bad)
    request = apb.BatchCreateAttemptsRequest(
        requests=[apb.CreateAttemptRequest(attempt=a) for a in batch]
    )
    assert call_code(attempts.BatchCreateAttempts, request) == grpc.StatusCode.INVALID_ARGUMENT
    assert snapshot(gateway.database_url) == stored


@SETTINGS
@given(
    good=st.integers(min_value=0, max_value=3),
    bad=bad_attempts(),
    status=st.integers(min_value=-2, max_value=12),
    losses=st.lists(st.floats(), max_size=5),
    accuracy=st.floats(),
    epochs=st.lists(st.integers(min_value=-3, max_value=4), max_size=4),
    skip=st.booleans(),
)
def test_import_attempts(gateway, attempts, stored, good, bad, status, losses, accuracy, epochs,
                         skip) -> None:  # fmt: skip
    """Good documents around one bad one: refused whole, nothing stored."""
    batch = [make_attempt(f"fine-{i}") for i in range(good)]
    if bad.name == "fuzz-target":  # a bad command under a good name
        bad.name = "fuzz-import"
    bad.status = status  # type: ignore[assignment]
    bad.training_losses.extend(losses)
    bad.accuracy = accuracy
    for epoch in epochs:
        bad.epochs.add(epoch=epoch, loss=1.0)
    batch.insert(good // 2, bad)
    request = apb.ImportAttemptsRequest(attempts=batch, skip_existing=skip)
    assert call_code(attempts.ImportAttempts, request) == grpc.StatusCode.INVALID_ARGUMENT
    assert snapshot(gateway.database_url) == stored


@SETTINGS
@given(
    attempt=bad_attempts(),
    paths=st.lists(
        st.sampled_from(["training_commands", "n_epoch", "status", "id", "accuracy", "x.y", ""]),
        max_size=4,
    ),
)
def test_update_attempt(gateway, attempts, stored, attempt, paths) -> None:
    if attempt.name == "fuzz-target":
        attempt.name = "keep-me"
    request = apb.UpdateAttemptRequest(
        attempt=attempt, update_mask=field_mask_pb2.FieldMask(paths=[*paths, "training_commands"])
    )
    code = call_code(attempts.UpdateAttempt, request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert snapshot(gateway.database_url) == stored


keys = st.one_of(
    st.builds(lambda n: {"name": n}, odd_names),
    st.builds(lambda i: {"id": i}, st.integers(min_value=-(2**63), max_value=0)),
    st.just({}),
)


@SETTINGS
@given(key=keys, view=st.integers(min_value=-5, max_value=5))
def test_get_and_delete_attempt(gateway, attempts, stored, key, view) -> None:
    code = call_code(attempts.GetAttempt, apb.GetAttemptRequest(view=view, **key))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    code = call_code(attempts.DeleteAttempt, apb.DeleteAttemptRequest(**key))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert snapshot(gateway.database_url) == stored


@SETTINGS
@given(
    page_size=st.integers(min_value=-(2**31), max_value=2**31 - 1),
    token=st.one_of(
        st.text(max_size=200),
        st.binary(max_size=100).map(lambda b: __import__("base64").urlsafe_b64encode(b).decode()),
    ),
    min_accuracy=st.floats(),
    order=st.integers(min_value=-3, max_value=6),
    statuses=st.lists(st.integers(min_value=-3, max_value=12), max_size=3),
    prefix=st.text(max_size=300),
    field=st.one_of(st.text(max_size=40), st.sampled_from(["accuracy desc", "id", "name"])),
    text=st.one_of(st.text(max_size=60), st.just('training_commands.batch_size > "x"')),
)
def test_list_attempts(
    gateway, attempts, stored, page_size, token, min_accuracy, order, statuses, prefix, field,
    text,
) -> None:  # fmt: skip
    request = apb.ListAttemptsRequest(
        page_size=page_size,
        page_token=token,
        min_accuracy=min_accuracy,
        order_by=order,
        statuses=statuses,
        name_prefix=prefix,
        order_by_field=field,
        filter=text,
    )  # type: ignore[arg-type]
    assert call_code(attempts.ListAttempts, request) not in NEVER
    assert call_code(attempts.GetLatestIndex, apb.GetLatestIndexRequest()) is None
    assert snapshot(gateway.database_url) == stored


@SETTINGS
@given(items=st.lists(st.tuples(st.text(max_size=300), st.binary(max_size=2000)), max_size=5))
def test_upload_images_of_garbage(gateway, datasets, stored, items) -> None:
    reply = datasets.UploadImages(
        iter(dpb.UploadImagesRequest(label=label, data=data) for label, data in items)
    )
    assert reply.added == 0 and reply.rejected + reply.duplicates == len(items)
    assert snapshot(gateway.database_url) == stored


@SETTINGS
@given(
    labels=st.lists(st.text(max_size=300).filter(lambda s: s != "keep"), max_size=3),
    ids=st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), max_size=3),
    split=st.integers(min_value=-2, max_value=6),
    fraction=st.floats(),
    limit=st.integers(min_value=-(2**31), max_value=2**31 - 1),
)
def test_read_and_delete_images(
    gateway, datasets, stored, labels, ids, split, fraction, limit
) -> None:
    fields: dict[str, Any] = {
        "label_names": labels, "ids": ids, "split": split, "test_fraction": fraction,
        "limit": limit,
    }  # fmt: skip
    assert call_code(datasets.ReadImages, dpb.ReadImagesRequest(**fields)) not in NEVER
    assert call_code(datasets.ListImages, dpb.ListImagesRequest(**fields)) not in NEVER
    assert (
        call_code(datasets.DeleteImages, dpb.DeleteImagesRequest(label_names=labels)) not in NEVER
    )
    assert snapshot(gateway.database_url) == stored


@SETTINGS
@given(attempt=bad_attempts())
def test_train(gateway, attempts, stored, attempt) -> None:
    # bad_attempts spoils either the name (then the command is fine) or something else.
    name = "keep-me" if attempt.name == "fuzz-target" else attempt.name
    request = apb.TrainRequest(name=name, command=attempt.training_commands)
    assert call_code(attempts.Train, request) == grpc.StatusCode.INVALID_ARGUMENT
    # A valid name with an untrainable command: no labels, no epochs, no model.
    empty = apb.TrainRequest(name="keep-me", command=attempt_pb2.TrainCommand())
    assert call_code(attempts.Train, empty) == grpc.StatusCode.INVALID_ARGUMENT
    assert snapshot(gateway.database_url) == stored


@SETTINGS
@given(
    key=keys,
    name=st.one_of(odd_names, st.just("keep-me"), st.just("nobody")),
    ids=st.lists(st.integers(min_value=-(2**63), max_value=0), min_size=1, max_size=3),
    from_epoch=st.integers(min_value=-(2**31), max_value=-1),
)
def test_test_watch_cancel_download(gateway, attempts, stored, key, name, ids, from_epoch) -> None:
    # "keep-me" exists but was never trained; "nobody" does not exist.
    code = call_code(attempts.Test, apb.TestRequest(name=name))
    assert code in {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                    grpc.StatusCode.FAILED_PRECONDITION}  # fmt: skip
    bad_ids = apb.TestRequest(name="keep-me", command=attempt_pb2.TestCommand(ids=ids))
    assert call_code(attempts.Test, bad_ids) == grpc.StatusCode.INVALID_ARGUMENT
    for call, request in (
        (attempts.WatchAttempt, apb.WatchAttemptRequest(**key)),
        (attempts.WatchAttempt, apb.WatchAttemptRequest(name="keep-me", from_epoch=from_epoch)),
        (attempts.CancelAttempt, apb.CancelAttemptRequest(**key)),
        (attempts.DownloadModel, apb.DownloadModelRequest(**key)),
    ):
        assert call_code(call, request) == grpc.StatusCode.INVALID_ARGUMENT
    assert call_code(attempts.CancelAttempt, apb.CancelAttemptRequest(name="keep-me")) == (
        grpc.StatusCode.FAILED_PRECONDITION
    )
    assert call_code(attempts.DownloadModel, apb.DownloadModelRequest(name="keep-me")) == (
        grpc.StatusCode.NOT_FOUND
    )
    assert snapshot(gateway.database_url) == stored


@SETTINGS
@given(
    address=st.one_of(st.text(max_size=300), st.just("host:0"), st.just("host:99999")),
    capacity=st.integers(min_value=-(2**31), max_value=2**31 - 1),
    busy=st.integers(min_value=-(2**31), max_value=-1),
)
def test_register_and_heartbeat(gateway, channel, stored, address, capacity, busy) -> None:
    stub = trainer_registry_service_pb2_grpc.TrainerRegistryServiceStub(channel)
    request = rpb.RegisterTrainerRequest(address=address, capacity=capacity)
    code = call_code(stub.RegisterTrainer, request)
    assert code not in NEVER
    if code is None:  # a valid address and capacity: undo it for the snapshot check
        from tests.harness import unregister

        unregister(gateway.database_url, address)
    heartbeat = rpb.HeartbeatRequest(address="unknown-host:1", busy_slots=busy)
    assert call_code(stub.Heartbeat, heartbeat) == grpc.StatusCode.INVALID_ARGUMENT
    assert call_code(stub.Heartbeat, rpb.HeartbeatRequest(address="unknown-host:1")) == (
        grpc.StatusCode.NOT_FOUND
    )
    assert snapshot(gateway.database_url) == stored


@SETTINGS
@given(
    attempt_id=st.integers(-(2**63), 2**63 - 1),
    fence=st.integers(-(2**63), 2**63 - 1),
    kind=st.integers(-5, 10),
)
def test_read_run_file(gateway, stored, attempt_id, fence, kind) -> None:
    """Any reference, by a trainer or an admin: refused by field, or not found (nothing
    is held here); never more."""
    request = rpb.ReadRunFileRequest(attempt_id=attempt_id, fence=fence, kind=kind)
    valid = attempt_id > 0 and fence > 0 and kind in (1, 2)
    for token in ("trainer", "admin"):
        with gateway.channel(token) as channel:
            stub = trainer_registry_service_pb2_grpc.TrainerRegistryServiceStub(channel)
            assert call_code(stub.ReadRunFile, request) == (
                grpc.StatusCode.NOT_FOUND if valid else grpc.StatusCode.INVALID_ARGUMENT
            )
    assert snapshot(gateway.database_url) == stored


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.floats(), st.text(max_size=10)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5),
                                                                          inner, max_size=3)),
    max_leaves=6,
)  # fmt: skip


@SETTINGS
@given(
    path=st.one_of(
        st.text(max_size=40),
        st.sampled_from(
            [
                "optimizer.lr",
                "batch_size",
                "model.layers[1].out_features",
                "model.layers[99].x",
                "optimizer",
            ]
        ),
    ),
    kind=st.sampled_from(["float", "int", "categorical", "none"]),
    low=st.floats(),
    high=st.floats(),
    ilow=st.integers(min_value=-(2**63), max_value=2**63 - 1),
    ihigh=st.integers(min_value=-(2**63), max_value=2**63 - 1),
    step=st.floats(),
    log=st.booleans(),
    choices=st.lists(json_values, max_size=4),
    n_trials=st.integers(min_value=-(2**31), max_value=2**31 - 1),
    sampler=st.one_of(st.text(max_size=10), st.sampled_from(["tpe", "grid", "cmaes", "qmc"])),
    args=st.dictionaries(st.text(max_size=20), json_values, max_size=3),
)
def test_study_requests(gateway, channel, stored, path, kind, low, high, ilow, ihigh, step,
                        log, choices, n_trials, sampler, args) -> None:  # fmt: skip
    """Anything in a study is refused with the field named, or (when it happens to be a
    valid study) stored; never UNKNOWN or INTERNAL, and a refusal stores nothing."""
    from google.protobuf import json_format

    from metalearn.v1 import study_service_pb2 as spb
    from metalearn.v1 import study_service_pb2_grpc

    stub = study_service_pb2_grpc.StudyServiceStub(channel)
    study = spb.Study(name="fuzz", base_command=make_attempt("x").training_commands,
                      n_trials=n_trials, seed=1)  # fmt: skip
    study.sampler.name = sampler
    # A value a Struct cannot hold: no client could send it either.
    with contextlib.suppress(ValueError, TypeError):
        study.sampler.args.update(args)
    parameter = study.search_space.add(path=path)
    if kind == "float":
        parameter.float.CopyFrom(spb.FloatRange(low=low, high=high, step=step, log=log))
    elif kind == "int":
        parameter.int.CopyFrom(spb.IntRange(low=ilow, high=ihigh, log=log))
    elif kind == "categorical":
        for choice in choices:
            try:
                json_format.ParseDict(choice, parameter.categorical.values.add())
            except json_format.ParseError:
                del parameter.categorical.values[-1]
    code = call_code(stub.CreateStudy, spb.CreateStudyRequest(study=study))
    assert code not in NEVER
    if code is None:
        stub.StopStudy(spb.StopStudyRequest(name="fuzz", cancel_running=True))
        stub.DeleteStudy(spb.DeleteStudyRequest(name="fuzz"))
        return
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert snapshot(gateway.database_url) == stored
    for call, request in (
        (stub.GetStudy, spb.GetStudyRequest(name=path)),
        (stub.WatchStudy, spb.WatchStudyRequest(name=path)),
        (stub.StopStudy, spb.StopStudyRequest(name=path)),
        (stub.DeleteStudy, spb.DeleteStudyRequest(name=path)),
        (stub.ListStudies, spb.ListStudiesRequest(page_size=n_trials, page_token=path)),
    ):
        assert call_code(call, request) not in NEVER


@SETTINGS
@given(
    labels=st.lists(
        st.one_of(st.text(max_size=40), st.just("digit 0"), st.just("a\x00b"), st.just("x" * 300)),
        max_size=4,
    ),
    op=st.one_of(st.none(), st.lists(st.integers(-3, 10_000), max_size=3), st.text(max_size=12)),
    fingerprint=st.one_of(st.text(max_size=80), st.just("0" * 64)),
    limit=st.integers(-3, 200),
    page_size=st.integers(-3, 1000),
    token=st.text(max_size=40),
)
def test_task_requests(channel, gateway, labels, op, fingerprint, limit, page_size, token) -> None:
    """Any task request gets a client's status (or an answer); never UNKNOWN or INTERNAL."""
    from metalearn.v1 import task_pb2, task_service_pb2_grpc
    from metalearn.v1 import task_service_pb2 as xpb

    stub = task_service_pb2_grpc.TaskServiceStub(channel)
    key = task_pb2.TaskKey(label_names=labels)
    if isinstance(op, list):
        key.image_ops.add().resize.size.extend(op)
    elif isinstance(op, str):
        key.image_ops.add().convert.mode = op
    for call, request in (
        (stub.ProfileTask, xpb.ProfileTaskRequest(task=key)),
        (stub.FindSimilarTasks, xpb.FindSimilarTasksRequest(task=key, limit=limit)),
        (stub.FindSimilarTasks, xpb.FindSimilarTasksRequest(fingerprint=fingerprint,
                                                             attempts_per_task=limit)),
        (stub.FindSimilarTasks, xpb.FindSimilarTasksRequest(attempt_id=limit - 1)),
        (stub.SuggestCommand, xpb.SuggestCommandRequest(task=key, neighbours=limit)),
        (stub.ListTasks, xpb.ListTasksRequest(page_size=page_size, page_token=token)),
    ):  # fmt: skip
        code = call_code(lambda r, call=call: call(r, timeout=10), request)
        assert code not in NEVER, (call, request)


@SETTINGS
@given(
    path=st.one_of(st.text(max_size=30), st.sampled_from(["flags", "hopeless", "epoch", ""])),
    op=st.sampled_from(["=", "!=", "<", ">=", ":", " IN ", " IS "]),
    value=st.one_of(st.text(max_size=20), st.floats(), st.booleans(), st.just("NULL")),
    below=st.floats(allow_nan=True, allow_infinity=True),
    stop=st.booleans(),
)
def test_curve_requests(channel, gateway, stored, path, op, value, below, stop) -> None:
    """Prognosis filters, hopeless thresholds and the curve model's RPCs: a client's
    status (or an answer), never UNKNOWN or INTERNAL, and nothing stored changes."""
    from metalearn.v1 import curve_service_pb2 as cpb
    from metalearn.v1 import curve_service_pb2_grpc

    stub = attempt_service_pb2_grpc.AttemptServiceStub(channel)
    literal = json.dumps(value) if not isinstance(value, float) else repr(value)
    request = apb.ListAttemptsRequest(filter=f"prognosis.{path}{op}{literal}")
    assert call_code(stub.ListAttempts, request) not in NEVER
    command = apb.TrainRequest(name="keep-me").command
    command.label_names.append("keep")
    command.n_epoch = 1
    command.hopeless_below = below
    command.stop_when_hopeless = stop
    if not (0 <= below <= 1) or (below and not stop):
        code = call_code(stub.Train, apb.TrainRequest(name="hopeless", command=command))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
    curves = curve_service_pb2_grpc.CurveServiceStub(channel)
    assert call_code(curves.GetCurveModel, cpb.GetCurveModelRequest()) == grpc.StatusCode.NOT_FOUND
    assert call_code(curves.FitCurveModel, cpb.FitCurveModelRequest()) == (
        grpc.StatusCode.FAILED_PRECONDITION
    )
    assert snapshot(gateway.database_url) == stored


_ANY_FLOAT = st.floats(allow_nan=True, allow_infinity=True)


@SETTINGS
@given(
    accuracies=st.lists(_ANY_FLOAT, max_size=12),
    losses=st.one_of(st.none(), st.lists(_ANY_FLOAT, max_size=12)),
    n_epoch=st.integers(-2, 20_000),
    n_labels=st.integers(-2, 20_000),
    optimizer=st.text(max_size=80),
    numbers=st.fixed_dictionaries(
        {},
        optional={
            "learning_rate": _ANY_FLOAT,
            "momentum": _ANY_FLOAT,
            "best": _ANY_FLOAT,
            "margin": _ANY_FLOAT,
        },
    ),
    batch_size=st.one_of(st.none(), st.integers(-(2**31), 2**31 - 1)),
    fingerprint=st.one_of(st.text(max_size=70), st.just("0" * 64)),
    finished=st.integers(-(2**31), 2**31 - 1),
    counts=st.lists(st.integers(-(2**63), 2**63 - 1), max_size=12),
)
def test_forecast_requests(
    channel, gateway, stored, accuracies, losses, n_epoch, n_labels, optimizer, numbers,
    batch_size, fingerprint, finished, counts,
) -> None:  # fmt: skip
    """A curve the caller holds, in any shape: a client's status or an answer, never
    UNKNOWN or INTERNAL, and nothing stored changes."""
    from metalearn.v1 import curve_service_pb2 as cpb
    from metalearn.v1 import curve_service_pb2_grpc

    request = cpb.ForecastCurveRequest(n_epoch=n_epoch, n_labels=n_labels, optimizer=optimizer,
                                       task_fingerprint=fingerprint, finished=finished,
                                       validation_images_per_label=counts,
                                       **numbers)  # fmt: skip
    for i, a in enumerate(accuracies):
        point = request.epochs.add(val_accuracy=a)
        if losses is not None and i < len(losses):
            point.loss = losses[i]
    if batch_size is not None:
        request.batch_size = batch_size
    stub = curve_service_pb2_grpc.CurveServiceStub(channel)
    assert call_code(lambda r: stub.ForecastCurve(r, timeout=10), request) not in NEVER
    assert snapshot(gateway.database_url) == stored


@SETTINGS
@given(
    name=st.one_of(st.text(max_size=80), st.just("ok\n"), st.just("a" * 128), st.just("a" * 129)),
    role=st.integers(-3, 9),
    days=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([-1.0, 3651.0])),
)
def test_token_requests(gateway, channel, name, role, days) -> None:
    stub = token_service_pb2_grpc.TokenServiceStub(channel)
    before = _tokens(gateway.database_url)
    code = call_code(
        stub.CreateToken, kpb.CreateTokenRequest(name=name, role=role, expires_in_days=days)
    )
    valid = (
        re.fullmatch(r"[A-Za-z0-9._-]{1,128}", name) is not None  # gateway/names.py
        and 1 <= role <= 4
        and 0 <= days <= 3650
    )
    if valid:
        assert code in (None, grpc.StatusCode.ALREADY_EXISTS)
        if code is None:
            stub.RevokeToken(kpb.RevokeTokenRequest(name=name))
    else:
        assert code == grpc.StatusCode.INVALID_ARGUMENT
    code = call_code(stub.RevokeToken, kpb.RevokeTokenRequest(name=name + "-nobody"))
    assert code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)
    assert call_code(stub.ListTokens, kpb.ListTokensRequest()) is None
    assert call_code(stub.WhoAmI, kpb.WhoAmIRequest()) is None
    assert _tokens(gateway.database_url) == before


finite_or_not = st.floats(allow_nan=True, allow_infinity=True)
keys_any = st.one_of(st.text(max_size=20), st.just("a\x00b"), st.just("k" * 300), st.just("ok/key"))


@SETTINGS
@given(
    name=st.one_of(odd_names, st.just("fuzz-run")),
    labels=st.lists(st.one_of(st.text(max_size=20), st.just("a\x00b"), st.just("x" * 300)),
                    max_size=4),
    dataset=st.one_of(st.text(max_size=30), st.just("cifar10")),
    params=st.dictionaries(keys_any, st.one_of(finite_or_not, st.text(max_size=10),
                                               st.just({"deep": {"er": [1, None]}})), max_size=3),
    n_epoch=st.integers(-5, 20_000),
    heartbeat=st.integers(-5, 100_000),
    epochs=st.lists(st.tuples(st.integers(-3, 5), finite_or_not, finite_or_not, finite_or_not),
                    max_size=4),
    series=st.lists(st.tuples(keys_any, st.lists(st.integers(-5, 2**60), max_size=4),
                              st.lists(finite_or_not, max_size=4),
                              st.lists(st.integers(-5, 2**62), max_size=4)), max_size=3),
    first=st.integers(-3, 5),
    end=st.integers(-2, 5),
    accuracy=finite_or_not,
    size=st.integers(-3, 5_000_000_000),
    sha=st.text(max_size=70),
    page=st.integers(-3, 200_000),
    features=st.dictionaries(st.text(max_size=24), finite_or_not, max_size=3),
    sample=st.lists(st.tuples(st.integers(-3, 5), st.binary(max_size=64)), max_size=4),
)  # fmt: skip
def test_reporting_requests(
    gateway, channel, stored, name, labels, dataset, params, n_epoch, heartbeat, epochs,
    series, first, end, accuracy, size, sha, page, features, sample,
) -> None:  # fmt: skip
    """Any report gets a client's status (or an answer); never UNKNOWN or INTERNAL."""
    from metalearn.v1 import reporting_service_pb2 as pb
    from metalearn.v1 import reporting_service_pb2_grpc, study_service_pb2_grpc, task_pb2
    from metalearn.v1 import study_service_pb2 as spb

    stub = reporting_service_pb2_grpc.ReportingServiceStub(channel)
    start = pb.StartRunRequest(
        name=name, task=attempt_pb2.DeclaredTask(labels=labels, dataset=dataset),
        n_epoch=n_epoch, heartbeat_seconds=heartbeat,
    )  # fmt: skip
    start.task.features.update(features)
    with contextlib.suppress(ValueError, TypeError):
        start.params.update(params)
    assert call_code(stub.StartRun, start) not in NEVER
    run_id = first
    with contextlib.suppress(grpc.RpcError):
        run_id = stub.StartRun(pb.StartRunRequest(name="fuzz-run")).attempt.id
    batch = pb.ReportBatch(sequence=1)
    for epoch, loss, accuracy_, lr in epochs:
        batch.epochs.add(epoch=epoch, loss=loss, val_accuracy=accuracy_, learning_rate=lr)
    for key, steps, values, times in series:
        batch.metrics.add(key=key, steps=steps, values=values, timestamps_ms=times)
    for messages in (
        [pb.ReportRunRequest(attempt_id=run_id), pb.ReportRunRequest(batch=batch)],
        [pb.ReportRunRequest(batch=batch)],
        [pb.ReportRunRequest(attempt_id=first)],
    ):
        assert call_code(lambda m: stub.ReportRun(iter(m)), messages) not in NEVER
    uploads = [pb.UploadModelRequest(header=pb.UploadHeader(attempt_id=run_id, size_bytes=size,
                                                           sha256=sha)),
               pb.UploadModelRequest(chunk=b"x" * 10)]  # fmt: skip
    assert call_code(lambda m: stub.UploadModel(iter(m)), uploads) not in NEVER
    shown = task_pb2.TaskSample(
        images=[task_pb2.SampleImage(label=label, data=data) for label, data in sample]
    )
    for target in (run_id, first):
        upload = pb.UploadTaskSampleRequest(attempt_id=target, sample=shown)
        assert call_code(stub.UploadTaskSample, upload) not in NEVER
    finish = pb.FinishRunRequest(attempt_id=run_id, end=end, error=name[:5000],
                                 test_result=attempt_pb2.TestResult(accuracy=accuracy))  # fmt: skip
    assert call_code(stub.FinishRun, finish) not in NEVER
    for key, *_ in series or [("k", [], [], [])]:
        history = pb.GetMetricHistoryRequest(attempt_id=run_id, key=key, after_step=first,
                                             page_size=page)  # fmt: skip
        assert call_code(stub.GetMetricHistory, history) not in NEVER
    studies = study_service_pb2_grpc.StudyServiceStub(channel)
    ask = spb.AskTrialRequest(name=name, worker=dataset * 10, request_id=dataset)
    assert call_code(studies.AskTrial, ask) not in NEVER
    # Whatever came, the runs go: the next example starts from the same store.
    attempts = attempt_service_pb2_grpc.AttemptServiceStub(channel)
    for taken in ("fuzz-run", name):
        with contextlib.suppress(grpc.RpcError):
            attempts.CancelAttempt(apb.CancelAttemptRequest(name=taken))
        with contextlib.suppress(grpc.RpcError):
            attempts.DeleteAttempt(apb.DeleteAttemptRequest(name=taken))


def _tokens(url: str) -> list[Any]:
    import psycopg

    with psycopg.connect(url) as conn:
        return conn.execute("SELECT name, token_hash FROM tokens ORDER BY name").fetchall()


def test_every_rpc_is_fuzzed() -> None:
    """A new RPC must get a fuzz test here before it ships."""
    covered = {
        "CreateAttempt",
        "BatchCreateAttempts",
        "ImportAttempts",
        "UpdateAttempt",
        "GetAttempt",
        "DeleteAttempt",
        "ListAttempts",
        "GetLatestIndex",
        "UploadImages",
        "ReadImages",
        "ListImages",
        "DeleteImages",
        "ListLabels",
        "Train",
        "Test",
        "WatchAttempt",
        "CancelAttempt",
        "DownloadModel",
        "RegisterTrainer",
        "Heartbeat",
        "ReadRunFile",
        "CreateToken",
        "ListTokens",
        "WhoAmI",
        "RevokeToken",
        "CreateStudy",
        "GetStudy",
        "WatchStudy",
        "ListStudies",
        "StopStudy",
        "DeleteStudy",
        "AskTrial",
        "StartRun",
        "ReportRun",
        "UploadModel",
        "FinishRun",
        "GetMetricHistory",
        "UploadTaskSample",
        "ProfileTask",
        "ListTasks",
        "FindSimilarTasks",
        "SuggestCommand",
        "FitTaskDistance",
        "FitCurveModel",
        "GetCurveModel",
        "ForecastCurve",
        # In tests/test_trainer.py, beside the trainer they need (Train and Test too):
        "GetTrainerInfo",
        "Interrupt",
    }
    rpcs: set[str] = set()
    from metalearn.v1 import curve_service_pb2 as cpb
    from metalearn.v1 import reporting_service_pb2 as repb
    from metalearn.v1 import study_service_pb2 as spb
    from metalearn.v1 import task_service_pb2 as xpb

    for desc in (apb.DESCRIPTOR, dpb.DESCRIPTOR, tpb.DESCRIPTOR, rpb.DESCRIPTOR, kpb.DESCRIPTOR,
                 spb.DESCRIPTOR, xpb.DESCRIPTOR, cpb.DESCRIPTOR, repb.DESCRIPTOR):  # fmt: skip
        for service in desc.services_by_name.values():
            rpcs |= {m.name for m in service.methods}
    assert rpcs - covered == set()


def test_fuzzer_findings_are_client_errors(attempts, datasets, gateway, stored) -> None:
    """Found by the fuzzer as INTERNAL: NUL in text (PostgreSQL refuses it) and infinite
    Struct numbers (JSON cannot hold them). Both are now the client's named mistake."""
    from tests.rpc import violations

    def error(call: Any, request: Any) -> grpc.RpcError:
        with pytest.raises(grpc.RpcError) as info:
            result = call(request)
            if not hasattr(result, "DESCRIPTOR"):
                list(result)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
        return info.value

    assert "label_names[0]" in violations(
        error(datasets.ReadImages, dpb.ReadImagesRequest(label_names=["a\x00"]))
    )
    assert "label_names[0]" in violations(
        error(datasets.DeleteImages, dpb.DeleteImagesRequest(label_names=["\x00"]))
    )
    assert "name_prefix" in violations(
        error(attempts.ListAttempts, apb.ListAttemptsRequest(name_prefix="x\x00"))
    )
    attempt = make_attempt("nul-label", labels=("cat\x00",))
    attempt.tags["k"] = "v\x00"
    found = violations(error(attempts.CreateAttempt, apb.CreateAttemptRequest(attempt=attempt)))
    assert "attempt.training_commands.label_names[0]" in found
    assert "attempt.tags['k']" in found
    attempt = make_attempt("inf-lr")
    attempt.training_commands.optimizer["lr"] = float("inf")  # MessageToDict cannot write it
    found = violations(error(attempts.CreateAttempt, apb.CreateAttemptRequest(attempt=attempt)))
    assert "attempt.training_commands.optimizer.lr" in found
    reply = datasets.UploadImages(iter([dpb.UploadImagesRequest(label="\x00", data=png())]))
    assert reply.rejected == 1 and "NUL" in reply.rejections[0].reason
    assert snapshot(gateway.database_url) == stored
