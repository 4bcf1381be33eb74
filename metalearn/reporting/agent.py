"""`metalearn agent STUDY -- python train.py`: runs a user's script once per trial of an
external study, as `wandb agent` runs a sweep's.

Each trial's sampled parameters reach the script twice: as arguments (`--lr=0.01`, a
JSON text for lists and objects) and as METALEARN_TRIAL_PARAMS (JSON); METALEARN_RUN_ID
names the trial's run, so `metalearn.start_run()` in the script reports to it (and
`run.params` holds the values). Start as many agents, on as many machines, as there
are slots: each asks the gateway for the next trial when its script ends.

While the script runs, the agent keeps the trial alive with its own report stream (a
script that reports nothing is still not lost) and listens on it: when metalearn stops
the trial (its pruner, a cancel, the study stopped) a script that uses the SDK hears it
itself (`run.should_stop()`); one still running 5 s later gets SIGTERM, then SIGKILL
after `grace` seconds. A script that ends without finishing its run has it finished by
the agent: FINISHED on exit status 0, FAILED with the status otherwise.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from metalearn.credentials import find_token, open_channel
from metalearn.outgoing import translate
from metalearn.reporting.run import RUN_ID_ENV
from metalearn.structs import integral_struct
from metalearn.tls import ClientTls
from metalearn.v1 import (
    reporting_service_pb2,
    reporting_service_pb2_grpc,
    study_service_pb2,
    study_service_pb2_grpc,
)

log = logging.getLogger("metalearn.agent")
rpb = reporting_service_pb2
spb = study_service_pb2

PARAMS_ENV = "METALEARN_TRIAL_PARAMS"
# How long a stopped trial's script has to end by itself before SIGTERM.
STOP_SECONDS = 5.0
# How often the agent's own stream says the trial is alive.
KEEPALIVE_SECONDS = 5.0
_RETRY_PAUSES = (0.5, 1, 2, 4, 8, 15, 30)


@dataclass(frozen=True)
class TrialRun:
    """What one trial's script did."""

    number: int
    attempt_id: int
    params: dict[str, Any]
    exit_code: int
    stopped: str  # why metalearn stopped it ('' when it was not)


