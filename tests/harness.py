"""Test helpers: image makers and database snapshots."""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Iterable
from typing import Any

import psycopg
import psycopg.conninfo
from PIL import Image
from psycopg import sql

from gateway.inprocess import GatewayThread
from gateway.store.curves import CURVES

__all__ = ["GatewayThread", "fresh_database", "png", "snapshot", "truncate", "upload_labels"]


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
        trainers = conn.execute("SELECT address, capacity FROM trainers ORDER BY 1").fetchall()
        artifacts = conn.execute(
            "SELECT attempt_id, kind, epoch, chunk, md5(data) FROM artifacts ORDER BY 1, 2, 4"
        ).fetchall()
        return attempts, epochs, images, trainers, artifacts


def fresh_database(server_url: str, prefix: str) -> str:
    """A new, empty database on the same server: a gateway there dispatches to its own
    trainers only (the session gateway never sees them)."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return psycopg.conninfo.make_conninfo(server_url, dbname=name)


def truncate(database_url: str) -> None:
    """Empties every table (identities restart) between tests.

    The gateway's dispatcher queries these tables every second; a TRUNCATE that meets
    one of its statements in a deadlock is simply tried again. It also gives up waiting
    for its lock after a while and tries again: the gateway may hold a transaction open
    (a study's row lock) while it awaits a query on another connection, which queues
    behind this TRUNCATE's lock, a cycle PostgreSQL cannot see (a test hung on it).
    """
    for attempt in range(60):
        try:
            with psycopg.connect(database_url) as conn:
                conn.execute("SET lock_timeout = '2s'")
                conn.execute(
                    "TRUNCATE attempts, attempt_epochs, images, trainers, artifacts, studies,"
                    " tasks, task_history, unseen_task_keys, task_distance, curve_models,"
                    " trainer_quarantines"
                    " RESTART IDENTITY CASCADE"
                )
                # What a gateway keeps of the curve model it re-reads only every few
                # seconds, or when told: told, as a fit on another replica tells it (a
                # test right after one that fitted a model would see that model).
                conn.execute("SELECT pg_notify(%s, 'truncated')", (CURVES,))
            return
        except (psycopg.errors.DeadlockDetected, psycopg.errors.LockNotAvailable):
            if attempt == 59:
                raise
            time.sleep(0.1)


def unregister(database_url: str, address: str) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute("DELETE FROM trainers WHERE address = %s", (address,))


def upload_labels(gateway: GatewayThread, labels: Iterable[str]) -> None:
    """One small image for each label: Train refuses labels that have none. Grayscale
    8x8, as the digits are: a later module's digits of these labels still train."""
    from metalearn.v1 import dataset_service_pb2, dataset_service_pb2_grpc

    buf = io.BytesIO()
    Image.new("L", (8, 8), 77).save(buf, format="PNG")
    uploads = [
        dataset_service_pb2.UploadImagesRequest(label=label, data=buf.getvalue())
        for label in labels
    ]
    with gateway.channel() as channel:
        dataset_service_pb2_grpc.DatasetServiceStub(channel).UploadImages(iter(uploads))


def watch_workers(monkeypatch: Any) -> list[str]:
    """The names of the functions sent to the gateway's worker processes from now on
    (gateway/workers.py), in order."""
    from gateway import workers

    sent: list[str] = []
    run = workers.run

    async def watched(fn: Any, *args: Any) -> Any:
        sent.append(fn.__name__)
        return await run(fn, *args)

    monkeypatch.setattr(workers, "run", watched)
    return sent
