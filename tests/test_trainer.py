"""TrainerService against a real gateway, real images and real worker processes."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metalearn import digits
from metalearn.credentials import open_channel
from metalearn.v1 import (
    attempt_pb2,
    dataset_service_pb2,
    dataset_service_pb2_grpc,
    trainer_service_pb2,
    trainer_service_pb2_grpc,
)
from tests.harness import GatewayThread
from tests.rpc import expect_error, violations
from tests.trainer_harness import collect, lenet_command, lenet_doc, stored_file
from trainer.config import TrainerConfig
from trainer.server import create_server

# a real trainer training the digits: not in `make test-fast`.
pytestmark = pytest.mark.slow

pb = trainer_service_pb2
CODE = grpc.StatusCode
CREDENTIAL = "test-gateway-credential"


def start_trainer(gateway: GatewayThread, cache: Path, capacity: int) -> tuple[grpc.Server, str]:
    # Called directly, as its gateway would (with a fixed credential), and reading
    # images with an admin token (a trainer token reads only the work it holds).
    config = TrainerConfig(
        listen="127.0.0.1:0", gateway=gateway.address, capacity=capacity, cache_dir=cache,
        checkpoint_every_epochs=5, stop_grace_seconds=5, token=gateway.admin_token,
        gateway_credential=CREDENTIAL, slot_wait_seconds=1,
    )  # fmt: skip
    server, port, _, _ = create_server(config)
    server.start()
    return server, f"127.0.0.1:{port}"


class TrainerStub(trainer_service_pb2_grpc.TrainerServiceStub):
    """A trainer's stub, and the gateway its runs read their files from."""

    def __init__(self, channel: grpc.Channel, gateway: GatewayThread) -> None:
        super().__init__(channel)
        self.gateway = gateway

    def held(self, data: bytes, kind: str) -> pb.RunFile:
        """`data` stored as the `kind` file of a running attempt, named as a request
        names it: the trainer reads it from the gateway."""
        return stored_file(self.gateway, data, kind)


@pytest.fixture(scope="module")
def trainer(
    digits_gateway: GatewayThread, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TrainerStub]:
    server, address = start_trainer(digits_gateway, tmp_path_factory.mktemp("cache"), 2)
    with open_channel(address, CREDENTIAL) as channel:
        yield TrainerStub(channel, digits_gateway)
    server.stop(5).wait()


def drain(method):
    """A streaming method as a call that raises its error (streams raise when read)."""
    return lambda request: list(method(request))


def train(stub, command: attempt_pb2.TrainCommand, **fields):
    if isinstance(fields.get("resume_checkpoint"), bytes):  # stored, and named by reference
        fields["resume_checkpoint"] = stub.held(fields["resume_checkpoint"], "checkpoint")
    return collect(
        stub.Train(pb.TrainerServiceTrainRequest(attempt_name="t", command=command, **fields))
    )


def test_lenet_learns_the_digits(trainer) -> None:
    run = train(trainer, lenet_command())
    assert run.order == ["started", "epoch", "checkpoint", "epoch", "weights", "finished"]
    assert run.started is not None and run.started.first_epoch == 1
    assert list(run.started.input_shape) == [1, 8, 8] and run.started.parameters > 0
    # 80 % of 1,797 for training, a tenth of that held out for validation.
    assert run.started.train_images + run.started.validation_images == sum(
        run.started.dataset.images_per_label
    )
    assert 1300 < run.started.train_images + run.started.validation_images < 1560
    # Each label's share of the validation split (chance is the largest's).
    held_out = list(run.started.dataset.validation_images_per_label)
    assert len(held_out) == 10 and sum(held_out) == run.started.validation_images
    counts = run.started.dataset.images_per_label
    assert all(0 < h < n for h, n in zip(held_out, counts, strict=True))
    assert [e.epoch for e in run.epochs] == list(range(1, 11))
    assert run.losses[-1] < run.losses[0] / 5 and all(e.samples_per_second > 0 for e in run.epochs)
    # Each epoch's rate is the one it trained at: StepLR(5, 0.5) halves it from epoch 6.
    assert [e.learning_rate for e in run.epochs[4:6]] == pytest.approx([0.003, 0.0015])
    assert run.finished is not None and run.finished.outcome == pb.TRAIN_OUTCOME_COMPLETED
    assert set(run.checkpoints) == {5}

    weights = trainer.held(run.weights, "weights")
    events = list(trainer.Test(pb.TrainerServiceTestRequest(attempt_name="t", weights=weights)))
    assert all(e.WhichOneof("event") == "progress" for e in events[:-1])
    result = events[-1].result
    assert result.accuracy >= 0.95, result.accuracy
    assert result.images == 1797 - sum(run.started.dataset.images_per_label)
    assert len(result.confusion_matrix) == 100 and sum(result.confusion_matrix) == result.images
    assert set(result.per_label_accuracy) == set(digits.LABELS)