def argument(name: str, value: Any) -> str:
    """A parameter as a command-line argument, as `wandb agent` passes them: numbers and
    strings as they are, booleans as true/false, lists and objects as JSON."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = value
    elif isinstance(value, int | float):
        text = repr(value)
    else:
        text = json.dumps(value, sort_keys=True)
    return f"--{name}={text}"


class _Keeper(threading.Thread):
    """The agent's report stream on a trial: empty batches keep it alive; a stop reply
    is kept for the agent to act on."""

    def __init__(self, stub: reporting_service_pb2_grpc.ReportingServiceStub, attempt_id: int):
        super().__init__(name=f"metalearn-agent-{attempt_id}", daemon=True)
        self._stub = stub
        self._attempt_id = attempt_id
        self._closing = threading.Event()
        self.stop_reason = ""

    def run(self) -> None:
        sequence = 0
        while not self._closing.is_set() and not self.stop_reason:
            requests: queue.SimpleQueue[rpb.ReportRunRequest | None] = queue.SimpleQueue()
            requests.put(rpb.ReportRunRequest(attempt_id=self._attempt_id))
            call = self._stub.ReportRun(iter(requests.get, None))
            pacer = threading.Thread(target=self._pace, args=(requests, sequence), daemon=True)
            pacer.start()
            try:
                for reply in call:
                    if reply.WhichOneof("kind") == "stop":
                        self.stop_reason = reply.stop.reason or "stopped"
                        break
            except grpc.RpcError as err:
                if err.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
                    log.warning("agent: trial run %d: %s", self._attempt_id, translate(err))
                    return
            finally:
                requests.put(None)
                call.cancel()
            sequence += 1_000_000  # a new stream: its own numbers
            self._closing.wait(1.0)

    def _pace(self, requests: queue.SimpleQueue[rpb.ReportRunRequest | None], base: int) -> None:
        n = base
        while not self._closing.wait(KEEPALIVE_SECONDS):
            n += 1
            requests.put(rpb.ReportRunRequest(batch=rpb.ReportBatch(sequence=n)))

    def close(self) -> None:
        self._closing.set()


class Agent:
    def __init__(
        self,
        study: str,
        command: Sequence[str],
        *,
        gateway: str,
        token: str | None = None,
        tls: ClientTls | None = None,
        worker: str = "",
        grace_seconds: float = 30.0,
    ) -> None:
        if not command:
            raise ValueError("give the command to run after --")
        self.study = study
        self.command = list(command)
        self.gateway = gateway
        self.token = find_token(token)
        self.worker = worker or f"{os.uname().nodename}-{os.getpid()}"
        self.grace = grace_seconds
        self._channel = open_channel(gateway, self.token, tls)
        self._studies = study_service_pb2_grpc.StudyServiceStub(self._channel)
        self._reporting = reporting_service_pb2_grpc.ReportingServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def _ask(self) -> spb.AskTrialResponse:
        request = spb.AskTrialRequest(
            name=self.study, worker=self.worker[:128], request_id=str(uuid.uuid4())
        )
        for pause in (*_RETRY_PAUSES, None):
            try:
                reply: spb.AskTrialResponse = self._studies.AskTrial(request, timeout=60)
                return reply
            except grpc.RpcError as err:
                retry = err.code() in (grpc.StatusCode.UNAVAILABLE,
                                       grpc.StatusCode.DEADLINE_EXCEEDED)  # fmt: skip
                if not retry or pause is None:
                    raise translate(err) from None
                time.sleep(pause)
        raise AssertionError("unreachable")

    def run(self, count: int = 0) -> list[TrialRun]:
        """Runs trials until the study is done (or `count` of them)."""
        done: list[TrialRun] = []
        while not count or len(done) < count:
            reply = self._ask()
            kind = reply.WhichOneof("outcome")
            if kind == "done":
                return done
            if kind == "wait_seconds":
                time.sleep(min(max(reply.wait_seconds, 0.1), 30))
                continue
            done.append(self.run_trial(reply.trial))
        return done

    def run_trial(self, trial: spb.Trial) -> TrialRun:
        params = integral_struct(trial.params)
        env = dict(os.environ)
        env.update({
            RUN_ID_ENV: str(trial.attempt_id),
            PARAMS_ENV: json.dumps(params, sort_keys=True),
            "METALEARN_STUDY": self.study,
            "METALEARN_TRIAL_NUMBER": str(trial.number),
            "METALEARN_GATEWAY": self.gateway,
        })  # fmt: skip
        if self.token:
            env["METALEARN_TOKEN"] = self.token
        args = [*self.command, *(argument(k, v) for k, v in sorted(params.items()))]
        keeper = _Keeper(self._reporting, trial.attempt_id)
        keeper.start()
        log.info("agent: trial %d of %s: %s", trial.number, self.study, " ".join(args))
        process = subprocess.Popen(args, env=env)
        stopped = ""
        try:
            while process.poll() is None:
                if keeper.stop_reason and not stopped:
                    stopped = keeper.stop_reason
                    self._stop(process)
                time.sleep(0.1)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            keeper.close()
        code = process.returncode
        self._finish(trial.attempt_id, code)
        return TrialRun(trial.number, trial.attempt_id, params, code, stopped)

    def _stop(self, process: subprocess.Popen[bytes]) -> None:
        """A script that reports through the SDK hears the stop itself and ends; one that
        does not gets SIGTERM a few seconds later, then SIGKILL after `grace`."""
        try:
            process.wait(STOP_SECONDS)
            return
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(self.grace)
        except subprocess.TimeoutExpired:
            process.kill()

    def _finish(self, attempt_id: int, code: int) -> None:
        """Ends the trial's run the script left running (FAILED_PRECONDITION: it ended)."""
        end = rpb.RUN_END_FINISHED if code == 0 else rpb.RUN_END_FAILED
        error = "" if code == 0 else f"the script exited with status {code}"
        request = rpb.FinishRunRequest(attempt_id=attempt_id, end=end, error=error)
        for pause in (*_RETRY_PAUSES, None):
            try:
                self._reporting.FinishRun(request, timeout=30)
                return
            except grpc.RpcError as err:
                if err.code() == grpc.StatusCode.FAILED_PRECONDITION:
                    return  # the script finished it, or metalearn ended it first
                if err.code() != grpc.StatusCode.UNAVAILABLE or pause is None:
                    raise translate(err) from None
                time.sleep(pause)
