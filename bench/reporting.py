"""Benchmark of reporting runs of users' own code (ReportingService and the Python SDK).

Against a real embedded PostgreSQL and a real gateway in its own process, all started
here:
- ingest: metric points a second through ReportRun from one client (batches of 10,000
  points, a few in flight), acknowledged, hence stored;
- the SDK on the training thread: each `Run.log` call's time (p50, p99) inside a real
  PyTorch training loop, and that loop's speed with the SDK logging every step against
  the same loop without it (rounds interleaved, medians compared);
- many runs at once: N runs each reporting 10 points a second and an epoch every 30 s
  (each run at its own phase), for S seconds, with WatchAttempt watchers on 100 of them:
  runs that lost anything (stored less than was acknowledged, or a stream that failed),
  and how long an epoch takes from its reporter to a watcher (p50, p99, max) once every
  run has begun, and apart, while the N streams were still opening.
When MLflow is installed, its `log_batch` into a local sqlite store runs beside the
ingest (the same points), as the baseline the issue quotes.

  python bench/reporting.py [--json] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.database import scratch_postgres
from bench.report import print_figures
from bench.store import GatewayProcess
from metalearn.credentials import authorization
from metalearn.v1 import (
    attempt_pb2,
    attempt_service_pb2,
    attempt_service_pb2_grpc,
    reporting_service_pb2,
    reporting_service_pb2_grpc,
    token_service_pb2,
    token_service_pb2_grpc,
)

rpb = reporting_service_pb2


def _start_request(name: str) -> rpb.StartRunRequest:
    return rpb.StartRunRequest(
        name=name,
        task=attempt_pb2.DeclaredTask(dataset="bench", labels=["a", "b"]),
        heartbeat_seconds=600,
    )


async def ingest(address: str, token: str, seconds: float, batch: int = 10_000) -> float:
    """Points a second, acknowledged, through one ReportRun stream of one client."""
    window = 4
    metadata = authorization(token)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = reporting_service_pb2_grpc.ReportingServiceStub(channel)
        run = (await stub.StartRun(_start_request(f"ingest-{uuid.uuid4().hex[:8]}"),
                                   metadata=metadata)).attempt  # fmt: skip
        call = stub.ReportRun(metadata=metadata)
        await call.write(rpb.ReportRunRequest(attempt_id=run.id))
        # Ten metrics of `batch / 10` points each: what a training loop logging ten
        # numbers a step sends.
        per_key = batch // 10
        sent = acked = 0
        step = 0
        start = time.perf_counter()
        while True:
            now = time.perf_counter()
            if now - start < seconds and sent - acked < window:
                steps = list(range(step, step + per_key))
                step += per_key
                sent += 1
                request = rpb.ReportRunRequest(batch=rpb.ReportBatch(sequence=sent))
                for k in range(10):
                    request.batch.metrics.add(
                        key=f"metric/{k}", steps=steps, values=[float(s) * 0.5 for s in steps]
                    )
                await call.write(request)
                continue
            if acked == sent:
                break
            reply: Any = await call.read()
            assert reply.WhichOneof("kind") == "acknowledged", reply
            acked = reply.acknowledged.sequence
        elapsed = time.perf_counter() - start
        await call.done_writing()
        return acked * per_key * 10 / elapsed


def mlflow_baseline(points: int = 20_000) -> float | None:
    """MLflow's log_batch into a local sqlite store: points a second (None: no MLflow)."""
    try:
        from mlflow.entities import Metric
        from mlflow.tracking import MlflowClient
    except ImportError:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        client = MlflowClient(tracking_uri=f"sqlite:///{tmp}/mlflow.db")
        experiment = client.create_experiment("bench")
        run = client.create_run(experiment)
        now = int(time.time() * 1000)
        start = time.perf_counter()
        for first in range(0, points, 1000):  # MLflow takes at most 1,000 metrics a batch
            metrics = [Metric("loss", float(s), now, s) for s in range(first, first + 1000)]
            client.log_batch(run.info.run_id, metrics=metrics)
        return points / (time.perf_counter() - start)


