"""The whole system: gateways, real trainer processes, faults.

Two in-process gateways share the session's PostgreSQL (the session's, and a fast one
with short leases); trainers are `metalearn trainer` processes that register with the
fast one. Faults are real: kill -9, SIGTERM, SIGSTOP.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import psycopg
import pytest
from PIL import Image

from gateway.config import GatewayConfig
from metalearn import documents
from metalearn.credentials import authorization
from metalearn.v1 import (
    attempt_pb2,
    attempt_service_pb2_grpc,
    dataset_service_pb2,
    dataset_service_pb2_grpc,
)
from metalearn.v1 import attempt_service_pb2 as pb
from tests.conftest import SEED
from tests.harness import GatewayThread, png
from tests.other_languages import ROOT, go_example, node_example, run_example
from tests.trainer_harness import lenet_command

# real trainer processes training real runs: not in `make test-fast`.
pytestmark = pytest.mark.slow

METALEARN = [sys.executable, "-m", "metalearn.cli"]
S = attempt_pb2
TERMINAL = {S.ATTEMPT_STATUS_TRAINED, S.ATTEMPT_STATUS_COMPLETE, S.ATTEMPT_STATUS_FAILED,
            S.ATTEMPT_STATUS_CANCELLED}  # fmt: skip


class Trainer:
    """A `metalearn trainer` process registered with a gateway."""

    def __init__(self, gateway: str, tmp: Path, name: str, token: str) -> None:
        self.log = tmp / f"{name}.log"
        self.proc = subprocess.Popen(
            [*METALEARN, "trainer", "--listen", "127.0.0.1:0", "--gateway", gateway,
             "--cache-dir", str(tmp / "cache"), "--checkpoint-every-epochs", "1"],
            stdout=subprocess.PIPE, stderr=self.log.open("w"), text=True,
            start_new_session=True,  # its own process group: signals can reach its runs too
            env={**os.environ, "METALEARN_TOKEN": token},
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert "listening on" in line, self.log.read_text()
        self.address = line.rsplit(" ", 1)[-1].strip()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal_all(self, sig: int) -> None:
        """The daemon and its worker processes, as a hung machine would be."""
        os.killpg(self.proc.pid, sig)

    def stop(self) -> None:
        if self.alive():
            self.signal_all(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Stack:
    """A fast gateway, its trainers, and helpers to drive them."""

    def __init__(self, gateway: GatewayThread, tmp: Path) -> None:
        self.gateway = gateway
        self.tmp = tmp
        self.trainers: list[Trainer] = []
        self.channel = gateway.channel()
        self.stub = attempt_service_pb2_grpc.AttemptServiceStub(self.channel)

    def ensure_trainers(self, count: int) -> list[Trainer]:
        """Exactly `count` live trainers, registered."""
        self.trainers = [t for t in self.trainers if t.alive()]
        while len(self.trainers) > count:
            self.trainers.pop().stop()
        starting = [
            threading.Thread(target=lambda i=i: self.trainers.append(
                Trainer(self.gateway.address, self.tmp, f"trainer-{time.time_ns()}-{i}",
                        self.gateway.trainer_token)))
            for i in range(count - len(self.trainers))
        ]  # fmt: skip
        for thread in starting:
            thread.start()
        for thread in starting:
            thread.join()
        self.wait_for(lambda: self.registered() >= count, 20, "trainers to register")
        return self.trainers

    def registered(self) -> int:
        addresses = [t.address for t in self.trainers]
        with psycopg.connect(self.gateway.database_url) as conn:
            row = conn.execute(
                "SELECT count(*) FROM trainers WHERE address = ANY(%s)"
                " AND last_seen > now() - interval '3 seconds'",
                (addresses,),
            ).fetchone()
        return int(row[0]) if row else 0

    def trainer_credential(self, address: str) -> str:
        """What the gateway presents to the trainer at `address`: made from the salt of
        its registration under the gateway's key (this process's: it runs in it)."""
        from gateway.trainers.credentials import process_key

        with psycopg.connect(self.gateway.database_url) as conn:
            row = conn.execute(
                "SELECT credential_salt FROM trainers WHERE address = %s", (address,)
            ).fetchone()
        assert row is not None
        return process_key().credential(address, bytes(row[0]))

    def get(self, name: str) -> attempt_pb2.Attempt:
        return self.stub.GetAttempt(
            pb.GetAttemptRequest(name=name, view=pb.ATTEMPT_VIEW_FULL)
        ).attempt

    def wait_for(self, check, seconds: float, what: str) -> None:
        deadline = time.monotonic() + seconds
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"gave up waiting for {what}")
            time.sleep(0.1)

    def wait_status(
        self, name: str, statuses: set[int], seconds: float = 120
    ) -> attempt_pb2.Attempt:
        self.wait_for(
            lambda: self.get(name).status in statuses, seconds, f"{name} to be {statuses}"
        )
        return self.get(name)

    def trainer_of(self, name: str) -> Trainer:
        address = self.get(name).trainer
        return next(t for t in self.trainers if t.address == address)

    def watch_epochs(self, name: str, from_epoch: int = 0) -> tuple[list[int], attempt_pb2.Attempt]:
        """Every epoch a watcher sees until a terminal status, and that status."""
        epochs, last = [], None
        for event in self.stub.WatchAttempt(
            pb.WatchAttemptRequest(name=name, from_epoch=from_epoch)
        ):
            kind = event.WhichOneof("event")
            if kind == "epoch":
                epochs.append(event.epoch.epoch)
            elif kind in ("snapshot", "status"):
                last = getattr(event, kind)
        assert last is not None
        return epochs, last

    def close(self) -> None:
        for trainer in self.trainers:
            trainer.stop()
        self.channel.close()


@pytest.fixture(scope="module")
def stack(
    digits_gateway: GatewayThread, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    config = GatewayConfig(
        listen="127.0.0.1:0", database_url=digits_gateway.database_url, lease_seconds=3.0,
        heartbeat_seconds=0.5, trainer_timeout_seconds=3.0, dispatch_seconds=0.2,
    )  # fmt: skip
    fast = GatewayThread(digits_gateway.database_url, config).start()
    result = Stack(fast, tmp_path_factory.mktemp("stack"))
    try:
        yield result
    finally:
        result.close()
        fast.stop()


def slow_command(epochs: int, batch_size: int = 1) -> attempt_pb2.TrainCommand:
    """The LeNet example at a small batch size: a second or so per epoch, time to act."""
    return lenet_command(n_epoch=epochs, batch_size=batch_size)


def test_train_watch_test_download(stack: Stack) -> None:
    stack.ensure_trainers(1)
    queued = stack.stub.Train(pb.TrainRequest(name="lenet", command=lenet_command())).attempt
    assert queued.status in (S.ATTEMPT_STATUS_QUEUED, S.ATTEMPT_STATUS_TRAINING)
    epochs, last = stack.watch_epochs("lenet")
    assert epochs == list(range(1, 11)) and last.status == S.ATTEMPT_STATUS_TRAINED
    trained = stack.get("lenet")
    assert [e.epoch for e in trained.epochs] == list(range(1, 11))
    assert len(trained.training_losses) == 10 and trained.model_artifact.size_bytes > 0
    assert trained.dataset.label_names[0] == "digit 0"

    stack.stub.Test(pb.TestRequest(name="lenet"))
    progress = []
    for event in stack.stub.WatchAttempt(pb.WatchAttemptRequest(name="lenet", from_epoch=10)):
        assert event.WhichOneof("event") != "epoch"
        if event.WhichOneof("event") == "test_progress":
            progress.append(event.test_progress.done)
    done = stack.get("lenet")
    assert done.status == S.ATTEMPT_STATUS_COMPLETE and done.accuracy >= 0.95
    assert done.restart_count == 0  # a clean train and test restarted nothing
    assert done.test_result.images > 300 and progress and progress[-1] == done.test_result.images

    chunks = list(stack.stub.DownloadModel(pb.DownloadModelRequest(name="lenet")))
    data = b"".join(c.data for c in chunks)
    assert (
        len(data) == done.model_artifact.size_bytes
        and chunks[0].sha256 == done.model_artifact.sha256
    )

    # Training the same name again forgets the old results (the prototype's semantics).
    again = stack.stub.Train(
        pb.TrainRequest(name="lenet", command=lenet_command(n_epoch=2))
    ).attempt
    assert len(again.training_losses) == 0 and again.accuracy == 0
    assert stack.watch_epochs("lenet")[0] == [1, 2]
    assert [round(x, 12) for x in stack.get("lenet").training_losses] == [
        round(x, 12) for x in trained.training_losses[:2]
    ]


def test_the_python_client_runs_an_attempt(stack: Stack, tmp_path: Path) -> None:
    from metalearn import Client
    from metalearn.client import EpochMetrics

    stack.ensure_trainers(1)
    with Client(stack.gateway.address, token=stack.gateway.admin_token) as client:
        client.train("by-client", lenet_command(n_epoch=3))
        events = list(client.watch("by-client"))
        assert [e.epoch for e in events if isinstance(e, EpochMetrics)] == [1, 2, 3]
        assert client.wait("by-client").status == S.ATTEMPT_STATUS_TRAINED
        client.test("by-client")
        assert client.wait("by-client").status == S.ATTEMPT_STATUS_COMPLETE
        weights = client.download("by-client", tmp_path)
        assert weights.name == "by-client.safetensors"
        assert weights.stat().st_size == client.get("by-client").model_artifact.size_bytes


def test_the_cli_trains_follows_tests_and_downloads(stack: Stack, tmp_path: Path) -> None:
    stack.ensure_trainers(1)
    example = Path(__file__).resolve().parents[1] / "examples" / "digits_lenet.json"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*METALEARN, *args, "--gateway", stack.gateway.address],
            capture_output=True, text=True, timeout=300,
            env={**os.environ, "METALEARN_TOKEN": stack.gateway.admin_token},
        )  # fmt: skip

    trained = cli("train", "--file", str(example), "--name", "by-cli", "--follow")
    assert trained.returncode == 0, trained.stderr
    assert "epoch 10/10" in trained.stdout and "by-cli trained" in trained.stdout
    tested = cli("test", "by-cli", "--follow")
    assert tested.returncode == 0 and "by-cli complete  accuracy 0.9" in tested.stdout
    downloaded = cli("download", "by-cli", "-o", str(tmp_path))
    assert downloaded.returncode == 0, downloaded.stderr
    assert (tmp_path / "by-cli.safetensors").stat().st_size > 0
    assert '"name": "by-cli"' in (tmp_path / "by-cli.json").read_text()
    plot = cli("plot", "by-cli", "-o", str(tmp_path / "curves.png"))
    assert plot.returncode == 0, plot.stderr
    with Image.open(tmp_path / "curves.png") as image:
        assert image.format == "PNG" and image.size == (1000, 400)
    stack.stub.Train(pb.TrainRequest(name="by-cli-sgd", command=lenet_command(
        n_epoch=2, optimizer={"name": "SGD", "lr": 0.05})))  # fmt: skip
    stack.wait_status("by-cli-sgd", TERMINAL)
    compared = cli("compare", "by-cli", "by-cli-sgd", "--plot", str(tmp_path / "both.png"))
    assert compared.returncode == 0, compared.stderr
    rows = {
        line.split()[0]: line.split()[1:] for line in compared.stdout.splitlines() if line.strip()
    }
    assert rows["optimizer.name"] == ["Adam", "SGD"] and rows["epochs"] == ["10", "2"]
    assert (tmp_path / "both.png").stat().st_size > 10_000
    watched = cli("watch", "by-cli", "--from-epoch", "8")
    assert watched.returncode == 0, watched.stderr
    assert [line.split()[2] for line in watched.stdout.splitlines() if "] epoch" in line] == [
        "9/10", "10/10"
    ]  # fmt: skip
    listed = cli("attempts", "list", "--prefix", "by-cli")
    header, *rows = listed.stdout.splitlines()
    assert header.split() == [
        "ID",
        "NAME",
        "STATUS",
        "EPOCHS",
        "LAST",
        "LOSS",
        "ACCURACY",
        "UPDATED",
        "PROGNOSIS",
    ]
    mine = next(row.split() for row in rows if row.split()[1] == "by-cli")  # (by-client too)
    assert mine[1:4] == ["by-cli", "complete", "10"]
    refused = cli("cancel", "by-cli")
    assert refused.returncode == 1 and "FAILED_PRECONDITION" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("language", ["node", "go"])
def test_an_example_trains_from_the_protos_alone(
    stack: Stack, tmp_path: Path, language: str
) -> None:
    """examples/node and examples/go: skipped without node, or Go (`make go-example`)."""
    command = json.loads((ROOT / "examples" / "digits_lenet.json").read_text())
    (tmp_path / "command.json").write_text(json.dumps({**command, "n_epoch": 3}))
    name, file = f"from-{language}", str(tmp_path / "command.json")
    if language == "node":
        argv = [*node_example(), name, file]
    else:
        argv = [str(go_example(tmp_path)), "-command", file, name]
    stack.ensure_trainers(1)
    done = run_example(argv, stack.gateway, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert [line.split()[1] for line in lines if line.startswith("epoch ")] == ["1", "2", "3"]
    assert f"{name} ATTEMPT_STATUS_TRAINED: 3 epochs, last loss" in done.stdout
    assert stack.get(name).status == S.ATTEMPT_STATUS_TRAINED


def test_the_prototype_document_trains_and_tests(stack: Stack) -> None:
    stack.ensure_trainers(1)
    seed = documents.attempt_from_json(SEED.read_text())
    labels = list(seed.training_commands.label_names)
    with stack.gateway.channel() as channel:
        stub = dataset_service_pb2_grpc.DatasetServiceStub(channel)
        uploads = [
            dataset_service_pb2.UploadImagesRequest(
                label=label, data=png((9 * i, 20 * j, 200), (24, 24))
            )
            for i, label in enumerate(labels)
            for j in range(8)
        ]
        assert stub.UploadImages(iter(uploads)).added == len(uploads)
    command = seed.training_commands
    command.n_epoch = 1  # 500x500 images on a CPU: one epoch proves the point
    stack.stub.Train(pb.TrainRequest(name=seed.name, command=command))
    trained = stack.wait_status(seed.name, TERMINAL, 300)
    assert trained.status == S.ATTEMPT_STATUS_TRAINED, trained.error
    stack.stub.Test(pb.TestRequest(name=seed.name, command=seed.testing_commands))
    tested = stack.wait_status(seed.name, TERMINAL, 300)
    assert tested.status == S.ATTEMPT_STATUS_COMPLETE, tested.error
    assert 0 < tested.test_result.images <= 200 and len(tested.test_result.confusion_matrix) == 81


def test_watchers_on_one_replica_see_work_run_by_another(stack, digits_gateway) -> None:
    stack.ensure_trainers(1)
    stack.stub.Train(pb.TrainRequest(name="elsewhere", command=slow_command(3, 4)))
    replicas = {g.background.dispatcher.gateway_id: g for g in (stack.gateway, digits_gateway)}
    holder: list[str] = []

    def leased() -> bool:
        # (A claim can bounce off a trainer that just left: wait for one that holds.)
        with psycopg.connect(stack.gateway.database_url) as conn:
            row = conn.execute(
                "SELECT leased_by FROM attempts WHERE name = 'elsewhere' AND status = 'TRAINING'"
                " AND current_epoch >= 1"
            ).fetchone()
        holder[:] = [row[0]] if row and row[0] else []
        return bool(holder)

    stack.wait_for(leased, 60, "a replica to run it")
    assert holder[0] in replicas  # one of the two claimed it
    other = next(g for gid, g in replicas.items() if gid != holder[0])
    with other.channel() as channel:
        stub = attempt_service_pb2_grpc.AttemptServiceStub(channel)
        epochs, last = [], None
        for event in stub.WatchAttempt(pb.WatchAttemptRequest(name="elsewhere")):
            kind = event.WhichOneof("event")
            if kind == "epoch":
                epochs.append(event.epoch.epoch)
            elif kind in ("snapshot", "status"):
                last = getattr(event, kind)
    assert epochs == [1, 2, 3] and last is not None and last.status == S.ATTEMPT_STATUS_TRAINED


def test_two_trainers_train_two_attempts_at_once(stack: Stack) -> None:
    first, second = stack.ensure_trainers(2)
    for name in ("left", "right"):
        stack.stub.Train(pb.TrainRequest(name=name, command=slow_command(3)))
    stack.wait_for(
        lambda: {stack.get(n).status for n in ("left", "right")} == {S.ATTEMPT_STATUS_TRAINING},
        30, "both to train",
    )  # fmt: skip
    assert {stack.get("left").trainer, stack.get("right").trainer} == {
        first.address,
        second.address,
    }
    for name in ("left", "right"):
        stack.stub.CancelAttempt(pb.CancelAttemptRequest(name=name))


def test_cancel_stops_the_trainer(stack: Stack) -> None:
    stack.ensure_trainers(1)
    stack.stub.Train(pb.TrainRequest(name="cancelled", command=slow_command(50)))
    stack.wait_for(lambda: stack.get("cancelled").current_epoch >= 1, 60, "an epoch")
    trainer = stack.trainer_of("cancelled")
    cancelled = stack.stub.CancelAttempt(pb.CancelAttemptRequest(name="cancelled")).attempt
    assert cancelled.status == S.ATTEMPT_STATUS_CANCELLED
    from metalearn.v1 import trainer_service_pb2, trainer_service_pb2_grpc

    with grpc.insecure_channel(trainer.address) as channel:
        info = trainer_service_pb2_grpc.TrainerServiceStub(channel).GetTrainerInfo
        call = authorization(stack.trainer_credential(trainer.address))
        stack.wait_for(
            lambda: info(trainer_service_pb2.GetTrainerInfoRequest(), metadata=call).busy_slots
            == 0, 10,
            "the trainer to stop",
        )  # fmt: skip
    epochs = stack.get("cancelled").current_epoch
    time.sleep(1)
    assert stack.get("cancelled").current_epoch == epochs  # nothing more is written
    with pytest.raises(grpc.RpcError) as err:
        stack.stub.CancelAttempt(pb.CancelAttemptRequest(name="cancelled"))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_kill_9_of_a_trainer_resumes_from_the_checkpoint(stack: Stack) -> None:
    stack.ensure_trainers(2)
    stack.stub.Train(pb.TrainRequest(name="reference", command=slow_command(4, 2)))
    stack.wait_status("reference", TERMINAL, 120)
    stack.stub.Train(pb.TrainRequest(name="killed", command=slow_command(4, 2)))
    stack.wait_for(lambda: stack.get("killed").current_epoch >= 2, 60, "two epochs")
    victim = stack.trainer_of("killed")
    victim.proc.kill()  # SIGKILL: no checkpoint, no goodbye
    victim.proc.wait()

    def orphans_gone() -> bool:
        try:
            os.killpg(victim.proc.pid, 0)  # its forkserver and runs share its group
        except ProcessLookupError:
            return True
        return False

    stack.wait_for(orphans_gone, 10, "the killed trainer's runs to end with it")
    done = stack.wait_status("killed", TERMINAL, 120)
    assert done.status == S.ATTEMPT_STATUS_TRAINED, done.error
    # One restart, after the failure (restart_count counts restarts, not claims).
    assert [e.epoch for e in done.epochs] == [1, 2, 3, 4] and done.restart_count == 1
    # Resumed from its checkpoint, it computed exactly what an uninterrupted run did.
    assert list(done.training_losses) == list(stack.get("reference").training_losses)


def test_sigterm_of_a_trainer_hands_the_run_over(stack: Stack) -> None:
    stack.ensure_trainers(2)
    stack.stub.Train(pb.TrainRequest(name="handed-over", command=slow_command(4)))
    stack.wait_for(lambda: stack.get("handed-over").current_epoch >= 1, 60, "an epoch")
    leaving = stack.trainer_of("handed-over")
    leaving.proc.send_signal(signal.SIGTERM)
    assert leaving.proc.wait(60) == 0
    done = stack.wait_status("handed-over", TERMINAL, 120)
    assert done.status == S.ATTEMPT_STATUS_TRAINED, done.error
    assert [e.epoch for e in done.epochs] == [1, 2, 3, 4] and done.trainer != leaving.address


def test_a_command_that_always_crashes_fails_after_max_restarts(stack: Stack) -> None:
    trainers = stack.ensure_trainers(1)
    stop = threading.Event()

    def crash_every_run() -> None:
        """Kills each run's worker process as it appears: a run that always dies."""
        while not stop.is_set():
            for trainer in trainers:
                for pid in _grandchildren(trainer.proc.pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)

    killer = threading.Thread(target=crash_every_run, daemon=True)
    killer.start()
    try:
        stack.stub.Train(pb.TrainRequest(name="doomed", command=lenet_command()))
        failed = stack.wait_status("doomed", TERMINAL, 120)
    finally:
        stop.set()
        killer.join()
    assert failed.status == S.ATTEMPT_STATUS_FAILED
    assert "gave up after 3 restarts" in failed.error and "died" in failed.error
    assert failed.restart_count == 3  # three restarts after the first run, then no more


