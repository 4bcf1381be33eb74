"""How a client proves who it is: finding its token and opening channels that carry it.

The token comes from, in order: `--token` (or the `token` argument), the environment's
METALEARN_TOKEN, the file named by METALEARN_TOKEN_FILE (a mounted secret), then the
admin token the local gateway wrote into its data directory
(./.metalearn/admin.token, or $METALEARN_DATA_DIR/admin.token). That last one is what
keeps `make demo` and the README's commands free of set-up steps on one machine.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

from metalearn.tls import ClientTls

DEFAULT_DATA_DIR = ".metalearn"


def token_file() -> Path:
    return Path(os.environ.get("METALEARN_DATA_DIR") or DEFAULT_DATA_DIR) / "admin.token"


def find_token(explicit: str | None = None) -> str | None:
    """The token to send, or None when there is none anywhere."""
    if explicit:
        return explicit.strip()
    if env := os.environ.get("METALEARN_TOKEN", "").strip():
        return env
    if secret_file := os.environ.get("METALEARN_TOKEN_FILE", "").strip():
        return Path(secret_file).read_text(encoding="utf-8").strip() or None
    path = token_file()
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def authorization(token: str) -> tuple[tuple[str, str], ...]:
    """The metadata that carries a token."""
    return (("authorization", f"Bearer {token}"),)


# What every server of ours (gateway and trainer) answers without a credential: health
# checks (load balancers carry none) and reflection (it shows only the public API).
OPEN_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)


def is_open(method: str) -> bool:
    """Whether `method` (/package.Service/Method) is served without a credential."""
    return method.split("/")[1] in OPEN_SERVICES if method.count("/") == 2 else False


def presented(metadata: Any) -> str | None:
    """The token of a call's `authorization: Bearer <token>` metadata (the scheme in any
    case, as RFC 6750 allows), or None when there is none or it is another scheme."""
    for key, value in metadata or ():
        if key == "authorization":
            text = value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
            scheme, _, token = text.strip().partition(" ")
            token = token.strip()
            return token if scheme.lower() == "bearer" and token else None
    return None


class _Details(grpc.ClientCallDetails):  # type: ignore[misc]
    def __init__(self, base: grpc.ClientCallDetails, metadata: Any) -> None:
        self.method = base.method
        self.timeout = base.timeout
        self.metadata = metadata
        self.credentials = base.credentials
        self.wait_for_ready = getattr(base, "wait_for_ready", None)
        self.compression = getattr(base, "compression", None)


class _BearerInterceptor(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[misc]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[misc]
    grpc.StreamUnaryClientInterceptor,  # type: ignore[misc]
    grpc.StreamStreamClientInterceptor,  # type: ignore[misc]
):
    """Adds the bearer token to every call, of every kind, on any channel (call
    credentials would need TLS, and local use runs without it)."""

    def __init__(self, token: str) -> None:
        self._header = authorization(token)

    def _details(self, details: grpc.ClientCallDetails) -> _Details:
        metadata: list[Any] = [m for m in (details.metadata or ()) if m[0] != "authorization"]
        return _Details(details, [*metadata, *self._header])

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)


def open_channel(
    address: str,
    token: str | None,
    tls: ClientTls | None = None,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.Channel:
    """A channel to `address` (TLS when `tls` is given) whose calls carry `token`."""
    opts = list(options)
    if tls is not None:
        channel = grpc.secure_channel(address, tls.credentials(), options=opts + tls.options())
    else:
        channel = grpc.insecure_channel(address, options=opts)
    if token:
        channel = grpc.intercept_channel(channel, _BearerInterceptor(token))
    return channel
