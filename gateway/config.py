"""Gateway configuration: one frozen dataclass built from flags and the environment."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psycopg.conninfo

from learning import provenance
from metalearn.limits import CommandLimits
from metalearn.tls import ClientTls, ServerTls

DEFAULT_LISTEN = "127.0.0.1:50051"
DEFAULT_DATA_DIR = Path(".metalearn")
# Filtered lists at once (see `scan_slots`): half the cores, where the embedded database
# shares the machine with the gateway and a trainer; at least one.
SCAN_SLOTS = max(1, (os.cpu_count() or 2) // 2)


@dataclass(frozen=True)
class Limits(CommandLimits):
    """Bounds on what a client may send; each breach is a clear INVALID_ARGUMENT.

    A command's bounds (epochs, batch size, layers, labels, pixels after its image ops
    and transforms...) are inherited from `metalearn.limits`, the trainer's too, so the
    gateway queues nothing a trainer would refuse for its size.
    """

    max_message_bytes: int = 32 * 1024 * 1024
    max_image_bytes: int = 16 * 1024 * 1024
    # Pixels of an uploaded image. 40 megapixels: larger than any photo a classifier
    # needs, small enough that a decompression bomb cannot take the gateway's memory.
    # (What a command may make of it is `max_input_pixels`.)
    max_image_pixels: int = 40_000_000
    max_page_size: int = 1000
    default_page_size: int = 50


@dataclass(frozen=True)
class QueuePolicy:
    """The dispatcher's settings a queued attempt's `waiting` is told against."""

    trainer_timeout_seconds: float = 10.0
    wide_reserve_seconds: float = 120.0


@dataclass(frozen=True)
class GatewayConfig:
    """Everything the gateway needs to start."""

    listen: str = DEFAULT_LISTEN
    # None means: start an embedded PostgreSQL in data_dir.
    database_url: str | None = None
    # Streaming replicas of it that take reads (gateway/replicas/): attempts' reads and
    # watches' snapshots; a caller's reads wait for its own writes to reach one.
    read_database_urls: tuple[str, ...] = ()
    data_dir: Path = DEFAULT_DATA_DIR
    pool_min_size: int = 2
    pool_max_size: int = 10
    # Cost budget of a request (issue 25): each of its statements is cancelled after
    # this long (RESOURCE_EXHAUSTED), whatever deadline the caller chose. A few seconds:
    # every request path is an indexed read or a bounded write.
    statement_timeout_seconds: float = 5.0
    # The service's own work (dispatcher, study driver, profiler, fits) has connections
    # of its own that no request can take, with a budget meant for admin-sized work.
    service_pool_size: int = 4
    service_statement_timeout_seconds: float = 600.0
    # Calls one principal may have in flight at once: unary calls (beyond it a call
    # waits up to `principal_wait_seconds`, then RESOURCE_EXHAUSTED) and open streams.
    principal_calls: int = 8
    principal_streams: int = 64
    # Runs one principal may have reporting at once (ReportingService.ReportRun).
    principal_reports: int = 1024
    principal_wait_seconds: float = 5.0
    # Filtered or field-ordered ListAttempts running at once, whoever sends them (the
    # caller chooses their cost; what stays free serves every other call).
    scan_slots: int = SCAN_SLOTS
    grace_seconds: float = 10.0
    limits: Limits = field(default_factory=Limits)
    # Orchestration. A crashing command is retried this often, then FAILED.
    max_restarts: int = 3
    # Runs lost with their gateway (a lapsed lease) are not the command's fault; this
    # generous bound only makes sure an attempt that kills every gateway ends.
    max_lost_runs: int = 20
    # A trainer that refused work (every slot busy) is skipped this long.
    refusal_backoff_seconds: float = 1.0
    # A stopping gateway asks its trainers to checkpoint the runs it holds and waits
    # this long for them (an epoch's end) before it cancels what is left.
    handback_seconds: float = 5.0
    # A running attempt's lease: renewed by its gateway every third of it; once it
    # lapses (the gateway died) any replica requeues the attempt.
    lease_seconds: float = 15.0
    # Trainers send a heartbeat this often; one silent for `trainer_timeout_seconds`
    # gets no new work.
    heartbeat_seconds: float = 2.0
    trainer_timeout_seconds: float = QueuePolicy.trainer_timeout_seconds
    # How often the dispatcher looks at the queue when nothing wakes it.
    dispatch_seconds: float = 1.0
    # An attempt on more devices than any trainer has free lets narrower ones pass it
    # for this long; then trainers that could run it take nothing newer until it runs.
    wide_reserve_seconds: float = QueuePolicy.wide_reserve_seconds
    # Studies are advanced on every queue notification, and at least this often (a
    # missed notification, a time limit).
    study_tick_seconds: float = 2.0
    # Once no task's profile lacks a feature trainers compute now, the profiler searches
    # for one again only this often (the search reads every READY task; stale profiles
    # appear only from an older store, an older trainer or an expired hold).
    stale_profile_check_seconds: float = 600.0
    # Security (docs/architecture.md §10). False only for loopback: every caller is then an admin.
    auth: bool = True
    # TLS of the gateway's own port (None: plaintext).
    tls: ServerTls | None = None
    # How the gateway calls trainers: the CA it trusts and, for mutual TLS, the
    # certificate it shows (None: plaintext).
    trainer_tls: ClientTls | None = None
    # Operator-provided secrets (mounted files) for the admin token and for a token
    # named "trainers" with the trainer role.
    admin_token_file: Path | None = None
    trainer_token_file: Path | None = None
    # A checkpoint or weights file a trainer streams may not exceed this.
    max_artifact_bytes: int = 2 * 1024**3
    # A trainer that streamed something impossible gets no work for this long.
    quarantine_seconds: float = 300.0
    # Principals whose imported runs (claims, not runs trained here) suggestions, warm
    # starts and the task distance learn from, beside admins' and each caller's own:
    # any writer may import anything, so no one else's claims count unless named here.
    trusted_owners: tuple[str, ...] = ()
    # What a trusted claim (an imported or reported run) weighs beside a run trained here
    # in what learns from the store (learning/provenance.py), 0 to 1.
    claim_weight: float = provenance.CLAIM_WEIGHT

    def __post_init__(self) -> None:
        if not 0.0 <= self.claim_weight <= 1.0:
            raise ValueError(f"claim_weight must be between 0 and 1, got {self.claim_weight}")

    @classmethod
    def from_args(
        cls,
        listen: str | None,
        data_dir: str | None,
        database_url: str | None,
        lease_seconds: float | None = None,
        max_restarts: int | None = None,
        *,
        auth: bool = True,
        tls: ServerTls | None = None,
        trainer_tls: ClientTls | None = None,
        admin_token_file: str | None = None,
        trainer_token_file: str | None = None,
        trusted_owners: Sequence[str] | None = None,
        statement_timeout: float | None = None,
        calls_per_token: int | None = None,
        read_database_urls: Sequence[str] | None = None,
    ) -> GatewayConfig:
        """Builds the config from CLI flags, falling back to METALEARN_* variables."""
        # "postgresql://" names no parameter: libpq takes them all from PGHOST, PGUSER...
        url = database_url or os.environ.get("METALEARN_DATABASE_URL") or None
        password_file = os.environ.get("METALEARN_DATABASE_PASSWORD_FILE")
        if url and password_file:
            # A mounted secret, so the password appears in no URL, flag or environment.
            password = Path(password_file).read_text(encoding="utf-8").strip()
            url = psycopg.conninfo.make_conninfo(url, password=password)
        admin_file = admin_token_file or os.environ.get("METALEARN_ADMIN_TOKEN_FILE")
        trainer_file = trainer_token_file or os.environ.get("METALEARN_TRAINER_TOKEN_FILE")
        if read_database_urls is None:  # METALEARN_READ_DATABASE_URLS: space-separated
            read_database_urls = os.environ.get("METALEARN_READ_DATABASE_URLS", "").split()
        if read_database_urls and password_file:  # the replicas' password is the primary's
            password = Path(password_file).read_text(encoding="utf-8").strip()
            read_database_urls = [
                psycopg.conninfo.make_conninfo(u, password=password) for u in read_database_urls
            ]
        if trusted_owners is None:  # METALEARN_TRUSTED_OWNERS: names, comma-separated
            trusted_owners = os.environ.get("METALEARN_TRUSTED_OWNERS", "").split(",")
        return cls(
            listen=listen or os.environ.get("METALEARN_LISTEN") or DEFAULT_LISTEN,
            data_dir=Path(data_dir or os.environ.get("METALEARN_DATA_DIR") or DEFAULT_DATA_DIR),
            database_url=url,
            read_database_urls=tuple(read_database_urls),
            lease_seconds=lease_seconds or cls.lease_seconds,
            max_restarts=cls.max_restarts if max_restarts is None else max_restarts,
            auth=auth,
            tls=tls,
            trainer_tls=trainer_tls,
            admin_token_file=Path(admin_file) if admin_file else None,
            trainer_token_file=Path(trainer_file) if trainer_file else None,
            trusted_owners=tuple(sorted({o.strip() for o in trusted_owners if o.strip()})),
            claim_weight=float(os.environ.get("METALEARN_CLAIM_WEIGHT") or provenance.CLAIM_WEIGHT),
            statement_timeout_seconds=statement_timeout
            or float(
                os.environ.get("METALEARN_STATEMENT_TIMEOUT") or cls.statement_timeout_seconds
            ),
            principal_calls=calls_per_token
            or int(os.environ.get("METALEARN_CALLS_PER_TOKEN") or cls.principal_calls),
        )