def test_a_silent_trainer_loses_its_work(stack: Stack) -> None:
    stack.ensure_trainers(2)
    stack.stub.Train(pb.TrainRequest(name="stalled", command=slow_command(3)))
    stack.wait_for(lambda: stack.get("stalled").current_epoch >= 1, 60, "an epoch")
    frozen = stack.trainer_of("stalled")
    frozen.signal_all(signal.SIGSTOP)
    try:
        done = stack.wait_status("stalled", TERMINAL, 120)
    finally:
        frozen.signal_all(signal.SIGCONT)
    assert done.status == S.ATTEMPT_STATUS_TRAINED, done.error
    assert [e.epoch for e in done.epochs] == [1, 2, 3] and done.trainer != frozen.address


def test_watchers_resume_without_gaps_or_duplicates(stack: Stack) -> None:
    stack.ensure_trainers(1)
    stack.stub.Train(pb.TrainRequest(name="watched", command=slow_command(4, 4)))
    seen: list[int] = []
    # Disconnect after each epoch and reconnect from the last one seen.
    while True:
        call = stack.stub.WatchAttempt(
            pb.WatchAttemptRequest(name="watched", from_epoch=max(seen, default=0))
        )
        finished = False
        for event in call:
            kind = event.WhichOneof("event")
            if kind == "epoch":
                seen.append(event.epoch.epoch)
                call.cancel()
                break
            if kind == "status" and event.status.status in TERMINAL:
                finished = True
        else:
            finished = True
        if finished:
            break
    assert seen == [1, 2, 3, 4]
    # Many watchers of one attempt each see every epoch once.
    results: list[list[int]] = []
    stack.stub.Train(pb.TrainRequest(name="crowd", command=slow_command(2, 4)))
    threads = [
        threading.Thread(target=lambda: results.append(stack.watch_epochs("crowd")[0]))
        for _ in range(20)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert results == [[1, 2]] * 20


def _grandchildren(pid: int) -> list[int]:
    found = []
    for child in _children(pid):
        found += _children(child)
    return found


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def test_command_mistakes_found_by_the_trainer_fail_at_once(stack: Stack) -> None:
    """Mistakes only torch can find fail the attempt on the first run, as the command's
    fault, with the field named (no restarts)."""
    stack.ensure_trainers(1)
    mistakes = {
        "bce-without-sigmoid": (
            lenet_command(criterion={"name": "BCELoss"}, n_epoch=1),
            "command.criterion",
        ),
        "weight-of-wrong-length": (
            lenet_command(criterion={"name": "CrossEntropyLoss", "weight": [1.0, 2.0]}, n_epoch=1),
            "command.criterion",
        ),
        "smoothing-1.5": (
            lenet_command(
                criterion={"name": "CrossEntropyLoss", "label_smoothing": 1.5}, n_epoch=1
            ),
            "command.criterion",
        ),
    }
    for name, (command, field) in mistakes.items():
        try:
            stack.stub.Train(pb.TrainRequest(name=name, command=command))
        except grpc.RpcError as err:  # the gateway found it first: as good
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err
            continue
        failed = stack.wait_status(name, TERMINAL, 120)
        assert failed.status == S.ATTEMPT_STATUS_FAILED, (name, failed.error)
        assert failed.error.startswith("INVALID_ARGUMENT") and field in failed.error, failed.error
        assert failed.restart_count == 0, (name, failed.error)


@pytest.mark.slow
def test_a_queue_of_50_is_claimed_once_each_and_a_cancel_stops_every_write(
    stack: Stack,
) -> None:
    """Two trainers (and two gateway replicas) drain 50 tiny attempts: each is claimed
    exactly once, none is restarted; every tenth is cancelled on the way, and nothing of
    it is stored after CancelAttempt answered. (50, not 100: the claims race from the
    first few on, and the second 50 cost `make test` 40 s for nothing new.)"""
    stack.ensure_trainers(2)
    tiny = lenet_command(n_epoch=2, label_names=["digit 0", "digit 1"], batch_size=64)
    names = [f"queue-{i:03}" for i in range(50)]
    for name in names:
        stack.stub.Train(pb.TrainRequest(name=name, command=tiny))
    epochs_at_cancel: dict[str, int] = {}
    for name in names[5::10]:
        try:
            stack.stub.CancelAttempt(pb.CancelAttemptRequest(name=name))
        except grpc.RpcError as err:  # it finished first
            assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
            continue
        epochs_at_cancel[name] = len(stack.get(name).epochs)
        time.sleep(0.3)
    for name in names:
        stack.wait_status(name, TERMINAL, 300)
    time.sleep(1)  # any late write would have landed by now
    with psycopg.connect(stack.gateway.database_url) as conn:
        rows = conn.execute(
            "SELECT name, status, claims, restart_count FROM attempts"
            " WHERE name LIKE 'queue-%%' ORDER BY name"
        ).fetchall()
    assert len(rows) == 50
    for name, status, claims, restarts in rows:
        if name in epochs_at_cancel:
            assert status == "CANCELLED" and claims <= 1, (name, claims)
            assert len(stack.get(name).epochs) == epochs_at_cancel[name], name
        else:
            # Never restarted; a second claim is a refusal handed back uncounted (the
            # other replica filled that trainer first), by design, and rare.
            assert (status, restarts) == ("TRAINED", 0) and claims <= 2, (name, status, claims)
    assert sum(claims for _, _, claims, _ in rows) <= 55  # a refusal handed back is rare
