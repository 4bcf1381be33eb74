"""The attack on an open gateway, replayed: tokens, roles, owners, trainers and decoding.

Every RPC of every service is called without a token (the list comes from the service
descriptors, so a new RPC cannot be forgotten); roles and ownership are checked call by
call; revocation and expiry take effect on the next call.
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
from collections.abc import Iterator
from typing import Any

import grpc
import psycopg
import pytest
from google.protobuf import struct_pb2

from gateway.server import SERVICES
from metalearn import Client
from metalearn.client import InvalidRequest, PermissionDeniedError, UnauthenticatedError
from metalearn.credentials import authorization
from metalearn.v1 import attempt_service_pb2 as pb
from metalearn.v1 import (
    attempt_service_pb2_grpc,
    dataset_service_pb2,
    dataset_service_pb2_grpc,
    token_service_pb2,
    token_service_pb2_grpc,
    trainer_registry_service_pb2,
    trainer_registry_service_pb2_grpc,
)
from tests.harness import GatewayThread, png, upload_labels
from tests.rpc import expect_error, violations
from tests.test_attempts import make_attempt
from tests.trainer_harness import lenet_command

CODE = grpc.StatusCode


def every_method() -> Iterator[Any]:
    for service in SERVICES:
        yield from service.methods


def call_raw(channel: grpc.Channel, method: Any, payload: bytes = b"") -> None:
    """Calls any RPC with a raw request; raises its error."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    kind = (method.client_streaming, method.server_streaming)
    ident = lambda b: b  # noqa: E731 - raw bytes both ways
    if kind == (False, False):
        channel.unary_unary(path, ident, ident)(payload, timeout=10)
    elif kind == (False, True):
        list(channel.unary_stream(path, ident, ident)(payload, timeout=10))
    elif kind == (True, False):
        channel.stream_unary(path, ident, ident)(iter([payload]), timeout=10)
    else:
        list(channel.stream_stream(path, ident, ident)(iter([payload]), timeout=10))


@pytest.mark.parametrize(
    "method", list(every_method()), ids=lambda m: f"{m.containing_service.name}.{m.name}"
)
@pytest.mark.parametrize("token", [None, "mlt_not-a-token", "Basic Zm9vOmJhcg=="])
def test_every_rpc_refuses_a_caller_without_a_valid_token(gateway, method, token) -> None:
    before = _table_counts(gateway.database_url)
    if token is not None and token.startswith("Basic"):
        channel = grpc.insecure_channel(gateway.address)
        err = expect_error(
            CODE.UNAUTHENTICATED,
            lambda: _call_with_metadata(channel, method, (("authorization", token),)),
        )
        channel.close()
    else:
        with gateway.channel(token) as channel:
            err = expect_error(CODE.UNAUTHENTICATED, call_raw, channel, method)
    assert "token" in (err.details() or "").lower() or "authorization" in (err.details() or "")
    assert _table_counts(gateway.database_url) == before


def _call_with_metadata(channel: grpc.Channel, method: Any, metadata: Any) -> None:
    path = f"/{method.containing_service.full_name}/{method.name}"
    ident = lambda b: b  # noqa: E731
    if method.client_streaming:
        call = channel.stream_stream(path, ident, ident)(iter([b""]), metadata=metadata)
    else:
        call = channel.unary_stream(path, ident, ident)(b"", metadata=metadata)
    list(call)


def _table_counts(url: str) -> tuple[int, ...]:
    with psycopg.connect(url) as conn:
        return tuple(
            int(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0])  # type: ignore[index]
            for t in ("attempts", "images", "trainers", "artifacts", "tokens")
        )


def test_health_and_reflection_need_no_token(gateway) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with gateway.channel(None) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


@pytest.fixture()
def principals(gateway: GatewayThread) -> dict[str, str]:
    """Secrets of fresh principals of each role."""
    suffix = str(time.time_ns())
    return {
        role: gateway.make_token(f"{role}-{suffix}", role)
        for role in ("reader", "writer", "admin", "trainer")
    } | {"writer2": gateway.make_token(f"writer2-{suffix}", "writer")}


def stubs(gateway: GatewayThread, secret: str) -> tuple[Any, Any, grpc.Channel]:
    channel = gateway.channel(secret)
    return (
        attempt_service_pb2_grpc.AttemptServiceStub(channel),
        dataset_service_pb2_grpc.DatasetServiceStub(channel),
        channel,
    )


