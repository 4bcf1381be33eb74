"""The gateway gives an attempt on N devices N slots of one trainer, and no more work
while they are taken; an attempt wider than a trainer's free slots waits for one that
has them while narrower ones pass it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest

from gateway.config import GatewayConfig
from metalearn.v1 import (
    attempt_pb2,
    attempt_service_pb2_grpc,
    trainer_registry_service_pb2,
    trainer_registry_service_pb2_grpc,
    trainer_service_pb2_grpc,
)
from metalearn.v1 import attempt_service_pb2 as pb
from tests.harness import GatewayThread, fresh_database
from tests.rpc import expect_error, violations
from tests.test_lying_trainer import (
    FakeTrainer,
    chunks,
    epoch,
    finished,
    five_images_each,
    started,
)
from tests.trainer_harness import lenet_command

S = attempt_pb2


class Gate:
    """Runs that hold their slots until the test lets each go."""

    def __init__(self) -> None:
        self.released: dict[str, threading.Event] = {}
        self.devices: dict[str, int] = {}

    def script(self, request: Any) -> Iterator[Any]:
        name = request.attempt_name
        self.devices[name] = request.command.devices
        yield started()
        self.released.setdefault(name, threading.Event()).wait(30)
        yield epoch(1)
        yield from chunks("weights", b"w" * 100, 1)
        yield finished()

    def release(self, name: str) -> None:
        self.released.setdefault(name, threading.Event()).set()


@pytest.fixture
def slots(postgres_url: str) -> Iterator[tuple[GatewayThread, Gate, Callable[[int], None]]]:
    yield from _slots(postgres_url)


@pytest.fixture
def reserving(postgres_url: str) -> Iterator[tuple[GatewayThread, Gate, Callable[[int], None]]]:
    """As `slots`, with a wide attempt's slots reserved as soon as it has to wait."""
    yield from _slots(postgres_url, wide_reserve_seconds=0.0)


def _slots(
    postgres_url: str, **config: Any
) -> Iterator[tuple[GatewayThread, Gate, Callable[[int], None]]]:
    url = fresh_database(postgres_url, "slots")
    gateway = GatewayThread(
        url, GatewayConfig(listen="127.0.0.1:0", database_url=url, **config)
    ).start()
    fake, gate = FakeTrainer(), Gate()
    fake.train_script = gate.script  # type: ignore[assignment]
    server = grpc.server(futures.ThreadPoolExecutor(8))
    trainer_service_pb2_grpc.add_TrainerServiceServicer_to_server(fake, server)
    address = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    server.start()
    five_images_each(gateway)

    def register(capacity: int) -> None:
        with gateway.channel("trainer") as channel:
            trainer_registry_service_pb2_grpc.TrainerRegistryServiceStub(channel).RegisterTrainer(
                trainer_registry_service_pb2.RegisterTrainerRequest(
                    address=address, capacity=capacity
                )
            )

    try:
        yield gateway, gate, register
    finally:
        for event in gate.released.values():
            event.set()
        server.stop(1)
        gateway.stop()


def statuses(stub: Any, *names: str) -> list[int]:
    return [stub.GetAttempt(pb.GetAttemptRequest(name=n)).attempt.status for n in names]


def wait_for(stub: Any, names: tuple[str, ...], wanted: list[int]) -> None:
    deadline = time.monotonic() + 20
    while statuses(stub, *names) != wanted:
        assert time.monotonic() < deadline, (statuses(stub, *names), wanted)
        time.sleep(0.05)


def queue(stub: Any, name: str, devices: int) -> None:
    command = lenet_command(n_epoch=1, label_names=["0", "1"], devices=devices)
    stub.Train(pb.TrainRequest(name=name, command=command))


def test_an_attempt_on_two_devices_takes_two_slots(slots) -> None:
    gateway, gate, register = slots
    register(2)
    with gateway.channel() as channel:
        stub = attempt_service_pb2_grpc.AttemptServiceStub(channel)
        queue(stub, "wide", 2)
        wait_for(stub, ("wide",), [S.ATTEMPT_STATUS_TRAINING])
        queue(stub, "narrow", 1)
        time.sleep(1.5)  # several dispatches: the trainer has no slot left for it
        assert statuses(stub, "wide", "narrow") == [
            S.ATTEMPT_STATUS_TRAINING,
            S.ATTEMPT_STATUS_QUEUED,
        ]
        gate.release("wide")
        wait_for(stub, ("wide", "narrow"), [S.ATTEMPT_STATUS_TRAINED, S.ATTEMPT_STATUS_TRAINING])
        gate.release("narrow")
        wait_for(stub, ("narrow",), [S.ATTEMPT_STATUS_TRAINED])
    assert gate.devices == {"wide": 2, "narrow": 1}  # the command reached the trainer whole


