"""Builds the gateway's gRPC server and runs it until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Protocol

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from optuna.storages._grpc.auto_generated import api_pb2 as optuna_api_pb2
from optuna.storages._grpc.auto_generated import api_pb2_grpc as optuna_api_pb2_grpc

from gateway.attempts.servicer import AttemptServicer, status_wire, watch_response
from gateway.auth import Authenticator, AuthInterceptor, Role, check_covers
from gateway.auth.bootstrap import ADMIN, ensure_admin_token, seed_token
from gateway.auth.budget import PrincipalBudget
from gateway.auth.servicer import TokenServicer
from gateway.config import GatewayConfig, QueuePolicy
from gateway.curves.live import Curves
from gateway.curves.servicer import CurveServicer
from gateway.curves.watch import PrognosisWatcher
from gateway.datasets.servicer import DatasetServicer
from gateway.dispatcher import Dispatcher
from gateway.embedded import EmbeddedPostgres
from gateway.epochs import EpochPath, EpochWatcher
from gateway.events import EventHub
from gateway.optuna.servicer import OptunaStorageServicer, OptunaTrialServicer
from gateway.replicas.interceptor import ReadYourWrites
from gateway.replicas.router import ReadRouter
from gateway.reporting.lapses import Lapses
from gateway.reporting.servicer import ReportingServicer
from gateway.reporting.writer import ReportWriter
from gateway.request_sizes import RequestSizes
from gateway.slots import Slots
from gateway.store import AttemptStore, Database, ImageStore, migrate
from gateway.store.curves import CURVES, CurveStore
from gateway.store.optuna import OptunaStore
from gateway.store.reports import ReportStore
from gateway.store.run_files import RunFileStore
from gateway.store.studies import StudyStore
from gateway.store.tasks import TaskStore
from gateway.store.tokens import TOKENS, TokenStore
from gateway.store.trainers import TrainerStore
from gateway.store.work import WorkStore
from gateway.studies.driver import StudyDriver
from gateway.studies.external import ExternalTrials
from gateway.studies.pruning import Pruning
from gateway.studies.servicer import StudyServicer
from gateway.studies.wakes import StudyWakes
from gateway.tasks.learner import Learner
from gateway.tasks.profiler import TaskProfiler
from gateway.tasks.rankings import KeptRankings
from gateway.tasks.servicer import TaskServicer
from gateway.tasks.warm import WarmStarter
from gateway.trainers.registry import TrainerRegistryServicer
from metalearn.standard_services import AsyncHealthServicer, enable_server_reflection
from metalearn.tls import NO_PORT_SHARING, is_loopback, listen_on
from metalearn.v1 import (
    attempt_service_pb2,
    attempt_service_pb2_grpc,
    curve_service_pb2,
    curve_service_pb2_grpc,
    dataset_service_pb2,
    dataset_service_pb2_grpc,
    optuna_trial_service_pb2,
    optuna_trial_service_pb2_grpc,
    reporting_service_pb2,
    reporting_service_pb2_grpc,
    study_service_pb2,
    study_service_pb2_grpc,
    task_service_pb2,
    task_service_pb2_grpc,
    token_service_pb2,
    token_service_pb2_grpc,
    trainer_registry_service_pb2,
    trainer_registry_service_pb2_grpc,
)
from metalearn.waiting import cancel_and_wait

log = logging.getLogger(__name__)

SERVICES = (
    attempt_service_pb2.DESCRIPTOR.services_by_name["AttemptService"],
    dataset_service_pb2.DESCRIPTOR.services_by_name["DatasetService"],
    trainer_registry_service_pb2.DESCRIPTOR.services_by_name["TrainerRegistryService"],
    token_service_pb2.DESCRIPTOR.services_by_name["TokenService"],
    study_service_pb2.DESCRIPTOR.services_by_name["StudyService"],
    task_service_pb2.DESCRIPTOR.services_by_name["TaskService"],
    curve_service_pb2.DESCRIPTOR.services_by_name["CurveService"],
    reporting_service_pb2.DESCRIPTOR.services_by_name["ReportingService"],
    # Optuna's own protocol (gateway/optuna/): Optuna's clients keep their studies here.
    optuna_api_pb2.DESCRIPTOR.services_by_name["StorageService"],
    optuna_trial_service_pb2.DESCRIPTOR.services_by_name["OptunaTrialService"],
)
SERVICE_NAMES = tuple(service.full_name for service in SERVICES)


class Loop(Protocol):
    """Work a feature runs beside the server until the gateway stops."""

    name: str

    async def run(self) -> None: ...


class Background:
    """What runs beside the server: the event hub, the dispatcher, the study driver,
    the task profiler, the curve model's refits, and the loops features add."""

    def __init__(
        self,
        hub: EventHub,
        dispatcher: Dispatcher,
        studies: StudyDriver,
        profiler: TaskProfiler,
        curves: Curves,
        loops: Sequence[Loop] = (),
    ) -> None:
        self.hub = hub
        self.dispatcher = dispatcher
        self.studies = studies
        self.profiler = profiler
        self.curves = curves
        self._loops: list[tuple[str, Callable[[], Coroutine[None, None, None]]]] = [
            ("studies", studies.run),
            ("task-profiler", profiler.run),
            ("curve-refits", curves.run),
            *((loop.name, loop.run) for loop in loops),
        ]
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        await self.hub.start()
        await self.dispatcher.start()
        self._tasks = [asyncio.create_task(run(), name=name) for name, run in self._loops]

    async def stop(self) -> None:
        # Watchers first: they reconnect (with from_epoch) to a replica that stays,
        # instead of holding this one's drain for its whole grace period.
        self.hub.end_watches()
        for task in self._tasks:
            await cancel_and_wait(task)
        await self.dispatcher.stop()
        await self.hub.stop()