def test_a_reader_reads_but_changes_nothing(gateway, principals) -> None:
    with gateway.channel() as admin_channel:
        attempt_service_pb2_grpc.AttemptServiceStub(admin_channel).CreateAttempt(
            pb.CreateAttemptRequest(attempt=make_attempt("someone"))
        )
    attempts, datasets, channel = stubs(gateway, principals["reader"])
    with channel:
        assert attempts.GetAttempt(pb.GetAttemptRequest(name="someone")).attempt.name == "someone"
        assert len(attempts.ListAttempts(pb.ListAttemptsRequest()).attempts) == 1
        datasets.ListLabels(dataset_service_pb2.ListLabelsRequest())
        before = _table_counts(gateway.database_url)
        refused = [
            lambda: attempts.CreateAttempt(pb.CreateAttemptRequest(attempt=make_attempt("x"))),
            lambda: attempts.Train(pb.TrainRequest(name="someone", command=lenet_command())),
            lambda: attempts.Test(pb.TestRequest(name="someone")),
            lambda: attempts.DeleteAttempt(pb.DeleteAttemptRequest(name="someone")),
            lambda: attempts.CancelAttempt(pb.CancelAttemptRequest(name="someone")),
            lambda: attempts.UpdateAttempt(
                pb.UpdateAttemptRequest(attempt=make_attempt("someone"))
            ),
            # The object does not exist: the answer is the same (no hint either way).
            lambda: attempts.DeleteAttempt(pb.DeleteAttemptRequest(name="nobody")),
            lambda: datasets.UploadImages(
                iter([dataset_service_pb2.UploadImagesRequest(label="cat", data=png())])
            ),
            lambda: datasets.DeleteImages(
                dataset_service_pb2.DeleteImagesRequest(label_names=["a"])
            ),
        ]
        for call in refused:
            expect_error(CODE.PERMISSION_DENIED, call)
        assert _table_counts(gateway.database_url) == before


def test_a_writer_changes_only_its_own_attempts(gateway, principals) -> None:
    mine, _, mine_channel = stubs(gateway, principals["writer"])
    theirs, their_datasets, their_channel = stubs(gateway, principals["writer2"])
    with mine_channel, their_channel:
        made = mine.CreateAttempt(pb.CreateAttemptRequest(attempt=make_attempt("mine"))).attempt
        owner = made.owner
        assert owner.startswith("writer-")
        upload_labels(gateway, lenet_command().label_names)
        mine.Train(pb.TrainRequest(name="queued-mine", command=lenet_command()))
        before = _table_counts(gateway.database_url)
        snapshot = mine.GetAttempt(pb.GetAttemptRequest(name="mine")).attempt
        update = make_attempt("mine")
        update.tags["hacked"] = "yes"
        for call in (
            lambda: theirs.UpdateAttempt(
                pb.UpdateAttemptRequest(attempt=update, update_mask={"paths": ["tags"]})
            ),
            lambda: theirs.DeleteAttempt(pb.DeleteAttemptRequest(name="mine")),
            lambda: theirs.Train(pb.TrainRequest(name="mine", command=lenet_command())),
            lambda: theirs.Test(pb.TestRequest(name="mine")),
            lambda: theirs.CancelAttempt(pb.CancelAttemptRequest(name="queued-mine")),
            lambda: theirs.DeleteAttempt(pb.DeleteAttemptRequest(id=made.id)),
        ):
            err = expect_error(CODE.PERMISSION_DENIED, call)
            assert "owner" in (err.details() or "")
        assert _table_counts(gateway.database_url) == before
        assert mine.GetAttempt(pb.GetAttemptRequest(name="mine")).attempt == snapshot
        # The owner may; others still read it.
        mine.UpdateAttempt(pb.UpdateAttemptRequest(attempt=update, update_mask={"paths": ["tags"]}))
        assert theirs.GetAttempt(pb.GetAttemptRequest(name="mine")).attempt.tags["hacked"] == "yes"
        mine.CancelAttempt(pb.CancelAttemptRequest(name="queued-mine"))
        mine.DeleteAttempt(pb.DeleteAttemptRequest(name="mine"))
        # Their own attempts, and the owner filter.
        their_owner = theirs.CreateAttempt(
            pb.CreateAttemptRequest(attempt=make_attempt("theirs"))
        ).attempt.owner
        assert their_owner.startswith("writer2-")
        listed = theirs.ListAttempts(pb.ListAttemptsRequest(owner=owner)).attempts
        assert [a.name for a in listed] == ["queued-mine"]
        everything = theirs.ListAttempts(pb.ListAttemptsRequest()).attempts
        assert {a.name: a.owner for a in everything} == {
            "queued-mine": owner,
            "theirs": their_owner,
        }
        # A writer uploads images but does not delete labels.
        their_datasets.UploadImages(
            iter([dataset_service_pb2.UploadImagesRequest(label="cat", data=png())])
        )
        expect_error(
            CODE.PERMISSION_DENIED,
            their_datasets.DeleteImages,
            dataset_service_pb2.DeleteImagesRequest(label_names=["cat"]),
        )
    # An admin changes anyone's.
    with gateway.channel() as channel:
        attempt_service_pb2_grpc.AttemptServiceStub(channel).DeleteAttempt(
            pb.DeleteAttemptRequest(name="theirs")
        )


