"""Serving the dashboard: `create_server` binds its socket (tests use port 0 and run it in
a thread); `metalearn ui` (dashboard/command.py) runs it in the foreground."""

from __future__ import annotations

import asyncio
import socket
import threading

import uvicorn

from dashboard.app import create_app
from dashboard.config import UiConfig


class UiServer:
    """The dashboard on a bound socket: `port` is known before it serves."""

    def __init__(self, config: UiConfig) -> None:
        family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._socket.bind((config.host, config.port))
        except OSError as err:
            self._socket.close()
            raise OSError(f"cannot listen on {config.host}:{config.port}: {err.strerror}") from err
        self._socket.listen(128)
        self.port: int = self._socket.getsockname()[1]
        self.config = config
        host = f"[{config.host}]" if ":" in config.host else config.host
        self.url = f"http://{host}:{self.port}"
        self._server = uvicorn.Server(
            uvicorn.Config(
                create_app(config),
                log_level="warning",
                access_log=False,
                lifespan="on",
                # Event streams end with the server; do not wait for them on shutdown.
                timeout_graceful_shutdown=2,
            )
        )
        self._thread: threading.Thread | None = None

    def serve(self) -> None:
        """Serves until `stop` (or a signal, in the foreground)."""
        asyncio.run(self._server.serve(sockets=[self._socket]))

    def start(self) -> UiServer:
        """Serves in a background thread (tests)."""
        self._server.config.install_signal_handlers = False  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self.serve, name="dashboard", daemon=True)
        self._thread.start()
        while not self._server.started and self._thread.is_alive():
            threading.Event().wait(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        self._socket.close()


def create_server(config: UiConfig) -> UiServer:
    return UiServer(config)
