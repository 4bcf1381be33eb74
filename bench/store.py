"""Benchmark of the attempt store: epoch appends, GetAttempt of long histories, calls/s.

Runs against a real embedded PostgreSQL and a real gateway on port 0, all started here.
  python bench/store.py          # a table
  python bench/store.py --json   # one JSON object, keys name the figures
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import psycopg
from psycopg.types.json import Jsonb

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.database import scratch_postgres
from bench.report import cpu_seconds, print_figures
from gateway.attempts import convert
from gateway.inprocess import GatewayThread
from gateway.store import AttemptStore, EpochRecord, open_pool
from metalearn import documents
from metalearn.credentials import open_channel
from metalearn.v1 import (
    attempt_pb2,
    attempt_service_pb2_grpc,
    token_service_pb2,
    token_service_pb2_grpc,
)
from metalearn.v1 import attempt_service_pb2 as pb

SEED = (
    Path(__file__).resolve().parents[1]
    / "tests"
    / "fixtures"
    / "attempt_american_dog_species_3.json"
)


class GatewayProcess:
    """`metalearn gateway` as its own process, against the given database; `token` is the
    admin token it wrote into `data_dir` (or one already there)."""

    def __init__(self, url: str, data_dir: Path, *extra: str, checkout: Path | None = None) -> None:
        # `checkout`: run the gateway of another checkout of this repository (its code
        # comes first on the path), e.g. a baseline from before a change.
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "metalearn.cli", "gateway", "--listen", "127.0.0.1:0",
             "--database-url", url, "--data-dir", str(data_dir), *extra],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=checkout,
        )  # fmt: skip
        assert self.proc.stdout is not None
        self.address = self.proc.stdout.readline().rsplit(" ", 1)[-1].strip()
        token_file = data_dir / "admin.token"
        self.token = token_file.read_text().strip() if token_file.is_file() else None

    def channel(self) -> grpc.Channel:
        return open_channel(self.address, self.token)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            # Still busy after 30 s (over a large store, a fit in a worker thread that
            # does not look at shutdown): the benchmark's figures are taken already.
            self.proc.kill()
            self.proc.wait(timeout=30)


def prefill(url: str, name: str, epochs: int) -> int:
    """An attempt with `epochs` stored epochs, written in one statement."""
    seed = documents.attempt_from_json(SEED.read_text())
    spec, doc = convert.stored_forms(convert.new_spec(seed))
    with psycopg.connect(url) as conn:
        row = conn.execute(
            # TRAINING under claim 0: the state in which a trainer's epochs are stored.
            "INSERT INTO attempts (name, spec, doc, status) VALUES (%s, %s, %s, 'TRAINING')"
            " RETURNING id",
            (name, spec, Jsonb(doc)),
        ).fetchone()
        assert row is not None
        conn.execute(
            "INSERT INTO attempt_epochs (attempt_id, epoch, loss, learning_rate, seconds)"
            " SELECT %s, g, 2.0 / g, 0.001, 1.5 FROM generate_series(1, %s) g",
            (row[0], epochs),
        )
        conn.execute("UPDATE attempts SET current_epoch = %s WHERE id = %s", (epochs, row[0]))
        return int(row[0])


async def append_costs(url: str, short_id: int, long_id: int, rounds: int) -> dict[str, float]:
    """Mean seconds per epoch append at a short and a long history, interleaved."""
    async with open_pool(url, 1, 2) as pool:
        store = AttemptStore(pool)
        times: dict[int, list[float]] = {short_id: [], long_id: []}
        next_epoch = {short_id: 11, long_id: 50_001}
        for _ in range(rounds):
            for attempt_id in (short_id, long_id):
                start = time.perf_counter()
                await store.append_epoch(attempt_id, 0, EpochRecord(next_epoch[attempt_id], 1.0))
                times[attempt_id].append(time.perf_counter() - start)
                next_epoch[attempt_id] += 1
    return {"short": statistics.median(times[short_id]), "long": statistics.median(times[long_id])}


def prototype_append_costs(url: str, rounds: int) -> dict[str, float]:
    """The prototype's way: read the whole document, append a loss, write it all back."""
    result = {}
    with psycopg.connect(url, autocommit=True) as conn:
        for label, history in (("short", 10), ("long", 50_000)):
            doc = {"name": f"proto-{label}", "training_losses": [2.0] * history}
            conn.execute("CREATE TABLE IF NOT EXISTS proto (name text PRIMARY KEY, doc jsonb)")
            conn.execute("INSERT INTO proto VALUES (%s, %s)", (doc["name"], Jsonb(doc)))
            times = []
            for _ in range(rounds):
                start = time.perf_counter()
                row = conn.execute(
                    "SELECT doc FROM proto WHERE name = %s", (doc["name"],)
                ).fetchone()
                assert row is not None
                stored = row[0]
                stored["training_losses"].append(1.0)
                conn.execute(
                    "UPDATE proto SET doc = %s WHERE name = %s", (Jsonb(stored), doc["name"])
                )
                times.append(time.perf_counter() - start)
            result[label] = statistics.median(times)
    return result