def test_only_a_trainer_token_registers_a_trainer(gateway, principals) -> None:
    request = trainer_registry_service_pb2.RegisterTrainerRequest(address="127.0.0.1:9", capacity=1)
    for role in ("reader", "writer"):
        with gateway.channel(principals[role]) as channel:
            stub = trainer_registry_service_pb2_grpc.TrainerRegistryServiceStub(channel)
            expect_error(CODE.PERMISSION_DENIED, stub.RegisterTrainer, request)
    assert _table_counts(gateway.database_url)[2] == 0
    with gateway.channel(principals["trainer"]) as channel:
        stub = trainer_registry_service_pb2_grpc.TrainerRegistryServiceStub(channel)
        reply = stub.RegisterTrainer(request)
        assert len(reply.gateway_credential) >= 32
        # A trainer token is for trainer work only.
        expect_error(
            CODE.PERMISSION_DENIED,
            attempt_service_pb2_grpc.AttemptServiceStub(channel).GetAttempt,
            pb.GetAttemptRequest(name="x"),
        )
        expect_error(
            CODE.PERMISSION_DENIED,
            token_service_pb2_grpc.TokenServiceStub(channel).ListTokens,
            token_service_pb2.ListTokensRequest(),
        )
    # Another trainer principal can neither take the live address over nor beat for it.
    other = gateway.make_token(f"trainer-b-{time.time_ns()}", "trainer")
    with gateway.channel(other) as channel:
        stub = trainer_registry_service_pb2_grpc.TrainerRegistryServiceStub(channel)
        expect_error(CODE.PERMISSION_DENIED, stub.RegisterTrainer, request)
        expect_error(
            CODE.PERMISSION_DENIED,
            stub.Heartbeat,
            trainer_registry_service_pb2.HeartbeatRequest(address="127.0.0.1:9"),
        )
    with psycopg.connect(gateway.database_url) as conn:
        row = conn.execute("SELECT principal FROM trainers").fetchone()
    assert row is not None and row[0].startswith("trainer-")


