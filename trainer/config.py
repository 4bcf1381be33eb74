"""The trainer daemon's settings: one frozen dataclass, built from flags and environment."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

from metalearn.credentials import find_token
from metalearn.limits import CommandLimits
from metalearn.tls import ClientTls, ServerTls, client_tls, server_tls
from trainer import cache


@dataclass(frozen=True)
class Limits(CommandLimits):
    """What one command may ask for; beyond these it is refused before any work.

    Every bound comes from `metalearn.limits`, which the gateway's limits share, so the
    gateway never queues a command this trainer would refuse for its size.
    """


@dataclass(frozen=True)
class TrainerConfig:
    """How a trainer runs: where it listens, which gateway feeds it, how much at once."""

    listen: str = "127.0.0.1:50052"
    gateway: str = "127.0.0.1:50051"
    # The address the gateway calls back; empty: the bound one.
    advertise: str = ""
    # Runs at once; each gets its own process (and, with CUDA, its own device in turn).
    capacity: int = 1
    # "auto" (CUDA when present), "cpu" or "cuda".
    device: str = "auto"
    # Preprocessed datasets, keyed by a fingerprint of images and ops.
    cache_dir: Path = Path(".metalearn/trainer-cache")
    # Bytes of cache files kept: after each new one, the least recently used others go
    # until the rest fit (0: only the newest is kept).
    cache_max_bytes: int = cache.DEFAULT_MAX_BYTES
    checkpoint_every_epochs: int = 5
    checkpoint_every_seconds: float = 300.0
    # Artifacts travel in chunks of this size.
    chunk_bytes: int = 1024 * 1024
    # Torch threads per run (0: torch's default).
    threads_per_run: int = 0
    # Seconds a cancelled run gets to stop by itself before it is killed.
    stop_grace_seconds: float = 10.0
    # A call that finds every slot busy waits this long for one before it is refused:
    # a run that just ended (or was cancelled) frees its slot only once its process
    # exits, and the gateway may already have handed out the next one.
    slot_wait_seconds: float = 15.0
    # Seconds for each call to the gateway (ReadImages of a whole dataset included).
    gateway_deadline_seconds: float = 600.0
    max_message_bytes: int = 512 * 1024 * 1024
    limits: Limits = Limits()
    # The trainer token it registers and reads images with (docs/architecture.md §10).
    token: str = ""
    # The credential its gateway presents; empty: the one each registration hands over.
    gateway_credential: str = ""
    # TLS of the trainer's own port, and of its channel to the gateway (None: plaintext).
    tls: ServerTls | None = None
    gateway_tls: ClientTls | None = None

    def __post_init__(self) -> None:
        if self.cache_max_bytes < 0:
            raise ValueError(
                "cache_max_bytes (--cache-max-bytes) must be at least 0,"
                f" got {self.cache_max_bytes}"
            )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> TrainerConfig:
        """From `metalearn trainer` flags, falling back on METALEARN_* variables."""
        return cls(
            listen=args.listen,
            gateway=args.gateway or os.environ.get("METALEARN_GATEWAY", cls.gateway),
            advertise=args.advertise or "",
            capacity=args.capacity,
            device=args.device,
            cache_dir=Path(args.cache_dir),
            cache_max_bytes=args.cache_max_bytes,
            checkpoint_every_epochs=args.checkpoint_every_epochs,
            checkpoint_every_seconds=args.checkpoint_every_seconds,
            threads_per_run=args.threads,
            limits=Limits(max_parameters=args.max_parameters),
            token=find_token(args.token) or "",
            gateway_credential=os.environ.get("METALEARN_GATEWAY_CREDENTIAL", ""),
            tls=server_tls(args),
            gateway_tls=client_tls(args),
        )
