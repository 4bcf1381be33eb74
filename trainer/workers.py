"""Runs each Train or Test in a process of its own and relays its events.

A process per run gives each run torch's global random state to itself (determinism
whatever else runs), true parallelism, memory (and CUDA memory) returned at its end,
and a crash that costs one run, not the daemon. Processes come from a forkserver that
has imported torch once, so a run starts in milliseconds, not the seconds an import takes.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import multiprocessing
import multiprocessing.connection
import multiprocessing.forkserver
import os
import queue
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from metalearn import errors
from trainer.config import TrainerConfig

log = logging.getLogger(__name__)

_CONTEXT = multiprocessing.get_context("forkserver")


def _preload() -> list[str]:
    """What the forkserver imports once, so that no run imports it again: torch, all a
    run runs, and the CLI. multiprocessing has every run process execute the program's
    main module again (`metalearn.cli`, whether started with -m or as the `metalearn`
    script): with its imports already made that takes milliseconds, not the 0.2 s of
    importing them. (Python 3.11's forkserver never preloads "__main__" itself.)
    Importing grpc is harmless: gRPC's core starts with a channel or server, and the
    forkserver makes neither, so none is forked."""
    main = getattr(sys.modules.get("__main__"), "__spec__", None)
    modules = ["torch", "torchvision", "trainer.model", "trainer.loop", "trainer.run",
               "trainer.testing", "metalearn.credentials", "metalearn.cli",
               "trainer.workers"]  # fmt: skip
    if main is not None and main.name not in modules:
        modules.append(main.name)
    return modules


_CONTEXT.set_forkserver_preload(_preload())
# Each run process executes the main module again, which the forkserver imported already
# (`_preload`, on purpose): runpy warns of that ("'metalearn.cli' found in sys.modules ...
# prior to execution") in every run process, into the trainer's log. Set here, in the
# daemon and in the forkserver (it imports this module), so every forked run has it.
warnings.filterwarnings(
    "ignore", message=r"'metalearn\.cli' found in sys\.modules", category=RuntimeWarning
)
# Bounded, so a run producing faster than the caller reads waits instead of filling memory.
_QUEUE_DEPTH = 16


# A spare run process older than this is ended and replaced when a call comes (its
# connection may have gone stale).
SPARE_SECONDS = 300.0
# Seconds a spare gives its channel to the gateway to connect while it waits.
_CONNECT_SECONDS = 5.0


@dataclass(eq=False)
class Run:
    """One run's process and the queues and events that steer it."""

    process: multiprocessing.process.BaseProcess
    # Its one job: (kind, request, slots), or None to end unused.
    job: Any
    events: Any
    cancel: Any
    interrupt: Any
    # The attempt it runs (the request's `attempt_name`), to interrupt it alone.
    attempt: str = ""
    # When it was made (time.monotonic()).
    made: float = field(default_factory=time.monotonic)


def _worker_main(config: TrainerConfig, job: Any, events: Any, cancel: Any, interrupt: Any) -> None:
    """A run's process: made ahead of its run (see `Workers`), it connects to the
    gateway, waits for its one job, runs it and ends."""
    # What the forkserver imported (torch: hundreds of thousands of objects) stays out of
    # the collector's sight: a full collection would walk it all, touching and so
    # copying every page shared with the forkserver, in the middle of training.
    gc.freeze()
    _die_with_parent()
    # Imported here, after the fork, with everything that touches gRPC.
    import grpc

    from metalearn.credentials import open_channel
    from metalearn.v1 import trainer_service_pb2 as pb
    from trainer import run, testing

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s trainer-run %(levelname)s %(message)s"
    )
    if config.threads_per_run:
        import torch

        torch.set_num_threads(config.threads_per_run)
    signals = run.Signals(cancelled=cancel.is_set, interrupted=interrupt.is_set)
    options = [
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.keepalive_time_ms", 30_000),
    ]

    def emit(message: Any) -> None:
        events.put(("event", message.SerializeToString()))

    def connect() -> tuple[Any, Any]:
        channel = open_channel(config.gateway, config.token, config.gateway_tls, options)
        ready = grpc.channel_ready_future(channel)
        with contextlib.suppress(grpc.FutureTimeoutError):
            ready.result(timeout=_CONNECT_SECONDS)
        return channel, ready

    try:
        # Connected while it waits, not once its run has begun.
        channel, ready = connect()
        try:
            try:
                # Twice the age at which the trainer stops handing it out: no race.
                given = job.get(timeout=2 * SPARE_SECONDS)
            except queue.Empty:
                given = None
            if given is None:
                return  # never used: the trainer is stopping, or the spare grew old
            if not ready.done():
                # Not connected yet (the gateway was away): a new channel tries at once
                # rather than after the old one's reconnection backoff.
                ready.cancel()
                channel.close()
                channel, ready = connect()
            kind, request, slots = given
            if kind == "train":
                run.train(
                    pb.TrainerServiceTrainRequest.FromString(request),
                    config,
                    channel,
                    slots,
                    emit,
                    signals,
                )
            else:
                testing.test(
                    pb.TrainerServiceTestRequest.FromString(request),
                    config,
                    channel,
                    slots[0],
                    emit,
                    signals,
                )
        finally:
            ready.cancel()
            channel.close()
        events.put(("done", None))
    except errors.DomainError as err:
        violations = [(v.field, v.description) for v in getattr(err, "violations", [])]
        events.put(("error", (type(err).__name__, str(err), violations)))
    except Exception:  # reported upstream as INTERNAL, the trace logged
        if cancel.is_set():
            events.put(("done", None))  # loop.Stopped: the caller has gone
        else:
            events.put(("bug", traceback.format_exc()))


