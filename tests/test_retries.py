"""Retries are idempotent (AIP-155): a call repeated with its `request_id` is carried out
once, and answers with the attempt the first call made."""

from __future__ import annotations

import psycopg

from metalearn import Client
from metalearn.v1 import attempt_pb2, attempt_service_pb2_grpc
from metalearn.v1 import attempt_service_pb2 as pb
from tests.harness import upload_labels
from tests.rpc import expect_error, violations
from tests.test_attempts import CODE, make_attempt
from tests.trainer_harness import lenet_command


def test_a_retried_create_returns_its_own_write(attempts, gateway) -> None:
    request = pb.CreateAttemptRequest(attempt=make_attempt("once"), request_id="req-1")
    first = attempts.CreateAttempt(request).attempt
    again = attempts.CreateAttempt(request).attempt  # the reply was lost: the client retries
    assert again.id == first.id and again.name == "once"
    # Without an id, a second create of the name is what it always was.
    expect_error(
        CODE.ALREADY_EXISTS,
        attempts.CreateAttempt,
        pb.CreateAttemptRequest(attempt=make_attempt("once")),
    )
    # The same id for another call is a mistake, named.
    upload_labels(gateway, lenet_command().label_names)  # (Train's labels are fine)
    err = expect_error(
        CODE.INVALID_ARGUMENT,
        attempts.Train,
        pb.TrainRequest(name="once", command=lenet_command(), request_id="req-1"),
    )
    assert "request_id" in violations(err)


def test_a_retried_train_queues_once(attempts, gateway) -> None:
    upload_labels(gateway, lenet_command().label_names)
    request = pb.TrainRequest(name="trained-once", command=lenet_command(), request_id="t-1")
    queued = attempts.Train(request).attempt
    attempts.CancelAttempt(pb.CancelAttemptRequest(name="trained-once"))
    # A late retry of the Train must not queue it again: it answers with the attempt now.
    again = attempts.Train(request).attempt
    assert again.id == queued.id and again.status == attempt_pb2.ATTEMPT_STATUS_CANCELLED
    # A new id is a new call: it trains again.
    request.request_id = "t-2"
    assert attempts.Train(request).attempt.status == attempt_pb2.ATTEMPT_STATUS_QUEUED


def test_request_ids_are_per_caller_and_checked(attempts, gateway) -> None:
    other = gateway.make_token(f"retrier-{id(attempts)}", "writer")
    attempts.CreateAttempt(
        pb.CreateAttemptRequest(attempt=make_attempt("mine-1"), request_id="shared")
    )
    with gateway.channel(other) as channel:
        theirs = attempt_service_pb2_grpc.AttemptServiceStub(channel).CreateAttempt(
            pb.CreateAttemptRequest(attempt=make_attempt("theirs-1"), request_id="shared")
        )
    assert theirs.attempt.name == "theirs-1"  # another caller's id does not collide
    for bad in ("x" * 65, "has space", "new\nline"):
        err = expect_error(
            CODE.INVALID_ARGUMENT,
            attempts.CreateAttempt,
            pb.CreateAttemptRequest(attempt=make_attempt("bad-id"), request_id=bad),
        )
        assert "request_id" in violations(err)


def test_the_client_sends_a_request_id_and_retries_safely(gateway) -> None:
    upload_labels(gateway, lenet_command().label_names)
    with Client(gateway.address, token=gateway.admin_token) as client:
        client.create(make_attempt("by-client"))
        client.train("by-client-train", lenet_command())
    with psycopg.connect(gateway.database_url) as conn:
        methods = sorted(r[0] for r in conn.execute("SELECT method FROM requests"))
    assert methods == ["create", "train"]


def test_a_client_retry_after_unavailable_is_carried_out_once(gateway) -> None:
    """The first try is refused as if the gateway had been unreachable, after the
    write committed: the retry gets the attempt, not ALREADY_EXISTS."""
    import grpc

    with Client(gateway.address, token=gateway.admin_token) as client:
        real = client._attempts.CreateAttempt
        calls = []

        def lossy(request, timeout=None):  # type: ignore[no-untyped-def]
            calls.append(request.request_id)
            reply = real(request, timeout=timeout)
            if len(calls) == 1:  # committed, but the answer never arrives
                raise _Unavailable()
            return reply

        class _Unavailable(grpc.RpcError, grpc.Call):  # type: ignore[misc]
            def code(self):  # type: ignore[no-untyped-def]
                return grpc.StatusCode.UNAVAILABLE

            def details(self):  # type: ignore[no-untyped-def]
                return "connection reset"

            def trailing_metadata(self):  # type: ignore[no-untyped-def]
                return ()

        client._attempts.CreateAttempt = lossy
        made = client.create(make_attempt("lost-reply"))
    assert made.name == "lost-reply" and len(calls) == 2 and calls[0] == calls[1]


def test_request_ids_are_forgotten_after_a_day(attempts, gateway) -> None:
    import asyncio

    from gateway.store import open_pool
    from gateway.store.requests import forget_old

    attempts.CreateAttempt(pb.CreateAttemptRequest(attempt=make_attempt("old"), request_id="o"))
    attempts.CreateAttempt(pb.CreateAttemptRequest(attempt=make_attempt("new"), request_id="n"))
    with psycopg.connect(gateway.database_url) as conn:
        conn.execute("UPDATE requests SET created_at = now() - interval '25 hours'"
                     " WHERE request_id = 'o'")  # fmt: skip

    async def forget() -> None:
        async with open_pool(gateway.database_url, 1, 1) as pool:
            await forget_old(pool)

    asyncio.run(forget())
    with psycopg.connect(gateway.database_url) as conn:
        left = [r[0] for r in conn.execute("SELECT request_id FROM requests")]
    assert left == ["n"]
