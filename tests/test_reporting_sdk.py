"""The Python SDK (`metalearn.start_run`): a run of one's own code reported without
waiting on the network, nothing lost or doubled across a gateway killed and restarted
mid-run, told to stop, and clear about bad input."""

from __future__ import annotations

import signal
import time
import uuid
from pathlib import Path

import grpc
import pytest

import metalearn
from gateway.auth.tokens import mint
from metalearn.credentials import open_channel
from metalearn.outgoing import MetalearnError
from metalearn.v1 import attempt_pb2, attempt_service_pb2, attempt_service_pb2_grpc
from metalearn.v1 import reporting_service_pb2 as rpb
from metalearn.v1 import reporting_service_pb2_grpc as rgrpc
from tests.harness import GatewayThread
from tests.test_gateway_crash import free_port, start_gateway


def _name() -> str:
    return f"sdk-{uuid.uuid4().hex[:10]}"


def _full(channel: grpc.Channel, attempt_id: int) -> attempt_pb2.Attempt:
    stub = attempt_service_pb2_grpc.AttemptServiceStub(channel)
    return stub.GetAttempt(
        attempt_service_pb2.GetAttemptRequest(
            id=attempt_id, view=attempt_service_pb2.ATTEMPT_VIEW_FULL
        )
    ).attempt


def _points(channel: grpc.Channel, attempt_id: int, key: str) -> tuple[list[int], list[float]]:
    stub = rgrpc.ReportingServiceStub(channel)
    steps: list[int] = []
    values: list[float] = []
    after = -1
    while True:
        page = stub.GetMetricHistory(
            rpb.GetMetricHistoryRequest(attempt_id=attempt_id, key=key, after_step=after)
        )
        steps += page.steps
        values += page.values
        if page.next_after_step == -1:
            return steps, values
        after = page.next_after_step


def test_a_run_logged_through_the_sdk_is_stored_whole(
    gateway: GatewayThread, tmp_path: Path
) -> None:
    with metalearn.start_run(
        _name(), labels=["cat", "dog"], dataset="pets", params={"lr": 0.01, "layers": [64, 32]},
        n_epoch=3, gateway=gateway.address, token=gateway.admin_token, spool_dir=tmp_path,
    ) as run:  # fmt: skip
        for epoch in range(1, 4):
            for i in range(100):
                run.log({"train/loss": 1.0 / (epoch * 100 + i)})
            # Validation first, training loss after, as Lightning logs them: one epoch.
            run.log(epoch=epoch, val_accuracy=0.5 + epoch / 10, val_loss=1.0 / epoch)
            run.log(epoch=epoch, loss=2.0 / epoch, lr=0.01, f1=0.4 + epoch / 10)
        assert not run.should_stop()
        attempt_id = run.id
    with gateway.channel() as channel:
        got = _full(channel, attempt_id)
        assert got.status == attempt_pb2.ATTEMPT_STATUS_TRAINED
        assert got.provenance == attempt_pb2.PROVENANCE_REPORTED
        assert list(got.training_losses) == [2.0, 1.0, 2.0 / 3]
        assert [e.learning_rate for e in got.epochs] == [0.01] * 3
        assert got.reported.params["layers"] == [64, 32]
        assert sorted(got.reported.metric_keys) == ["f1", "train/loss"]
        steps, values = _points(channel, attempt_id, "train/loss")
        assert steps == list(range(300))
        assert values == [1.0 / (e * 100 + i) for e in range(1, 4) for i in range(100)]
    assert list(tmp_path.iterdir()) == []  # the spool is gone once all was stored


def test_bad_input_is_named_where_it_is_made(gateway: GatewayThread, tmp_path: Path) -> None:
    with pytest.raises(MetalearnError) as err:
        metalearn.start_run("no spaces allowed", gateway=gateway.address, token=gateway.admin_token)
    assert "name" in err.value.violations
    with pytest.raises(MetalearnError) as err:
        metalearn.start_run(
            _name(), labels=["only one"], gateway=gateway.address, token=gateway.admin_token
        )
    assert "task.labels" in err.value.violations
    run = metalearn.start_run(
        _name(), gateway=gateway.address, token=gateway.admin_token, spool_dir=tmp_path
    )
    with pytest.raises(ValueError, match="epoch must be an integer >= 1"):
        run.log(epoch=0, loss=1.0)
    with pytest.raises(ValueError, match="metric name"):
        run.log({"tab\there": 1.0})
    with pytest.raises(TypeError, match="'acc'"):
        run.log(acc="high")
    with pytest.raises(ValueError, match="fraction"):
        run.log(epoch=1, loss=1.0, val_accuracy=3.0)
    run.log(epoch=1, val_accuracy=0.5)
    with pytest.raises(ValueError, match="epoch 1 has no loss"):
        run.log(epoch=2, loss=1.0)
    run.log(epoch=1, loss=0.5)
    with pytest.raises(ValueError, match="epoch 3 after epoch 1"):
        run.log(epoch=3, loss=1.0)
    done = run.finish()
    assert done is not None and done.current_epoch == 1


