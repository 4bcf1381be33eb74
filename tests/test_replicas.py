"""Reads on a streaming replica (issue 30, gateway/replicas/): a real replica made from
the embedded PostgreSQL's binaries (`pg_basebackup`), replaying the primary's WAL.

Whether a read went to the replica is seen by pausing its replay: what was written since
is then on the primary only. The writer still reads its own write (read-your-writes), a
watch's snapshot has everything committed when it began, and another caller's plain read
may lag until the replica replays again; a replica that goes away leaves the reads to
the primary."""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import psycopg
import pytest

from gateway.config import GatewayConfig
from gateway.embedded import EmbeddedPostgres
from gateway.inprocess import GatewayThread
from metalearn.v1 import attempt_service_pb2 as pb
from metalearn.v1 import attempt_service_pb2_grpc
from tests.test_attempts import make_attempt

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def servers(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, str, EmbeddedPostgres]]:
    home = tmp_path_factory.mktemp("replication")
    primary = EmbeddedPostgres(home / "primary")
    primary_url = primary.start()
    replica = primary.replica(home / "replica")
    try:
        replica_url = replica.start()
        yield primary_url, replica_url, replica
    finally:
        replica.stop()
        primary.stop()


@pytest.fixture(scope="module")
def gateway(servers: tuple[str, str, EmbeddedPostgres]) -> Iterator[GatewayThread]:
    primary_url, replica_url, _ = servers
    config = GatewayConfig(
        listen="127.0.0.1:0", database_url=primary_url, read_database_urls=(replica_url,)
    )
    server = GatewayThread(primary_url, config).start()
    try:
        yield server
    finally:
        server.stop()


def _replay(replica_url: str, paused: bool) -> None:
    with psycopg.connect(replica_url, autocommit=True) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
        conn.execute("SELECT pg_wal_replay_pause()" if paused else "SELECT pg_wal_replay_resume()")


def _until(check, what: str, seconds: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def _found(stub: attempt_service_pb2_grpc.AttemptServiceStub, name: str) -> bool:
    try:
        stub.GetAttempt(pb.GetAttemptRequest(name=name))
        return True
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.NOT_FOUND, err
        return False


def test_a_writer_reads_its_writes_while_others_read_the_replica(
    gateway: GatewayThread, servers: tuple[str, str, EmbeddedPostgres]
) -> None:
    primary_url, replica_url, _ = servers
    with psycopg.connect(primary_url) as conn:  # it streams from the primary
        state = conn.execute("SELECT state FROM pg_stat_replication").fetchall()
    assert state == [("streaming",)]
    ann = gateway.make_token("ann", "writer")
    bob = gateway.make_token("bob", "reader")
    with gateway.channel(ann) as a, gateway.channel(bob) as b:
        writer = attempt_service_pb2_grpc.AttemptServiceStub(a)
        reader = attempt_service_pb2_grpc.AttemptServiceStub(b)
        writer.CreateAttempt(pb.CreateAttemptRequest(attempt=make_attempt("before")))
        _until(lambda: _found(reader, "before"), "the replica replays the first write")
        _replay(replica_url, paused=True)
        try:
            writer.CreateAttempt(pb.CreateAttemptRequest(attempt=make_attempt("during")))
            # The writer sees its write at once, in a get and in a list.
            assert writer.GetAttempt(pb.GetAttemptRequest(name="during")).attempt.name == "during"
            listed = writer.ListAttempts(pb.ListAttemptsRequest(page_size=10))
            assert sorted(x.name for x in listed.attempts) == ["before", "during"]
            # Another caller's reads go to the replica, which has not replayed it yet.
            assert not _found(reader, "during")
            listed = reader.ListAttempts(pb.ListAttemptsRequest(page_size=10))
            assert [x.name for x in listed.attempts] == ["before"]
            # A watch's snapshot holds everything committed when it began (the paused
            # replica is passed over for it).
            watch = reader.WatchAttempt(pb.WatchAttemptRequest(name="during"), timeout=10)
            first = next(iter(watch))
            assert first.snapshot.name == "during"
            watch.cancel()
        finally:
            _replay(replica_url, paused=False)
        _until(lambda: _found(reader, "during"), "the replica replays once resumed")


def test_reads_go_to_the_primary_when_the_replica_is_gone(
    gateway: GatewayThread, servers: tuple[str, str, EmbeddedPostgres]
) -> None:
    _, _, replica = servers
    with gateway.channel() as channel:
        stub = attempt_service_pb2_grpc.AttemptServiceStub(channel)
        stub.CreateAttempt(pb.CreateAttemptRequest(attempt=make_attempt("while-up")))
        replica.stop()

        def answered() -> bool:
            try:
                return stub.GetAttempt(pb.GetAttemptRequest(name="while-up")).attempt.name != ""
            except grpc.RpcError as err:  # the read that met it going: UNAVAILABLE, once
                assert err.code() == grpc.StatusCode.UNAVAILABLE, err
                return False

        _until(answered, "reads go to the primary once the replica is known gone")
        for _ in range(5):
            assert answered()
