"""Tokens as people read them."""

from __future__ import annotations

from metalearn.v1 import token_service_pb2


def role_text(value: int) -> str:
    """ROLE_WRITER -> "writer"."""
    return token_service_pb2.Role.Name(value).removeprefix("ROLE_").lower()  # type: ignore[arg-type]
