"""Recovery from a database outage: how long a gateway takes to serve again once
PostgreSQL is back, after outages of 10 s and of 150 s (issue 10, item 2).

A `metalearn gateway` process runs over an embedded PostgreSQL whose postmaster is
killed with SIGKILL, left down for the outage, then started again on the same data.
Per outage it reports how soon health said NOT_SERVING, how fast calls failed while
the database was down (a client calling once a second), and the recovery: from the
moment the database accepted a connection to health SERVING with GetAttempt and
ListLabels answering. Goals: calls fail in <= 100 ms while it is down, and recovery
<= 2 s whatever the outage's length (before: 10 s hangs, and 97 s after 150 s down).
Runs for about three minutes with the default outages.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import psycopg
from grpc_health.v1 import health_pb2, health_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.database import scratch_postgres
from bench.report import print_figures
from bench.store import GatewayProcess, prefill
from gateway.embedded import EmbeddedPostgres
from metalearn.v1 import attempt_service_pb2 as pb
from metalearn.v1 import attempt_service_pb2_grpc, dataset_service_pb2, dataset_service_pb2_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def wait_until(done: Callable[[], bool], limit: float, step: float = 0.01) -> float:
    start = time.monotonic()
    while not done():
        if time.monotonic() - start > limit:
            raise TimeoutError(f"not done within {limit} s")
        time.sleep(step)
    return time.monotonic() - start


def outcome(call: Callable[..., Any], request: Any) -> tuple[float, grpc.StatusCode]:
    start = time.monotonic()
    try:
        call(request, timeout=30)
        code = grpc.StatusCode.OK
    except grpc.RpcError as err:
        code = err.code()  # type: ignore[attr-defined]
    return time.monotonic() - start, code


def accepts(url: str) -> bool:
    try:
        psycopg.connect(url, connect_timeout=2).close()
    except psycopg.OperationalError:
        return False
    return True


def one_outage(
    pg: EmbeddedPostgres, url: str, channel: grpc.Channel, seconds: float
) -> dict[str, float]:
    health = health_pb2_grpc.HealthStub(channel)
    attempts = attempt_service_pb2_grpc.AttemptServiceStub(channel)
    datasets = dataset_service_pb2_grpc.DatasetServiceStub(channel)
    get = pb.GetAttemptRequest(name="outage-0")
    labels = dataset_service_pb2.ListLabelsRequest()

    def status() -> int:
        return int(health.Check(health_pb2.HealthCheckRequest(), timeout=5).status)

    assert status() == SERVING and outcome(attempts.GetAttempt, get)[1] == grpc.StatusCode.OK
    pid = pg.pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    not_serving = wait_until(lambda: status() == NOT_SERVING, 30)
    failures: list[float] = []
    while time.monotonic() - killed < seconds:
        for call, request in ((attempts.GetAttempt, get), (datasets.ListLabels, labels)):
            took, code = outcome(call, request)
            assert code == grpc.StatusCode.UNAVAILABLE, code
            failures.append(took)
        time.sleep(1.0)
    assert pg.restart()
    wait_until(lambda: accepts(url), 60)
    back = time.monotonic()

    def serving() -> bool:
        return (
            status() == SERVING
            and outcome(attempts.GetAttempt, get)[1] == grpc.StatusCode.OK
            and outcome(datasets.ListLabels, labels)[1] == grpc.StatusCode.OK
        )

    wait_until(serving, 300)
    name = f"outage_{seconds:g}s"
    return {
        f"{name}_down_s": back - killed,
        f"{name}_not_serving_after_s": not_serving,
        f"{name}_fail_ms_median": 1000 * statistics.median(failures),
        f"{name}_fail_ms_max": 1000 * max(failures),
        f"{name}_recovery_s": time.monotonic() - back,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--outages", type=float, nargs="+", default=[10.0, 150.0])
    args = parser.parse_args()
    figures: dict[str, float] = {}
    with scratch_postgres() as scratch:
        pg, url, tmp = scratch.postgres, scratch.url, scratch.dir
        gateway = GatewayProcess(url, tmp / "gateway")
        try:
            prefill(url, "outage-0", 3)
            with gateway.channel() as channel:
                for seconds in args.outages:
                    figures.update(one_outage(pg, url, channel, seconds))
        finally:
            gateway.stop()
            if not pg.running():  # an outage cut short: up again, so that it stops cleanly
                pg.restart()
    print_figures(figures, args.json)


if __name__ == "__main__":
    main()
