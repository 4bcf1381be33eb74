"""Reads beyond one database (issue 30): GetAttempt throughput through a gateway that
reads from a streaming replica against one that reads from the primary alone, in one
run; and what one primary sustains here (epochs appended a second by 8 writers).

  python bench/replicas.py --json

A primary and its streaming replica (`EmbeddedPostgres.replica`, pg_basebackup) on this
machine, a `metalearn gateway` process over each setting in turn, 8 calls in flight from
an asyncio client. Both servers and the gateway share this machine's cores: the ratio
says what a replica takes off the primary here, not what a replica on its own machine
adds (there it takes all the reads' database work away).

Figures:
- `primary_reads_per_s`, `replica_reads_per_s`: GetAttempt (ATTEMPT_VIEW_FULL, an
  attempt of EPOCHS epochs) calls a second, without and with `--read-database-url`;
- `replica_read_speedup`: their ratio (goal >= 1.6);
- `*_gateway_cpu_ms_per_read`, `*_database_cpu_ms_per_read`: CPU the gateway process
  and all PostgreSQL processes (primary and replica) spent a read: what bounds the
  rate on a machine shared by all of them;
- `primary_epochs_per_s`: epochs appended a second by 8 writers at once (the store's
  `append_epoch`, as a trainer's report reaches it), each its own attempt.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import cpu_seconds, print_figures
from bench.store import GatewayProcess, prefill
from gateway.embedded import EmbeddedPostgres
from gateway.store import AttemptStore, EpochRecord, open_pool
from metalearn.v1 import attempt_service_pb2 as pb
from metalearn.v1 import attempt_service_pb2_grpc

EPOCHS = 200
IN_FLIGHT = 8
SECONDS = 10.0
GOAL = 1.6


async def _reads_per_s(address: str, token: str | None, name: str, seconds: float) -> float:
    """GetAttempt calls a second with IN_FLIGHT in flight, for `seconds`."""
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    async with grpc.aio.insecure_channel(address) as channel:
        stub = attempt_service_pb2_grpc.AttemptServiceStub(channel)
        request = pb.GetAttemptRequest(name=name, view=pb.ATTEMPT_VIEW_FULL)
        await stub.GetAttempt(request, metadata=metadata)  # warm-up
        done = 0
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                reply = await stub.GetAttempt(request, metadata=metadata)
                assert len(reply.attempt.epochs) == EPOCHS
                done += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
        return done / (time.perf_counter() - start)


def reads(
    url: str, home: Path, name: str, seconds: float, *extra: str
) -> tuple[float, float, float]:
    """Calls a second, and the CPU milliseconds the gateway and the database servers
    spent a call."""
    gateway = GatewayProcess(url, home, *extra)
    try:
        before = cpu_seconds()
        rate = asyncio.run(_reads_per_s(gateway.address, gateway.token, name, seconds))
        after = cpu_seconds()
    finally:
        gateway.stop()
    spent = {k: v - before.get(k, 0.0) for k, v in after.items()}
    calls = rate * seconds
    mine = f":{gateway.proc.pid}"
    on_gateway = sum(v for k, v in spent.items() if k.endswith(mine))
    on_database = sum(v for k, v in spent.items() if k.startswith("postgres:"))
    return rate, on_gateway / calls * 1e3, on_database / calls * 1e3


async def _epochs_per_s(url: str, ids: list[int], seconds: float) -> float:
    async with open_pool(url, len(ids), len(ids)) as pool:
        store = AttemptStore(pool)
        done = 0
        deadline = time.perf_counter() + seconds

        async def writer(attempt_id: int) -> None:
            nonlocal done
            epoch = EPOCHS
            while time.perf_counter() < deadline:
                epoch += 1
                await store.append_epoch(attempt_id, 0, EpochRecord(epoch, 1.0 / epoch))
                done += 1

        start = time.perf_counter()
        await asyncio.gather(*(writer(i) for i in ids))
        return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=SECONDS)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="metalearn-replicas-") as tmp:
        home = Path(tmp)
        primary = EmbeddedPostgres(home / "primary")
        url = primary.start()
        try:
            GatewayProcess(url, home / "gateway").stop()  # migrates
            prefill(url, "read-me", EPOCHS)
            replica = primary.replica(home / "replica")
            replica_url = replica.start()
            try:
                for setting, extra in (
                    ("primary", ()),
                    ("replica", ("--read-database-url", replica_url)),
                ):
                    rate, gateway_ms, database_ms = reads(
                        url, home / "gateway", "read-me", args.seconds, *extra
                    )
                    figures[f"{setting}_reads_per_s"] = rate
                    figures[f"{setting}_gateway_cpu_ms_per_read"] = gateway_ms
                    figures[f"{setting}_database_cpu_ms_per_read"] = database_ms
            finally:
                replica.stop()
            ids = [prefill(url, f"append-{i}", EPOCHS) for i in range(IN_FLIGHT)]
            figures["primary_epochs_per_s"] = asyncio.run(_epochs_per_s(url, ids, args.seconds))
        finally:
            primary.stop()
    figures["replica_read_speedup"] = (
        figures["replica_reads_per_s"] / figures["primary_reads_per_s"]
    )
    figures["replica_read_speedup_goal"] = GOAL
    print_figures(figures, args.json)


if __name__ == "__main__":
    main()
