"""The dashboard in tests: a real server on port 0 in front of a real gateway, and HTTP
clients signed in the way a browser signs in (the CSRF cookie, then the form)."""

from __future__ import annotations

import httpx

from dashboard.config import UiConfig
from dashboard.server import UiServer, create_server
from gateway.inprocess import GatewayThread


def start_ui(gateway: GatewayThread, **settings: object) -> UiServer:
    return create_server(UiConfig(gateway=gateway.address, port=0, **settings)).start()  # type: ignore[arg-type]


def signed_in(ui: UiServer, token: str) -> httpx.Client:
    """An HTTP client holding the cookies a browser gets by signing in with `token`."""
    client = httpx.Client(base_url=ui.url, timeout=30)
    client.get("/login")
    reply = client.post(
        "/login",
        data={"token": token, "csrf": client.cookies["metalearn_csrf"], "next": "/attempts"},
    )
    assert reply.status_code == 303, reply.text
    return client
