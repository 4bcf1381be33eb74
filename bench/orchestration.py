"""Benchmark of the whole system: gateway + trainer processes, against bare PyTorch.

(a) images/s of an attempt run through the gateway and a trainer (from the Train call
    to TRAINED) against a bare PyTorch loop on the same model and data, in this process;
(b) delay from an epoch's commit to its arrival at WatchAttempt subscribers, p50/p99,
    with 1 and with 500 subscribers on one gateway;
(c) attempts completed per minute on tiny jobs with 1 and with 2 trainers.
  python bench/orchestration.py          # a table
  python bench/orchestration.py --json   # one JSON object, keys name the figures
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import psycopg
import psycopg.conninfo
from google.protobuf import json_format

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.database import scratch_postgres
from bench.report import print_figures
from bench.trainers import start_trainer
from bench.training import bare_images_per_second
from gateway.config import GatewayConfig
from gateway.inprocess import GatewayThread
from metalearn import digits
from metalearn.credentials import authorization, open_channel
from metalearn.v1 import attempt_pb2, attempt_service_pb2_grpc, dataset_service_pb2_grpc
from metalearn.v1 import attempt_service_pb2 as pb

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "digits_lenet.json"
DONE = {attempt_pb2.ATTEMPT_STATUS_TRAINED, attempt_pb2.ATTEMPT_STATUS_FAILED}


def command(**changes: Any) -> attempt_pb2.TrainCommand:
    doc = json.loads(EXAMPLE.read_text())
    doc.update(changes)
    return json_format.ParseDict(doc, attempt_pb2.TrainCommand())


def wait_registered(url: str, count: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with psycopg.connect(url) as conn:
            row = conn.execute(
                "SELECT count(*) FROM trainers WHERE last_seen > now() - interval '3 seconds'"
            ).fetchone()
        if row and row[0] >= count:
            return
        time.sleep(0.1)
    raise RuntimeError("trainers did not register")


def train_and_wait(stub: Any, name: str, cmd: attempt_pb2.TrainCommand) -> attempt_pb2.Attempt:
    stub.Train(pb.TrainRequest(name=name, command=cmd))
    for event in stub.WatchAttempt(pb.WatchAttemptRequest(name=name)):
        kind = event.WhichOneof("event")
        if kind in ("snapshot", "status") and getattr(event, kind).status in DONE:
            break
    attempt: attempt_pb2.Attempt = stub.GetAttempt(pb.GetAttemptRequest(name=name)).attempt
    return attempt


def wait_profiled(url: str) -> None:
    """Until the gateway has profiled every task it knows (a task's first attempt has a
    trainer profile it, for the meta-learning: a second of one core, once per task)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT count(*) FROM tasks WHERE state = 'PENDING'").fetchone()
        if row and row[0] == 0:
            return
        time.sleep(0.1)
    raise RuntimeError("the task was not profiled")


def end_to_end(stub: Any, url: str, epochs: int, rounds: int) -> dict[str, float]:
    """(a): the same job through the system and bare, interleaved, on a known task."""
    cmd = command(n_epoch=epochs)
    train_and_wait(stub, "warm-up", command(n_epoch=1))  # fills the trainer's cache
    wait_profiled(url)
    system, within, bare, validated = [], [], [], []
    for r in range(rounds):
        start = time.perf_counter()
        attempt = train_and_wait(stub, f"e2e-{r}", cmd)
        elapsed = time.perf_counter() - start
        full = stub.GetAttempt(pb.GetAttemptRequest(name=attempt.name, view=pb.ATTEMPT_VIEW_FULL))
        in_epochs = sum(e.seconds for e in full.attempt.epochs)
        images = attempt.dataset.images_per_label
        train_images = round(sum(images) * 0.9)  # less the validation tenth (as `started` says)
        system.append(train_images * epochs / elapsed)
        within.append(train_images * epochs / in_epochs)
        bare.append(bare_images_per_second(cmd, train_images, epochs))
        validation = sum(images) - train_images
        validated.append(bare_images_per_second(cmd, train_images, epochs, validation))
    return {
        "system": statistics.median(system),
        "validated": statistics.median(validated),
        "within": statistics.median(within),
        "bare": statistics.median(bare),
    }


