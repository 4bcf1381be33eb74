"""Files a run starts from are read by its trainer, not sent to it (issue 25, "streams
stay streams"): TrainerRegistryService.ReadRunFile serves a run's checkpoint or weights in
chunks, to the principal whose trainer holds the run under that claim only; the trainer
checks each file against the size and sha256 its request names before it loads it.

A principal that asks for a file of a run it does not hold gets NOT_FOUND, the answer it
gets for a run that does not exist: it learns nothing of others' work (PERMISSION_DENIED
is for a token whose role may not call the RPC at all).
"""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any

import grpc
import psycopg
import pytest

from metalearn.v1 import (
    trainer_registry_service_pb2,
    trainer_registry_service_pb2_grpc,
    trainer_service_pb2,
)
from tests.harness import GatewayThread
from tests.rpc import expect_error, violations
from tests.test_trainer import drain, trainer
from tests.trainer_harness import collect, lenet_command, stored_file

rpb = trainer_registry_service_pb2
tpb = trainer_service_pb2
CODE = grpc.StatusCode
MiB = 1024 * 1024
ADDRESS = "127.0.0.1:9"  # a registered trainer's address; nothing listens there

__all__ = ["trainer"]  # test_trainer's fixture: a real trainer reading the digits gateway


def read(gateway: GatewayThread, token: str, file: tpb.RunFile, **changes: Any) -> bytes:
    """ReadRunFile's chunks for `file` (its fields changed by `changes`), each at most
    1 MiB, joined."""
    request = rpb.ReadRunFileRequest(attempt_id=file.attempt_id, fence=file.fence, kind=file.kind)
    for name, value in changes.items():
        setattr(request, name, value)
    with gateway.channel(token) as channel:
        stub = trainer_registry_service_pb2_grpc.TrainerRegistryServiceStub(channel)
        chunks = [r.data for r in stub.ReadRunFile(request, timeout=30)]
    assert all(len(chunk) <= MiB for chunk in chunks)
    return b"".join(chunks)


def register(gateway: GatewayThread, token: str, address: str) -> None:
    with gateway.channel(token) as channel:
        trainer_registry_service_pb2_grpc.TrainerRegistryServiceStub(channel).RegisterTrainer(
            rpb.RegisterTrainerRequest(address=address, capacity=1)
        )


@pytest.fixture
def tokens(gateway: GatewayThread) -> dict[str, str]:
    """Secrets of fresh principals: two trainer principals, a reader and a writer."""
    suffix = str(time.time_ns())
    roles = {"holder": "trainer", "other": "trainer", "reader": "reader", "writer": "writer"}
    return {who: gateway.make_token(f"{who}-{suffix}", role) for who, role in roles.items()}