def _grpc_server(
    config: GatewayConfig, authenticator: Authenticator | None, reads: ReadRouter
) -> grpc.aio.Server:
    """The gRPC server every call passes through: authentication and each principal's
    budget first, then the request's size budget; with read replicas, each write's
    position noted for its caller last."""
    size = config.limits.max_message_bytes
    budget = PrincipalBudget(
        config.principal_calls,
        config.principal_streams,
        config.principal_wait_seconds,
        config.principal_reports,
    )
    return grpc.aio.server(
        # Sizes inside authentication: an unauthenticated call learns nothing else.
        interceptors=[
            AuthInterceptor(authenticator, budget),
            RequestSizes.for_limits(config.limits),
            *([ReadYourWrites(reads)] if reads.replicas else []),
        ],
        options=[
            ("grpc.max_receive_message_length", size),
            ("grpc.max_send_message_length", size),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
            NO_PORT_SHARING,
        ],
    )


async def create_server(
    config: GatewayConfig,
    pool: Database,
    health: AsyncHealthServicer | None = None,
    replicas: Sequence[Database] = (),
) -> tuple[grpc.aio.Server, int, Background]:
    """A gateway server bound to `config.listen` (port 0 picks a free one), not started,
    and its background work (start it with the server, stop it after).

    Health follows the database: NOT_SERVING while it is down, since every call would
    fail (a load balancer then sends them to a replica that can answer)."""
    if not config.auth and not is_loopback(config.listen):
        raise ValueError("authentication may be switched off only on a loopback address")
    check_covers(SERVICES)  # every RPC has an access rule, or the gateway does not start
    tokens = TokenStore(pool)
    authenticator = Authenticator(tokens) if config.auth else None
    # Reads a streaming replica may answer go through this (gateway/replicas/).
    reads = ReadRouter(pool, replicas)
    server = _grpc_server(config, authenticator, reads)
    attempts, work, trainers, images = (
        AttemptStore(pool),
        WorkStore(pool),
        TrainerStore(pool),
        ImageStore(pool),
    )
    studies = StudyStore(pool)
    # The service's own work runs on the pool's service lane: connections no request
    # can take, and a statement budget sized for it rather than for a request.
    lane = pool.service
    service_attempts, service_work, service_trainers = (
        AttemptStore(lane),
        WorkStore(lane),
        TrainerStore(lane),
    )
    scans = Slots("filtered lists", config.scan_slots, config.principal_wait_seconds * 2)
    # The hub's LISTEN connection is its own, outside the pool: it is held for good.
    assert isinstance(pool.conninfo, str)
    hub = EventHub(
        pool.conninfo,
        service_attempts,
        functools.partial(status_wire, service_attempts),
        encode_epoch=watch_response,
    )
    queue = QueuePolicy(config.trainer_timeout_seconds, config.wide_reserve_seconds)
    servicer = AttemptServicer(attempts, work, hub, config.limits, images, scans, queue, reads)
    attempt_service_pb2_grpc.add_AttemptServiceServicer_to_server(servicer, server)
    trainer_registry_service_pb2_grpc.add_TrainerRegistryServiceServicer_to_server(
        TrainerRegistryServicer(trainers, config, work, RunFileStore(pool)), server
    )
    dataset_service_pb2_grpc.add_DatasetServiceServicer_to_server(
        DatasetServicer(images, trainers, config.limits), server
    )
    token_service_pb2_grpc.add_TokenServiceServicer_to_server(
        TokenServicer(tokens, authenticator), server
    )
    tasks = TaskStore(pool)
    learner = Learner(tasks, config.trusted_owners, config.claim_weight)
    service_tasks = TaskStore(lane)
    profiler = TaskProfiler(config, service_tasks, service_trainers)
    task_service_pb2_grpc.add_TaskServiceServicer_to_server(
        TaskServicer(tasks, images, attempts, learner, profiler, config.limits), server
    )
    driver = StudyDriver(
        config,
        StudyStore(lane),
        service_work,
        service_trainers,
        WarmStarter(service_tasks, learner),
        ExternalTrials(StudyStore(lane), ReportStore(lane), config.limits),
    )
    wakes = StudyWakes()
    study_service_pb2_grpc.add_StudyServiceServicer_to_server(
        StudyServicer(
            studies,
            attempts,
            work,
            images,
            driver,
            wakes,
            config.limits,
            ExternalTrials(studies, ReportStore(pool), config.limits),
        ),
        server,
    )
    curve_store = CurveStore(lane, config.trusted_owners)
    curves = Curves(curve_store, config.claim_weight)
    curve_service_pb2_grpc.add_CurveServiceServicer_to_server(
        CurveServicer(curves, curve_store), server
    )
    health = health or AsyncHealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    await _follow_database(pool, health)
    # v1 and v1alpha, so grpcurl and `buf curl` need no proto files (reflection reveals
    # only the public API).
    enable_server_reflection(
        (*SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name), server
    )
    port = listen_on(server, config.listen, config.tls)
    # Every stored epoch is then judged by these, in this order (docs/architecture.md §5):
    # its prognosis first (a hopeless run that asked to stop stops), then its study's
    # pruner. A new per-epoch consumer is one more watcher here.
    prognoses = PrognosisWatcher(curves)  # also a loop: the deferred prognoses' batches
    watchers: list[EpochWatcher] = [prognoses, Pruning(StudyStore(lane), curves)]
    epochs = EpochPath(service_attempts, hub, watchers)
    dispatcher = Dispatcher(config, service_work, service_trainers, ImageStore(lane), hub, epochs)
    # Runs of users' own code take the same path and watchers as a trainer's, storing
    # on the requests' connections (the service lane is the dispatcher's).
    writer = ReportWriter(ReportStore(pool))
    reporting_service_pb2_grpc.add_ReportingServiceServicer_to_server(
        ReportingServicer(
            ReportStore(pool),
            work,
            EpochPath(attempts, hub, watchers),
            hub,
            config.limits,
            config.max_artifact_bytes,
            writer,
            TaskStore(pool),
        ),
        server,
    )
    optuna_api_pb2_grpc.add_StorageServiceServicer_to_server(  # type: ignore[no-untyped-call]
        OptunaStorageServicer(OptunaStore(pool)), server
    )
    optuna_trial_service_pb2_grpc.add_OptunaTrialServiceServicer_to_server(
        OptunaTrialServicer(OptunaStore(pool)), server
    )
    # What each feature hears of, from the database's notifications (on any replica).
    dispatcher.register(hub)
    driver.register(hub)
    profiler.register(hub)
    wakes.register(hub)
    if authenticator is not None:
        hub.listen(TOKENS, lambda _: authenticator.forget())
    hub.listen(CURVES, lambda _: curves.forget())
    loops: list[Loop] = [Lapses(ReportStore(lane)), writer, prognoses, KeptRankings(learner)]
    return server, port, Background(hub, dispatcher, driver, profiler, curves, loops)