def test_same_command_and_seed_give_the_same_losses(trainer) -> None:
    command = lenet_command(n_epoch=3)
    with ThreadPoolExecutor(2) as pool:  # side by side, in two worker processes
        first, second = pool.map(lambda _: train(trainer, command), range(2))
    third = train(trainer, command)
    assert first.losses == second.losses == third.losses
    assert third.started is not None and third.started.cache_hit  # nothing decoded again
    other_seed = train(trainer, lenet_command(n_epoch=3, seed=2))
    assert other_seed.losses != first.losses


def test_resuming_a_checkpoint_gives_the_uninterrupted_results(trainer) -> None:
    # Dropout and a random flip: the random state must travel in the checkpoint too.
    doc = lenet_doc()
    doc["model"]["layers"].insert(8, {"name": "Dropout", "p": 0.3})
    doc["transform"]["RandomHorizontalFlip"] = {"p": 0.5}
    doc.update(n_epoch=6, batch_size=64)
    command = json_format.ParseDict(doc, attempt_pb2.TrainCommand())
    whole = train(trainer, command, checkpoint_every_epochs=3)
    assert set(whole.checkpoints) == {3}
    resumed = train(trainer, command, resume_checkpoint=whole.checkpoints[3])
    assert resumed.started is not None and resumed.started.first_epoch == 4
    assert [e.epoch for e in resumed.epochs] == [4, 5, 6]
    assert resumed.losses == whole.losses[3:]
    assert resumed.weights == whole.weights


def test_cancelling_stops_the_run_within_a_batch(trainer) -> None:
    call = trainer.Train(
        pb.TrainerServiceTrainRequest(
            attempt_name="long", command=lenet_command(n_epoch=10_000, batch_size=1)
        )
    )
    for event in call:
        if event.WhichOneof("event") == "started":
            break
    call.cancel()
    deadline = time.monotonic() + 10
    while (
        trainer.GetTrainerInfo(pb.GetTrainerInfoRequest()).busy_slots
        and time.monotonic() < deadline
    ):
        time.sleep(0.05)
    assert trainer.GetTrainerInfo(pb.GetTrainerInfoRequest()).busy_slots == 0


def test_a_diverging_run_ends_with_the_reason(trainer) -> None:
    command = lenet_command(n_epoch=3)
    command.optimizer.Clear()
    command.optimizer.update({"name": "SGD", "lr": 1e30})
    run = train(trainer, command)
    assert run.finished is not None and run.finished.outcome == pb.TRAIN_OUTCOME_DIVERGED
    assert "loss is nan" in run.finished.reason or "loss is inf" in run.finished.reason
    assert run.weights == b""


@pytest.mark.parametrize(
    "change,field",
    [
        (lambda c: c.model.layers[0].update({"kernel_sizes": 3}),
         "command.model.layers[0].kernel_sizes"),
        (lambda c: c.model.layers[3].update({"in_channels": 5}), "command.model.layers[3]"),
        (lambda c: c.optimizer.update({"lr": -1.0}), "command.optimizer"),
        (lambda c: c.criterion.update({"name": "Pickle"}), "command.criterion.name"),
        (lambda c: c.transform.update({"Normalize": {"mean": [0.5, 0.5], "std": [1, 1]}}),
         "command.transform.Normalize.mean"),
        (lambda c: setattr(c, "batch_size", 0), "command.batch_size"),
        (lambda c: setattr(c, "n_epoch", 10**6), "command.n_epoch"),
        (lambda c: c.label_names.append("digit 0"), "command.label_names[10]"),
    ],
)  # fmt: skip
def test_bad_commands_name_the_field(trainer, change, field) -> None:
    command = lenet_command()
    change(command)
    err = expect_error(
        CODE.INVALID_ARGUMENT,
        drain(trainer.Train),
        pb.TrainerServiceTrainRequest(attempt_name="bad", command=command),
    )
    assert field in violations(err), violations(err)