def test_a_trainer_reads_only_the_images_of_work_it_holds(gateway, principals) -> None:
    with gateway.channel() as channel:
        dataset_service_pb2_grpc.DatasetServiceStub(channel).UploadImages(
            iter(
                [
                    dataset_service_pb2.UploadImagesRequest(label="held", data=png((1, 2, 3))),
                    dataset_service_pb2.UploadImagesRequest(label="secret", data=png((4, 5, 6))),
                ]
            )
        )
        # Stored, not queued: the session's dispatcher must not claim it for the fake
        # address below; the test makes it this trainer's work by hand.
        attempt = make_attempt("held-work")
        attempt.training_commands.CopyFrom(lenet_command(label_names=["held"]))
        attempt_service_pb2_grpc.AttemptServiceStub(channel).CreateAttempt(
            pb.CreateAttemptRequest(attempt=attempt)
        )
    with gateway.channel(principals["trainer"]) as channel:
        registry = trainer_registry_service_pb2_grpc.TrainerRegistryServiceStub(channel)
        registry.RegisterTrainer(
            trainer_registry_service_pb2.RegisterTrainerRequest(address="127.0.0.1:9", capacity=1)
        )
        datasets = dataset_service_pb2_grpc.DatasetServiceStub(channel)

        def read(**fields: Any) -> list[Any]:
            """ReadImages' answer; ListImages must give the same or refuse the same."""
            try:
                listed = datasets.ListImages(dataset_service_pb2.ListImagesRequest(**fields))
            except grpc.RpcError as err:
                listed_code = err.code()
            else:
                listed_code = None
            try:
                found = list(datasets.ReadImages(dataset_service_pb2.ReadImagesRequest(**fields)))
            except grpc.RpcError as err:
                assert listed_code == err.code()
                raise
            assert listed_code is None and list(listed.ids) == [m.id for m in found]
            return found

        # Nothing is held yet: nothing may be read.
        expect_error(CODE.PERMISSION_DENIED, read, label_names=["held"])
        # The work is now this trainer's (as a dispatcher's claim would make it).
        with psycopg.connect(gateway.database_url) as conn:
            conn.execute(
                "UPDATE attempts SET status = 'TRAINING', trainer = '127.0.0.1:9'"
                " WHERE name = 'held-work'"
            )
        assert [m.label for m in read(label_names=["held"])] == ["held"]
        expect_error(CODE.PERMISSION_DENIED, read, label_names=["held", "secret"])
        with psycopg.connect(gateway.database_url) as conn:
            secret_id = conn.execute("SELECT id FROM images WHERE label = 'secret'").fetchone()
        assert secret_id is not None
        expect_error(CODE.PERMISSION_DENIED, read, ids=[secret_id[0]])
        with psycopg.connect(gateway.database_url) as conn:
            conn.execute("UPDATE attempts SET status = 'CANCELLED' WHERE name = 'held-work'")
        expect_error(CODE.PERMISSION_DENIED, read, label_names=["held"])


def test_tokens_are_stored_hashed_and_revocation_is_immediate(gateway, principals) -> None:
    secret = principals["writer"]
    with psycopg.connect(gateway.database_url) as conn:
        rows = conn.execute("SELECT name, token_hash, role FROM tokens").fetchall()
    assert all(secret.encode() not in bytes(r[1]) and len(bytes(r[1])) == 32 for r in rows)
    name = next(r[0] for r in rows if bytes(r[1]) == hashlib.sha256(secret.encode()).digest())
    with Client(gateway.address, token=secret) as client:
        client.create(make_attempt("before-revocation"))
        watch = client.watch("before-revocation")
        assert next(watch).name == "before-revocation"  # a stream open before revocation
        with Client(gateway.address, token=gateway.admin_token) as admin:
            assert name in [t.name for t in admin.tokens()]
            admin.revoke_token(name)
            assert name not in [t.name for t in admin.tokens()]
        with pytest.raises(UnauthenticatedError):
            client.get("before-revocation")
        with pytest.raises(UnauthenticatedError):
            next(client.watch("before-revocation"))
    # The attempt keeps its owner.
    with Client(gateway.address, token=gateway.admin_token) as admin:
        assert admin.get("before-revocation").owner == name


def test_every_token_learns_who_it_is_and_nothing_more(gateway, principals) -> None:
    for role, secret in principals.items():
        with Client(gateway.address, token=secret) as client:
            token = client.whoami()
        assert token_service_pb2.Role.Name(token.role) == f"ROLE_{role.rstrip('2').upper()}"
        assert token.name and token.create_time.seconds > 0
        assert secret not in str(token)
    with (
        Client(gateway.address, token="mlt_not-a-token") as stranger,
        pytest.raises(UnauthenticatedError),
    ):
        stranger.whoami()


def test_expired_tokens_are_refused(gateway) -> None:
    with Client(gateway.address, token=gateway.admin_token) as admin:
        reply = admin.create_token(f"brief-{time.time_ns()}", "reader", expires_in_days=2 / 86400)
        assert reply.token.HasField("expire_time")
    with Client(gateway.address, token=reply.secret) as client:
        client.labels()
        time.sleep(2.5)
        with pytest.raises(UnauthenticatedError):
            client.labels()


