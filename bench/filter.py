"""`ListAttempts.filter` at 100,000 attempts: latency of a page (50 attempts) through a
`metalearn gateway` process, for filters on command fields (issue 11, goal: p50 <= 20 ms).

The attempts are eight real commands (the LeNet example with other optimizers and batch
sizes) repeated, written with both stored forms, plus ten with a rare optimizer. Each
filter is called `--calls` times; p50 and p99 in milliseconds. The `order_*` figures
are pages in the order of a numeric path (`order_by_field`), which no index serves:
every row's value is computed, so they grow with the store.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import psycopg
from psycopg.types.json import Jsonb

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.database import scratch_postgres
from bench.report import print_figures
from bench.store import GatewayProcess
from gateway.attempts import convert
from gateway.inprocess import GatewayThread
from metalearn.v1 import attempt_pb2, attempt_service_pb2_grpc
from metalearn.v1 import attempt_service_pb2 as pb
from tests.trainer_harness import lenet_command

FILTERS = {
    "common_value": 'training_commands.optimizer.name = "Adam"',
    "rare_value": 'training_commands.optimizer.name = "LBFGS"',
    "range": "training_commands.batch_size >= 48",
    "any_layer_and_or": (
        'training_commands.model.layers.name : "Conv2d" AND '
        '(training_commands.batch_size = 16 OR training_commands.optimizer.name = "SGD")'
    ),
}
# label -> (filter, order_by_field)
ORDERS = {
    "order_lr_desc": ("", "training_commands.optimizer.lr desc"),
    "order_batch_filtered": (FILTERS["common_value"], "training_commands.batch_size desc"),
}


def fill(url: str, count: int) -> None:
    """`count` attempts of eight commands, and ten of a rare one, in one statement."""
    specs, docs = [], []
    for i in range(8):
        command = lenet_command(
            batch_size=16 * (1 + i % 4), optimizer={"name": ("Adam", "SGD")[i % 2], "lr": 0.01}
        )
        spec, doc = convert.stored_forms(
            convert.new_spec(attempt_pb2.Attempt(name="x", training_commands=command))
        )
        specs.append(spec)
        docs.append(Jsonb(doc))
    rare = lenet_command(optimizer={"name": "LBFGS", "lr": 1.0})
    spec, doc = convert.stored_forms(
        convert.new_spec(attempt_pb2.Attempt(name="x", training_commands=rare))
    )
    specs.append(spec)
    docs.append(Jsonb(doc))
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO attempts (name, spec, doc)"
            " SELECT 'filler-' || g, v.spec, v.doc FROM generate_series(1, %s) g"
            " JOIN unnest(%s::int[], %s::bytea[], %s::jsonb[]) AS v(k, spec, doc)"
            " ON v.k = CASE WHEN g %% (%s / 10) = 0 THEN 8 ELSE g %% 8 END",
            (count, list(range(9)), specs, docs, count),
        )
        conn.execute("ANALYZE attempts")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--attempts", type=int, default=100_000)
    parser.add_argument("--calls", type=int, default=100)
    args = parser.parse_args()
    figures: dict[str, float] = {}
    with scratch_postgres() as scratch:
        url, tmp = scratch.url, scratch.dir
        GatewayThread(url).start().stop()  # migrates
        fill(url, args.attempts)
        gateway = GatewayProcess(url, tmp / "gateway")
        try:
            with gateway.channel() as channel:
                stub = attempt_service_pb2_grpc.AttemptServiceStub(channel)
                cases = {label: (text, "") for label, text in FILTERS.items()} | ORDERS
                for label, (text, order) in cases.items():
                    request = pb.ListAttemptsRequest(
                        filter=text, order_by_field=order, page_size=50
                    )
                    stub.ListAttempts(request)  # warm-up
                    times = []
                    for _ in range(args.calls):
                        start = time.perf_counter()
                        reply = stub.ListAttempts(request)
                        times.append(time.perf_counter() - start)
                    assert reply.attempts, label
                    times.sort()
                    figures[f"{label}_p50_ms"] = statistics.median(times) * 1e3
                    figures[f"{label}_p99_ms"] = times[int(len(times) * 0.99) - 1] * 1e3
        finally:
            gateway.stop()
    print_figures(figures, args.json)


if __name__ == "__main__":
    main()