def test_an_attempt_wider_than_the_trainer_waits_and_lets_narrower_ones_pass(slots) -> None:
    gateway, gate, register = slots
    register(1)
    with gateway.channel() as channel:
        stub = attempt_service_pb2_grpc.AttemptServiceStub(channel)
        queue(stub, "too-wide", 2)
        queue(stub, "after-it", 1)
        wait_for(
            stub, ("too-wide", "after-it"), [S.ATTEMPT_STATUS_QUEUED, S.ATTEMPT_STATUS_TRAINING]
        )
        why = stub.GetAttempt(pb.GetAttemptRequest(name="too-wide")).attempt.waiting
        assert "needs 2 slots of one trainer and the largest live trainer has 1" in why, why
        gate.release("after-it")
        wait_for(stub, ("after-it",), [S.ATTEMPT_STATUS_TRAINED])
        register(2)  # a trainer with two slots now: the wide one runs
        wait_for(stub, ("too-wide",), [S.ATTEMPT_STATUS_TRAINING])
        gate.release("too-wide")
        wait_for(stub, ("too-wide",), [S.ATTEMPT_STATUS_TRAINED])


def test_a_wide_attempt_that_waited_gets_the_slots_that_free(reserving) -> None:
    """Issue 30: narrower attempts pass a wide one only for `wide_reserve_seconds`
    (here 0); then the trainer that could run it takes nothing newer, its slots drain,
    and the wide attempt runs before the narrower ones queued after it."""
    gateway, gate, register = reserving
    register(2)
    with gateway.channel() as channel:
        stub = attempt_service_pb2_grpc.AttemptServiceStub(channel)
        queue(stub, "first", 1)
        wait_for(stub, ("first",), [S.ATTEMPT_STATUS_TRAINING])
        queue(stub, "wide", 2)
        queue(stub, "narrow", 1)
        time.sleep(1.5)  # several dispatches: one slot is free, and kept for "wide"
        assert statuses(stub, "first", "wide", "narrow") == [
            S.ATTEMPT_STATUS_TRAINING,
            S.ATTEMPT_STATUS_QUEUED,
            S.ATTEMPT_STATUS_QUEUED,
        ]
        # Each says why it waits.
        wide = stub.GetAttempt(pb.GetAttemptRequest(name="wide")).attempt.waiting
        assert "needs 2 free slots of one trainer (the most free now: 1)" in wide, wide
        assert "take nothing newer until it runs" in wide, wide
        narrow = stub.GetAttempt(pb.GetAttemptRequest(name="narrow")).attempt.waiting
        assert narrow == "1 queued attempt is ahead of it", narrow
        assert not stub.GetAttempt(pb.GetAttemptRequest(name="first")).attempt.waiting
        gate.release("first")
        wait_for(stub, ("wide", "narrow"), [S.ATTEMPT_STATUS_TRAINING, S.ATTEMPT_STATUS_QUEUED])
        gate.release("wide")
        wait_for(stub, ("wide", "narrow"), [S.ATTEMPT_STATUS_TRAINED, S.ATTEMPT_STATUS_TRAINING])
        gate.release("narrow")
        wait_for(stub, ("narrow",), [S.ATTEMPT_STATUS_TRAINED])


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"devices": 17}, "command.devices"),
        ({"devices": -2}, "command.devices"),
        ({"devices": 4, "batch_size": 3}, "command.batch_size"),
    ],
)
def test_the_gateway_refuses_impossible_device_counts(gateway, changes, field) -> None:
    with gateway.channel() as channel:
        stub = attempt_service_pb2_grpc.AttemptServiceStub(channel)
        err = expect_error(
            grpc.StatusCode.INVALID_ARGUMENT,
            stub.Train,
            pb.TrainRequest(name="impossible", command=lenet_command(**changes)),
        )
    assert field in violations(err), violations(err)
