"""What a client in any language meets: health (with List) and reflection (v1 and
v1alpha) without a token, `buf curl` with error details, and the Node.js and Go examples
printing an INVALID_ARGUMENT's field violations."""

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
from metalearn.v1 import trainer_service_pb2
from tests.harness import GatewayThread
from tests.other_languages import ROOT, go_example, node_example, run_example

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