async def watch_delays(
    address: str, token: str, url: str, subscribers: int, epochs: int, label: str = ""
) -> list[float]:
    """(b): each subscriber's delay for each epoch, from its commit (recorded_at)."""
    name = f"watched-{subscribers}{label}".replace("_", "-")
    arrivals: list[tuple[int, float]] = []
    header = authorization(token)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = attempt_service_pb2_grpc.AttemptServiceStub(channel)
        await stub.Train(
            pb.TrainRequest(name=name, command=command(n_epoch=epochs, batch_size=8)),
            metadata=header,
        )
        ready = asyncio.Event()
        started = 0

        async def watch() -> None:
            nonlocal started
            call = stub.WatchAttempt(pb.WatchAttemptRequest(name=name), metadata=header)
            async for event in call:
                kind = event.WhichOneof("event")
                if kind == "snapshot":
                    started += 1
                    if started == subscribers:
                        ready.set()
                elif kind == "epoch":
                    arrivals.append((event.epoch.epoch, time.time()))
                elif kind == "status" and event.status.status in DONE:
                    return

        await asyncio.gather(*(watch() for _ in range(subscribers)))
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT e.epoch, e.recorded_at FROM attempt_epochs e JOIN attempts a"
            " ON a.id = e.attempt_id WHERE a.name = %s",
            (name,),
        ).fetchall()
    committed = {int(epoch): at.timestamp() for epoch, at in rows}
    # Epochs already stored when a watcher connected came in its snapshot: not live.
    first_live = 2
    return [arrived - committed[e] for e, arrived in arrivals if e >= first_live]


def watchers(gateway: GatewayThread, url: str) -> dict[str, float]:
    """(b) for 1 and 500 subscribers, with each epoch encoded once for all of them (as
    the gateway does) and, side by side in the same run, by each watcher (the baseline)."""
    hub = gateway.background.hub
    encode = hub.encode_epoch
    figures: dict[str, float] = {}
    for subscribers in (1, 500):
        for label, encoder in (("", encode), ("_each_encodes", None)):
            hub.encode_epoch = encoder
            delays = asyncio.run(
                watch_delays(gateway.address, gateway.admin_token, url, subscribers, 6, label)
            )
            figures[f"watch_{subscribers}{label}_p50_ms"] = percentile(delays, 0.5) * 1e3
            figures[f"watch_{subscribers}{label}_p99_ms"] = percentile(delays, 0.99) * 1e3
    hub.encode_epoch = encode
    return figures


def throughput(stub: Any, jobs: int, names: list[str] | None = None) -> float:
    """(c): attempts per minute on tiny jobs (two labels, one epoch); their names are
    added to `names`."""
    tiny = command(n_epoch=1, label_names=["digit 0", "digit 1"], batch_size=64)
    start = time.perf_counter()
    names = names if names is not None else []
    names += [f"tiny-{time.time_ns()}-{i}" for i in range(jobs)]
    for name in names:
        stub.Train(pb.TrainRequest(name=name, command=tiny))
    for name in names:
        while stub.GetAttempt(pb.GetAttemptRequest(name=name)).attempt.status not in DONE:
            time.sleep(0.05)
    return jobs / (time.perf_counter() - start) * 60