def sdk_figures(address: str, token: str, steps: int, rounds: int) -> dict[str, float]:
    """`Run.log` on the training thread of a real PyTorch loop, and the loop's speed with
    and without it."""
    import torch
    from sklearn.datasets import load_digits

    import metalearn

    torch.manual_seed(0)
    # One core for the training loop: on this two-core machine the gateway and its
    # database run beside it, where in use they run on other machines; with both cores
    # torch's threads would be slowed by the server's work, which is not the SDK's cost.
    # The SDK's own thread shares the training process (and its interpreter lock).
    torch.set_num_threads(1)
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16
    y = torch.tensor(digits.target)
    # A small convolutional net on batches of 128 digits: a few ms a step on one core,
    # the short end of real training steps (a tinier model measures Python's overheads
    # rather than training). `sdk_loop_step_ms` says what a step took.
    x = x.reshape(-1, 1, 8, 8)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Linear(32 * 8 * 8, 10),
    )  # fmt: skip
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)

    def step(i: int) -> tuple[float, float]:
        index = torch.randint(0, len(x), (128,))
        out = model(x[index])
        loss = torch.nn.functional.cross_entropy(out, y[index])
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        return float(loss), float((out.argmax(1) == y[index]).float().mean())

    def loop(run: Any, timings: list[int] | None) -> float:
        start = time.perf_counter()
        for i in range(steps):
            loss, accuracy = step(i)
            if run is not None:
                before = time.perf_counter_ns()
                run.log({"train/loss": loss, "train/accuracy": accuracy, "lr": 0.05}, step=i)
                if timings is not None:
                    timings.append(time.perf_counter_ns() - before)
        return time.perf_counter() - start

    loop(None, None)  # warm
    without: list[float] = []
    with_sdk: list[float] = []
    timings: list[int] = []
    with tempfile.TemporaryDirectory() as spool:
        for r in range(rounds):
            without.append(loop(None, None))
            run = metalearn.start_run(
                f"sdk-{r}-{uuid.uuid4().hex[:6]}", gateway=address, token=token, spool_dir=spool
            )
            with_sdk.append(loop(run, timings))
            run.finish()
    timings.sort()
    return {
        "sdk_log_p50_us": timings[len(timings) // 2] / 1e3,
        "sdk_log_p99_us": timings[int(len(timings) * 0.99)] / 1e3,
        "sdk_loop_seconds_without": statistics.median(without),
        "sdk_loop_seconds_with": statistics.median(with_sdk),
        "sdk_loop_ratio": statistics.median(without) / statistics.median(with_sdk),
        "sdk_loop_step_ms": statistics.median(without) / steps * 1e3,
    }


class _Concurrent:
    """Many runs reporting at once, some watched."""

    def __init__(self, address: str, token: str, runs: int, seconds: float, watched: int,
                 epoch_every: float) -> None:  # fmt: skip
        self.address, self.metadata = address, authorization(token)
        self.runs, self.seconds, self.watched, self.epoch_every = (
            runs,
            seconds,
            watched,
            epoch_every,
        )
        self.sent_at: dict[tuple[int, int], float] = {}
        self.latencies: list[float] = []
        self.acked_points: dict[int, int] = {}
        self.acked_epochs: dict[int, int] = {}
        self.failed: set[int] = set()
        # Runs that have sent their first batch; once all have, plus a second, the
        # latencies count as steady (before it, a thousand streams open at once).
        self.begun = 0
        self.steady_at = float("inf")
        self.ramp_latencies: list[float] = []

    async def run(self) -> dict[str, float]:
        channels = [
            grpc.aio.insecure_channel(self.address) for _ in range(max(1, self.runs // 100))
        ]
        try:
            stubs = [reporting_service_pb2_grpc.ReportingServiceStub(c) for c in channels]
            ids = await asyncio.gather(*(
                self._start(stubs[i % len(stubs)], i) for i in range(self.runs)
            ))  # fmt: skip
            watchers = [
                asyncio.create_task(self._watch(channels[0], ids[i]))
                for i in range(min(self.watched, self.runs))
            ]
            await asyncio.sleep(0.5)  # the watchers' snapshots first
            await asyncio.gather(*(
                self._report(stubs[i % len(stubs)], ids[i], i) for i in range(self.runs)
            ))  # fmt: skip
            for task in watchers:
                task.cancel()
            lost = await self._check(stubs[0], ids)
        finally:
            for channel in channels:
                await channel.close()
        self.latencies.sort()
        self.ramp_latencies.sort()
        n, r = len(self.latencies), len(self.ramp_latencies)
        return {
            "concurrent_runs": self.runs,
            "concurrent_seconds": self.seconds,
            "concurrent_runs_lost": lost,
            "concurrent_watch_p50_ms": self.latencies[n // 2] * 1e3 if n else float("nan"),
            "concurrent_watch_p99_ms": self.latencies[int(n * 0.99)] * 1e3 if n else float("nan"),
            "concurrent_watch_max_ms": self.latencies[-1] * 1e3 if n else float("nan"),
            "concurrent_watched_epochs": n,
            # While the thousand streams were still opening (StartRun, first batches).
            "concurrent_ramp_watch_p99_ms": (
                self.ramp_latencies[int(r * 0.99)] * 1e3 if r else float("nan")
            ),
        }

    async def _start(self, stub: Any, i: int) -> int:
        reply = await stub.StartRun(_start_request(f"many-{i}-{uuid.uuid4().hex[:6]}"),
                                    metadata=self.metadata)  # fmt: skip
        return int(reply.attempt.id)

    async def _report(self, stub: Any, attempt_id: int, i: int) -> None:
        call = stub.ReportRun(metadata=self.metadata)
        try:
            await call.write(rpb.ReportRunRequest(attempt_id=attempt_id))
            # Runs start spread over the first second, as real ones would.
            await asyncio.sleep((i % 100) / 100)
            start = time.perf_counter()
            sequence = step = epoch = 0
            # Each run's epochs at its own phase, as runs started apart have them (all at
            # once would be a burst of a thousand epochs every period, which no real
            # fleet of runs makes).
            next_epoch = start + self.epoch_every * ((i * 0.6180339887) % 1.0)
            while time.perf_counter() - start < self.seconds:
                sequence += 1
                batch = rpb.ReportBatch(sequence=sequence)
                steps = range(step, step + 10)
                batch.metrics.add(key="loss", steps=steps, values=[1.0 / (s + 1) for s in steps])
                step += 10
                now = time.perf_counter()
                if now >= next_epoch:
                    epoch += 1
                    next_epoch += self.epoch_every
                    batch.epochs.add(epoch=epoch, loss=1.0 / epoch, val_accuracy=0.5)
                    self.sent_at[(attempt_id, epoch)] = now
                await call.write(rpb.ReportRunRequest(batch=batch))
                reply = await call.read()
                if sequence == 1:
                    self.begun += 1
                    if self.begun == self.runs:
                        self.steady_at = time.perf_counter() + 1.0
                if reply.WhichOneof("kind") != "acknowledged":
                    self.failed.add(attempt_id)
                    return
                self.acked_points[attempt_id] = step
                self.acked_epochs[attempt_id] = reply.acknowledged.current_epoch
                await asyncio.sleep(max(0.0, 1.0 - (time.perf_counter() - now)))
            await call.done_writing()
        except grpc.aio.AioRpcError:
            self.failed.add(attempt_id)

    async def _watch(self, channel: grpc.aio.Channel, attempt_id: int) -> None:
        stub = attempt_service_pb2_grpc.AttemptServiceStub(channel)
        call = stub.WatchAttempt(
            attempt_service_pb2.WatchAttemptRequest(id=attempt_id), metadata=self.metadata
        )
        async for event in call:
            if event.WhichOneof("event") == "epoch":
                sent = self.sent_at.get((attempt_id, event.epoch.epoch))
                if sent is not None:
                    steady = sent >= self.steady_at
                    (self.latencies if steady else self.ramp_latencies).append(
                        time.perf_counter() - sent
                    )

    async def _check(self, stub: Any, ids: list[int]) -> int:
        """Runs that stored less than they were told was stored, or whose stream failed."""
        lost = set(self.failed)
        for attempt_id in ids:
            history = await stub.GetMetricHistory(
                rpb.GetMetricHistoryRequest(attempt_id=attempt_id, key="loss", after_step=-1,
                                            page_size=100_000),
                metadata=self.metadata,
            )  # fmt: skip
            if len(history.steps) < self.acked_points.get(attempt_id, 0):
                lost.add(attempt_id)
            finish = rpb.FinishRunRequest(
                attempt_id=attempt_id,
                end=rpb.RUN_END_FINISHED,
                last_epoch=self.acked_epochs.get(attempt_id, 0),
            )
            try:
                await stub.FinishRun(finish, metadata=self.metadata)
            except grpc.aio.AioRpcError:
                lost.add(attempt_id)
        return len(lost)


def writer_token(gateway: GatewayProcess) -> str:
    """A writer's token: reporters are writers, and a writer's streams are counted."""
    with gateway.channel() as channel:
        reply = token_service_pb2_grpc.TokenServiceStub(channel).CreateToken(
            token_service_pb2.CreateTokenRequest(
                name="bench-writer", role=token_service_pb2.ROLE_WRITER
            )
        )
    return reply.secret


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quick", action="store_true", help="seconds, not minutes (tests)")
    parser.add_argument("--runs", type=int, default=None, help="runs at once (1000; quick 50)")
    parser.add_argument("--seconds", type=float, default=None, help="how long (300; quick 10)")
    args = parser.parse_args()
    runs = args.runs or (50 if args.quick else 1000)
    seconds = args.seconds or (10.0 if args.quick else 300.0)
    figures: dict[str, Any] = {}
    with scratch_postgres() as scratch:
        gateway = GatewayProcess(scratch.url, scratch.dir / "gateway")
        try:
            assert gateway.token is not None
            token = writer_token(gateway)
            points = asyncio.run(ingest(gateway.address, token, 2.0 if args.quick else 10.0))
            figures["ingest_points_per_s"] = points
            baseline = mlflow_baseline(2_000 if args.quick else 20_000)
            if baseline is not None:
                figures["mlflow_log_batch_points_per_s"] = baseline
                figures["ingest_vs_mlflow"] = points / baseline
            figures.update(
                sdk_figures(
                    gateway.address, token, 300 if args.quick else 3000, 1 if args.quick else 5
                )
            )
            figures.update(
                asyncio.run(
                    _Concurrent(
                        gateway.address,
                        token,
                        runs,
                        seconds,
                        watched=min(100, runs),
                        epoch_every=min(30.0, seconds / 4),
                    ).run()
                )
            )
        finally:
            gateway.stop()
    print_figures(figures, args.json)


if __name__ == "__main__":
    main()