def get_latency(stub: Any, name: str, view: Any, calls: int) -> dict[str, float]:
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        stub.GetAttempt(pb.GetAttemptRequest(name=name, view=view))
        times.append(time.perf_counter() - start)
    times.sort()
    return {"p50": times[len(times) // 2], "p99": times[int(len(times) * 0.99)]}


def calls_per_second(
    stub: Any, seconds: float, concurrency: int, only: str = "", metadata: Any = None
) -> dict[str, float]:
    """CreateAttempt and GetAttempt rates from one client, sequential or with N in flight."""
    seed = documents.attempt_from_json(SEED.read_text())
    counter = iter(range(10**9))

    def create_request() -> Any:
        attempt = attempt_pb2.Attempt()
        attempt.CopyFrom(seed)
        attempt.name = f"rate-{concurrency}-{next(counter)}"
        return pb.CreateAttemptRequest(attempt=attempt)

    get_request = pb.GetAttemptRequest(name="rate-1-0")
    rates = {}
    for label, method, make in (
        ("create", stub.CreateAttempt, create_request),
        ("get", stub.GetAttempt, lambda: get_request),
    ):
        if only and label != only:
            continue
        done = 0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            # `concurrency` calls in flight on one channel, as an async client would have.
            futures = [method.future(make(), metadata=metadata) for _ in range(concurrency)]
            for future in futures:
                future.result()
            done += concurrency
        rates[label] = done / (time.perf_counter() - start)
    return rates


def floor_per_second(channel: grpc.Channel, seconds: float, concurrency: int) -> float:
    """The gRPC floor on the same server: WhoAmI, a unary call through the same
    interceptors (authentication, budgets, sizes) that touches no database."""
    stub = token_service_pb2_grpc.TokenServiceStub(channel)
    done = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        futures = [
            stub.WhoAmI.future(token_service_pb2.WhoAmIRequest()) for _ in range(concurrency)
        ]
        for future in futures:
            future.result()
        done += concurrency
    return done / (time.perf_counter() - start)


async def store_creates_per_second(url: str, seconds: float, concurrency: int) -> float:
    """The store's own INSERT of an attempt (its two stored forms made once, as the
    servicer makes them), `concurrency` at once on a pool of as many: the database's
    share of a CreateAttempt, without gRPC, checks or conversion."""
    seed = documents.attempt_from_json(SEED.read_text())
    spec, doc = convert.stored_forms(convert.new_spec(seed))
    counter = iter(range(10**9))
    async with open_pool(url, concurrency, concurrency) as pool:
        store = AttemptStore(pool)
        done = 0
        deadline = time.perf_counter() + seconds

        async def writer() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                await store.create(f"store-{next(counter)}", spec, doc, "bench")
                done += 1

        start = time.perf_counter()
        await asyncio.gather(*(writer() for _ in range(concurrency)))
        return done / (time.perf_counter() - start)


def batch_creates_per_second(
    stub: Any, seconds: float, size: int = 100, in_flight: int = 2
) -> float:
    """Attempts stored a second by BatchCreateAttempts: batches of `size`, `in_flight`
    at a time on one channel (what a client that makes many attempts sends)."""
    seed = documents.attempt_from_json(SEED.read_text())
    counter = iter(range(10**9))

    def batch() -> Any:
        requests = []
        for _ in range(size):
            attempt = attempt_pb2.Attempt()
            attempt.CopyFrom(seed)
            attempt.name = f"batch-{next(counter)}"
            requests.append(pb.CreateAttemptRequest(attempt=attempt))
        return pb.BatchCreateAttemptsRequest(requests=requests)

    done = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        futures = [stub.BatchCreateAttempts.future(batch()) for _ in range(in_flight)]
        for future in futures:
            done += len(future.result().attempts)
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    figures: dict[str, float] = {}
    with scratch_postgres() as scratch:
        url, tmp = scratch.url, scratch.dir
        gateway: GatewayThread | GatewayProcess = GatewayThread(url).start()  # migrates
        try:
            short_id, long_id = prefill(url, "short", 10), prefill(url, "long", 50_000)
            appends = asyncio.run(append_costs(url, short_id, long_id, args.rounds))
            figures["append_ms_at_10"] = appends["short"] * 1e3
            figures["append_ms_at_50000"] = appends["long"] * 1e3
            figures["append_ratio"] = appends["long"] / appends["short"]
            proto = prototype_append_costs(url, max(20, args.rounds // 10))
            figures["prototype_append_ms_at_10"] = proto["short"] * 1e3
            figures["prototype_append_ms_at_50000"] = proto["long"] * 1e3
            figures["prototype_append_ratio"] = proto["long"] / proto["short"]

            prefill(url, "ten-thousand", 10_000)
            # The client and the gateway in separate processes, as in production.
            gateway.stop()
            gateway = GatewayProcess(url, tmp / "gateway")
            with gateway.channel() as channel:
                stub = attempt_service_pb2_grpc.AttemptServiceStub(channel)
                for view, label in (
                    (pb.ATTEMPT_VIEW_BASIC, "basic"),
                    (pb.ATTEMPT_VIEW_FULL, "full"),
                ):
                    lat = get_latency(stub, "ten-thousand", view, 100)
                    figures[f"get_10000_epochs_{label}_p50_ms"] = lat["p50"] * 1e3
                    figures[f"get_10000_epochs_{label}_p99_ms"] = lat["p99"] * 1e3
                for concurrency in (1, 8):
                    before = cpu_seconds()
                    rates = calls_per_second(stub, args.seconds, concurrency, only="create")
                    spent = {k: v - before.get(k, 0.0) for k, v in cpu_seconds().items()}
                    calls = rates["create"] * args.seconds
                    figures[f"create_per_s_{concurrency}_in_flight"] = rates["create"]
                    figures[f"get_per_s_{concurrency}_in_flight"] = calls_per_second(
                        stub, args.seconds, concurrency, only="get"
                    )["get"]
                # Where a CreateAttempt's time goes (issue 30): the gRPC floor on the same
                # server, the store's INSERT alone, and the CPU each side spent a call.
                gateway_pid = f":{gateway.proc.pid}"
                figures["create_gateway_cpu_ms"] = (
                    1e3 * sum(v for k, v in spent.items() if k.endswith(gateway_pid)) / calls
                )
                figures["create_database_cpu_ms"] = (
                    1e3 * sum(v for k, v in spent.items() if k.startswith("postgres:")) / calls
                )
                figures["noop_per_s_8_in_flight"] = floor_per_second(channel, args.seconds, 8)
                figures["store_create_per_s_8_at_once"] = asyncio.run(
                    store_creates_per_second(url, args.seconds, 8)
                )
                figures["batch_create_per_s"] = batch_creates_per_second(stub, args.seconds)
                figures["batch_over_single_create"] = (
                    figures["batch_create_per_s"] / figures["create_per_s_8_in_flight"]
                )
        finally:
            gateway.stop()
    print_figures(figures, args.json)


if __name__ == "__main__":
    main()
