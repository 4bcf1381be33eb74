"""What a client in any language meets: health (with List) and reflection (v1 and
v1alpha) without a token, `buf curl` with error details, the Node.js and Go examples
printing an INVALID_ARGUMENT's field violations, and the Node.js reporter's run as the
Python stubs read it."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from gateway.server import SERVICE_NAMES
from metalearn.standard_services import HealthServicer, enable_server_reflection
from metalearn.v1 import (
    attempt_pb2,
    attempt_service_pb2,
    attempt_service_pb2_grpc,
    trainer_service_pb2,
)
from metalearn.v1 import reporting_service_pb2 as rpb
from metalearn.v1 import reporting_service_pb2_grpc as rgrpc
from tests.harness import GatewayThread
from tests.other_languages import (
    ROOT,
    go_example,
    node_example,
    node_report_example,
    run_example,
)

SERVING = health_pb2.HealthCheckResponse.SERVING
V1_REFLECTION = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
BUF = str(Path(sys.executable).with_name("buf"))
# Two mistakes, each reported with its exact path.
BAD_COMMAND = {
    "label_names": ["digit 0"],
    "n_epoch": -1,
    "model": {"layers": [{"name": "Conv2d", "in_channels": 1, "out_channels": 4,
                          "kernel_size": -3}]},
}  # fmt: skip
BAD_FIELDS = (
    "attempt.training_commands.n_epoch",
    "attempt.training_commands.model.layers[0].kernel_size",
)


@pytest.fixture(scope="module")
def threaded_server() -> Iterator[str]:
    """A threaded server with the standard services as the trainer would serve them."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    trainer = trainer_service_pb2.DESCRIPTOR.services_by_name["TrainerService"].full_name
    health.set(trainer, SERVING)
    enable_server_reflection((trainer, "grpc.health.v1.Health"), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(None)


def reflected(channel: grpc.Channel, version: str) -> tuple[Any, ProtoReflectionDescriptorDatabase]:
    """A descriptor pool that asks the server's reflection service, `version` of it."""
    database = ProtoReflectionDescriptorDatabase(channel)
    if version == "v1":
        # v1's messages are v1alpha's under another package, the same bytes on the wire.
        database._stub = SimpleNamespace(
            ServerReflectionInfo=channel.stream_stream(
                V1_REFLECTION,
                request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
            )
        )
    return descriptor_pool.DescriptorPool(database), database


def test_health_list_needs_no_token(gateway: GatewayThread) -> None:
    with gateway.channel(None) as channel:
        reply = health_pb2_grpc.HealthStub(channel).List(health_pb2.HealthListRequest(), timeout=10)
    statuses = {name: response.status for name, response in reply.statuses.items()}
    assert statuses == dict.fromkeys(("", *SERVICE_NAMES), SERVING)


def test_threaded_health_lists_too(threaded_server: str) -> None:
    with grpc.insecure_channel(threaded_server) as channel:
        reply = health_pb2_grpc.HealthStub(channel).List(health_pb2.HealthListRequest(), timeout=10)
    assert {name: r.status for name, r in reply.statuses.items()} == {
        "": SERVING,
        "metalearn.v1.TrainerService": SERVING,
    }


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
def test_reflection_describes_a_method_without_a_token(
    gateway: GatewayThread, version: str
) -> None:
    """What `grpcurl describe metalearn.v1.AttemptService.Train` asks."""
    with gateway.channel(None) as channel:
        pool, database = reflected(channel, version)
        services = set(database.get_services())
        assert {*SERVICE_NAMES, "grpc.health.v1.Health"} <= services
        assert {"grpc.reflection.v1.ServerReflection",
                "grpc.reflection.v1alpha.ServerReflection"} <= services  # fmt: skip
        file = database.FindFileContainingSymbol("metalearn.v1.AttemptService.Train")
        assert file.name == "metalearn/v1/attempt_service.proto"
        train = pool.FindMethodByName("metalearn.v1.AttemptService.Train")
        assert train.input_type.full_name == "metalearn.v1.TrainRequest"
        # Reflection describes itself too, and the error details clients decode.
        itself = pool.FindServiceByName("grpc.reflection.v1.ServerReflection")
        assert itself.methods_by_name["ServerReflectionInfo"].client_streaming
        assert pool.FindMessageTypeByName("google.rpc.BadRequest").fields_by_name
        # The server itself says NOT_FOUND (the database would guess from its cache).
        missing = reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="metalearn.v1.AttemptService.NoSuchMethod"
        )
        [reply] = database._stub.ServerReflectionInfo(iter([missing]))
        assert reply.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
def test_threaded_reflection_describes_a_method(threaded_server: str, version: str) -> None:
    with grpc.insecure_channel(threaded_server) as channel:
        pool, _ = reflected(channel, version)
        method = pool.FindMethodByName("metalearn.v1.TrainerService.Train")
        assert method.server_streaming