def _die_with_parent() -> None:
    """Ends this run the moment the trainer daemon that asked for it is gone.

    A daemon killed with SIGKILL cannot stop its runs; without this they would train on
    (or wait forever to hand over an event) as orphans holding memory and the device.
    """
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])  # readable when it dies
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _retire(run: Run) -> None:
    """Ends a run process that was never given its job."""
    with contextlib.suppress(Exception):
        run.job.put_nowait(None)
    run.process.join(2)
    if run.process.is_alive():
        run.process.kill()
        run.process.join()
    run.events.close()
    run.job.close()


def _domain_error(name: str, message: str, violations: list[tuple[str, str]]) -> errors.DomainError:
    if name == "InvalidArgument":
        return errors.InvalidArgument(errors.FieldViolation(f, d) for f, d in violations)
    cls = getattr(errors, name, None)
    if isinstance(cls, type) and issubclass(cls, errors.DomainError):
        return cls(message)
    return errors.Unavailable(message)


class Workers:
    """A fixed number of slots, each running at most one process.

    One spare process is kept ready, connected to the gateway: a call takes it and a
    new spare is made in the background, so a run starts without waiting for a fork
    and a connection (30 ms a run, which a short attempt feels)."""

    def __init__(self, config: TrainerConfig) -> None:
        # Start the forkserver now: torch's import happens before the first call rather
        # than during it, and before gRPC has threads that a fork would have to mind.
        multiprocessing.forkserver.ensure_running()
        self._config = config
        self._lock = threading.Lock()
        # Signalled whenever a slot frees up.
        self._freed = threading.Condition(self._lock)
        self._free = list(range(config.capacity))
        self._runs: set[Run] = set()
        self._spare: Run | None = None
        self._making = self._closed = False
        self._prepare_spare()

    def _new_run(self) -> Run:
        job, events = _CONTEXT.Queue(1), _CONTEXT.Queue(_QUEUE_DEPTH)
        cancel, interrupt = _CONTEXT.Event(), _CONTEXT.Event()
        process = _CONTEXT.Process(
            target=_worker_main,
            args=(self._config, job, events, cancel, interrupt),
            name="metalearn-run",
            daemon=True,
        )
        process.start()
        return Run(process, job, events, cancel, interrupt)

    def _prepare_spare(self) -> None:
        """Makes the next spare, in the background (one at a time)."""
        with self._lock:
            if self._making or self._closed:
                return
            self._making = True

        def make() -> None:
            run: Run | None = None
            try:
                run = self._new_run()
            finally:
                with self._lock:
                    self._making = False
                    if run is not None and self._spare is None and not self._closed:
                        self._spare, run = run, None
            if run is not None:  # not wanted after all
                _retire(run)

        threading.Thread(target=make, name="spare-run", daemon=True).start()

    def _take(self) -> Run:
        """The spare, when it still waits; a new process otherwise."""
        with self._lock:
            spare, self._spare = self._spare, None
        self._prepare_spare()
        if spare is None:
            return self._new_run()
        if time.monotonic() - spare.made < SPARE_SECONDS and spare.process.is_alive():
            return spare
        # Not on the call's path: ending a process may wait for it.
        threading.Thread(target=_retire, args=(spare,), name="retire-run", daemon=True).start()
        return self._new_run()

    def close(self) -> None:
        """Ends the spare (a stopping trainer makes no more runs)."""
        with self._lock:
            self._closed = True
            spare, self._spare = self._spare, None
        if spare is not None:
            _retire(spare)

    @property
    def busy(self) -> int:
        with self._lock:
            return self._config.capacity - len(self._free)

    def interrupt_all(self) -> None:
        """SIGTERM: every run finishes its epoch, checkpoints and ends."""
        with self._lock:
            for r in self._runs:
                r.interrupt.set()

    def interrupt(self, attempt: str) -> int:
        """The runs of one attempt finish their epoch, checkpoint and end (its gateway
        is stopping); how many there were."""
        with self._lock:
            runs = [r for r in self._runs if attempt and r.attempt == attempt]
            for r in runs:
                r.interrupt.set()
        return len(runs)

    def start(
        self,
        kind: str,
        request: bytes,
        on_cancel: Callable[[Callable[[], None]], Any],
        is_active: Callable[[], bool],
        attempt: str = "",
        devices: int = 1,
    ) -> Iterator[bytes]:
        """Runs one call (for `attempt`) in a new process, on a slot for each of its
        `devices`; yields its serialized events."""
        capacity = self._config.capacity
        if devices > capacity:
            raise errors.InvalidArgument.one(
                "command.devices", f"this trainer runs at most {capacity} at once, not {devices}"
            )
        with self._freed:
            if not self._freed.wait_for(
                lambda: len(self._free) >= devices, self._config.slot_wait_seconds
            ):
                raise errors.ResourceExhausted(
                    f"{devices} of the {capacity} slots of this trainer are not free; try another"
                )
            self._free.sort()  # the lowest slots: on GPUs, distinct devices
            slots, self._free = self._free[:devices], self._free[devices:]
        try:
            if is_active():  # the caller may have given up while it waited
                yield from self._relay(kind, request, slots, on_cancel, is_active, attempt)
        finally:
            with self._freed:
                self._free.extend(slots)
                self._freed.notify_all()

    def _relay(
        self,
        kind: str,
        request: bytes,
        slots: list[int],
        on_cancel: Callable[[Callable[[], None]], Any],
        is_active: Callable[[], bool],
        attempt: str,
    ) -> Iterator[bytes]:
        r = self._take()
        r.attempt = attempt
        process, events = r.process, r.events
        on_cancel(r.cancel.set)
        r.job.put((kind, request, slots))
        with self._lock:
            self._runs.add(r)
        try:
            while True:
                try:
                    what, payload = events.get(timeout=0.25)
                except queue.Empty:
                    if not is_active():
                        r.cancel.set()
                        return
                    if not process.is_alive():
                        # Killed, out of memory, or crashed: the caller may retry elsewhere.
                        raise errors.Aborted(
                            f"the {kind} process died (exit code {process.exitcode})"
                        ) from None
                    continue
                if what == "event":
                    yield payload
                elif what == "done":
                    return
                elif what == "error":
                    raise _domain_error(*payload)
                else:
                    log.error("bug in a %s run:\n%s", kind, payload)
                    raise RuntimeError(f"{kind} run failed")
        finally:
            r.cancel.set()
            process.join(self._config.stop_grace_seconds)
            if process.is_alive():
                log.warning("killing %s run %s: it did not stop in time", kind, process.pid)
                process.kill()
                process.join()
            with self._lock:
                self._runs.discard(r)
            events.close()
