"""Every request has a budget (issue 25): a statement timeout on request connections, a
lane of connections for the service's own work, per-principal limits on calls in
flight, a rate limit on unknown tokens, and tag updates that never lose a writer's.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import secrets

import grpc
import psycopg
import pytest
from google.protobuf import field_mask_pb2

from gateway.auth.budget import PrincipalBudget
from gateway.auth.roles import Principal, Role
from gateway.store import open_pool
from gateway.store.database import translate_db_errors
from metalearn import errors
from metalearn.v1 import attempt_pb2, attempt_service_pb2_grpc
from metalearn.v1 import attempt_service_pb2 as pb
from tests.harness import GatewayThread
from tests.test_attempts import make_attempt

CODE = grpc.StatusCode


def test_a_request_statement_past_its_budget_is_resource_exhausted(postgres_url) -> None:
    async def main() -> None:
        async with open_pool(
            postgres_url, 1, 2, statement_timeout=0.2, service_size=1,
            service_statement_timeout=30,
        ) as pool:  # fmt: skip
            with (
                pytest.raises(errors.ResourceExhausted, match="longer than one request"),
                translate_db_errors(),
            ):
                async with pool.connection() as conn:
                    await conn.execute("SELECT pg_sleep(2)")
            # The service's lane has its own budget, sized for admin work.
            async with pool.service.connection() as conn:
                await conn.execute("SELECT pg_sleep(0.4)")

    asyncio.run(main())


def test_requests_holding_every_connection_leave_the_service_its_own(postgres_url) -> None:
    async def main() -> None:
        async with open_pool(postgres_url, 2, 2, service_size=1) as pool:
            release = asyncio.Event()
            both = asyncio.Barrier(3)

            async def hold() -> None:
                async with pool.connection():
                    await both.wait()
                    await release.wait()

            holders = [asyncio.create_task(hold()) for _ in range(2)]
            await both.wait()
            # Every request connection is taken; the service's lane still answers at once
            # (a timeout of 2 s would be the pool's wait, had it been taken).
            async with pool.service.connection(timeout=2) as conn:
                cur = await conn.execute("SELECT 1")
                assert await cur.fetchone() == (1,)
            with pytest.raises(psycopg.OperationalError):  # PoolTimeout: the requests' pool
                async with pool.connection(timeout=0.2):
                    pass
            release.set()
            await asyncio.gather(*holders)

    asyncio.run(main())


def test_a_principal_waits_its_turn_then_is_refused_and_others_pass() -> None:
    async def main() -> None:
        budget = PrincipalBudget(calls=2, streams=1, wait_seconds=0.3)
        alice, bob = Principal("alice", Role.WRITER), Principal("bob", Role.READER)
        admin = Principal("root", Role.ADMIN)
        release = asyncio.Event()

        async def busy(who: Principal) -> None:
            async with budget.call(who):
                await release.wait()

        holders = [asyncio.create_task(busy(alice)) for _ in range(2)]
        await asyncio.sleep(0.05)
        with pytest.raises(errors.ResourceExhausted, match="'alice' has 2 calls in flight"):
            async with budget.call(alice):
                pass
        async with budget.call(bob):  # another principal is not held up by alice
            pass
        for _ in range(5):  # the operator is not counted
            holders.append(asyncio.create_task(busy(admin)))
        async with budget.call(admin):
            pass
        # One freed slot lets a waiting call through.
        waiting = asyncio.create_task(busy(alice))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        release.set()
        await asyncio.gather(*holders, waiting)
        # Streams: refused at once beyond the limit.
        async with budget.stream(bob):
            with pytest.raises(errors.ResourceExhausted, match="streams open"):
                async with budget.stream(bob):
                    pass
        assert budget._shares == {}  # idle principals leave no entry behind

    asyncio.run(main())


def _rpc_code(call, *args, **kwargs) -> CODE:  # type: ignore[no-untyped-def]
    try:
        call(*args, **kwargs)
    except grpc.RpcError as err:
        return err.code()  # type: ignore[attr-defined,no-any-return]
    return CODE.OK


def test_a_flood_of_unknown_tokens_is_rate_limited_per_address(postgres_url) -> None:
    # A gateway of its own: the flood empties this address's bucket for a moment.
    gateway = GatewayThread(postgres_url).start()
    try:
        _flood(gateway)
    finally:
        gateway.stop()


def _flood(gateway: GatewayThread) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        stub = attempt_service_pb2_grpc.AttemptServiceStub(channel)
        request = pb.GetLatestIndexRequest()

        def with_token(token: str) -> CODE:
            metadata = (("authorization", f"Bearer {token}"),)
            return _rpc_code(stub.GetLatestIndex, request, metadata=metadata, timeout=10)

        assert with_token(gateway.admin_token) == CODE.OK  # in use, hence cached
        # One wrong token repeated is remembered: no lookups spent on it.
        wrong = "mlt_" + secrets.token_urlsafe(32)
        assert {with_token(wrong) for _ in range(200)} == {CODE.UNAUTHENTICATED}
        # Guessing: a burst is looked up, then this address is told to slow down.
        codes = [with_token("mlt_" + secrets.token_urlsafe(32)) for _ in range(300)]
        assert CODE.RESOURCE_EXHAUSTED in codes
        assert set(codes) == {CODE.UNAUTHENTICATED, CODE.RESOURCE_EXHAUSTED}
        # A token in use still answers at once.
        assert with_token(gateway.admin_token) == CODE.OK


def test_concurrent_tag_updates_keep_every_writer_s_tag(attempts) -> None:
    created = attempts.CreateAttempt(pb.CreateAttemptRequest(attempt=make_attempt("tagged")))
    name = created.attempt.name

    def tag(i: int) -> None:
        change = attempt_pb2.Attempt(name=name, tags={f"k{i}": str(i)})
        attempts.UpdateAttempt(
            pb.UpdateAttemptRequest(
                attempt=change, update_mask=field_mask_pb2.FieldMask(paths=[f"tags.k{i}"])
            )
        )

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(tag, range(24)))
    tags = attempts.GetAttempt(pb.GetAttemptRequest(name=name)).attempt.tags
    assert dict(tags) == {f"k{i}": str(i) for i in range(24)}
    # A path whose key the request lacks removes that tag; quoted keys may hold dots.
    change = attempt_pb2.Attempt(name=name, tags={"a.b": "dotted"})
    mask = field_mask_pb2.FieldMask(paths=["tags.k0", "tags.`a.b`"])
    done = attempts.UpdateAttempt(pb.UpdateAttemptRequest(attempt=change, update_mask=mask))
    assert "k0" not in done.attempt.tags and done.attempt.tags["a.b"] == "dotted"
    # A bad key is named by its path.
    bad = field_mask_pb2.FieldMask(paths=["tags.no spaces"])
    with pytest.raises(grpc.RpcError) as err:
        attempts.UpdateAttempt(pb.UpdateAttemptRequest(attempt=change, update_mask=bad))
    assert err.value.code() == CODE.INVALID_ARGUMENT
    assert "update_mask.paths[0]" in str(err.value.details())


def test_costly_work_takes_a_share_of_the_whole_whoever_asks() -> None:
    from gateway.slots import Slots

    async def main() -> None:
        slots = Slots("filtered lists", 1, 0.2)
        release = asyncio.Event()

        async def scan() -> None:
            async with slots.slot():
                await release.wait()

        running = asyncio.create_task(scan())
        await asyncio.sleep(0)
        with pytest.raises(errors.ResourceExhausted, match="1 filtered lists are under way"):
            async with slots.slot():
                pass
        waiting = asyncio.create_task(scan())  # waits its turn, then runs
        release.set()
        await asyncio.gather(running, waiting)

    asyncio.run(main())
