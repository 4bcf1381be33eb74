"""The dashboard's settings, fixed when it starts."""

from __future__ import annotations

from dataclasses import dataclass

from metalearn.launch import LAUNCH_KEY_MINUTES
from metalearn.tls import ClientTls


@dataclass(frozen=True)
class UiConfig:
    # The gateway it is a client of, and what to trust there (None: plaintext, local).
    gateway: str = "127.0.0.1:50051"
    tls: ClientTls | None = None
    # Where browsers reach it: loopback unless told otherwise.
    host: str = "127.0.0.1"
    port: int = 8080
    # The host names browsers may use for it (the Host header), against DNS rebinding.
    # Empty: this machine's names when bound to loopback, any name otherwise.
    allowed_hosts: tuple[str, ...] = ()
    # Mark cookies Secure: set when it is served to browsers through HTTPS (a proxy).
    secure_cookies: bool = False
    # `metalearn up`: a secret key that signs a browser in with `launch_token` (the
    # local admin token) from a link printed in the terminal, as Jupyter does: once, and
    # only within `launch_seconds` of the dashboard's start. Empty: users paste a token.
    launch_key: str = ""
    launch_token: str = ""
    launch_seconds: float = LAUNCH_KEY_MINUTES * 60.0
    # Seconds a unary call to the gateway may take.
    rpc_timeout: float = 30.0
    # Attempts per page of the attempts table.
    page_size: int = 50