async def _follow_database(database: Database, health: AsyncHealthServicer) -> None:
    """Sets every service's health from the database's state, now and on each change."""

    async def follow(up: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if up
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        # Ignored once shutting down: the servicer then keeps NOT_SERVING.
        for name in (*SERVICE_NAMES, ""):
            await health.set(name, status)

    await follow(database.up)
    database.add_listener(follow)


async def prepare_tokens(config: GatewayConfig, pool: Database) -> None:
    """The tokens an operator handed over, and the first admin token when there is none."""
    tokens = TokenStore(pool)
    if config.admin_token_file is not None:
        await seed_token(tokens, ADMIN, Role.ADMIN, config.admin_token_file)
    else:
        await ensure_admin_token(tokens, config.data_dir)
    if config.trainer_token_file is not None:
        await seed_token(tokens, "trainers", Role.TRAINER, config.trainer_token_file)


def database_for(
    config: GatewayConfig,
    conninfo: str,
    prepare: Callable[[str], Awaitable[object]] | None = None,
) -> Database:
    """The gateway's watched pool (not opened): request connections with a statement
    budget, and the service's own lane."""
    return Database(
        conninfo,
        config.pool_min_size,
        config.pool_max_size,
        statement_timeout=config.statement_timeout_seconds,
        service_size=config.service_pool_size,
        service_statement_timeout=config.service_statement_timeout_seconds,
        prepare=prepare,
    )


async def open_replicas(config: GatewayConfig) -> list[Database]:
    """The read replicas' watched pools, open (one that cannot be reached yet counts as
    down: reads go elsewhere until it is there). No migrations: a replica follows the
    primary's schema, and takes no writes."""
    replicas = [database_for(config, url) for url in config.read_database_urls]
    for replica in replicas:
        await replica.open(wait=True, allow_down=True)
    return replicas


async def _first(wanted: Awaitable[None], stop: Awaitable[bool]) -> bool:
    """Awaits `wanted` unless `stop` comes first; whether `wanted` came."""
    wanted_task = asyncio.ensure_future(wanted)
    stop_task = asyncio.ensure_future(stop)
    done, pending = await asyncio.wait(
        (wanted_task, stop_task), return_when=asyncio.FIRST_COMPLETED
    )
    for task in pending:
        await cancel_and_wait(task)
    return wanted_task in done


def _warn_if_exposed(config: GatewayConfig) -> None:
    if config.tls is None and not is_loopback(config.listen):
        log.warning(
            "\n%s\nWARNING: listening on %s WITHOUT TLS: tokens, images and weights cross"
            " the network in the clear. Give --tls-cert and --tls-key.\n%s",
            "!" * 78,
            config.listen,
            "!" * 78,
        )


async def run_gateway(config: GatewayConfig, on_ready: Callable[[str], None] = print) -> None:
    """Runs the gateway (with an embedded PostgreSQL unless a URL is given) until signalled."""
    embedded = None
    supervisor: asyncio.Task[None] | None = None
    conninfo = config.database_url
    if conninfo is None:
        embedded = EmbeddedPostgres(config.data_dir)
        conninfo = await asyncio.to_thread(embedded.start)
        supervisor = asyncio.create_task(embedded.supervise(), name="embedded-postgres")
    database = database_for(config, conninfo, prepare=migrate)
    replicas = await open_replicas(config)
    try:
        # Started even while the database is not there: the port answers, health says
        # NOT_SERVING and calls UNAVAILABLE until it is (an orchestrator then waits, as
        # it does for a replica whose database went away, instead of a restart loop).
        await database.open(wait=True, allow_down=True)
        _warn_if_exposed(config)
        health = AsyncHealthServicer()
        server, port, background = await create_server(config, database, health, replicas)
        await server.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        host = config.listen.rsplit(":", 1)[0]
        if not database.up:
            log.warning("listening on %s:%d: NOT_SERVING until the database is there", host, port)
        if await _first(database.until_up(), stop.wait()):
            if config.auth:
                await prepare_tokens(config, database)
            await background.start()
            # Said once the gateway serves: the admin token file is written by then.
            on_ready(f"metalearn gateway listening on {host}:{port}")
            await stop.wait()
            log.info("stopping: draining calls for up to %.0f s", config.grace_seconds)
            # Load balancers stop sending new calls before the in-flight ones drain.
            await health.enter_graceful_shutdown()
            await background.stop()
        await server.stop(config.grace_seconds)
    finally:
        for replica in replicas:
            await replica.close()
        await database.close()
        if supervisor is not None:
            # Before the stop, or it would start the server again.
            await cancel_and_wait(supervisor)
        if embedded is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(embedded.stop)
        # Then what libraries left running (psycopg_pool's schedulers): asyncio.run
        # cancels each once at its end, and one that absorbs that cancel (see
        # metalearn/waiting.py) would keep the process from exiting.
        for task in asyncio.all_tasks() - {asyncio.current_task()}:
            try:
                await cancel_and_wait(task)
            except Exception:  # its own error: logged, and the others still end
                log.exception("a task ended with an error as the gateway stopped")