def test_token_requests_are_validated(gateway, principals) -> None:
    with gateway.channel() as channel:
        stub = token_service_pb2_grpc.TokenServiceStub(channel)
        bad = [
            (token_service_pb2.CreateTokenRequest(name="bad name", role=1), "name"),
            (token_service_pb2.CreateTokenRequest(name="ok\n", role=1), "name"),
            (token_service_pb2.CreateTokenRequest(name="ok", role=9), "role"),
            (
                token_service_pb2.CreateTokenRequest(name="ok", role=1, expires_in_days=-1),
                "expires_in_days",
            ),
            (
                token_service_pb2.CreateTokenRequest(
                    name="ok", role=1, expires_in_days=float("nan")
                ),
                "expires_in_days",
            ),
        ]
        for request, field in bad:
            err = expect_error(CODE.INVALID_ARGUMENT, stub.CreateToken, request)
            assert field in violations(err)
        expect_error(
            CODE.NOT_FOUND, stub.RevokeToken, token_service_pb2.RevokeTokenRequest(name="nobody")
        )
    with (
        Client(gateway.address, token=principals["writer"]) as writer,
        pytest.raises(PermissionDeniedError),
    ):
        writer.create_token("sneaky", "admin")


def test_undecodable_requests_are_invalid_argument(gateway) -> None:
    methods = {m.name: m for m in every_method()}
    with gateway.channel() as channel:
        # A string field holding invalid UTF-8.
        err = expect_error(
            CODE.INVALID_ARGUMENT, call_raw, channel, methods["GetAttempt"], b"\x0a\x02\xff\xfe"
        )
        assert "request" in violations(err)
        # Garbage bytes, on a unary, a server-streaming and a client-streaming RPC.
        for name in ("ListAttempts", "WatchAttempt", "UploadImages"):
            err = expect_error(
                CODE.INVALID_ARGUMENT, call_raw, channel, methods[name], b"\xff\xff\xff\xff"
            )
            assert "request" in violations(err)
        # A Struct nested past protobuf's depth limit, inside a Train command.
        inner = b""
        for _ in range(200):
            value = b"\x2a" + _varint(len(inner)) + inner
            entry = b"\x0a\x01a\x12" + _varint(len(value)) + value
            inner = b"\x0a" + _varint(len(entry)) + entry
        command = b"\x12" + _varint(len(inner)) + inner  # TrainCommand.criterion
        request = b"\x0a\x01x\x12" + _varint(len(command)) + command
        err = expect_error(CODE.INVALID_ARGUMENT, call_raw, channel, methods["Train"], request)
        assert "request" in violations(err)
    # Undecodable and without a token: the token is checked first.
    with gateway.channel(None) as channel:
        expect_error(CODE.UNAUTHENTICATED, call_raw, channel, methods["GetAttempt"], b"\xff")


def _varint(n: int) -> bytes:
    out = b""
    while True:
        low, n = n & 127, n >> 7
        if n:
            out += bytes([low | 128])
        else:
            return out + bytes([low])


def test_the_policy_covers_every_rpc() -> None:
    from gateway.auth.roles import POLICY, check_covers

    check_covers(SERVICES)
    served = {f"/{m.containing_service.full_name}/{m.name}" for m in every_method()}
    assert served == set(POLICY)


def test_no_auth_is_refused_beyond_loopback(postgres_url) -> None:
    import asyncio

    from gateway.config import GatewayConfig
    from gateway.server import create_server
    from gateway.store import open_pool

    async def attempt() -> None:
        config = GatewayConfig(listen="0.0.0.0:0", database_url=postgres_url, auth=False)
        async with open_pool(postgres_url, 1, 2) as pool:
            await create_server(config, pool)

    with pytest.raises(ValueError, match="loopback"):
        asyncio.run(attempt())