def test_only_the_principal_whose_trainer_holds_the_run_reads_its_file(
    gateway: GatewayThread, tokens: dict[str, str]
) -> None:
    register(gateway, tokens["holder"], ADDRESS)
    register(gateway, tokens["other"], "127.0.0.1:10")
    data = os.urandom(3 * MiB + 12_345)  # several chunks, the last one short
    file = stored_file(gateway, data, "checkpoint", trainer=ADDRESS)
    assert (file.size, file.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert read(gateway, tokens["holder"], file) == data
    assert read(gateway, "admin", file) == data  # an admin may do everything
    # Another trainer principal: as if the run did not exist, whatever it guesses.
    for guess in ({}, {"fence": file.fence + 1}, {"attempt_id": file.attempt_id + 1}):
        err = expect_error(CODE.NOT_FOUND, read, gateway, tokens["other"], file, **guess)
        assert "no checkpoint file" in (err.details() or "")
    # The holder too, for another claim, another kind or another run.
    expect_error(CODE.NOT_FOUND, read, gateway, tokens["holder"], file, fence=file.fence + 1)
    expect_error(
        CODE.NOT_FOUND, read, gateway, tokens["holder"], file, kind=tpb.RUN_FILE_KIND_WEIGHTS
    )
    expect_error(
        CODE.NOT_FOUND, read, gateway, tokens["holder"], file, attempt_id=file.attempt_id + 1
    )
    # Once the run is no longer held (it ended, or went back to the queue), nobody reads.
    with psycopg.connect(gateway.database_url) as conn:
        conn.execute("UPDATE attempts SET status = 'QUEUED' WHERE id = %s", (file.attempt_id,))
    for token in (tokens["holder"], "admin"):
        expect_error(CODE.NOT_FOUND, read, gateway, token, file)


def test_weights_are_read_while_the_run_tests(
    gateway: GatewayThread, tokens: dict[str, str]
) -> None:
    register(gateway, tokens["holder"], ADDRESS)
    data = os.urandom(1000)
    file = stored_file(gateway, data, "weights", trainer=ADDRESS)
    assert read(gateway, tokens["holder"], file) == data
    expect_error(
        CODE.NOT_FOUND, read, gateway, tokens["holder"], file, kind=tpb.RUN_FILE_KIND_CHECKPOINT
    )
    expect_error(CODE.NOT_FOUND, read, gateway, tokens["other"], file)


def test_readers_and_writers_may_not_read_run_files(
    gateway: GatewayThread, tokens: dict[str, str]
) -> None:
    file = stored_file(gateway, b"secret", "checkpoint")
    for who in ("reader", "writer"):
        expect_error(CODE.PERMISSION_DENIED, read, gateway, tokens[who], file)
    expect_error(CODE.UNAUTHENTICATED, read, gateway, "mlt_not-a-token", file)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"attempt_id": 0}, "attempt_id"),
        ({"attempt_id": -5}, "attempt_id"),
        ({"fence": 0}, "fence"),
        ({"fence": -(2**63)}, "fence"),
        ({"kind": tpb.RUN_FILE_KIND_UNSPECIFIED}, "kind"),
        ({"kind": 7}, "kind"),
    ],
)
def test_bad_references_are_invalid_argument_naming_the_field(
    gateway: GatewayThread, changes: dict[str, int], field: str
) -> None:
    file = tpb.RunFile(attempt_id=1, fence=1, kind=tpb.RUN_FILE_KIND_CHECKPOINT)
    for token in ("trainer", "admin"):
        err = expect_error(CODE.INVALID_ARGUMENT, read, gateway, token, file, **changes)
        assert field in violations(err)


# --- the trainer checks what it reads ----------------------------------------------------


@pytest.mark.slow
def test_the_trainer_refuses_a_file_that_is_not_the_one_named(trainer) -> None:
    """A reference whose sha256 or size does not match the stored file is refused as the
    request's field (the dispatcher treats a refused `resume_checkpoint` as its maker's
    lie): nothing is loaded. The file itself is a real checkpoint of the command."""
    command = lenet_command(n_epoch=2)
    run = collect_train(trainer, command, checkpoint_every_epochs=1)
    checkpoint = trainer.held(run.checkpoints[1], "checkpoint")
    assert run.checkpoints[1]  # the named file is fine: only the reference lies below
    for lie in ({"sha256": hashlib.sha256(b"another file").hexdigest()}, {"size": 100}):
        named = tpb.RunFile()
        named.CopyFrom(checkpoint)
        for name, value in lie.items():
            setattr(named, name, value)
        err = expect_error(
            CODE.INVALID_ARGUMENT,
            drain(trainer.Train),
            tpb.TrainerServiceTrainRequest(command=command, resume_checkpoint=named),
        )
        assert list(violations(err)) == ["resume_checkpoint"], violations(err)
    weights = trainer.held(run.weights, "weights")
    weights.sha256 = hashlib.sha256(b"other weights").hexdigest()
    err = expect_error(
        CODE.INVALID_ARGUMENT, drain(trainer.Test), tpb.TrainerServiceTestRequest(weights=weights)
    )
    assert list(violations(err)) == ["weights"] and "sha256" in violations(err)["weights"]
    # The same references, told the truth, resume and test.
    resumed = collect_train(trainer, command, resume_checkpoint=checkpoint)
    assert resumed.started is not None and resumed.started.first_epoch == 2
    assert resumed.losses == run.losses[1:]


def collect_train(stub: Any, command: Any, **fields: Any) -> Any:
    return collect(stub.Train(tpb.TrainerServiceTrainRequest(command=command, **fields)))
