"""Trainer identity (issue 25, finding 6 and "trainer credentials stored in clear").

- A quarantine follows the principal (the trainer token), not the address: a liar that
  registers again at another port gets no work until it ends; other principals do.
- A planted or unreadable checkpoint is the lie of whoever stored it: that principal is
  quarantined, the checkpoint and its epochs are dropped, and the victim is trained
  again from scratch, uncounted, on an honest trainer.
- The credential the gateway presents to a trainer is never stored: the database keeps
  a salt and a key's fingerprint; replicas with the same key make the same credential.

Fake trainers (real gRPC servers, scripted streams) face a real gateway and PostgreSQL.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest

from gateway.config import GatewayConfig
from gateway.store import migrate
from gateway.store.database import _migrations
from gateway.store.trainers import TrainerStore
from gateway.trainers.credentials import CredentialKey, process_key
from metalearn import errors
from metalearn.status import translate_errors
from metalearn.v1 import (
    attempt_pb2,
    attempt_service_pb2_grpc,
    trainer_registry_service_pb2,
    trainer_registry_service_pb2_grpc,
    trainer_service_pb2,
    trainer_service_pb2_grpc,
)
from metalearn.v1 import attempt_service_pb2 as pb
from tests.harness import GatewayThread, fresh_database, unregister
from tests.test_lying_trainer import chunks, epoch, finished, five_images_each, honest, started
from tests.trainer_harness import lenet_command
from trainer import run_files
from trainer.artifacts import read_checkpoint

S = attempt_pb2
tpb = trainer_service_pb2
Script = Callable[[Any], list[Any]]


class Fake(trainer_service_pb2_grpc.TrainerServiceServicer):
    """A trainer that streams what the test scripts, one script per call (the last one
    again once they run out); notes each call's request and credential."""

    def __init__(self, *scripts: Script) -> None:
        self.scripts = list(scripts)
        self.requests: list[Any] = []
        self.credentials: list[str] = []

    @translate_errors
    def Train(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        self.requests.append(request)
        self.credentials += [v for k, v in context.invocation_metadata() if k == "authorization"]
        script = self.scripts[min(len(self.requests), len(self.scripts)) - 1]
        yield from script(request)


class Served:
    """A fake trainer's gRPC server on a port of its own."""

    def __init__(self, fake: Fake) -> None:
        self.fake = fake
        self.server = grpc.server(futures.ThreadPoolExecutor(4))
        trainer_service_pb2_grpc.add_TrainerServiceServicer_to_server(fake, self.server)
        self.address = f"127.0.0.1:{self.server.add_insecure_port('127.0.0.1:0')}"
        self.server.start()

    def register(self, gateway: GatewayThread, token: str) -> str:
        with gateway.channel(token) as channel:
            reply = trainer_registry_service_pb2_grpc.TrainerRegistryServiceStub(
                channel
            ).RegisterTrainer(
                trainer_registry_service_pb2.RegisterTrainerRequest(
                    address=self.address, capacity=1
                )
            )
        return str(reply.gateway_credential)

    def stop(self) -> None:
        self.server.stop(0)


@pytest.fixture
def gateway(postgres_url: str) -> Iterator[GatewayThread]:
    """A gateway on a database of its own: its dispatcher alone hands out work there."""
    url = fresh_database(postgres_url, "identity")
    gateway = GatewayThread(url, GatewayConfig(listen="127.0.0.1:0", database_url=url)).start()
    five_images_each(gateway)
    try:
        yield gateway
    finally:
        gateway.stop()


def train(gateway: GatewayThread, name: str) -> None:
    with gateway.channel() as channel:
        attempt_service_pb2_grpc.AttemptServiceStub(channel).Train(
            pb.TrainRequest(name=name, command=lenet_command(n_epoch=3, label_names=["0", "1"]))
        )


def get(gateway: GatewayThread, name: str) -> S.Attempt:
    with gateway.channel() as channel:
        return (
            attempt_service_pb2_grpc.AttemptServiceStub(channel)
            .GetAttempt(  # type: ignore[no-any-return]
                pb.GetAttemptRequest(name=name)
            )
            .attempt
        )


def wait_until(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {seconds}s for {what}")
        time.sleep(0.1)


def quarantines(gateway: GatewayThread) -> dict[str, str]:
    with psycopg.connect(gateway.database_url) as conn:
        rows = conn.execute(
            "SELECT principal, reason FROM trainer_quarantines WHERE until > now()"
        ).fetchall()
    return {str(p): str(r) for p, r in rows}


def test_a_quarantine_follows_the_token_to_another_port(gateway: GatewayThread) -> None:
    """A liar registered again at another port gets no work; a trainer of another
    principal does, meanwhile; once an admin lifts the quarantine the liar's token works
    again."""
    liar_token = gateway.make_token("liar", "trainer")
    liar = Served(Fake(lambda r: [started(), epoch(999)]))
    again = Served(Fake(lambda r: honest()))
    other = Served(Fake(lambda r: honest()))
    try:
        liar.register(gateway, liar_token)
        train(gateway, "first")
        wait_until(lambda: bool(get(gateway, "first").error), 30, "the lie to be noticed")
        assert "epoch 999" in quarantines(gateway)["liar"]
        unregister(gateway.database_url, liar.address)
        # The same token at another port: registered, heartbeats answered, no work.
        again.register(gateway, liar_token)
        with gateway.channel(liar_token) as channel:
            trainer_registry_service_pb2_grpc.TrainerRegistryServiceStub(channel).Heartbeat(
                trainer_registry_service_pb2.HeartbeatRequest(address=again.address)
            )
        time.sleep(3)  # the dispatcher looks every second
        assert again.fake.requests == []
        assert get(gateway, "first").status == S.ATTEMPT_STATUS_QUEUED
        # Another principal's trainer is not benched by the liar.
        other.register(gateway, gateway.make_token("honest", "trainer"))
        wait_until(
            lambda: get(gateway, "first").status == S.ATTEMPT_STATUS_TRAINED, 30, "an honest run"
        )
        assert len(other.fake.requests) == 1 and again.fake.requests == []
        # Lifted by an admin: the liar's trainers get work again.
        unregister(gateway.database_url, other.address)
        store = gateway.background.dispatcher._trainers
        assert [q.principal for q in gateway.run(store.quarantines())] == ["liar"]
        assert gateway.run(store.lift_quarantine("liar"))
        again.register(gateway, liar_token)  # heard from lately
        train(gateway, "second")
        wait_until(lambda: get(gateway, "second").status == S.ATTEMPT_STATUS_TRAINED, 30, "the run")
        assert len(again.fake.requests) == 1
        assert gateway.run(store.quarantines()) == []
    finally:
        for served in (liar, again, other):
            served.stop()


class Planted:
    """A pickle that runs a command when unpickled: what a liar would plant."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def gone(request: Any) -> list[Any]:
    raise errors.Unavailable("stopped")


def refusing(gateway: GatewayThread) -> Script:
    """What a real trainer does first: read the checkpoint it is to resume from (from
    the gateway, with the trainer token it registered with, through the trainer's own
    readers: one checks size and sha256, the other refuses pickles), then train."""

    def script(request: Any) -> list[Any]:
        if request.HasField("resume_checkpoint"):
            with gateway.channel("trainer") as channel:
                data = run_files.read(channel, request.resume_checkpoint, "resume_checkpoint", 30)
            read_checkpoint(data)  # InvalidArgument on resume_checkpoint
        return honest()

    return script


@pytest.mark.parametrize("planted", ["pickle", "garbage"])
def test_a_planted_checkpoint_is_its_makers_lie_and_the_run_trains_again(
    gateway: GatewayThread, tmp_path: Path, planted: str
) -> None:
    """A liar stores a pickle (or garbage) as the checkpoint and hands the run back
    (INTERRUPTED). The honest trainer given it refuses it: the liar's principal is
    quarantined, the checkpoint and the liar's epochs are dropped, and the run is
    trained again from scratch on the honest trainer, with no restart counted."""
    marker = tmp_path / "unpickled"
    bad = pickle.dumps(Planted(marker)) if planted == "pickle" else os.urandom(3000)
    liar = Served(
        Fake(
            lambda r: [
                started(),
                epoch(1, loss=9.0),
                *chunks("checkpoint", bad, 1),
                finished(tpb.TRAIN_OUTCOME_INTERRUPTED),
            ],
            gone,  # then it is gone: the run waits for another trainer, uncounted
        )
    )
    honest_trainer = Served(Fake(refusing(gateway)))
    try:
        liar.register(gateway, gateway.make_token("planter", "trainer"))
        train(gateway, "victim")
        wait_until(lambda: len(liar.fake.requests) >= 1, 30, "the liar's run")
        wait_until(
            lambda: get(gateway, "victim").status == S.ATTEMPT_STATUS_QUEUED, 30, "the hand-back"
        )
        unregister(gateway.database_url, liar.address)
        with psycopg.connect(gateway.database_url) as conn:
            row = conn.execute(
                "SELECT stored_by FROM artifacts WHERE kind = 'checkpoint'"
            ).fetchone()
        assert row == ("planter",)  # who stored it is known before anyone reads it
        honest_trainer.register(gateway, "trainer")
        wait_until(
            lambda: (
                get(gateway, "victim").status in (S.ATTEMPT_STATUS_TRAINED, S.ATTEMPT_STATUS_FAILED)
            ),
            30,
            "the run to end",
        )
        victim = get(gateway, "victim")
        assert victim.status == S.ATTEMPT_STATUS_TRAINED, victim.error
        assert victim.restart_count == 0
        calls = honest_trainer.fake.requests
        # Refused once (handed the planted file), then trained from scratch.
        assert [c.HasField("resume_checkpoint") for c in calls] == [True, False]
        named = calls[0].resume_checkpoint
        assert (named.size, named.sha256) == (len(bad), hashlib.sha256(bad).hexdigest())
        benched = quarantines(gateway)
        assert list(benched) == ["planter"] and "refused" in benched["planter"]
        with psycopg.connect(gateway.database_url) as conn:
            losses = conn.execute(
                "SELECT epoch, loss FROM attempt_epochs ORDER BY epoch"
            ).fetchall()
            files = conn.execute(
                "SELECT kind, stored_by, sum(length(data)) FROM artifacts"
                " GROUP BY kind, stored_by ORDER BY kind"
            ).fetchall()
        # The liar's epoch 1 (loss 9) is gone: every epoch is the honest run's.
        assert losses == [(1, 1.0), (2, 1.0), (3, 1.0)]
        assert [(k, n) for k, _, n in files] == [("checkpoint", 1500), ("weights", 2500)]
        assert not marker.exists()  # nothing was unpickled anywhere
    finally:
        liar.stop()
        honest_trainer.stop()


def test_a_refused_checkpoint_of_unknown_origin_still_restarts_the_run(
    gateway: GatewayThread,
) -> None:
    """A checkpoint stored before anyone recorded who stored it: the run restarts from
    scratch all the same, and nobody is quarantined on a guess."""
    fake = Fake(refusing(gateway))
    served = Served(fake)
    try:
        train(gateway, "old")
        with psycopg.connect(gateway.database_url) as conn:
            conn.execute(
                "INSERT INTO artifacts (attempt_id, kind, epoch, chunk, data)"
                " SELECT id, 'checkpoint', 1, 0, %s FROM attempts WHERE name = 'old'",
                (b"not a checkpoint",),
            )
            conn.execute("UPDATE artifacts SET stored_by = ''")
        served.register(gateway, "trainer")
        wait_until(lambda: get(gateway, "old").status == S.ATTEMPT_STATUS_TRAINED, 30, "the run")
        assert [r.HasField("resume_checkpoint") for r in fake.requests] == [True, False]
        # Stored before hashes were kept: named by its size alone.
        assert fake.requests[0].resume_checkpoint.sha256 == ""
        assert quarantines(gateway) == {}
    finally:
        served.stop()


def test_a_trainer_credential_is_never_stored(gateway: GatewayThread) -> None:
    """The credential handed over at registration is nowhere in the database, yet the
    gateway presents exactly it; a second replica with the same key does too."""
    fake = Fake(lambda r: honest())
    served = Served(fake)
    try:
        credential = served.register(gateway, "trainer")
        assert len(credential) >= 43  # 256 bits
        with psycopg.connect(gateway.database_url) as conn:
            dump = conn.execute("SELECT t::text FROM trainers t").fetchall()
            salt, key = conn.execute(
                "SELECT credential_salt, credential_key FROM trainers"
            ).fetchone()
        assert credential not in str(dump)
        assert key == process_key().fingerprint and len(bytes(salt)) == 16
        train(gateway, "keyed")
        wait_until(lambda: get(gateway, "keyed").status == S.ATTEMPT_STATUS_TRAINED, 30, "the run")
        assert fake.credentials == [f"Bearer {credential}"]
        with (
            psycopg.connect(gateway.database_url) as conn,
            pytest.raises(psycopg.errors.CheckViolation),
        ):
            conn.execute("UPDATE trainers SET credential = %s", (credential,))
    finally:
        served.stop()


def test_replicas_without_the_key_leave_the_trainer_alone_and_it_registers_again(
    gateway: GatewayThread,
) -> None:
    """A replica of another key (not shared, or rotated) gives the trainer no work (it
    could not make its credential) and answers its heartbeat with "register again"."""
    served = Served(Fake(lambda r: honest()))
    try:
        served.register(gateway, "trainer")
        principal = gateway.run(_principal_of(gateway, served.address))
        pool = gateway.background.dispatcher._trainers._pool
        mine = gateway.background.dispatcher._trainers
        other = TrainerStore(pool, CredentialKey(b"another key of at least 32 characters"))
        assert [t.address for t in gateway.run(mine.live_trainers(10))] == [served.address]
        assert gateway.run(other.live_trainers(10)) == []
        assert gateway.run(mine.heartbeat(served.address, 0, principal))
        assert not gateway.run(other.heartbeat(served.address, 0, principal))
        with pytest.raises(errors.PermissionDenied):
            gateway.run(other.heartbeat(served.address, 0, "someone-else"))
        # Registering through the other replica moves the trainer to its key.
        credential = gateway.run(other.register(served.address, 1, [], "", principal, 10))
        assert [t.credential for t in gateway.run(other.live_trainers(10))] == [credential]
        assert gateway.run(mine.live_trainers(10)) == []
    finally:
        served.stop()


async def _principal_of(gateway: GatewayThread, address: str) -> str:
    store = gateway.background.dispatcher._trainers
    async with store._pool.connection() as conn:
        cur = await conn.execute("SELECT principal FROM trainers WHERE address = %s", (address,))
        row = await cur.fetchone()
    assert row is not None
    return str(row[0])


def test_a_key_is_made_from_enough_secret_and_the_same_secret_makes_the_same_key(
    tmp_path: Path,
) -> None:
    short, good = tmp_path / "short", tmp_path / "good"
    short.write_text("too short\n")
    good.write_text("k" * 40 + "\n")
    with pytest.raises(ValueError, match="at least 32"):
        CredentialKey.from_file(short)
    one, two = CredentialKey.from_file(good), CredentialKey(b"k" * 40)
    salt = CredentialKey.new_salt()
    assert one.fingerprint == two.fingerprint
    assert one.credential("h:1", salt) == two.credential("h:1", salt)
    assert one.credential("h:1", salt) != one.credential("h:2", salt)
    assert CredentialKey.random().fingerprint != one.fingerprint


def test_migration_drops_clear_credentials_and_keeps_quarantines_per_principal(
    postgres_url: str,
) -> None:
    """A database of the last version: its clear credentials are erased (such trainers
    register again at their next heartbeat) and an address's quarantine becomes its
    principal's."""
    import asyncio

    url = fresh_database(postgres_url, "identity_migration")
    with psycopg.connect(url) as conn:
        conn.execute(
            "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for version, name, text in _migrations():
            if version < 13:
                conn.execute(text.encode())
                conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                    (version, name),
                )
        conn.execute(
            "INSERT INTO trainers (address, capacity, principal, credential, quarantined_until,"
            " quarantine_reason) VALUES ('h:1', 1, 'bench', 'clear-secret', now() + interval"
            " '1 hour', 'sent epoch 999'), ('h:2', 1, 'fine', 'another-secret', NULL, '')"
        )
    asyncio.run(migrate(url))
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM trainers WHERE credential <> ''").fetchone() == (
            0,
        )
        assert conn.execute(
            "SELECT principal, address, reason FROM trainer_quarantines"
        ).fetchall() == [("bench", "h:1", "sent epoch 999")]
        assert conn.execute(
            "SELECT count(*) FROM trainers WHERE credential_salt IS NULL"
        ).fetchone() == (2,)