@pytest.mark.slow  # a gateway process started on a fresh data directory: 8 s
def test_the_first_start_writes_an_admin_token_only_its_user_reads(tmp_path) -> None:
    from tests.test_process import GatewayProcess

    gateway = GatewayProcess(tmp_path / "data")
    try:
        path = tmp_path / "data" / "admin.token"
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        secret = path.read_text().strip()
        assert len(secret) >= 43
        listed = gateway.cli("attempts", "list")  # finds the token by itself
        assert listed.returncode == 0
        # Without it (another directory, no env): refused, in one line.
        result = gateway.cli("attempts", "list", check=False, data_dir=tmp_path / "elsewhere")
        assert result.returncode == 1 and "UNAUTHENTICATED" in result.stderr
        made = gateway.cli("tokens", "create", "--name", "alice", "--role", "writer")
        alice = made.stdout.strip()
        assert alice.startswith("mlt_") and len(alice) >= 43
        assert "alice" in gateway.cli("tokens", "list").stdout
        # --gateway before the command, --token after it.
        created = gateway.cli(
            "attempts", "create", "--file", "tests/fixtures/attempt_american_dog_species_3.json",
            "--token", alice, "--json", data_dir=tmp_path / "elsewhere", gateway_first=True,
        )  # fmt: skip
        assert '"owner": "alice"' in created.stdout
        gateway.cli("tokens", "revoke", "alice")
        refused = gateway.cli("attempts", "list", "--token", alice, check=False)
        assert "UNAUTHENTICATED" in refused.stderr
    finally:
        gateway.terminate()
    # A restart keeps the token (and the file) as they were.
    again = GatewayProcess(tmp_path / "data")
    try:
        assert (tmp_path / "data" / "admin.token").read_text().strip() == secret
        assert again.cli("attempts", "list").returncode == 0
    finally:
        again.terminate()


def test_train_command_struct_values_are_checked_after_auth(gateway) -> None:
    """A writer's Train with a deep but decodable criterion is a field violation."""
    deep = struct_pb2.Struct()
    node = deep
    for _ in range(20):  # deep, but within what protobuf decodes
        node = node.fields["a"].struct_value
    command = lenet_command()
    command.criterion.CopyFrom(deep)
    with gateway.channel() as channel:
        stub = attempt_service_pb2_grpc.AttemptServiceStub(channel)
        err = expect_error(
            CODE.INVALID_ARGUMENT, stub.Train, pb.TrainRequest(name="deep", command=command)
        )
        assert any(f.startswith("command") for f in violations(err))


def test_metadata_is_what_the_client_sends(gateway) -> None:
    # The bearer scheme is case-insensitive (RFC 6750) and surrounding spaces are fine.
    channel = grpc.insecure_channel(gateway.address)
    stub = dataset_service_pb2_grpc.DatasetServiceStub(channel)
    stub.ListLabels(
        dataset_service_pb2.ListLabelsRequest(),
        metadata=(("authorization", f"bearer  {gateway.admin_token} "),),
    )
    expect_error(
        CODE.UNAUTHENTICATED,
        stub.ListLabels,
        dataset_service_pb2.ListLabelsRequest(),
        metadata=authorization("x" * 1_000),  # over our bound, under grpc's 8 KiB
    )
    channel.close()


def test_a_gateway_beyond_loopback_without_tls_warns_loudly(tmp_path) -> None:
    import subprocess

    from tests.test_orchestration import METALEARN

    log = tmp_path / "gateway.log"
    proc = subprocess.Popen(
        [*METALEARN, "gateway", "--listen", "0.0.0.0:0", "--data-dir", str(tmp_path / "d")],
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        text=True,
    )
    try:
        assert proc.stdout is not None and "listening on" in proc.stdout.readline()
    finally:
        proc.terminate()
        proc.wait(30)
    assert "WITHOUT TLS" in log.read_text()
    refused = subprocess.run(
        [*METALEARN, "gateway", "--listen", "0.0.0.0:0", "--insecure-no-auth"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 1 and "loopback" in refused.stderr


def test_metalearn_certs_makes_a_ca_and_a_certificate(tmp_path) -> None:
    import subprocess

    from tests.test_orchestration import METALEARN

    done = subprocess.run(
        [*METALEARN, "certs", "--dir", str(tmp_path), "--host", "gw.example", "--host", "10.0.0.7"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    from cryptography import x509

    cert = x509.load_pem_x509_certificate((tmp_path / "metalearn.pem").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "gw.example" in names.get_values_for_type(x509.DNSName)
    assert stat.S_IMODE(os.stat(tmp_path / "metalearn.key").st_mode) == 0o600


def test_download_names_files_from_what_the_user_typed(tmp_path) -> None:
    import subprocess

    from tests.test_orchestration import METALEARN

    for name in ("../evil", "..", "a/b"):
        done = subprocess.run(
            [*METALEARN, "download", name, "-o", str(tmp_path), "--gateway", "127.0.0.1:1"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 1 and "is not an attempt name" in done.stderr, done.stderr
    with Client("127.0.0.1:1", token="x", timeout=1) as client, pytest.raises(InvalidRequest):
        client.download("../evil", tmp_path)
    assert list(tmp_path.iterdir()) == []
