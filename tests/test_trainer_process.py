"""The real `metalearn trainer` daemon: health, reflection, SIGTERM, and a torch-free gateway."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from metalearn.credentials import open_channel
from metalearn.v1 import trainer_service_pb2 as pb
from metalearn.v1 import trainer_service_pb2_grpc
from tests.harness import GatewayThread
from tests.trainer_harness import lenet_command

METALEARN = [sys.executable, "-m", "metalearn.cli"]


# The credential these tests present to the trainer, as its gateway would.
CREDENTIAL = "test-gateway-credential"


def start_trainer(gateway: GatewayThread, tmp_path: Path) -> tuple[subprocess.Popen[str], str]:
    log = (tmp_path / "trainer.log").open("w")
    proc = subprocess.Popen(
        [*METALEARN, "trainer", "--listen", "127.0.0.1:0", "--gateway", gateway.address,
         "--cache-dir", str(tmp_path / "cache"), "--checkpoint-every-epochs", "1000"],
        stdout=subprocess.PIPE, stderr=log, text=True,
        env={**os.environ, "METALEARN_TOKEN": gateway.admin_token,
             "METALEARN_GATEWAY_CREDENTIAL": CREDENTIAL},
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert "listening on" in line, (tmp_path / "trainer.log").read_text()
    return proc, line.rsplit(" ", 1)[-1].strip()


def test_sigterm_checkpoints_the_run_and_exits(digits_gateway: GatewayThread, tmp_path) -> None:
    proc, address = start_trainer(digits_gateway, tmp_path)
    try:
        with open_channel(address, CREDENTIAL) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            reply = health.Check(
                health_pb2.HealthCheckRequest(service="metalearn.v1.TrainerService")
            )
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
            answer = next(
                reflection.ServerReflectionInfo(
                    iter([reflection_pb2.ServerReflectionRequest(list_services="")])
                )
            )
            names = {s.name for s in answer.list_services_response.service}
            assert "metalearn.v1.TrainerService" in names

            stub = trainer_service_pb2_grpc.TrainerServiceStub(channel)
            call = stub.Train(pb.TrainerServiceTrainRequest(command=lenet_command(n_epoch=10_000)))
            kinds, checkpoint_epochs = [], []
            for event in call:
                kind = event.WhichOneof("event")
                kinds.append(kind)
                if kind == "epoch" and event.epoch.epoch == 2:
                    proc.send_signal(signal.SIGTERM)
                if kind == "checkpoint":
                    checkpoint_epochs.append(event.checkpoint.epoch)
                if kind == "finished":
                    finished = event.finished
            assert finished.outcome == pb.TRAIN_OUTCOME_INTERRUPTED
            # The run ends after a whole epoch, with a checkpoint of exactly that epoch.
            assert checkpoint_epochs and set(checkpoint_epochs) == {finished.epochs}
            assert kinds[-2:] == ["checkpoint", "finished"] and finished.epochs >= 2
        assert proc.wait(timeout=60) == 0
        # A run process executes the CLI module again: quietly, not with runpy's warning.
        assert "Warning" not in (tmp_path / "trainer.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_the_gateway_and_client_never_import_torch() -> None:
    code = (
        "import sys, gateway.server, metalearn.cli, metalearn.digits; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