def buf(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BUF, *args], capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_buf_curl_by_reflection_shows_error_details(gateway: GatewayThread, tmp_path) -> None:
    """The README's `buf curl` lines: reflection v1, a call, and a refusal's details."""
    url = f"http://{gateway.address}"
    curl = ("curl", "--protocol", "grpc", "--http2-prior-knowledge")
    listed = buf(*curl, "--reflect-protocol", "grpc-v1", "--list-methods", url)
    assert listed.returncode == 0, listed.stderr
    assert {"grpc.health.v1.Health/List",
            "metalearn.v1.AttemptService/Train"} <= set(listed.stdout.split())  # fmt: skip
    bearer = ("-H", f"authorization: Bearer {gateway.admin_token}")
    latest = buf(*curl, *bearer, f"{url}/metalearn.v1.AttemptService/GetLatestIndex")
    assert latest.returncode == 0, latest.stderr
    refused = buf(*curl, *bearer, "--data", json.dumps({"attempt": {"name": "bad name!"}}),
                  f"{url}/metalearn.v1.AttemptService/CreateAttempt")  # fmt: skip
    assert refused.returncode != 0
    error = json.loads(refused.stderr)
    assert error["code"] == "invalid_argument"
    [detail] = error["details"]
    assert detail["type"] == "google.rpc.BadRequest"
    # buf curl prints the detail's bytes (unpadded base64); `buf convert` decodes them
    # with the google/rpc protos we ship.
    value = detail["value"]
    (tmp_path / "detail.binpb").write_bytes(base64.b64decode(value + "=" * (-len(value) % 4)))
    decoded = buf("convert", ".", "--type", "google.rpc.BadRequest",
                  "--from", f"{tmp_path / 'detail.binpb'}#format=binpb")  # fmt: skip
    assert decoded.returncode == 0, decoded.stderr
    [violation] = json.loads(decoded.stdout)["fieldViolations"]
    assert violation["field"] == "attempt.name"


def bad_command(tmp_path: Path) -> Path:
    path = tmp_path / "bad_command.json"
    path.write_text(json.dumps(BAD_COMMAND))
    return path


def assert_violations_printed(done: subprocess.CompletedProcess[str], example: str) -> None:
    assert done.returncode == 1, done.stdout + done.stderr
    first, *rest = done.stderr.splitlines()
    assert first.startswith(f"{example} example: INVALID_ARGUMENT: ")
    fields = [line.strip().split(": ", 1)[0] for line in rest if line.startswith("  ")]
    assert fields == list(BAD_FIELDS), done.stderr


def test_the_node_example_prints_field_violations(gateway: GatewayThread, tmp_path) -> None:
    done = run_example([*node_example(), "node-bad", str(bad_command(tmp_path))], gateway)
    assert_violations_printed(done, "node")


def test_the_node_example_finds_its_token_from_its_own_directory(
    gateway: GatewayThread, tmp_path
) -> None:
    # Run from examples/node, as its README says: a data directory given by the
    # environment, or a one-line reason where there is no token (not a raw ENOENT).
    node = node_example()
    env = {k: v for k, v in os.environ.items() if k != "METALEARN_TOKEN"}
    env["METALEARN_GATEWAY"] = gateway.address
    data = tmp_path / "data"
    data.mkdir()
    cwd = ROOT / "examples" / "node"
    done = subprocess.run([*node, "node-x", str(bad_command(tmp_path))], cwd=cwd,
                          capture_output=True, text=True, timeout=60,
                          env={**env, "METALEARN_DATA_DIR": str(data)})  # fmt: skip
    assert done.returncode == 1 and "ENOENT" not in done.stderr, done.stderr
    assert done.stderr.startswith("node example: ERROR: no token: set METALEARN_TOKEN")
    (data / "admin.token").write_text(gateway.admin_token + "\n")
    done = subprocess.run([*node, "node-x", str(bad_command(tmp_path))], cwd=cwd,
                          capture_output=True, text=True, timeout=60,
                          env={**env, "METALEARN_DATA_DIR": str(data)})  # fmt: skip
    assert_violations_printed(done, "node")  # authenticated: the gateway judged the command


