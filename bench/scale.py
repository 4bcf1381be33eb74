"""metalearn at the size a busy team reaches in a year (issue 30): a store of N attempts
with realistic shapes, written with COPY and kept between runs, then the read paths the
API and the dashboard use, measured through a `metalearn gateway` process.

  python bench/scale.py --attempts 100000 --json

The store (`--dir`, default /var/tmp/metalearn-scale/<N>) holds, for N attempts:
- commands of TASKS label sets (2,000, fewer for small N), each tried by several
  commands (optimizer, learning rate, batch size), owned by OWNERS people, created over
  a year;
- study trials of 10 to 50 epochs (a study is 50 to 500 trials of one task; some
  pruned, failed or cancelled early), and REPORTED_SHARE of the attempts runs reported
  from users' own code with REPORTED_STEPS-step curves: about EPOCHS_PER_ATTEMPT epochs
  an attempt on average (50 million at 1,000,000 attempts);
- one attempt of BIG_EPOCHS epochs (the one `get_10k_epochs` reads).

Figures (p50 of `--calls` calls each, milliseconds, at the client; one JSON object):
- `get_10k_epochs_p50_ms`: GetAttempt of the 10,000-epoch attempt (ATTEMPT_VIEW_FULL);
- `list_filter_p50_ms`: a page of 50 under a filter on a command field;
- `list_order_best_p50_ms`: a page of 50 ordered by best validation accuracy;
- `dashboard_list_p50_ms`: the dashboard's /attempts page (50, newest first);
- `append_ratio`: an epoch's append (the store's own `append_epoch`, as a trainer's
  report reaches it) at the full store against an empty database on the same server;
- `bytes_per_epoch`: the epochs table with its indexes and TOAST over its rows.
Goals are issue 30's; a figure above its goal is reported, not hidden.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import math
import random
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import psycopg
from google.protobuf import struct_pb2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.dashboard import attempts_page
from bench.report import print_figures
from bench.store import GatewayProcess
from dashboard.config import UiConfig
from dashboard.server import create_server
from gateway.attempts import convert
from gateway.embedded import EmbeddedPostgres
from gateway.inprocess import GatewayThread
from gateway.store import EpochRecord
from gateway.store.attempts import AttemptStore
from gateway.store.database import open_pool
from metalearn.credentials import open_channel
from metalearn.v1 import (
    attempt_pb2,
    attempt_service_pb2_grpc,
    curve_service_pb2,
    curve_service_pb2_grpc,
    task_pb2,
    task_service_pb2,
    task_service_pb2_grpc,
    token_service_pb2,
    token_service_pb2_grpc,
)
from metalearn.v1 import attempt_service_pb2 as pb
from tests.harness import fresh_database
from tests.trainer_harness import lenet_command

TASKS = 2000
OWNERS = 20
STUDY_TRIALS = (50, 500)
TRAINED_EPOCHS = (10, 50)
REPORTED_SHARE = 0.02
REPORTED_STEPS = 1000
EPOCHS_PER_ATTEMPT = 50  # what the shape above averages to (30 + 0.02 x 1000)
BIG_EPOCHS = 10_000
OPTIMIZERS = ("Adam", "SGD", "AdamW", "RMSprop")
LEARNING_RATES = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
BATCHES = (16, 32, 64, 128)
# Attempts whose epochs one statement writes: the epoch triggers read each statement's
# rows at once, and a statement this size keeps that in memory.
EPOCH_BATCH = 5000
# Appends of each store not timed, before the timed ones (their pages into the cache).
APPEND_WARM_UP = 100
# The benchmark suites' real task profiles, which the store's tasks are drawn around.
PROFILES = Path(__file__).with_name("metalearning") / "profiles.json"
# A store's attempts each carry the prognosis made at their last epoch; here an empty
# one, so that the gateway does not spend the benchmark making them (its backfill of
# attempts from before prognoses existed).
NO_PROGNOSIS = b""
GOALS = {
    "get_10k_epochs_p50_ms": 20.0,
    "list_filter_p50_ms": 20.0,
    "list_order_best_p50_ms": 30.0,
    "dashboard_list_p50_ms": 100.0,
    "append_ratio": 1.2,
}


@dataclass(frozen=True)
class Shape:
    """What one attempt of the generated store is."""

    task: int
    variant: int
    reported: bool
    epochs: int
    status: str
    owner: str
    created: datetime


def shapes(count: int, seed: int = 0) -> Iterator[Shape]:
    """The store's attempts in creation order: studies of one task at a time, reported
    runs among them."""
    rng = random.Random(seed)
    tasks = max(10, min(TASKS, count // 50))
    start = datetime(2026, 1, 1, tzinfo=UTC)
    made = 0
    while made < count:
        task = rng.randrange(tasks)
        owner = f"user{rng.randrange(OWNERS)}"
        for _ in range(min(rng.randint(*STUDY_TRIALS), count - made)):
            created = start + timedelta(seconds=made * 365 * 86400 / count)
            if rng.random() < REPORTED_SHARE:
                yield Shape(task, 0, True, REPORTED_STEPS, "COMPLETE", owner, created)
            else:
                roll = rng.random()
                status = (
                    "PRUNED" if roll < 0.3
                    else "FAILED" if roll < 0.33
                    else "CANCELLED" if roll < 0.35
                    else "COMPLETE"
                )  # fmt: skip
                epochs = rng.randint(*TRAINED_EPOCHS)
                if status != "COMPLETE":
                    epochs = max(1, epochs // 4)
                yield Shape(task, rng.randrange(64), False, epochs, status, owner, created)
            made += 1


def _labels(task: int) -> list[str]:
    return [f"t{task}-c{c}" for c in range(2 + task % 9)]


def _forms(shape: Shape) -> tuple[bytes, str]:
    """The attempt's two stored forms (serialized and JSON text), as the gateway writes them."""
    if shape.reported:
        params = struct_pb2.Struct()
        params.update({"lr": LEARNING_RATES[shape.task % 6], "layers": 2 + shape.task % 4})
        spec = attempt_pb2.Attempt(
            reported=attempt_pb2.ReportedRun(
                params=params,
                task=attempt_pb2.DeclaredTask(
                    dataset=f"data{shape.task}", labels=_labels(shape.task)
                ),
            )
        )
    else:
        v = shape.variant
        command = lenet_command(
            optimizer={"name": OPTIMIZERS[v % 4], "lr": LEARNING_RATES[(v // 4) % 6]},
            batch_size=BATCHES[(v // 24) % 4],
            label_names=_labels(shape.task),
        )
        spec = convert.new_spec(attempt_pb2.Attempt(name="x", training_commands=command))
    serialized, doc = convert.stored_forms(spec)
    return serialized, json.dumps(doc)


def build(url: str, count: int, seed: int = 0) -> dict[str, float]:
    """Writes the store: attempts with COPY, then their epochs (a curve rising to a final
    accuracy of the task and command, with noise) in statements of EPOCH_BATCH attempts."""
    timings: dict[str, float] = {}
    start = time.perf_counter()
    forms: dict[tuple[int, int, bool], tuple[bytes, str]] = {}
    epochs: list[int] = []
    with psycopg.connect(url) as conn:
        with conn.cursor().copy(
            "COPY attempts (name, status, owner, spec, doc, created_at, updated_at,"
            " current_epoch, prognosis_wire) FROM STDIN"
        ) as copy:
            for i, shape in enumerate(shapes(count, seed)):
                key = (shape.task, shape.variant, shape.reported)
                if key not in forms:
                    forms[key] = _forms(shape)
                spec, doc = forms[key]
                copy.write_row(
                    (f"a{i}", shape.status, shape.owner, spec, doc, shape.created,
                     shape.created, shape.epochs, NO_PROGNOSIS)
                )  # fmt: skip
                epochs.append(shape.epochs)
        timings["write_attempts_s"] = time.perf_counter() - start
        start = time.perf_counter()
        first = conn.execute("SELECT min(id) FROM attempts").fetchone()
        assert first is not None
        base = first[0]
        for lo in range(0, count, EPOCH_BATCH):
            ids = list(range(base + lo, base + min(lo + EPOCH_BATCH, count)))
            conn.execute(
                "INSERT INTO attempt_epochs (attempt_id, epoch, loss, learning_rate, seconds,"
                " samples_per_second, val_loss, val_accuracy)"
                " SELECT a.id, e, 2.3 * exp(-e / (3.0 + (a.id %% 7))) + 0.05 * r,"
                " 0.001, 1.5, 2000, 2.4 * exp(-e / (3.0 + (a.id %% 7))) + 0.1 * r,"
                " (0.5 + 0.45 * ((a.id * 2654435761) %% 1000) / 1000.0)"
                "   * (1 - exp(-e / (2.0 + (a.id %% 5)))) + 0.01 * r"
                " FROM unnest(%s::bigint[], %s::int[]) AS a(id, n),"
                " generate_series(1, a.n) e, LATERAL (SELECT random() AS r) noise",
                (ids, epochs[lo : lo + len(ids)]),
            )
            conn.commit()
        timings["write_epochs_s"] = time.perf_counter() - start
        big = _big_attempt(conn)
        timings["big_attempt"] = big
        timings["profiled_tasks"] = _profiled_tasks(conn, seed)
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE attempts")
        conn.execute("VACUUM ANALYZE attempt_epochs")
    return timings


def _profiled_tasks(conn: psycopg.Connection[Any], seed: int) -> int:
    """A READY profile for every task the attempts train on: the real profiles of the
    benchmark suites' tasks, each feature moved by noise (so that no two are alike)."""
    real = list(json.loads(PROFILES.read_text()).values())
    rng = random.Random(seed)
    keys = conn.execute(
        "SELECT DISTINCT ON (task_key) task_key, doc -> 'training_commands' -> 'label_names',"
        " COALESCE(NULLIF(doc -> 'training_commands' -> 'image_ops', 'null'), '[]')"
        " FROM attempts WHERE provenance = 'TRAINED' AND task_key IS NOT NULL"
        " AND doc -> 'training_commands' -> 'label_names' IS NOT NULL"
        " ORDER BY task_key, id"
    ).fetchall()
    with conn.cursor().copy(
        "COPY tasks (fingerprint, key, label_names, image_ops, state, profile, features,"
        " profiled_at) FROM STDIN"
    ) as copy:
        for i, (key, labels, ops) in enumerate(keys):
            base = real[i % len(real)]
            features = {k: v + rng.gauss(0, 0.05 * (abs(v) + 0.1)) for k, v in base.items()}
            profile = task_pb2.TaskProfile(features=features, images=1000, classes=len(labels))
            copy.write_row(
                (_fingerprint(i), key, json.dumps(labels), json.dumps(ops), "READY",
                 profile.SerializeToString(), json.dumps(features), datetime.now(UTC))
            )  # fmt: skip
    conn.commit()
    return len(keys)


def _fingerprint(i: int) -> str:
    """The i-th generated task's fingerprint (64 hex digits, as a real one)."""
    return hashlib.sha256(f"scale-{i}".encode()).hexdigest()


def _big_attempt(conn: psycopg.Connection[Any]) -> int:
    command = lenet_command(label_names=_labels(0))
    spec, doc = convert.stored_forms(
        convert.new_spec(attempt_pb2.Attempt(name="x", training_commands=command))
    )
    row = conn.execute(
        "INSERT INTO attempts (name, status, spec, doc, current_epoch)"
        " VALUES ('big', 'COMPLETE', %s, %s, %s) RETURNING id",
        (spec, json.dumps(doc), BIG_EPOCHS),
    ).fetchone()
    assert row is not None
    conn.execute(
        "INSERT INTO attempt_epochs (attempt_id, epoch, loss, val_accuracy)"
        " SELECT %s, e, 1.0 / e, 1 - 1.0 / (e + 1) FROM generate_series(1, %s) e",
        (row[0], BIG_EPOCHS),
    )
    conn.commit()
    return int(row[0])


def _p50_ms(call: Any, calls: int) -> float:
    call()  # warm-up
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def reads(
    url: str, data_dir: Path, calls: int, only_tasks: bool = False, curves: bool = True
) -> dict[str, float]:
    """The API's read paths through a gateway process (with `curves`, once its start-up
    curve fit is done: the reads are timed on a quiet gateway)."""
    figures: dict[str, float] = {}
    gateway = GatewayProcess(url, data_dir)
    try:
        with gateway.channel() as channel:
            if curves:
                figures.update(_curve_model(channel))
            # First: the first SuggestCommand waits for the ranking the gateway fits when it
            # starts (`KeptRankings`), and the reads below are timed after it.
            figures.update(_tasks(url, channel, calls, gateway.address))
            if only_tasks:
                return figures
            stub = attempt_service_pb2_grpc.AttemptServiceStub(channel)

            def get_big() -> None:
                reply = stub.GetAttempt(pb.GetAttemptRequest(name="big", view=pb.ATTEMPT_VIEW_FULL))
                assert len(reply.attempt.epochs) == BIG_EPOCHS

            def page(**request: Any) -> None:
                reply = stub.ListAttempts(pb.ListAttemptsRequest(page_size=50, **request))
                assert reply.attempts, request

            figures["get_10k_epochs_p50_ms"] = _p50_ms(get_big, calls)
            figures["list_filter_p50_ms"] = _p50_ms(
                lambda: page(filter='training_commands.optimizer.name = "AdamW"'), calls
            )
            figures["list_filter_rare_p50_ms"] = _p50_ms(
                lambda: page(filter='training_commands.label_names : "t0-c1"'), calls
            )
            figures["list_order_best_p50_ms"] = _p50_ms(
                lambda: page(order_by_field="best_val_accuracy desc"), calls
            )
            figures["list_order_lr_p50_ms"] = _p50_ms(
                lambda: page(order_by_field="training_commands.optimizer.lr desc"), calls
            )
    finally:
        gateway.stop()
    return figures


def _curve_model(channel: grpc.Channel, wait: float = 1800.0) -> dict[str, float]:
    """The curve model the gateway fits when it starts over a store without one: waited
    for (the reads are timed on a quiet gateway), and its fit's seconds and size."""
    stub = curve_service_pb2_grpc.CurveServiceStub(channel)
    deadline = time.monotonic() + wait
    while True:
        try:
            model = stub.GetCurveModel(curve_service_pb2.GetCurveModelRequest()).model
            return {
                "curve_fit_seconds": model.seconds,
                "curve_fit_runs": model.attempts,
                "curve_fit_tasks": model.tasks,
            }
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.NOT_FOUND or time.monotonic() > deadline:
                raise
            time.sleep(2)


def _suggestable(url: str) -> task_pb2.TaskKey:
    """One of the store's profiled tasks (the same one each run: the second by key) made
    one a caller can name by its labels: an image for each label, and its profile's row
    under the fingerprint those images give (as `TaskStore.ensure` computes it), so
    SuggestCommand finds it profiled."""
    with psycopg.connect(url) as conn:
        found = conn.execute(
            "SELECT id, key, label_names FROM (SELECT DISTINCT ON (key) id, key, label_names"
            " FROM tasks ORDER BY key, id DESC) t ORDER BY key LIMIT 1 OFFSET 1"
        ).fetchone()
        assert found is not None, "the store has profiled tasks"
        task_id, key, labels = found[0], found[1], list(found[2])
        for label in labels:
            data = f"scale image of {label}".encode()
            conn.execute(
                "INSERT INTO images (label, sha256, format, width, height, size_bytes, data)"
                " VALUES (%s, sha256(%s), 'png', 8, 8, %s, %s) ON CONFLICT DO NOTHING",
                (label, data, len(data), data),
            )
        row = conn.execute(
            "SELECT encode(sha256(convert_to(%s || E'\\n' ||"
            " string_agg(label || '=' || digest, E'\\n' ORDER BY label), 'UTF8')), 'hex')"
            " FROM (SELECT label, encode(sha256(string_agg(sha256, ''::bytea ORDER BY sha256)),"
            " 'hex') AS digest FROM images WHERE label = ANY(%s) GROUP BY label) d",
            (key, labels),
        ).fetchone()
        assert row is not None
        # (A run before made it so already: the row holding the fingerprint is the one.)
        conn.execute(
            "UPDATE tasks SET fingerprint = %s, stale = false WHERE id = %s"
            " AND NOT EXISTS (SELECT 1 FROM tasks WHERE fingerprint = %s)",
            (row[0], task_id, row[0]),
        )
    return task_pb2.TaskKey(label_names=labels)


def _tasks(
    url: str, channel: grpc.Channel, calls: int, address: str | None = None
) -> dict[str, float]:
    """FindSimilarTasks and SuggestCommand for a task among the store's profiled ones."""
    stub = task_service_pb2_grpc.TaskServiceStub(channel)
    target = _suggestable(url)

    def similar() -> None:
        found = stub.FindSimilarTasks(task_service_pb2.FindSimilarTasksRequest(task=target))
        assert found.tasks

    def suggest() -> None:
        found = stub.SuggestCommand(task_service_pb2.SuggestCommandRequest(task=target))
        assert not found.fallback, found.reason

    figures: dict[str, float] = {}
    for name, call in (("find_similar_p50_ms", similar), ("suggest_p50_ms", suggest)):
        try:
            start = time.perf_counter()
            call()  # the first call reads what learning needs: timed apart
            figures[name.replace("_p50_ms", "_first_ms")] = (time.perf_counter() - start) * 1e3
            figures[name] = _p50_ms(call, calls)
        except grpc.RpcError as err:  # a figure that cannot be had is reported, not hidden
            print(f"{name}: {err.code().name}: {err.details()}", file=sys.stderr)
            figures[name] = math.nan
    if address is not None:
        # Another caller's first call: it has no claims of its own, so it shares the
        # ranking already fitted (`Learner._counted`) instead of fitting its own.
        made = token_service_pb2_grpc.TokenServiceStub(channel).CreateToken(
            token_service_pb2.CreateTokenRequest(
                name=f"scale-reader-{random.getrandbits(32):08x}",
                role=token_service_pb2.ROLE_READER,
            )
        )
        with open_channel(address, made.secret) as other:
            start = time.perf_counter()
            found = task_service_pb2_grpc.TaskServiceStub(other).SuggestCommand(
                task_service_pb2.SuggestCommandRequest(task=target)
            )
            figures["suggest_new_caller_ms"] = (time.perf_counter() - start) * 1e3
            assert not found.fallback, found.reason
    return figures


def dashboard(url: str, calls: int) -> dict[str, float]:
    gateway = GatewayThread(url).start()
    ui = create_server(UiConfig(gateway=gateway.address, port=0)).start()
    try:
        found = attempts_page(gateway, ui, calls)
    finally:
        ui.stop()
        gateway.stop()
    return {
        "dashboard_list_p50_ms": found["attempts_page_p50_ms"],
        "dashboard_list_by_best_p50_ms": found["attempts_page_by_best_val_p50_ms"],
    }


async def _append_p50_ms(urls: dict[str, str], appends: int) -> dict[str, float]:
    """p50 of the store's `append_epoch` on an attempt held by a trainer (a lease), in
    each database, the two interleaved (neither gets the quieter moment or the warmer
    cache), after APPEND_WARM_UP appends each."""
    stores: dict[str, tuple[AttemptStore, int]] = {}
    async with contextlib.AsyncExitStack() as stack:
        for name, url in urls.items():
            with psycopg.connect(url, autocommit=True) as conn:
                row = conn.execute(
                    "INSERT INTO attempts (name, status, claims, doc) VALUES"
                    " ('appending-' || md5(random()::text), 'TRAINING', 1, '{}') RETURNING id"
                ).fetchone()
            assert row is not None
            pool = await stack.enter_async_context(open_pool(url, 1, 1))
            stores[name] = (AttemptStore(pool), int(row[0]))
        times: dict[str, list[float]] = {name: [] for name in urls}
        total = appends + APPEND_WARM_UP
        for epoch in range(1, total + 1):
            record = EpochRecord(epoch, 1.0 / epoch, 0.001, 1.0, 1000.0, 1.0, epoch / (total + 1))
            for name, (store, attempt_id) in stores.items():
                start = time.perf_counter()
                await store.append_epoch(attempt_id, 1, record)
                if epoch > APPEND_WARM_UP:
                    times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) * 1e3 for name, t in times.items()}


def appends(url: str, count: int) -> dict[str, float]:
    empty = fresh_database(url, "empty_store")
    GatewayThread(empty).start().stop()  # migrates
    found = asyncio.run(_append_p50_ms({"full": url, "empty": empty}, count))
    return {
        "append_p50_ms": found["full"],
        "append_empty_p50_ms": found["empty"],
        "append_ratio": found["full"] / found["empty"],
    }


def sizes(url: str) -> dict[str, float]:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT pg_total_relation_size('attempt_epochs'), pg_relation_size('attempt_epochs'),"
            " (SELECT count(*) FROM attempt_epochs), (SELECT count(*) FROM attempts),"
            " pg_total_relation_size('attempts')"
        ).fetchone()
    assert row is not None
    total, heap, rows, attempts, attempt_bytes = row
    return {
        "attempts": attempts,
        "epochs": rows,
        "bytes_per_epoch": total / max(rows, 1),
        "heap_bytes_per_epoch": heap / max(rows, 1),
        "bytes_per_attempt_row": attempt_bytes / max(attempts, 1),
    }


def run(
    where: Path,
    attempts: int,
    calls: int,
    appended: int,
    only_tasks: bool = False,
    curves: bool = True,
) -> dict[str, Any]:
    """The store in `where` (written when it is not there yet) and its figures."""
    figures: dict[str, Any] = {}
    postgres = EmbeddedPostgres(where)
    url = postgres.start()
    try:
        GatewayThread(url).start().stop()  # migrates (a kept store: what it lacks)
        with psycopg.connect(url) as conn:
            have = conn.execute("SELECT count(*) FROM attempts WHERE name = 'big'").fetchone()
        if have != (1,):
            start = time.perf_counter()
            figures.update(build(url, attempts))
            figures["build_s"] = time.perf_counter() - start
        with psycopg.connect(url) as conn:
            # A store kept from before the benchmark profiled its tasks.
            made = conn.execute("SELECT count(*) FROM tasks").fetchone()
            if made == (0,):
                figures["profiled_tasks"] = _profiled_tasks(conn, 0)
        if only_tasks:
            figures.update(reads(url, where / "gateway", calls, only_tasks=True, curves=curves))
            return figures
        figures.update(sizes(url))
        figures.update(reads(url, where / "gateway", calls, curves=curves))
        figures.update(dashboard(url, calls))
        figures.update(appends(url, appended))
    finally:
        postgres.stop()
    for name, goal in GOALS.items():
        figures[f"{name}_goal"] = goal
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--attempts", type=int, default=10_000)
    parser.add_argument("--dir", type=Path, default=None,
                        help="where the store is kept between runs")  # fmt: skip
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--appends", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--only-tasks", action="store_true",
                        help="time FindSimilarTasks and SuggestCommand alone")  # fmt: skip
    args = parser.parse_args()
    where = args.dir or Path("/var/tmp/metalearn-scale") / str(args.attempts)
    figures = run(where, args.attempts, args.calls, args.appends, args.only_tasks)
    print_figures(figures, args.json)


if __name__ == "__main__":
    main()
