"""`metalearn import mlflow` against a real `mlflow server` (sqlite backend, started
here and written by MLflow's own client) and a real gateway: every mapped field read
back through the gateway's API, imported twice, a running run finished by a later
import; a sqlite store read directly; a run the gateway refuses counted while the rest
is imported. The mapping's pure parts are checked alone, fast."""

from __future__ import annotations

import io
import json
import math
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
import zipfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from metalearn.importing import mlflow as importer
from metalearn.v1 import (
    attempt_pb2,
    attempt_service_pb2,
    attempt_service_pb2_grpc,
    reporting_service_pb2,
    reporting_service_pb2_grpc,
)
from tests.harness import GatewayThread

ROOT = Path(__file__).resolve().parents[1]
MLFLOW = Path(sys.executable).parent / "mlflow"
NAN_STEP = 1234
BIG_STEPS = 10_000
# Times of the points logged here: an hour ago, so inside the gateway's window.
T0 = int(time.time() * 1000) - 3_600_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `mlflow server` on a sqlite store, answering at the URI it yields."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    proc = subprocess.Popen(
        [str(MLFLOW), "server", "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
         "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not answer (exit {proc.poll()})")
            time.sleep(0.3)
        yield uri
    finally:
        os.killpg(proc.pid, 15)  # the server and its uvicorn workers, started by us
        proc.wait(timeout=30)