def test_missing_data_and_bad_checkpoints(trainer) -> None:
    command = lenet_command(label_names=["digit 0", "no such label"])
    err = expect_error(
        CODE.FAILED_PRECONDITION,
        drain(trainer.Train),
        pb.TrainerServiceTrainRequest(command=command),
    )
    assert "no such label" in err.details()
    err = expect_error(
        CODE.INVALID_ARGUMENT,
        drain(trainer.Train),
        pb.TrainerServiceTrainRequest(
            command=lenet_command(),
            resume_checkpoint=trainer.held(b"not a checkpoint", "checkpoint"),
        ),
    )
    assert "resume_checkpoint" in violations(err)
    err = expect_error(
        CODE.INVALID_ARGUMENT,
        drain(trainer.Test),
        pb.TrainerServiceTestRequest(weights=trainer.held(b"nonsense", "weights")),
    )
    assert "weights" in violations(err)


def test_a_full_trainer_says_so(digits_gateway, tmp_path) -> None:
    server, address = start_trainer(digits_gateway, tmp_path, 1)
    try:
        with open_channel(address, CREDENTIAL) as channel:
            stub = trainer_service_pb2_grpc.TrainerServiceStub(channel)
            busy = stub.Train(pb.TrainerServiceTrainRequest(command=lenet_command(n_epoch=10_000)))
            started = threading.Event()

            def read() -> None:
                with contextlib.suppress(grpc.RpcError):  # cancelled below
                    for event in busy:
                        if event.WhichOneof("event") == "started":
                            started.set()

            reader = threading.Thread(target=read, daemon=True)
            reader.start()
            assert started.wait(30)
            info = stub.GetTrainerInfo(pb.GetTrainerInfoRequest())
            assert (info.capacity, info.busy_slots) == (1, 1) and info.devices[0].name == "cpu"
            expect_error(
                CODE.RESOURCE_EXHAUSTED,
                drain(stub.Train),
                pb.TrainerServiceTrainRequest(command=lenet_command()),
            )
            busy.cancel()
            reader.join(10)
    finally:
        server.stop(5).wait()


def test_testing_given_labels_limit_and_ids(trainer, digits_gateway) -> None:
    run = train(trainer, lenet_command(n_epoch=2))
    weights = trainer.held(run.weights, "weights")
    command = attempt_pb2.TestCommand(label_names=["digit 3"], limit=5)
    result = list(trainer.Test(pb.TrainerServiceTestRequest(command=command, weights=weights)))[
        -1
    ].result
    assert result.images == 5 and set(result.per_label_accuracy) == {"digit 3"}
    with digits_gateway.channel() as channel:
        some = dataset_service_pb2_grpc.DatasetServiceStub(channel).ReadImages(
            dataset_service_pb2.ReadImagesRequest(label_names=["digit 7"], limit=3, skip_data=True)
        )
        ids = [image.id for image in some]
    command = attempt_pb2.TestCommand(ids=ids)
    result = list(trainer.Test(pb.TrainerServiceTestRequest(command=command, weights=weights)))[
        -1
    ].result
    assert result.images == 3 and set(result.per_label_accuracy) == {"digit 7"}
    err = expect_error(
        CODE.INVALID_ARGUMENT,
        drain(trainer.Test),
        pb.TrainerServiceTestRequest(
            command=attempt_pb2.TestCommand(label_names=["cat"]), weights=weights
        ),
    )
    assert "command.label_names[0]" in violations(err)


# Values a client might put anywhere in a command's Structs.
_junk = st.one_of(
    st.text(max_size=20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**12), max_value=10**12).map(float),
    st.booleans(),
    st.none(),
    st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=4),
    st.just({"nested": [1, "x"]}),
)
_arg_names = st.sampled_from(
    ["in_channels", "out_channels", "kernel_size", "stride", "padding", "p", "lr", "momentum",
     "name", "size", "mean", "std", "step_size", "gamma", "reduction", "weight", "dim"]
)  # fmt: skip