def handovers(url: str, names: list[str]) -> list[float]:
    """Seconds each trainer's slot stood idle between two of these runs: from one run's
    end (its last update) to the claim of the next on the same trainer."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT trainer, claimed_at, updated_at FROM attempts WHERE name = ANY(%s)"
            " ORDER BY trainer, claimed_at",
            (names,),
        ).fetchall()
    gaps = []
    for (trainer, _, ended), (next_trainer, claimed, _) in itertools.pairwise(rows):
        if trainer == next_trainer:
            gaps.append(max(0.0, (claimed - ended).total_seconds()))
    return gaps


def side_by_side(server_url: str, tmp: Path, checkouts: dict[str, Path], jobs: int) -> Any:
    """Tiny attempts per minute with 2 trainers of one torch thread each, for each
    checkout (its own database, gateway process and trainer processes, as shipped:
    default polling), in turn; and the hand-over latencies of those that record claims."""
    figures: dict[str, float] = {}
    for label, checkout in checkouts.items():
        name = f"side_{label}"
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        url = psycopg.conninfo.make_conninfo(server_url, dbname=name)
        data = tmp / name
        cli = [sys.executable, "-m", "metalearn.cli"]
        gateway = subprocess.Popen(
            [*cli, "gateway", "--listen", "127.0.0.1:0", "--database-url", url,
             "--data-dir", str(data)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=checkout,
        )  # fmt: skip
        assert gateway.stdout is not None
        address = gateway.stdout.readline().rsplit(" ", 1)[-1].strip()
        token = (data / "admin.token").read_text().strip()
        trainer_command = [
            *cli, "trainer", "--listen", "127.0.0.1:0", "--gateway", address,
            "--cache-dir", str(tmp / "cache"), "--threads", "1",
        ]  # fmt: skip
        trainers = [
            subprocess.Popen(
                trainer_command,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                cwd=checkout,
                env={**os.environ, "METALEARN_TOKEN": token},
            )
            for _ in range(2)
        ]
        try:
            for proc in trainers:
                assert proc.stdout is not None and "listening" in proc.stdout.readline()
            wait_registered(url, 2)
            with open_channel(address, token) as channel:
                dataset_service_pb2_grpc.DatasetServiceStub(channel).UploadImages(
                    digits.digit_uploads()
                )
                stub = attempt_service_pb2_grpc.AttemptServiceStub(channel)
                throughput(stub, 2)  # warm-up: the trainers' caches
                names: list[str] = []
                figures[f"tiny_per_min_2x1_{label}"] = throughput(stub, jobs, names)
            with psycopg.connect(url) as conn:
                has_claims = conn.execute(
                    "SELECT 1 FROM information_schema.columns WHERE table_name = 'attempts'"
                    " AND column_name = 'claimed_at'"
                ).fetchone()
            if has_claims:
                gaps = handovers(url, names)
                figures[f"handover_p50_ms_{label}"] = percentile(gaps, 0.5) * 1e3
                figures[f"handover_p90_ms_{label}"] = percentile(gaps, 0.9) * 1e3
        finally:
            for proc in [*trainers, gateway]:
                proc.terminate()
                proc.wait(60)
    return figures


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5, help="of (a), interleaved")
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument(
        "--watchers-only", action="store_true", help="only (b), the watchers' delays"
    )
    parser.add_argument("--e2e-only", action="store_true", help="only (a), end to end")
    parser.add_argument(
        "--baseline",
        type=Path,
        help="also measure tiny attempts per minute with this checkout, side by side",
    )
    args = parser.parse_args()
    figures: dict[str, float] = {}
    with scratch_postgres() as scratch:
        url, tmp = scratch.url, scratch.dir
        # The gateway's own settings: a queue change or a run's end wakes its dispatcher,
        # and it polls once a second besides (a faster poll only costs CPU).
        config = GatewayConfig(listen="127.0.0.1:0", database_url=url)
        gateway = GatewayThread(url, config).start()
        trainers = []
        try:
            with gateway.channel() as channel:
                dataset_service_pb2_grpc.DatasetServiceStub(channel).UploadImages(
                    digits.digit_uploads()
                )
                stub = attempt_service_pb2_grpc.AttemptServiceStub(channel)
                trainers.append(start_trainer(gateway, tmp / "cache"))
                wait_registered(url, 1)
                if args.watchers_only:
                    figures |= watchers(gateway, url)
                    print_figures(figures, args.json)
                    return
                e2e = end_to_end(stub, url, args.epochs, args.rounds)
                figures["e2e_system_images_per_s"] = e2e["system"]
                figures["e2e_bare_images_per_s"] = e2e["bare"]
                figures["e2e_ratio"] = e2e["system"] / e2e["bare"]
                # The same runs' epochs alone (EpochMetrics.seconds), against the same loop.
                figures["e2e_epoch_images_per_s"] = e2e["within"]
                figures["e2e_epoch_ratio"] = e2e["within"] / e2e["bare"]
                # Against a bare loop that also validates each epoch, as the run does (a
                # second view: `e2e_ratio`, against the loop without, is the goal's).
                figures["e2e_bare_validated_images_per_s"] = e2e["validated"]
                figures["e2e_ratio_validated"] = e2e["system"] / e2e["validated"]
                if args.e2e_only:
                    print_figures(figures, args.json)
                    return
                figures |= watchers(gateway, url)
                figures["attempts_per_min_1_trainer"] = throughput(stub, args.jobs)
                trainers.append(start_trainer(gateway, tmp / "cache"))
                wait_registered(url, 2)
                figures["attempts_per_min_2_trainers"] = throughput(stub, args.jobs)
                # Two trainers on two cores, each run limited to one torch thread.
                for proc, _ in trainers:
                    proc.terminate()
                    proc.wait(60)
                trainers = [start_trainer(gateway, tmp / "cache", 1) for _ in range(2)]
                time.sleep(3)  # the old ones' heartbeats lapse
                wait_registered(url, 2)
                names: list[str] = []
                figures["attempts_per_min_2_trainers_1_thread"] = throughput(stub, args.jobs, names)
                gaps = handovers(url, names)
                figures["handover_p50_ms"] = percentile(gaps, 0.5) * 1e3
                figures["handover_p90_ms"] = percentile(gaps, 0.9) * 1e3
            for proc, _ in trainers:
                proc.terminate()
                proc.wait(60)
            trainers = []
            if args.baseline is not None:
                here = Path(__file__).resolve().parents[1]
                figures.update(
                    side_by_side(url, tmp, {"baseline": args.baseline, "now": here}, args.jobs)
                )
        finally:
            for proc, _ in trainers:
                proc.terminate()
                proc.wait(60)
            gateway.stop()
    print_figures(figures, args.json)


if __name__ == "__main__":
    main()
