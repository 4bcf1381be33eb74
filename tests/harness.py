"""Test helpers: a real gateway on port 0 in a background thread, and image makers."""

from __future__ import annotations

import asyncio
import io
import threading
from concurrent.futures import Future
from typing import Any

import grpc
import psycopg
from PIL import Image

from gateway.config import GatewayConfig
from gateway.server import create_server
from gateway.store import open_pool


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

    def start(self) -> GatewayThread:
        self._thread.start()
        ready: Future[int] = Future()

        async def main() -> None:
            self._stopped = asyncio.Event()
            try:
                async with open_pool(self.database_url, 2, 10) as pool:
                    server, port = await create_server(self.config, pool)
                    await server.start()
                    ready.set_result(port)
                    await self._stopped.wait()
                    await server.stop(1.0)
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

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(
            self.address, options=[("grpc.max_send_message_length", 64 * 1024 * 1024)]
        )

    def stop(self) -> None:
        assert self._stopped is not None and self._done is not None
        self._loop.call_soon_threadsafe(self._stopped.set)
        self._done.result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)


def png(
    color: tuple[int, int, int] = (200, 10, 10), size: tuple[int, int] = (8, 8), fmt: str = "PNG"
) -> bytes:
    """A small real image, distinct per color."""
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format=fmt)
    return buf.getvalue()


def snapshot(database_url: str) -> tuple[list[Any], ...]:
    """Everything stored, for checking that a refused request changed nothing."""
    with psycopg.connect(database_url) as conn:
        attempts = conn.execute(
            "SELECT id, name, status, doc, updated_at, current_epoch FROM attempts ORDER BY id"
        ).fetchall()
        epochs = conn.execute("SELECT * FROM attempt_epochs ORDER BY 1, 2").fetchall()
        images = conn.execute("SELECT id, label, sha256 FROM images ORDER BY id").fetchall()
        return attempts, epochs, images


def truncate(database_url: str) -> None:
    """Empties every table (identities restart) between tests."""
    with psycopg.connect(database_url) as conn:
        conn.execute("TRUNCATE attempts, attempt_epochs, images RESTART IDENTITY CASCADE")