def _populate(uri: str, model_dir: Path) -> dict[str, Any]:
    """Two experiments written by MLflow's client; the ids and values to check."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    vision = client.create_experiment("vision")
    text = client.create_experiment("text")
    parent = client.create_run(vision, run_name="parent", start_time=T0,
                               tags={"team": "vision", "bad key!": "x"})  # fmt: skip
    pid = parent.info.run_id
    for key, value in {"lr": "0.01", "optimizer": "adam", "batch": "32",
                       "labels": '["cat", "dog"]', "dataset": "cifar-toy"}.items():  # fmt: skip
        client.log_param(pid, key, value)
    losses = [2.0 / (e + 1) for e in range(10)]
    accs = [0.5 + e / 40 for e in range(10)]
    client.log_batch(pid, metrics=[Metric("train_loss", losses[e], T0 + e, e) for e in range(10)]
                     + [Metric("val_acc", accs[e], T0 + e, e) for e in range(10)])  # fmt: skip
    big = [float(s) * 0.001 for s in range(BIG_STEPS)]
    big[NAN_STEP] = math.nan
    for first in range(0, BIG_STEPS, 1000):  # MLflow takes 1,000 metrics a call
        client.log_batch(pid, metrics=[Metric("big", big[s], T0 + s, s)
                                       for s in range(first, first + 1000)])  # fmt: skip
    client.log_artifacts(pid, str(model_dir), "model")
    client.set_terminated(pid, "FINISHED", end_time=T0 + 60_000)
    children = {}
    for name, status in (("child-ok", "FINISHED"), ("child-failed", "FAILED")):
        child = client.create_run(vision, run_name=name, start_time=T0 + 1000,
                                  tags={"mlflow.parentRunId": pid})  # fmt: skip
        client.log_metric(child.info.run_id, "loss", 0.5, step=0, timestamp=T0 + 1)
        client.set_terminated(child.info.run_id, status)
        children[name] = child.info.run_id
    deleted = client.create_run(vision, run_name="deleted", start_time=T0)
    client.log_metric(deleted.info.run_id, "loss", 1.0, step=0, timestamp=T0)
    client.delete_run(deleted.info.run_id)
    running = client.create_run(text, run_name="running", start_time=T0 + 2000)
    client.log_batch(running.info.run_id,
                     metrics=[Metric("x", float(s), T0 + s, s) for s in range(5)])  # fmt: skip
    killed = client.create_run(text, run_name="killed", start_time=T0 + 3000)
    client.set_terminated(killed.info.run_id, "KILLED")
    return {
        "client": client, "parent": pid, "losses": losses, "accs": accs, "big": big,
        "child-ok": children["child-ok"], "child-failed": children["child-failed"],
        "deleted": deleted.info.run_id, "running": running.info.run_id,
        "killed": killed.info.run_id,
    }  # fmt: skip


def _cli(gateway: GatewayThread, token: str, *args: str) -> tuple[int, dict[str, Any], str]:
    proc = subprocess.run(
        [sys.executable, "-m", "metalearn.cli", "import", "mlflow", *args,
         "--gateway", gateway.address, "--token", token, "--json"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    summary = json.loads(proc.stdout) if proc.stdout.strip() else {}
    return proc.returncode, summary, proc.stderr


def _attempt(channel: grpc.Channel, run_id: str) -> attempt_pb2.Attempt:
    stub = attempt_service_pb2_grpc.AttemptServiceStub(channel)
    return stub.GetAttempt(
        attempt_service_pb2.GetAttemptRequest(
            name=f"mlflow-{run_id}", view=attempt_service_pb2.ATTEMPT_VIEW_FULL
        )
    ).attempt


def _history(
    channel: grpc.Channel, attempt_id: int, key: str
) -> tuple[list[int], list[float], list[int]]:
    stub = reporting_service_pb2_grpc.ReportingServiceStub(channel)
    steps: list[int] = []
    values: list[float] = []
    times: list[int] = []
    after = -1
    while True:
        page = stub.GetMetricHistory(reporting_service_pb2.GetMetricHistoryRequest(
            attempt_id=attempt_id, key=key, after_step=after, page_size=4000))  # fmt: skip
        steps += page.steps
        values += page.values
        times += page.timestamps_ms
        after = page.next_after_step
        if after == -1:
            return steps, values, times


def _names(channel: grpc.Channel) -> list[str]:
    stub = attempt_service_pb2_grpc.AttemptServiceStub(channel)
    reply = stub.ListAttempts(attempt_service_pb2.ListAttemptsRequest(page_size=1000))
    return sorted(a.name for a in reply.attempts)


@pytest.mark.slow
def test_server_import_twice_then_the_running_run_finishes(
    mlflow_server: str, gateway: GatewayThread, tmp_path: Path
) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "MLmodel").write_text("flavors: {}\n")
    (model_dir / "weights.bin").write_bytes(bytes(range(256)) * 40)
    made = _populate(mlflow_server, model_dir)
    importer_name = f"importer-{uuid.uuid4().hex[:8]}"  # tokens outlive a test's data
    token = gateway.make_token(importer_name, "writer")
    flags = ("--epoch-metric", "loss=train_loss", "--epoch-metric", "val_accuracy=val_acc",
             "--artifacts")  # fmt: skip
    code, summary, err = _cli(gateway, token, mlflow_server, *flags)
    assert code == 0, err
    assert summary["runs"] == 6 and summary["imported"] == 5, summary
    assert summary["skipped"] == {"already_there": 0, "deleted": 1, "before_since": 0}
    assert summary["failed"] == [] and summary["left_running"] == 1 and summary["finished"] == 4
    assert summary["points"] == 10 + 10 + BIG_STEPS + 1 + 1 + 5
    assert summary["nan_points"] == 1 and summary["epochs"] == 10
    assert summary["artifacts"] == 1
    assert summary["not_mapped"]["tags with a key metalearn refuses (left out)"] == 1

    with gateway.channel() as channel:
        parent = _attempt(channel, made["parent"])
        assert parent.status == attempt_pb2.ATTEMPT_STATUS_TRAINED
        assert parent.owner == importer_name
        origin = parent.reported.origin
        assert (origin.system, origin.id, origin.uri, origin.group) == (
            "mlflow", made["parent"], mlflow_server, "vision")  # fmt: skip
        params = dict(parent.reported.params.fields)
        # Numbers where the text reads as one; exact: the texts are short decimals.
        assert params["lr"].number_value == 0.01 and params["batch"].number_value == 32
        assert params["optimizer"].string_value == "adam"
        assert list(parent.reported.task.labels) == ["cat", "dog"]
        assert parent.reported.task.dataset == "cifar-toy"
        assert parent.tags["mlflow.runName"] == "parent" and parent.tags["team"] == "vision"
        assert parent.tags["mlflow.status"] == "FINISHED"
        assert parent.tags["mlflow.start_time"].startswith(
            time.strftime("%Y-%m-%dT%H:%M", time.gmtime(T0 / 1000)))  # fmt: skip
        assert "bad key!" not in parent.tags
        assert list(parent.training_losses) == pytest.approx(made["losses"], rel=0, abs=0)
        assert [e.val_accuracy for e in parent.epochs] == pytest.approx(made["accs"], rel=0, abs=0)
        steps, values, times = _history(channel, parent.id, "big")
        assert steps == list(range(BIG_STEPS)) and times == [T0 + s for s in steps]
        assert math.isnan(values[NAN_STEP])
        assert [v for i, v in enumerate(values) if i != NAN_STEP] == [
            v for i, v in enumerate(made["big"]) if i != NAN_STEP]  # fmt: skip
        # The model directory, zipped, as uploaded before the run finished.
        model = b"".join(
            chunk.data for chunk in attempt_service_pb2_grpc.AttemptServiceStub(channel)
            .DownloadModel(attempt_service_pb2.DownloadModelRequest(id=parent.id))
        )  # fmt: skip
        assert parent.model_artifact.size_bytes == len(model)
        with zipfile.ZipFile(io.BytesIO(model)) as zf:
            assert sorted(zf.namelist()) == ["MLmodel", "weights.bin"]
            assert zf.read("weights.bin") == bytes(range(256)) * 40

        child = _attempt(channel, made["child-ok"])
        assert child.tags["mlflow.parentRunId"] == made["parent"]
        assert child.status == attempt_pb2.ATTEMPT_STATUS_TRAINED
        assert _attempt(channel, made["child-failed"]).status == attempt_pb2.ATTEMPT_STATUS_FAILED
        assert _attempt(channel, made["killed"]).status == attempt_pb2.ATTEMPT_STATUS_CANCELLED
        running = _attempt(channel, made["running"])
        assert running.status == attempt_pb2.ATTEMPT_STATUS_TRAINING
        assert running.reported.origin.group == "text"
        with pytest.raises(grpc.RpcError) as gone:
            _attempt(channel, made["deleted"])
        assert gone.value.code() == grpc.StatusCode.NOT_FOUND
        names = _names(channel)
        assert len(names) == 5

        # Again: the ended runs are skipped, the running one sent again (stored once).
        code, again, err = _cli(gateway, token, mlflow_server, *flags)
        assert code == 0, err
        assert again["skipped"]["already_there"] == 4 and again["resumed"] == 1, again
        assert again["points"] == 5 and again["left_running"] == 1
        assert _names(channel) == names
        assert _history(channel, running.id, "x")[0] == [0, 1, 2, 3, 4]

        # It ends in MLflow: the next import sends its new point and finishes it.
        client = made["client"]
        client.log_metric(made["running"], "x", 5.0, step=5, timestamp=T0 + 5)
        client.set_terminated(made["running"], "FINISHED")
        code, third, err = _cli(gateway, token, mlflow_server, *flags)
        assert code == 0, err
        assert third["finished"] == 1 and third["skipped"]["already_there"] == 4, third
        finished = _attempt(channel, made["running"])
        assert finished.status == attempt_pb2.ATTEMPT_STATUS_TRAINED
        assert _history(channel, finished.id, "x")[1] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
        assert _names(channel) == names


def _sqlite_store(path: Path) -> tuple[str, Any, dict[str, str]]:
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{path}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("local")
    ids = {}
    for name in ("first", "second", "third"):
        run = client.create_run(exp, run_name=name, start_time=T0)
        client.log_param(run.info.run_id, "classes", "a,b,c")
        # Logged without steps, as MLflow users often do: every point at step 0.
        points = [Metric("loss", 1.0 / (i + 1), T0 + i, 0) for i in range(3)]
        client.log_batch(run.info.run_id, metrics=points)
        client.set_terminated(run.info.run_id, "FINISHED")
        ids[name] = run.info.run_id
    return uri, client, ids


@pytest.mark.slow
def test_sqlite_store_directly_and_a_refused_run_does_not_stop_the_import(
    gateway: GatewayThread, tmp_path: Path
) -> None:
    uri, _, ids = _sqlite_store(tmp_path / "mlflow.db")
    # --since keeps runs started at or after it; --experiment names what to read.
    options = importer.Options(uri=uri, dry_run=True, since_ms=T0 + 1)
    assert importer.import_mlflow(options, None, None).skipped_before_since == 3
    options = importer.Options(uri=uri, dry_run=True, since_ms=T0, experiments=("local",))
    planned = importer.import_mlflow(options, None, None)
    assert (planned.imported, planned.skipped_before_since, planned.points) == (3, 0, 9)
    with pytest.raises(importer.SourceProblem, match="no experiment named 'nope'"):
        importer.import_mlflow(importer.Options(uri=uri, experiments=("nope",)), None, None)
    writer = gateway.make_token(f"importer-{uuid.uuid4().hex[:8]}", "writer")
    # Another principal holds `second`'s attempt and is still reporting to it: the
    # gateway refuses the importer's batches for it (PERMISSION_DENIED).
    with gateway.channel() as admin:
        reporting_service_pb2_grpc.ReportingServiceStub(admin).StartRun(
            reporting_service_pb2.StartRunRequest(
                name=f"mlflow-{ids['second']}", heartbeat_seconds=600
            )
        )
    # Read by 2 forked reader processes (--readers): the path a many-core machine takes.
    code, summary, err = _cli(gateway, writer, uri, "--readers", "2")
    assert code == 1, err
    assert summary["imported"] == 2 and summary["finished"] == 2, summary
    assert [f["run_id"] for f in summary["failed"]] == [ids["second"]]
    assert "PERMISSION_DENIED" in summary["failed"][0]["reason"]
    # Counted for every run read: the two imported ones, and the refused one when its
    # metrics were read before the gateway refused its stream (the refusal may come
    # first: the stream opens before the first batch is read).
    without_steps = summary["not_mapped"]["metrics logged without steps (numbered in time order)"]
    assert without_steps in (2, 3), summary
    with gateway.channel() as channel:
        for name in ("first", "third"):
            attempt = _attempt(channel, ids[name])
            assert attempt.status == attempt_pb2.ATTEMPT_STATUS_TRAINED
            assert list(attempt.reported.task.labels) == ["a", "b", "c"]
            assert attempt.reported.origin.uri == uri
            steps, values, _ = _history(channel, attempt.id, "loss")
            assert steps == [0, 1, 2] and values == [1.0, 0.5, 1.0 / 3]


def test_bad_arguments_exit_2(tmp_path: Path) -> None:
    from metalearn.cli.main import main

    assert main(["import", "mlflow", f"sqlite:///{tmp_path}/missing.db", "--dry-run"]) == 2
    assert main(["import", "mlflow", str(tmp_path), "--epoch-metric", "val_loss=v",
                 "--dry-run"]) == 2  # fmt: skip
    assert main(["import", "mlflow", str(tmp_path), "--since", "yesterday", "--dry-run"]) == 2
    assert not (tmp_path / "missing.db").exists()  # no empty store made at a mistyped path


def test_without_mlflow_it_says_how_to_install_it() -> None:
    # MLflow made unimportable in a child process, as on a machine without the extra.
    code = ("import sys; sys.modules['mlflow'] = None;"
            " from metalearn.cli.main import main;"
            " sys.exit(main(['import', 'mlflow', 'http://127.0.0.1:9', '--dry-run']))")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)  # fmt: skip
    assert proc.returncode == 2
    assert "pip install 'metalearn[mlflow]'" in proc.stderr


def test_series_steps_times_and_epochs_mapping() -> None:
    unmapped: Counter[str] = Counter()
    # A step logged twice keeps its later value; steps come out rising.
    series = importer.metric_series("m", [1, 0, 1], [1.0, 0.5, 2.0], [T0, T0 + 1, T0 + 2], unmapped)
    assert series is not None
    assert (series.steps, series.values, series.times) == ([0, 1], [0.5, 2.0], [T0 + 1, T0 + 2])
    assert unmapped["points at a step logged twice (the last kept)"] == 1
    # Times before 2000 are left to the gateway (the import's time), counted.
    old = importer.metric_series("m", [0], [1.0], [5], unmapped)
    assert old is not None and old.times is None
    loss = importer.metric_series(
        "l", [0, 1, 2, 3], [1.0, 0.8, math.nan, 0.5], [T0, T0 + 1, T0 + 2, T0 + 3], unmapped
    )
    acc = importer.metric_series("a", [0, 1], [0.4, 1.5], [T0, T0], unmapped)
    assert loss is not None and acc is not None
    mapping = importer.TaskMapping(epoch_metrics={"loss": "l", "val_accuracy": "a"})
    epochs = importer.epochs_from({"l": loss, "a": acc}, mapping, unmapped)
    # Epochs stop before the NaN loss; an accuracy above 1 is left out of its epoch.
    assert [(e.epoch, e.loss) for e in epochs] == [(1, 1.0), (2, 0.8)]
    assert epochs[0].val_accuracy == 0.4 and not epochs[1].HasField("val_accuracy")
    assert unmapped["epochs from a non-finite loss on (not mapped)"] == 2
    assert unmapped["epoch val_accuracy values out of range (left out)"] == 1


def test_params_labels_and_the_origin_uri() -> None:
    assert importer.param_value("0.01") == 0.01 and importer.param_value("1e-3") == 0.001
    assert importer.param_value("adam") == "adam" and importer.param_value("nan") == "nan"
    assert importer.param_value(str(2**60 + 1)) == str(2**60 + 1)  # a double would change it
    assert importer.parse_labels('["cat", "dog"]') == ["cat", "dog"]
    assert importer.parse_labels("cat, dog") == ["cat", "dog"]
    assert importer.parse_shape("3x32x32") == [3, 32, 32]
    assert importer.public_uri("https://me:secret@mlflow.example:5000/x?token=t#f") == (
        "https://mlflow.example:5000/x")  # fmt: skip
    assert importer.public_uri("sqlite:////data/mlflow.db") == "sqlite:////data/mlflow.db"
    big = {f"p{i}": "v" * 1000 for i in range(100)}  # about 100 KiB: over the 64 KiB bound
    unmapped: Counter[str] = Counter()
    struct = importer.params_struct(big, unmapped)
    assert struct.ByteSize() <= importer.MAX_PARAMS_BYTES
    assert unmapped["params past the 64 KiB bound (left out)"] == 100 - len(struct.fields)
