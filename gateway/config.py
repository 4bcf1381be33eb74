"""Gateway configuration: one frozen dataclass built from flags and the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_LISTEN = "127.0.0.1:50051"
DEFAULT_DATA_DIR = Path(".metalearn")


@dataclass(frozen=True)
class Limits:
    """Bounds on what a client may send; each breach is a clear INVALID_ARGUMENT."""

    max_message_bytes: int = 32 * 1024 * 1024
    max_image_bytes: int = 16 * 1024 * 1024
    # 40 megapixels: larger than any photo a classifier needs, small enough that a
    # decompression bomb cannot take the gateway's memory.
    max_image_pixels: int = 40_000_000
    max_layers: int = 256
    max_labels: int = 10_000
    max_epochs: int = 100_000
    max_batch_size: int = 65_536
    max_page_size: int = 1000
    default_page_size: int = 50


@dataclass(frozen=True)
class GatewayConfig:
    """Everything the gateway needs to start."""

    listen: str = DEFAULT_LISTEN
    # None means: start an embedded PostgreSQL in data_dir.
    database_url: str | None = None
    data_dir: Path = DEFAULT_DATA_DIR
    pool_min_size: int = 2
    pool_max_size: int = 10
    grace_seconds: float = 10.0
    limits: Limits = field(default_factory=Limits)
    # Orchestration. A crashing command is retried this often, then FAILED.
    max_restarts: int = 3
    # A running attempt's lease: renewed by its gateway every third of it; once it
    # lapses (the gateway died) any replica requeues the attempt.
    lease_seconds: float = 15.0
    # Trainers send a heartbeat this often; one silent for `trainer_timeout_seconds`
    # gets no new work.
    heartbeat_seconds: float = 2.0
    trainer_timeout_seconds: float = 10.0
    # How often the dispatcher looks at the queue when nothing wakes it.
    dispatch_seconds: float = 1.0
    artifact_chunk_bytes: int = 1024 * 1024

    @classmethod
    def from_args(
        cls,
        listen: str | None,
        data_dir: str | None,
        database_url: str | None,
        lease_seconds: float | None = None,
        max_restarts: int | None = None,
    ) -> GatewayConfig:
        """Builds the config from CLI flags, falling back to METALEARN_* variables."""
        url = database_url or os.environ.get("METALEARN_DATABASE_URL") or None
        return cls(
            listen=listen or os.environ.get("METALEARN_LISTEN") or DEFAULT_LISTEN,
            data_dir=Path(data_dir or os.environ.get("METALEARN_DATA_DIR") or DEFAULT_DATA_DIR),
            database_url=url,
            lease_seconds=lease_seconds or cls.lease_seconds,
            max_restarts=cls.max_restarts if max_restarts is None else max_restarts,
        )