def test_the_node_reporter_reports_a_run_as_the_python_stubs_read_it(
    gateway: GatewayThread,
) -> None:
    done = run_example([*node_report_example(), "node-r1"], gateway)
    assert done.returncode == 0, done.stdout + done.stderr
    started, *epochs, final = done.stdout.splitlines()
    # Each epoch's numbers as the script printed them: JS's shortest round-trip text of
    # the double it sent, so the stored ones must equal them exactly.
    pairs = [line.split()[:10] for line in epochs]  # epoch N loss X ... lr X
    sent = [dict(zip(words[::2], words[1::2], strict=True)) for words in pairs]
    assert [int(e["epoch"]) for e in sent] == [1, 2, 3, 4, 5], done.stdout
    assert all(line.endswith(f"acknowledged (batch {n})") for n, line in enumerate(epochs, 1))
    with gateway.channel() as channel:
        attempts = attempt_service_pb2_grpc.AttemptServiceStub(channel)
        got = attempts.GetAttempt(
            attempt_service_pb2.GetAttemptRequest(
                name="node-r1", view=attempt_service_pb2.ATTEMPT_VIEW_FULL
            )
        ).attempt
        history = rgrpc.ReportingServiceStub(channel).GetMetricHistory(
            rpb.GetMetricHistoryRequest(attempt_id=got.id, key="train/loss", after_step=-1)
        )
    assert started == f"started node-r1 (id {got.id})"
    assert final == (
        f"reported run node-r1 (id {got.id}): ATTEMPT_STATUS_COMPLETE, "
        "provenance PROVENANCE_REPORTED"
    )
    assert got.provenance == attempt_pb2.PROVENANCE_REPORTED
    assert got.status == attempt_pb2.ATTEMPT_STATUS_COMPLETE
    assert list(got.training_losses) == [float(e["loss"]) for e in sent]
    assert [e.val_loss for e in got.epochs] == [float(e["val_loss"]) for e in sent]
    assert [e.val_accuracy for e in got.epochs] == [float(e["val_accuracy"]) for e in sent]
    assert [e.learning_rate for e in got.epochs] == [float(e["lr"]) for e in sent]
    assert all(e.seconds > 0 for e in got.epochs)  # measured around each epoch's loop
    assert got.reported.task.dataset == "toy"
    assert list(got.reported.task.labels) == ["cat", "dog"]
    assert got.reported.params["model"]["hidden"] == [64, 32]
    assert got.tags["example"] == "node"
    assert list(got.reported.metric_keys) == ["train/loss"]
    assert 0 < got.accuracy < 1  # its test result
    # Every step of the series, 20 an epoch; an epoch's loss is the mean of its steps'.
    assert list(history.steps) == list(range(1, 101))
    assert history.next_after_step == -1
    for n, e in enumerate(sent):
        assert sum(history.values[20 * n : 20 * n + 20]) / 20 == pytest.approx(float(e["loss"]))


def test_the_node_reporter_stops_when_its_run_is_cancelled(gateway: GatewayThread) -> None:
    # A second an epoch, as if it trained: cancelled once its first epoch is stored, it
    # hears the stop on its stream at its next batch and ends without finishing the run.
    argv = [*node_report_example(), "node-r2", "1"]
    env = {**os.environ, "METALEARN_GATEWAY": gateway.address,
           "METALEARN_TOKEN": gateway.admin_token}  # fmt: skip
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=env) as script, gateway.channel() as channel:  # fmt: skip
        assert script.stdout is not None
        started = script.stdout.readline()
        first = script.stdout.readline()
        assert first.startswith("epoch 1  loss "), started + first
        attempts = attempt_service_pb2_grpc.AttemptServiceStub(channel)
        attempts.CancelAttempt(attempt_service_pb2.CancelAttemptRequest(name="node-r2"))
        out, err = script.communicate(timeout=60)
        got = attempts.GetAttempt(attempt_service_pb2.GetAttemptRequest(name="node-r2")).attempt
    assert script.returncode == 0, out + err
    *acknowledged, stopped = out.splitlines()
    assert got.status == attempt_pb2.ATTEMPT_STATUS_CANCELLED
    # Stopped at its next batch, or at the one after where the cancel came mid-batch.
    assert got.current_epoch == 1 + len(acknowledged) < 5
    assert stopped.startswith(
        f"stopped node-r2 (id {got.id}) after epoch {got.current_epoch}: ATTEMPT_STATUS_CANCELLED: "
    ), out


def test_the_node_reporter_prints_a_bad_names_violation(gateway: GatewayThread) -> None:
    done = run_example([*node_report_example(), "bad name"], gateway)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout == ""  # refused at StartRun: nothing was reported
    first, *rest = done.stderr.splitlines()
    assert first.startswith("node example: INVALID_ARGUMENT: ")
    fields = [line.strip().split(": ", 1)[0] for line in rest if line.startswith("  ")]
    assert fields == ["name"], done.stderr


@pytest.fixture(scope="module")
def go_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return go_example(tmp_path_factory.mktemp("go"))


def test_the_go_example_creates_gets_and_lists(gateway: GatewayThread, go_binary: Path) -> None:
    command = ROOT / "examples" / "digits_lenet.json"
    argv = [str(go_binary), "-command", str(command), "-train=false", "from-go"]
    done = run_example(argv, gateway)
    assert done.returncode == 0, done.stdout + done.stderr
    created, got, listed = done.stdout.splitlines()
    assert created == "created from-go"
    assert got == "from-go ATTEMPT_STATUS_INCOMPLETE: 0 epochs"
    assert listed.split()[0] == "listed" and listed.split()[2:] == [
        "from-go",
        "ATTEMPT_STATUS_INCOMPLETE",
    ]


def test_the_go_example_prints_field_violations(
    gateway: GatewayThread, go_binary: Path, tmp_path
) -> None:
    done = run_example([str(go_binary), "-command", str(bad_command(tmp_path)), "go-bad"], gateway)
    assert_violations_printed(done, "go")