def test_a_cancelled_run_says_so_to_its_code(gateway: GatewayThread, tmp_path: Path) -> None:
    run = metalearn.start_run(
        _name(), gateway=gateway.address, token=gateway.admin_token, spool_dir=tmp_path
    )
    run.log(epoch=1, loss=1.0)
    with gateway.channel() as channel:
        attempt_service_pb2_grpc.AttemptServiceStub(channel).CancelAttempt(
            attempt_service_pb2.CancelAttemptRequest(id=run.id)
        )
    deadline = time.monotonic() + 30
    while not run.should_stop() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert run.should_stop() and run.stop_reason.startswith("CANCELLED")
    run.log(epoch=2, loss=0.5)  # kept nowhere, and no error: the run has ended
    assert run.finish() is None


@pytest.mark.slow  # a gateway process started late, killed and started again
def test_a_gateway_down_at_the_start_and_killed_mid_run_loses_and_doubles_nothing(
    tmp_path: Path,
) -> None:
    """The run starts while its gateway is not there yet, and the gateway is killed
    (SIGKILL) and started again mid-run: every epoch and point logged meanwhile waits in
    the spool and arrives once, in order."""
    address = f"127.0.0.1:{free_port()}"
    data_dir, log = tmp_path / "data", tmp_path / "gateway.log"
    admin = mint()
    token_file = tmp_path / "admin.token"
    token_file.write_text(admin)
    with pytest.warns(UserWarning, match="unreachable"):
        run = metalearn.start_run(
            _name(), gateway=address, token=admin, spool_dir=tmp_path / "spool", n_epoch=6,
            heartbeat_seconds=60,
        )  # fmt: skip
    gateway = None
    try:
        step = 0
        for epoch in range(1, 7):
            for _ in range(50):
                run.log({"step/loss": float(step)}, step=step)
                step += 1
            run.log(epoch=epoch, loss=1.0 / epoch, val_accuracy=epoch / 10)
            if epoch == 1:
                assert not run._sender.started.is_set()  # nothing there to start it yet
                gateway = start_gateway(
                    address, data_dir, log, "--admin-token-file", str(token_file)
                )
                assert run.id > 0  # started once the gateway was there
            if epoch == 2:
                time.sleep(1.5)  # what came so far is stored
                gateway.send_signal(signal.SIGKILL)
                gateway.wait()
            if epoch == 4:  # epochs 3 and 4 were logged while it was down
                time.sleep(2)
                gateway = start_gateway(
                    address, data_dir, log, "--admin-token-file", str(token_file)
                )
        done = run.finish(test_accuracy=0.61)
        assert done is not None and done.status == attempt_pb2.ATTEMPT_STATUS_COMPLETE
        with open_channel(address, admin) as channel:
            got = _full(channel, done.id)
            assert [e.epoch for e in got.epochs] == [1, 2, 3, 4, 5, 6]
            assert list(got.training_losses) == [1.0 / e for e in range(1, 7)]
            steps, values = _points(channel, done.id, "step/loss")
            assert steps == list(range(300)) and values == [float(s) for s in range(300)]
        assert not list((tmp_path / "spool").iterdir())
    finally:
        if gateway is not None and gateway.poll() is None:
            gateway.send_signal(signal.SIGTERM)
            gateway.wait(60)


def test_the_cli_shows_a_reported_run_as_such(
    gateway: GatewayThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from metalearn import cli

    name = _name()
    with metalearn.start_run(name, params={"lr": 0.01, "depth": 3}, gateway=gateway.address,
                             token=gateway.admin_token, spool_dir=tmp_path) as run:  # fmt: skip
        run.log({"grad norm": 1.5})
        run.log(epoch=1, loss=0.5)
    code = cli.main(["attempts", "get", name, "--gateway", gateway.address, "--token",
                     gateway.admin_token])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert f"{name} (id" in out and "epochs 1  " in out  # no planned count: none declared
    assert 'params {"depth": 3, "lr": 0.01}, metrics grad norm' in out
