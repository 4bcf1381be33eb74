"""A trainer holding a valid trainer token that lies: nothing it says is taken on faith.

A fake TrainerService registers with a real gateway and answers its Train and Test
calls with scripted streams: epoch 999, NaN, accuracy 42, files that are too large,
damaged or never finished. Each run must fail with a clear reason, as the trainer's
fault (and the trainer quarantined), and nothing impossible may be stored.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
import psycopg
import psycopg.conninfo
import pytest

from gateway.config import GatewayConfig
from metalearn.v1 import (
    attempt_pb2,
    attempt_service_pb2_grpc,
    dataset_service_pb2,
    dataset_service_pb2_grpc,
    trainer_registry_service_pb2,
    trainer_registry_service_pb2_grpc,
    trainer_service_pb2,
    trainer_service_pb2_grpc,
)
from metalearn.v1 import attempt_service_pb2 as pb
from tests.harness import GatewayThread, fresh_database, png
from tests.trainer_harness import lenet_command
from trainer import run_files

tpb = trainer_service_pb2
S = attempt_pb2
MAX_ARTIFACT = 64 * 1024
Script = Callable[[Any], list[tpb.TrainerServiceTrainResponse]]


class FakeTrainer(trainer_service_pb2_grpc.TrainerServiceServicer):
    """Streams whatever the test scripts; remembers the credential it was called with."""

    def __init__(self) -> None:
        self.train_script: Script = lambda request: []
        self.test_script: Callable[[Any], list[tpb.TrainerServiceTestResponse]] = lambda r: []
        self.credentials: list[str] = []

    def _note(self, context: grpc.ServicerContext) -> None:
        self.credentials += [v for k, v in context.invocation_metadata() if k == "authorization"]

    def Train(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        self._note(context)
        yield from self.train_script(request)

    def Test(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        self._note(context)
        yield from self.test_script(request)


@pytest.fixture(scope="module")
def liars(postgres_url: str) -> Iterator[tuple[GatewayThread, FakeTrainer, str]]:
    """A gateway on a database of its own (no other gateway dispatches there), where one
    failure fails an attempt, and a registered fake trainer."""
    url = fresh_database(postgres_url, "liars")
    config = GatewayConfig(
        listen="127.0.0.1:0", database_url=url, max_restarts=0, max_artifact_bytes=MAX_ARTIFACT
    )
    gateway = GatewayThread(url, config).start()
    fake = FakeTrainer()
    server = grpc.server(futures.ThreadPoolExecutor(4))
    trainer_service_pb2_grpc.add_TrainerServiceServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    address = f"127.0.0.1:{port}"
    five_images_each(gateway)
    try:
        yield gateway, fake, address
    finally:
        server.stop(1)
        gateway.stop()


def five_images_each(gateway: GatewayThread, labels: tuple[str, ...] = ("0", "1")) -> None:
    """The images `started()` reports: five of each label."""
    with gateway.channel() as channel:
        dataset_service_pb2_grpc.DatasetServiceStub(channel).UploadImages(
            iter(
                dataset_service_pb2.UploadImagesRequest(label=label, data=png((i, j, 9)))
                for i, label in enumerate(labels)
                for j in range(5)
            )
        )


def register(gateway: GatewayThread, address: str) -> str:
    with gateway.channel("trainer") as channel:
        stub = trainer_registry_service_pb2_grpc.TrainerRegistryServiceStub(channel)
        reply = stub.RegisterTrainer(
            trainer_registry_service_pb2.RegisterTrainerRequest(address=address, capacity=1)
        )
    # A fresh trainer each time: lift the last test's quarantine.
    with psycopg.connect(gateway.database_url) as conn:
        conn.execute("UPDATE trainers SET quarantined_until = NULL, quarantine_reason = ''")
        conn.execute("DELETE FROM trainer_quarantines")  # a quarantine is the principal's
    return str(reply.gateway_credential)


def started(
    first: int = 1,
    images: int = 8,
    labels: tuple[str, ...] = ("0", "1"),
    held_out: tuple[int, ...] = (),
) -> tpb.TrainerServiceTrainResponse:
    dataset = S.DatasetFingerprint(
        label_names=labels, images_per_label=[5] * len(labels), image_size=[8, 8],
        sha256=hashlib.sha256(b"data").hexdigest(), validation_images_per_label=held_out,
    )  # fmt: skip
    return tpb.TrainerServiceTrainResponse(
        started=tpb.TrainStarted(
            first_epoch=first,
            train_images=images,
            device="cpu",
            dataset=dataset,
            validation_images=sum(held_out),
        )
    )


def epoch(n: int, loss: float = 1.0, **fields: float) -> tpb.TrainerServiceTrainResponse:
    return tpb.TrainerServiceTrainResponse(
        epoch=S.EpochMetrics(epoch=n, loss=loss, learning_rate=0.1, **fields)
    )


def chunks(kind: str, data: bytes, epoch: int, **override: Any) -> list[Any]:
    digest = override.pop("sha256", hashlib.sha256(data).hexdigest())
    total = override.pop("total_size", len(data))
    pieces = []
    for offset in range(0, max(len(data), 1), 1000):
        last = offset + 1000 >= len(data)
        chunk = tpb.ArtifactChunk(
            epoch=epoch, offset=offset, data=data[offset : offset + 1000], total_size=total,
            sha256=digest if last else "",
        )  # fmt: skip
        pieces.append(tpb.TrainerServiceTrainResponse(**{kind: chunk}))
    return pieces


def finished(outcome: int = tpb.TRAIN_OUTCOME_COMPLETED) -> tpb.TrainerServiceTrainResponse:
    return tpb.TrainerServiceTrainResponse(finished=tpb.TrainFinished(outcome=outcome))


def honest() -> list[Any]:
    return [
        started(),
        epoch(1),
        *chunks("checkpoint", b"c" * 1500, 1),
        epoch(2),
        epoch(3),
        *chunks("weights", b"w" * 2500, 3),
        finished(),
    ]


def run(gateway: GatewayThread, fake: FakeTrainer, address: str, name: str) -> S.Attempt:
    credential = register(gateway, address)
    with gateway.channel() as channel:
        stub = attempt_service_pb2_grpc.AttemptServiceStub(channel)
        stub.Train(
            pb.TrainRequest(name=name, command=lenet_command(n_epoch=3, label_names=["0", "1"]))
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            attempt = stub.GetAttempt(pb.GetAttemptRequest(name=name)).attempt
            if attempt.status in (S.ATTEMPT_STATUS_FAILED, S.ATTEMPT_STATUS_TRAINED):
                # The gateway called with the credential it gave at registration, only.
                assert fake.credentials[-1] == f"Bearer {credential}"
                return attempt  # type: ignore[no-any-return]
            time.sleep(0.1)
    raise AssertionError(f"{name} did not end: {attempt}")


def stored(gateway: GatewayThread, name: str) -> tuple[list[int], list[tuple[str, int]], Any]:
    with psycopg.connect(gateway.database_url) as conn:
        epochs = [
            r[0]
            for r in conn.execute(
                "SELECT epoch FROM attempt_epochs e JOIN attempts a ON a.id = e.attempt_id"
                " WHERE a.name = %s ORDER BY epoch",
                (name,),
            )
        ]
        files = conn.execute(
            "SELECT kind, sum(length(data)) FROM artifacts r JOIN attempts a ON a.id ="
            " r.attempt_id WHERE a.name = %s GROUP BY kind ORDER BY kind",
            (name,),
        ).fetchall()
        quarantine = conn.execute("SELECT quarantine_reason FROM trainers").fetchone()
    return epochs, [(k, int(n)) for k, n in files], quarantine[0] if quarantine else None


LIES: dict[str, tuple[Script, str, list[int]]] = {
    "epoch 999 of a 3-epoch run": (
        lambda r: [started(), epoch(999), finished()],
        "sent epoch 999 of a 3-epoch run",
        [],
    ),
    "an epoch twice": (
        lambda r: [started(), epoch(1), epoch(1), finished()],
        "sent epoch 1; expected 2",
        [1],
    ),
    "an epoch skipped": (lambda r: [started(), epoch(2)], "sent epoch 2; expected 1", []),
    "an epoch before started": (lambda r: [epoch(1)], "before `started`", []),
    "a start at another epoch": (lambda r: [started(first=3)], "started at epoch 3", []),
    "more images than there are": (
        lambda r: [started(images=1_000_000)],
        "claims 1000000 images; the task has 10",
        [],
    ),
    "accuracy 42": (
        lambda r: [started(), epoch(1, val_accuracy=42.0)],
        "validation accuracy 42",
        [],
    ),
    "negative seconds": (lambda r: [started(), epoch(1, seconds=-5)], "seconds -5", []),
    "an oversized file": (
        lambda r: [
            started(),
            epoch(1),
            *chunks("checkpoint", b"x" * 10, 1, total_size=MAX_ARTIFACT + 1),
        ],
        f"checkpoint of {MAX_ARTIFACT + 1} bytes",
        [1],
    ),
    "more data than announced": (
        lambda r: [started(), epoch(1), *chunks("checkpoint", b"x" * 3000, 1, total_size=2000)],
        "chunk at offset 2000",
        [1],
    ),
    "a damaged file": (
        lambda r: [started(), epoch(1), *chunks("checkpoint", b"x" * 3000, 1, sha256="0" * 64)],
        "does not match its sha256",
        [1],
    ),
    "a checkpoint from the future": (
        lambda r: [started(), epoch(1), *chunks("checkpoint", b"x" * 30, 7)],
        "checkpoint of epoch 7",
        [1],
    ),
    "weights before the last epoch": (
        lambda r: [started(), epoch(1), *chunks("weights", b"w" * 30, 3)],
        "weights of epoch 3 after epoch 1",
        [1],
    ),
    "completed without weights": (
        lambda r: [started(), epoch(1), epoch(2), epoch(3), finished()],
        "without verified weights",
        [1, 2, 3],
    ),
    "a dataset of other labels": (
        lambda r: [started(labels=("0", "1", "secret"))],
        "other labels than the command's",
        [],
    ),
    # Chance is the largest class's share of the validation split: a trainer that could
    # claim any split could make every run look stuck, or none.
    "a validation split of other images": (
        lambda r: [started(held_out=(2, 0, 0))],
        "validation counts [2, 0, 0]",
        [],
    ),
    "a validation split larger than its label": (
        lambda r: [started(images=2, held_out=(6, 0))],
        "validation counts [6, 0]",
        [],
    ),
    "a checkpoint older than the last": (
        lambda r: [
            started(),
            epoch(1),
            epoch(2),
            *chunks("checkpoint", b"c" * 10, 2),
            *chunks("checkpoint", b"c" * 10, 1),
        ],
        "checkpoint of epoch 1",
        [1, 2],
    ),
    "the same checkpoint forever": (
        lambda r: (
            [started(), epoch(1)] + [c for _ in range(6) for c in chunks("checkpoint", b"c", 1)]
        ),
        "sent 6 checkpoint files",
        [1],
    ),
    "completed early": (
        lambda r: [started(), epoch(1), finished()],
        "finished after epoch 1 of 3",
        [1],
    ),
}


KEPT_FILES = {
    "a checkpoint older than the last": [("checkpoint", 10)],
    "the same checkpoint forever": [("checkpoint", 1)],
}


@pytest.mark.parametrize("lie", list(LIES))
def test_a_lying_trainer_fails_its_run_and_nothing_impossible_is_stored(liars, lie) -> None:
    gateway, fake, address = liars
    script, reason, kept = LIES[lie]
    fake.train_script = script
    name = f"lie-{abs(hash(lie)) % 10**8}"
    attempt = run(gateway, fake, address, name)
    assert attempt.status == S.ATTEMPT_STATUS_FAILED
    assert "sent an impossible result" in attempt.error and reason in attempt.error, attempt.error
    epochs, files, quarantine = stored(gateway, name)
    assert epochs == kept
    # No checkpoint, no weights, no half upload: only a file verified before the lie.
    assert files == KEPT_FILES.get(lie, [])
    assert quarantine  # the trainer gets no more work for a while
    assert not attempt.HasField("model_artifact")


def test_a_nan_loss_is_divergence_not_a_lie(liars) -> None:
    gateway, fake, address = liars
    fake.train_script = lambda r: [started(), epoch(1), epoch(2, loss=float("nan"))]
    attempt = run(gateway, fake, address, "nan-loss")
    assert attempt.status == S.ATTEMPT_STATUS_FAILED and attempt.error.startswith("diverged")
    epochs, files, quarantine = stored(gateway, "nan-loss")
    assert epochs == [1] and files == [] and quarantine == ""


def test_an_honest_run_is_stored_and_a_lying_test_is_not(liars) -> None:
    gateway, fake, address = liars
    fake.train_script = lambda r: honest()
    attempt = run(gateway, fake, address, "honest")
    assert attempt.status == S.ATTEMPT_STATUS_TRAINED, attempt.error
    assert attempt.model_artifact.size_bytes == 2500
    assert stored(gateway, "honest")[:2] == ([1, 2, 3], [("checkpoint", 1500), ("weights", 2500)])

    def lying_test(request: Any) -> list[tpb.TrainerServiceTestResponse]:
        # Named, not sent: read from the gateway with the trainer's own token and reader.
        with gateway.channel("trainer") as channel:
            assert run_files.read(channel, request.weights, "weights", 30) == b"w" * 2500
        return [
            tpb.TrainerServiceTestResponse(progress=tpb.TestProgress(done=2, total=2)),
            tpb.TrainerServiceTestResponse(
                result=S.TestResult(accuracy=42.0, images=2, confusion_matrix=[1, 0, 0, 1])
            ),
        ]

    fake.test_script = lying_test
    register(gateway, address)
    with gateway.channel() as channel:
        stub = attempt_service_pb2_grpc.AttemptServiceStub(channel)
        stub.Test(pb.TestRequest(name="honest"))
        for _ in range(300):
            tested = stub.GetAttempt(pb.GetAttemptRequest(name="honest")).attempt
            if tested.status == S.ATTEMPT_STATUS_FAILED:
                break
            time.sleep(0.1)
    assert tested.status == S.ATTEMPT_STATUS_FAILED and "accuracy 42" in tested.error
    assert tested.accuracy == 0 and not tested.HasField("test_result")
    # Its weights are kept: the attempt can be tested again on an honest trainer.
    assert ("weights", 2500) in stored(gateway, "honest")[1]


def test_with_restarts_left_the_run_is_requeued_with_its_reason_and_the_liar_benched(
    postgres_url: str,
) -> None:
    """The default: a lie counts as one crash of the run; the attempt waits, QUEUED, for
    an honest trainer, saying why; the lying trainer gets no more work."""
    url = fresh_database(postgres_url, "requeue")
    gateway = GatewayThread(url, GatewayConfig(listen="127.0.0.1:0", database_url=url)).start()
    fake = FakeTrainer()
    fake.train_script = lambda r: [started(labels=("0",)), epoch(999)]
    server = grpc.server(futures.ThreadPoolExecutor(2))
    trainer_service_pb2_grpc.add_TrainerServiceServicer_to_server(fake, server)
    address = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    server.start()
    try:
        with gateway.channel() as channel:
            dataset_service_pb2_grpc.DatasetServiceStub(channel).UploadImages(
                iter(
                    dataset_service_pb2.UploadImagesRequest(label="0", data=png((i, 1, 1)))
                    for i in range(10)
                )
            )
            register(gateway, address)
            stub = attempt_service_pb2_grpc.AttemptServiceStub(channel)
            stub.Train(
                pb.TrainRequest(name="victim", command=lenet_command(n_epoch=3, label_names=["0"]))
            )
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                attempt = stub.GetAttempt(pb.GetAttemptRequest(name="victim")).attempt
                if attempt.error:
                    break
                time.sleep(0.1)
            assert attempt.status == S.ATTEMPT_STATUS_QUEUED
            assert (
                attempt.error.startswith("restart 1 of 3: trainer ")
                and "epoch 999" in attempt.error
            )
            time.sleep(3)  # the dispatcher looks at the queue every second
            again = stub.GetAttempt(pb.GetAttemptRequest(name="victim")).attempt
            assert again.status == S.ATTEMPT_STATUS_QUEUED and again.restart_count == 1
            assert len(fake.credentials) == 1  # called once, then benched
            assert stored(gateway, "victim")[0] == []
    finally:
        server.stop(1)
        gateway.stop()


def test_watchers_get_the_same_epochs_encoded_once_or_each_on_their_own(liars) -> None:
    """The hub encodes each epoch's WatchAttemptResponse once for all of a replica's
    watchers; what they receive is what they would have encoded themselves."""
    import queue
    import threading

    gateway, fake, address = liars
    hub = gateway.background.hub
    encode = hub.encode_epoch
    assert encode is not None
    seen: dict[str, list[bytes]] = {}
    try:
        for label, encoder in (("once", encode), ("each", None)):
            hub.encode_epoch = encoder
            cue: queue.Queue[int] = queue.Queue()

            def script(request: Any, cue: queue.Queue[int] = cue) -> Iterator[Any]:
                yield started()
                for n in (1, 2, 3):
                    cue.get(timeout=30)
                    yield epoch(n, loss=1.0 / n, val_loss=0.5, val_accuracy=0.25 * n)
                yield from chunks("weights", b"w" * 2500, 3)
                yield finished()

            fake.train_script = script
            register(gateway, address)
            got: list[bytes] = []
            with gateway.channel() as channel:
                stub = attempt_service_pb2_grpc.AttemptServiceStub(channel)
                name = f"watched-{label}"
                stub.Train(pb.TrainRequest(name=name, command=lenet_command(
                    n_epoch=3, label_names=["0", "1"])))  # fmt: skip

                def watch(stub: Any = stub, name: str = name, got: list[bytes] = got) -> None:
                    for event in stub.WatchAttempt(pb.WatchAttemptRequest(name=name)):
                        if event.WhichOneof("event") == "epoch":
                            got.append(event.epoch.SerializeToString())

                watcher = threading.Thread(target=watch)
                watcher.start()
                time.sleep(1.0)  # subscribed before the first epoch
                for n in (1, 2, 3):
                    cue.put(n)
                    time.sleep(0.2)
                watcher.join(30)
            seen[label] = got
    finally:
        hub.encode_epoch = encode
    assert len(seen["once"]) == 3 and seen["once"] == seen["each"]


def test_a_run_nobody_watches_costs_its_replica_no_read_of_its_epochs(liars) -> None:
    """The dispatcher hears of its run's statuses alone (a cancellation): the hub reads
    an epoch back from the database only for a watcher that wants it."""
    gateway, fake, address = liars
    store = gateway.background.hub._attempts
    reads: list[int] = []
    real = store.epochs_after

    async def counted(attempt_id: int, *args: Any) -> Any:
        reads.append(attempt_id)
        return await real(attempt_id, *args)

    fake.train_script = lambda request: honest()
    store.epochs_after = counted
    try:
        attempt = run(gateway, fake, address, "unwatched")
    finally:
        del store.epochs_after
    assert attempt.status == S.ATTEMPT_STATUS_TRAINED, attempt.error
    assert attempt.current_epoch == 3 and reads == []


def test_an_epoch_stored_here_reaches_watchers_here_once_whichever_is_heard_first(
    liars,
) -> None:
    """The dispatcher hands the hub each epoch it stored; the epoch's notification then
    reads nothing back. Heard the other way round (the notification first), the hub reads
    it as for any replica and the dispatcher's hand-over adds nothing."""
    import asyncio

    from gateway.store.work import EVENTS

    gateway, fake, address = liars
    fake.train_script = lambda request: honest()
    attempt = run(gateway, fake, address, "told-here")
    hub = gateway.background.hub
    store = hub._attempts
    wires = [gateway.run(store.epochs_after(attempt.id, n - 1, n)) for n in (1, 2)]
    reads: list[tuple[Any, ...]] = []
    real = store.epochs_after

    async def counted(*args: Any) -> Any:
        reads.append(args)
        return await real(*args)

    def notify(epoch: int) -> None:
        payload = f'{{"id": {attempt.id}, "kind": "epoch", "epoch": {epoch}}}'
        with psycopg.connect(gateway.database_url, autocommit=True) as conn:
            conn.execute("SELECT pg_notify(%s, %s)", (EVENTS, payload))

    async def scenario() -> list[tuple[int, bytes]]:
        got: list[tuple[int, bytes]] = []
        with hub.subscribe(attempt.id) as events, hub.running_here(attempt.id):
            hub.stored_epoch(attempt.id, 1, wires[0])  # stored here: handed out at once
            first = events.get_nowait()
            got.append((first.epoch, first.payload))
            await asyncio.to_thread(notify, 1)  # its notification: nothing more
            await asyncio.to_thread(notify, 2)  # heard first: read back and handed out
            event = await asyncio.wait_for(events.get(), 10)
            got.append((event.epoch, event.payload))
            hub.stored_epoch(attempt.id, 2, wires[1])  # then stored here: nothing more
            await asyncio.sleep(0.3)
            while not events.empty():
                extra = events.get_nowait()
                got.append((extra.epoch, extra.payload))
        return got

    store.epochs_after = counted
    try:
        got = gateway.run(scenario())
    finally:
        del store.epochs_after
    assert [epoch for epoch, _ in got] == [1, 2]
    assert [wire for _, wire in got] == wires
    assert reads == [(attempt.id, 1, 2)]  # epoch 2 alone was read back


def test_files_of_one_chunk_are_stored_whole_and_replace_the_last(liars) -> None:
    """A file of one chunk is stored and committed in one transaction: the newer
    checkpoint replaces the older, and no unfinished upload is left behind."""
    gateway, fake, address = liars
    fake.train_script = lambda r: [
        started(),
        epoch(1),
        *chunks("checkpoint", b"a" * 700, 1),
        epoch(2),
        *chunks("checkpoint", b"b" * 800, 2),
        epoch(3),
        *chunks("weights", b"w" * 900, 3),
        finished(),
    ]
    attempt = run(gateway, fake, address, "one-chunk")
    assert attempt.status == S.ATTEMPT_STATUS_TRAINED, attempt.error
    assert stored(gateway, "one-chunk")[:2] == ([1, 2, 3], [("checkpoint", 800), ("weights", 900)])
    with psycopg.connect(gateway.database_url) as conn:
        row = conn.execute(
            "SELECT r.epoch, r.data FROM artifacts r JOIN attempts a ON a.id = r.attempt_id"
            " WHERE a.name = 'one-chunk' AND kind = 'checkpoint'"
        ).fetchone()
    assert row is not None and (row[0], bytes(row[1])) == (2, b"b" * 800)
