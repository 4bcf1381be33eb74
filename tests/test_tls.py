"""TLS on the gateway's port and on the channels between gateway and trainers.

Certificates come from `metalearn.tls.make_pki` (the `cryptography` package), as
`metalearn certs` makes them.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from gateway.config import GatewayConfig
from metalearn import Client
from metalearn.client import UnauthenticatedError, UnavailableError
from metalearn.credentials import open_channel
from metalearn.tls import ClientTls, Pki, ServerTls, make_pki
from metalearn.v1 import attempt_pb2, dataset_service_pb2, dataset_service_pb2_grpc
from tests.harness import GatewayThread, fresh_database
from tests.test_orchestration import METALEARN
from tests.trainer_harness import lenet_command


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_gateway(postgres_url: str, pki: Pki) -> Iterator[GatewayThread]:
    """A gateway that serves TLS, requires client certificates signed by its CA (mutual
    TLS), and calls its trainers over mutual TLS too."""
    url = fresh_database(postgres_url, "tls")
    config = GatewayConfig(
        listen="127.0.0.1:0",
        database_url=url,
        tls=ServerTls(pki.cert, pki.key, client_ca=pki.ca),
        trainer_tls=ClientTls(pki.ca, pki.cert, pki.key),
    )
    gateway = GatewayThread(url, config)
    gateway.client_tls = ClientTls(pki.ca, pki.cert, pki.key)
    gateway.start()
    try:
        yield gateway
    finally:
        gateway.stop()


def labels(channel: grpc.Channel) -> list[str]:
    stub = dataset_service_pb2_grpc.DatasetServiceStub(channel)
    reply = stub.ListLabels(dataset_service_pb2.ListLabelsRequest(), timeout=5)
    return [label.name for label in reply.labels]


def test_plaintext_is_refused_and_tls_with_a_token_works(tls_gateway, pki, tmp_path) -> None:
    address = tls_gateway.address
    with tls_gateway.channel() as channel:
        assert labels(channel) == []
    # Plaintext: the TLS port does not speak it.
    with (
        open_channel(address, tls_gateway.admin_token) as channel,
        pytest.raises(grpc.RpcError) as err,
    ):
        labels(channel)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    # TLS without a client certificate: mutual TLS refuses the handshake.
    with (
        open_channel(address, tls_gateway.admin_token, ClientTls(pki.ca)) as channel,
        pytest.raises(grpc.RpcError) as err,
    ):
        labels(channel)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    # A server certificate from another CA is not trusted.
    stranger = make_pki(tmp_path / "other")
    with (
        open_channel(
            address, tls_gateway.admin_token, ClientTls(stranger.ca, pki.cert, pki.key)
        ) as channel,
        pytest.raises(grpc.RpcError) as err,
    ):
        labels(channel)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    # TLS is not a credential: the token is still needed.
    tls = ClientTls(pki.ca, pki.cert, pki.key)
    with Client(address, token="mlt_wrong", tls=tls) as client, pytest.raises(UnauthenticatedError):
        client.labels()
    with Client(address, token=tls_gateway.admin_token, tls=tls) as client:
        assert client.labels() == {}
    with (
        Client(address, token=tls_gateway.admin_token, timeout=5) as client,
        pytest.raises(UnavailableError),
    ):
        client.labels()


@pytest.mark.slow
def test_a_trainer_over_mutual_tls_trains_and_a_plaintext_cli_is_refused(
    tls_gateway, pki, tmp_path: Path
) -> None:
    from metalearn import digits

    tls_flags = ["--tls-cert", str(pki.cert), "--tls-key", str(pki.key), "--tls-ca", str(pki.ca)]
    log = (tmp_path / "trainer.log").open("w")
    trainer = subprocess.Popen(
        [*METALEARN, "trainer", "--listen", "127.0.0.1:0", "--gateway", tls_gateway.address,
         "--cache-dir", str(tmp_path / "cache"), *tls_flags, "--tls-client-auth"],
        stdout=subprocess.PIPE, stderr=log, text=True,
        env={**os.environ, "METALEARN_TOKEN": tls_gateway.trainer_token},
    )  # fmt: skip
    try:
        assert trainer.stdout is not None
        line = trainer.stdout.readline()
        assert "listening on" in line, (tmp_path / "trainer.log").read_text()
        trainer_address = line.rsplit(" ", 1)[-1].strip()
        # The trainer's own port: TLS with client certificates, and the gateway's
        # credential besides. A TLS client with the CA's certificate but no credential:
        with open_channel(trainer_address, None, ClientTls(pki.ca, pki.cert, pki.key)) as channel:
            from metalearn.v1 import trainer_service_pb2, trainer_service_pb2_grpc

            stub = trainer_service_pb2_grpc.TrainerServiceStub(channel)
            with pytest.raises(grpc.RpcError) as err:
                stub.GetTrainerInfo(trainer_service_pb2.GetTrainerInfoRequest(), timeout=5)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        tls = ClientTls(pki.ca, pki.cert, pki.key)
        with Client(tls_gateway.address, token=tls_gateway.admin_token, tls=tls) as client:
            client.upload_images(digits.digit_uploads())
            client.train("over-tls", lenet_command(n_epoch=2))
            done = client.wait("over-tls")
            assert done.status == attempt_pb2.ATTEMPT_STATUS_TRAINED, done.error
        # The CLI with --tls-ca (and its certificate), and without.
        cli_tls = [*tls_flags, "--gateway", tls_gateway.address, "--token", tls_gateway.admin_token]
        shown = subprocess.run(
            [*METALEARN, "attempts", "get", "over-tls", *cli_tls],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert shown.returncode == 0 and "over-tls" in shown.stdout, shown.stderr
        started = time.monotonic()
        refused = subprocess.run(
            [*METALEARN, "attempts", "get", "over-tls", "--gateway", tls_gateway.address,
             "--token", tls_gateway.admin_token],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert refused.returncode == 1 and "UNAVAILABLE" in refused.stderr
        assert time.monotonic() - started < 45
    finally:
        trainer.terminate()
        trainer.wait(60)
