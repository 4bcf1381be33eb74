"""The background sender of a reported run: what `Run.log` queued, batched, written to
the spool, streamed to the gateway, and forgotten once acknowledged.

One thread does all of it, so the training thread only ever appends to a deque (no lock,
no wake-up: the sender looks every `POLL_SECONDS`; waking a thread on every call cost the
training thread a context switch and a fight for the interpreter's lock each time). The
stream's replies are read by a second, small thread that hands them over; a reply to
stop (the run was cancelled, pruned, or is hopeless) is kept for `Run.should_stop`.
When the stream breaks, the sender keeps batching into the spool and reconnects with a
growing pause; once back, it sends again everything not acknowledged, in order.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import grpc

from metalearn.reporting.spool import Spool
from metalearn.v1 import attempt_pb2, reporting_service_pb2, reporting_service_pb2_grpc

log = logging.getLogger("metalearn.reporting")
rpb = reporting_service_pb2

# A batch is sent once it holds this many points, or epochs and this long has passed
# (a pruner's answer should not wait), or anything and `flush_seconds` have passed.
MAX_BATCH_POINTS = 20_000
EPOCH_DELAY_SECONDS = 0.05
# How often the sender looks for what was logged (an epoch waits at most this long).
POLL_SECONDS = 0.05
# Batches sent and not yet acknowledged, at most: the rest wait in the spool.
WINDOW = 8
# Pauses between reconnections: doubling up to the last.
_PAUSES = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


@dataclass
class StopInfo:
    status: str
    reason: str


@dataclass
class _Builder:
    """The batch being filled."""

    epochs: list[rpb.ReportedEpoch] = field(default_factory=list)
    series: dict[str, tuple[list[int], list[float], list[int]]] = field(default_factory=dict)
    points: int = 0
    since: float = 0.0

    def empty(self) -> bool:
        return not self.epochs and not self.series

    def fits(self, step: int, values: dict[str, float]) -> bool:
        """Whether points at `step` can join this batch (steps rise within a series)."""
        for key in values:
            found = self.series.get(key)
            if found is not None and found[0][-1] >= step:
                return False
        return True

    def add_points(self, step: int, at_ms: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            steps, numbers, times = self.series.setdefault(key, ([], [], []))
            steps.append(step)
            numbers.append(value)
            times.append(at_ms)
        self.points += len(values)

    def encode(self, sequence: int) -> bytes:
        batch = rpb.ReportBatch(sequence=sequence, epochs=self.epochs)
        for key, (steps, values, times) in self.series.items():
            batch.metrics.add(key=key, steps=steps, values=values, timestamps_ms=times)
        return batch.SerializeToString()


class Sender(threading.Thread):
    """Runs until `close`; its state is read by the run (stop, errors, progress)."""

    def __init__(
        self,
        channel: grpc.Channel,
        items: deque[tuple[Any, ...]],
        spool: Spool,
        start: rpb.StartRunRequest,
        attempt: attempt_pb2.Attempt | None,
        flush_seconds: float,
        heartbeat_seconds: float,
    ) -> None:
        super().__init__(name=f"metalearn-report-{start.name}", daemon=True)
        self._stub = reporting_service_pb2_grpc.ReportingServiceStub(channel)
        self._items = items
        # Set to wake the sender before its next look: replies, and the run's end.
        self._wake = threading.Event()
        self._spool = spool
        self._start = start
        self.attempt = attempt
        self.started = threading.Event()
        if attempt is not None:
            self.started.set()
        self._flush = flush_seconds
        # An empty batch this often keeps the run's lease while nothing is logged.
        self._keepalive = heartbeat_seconds
        self._builder = _Builder()
        self._sequence = 0
        self._acknowledged = 0
        self._sent = 0  # the highest sequence sent on the current stream
        self._replies: deque[rpb.ReportRunResponse | Exception | None] = deque()
        self._requests: queue.SimpleQueue[rpb.ReportRunRequest | None] | None = None
        self._call: Any = None
        self._retry_at = 0.0
        self._failures = 0
        self._last_sent = time.monotonic()
        self._closing = False
        self.stop: StopInfo | None = None
        # An error the gateway gave that no retry can mend (a bad batch, no permission).
        self.error: Exception | None = None
        # Set with `stop` or `error`: the one flag `Run.log` reads on its fast path.
        self.over = False
        self.current_epoch = 0
        self.idle = threading.Event()  # set while everything queued has been acknowledged

    # The training side.
    def close(self) -> None:
        self._closing = True
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    # The thread.
    def run(self) -> None:
        try:
            while True:
                self._take(self._wait_seconds())
                self._read_replies()
                if self.stop is not None or self.error is not None:
                    self.over = True
                    self._drop_stream()
                    self.idle.set()
                    return
                self._seal_if_due()
                self._send()
                if self._closing and not self._items and self._all_acknowledged():
                    self._drop_stream()
                    self.idle.set()
                    return
        except Exception as err:  # a bug of ours: the run hears of it at its end
            log.exception("metalearn: the reporting thread stopped")
            self.error = err
            self.over = True
            self.idle.set()

    def _all_acknowledged(self) -> bool:
        return self._builder.empty() and len(self._spool) == 0

    def _wait_seconds(self) -> float:
        if self._replies:
            return 0.0
        if not self._builder.empty():
            delay = EPOCH_DELAY_SECONDS if self._builder.epochs else self._flush
            return min(POLL_SECONDS, max(0.0, self._builder.since + delay - time.monotonic()))
        return POLL_SECONDS

    def _take(self, timeout: float) -> None:
        """Waits up to `timeout` (or a wake-up), then moves what the training thread
        logged into the batch."""
        if timeout > 0 and self._wake.wait(timeout):
            self._wake.clear()
        items = self._items
        while items:
            self._add(items.popleft())

    def _add(self, item: tuple[Any, ...]) -> None:
        kind = item[0]
        builder = self._builder
        if kind == "points":
            _, step, at_ms, values = item
            if not builder.fits(step, values):
                self._seal()
                builder = self._builder
            if builder.empty():
                builder.since = time.monotonic()
            builder.add_points(step, at_ms, values)
        elif kind == "epoch":
            _, epoch = item
            clash = any(k in builder.series for k in epoch.metrics)
            if clash:
                self._seal()
                builder = self._builder
            if builder.empty():
                builder.since = time.monotonic()
            builder.epochs.append(epoch)
        if builder.points >= MAX_BATCH_POINTS:
            self._seal()

    def _seal_if_due(self) -> None:
        builder = self._builder
        now = time.monotonic()
        if builder.empty():
            if self._call is not None and now - self._last_sent > self._keepalive:
                self._seal(keepalive=True)  # nothing to say: an empty batch keeps the lease
            return
        delay = EPOCH_DELAY_SECONDS if builder.epochs else self._flush
        if self._closing or now - builder.since >= delay:
            self._seal()

    def _seal(self, keepalive: bool = False) -> None:
        if self._builder.empty() and not keepalive:
            return
        self._sequence += 1
        self._spool.append(self._sequence, self._builder.encode(self._sequence))
        self._builder = _Builder()
        self.idle.clear()

    # The stream.
    def _send(self) -> None:
        if self._call is None and not self._connect():
            return
        assert self._requests is not None
        for sequence, data in self._spool.pending(after=self._sent):
            if sequence - self._acknowledged > WINDOW:
                break
            self._requests.put(rpb.ReportRunRequest(batch=rpb.ReportBatch.FromString(data)))
            self._sent = sequence
            self._last_sent = time.monotonic()

    def _connect(self) -> bool:
        now = time.monotonic()
        if now < self._retry_at:
            return False
        try:
            if self.attempt is None:
                # The request id makes a retry of a start that did happen return its run.
                self.attempt = self._stub.StartRun(self._start, timeout=30).attempt
                self.started.set()
            requests: queue.SimpleQueue[rpb.ReportRunRequest | None] = queue.SimpleQueue()
            requests.put(rpb.ReportRunRequest(attempt_id=self.attempt.id))
            call = self._stub.ReportRun(iter(requests.get, None))
        except grpc.RpcError as err:
            self._failed(err)
            return False
        self._requests, self._call = requests, call
        # Everything not acknowledged goes again on the new stream.
        self._sent = self._acknowledged
        threading.Thread(
            target=self._read, args=(call,), name=f"{self.name}-replies", daemon=True
        ).start()
        return True

    def _read(self, call: Any) -> None:
        try:
            for reply in call:
                self._replies.append(reply)
                self.wake()
            self._replies.append(None)
        except grpc.RpcError as err:
            self._replies.append(err)
        self.wake()

    def _read_replies(self) -> None:
        while self._replies:
            reply = self._replies.popleft()
            if isinstance(reply, rpb.ReportRunResponse):
                if reply.WhichOneof("kind") == "stop":
                    self.stop = StopInfo(
                        attempt_pb2.AttemptStatus.Name(reply.stop.status).removeprefix(
                            "ATTEMPT_STATUS_"
                        ),
                        reply.stop.reason,
                    )
                    return
                ack = reply.acknowledged
                self._acknowledged = max(self._acknowledged, ack.sequence)
                self.current_epoch = max(self.current_epoch, ack.current_epoch)
                self._spool.acknowledge(ack.sequence)
                self._failures = 0
                if self._all_acknowledged() and not self._items:
                    self.idle.set()
            elif isinstance(reply, grpc.RpcError):
                self._drop_stream()
                self._failed(reply)
            else:  # the gateway ended the stream (it is stopping): connect again
                self._drop_stream()

    def _failed(self, err: grpc.RpcError) -> None:
        code = err.code() if hasattr(err, "code") else None
        if code in (
            grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.PERMISSION_DENIED,
            grpc.StatusCode.UNAUTHENTICATED,
            grpc.StatusCode.NOT_FOUND,
            grpc.StatusCode.FAILED_PRECONDITION,
            grpc.StatusCode.ALREADY_EXISTS,
        ):
            self.error = err
            return
        pause = _PAUSES[min(self._failures, len(_PAUSES) - 1)]
        self._failures += 1
        if self._failures in (1, 5) or self._failures % 20 == 0:
            log.warning(
                "metalearn: reporting run %s: %s; batches wait in %s (%d), trying again",
                self._start.name,
                code.name if code is not None else err,
                self._spool.path,
                len(self._spool),
            )
        self._retry_at = time.monotonic() + pause

    def _drop_stream(self) -> None:
        if self._requests is not None:
            self._requests.put(None)
        if self._call is not None:
            self._call.cancel()
        self._requests, self._call = None, None
