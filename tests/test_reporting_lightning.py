"""The SDK's integrations for real: examples/report_lightning.py's Lightning training
(MetalearnLogger + MetalearnCallback) and examples/report_pytorch.py's plain loop,
reporting to the test gateway, read back through the Python stubs."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import ModuleType

import grpc
import pytest
import pytorch_lightning as pl

from metalearn.reporting.lightning import MetalearnLogger
from metalearn.v1 import attempt_pb2, attempt_service_pb2, attempt_service_pb2_grpc
from tests.harness import GatewayThread
from tests.other_languages import run_example
from tests.test_reporting_sdk import _points

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _example(name: str) -> ModuleType:
    """An example script as a module (examples/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _full(channel: grpc.Channel, attempt_id: int) -> attempt_pb2.Attempt:
    return (
        attempt_service_pb2_grpc.AttemptServiceStub(channel)
        .GetAttempt(
            attempt_service_pb2.GetAttemptRequest(
                id=attempt_id, view=attempt_service_pb2.ATTEMPT_VIEW_FULL
            )
        )
        .attempt
    )


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def test_a_lightning_run_is_reported_epoch_by_epoch_with_its_test_result(
    gateway: GatewayThread, tmp_path: Path
) -> None:
    lightning = _example("report_lightning")
    logger, reporter, trainer = lightning.train(
        _name("lightning"), 4, gateway=gateway.address, token=gateway.admin_token,
        spool_dir=tmp_path,
    )  # fmt: skip
    assert trainer.current_epoch == 4
    with gateway.channel() as channel:
        got = _full(channel, logger.run.id)
        assert got.status == attempt_pb2.ATTEMPT_STATUS_COMPLETE
        assert got.provenance == attempt_pb2.PROVENANCE_REPORTED
        # One epoch per Lightning epoch, holding exactly what Lightning computed.
        assert [e.epoch for e in got.epochs] == [1, 2, 3, 4] == sorted(reporter.reported)
        for stored in got.epochs:
            seen = reporter.reported[stored.epoch]
            assert stored.loss == seen["loss"]
            assert stored.val_loss == seen["val_loss"]
            assert stored.val_accuracy == seen["val_accuracy"]
            assert stored.learning_rate == seen["learning_rate"] == 0.01
            assert stored.seconds == seen["seconds"] > 0
        assert list(got.training_losses) == [reporter.reported[e]["loss"] for e in (1, 2, 3, 4)]
        assert got.training_losses[-1] < got.training_losses[0]  # it learned
        assert got.test_result.accuracy == trainer.callback_metrics["test_acc"].item()
        assert got.test_result.accuracy > 0.8
        # The model's save_hyperparameters() are the run's params.
        assert dict(got.reported.params) == {"hidden": 32, "lr": 0.01}
        assert list(got.reported.task.labels) == lightning.LABELS
        assert got.reported.client.startswith("metalearn-python/")
        # Every self.log also arrives as a named metric at Lightning's global step
        # (log_every_n_steps=5 over 19 batches an epoch, 76 steps in all).
        assert "train_loss_step" in got.reported.metric_keys
        assert "epoch" not in got.reported.metric_keys
        steps, values = _points(channel, got.id, "train_loss_step")
        assert steps == list(range(4, 76, 5))
        assert all(v > 0 for v in values)
        # The epoch means at each epoch's last step, as Lightning logs them.
        steps, values = _points(channel, got.id, "val_loss")
        assert steps == [18, 37, 56, 75]
        assert values == [reporter.reported[e]["val_loss"] for e in (1, 2, 3, 4)]
    assert list(tmp_path.iterdir()) == []  # all stored: nothing left in the spool


class _CancelAfter(pl.Callback):
    """Cancels the run through AttemptService at the end of epoch `epoch`, and waits until
    the run has heard it (as a user pressing cancel in the dashboard would)."""

    def __init__(self, gateway: GatewayThread, epoch: int) -> None:
        self.gateway, self.epoch = gateway, epoch

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch + 1 != self.epoch:
            return
        logger = trainer.logger
        assert isinstance(logger, MetalearnLogger)
        run = logger.run
        deadline = time.monotonic() + 30
        with self.gateway.channel() as channel:
            # The epochs before this one are stored first (the sender sends them within
            # a flush), so that the test knows what the cancelled run keeps.
            while _full(channel, run.id).current_epoch < self.epoch - 1:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            attempt_service_pb2_grpc.AttemptServiceStub(channel).CancelAttempt(
                attempt_service_pb2.CancelAttemptRequest(id=run.id)
            )
        while not run.should_stop() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert run.should_stop()


def test_cancelling_the_run_mid_fit_stops_lightning_early(
    gateway: GatewayThread, tmp_path: Path
) -> None:
    lightning = _example("report_lightning")
    logger, reporter, trainer = lightning.train(
        _name("lightning-cancel"), 20, callbacks=[_CancelAfter(gateway, 2)],
        gateway=gateway.address, token=gateway.admin_token, spool_dir=tmp_path,
    )  # fmt: skip
    # MetalearnCallback heard it within epoch 3's first batch: Lightning stopped there.
    assert trainer.should_stop
    assert trainer.current_epoch <= 3 < 20
    assert sorted(reporter.reported) == [1, 2]
    run = logger.run
    assert run.stop_reason.startswith("CANCELLED")
    with gateway.channel() as channel:
        got = _full(channel, run.id)
        assert got.status == attempt_pb2.ATTEMPT_STATUS_CANCELLED
        # Epoch 2 was still open (an epoch is sent once the next one begins) when the
        # cancel came: the run keeps epoch 1, as Lightning computed it.
        assert list(got.training_losses) == [reporter.reported[1]["loss"]]


def test_the_plain_pytorch_example_reports_its_steps_epochs_and_test_result(
    gateway: GatewayThread,
) -> None:
    name = _name("torch")
    done = run_example(
        [sys.executable, str(EXAMPLES / "report_pytorch.py"), "--name", name, "--epochs", "3"],
        gateway,
    )
    assert done.returncode == 0, done.stderr
    printed = [
        float(m) for m in re.findall(r"^epoch \d+: loss=([0-9.]+)", done.stdout, re.MULTILINE)
    ]
    found = re.search(rf"^run {name}: attempt (\d+)$", done.stdout, re.MULTILINE)
    assert found is not None, done.stdout
    with gateway.channel() as channel:
        got = _full(channel, int(found[1]))
        assert got.status == attempt_pb2.ATTEMPT_STATUS_COMPLETE
        assert [e.epoch for e in got.epochs] == [1, 2, 3]
        # Printed to 4 decimals: the stored losses are those, unrounded.
        assert [round(loss, 4) for loss in got.training_losses] == printed
        assert all(0 <= e.val_accuracy <= 1 and e.samples_per_second > 0 for e in got.epochs)
        assert dict(got.reported.params) == {"hidden": 32, "lr": 0.01, "batch_size": 64}
        assert list(got.reported.metric_keys) == ["train/loss"]
        # 1,200 samples in batches of 64: 19 steps an epoch, each step's loss kept.
        steps, _ = _points(channel, got.id, "train/loss")
        assert steps == list(range(57))
        assert got.test_result.accuracy > 0.8


class _FailAt(pl.Callback):
    """Raises inside training at epoch `epoch`, as a bug in a user's model would."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch + 1 == self.epoch:
            raise RuntimeError("shapes do not match")


def test_an_error_in_training_fails_the_run_with_the_error(
    gateway: GatewayThread, tmp_path: Path
) -> None:
    lightning = _example("report_lightning")
    with pytest.raises(RuntimeError, match="shapes do not match"):
        lightning.train(
            _name("lightning-error"), 5, callbacks=[_FailAt(3)],
            gateway=gateway.address, token=gateway.admin_token, spool_dir=tmp_path,
        )  # fmt: skip
    with gateway.channel() as channel:
        stub = attempt_service_pb2_grpc.AttemptServiceStub(channel)
        (got,) = stub.ListAttempts(attempt_service_pb2.ListAttemptsRequest()).attempts
        got = _full(channel, got.id)
    assert got.status == attempt_pb2.ATTEMPT_STATUS_FAILED
    assert "RuntimeError: shapes do not match" in got.error
    assert [e.epoch for e in got.epochs] == [1, 2]


def test_importing_metalearn_does_not_import_lightning() -> None:
    code = (
        "import sys, metalearn, metalearn.reporting; metalearn.start_run;"
        " assert 'pytorch_lightning' not in sys.modules, 'imported'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
