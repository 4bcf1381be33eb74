"""Test helpers: image makers and database snapshots."""

from __future__ import annotations

import io
from typing import Any

import psycopg
from PIL import Image

from gateway.inprocess import GatewayThread

__all__ = ["GatewayThread", "png", "snapshot", "truncate"]


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
