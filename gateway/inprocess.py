"""A whole gateway on its own event loop in a background thread.

For tests and benchmarks that drive the gateway from synchronous code: the server is
the real one (`create_server` on port 0 over a real pool), only the thread is extra.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

import grpc

from gateway.auth import Role
from gateway.auth.tokens import digest, mint
from gateway.config import GatewayConfig
from gateway.server import create_server, database_for, open_replicas
from gateway.store import migrate
from gateway.store.tokens import TokenStore
from metalearn.credentials import open_channel
from metalearn.tls import ClientTls

T = TypeVar("T")


class GatewayThread:
    """A gateway running on its own event loop in a thread, against a real PostgreSQL."""

    def __init__(self, database_url: str, config: GatewayConfig | None = None) -> None:
        self.database_url = database_url
        self.config = config or GatewayConfig(listen="127.0.0.1:0", database_url=database_url)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._stopped: asyncio.Event | None = None
        self._done: Future[Any] | None = None
        self.port = 0
        # The event hub and dispatcher, once started (tests look at the dispatcher's id).
        self.background: Any = None
        # Secrets of an admin and a trainer token made at start (unique names: several
        # gateways may share one database), and what a channel trusts under TLS.
        self.admin_token = ""
        self.trainer_token = ""
        self.client_tls: ClientTls | None = None

    def start(self) -> GatewayThread:
        self._thread.start()
        ready: Future[int] = Future()

        async def main() -> None:
            self._stopped = asyncio.Event()
            try:
                # The gateway's own pool (statement budget and service lane included),
                # as `run_gateway` opens it.
                pool = database_for(self.config, self.database_url, prepare=migrate)
                await pool.open(wait=True)
                replicas = await open_replicas(self.config)
                try:
                    tokens = TokenStore(pool)
                    suffix = uuid.uuid4().hex[:8]
                    self.admin_token, self.trainer_token = mint(), mint()
                    await tokens.put(f"admin-{suffix}", digest(self.admin_token), "admin")
                    await tokens.put(
                        f"trainer-{suffix}", digest(self.trainer_token), Role.TRAINER.value
                    )
                    server, port, background = await create_server(
                        self.config, pool, replicas=replicas
                    )
                    self.background = background
                    await background.start()
                    await server.start()
                    ready.set_result(port)
                    await self._stopped.wait()
                    await background.stop()
                    await server.stop(1.0)
                finally:
                    for replica in replicas:
                        await replica.close()
                    await pool.close()
            except BaseException as err:
                if not ready.done():
                    ready.set_exception(err)
                raise

        self._done = asyncio.run_coroutine_threadsafe(main(), self._loop)
        self.port = ready.result(timeout=60)
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def channel(self, token: str | None = "admin") -> grpc.Channel:  # noqa: S107 - a role name
        """A channel whose calls carry `token`: "admin" (the default) and "trainer" are
        this gateway's own, None sends none, anything else is sent as it is."""
        secret = {"admin": self.admin_token, "trainer": self.trainer_token}.get(token or "", token)
        return open_channel(
            self.address,
            secret,
            self.client_tls,
            options=[("grpc.max_send_message_length", 64 * 1024 * 1024)],
        )

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        """Runs `coroutine` on the gateway's own loop (where its background parts live)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def make_token(self, name: str, role: str) -> str:
        """A new token's secret (through TokenService, as an admin would)."""
        from metalearn.v1 import token_service_pb2, token_service_pb2_grpc

        with self.channel() as channel:
            reply = token_service_pb2_grpc.TokenServiceStub(channel).CreateToken(
                token_service_pb2.CreateTokenRequest(
                    name=name,
                    role=token_service_pb2.Role.Value(f"ROLE_{role.upper()}"),  # type: ignore[arg-type]
                )
            )
        return str(reply.secret)

    def stop(self) -> None:
        assert self._stopped is not None and self._done is not None
        self._loop.call_soon_threadsafe(self._stopped.set)
        self._done.result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
