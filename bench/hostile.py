"""Hostile callers against one gateway (issue 25, "Figures"): an honest client's latency
and a running attempt's epochs while readers and writers send the costliest requests
they are allowed, side by side with a quiet run; and the gateway's memory under large
downloads and refused oversized requests.

A `metalearn gateway` process runs over an embedded PostgreSQL with one `metalearn
trainer`, the scikit-learn digits uploaded, a few hundred stored attempts with epochs,
and a few documents as a hostile writer could have imported them (labels of 256 "a",
the longest a label may be: what a near-miss wildcard pattern costs most on).

Latency, quiet then hostile, each phase `--seconds` long: an honest reader calls
GetAttempt in a loop (p50/p99 ms) while an attempt of many short epochs trains (watched
with WatchAttempt: the gaps between epoch arrivals, median and max, the max including
the stretches from the phase's start and to its end). In the hostile phase, from a
process of their own (so their client work takes nothing from the honest client's
interpreter), `--readers` readers (each its own token) send ListAttempts with the worst
filters the parser allows (`FILTERS`, on pages of the most attempts, ordered by a
document path), and `--writers` writers (each its own token) send in turn the heaviest
CreateStudy allowed (TPE, 1,000 EI candidates, no startup trials, 32 parameters and 400
values to check against a 256-layer command, 1,000 trials 256 at once) and the heaviest
ImportAttempts allowed (1,000 documents, the command bytes a call may hold in 256-layer
models, every epoch a call may hold), and the import of the issue (1,000 documents of
256-layer commands, over the bounds). Every hostile outcome is counted by status code.
Goals: hostile GetAttempt p99 <= 100 ms; epochs keep arriving (gaps as when quiet).

Memory: the gateway's resident size (VmRSS of its process, sampled every 50 ms) idle,
then its peak during 4 concurrent DownloadModel of a `--model-mib` model (stored through
the store's own artifact-writing code, as a trainer's upload is) and during 8 refused
ReadImages of 30 MB (a million labels) in a row. Goal: peak <= idle + 150 MB.

  python bench/hostile.py            # a table
  python bench/hostile.py --json     # one JSON object, keys name the figures
  python bench/hostile.py --quick    # a smoke run: small sizes, a few seconds a phase
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import itertools
import json
import multiprocessing
import queue
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import grpc
import psycopg
from google.protobuf import json_format
from psycopg.types.json import Jsonb

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.database import scratch_postgres
from bench.report import print_figures
from bench.store import GatewayProcess, prefill
from bench.trainers import start_trainer, stop_trainer
from gateway.attempts import convert, importing
from gateway.store import open_pool
from gateway.store.filters import MAX_FILTER_CHARS, MAX_PATTERN_CHARS, MAX_WILDCARDS
from gateway.store.work import WorkStore
from gateway.studies import checks as study_checks
from learning.studies import space as study_space
from metalearn import digits
from metalearn.credentials import open_channel
from metalearn.limits import COMMAND_LIMITS
from metalearn.v1 import (
    attempt_pb2,
    attempt_service_pb2_grpc,
    dataset_service_pb2,
    dataset_service_pb2_grpc,
    study_service_pb2,
    study_service_pb2_grpc,
    token_service_pb2,
    token_service_pb2_grpc,
)
from metalearn.v1 import attempt_service_pb2 as pb

if TYPE_CHECKING:
    from multiprocessing.queues import Queue
    from multiprocessing.synchronize import Event

    from gateway.inprocess import GatewayThread

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "digits_lenet.json"
DONE = {
    attempt_pb2.ATTEMPT_STATUS_TRAINED,
    attempt_pb2.ATTEMPT_STATUS_FAILED,
    attempt_pb2.ATTEMPT_STATUS_CANCELLED,
}
# Large messages both ways: a page of big documents, an import, a 30 MB refused request.
OPTIONS = [
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.max_receive_message_length", 512 * 1024 * 1024),
]
# The labels a hostile writer planted: as long as a label may be, all "a".
PLANTED_LABEL = "a" * 256
_LABELS = "training_commands.label_names"
_NEAR_MISS = "*" + "a" * (MAX_PATTERN_CHARS - 1) + "b*"  # matches at no place, almost at each


_RUN = "a" * (MAX_PATTERN_CHARS // MAX_WILDCARDS)  # between two of the most wildcards


def _or_of(term: Callable[[int], str]) -> str:
    """As many terms as fit a filter, ORed."""
    terms: list[str] = []
    while len(" OR ".join([*terms, term(len(terms))])) <= MAX_FILTER_CHARS:
        terms.append(term(len(terms)))
    return " OR ".join(terms)


def _near_miss_term(i: int) -> str:
    # Each pattern as long as the filter's length lets ten or so of them be.
    return f'{_LABELS} = "*{"a" * (150 - len(_LABELS))}{chr(ord("b") + i % 24)}*"'


# Each kind of hostile filter: (filter, order_by_field). Every one is within the
# parser's bounds (the first is the issue's ~1,990 stars, now one `%`).
FILTERS: dict[str, tuple[str, str]] = {
    "stars": (f'{_LABELS} = "{"*" * (MAX_FILTER_CHARS - len(_LABELS) - 6)}"', ""),
    "near_miss": (f'{_LABELS} = "{_NEAR_MISS}"', "training_commands.optimizer.lr desc"),
    "near_miss_or": (_or_of(_near_miss_term), ""),
    "wildcards": (
        f'{_LABELS} = "*{"*".join([_RUN] * (MAX_WILDCARDS - 1))}z*"',
        "",
    ),
    "deep_not": (
        "NOT " * 31 + f'({_LABELS} = "{_NEAR_MISS}" OR best_val_accuracy > 0.5)',
        "best_val_accuracy desc",
    ),
    "huge_or": (_or_of(lambda i: f'{_LABELS}:"*{chr(ord("b") + i % 24)}*"'), ""),
}


def command(**changes: Any) -> attempt_pb2.TrainCommand:
    doc = json.loads(EXAMPLE.read_text())
    doc.update(changes)
    return json_format.ParseDict(doc, attempt_pb2.TrainCommand())


def big_command_doc(layers: int = COMMAND_LIMITS.max_layers) -> dict[str, Any]:
    """The digits example grown to `layers` layers (hidden Linear and ReLU pairs)."""
    doc = json.loads(EXAMPLE.read_text())
    doc["n_epoch"] = 2
    found = doc["model"]["layers"]
    while len(found) < layers:
        found.insert(9, {"name": "ReLU"} if len(found) % 2 else
                     {"name": "Linear", "in_features": "auto", "out_features": 84})  # fmt: skip
    return dict(doc)


def heaviest_study(name: str) -> study_service_pb2.Study:
    """The costliest study CreateStudy takes: TPE at its most candidates and no random
    start, MAX_PARAMETERS parameters and MAX_CORNERS values to check, each a Train check
    of a command of the most layers; the most trials, the most asked at once."""
    doc = big_command_doc()
    layers = doc["model"]["layers"]
    # Hidden Linear layers (the last one makes the labels' scores: not searched).
    linear = [i for i, layer in enumerate(layers) if layer["name"] == "Linear"][:-1]
    params: list[dict[str, Any]] = []
    corners = 0
    for i in linear[: study_space.MAX_PARAMETERS]:
        rest = study_space.MAX_PARAMETERS - len(params) - 1  # int ranges after it: 2 each
        choices = min(study_space.MAX_CHOICES, study_checks.MAX_CORNERS - corners - 2 * rest)
        path = f"model.layers[{i}].out_features"
        if choices > 2:
            params.append({"path": path, "categorical": {"values": list(range(1, choices + 1))}})
            corners += choices
        else:
            params.append({"path": path, "int": {"low": 8, "high": 128}})
            corners += 2
    study = json_format.ParseDict(
        {
            "name": name,
            "base_command": doc,
            "search_space": params,
            "n_trials": study_checks.MAX_TRIALS,
            "max_parallel": study_checks.MAX_PARALLEL,
            "sampler": {
                "name": "tpe",
                "args": {"n_ei_candidates": 1000, "n_startup_trials": 0,
                         "multivariate": True, "constant_liar": True},
            },
        },
        study_service_pb2.Study(),
    )  # fmt: skip
    return study


def _trained(name: str, epochs: int) -> attempt_pb2.Attempt:
    a = attempt_pb2.Attempt(name=name, status=attempt_pb2.ATTEMPT_STATUS_TRAINED)
    a.training_commands.CopyFrom(command(n_epoch=max(1, epochs)))
    for i in range(1, epochs + 1):
        a.epochs.add(
            epoch=i, loss=1.0 / i, learning_rate=0.003, seconds=0.5, samples_per_second=500.0,
            val_loss=1.1 / i, val_accuracy=min(1.0, 0.5 + i / (2 * epochs)),
        )  # fmt: skip
    return a


def heaviest_import() -> pb.ImportAttemptsRequest:
    """The most one ImportAttempts may hold, in the form that takes its checks longest:
    MAX_IMPORTS documents, the command bytes of a call in 256-layer models of the
    cheapest layers (most layers a byte), and every epoch a call may hold."""
    per = importing.MAX_EPOCHS // importing.MAX_IMPORTS
    batch = [_trained(f"heavy-{i}", per) for i in range(importing.MAX_IMPORTS)]
    relu = attempt_pb2.Model()
    for _ in range(COMMAND_LIMITS.max_layers):
        relu.layers.add().update({"name": "ReLU"})
    size = sum(a.training_commands.ByteSize() + a.testing_commands.ByteSize() for a in batch)
    for a in batch:
        for cmd in (a.training_commands, a.testing_commands):
            before, kept = cmd.ByteSize(), attempt_pb2.Model()
            kept.CopyFrom(cmd.model)
            cmd.model.CopyFrom(relu)
            if size + cmd.ByteSize() - before > importing.MAX_COMMAND_BYTES:
                cmd.model.CopyFrom(kept)  # the call's command bytes are spent
                return pb.ImportAttemptsRequest(attempts=batch)
            size += cmd.ByteSize() - before
    return pb.ImportAttemptsRequest(attempts=batch)


def issue_import() -> pb.ImportAttemptsRequest:
    """The import of issue 25 (1,000 documents of 256-layer commands, 10 s of the
    gateway's CPU then): over today's bounds, refused from its size."""
    big = json_format.ParseDict(big_command_doc(), attempt_pb2.TrainCommand())
    batch = []
    for i in range(importing.MAX_IMPORTS):
        a = _trained(f"issue-{i}", 3)
        a.training_commands.CopyFrom(big)
        batch.append(a)
    return pb.ImportAttemptsRequest(attempts=batch)


# --- the store ---------------------------------------------------------------------


def fill(url: str, count: int, planted: int, planted_labels: int) -> None:
    """`count` attempts of the digits command (other optimizers, rates and batch
    sizes), each with 20 epochs; and `planted` documents of `planted_labels` labels as
    long as a label may be, as a writer's import could have left them."""
    rows = []
    for i in range(count + planted):
        cmd = command(
            batch_size=16 * (1 + i % 4),
            optimizer={"name": ("Adam", "SGD", "AdamW")[i % 3], "lr": 0.001 * (1 + i % 7)},
        )
        if i >= count:
            del cmd.label_names[:]
            cmd.label_names.extend(f"{PLANTED_LABEL[:-6]}{j:06d}" for j in range(planted_labels))
        spec, doc = convert.stored_forms(
            convert.new_spec(attempt_pb2.Attempt(name="x", training_commands=cmd))
        )
        name = f"{'planted' if i >= count else 'stored'}-{i}"
        rows.append((name, spec, Jsonb(doc)))
    with psycopg.connect(url) as conn:
        cur = conn.cursor()
        cur.executemany(
            "INSERT INTO attempts (name, spec, doc, status) VALUES (%s, %s, %s, 'TRAINED')", rows
        )
        conn.execute(
            "INSERT INTO attempt_epochs (attempt_id, epoch, loss, learning_rate, seconds,"
            " val_loss, val_accuracy) SELECT a.id, g, 2.0 / g, 0.001, 0.5, 2.2 / g,"
            " 0.5 + g / 50.0 FROM attempts a, generate_series(1, 20) g"
            " WHERE a.name LIKE 'stored-%' OR a.name LIKE 'planted-%'"
        )
        conn.execute(
            "UPDATE attempts SET current_epoch = 20"
            " WHERE name LIKE 'stored-%' OR name LIKE 'planted-%'"
        )
        conn.execute("ANALYZE attempts")
        conn.execute("ANALYZE attempt_epochs")


async def store_weights(url: str, attempt_id: int, mib: int) -> str:
    """A `mib` MiB weights file for a running attempt (claim 0), written as a trainer's
    upload is: WorkStore's upload_chunk (1 MiB chunks, the trainer's), commit_upload
    with the verified digest, then finish as TRAINED. Returns its hex sha256."""
    block = hashlib.sha256(b"weights").digest() * (1024 * 1024 // 32)
    digest = hashlib.sha256()
    async with open_pool(url, 1, 2) as pool:
        work = WorkStore(pool)
        for index in range(mib):
            data = index.to_bytes(8, "big") + block[8:]  # no two chunks alike
            digest.update(data)
            assert await work.upload_chunk(attempt_id, 0, "weights", 1, index, data)
        assert await work.commit_upload(attempt_id, 0, "weights", None, digest.digest())
        assert await work.finish(attempt_id, 0, "TRAINED")
    return digest.hexdigest()


def wait_for(done: Callable[[], bool], limit: float, what: str) -> None:
    deadline = time.monotonic() + limit
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {limit:g} s")
        time.sleep(0.1)


def count_of(url: str, query: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(query).fetchone()
    return int(row[0]) if row else 0


# --- tokens and channels -----------------------------------------------------------


def make_token(admin: grpc.Channel, name: str, role: str) -> str:
    reply = token_service_pb2_grpc.TokenServiceStub(admin).CreateToken(
        token_service_pb2.CreateTokenRequest(
            name=name,
            role=token_service_pb2.Role.Value(f"ROLE_{role.upper()}"),  # type: ignore[arg-type]
        )
    )
    return str(reply.secret)


@dataclass(frozen=True)
class TrainerDoor:
    """What `start_trainer` reads of a gateway, for one that runs as its own process."""

    address: str
    trainer_token: str
    admin_token: str


def code_name(err: grpc.RpcError) -> str:
    code = err.code()  # type: ignore[attr-defined]
    return str(code.name) if code is not None else "UNKNOWN"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else float("nan")


# --- hostile callers (a process of their own) --------------------------------------


@dataclass
class Tally:
    """Outcomes of hostile calls: how many of each kind ended with each code, and how
    long the calls of each kind took."""

    codes: Counter[str] = field(default_factory=Counter)
    seconds: dict[str, list[float]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, kind: str, code: str, took: float) -> None:
        with self.lock:
            self.codes[f"{kind}_{code}"] += 1
            self.seconds.setdefault(kind, []).append(took)


def _timed(tally: Tally, kind: str, call: Callable[[], Any]) -> None:
    start = time.monotonic()
    try:
        call()
        code = "OK"
    except grpc.RpcError as err:
        code = code_name(err)
    tally.note(kind, code, time.monotonic() - start)


def hostile_main(
    address: str,
    readers: list[str],
    writers: list[str],
    deadline: float,
    ready: Event,
    stop: Event,
    out: Queue[Any],
) -> None:
    """Runs the hostile callers until `stop`; puts their tally (codes and seconds) on
    `out`. Requests are built before `ready`: only calls are made while measured."""
    # A request of each kind for each writer: a writer renames its own before each call.
    loads = [(heaviest_import(), issue_import()) for _ in writers]
    tally = Tally()

    def reader(index: int, secret: str) -> None:
        kinds = list(FILTERS)
        with open_channel(address, secret, options=OPTIONS) as channel:
            stub = attempt_service_pb2_grpc.AttemptServiceStub(channel)
            n = index  # readers start at different kinds
            while not stop.is_set():
                kind = kinds[n % len(kinds)]
                text, order = FILTERS[kind]
                request = pb.ListAttemptsRequest(filter=text, order_by_field=order, page_size=1000)
                _timed(tally, f"list_{kind}", partial(stub.ListAttempts, request, timeout=deadline))
                n += 1

    def writer(index: int, secret: str) -> None:
        imports, issue = loads[index]
        with open_channel(address, secret, options=OPTIONS) as channel:
            attempts = attempt_service_pb2_grpc.AttemptServiceStub(channel)
            studies = study_service_pb2_grpc.StudyServiceStub(channel)
            n = index  # writers start at different kinds
            while not stop.is_set():
                if n % 3 == 0:
                    study = heaviest_study(f"hostile-{index}-{n}")
                    create = study_service_pb2.CreateStudyRequest(study=study)
                    _timed(tally, "study", partial(studies.CreateStudy, create, timeout=deadline))
                else:
                    request = imports if n % 3 == 1 else issue
                    for j, a in enumerate(request.attempts):
                        a.name = f"w{index}-{n}-{j}"  # new names: each call stores anew
                    kind = "import" if n % 3 == 1 else "import_issue"
                    call = partial(attempts.ImportAttempts, request, timeout=deadline)
                    _timed(tally, kind, call)
                n += 1

    threads = [
        threading.Thread(target=reader, args=(i, s), daemon=True) for i, s in enumerate(readers)
    ] + [threading.Thread(target=writer, args=(i, s), daemon=True) for i, s in enumerate(writers)]
    ready.set()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    out.put({"codes": dict(tally.codes), "seconds": tally.seconds})


@dataclass
class Hostile:
    """The hostile process, started and ready to call."""

    proc: multiprocessing.process.BaseProcess
    stop: Event
    out: Queue[Any]

    @classmethod
    def start(
        cls, address: str, readers: list[str], writers: list[str], deadline: float
    ) -> Hostile:
        # spawn, not fork: grpc's threads do not survive a fork.
        ctx = multiprocessing.get_context("spawn")
        ready, stop, out = ctx.Event(), ctx.Event(), ctx.Queue()
        proc = ctx.Process(
            target=hostile_main,
            args=(address, readers, writers, deadline, ready, stop, out),
            daemon=True,
        )
        proc.start()
        if not ready.wait(600):
            proc.kill()
            raise TimeoutError("the hostile callers did not get ready")
        return cls(proc, stop, out)

    def finish(self, deadline: float) -> dict[str, Any]:
        """Stops them (calls under way end first, within their deadline)."""
        self.stop.set()
        limit = time.monotonic() + deadline + 60
        while time.monotonic() < limit:
            with contextlib.suppress(queue.Empty):
                result: dict[str, Any] = self.out.get(timeout=1.0)
                self.proc.join(30)
                return result
            if not self.proc.is_alive():
                raise RuntimeError(f"the hostile callers died (exit {self.proc.exitcode})")
        self.proc.kill()
        raise TimeoutError("the hostile callers did not stop")


# --- a phase: the honest client and the watched run ---------------------------------


@dataclass
class Watch:
    """Arrival times of a watched attempt's epochs."""

    arrivals: list[float] = field(default_factory=list)
    thread: threading.Thread | None = None

    def gaps(self, start: float, end: float) -> dict[str, float]:
        inside = [t for t in self.arrivals if start <= t <= end]
        between = [b - a for a, b in itertools.pairwise(inside)]
        # A stall still going at the end (or from the start) counts for the max.
        edges = [b - a for a, b in itertools.pairwise([start, *inside, end])]
        # Under two epochs in the phase, no gap lies wholly inside it: the median is then
        # that of the stretches around them (the real gaps were longer), not a NaN.
        return {
            "epoch_gap_median_ms": 1e3 * statistics.median(between or edges),
            "epoch_gap_max_ms": 1e3 * max(edges),
            "epochs_per_s": len(inside) / (end - start),
        }


def watch(address: str, secret: str, name: str) -> Watch:
    seen = Watch()

    def run() -> None:
        with open_channel(address, secret, options=OPTIONS) as channel:
            stub = attempt_service_pb2_grpc.AttemptServiceStub(channel)
            for event in stub.WatchAttempt(pb.WatchAttemptRequest(name=name)):
                kind = event.WhichOneof("event")
                if kind == "epoch":
                    seen.arrivals.append(time.monotonic())
                elif kind in ("snapshot", "status") and getattr(event, kind).status in DONE:
                    return

    seen.thread = threading.Thread(target=run, daemon=True)
    seen.thread.start()
    return seen


def phase(
    label: str,
    address: str,
    admin: grpc.Channel,
    honest: str,
    target: str,
    seconds: float,
    hostile: Callable[[], Hostile] | None,
    deadline: float,
) -> tuple[dict[str, float], dict[str, Any]]:
    """One phase: the watched run started and past its first epochs, then (hostile
    callers ready, if any) `seconds` of the honest client's GetAttempt."""
    stub = attempt_service_pb2_grpc.AttemptServiceStub(admin)
    name = f"watched-{label}"
    stub.Train(pb.TrainRequest(name=name, command=WATCHED))
    watched = watch(address, honest, name)
    wait_for(lambda: len(watched.arrivals) >= 3, 300, f"{name}'s first epochs")
    load = hostile() if hostile is not None else None
    times: list[float] = []
    errors: Counter[str] = Counter()
    with open_channel(address, honest, options=OPTIONS) as channel:
        reader = attempt_service_pb2_grpc.AttemptServiceStub(channel)
        request = pb.GetAttemptRequest(name=target)
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            began = time.perf_counter()
            try:
                reader.GetAttempt(request, timeout=30)
            except grpc.RpcError as err:
                errors[code_name(err)] += 1
            times.append(time.perf_counter() - began)
        end = time.monotonic()
    tally = load.finish(deadline) if load is not None else {}
    stub.CancelAttempt(pb.CancelAttemptRequest(name=name))
    if watched.thread is not None:
        watched.thread.join(60)
    figures = {
        f"{label}_get_p50_ms": 1e3 * percentile(times, 0.5),
        f"{label}_get_p99_ms": 1e3 * percentile(times, 0.99),
        f"{label}_get_calls": len(times),
        f"{label}_get_errors": sum(errors.values()),
    }
    figures |= {f"{label}_{k}": v for k, v in watched.gaps(start, end).items()}
    return figures, tally


# The watched run: many short epochs (two digits, a few hundred images).
WATCHED = command(
    n_epoch=COMMAND_LIMITS.max_epochs, label_names=["digit 0", "digit 1"], batch_size=64
)


def study_names(studies: study_service_pb2_grpc.StudyServiceStub) -> list[str]:
    names, token = [], ""
    while True:
        page = studies.ListStudies(
            study_service_pb2.ListStudiesRequest(page_size=100, page_token=token)
        )
        names += [s.name for s in page.studies]
        token = page.next_page_token
        if not token:
            return names


def latency(
    args: argparse.Namespace, gateway: GatewayProcess, url: str, tmp: Path
) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    with gateway.channel() as admin:
        dataset_service_pb2_grpc.DatasetServiceStub(admin).UploadImages(digits.digit_uploads())
        trainer_token = make_token(admin, "bench-trainer", "trainer")
        honest = make_token(admin, "honest", "reader")
        readers = [make_token(admin, f"reader-{i}", "reader") for i in range(args.readers)]
        writers = [make_token(admin, f"writer-{i}", "writer") for i in range(args.writers)]
        assert gateway.token is not None
        door = TrainerDoor(gateway.address, trainer_token, gateway.token)
        trainer, _ = start_trainer(cast("GatewayThread", door), tmp / "cache")
        try:
            wait_for(
                lambda: count_of(
                    url, "SELECT count(*) FROM trainers WHERE last_seen > now() - interval '3s'"
                ) >= 1,
                60,
                "the trainer's registration",
            )  # fmt: skip
            # Warm-up: the trainer's cache, and the task's profile (once per task).
            stub = attempt_service_pb2_grpc.AttemptServiceStub(admin)
            warm = command(n_epoch=1, label_names=list(WATCHED.label_names), batch_size=64)
            stub.Train(pb.TrainRequest(name="warm-up", command=warm))
            wait_for(
                lambda: (
                    stub.GetAttempt(pb.GetAttemptRequest(name="warm-up")).attempt.status in DONE
                ),
                300,
                "the warm-up run",
            )
            wait_for(
                lambda: count_of(url, "SELECT count(*) FROM tasks WHERE state = 'PENDING'") == 0,
                120,
                "the task's profile",
            )
            quiet, _ = phase(
                "quiet", gateway.address, admin, honest, "target", args.seconds, None, args.deadline
            )
            figures |= quiet

            def attack() -> Hostile:
                return Hostile.start(gateway.address, readers, writers, args.deadline)

            loud, tally = phase(
                "hostile", gateway.address, admin, honest, "target", args.seconds, attack,
                args.deadline,
            )  # fmt: skip
            figures |= loud
        finally:
            stop_trainer(trainer)
        # The hostile studies stop asking (their trials have no trainer now anyway).
        studies = study_service_pb2_grpc.StudyServiceStub(admin)
        names = study_names(studies)
        for name in names:
            with contextlib.suppress(grpc.RpcError):  # one that already ended
                studies.StopStudy(
                    study_service_pb2.StopStudyRequest(name=name, cancel_running=True)
                )
    figures["get_p99_hostile_over_quiet"] = (
        figures["hostile_get_p99_ms"] / figures["quiet_get_p99_ms"]
    )
    figures["epoch_gap_median_hostile_over_quiet"] = (
        figures["hostile_epoch_gap_median_ms"] / figures["quiet_epoch_gap_median_ms"]
    )
    figures["hostile_studies_made"] = len(names)
    for key, count in sorted(tally.get("codes", {}).items()):
        figures[f"hostile_{key}"] = count
    for kind, took in sorted(tally.get("seconds", {}).items()):
        figures[f"hostile_{kind}_p50_ms"] = 1e3 * percentile(took, 0.5)
        figures[f"hostile_{kind}_max_ms"] = 1e3 * max(took)
    return figures


# --- memory --------------------------------------------------------------------------


class RssSampler:
    """The gateway's VmRSS every 50 ms, each sample with the phase it was taken in."""

    def __init__(self, pid: int) -> None:
        self.path = Path(f"/proc/{pid}/status")
        self.label = "idle"
        self.samples: list[tuple[str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss_mb(self) -> float:
        for line in self.path.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024  # kB
        raise RuntimeError(f"no VmRSS in {self.path}")

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((self.label, self.rss_mb()))
            time.sleep(0.05)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def of(self, label: str) -> list[float]:
        return [mb for seen, mb in self.samples if seen == label]


def refused_read() -> dataset_service_pb2.ReadImagesRequest:
    """A ReadImages of 30 MB: a million labels of 28 characters."""
    return dataset_service_pb2.ReadImagesRequest(
        label_names=[f"label-{i:022d}" for i in range(1_000_000)]
    )


def memory(args: argparse.Namespace, gateway: GatewayProcess, url: str) -> dict[str, Any]:
    attempt_id = prefill(url, "model", 1)
    digest = asyncio.run(store_weights(url, attempt_id, args.model_mib))
    request = refused_read()
    figures: dict[str, Any] = {}
    codes: Counter[str] = Counter()
    got: list[tuple[int, str]] = []

    def download() -> None:
        with gateway.channel() as channel:
            stub = attempt_service_pb2_grpc.AttemptServiceStub(channel)
            size, hashed = 0, hashlib.sha256()
            for piece in stub.DownloadModel(pb.DownloadModelRequest(name="model"), timeout=600):
                size += len(piece.data)
                hashed.update(piece.data)
            got.append((size, hashed.hexdigest()))

    with RssSampler(gateway.proc.pid) as rss:
        time.sleep(2.0)
        rss.label = "downloads"
        start = time.monotonic()
        threads = [threading.Thread(target=download) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        took = time.monotonic() - start
        rss.label = "refused"
        with open_channel(gateway.address, gateway.token, options=OPTIONS) as channel:
            datasets = dataset_service_pb2_grpc.DatasetServiceStub(channel)
            for _ in range(8):
                try:
                    for _reply in datasets.ReadImages(request, timeout=60):
                        pass
                    codes["OK"] += 1
                except grpc.RpcError as err:
                    codes[code_name(err)] += 1
        rss.label = "after"
        time.sleep(2.0)
    assert got == [(args.model_mib * 1024 * 1024, digest)] * 4, "a download came back wrong"
    idle = statistics.median(rss.of("idle"))
    peak_downloads, peak_refused = max(rss.of("downloads")), max(rss.of("refused"))
    figures["rss_idle_mb"] = idle
    figures["rss_peak_downloads_mb"] = peak_downloads
    figures["rss_peak_refused_mb"] = peak_refused
    figures["rss_after_mb"] = statistics.median(rss.of("after"))
    figures["rss_peak_over_idle_mb"] = max(peak_downloads, peak_refused) - idle
    figures["download_model_mib"] = args.model_mib
    figures["download_4_mib_per_s"] = 4 * args.model_mib / took
    for code, count in sorted(codes.items()):
        figures[f"refused_read_{code}"] = count
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quick", action="store_true", help="small sizes, short phases")
    parser.add_argument("--seconds", type=float, default=30.0, help="of each latency phase")
    parser.add_argument("--readers", type=int, default=10)
    parser.add_argument("--writers", type=int, default=2)
    parser.add_argument("--deadline", type=float, default=60.0, help="of each hostile call")
    parser.add_argument("--attempts", type=int, default=500, help="stored before the run")
    parser.add_argument("--planted", type=int, default=20, help="documents of long labels")
    parser.add_argument("--planted-labels", type=int, default=2000)
    parser.add_argument("--model-mib", type=int, default=1024)
    parser.add_argument("--only", choices=("latency", "memory"))
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.readers, args.model_mib = 5.0, 2, 64
        args.attempts, args.planted, args.planted_labels = 200, 5, 500
    figures: dict[str, Any] = {}
    with scratch_postgres() as scratch:
        url, tmp = scratch.url, scratch.dir
        gateway = GatewayProcess(url, tmp / "gateway")
        try:
            fill(url, args.attempts, args.planted, args.planted_labels)
            prefill(url, "target", 50)
            if args.only != "latency":
                figures |= memory(args, gateway, url)
            if args.only != "memory":
                figures |= latency(args, gateway, url, tmp)
        finally:
            gateway.stop()
    print_figures(figures, args.json)


if __name__ == "__main__":
    main()