@st.composite
def bad_train_requests(draw: Any) -> pb.TrainerServiceTrainRequest:
    doc = lenet_doc()
    doc["n_epoch"] = 1
    where = draw(st.sampled_from(["layer", "optimizer", "criterion", "scheduler", "transform",
                                  "image_op", "numbers", "labels", "checkpoint"]))  # fmt: skip
    if where == "layer":
        index = draw(st.integers(0, len(doc["model"]["layers"]) - 1))
        doc["model"]["layers"][index][draw(_arg_names)] = draw(_junk)
    elif where in ("optimizer", "criterion", "scheduler", "transform"):
        key = (
            draw(st.sampled_from(["Normalize", "RandomCrop", "ColorJitter"]))
            if where == "transform"
            else draw(_arg_names)
        )
        doc[where] = {**doc.get(where, {}), key: draw(_junk)}
    elif where == "image_op":
        op = draw(st.sampled_from(["resize", "center_crop"]))
        doc["image_ops"] = [{op: {"size": draw(st.lists(st.integers(-5, 100_000), max_size=3))}}]
    elif where == "numbers":  # (n_epoch only out of range: a valid one would train on)
        doc[draw(st.sampled_from(["batch_size", "n_labels"]))] = draw(
            st.integers(-(2**31), 2**31 - 1)
        )
        doc["n_epoch"] = draw(
            st.one_of(st.integers(max_value=0), st.integers(min_value=10_001)).filter(
                lambda n: -(2**31) <= n < 2**31
            )
        )
    elif where == "labels":
        doc["label_names"] = draw(st.lists(st.text(max_size=300), max_size=3))
    request = pb.TrainerServiceTrainRequest(
        command=json_format.ParseDict(doc, attempt_pb2.TrainCommand())
    )
    if where == "checkpoint":  # a reference to nothing the gateway holds for this trainer
        request.resume_checkpoint.CopyFrom(
            pb.RunFile(
                attempt_id=draw(st.integers(-(2**63), 2**63 - 1)),
                fence=draw(st.integers(-(2**63), 2**63 - 1)),
                kind=draw(st.integers(0, 5)),
                size=draw(st.integers(-(2**63), 2**63 - 1)),
                sha256=draw(st.text(max_size=80)),
            )
        )
    return request


# 40 examples: each one a trainer may accept trains an epoch (a second each here), and
# hypothesis keeps the failing ones it finds for the next run.
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(request=bad_train_requests())
def test_bad_train_requests_are_never_internal(trainer, request) -> None:
    try:
        collect(trainer.Train(request, timeout=60))
    except grpc.RpcError as err:
        assert err.code() not in (CODE.UNKNOWN, CODE.INTERNAL), err.details()


@pytest.fixture(scope="module")
def weights(trainer) -> bytes:
    return train(trainer, lenet_command(n_epoch=1)).weights


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    damage=st.one_of(st.none(), st.binary(max_size=300), st.integers(0, 2000)),
    labels=st.lists(st.one_of(st.sampled_from(digits.LABELS), st.text(max_size=50)), max_size=2),
    ids=st.lists(st.integers(-5, 10**9), max_size=3),
    limit=st.integers(-5, 5),
)
def test_bad_test_requests_are_never_internal(trainer, weights, damage, labels, ids, limit) -> None:
    if isinstance(damage, bytes):
        weights = damage
    elif isinstance(damage, int):  # a weights file cut short
        weights = weights[:damage]
    command = attempt_pb2.TestCommand(label_names=labels, ids=ids, limit=limit)
    stored = trainer.held(weights, "weights")
    request = pb.TrainerServiceTestRequest(command=command, weights=stored)
    try:
        list(trainer.Test(request, timeout=60))
    except grpc.RpcError as err:
        assert err.code() not in (CODE.UNKNOWN, CODE.INTERNAL), err.details()
    info = trainer.GetTrainerInfo(pb.GetTrainerInfoRequest())
    assert info.capacity == 2 and info.version


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(name=st.one_of(st.text(max_size=300), st.just(""), st.just("t")))
def test_interrupt_of_any_name_is_harmless(trainer, name) -> None:
    """Nothing runs now: whatever the name, nothing is interrupted and nothing fails."""
    assert trainer.Interrupt(pb.InterruptRequest(attempt_name=name)).interrupted == 0


def test_a_trainer_answers_only_its_gateways_credential(digits_gateway, tmp_path) -> None:
    server, address = start_trainer(digits_gateway, tmp_path, 1)
    try:
        for token in (None, "not-the-credential", digits_gateway.admin_token):
            with open_channel(address, token) as channel:
                stub = trainer_service_pb2_grpc.TrainerServiceStub(channel)
                for call, request in (
                    (stub.GetTrainerInfo, pb.GetTrainerInfoRequest()),
                    (stub.Interrupt, pb.InterruptRequest(attempt_name="t")),
                    (drain(stub.Train), pb.TrainerServiceTrainRequest(command=lenet_command())),
                    (drain(stub.Test), pb.TrainerServiceTestRequest()),
                ):
                    expect_error(CODE.UNAUTHENTICATED, call, request)
    finally:
        server.stop(5).wait()
