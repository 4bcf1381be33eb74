"""Optuna scripts unchanged, with their studies held by metalearn.

    import optuna
    import metalearn.optuna

    study = optuna.create_study(storage=metalearn.optuna.Storage(), study_name="lr-search")
    study.optimize(objective, n_trials=100, n_jobs=4)

`Storage` is Optuna's own gRPC storage client (`optuna.storages.GrpcStorageProxy`, its
trial cache included) on a channel to the gateway that carries the caller's token and
TLS; the gateway serves Optuna's protocol itself (gateway/optuna/). Each study is then a
metalearn study and each trial an attempt `STUDY-number` (provenance REPORTED, origin
"optuna"): `metalearn study show`, the dashboard, filters and compare see them, and any
number of workers on any machines share a study, as with Optuna's RDB storage.

For Optuna clients that cannot send credentials (OptunaSharp, Optuna's own proxy client)
`metalearn optuna-proxy` serves the same protocol on loopback (metalearn/optuna/proxy.py).
"""

from __future__ import annotations

import copy
import datetime
import json
import math
import threading
import time
from collections.abc import Callable, Container, Sequence
from typing import Any

import grpc
from optuna.distributions import BaseDistribution
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages._grpc.auto_generated import api_pb2, api_pb2_grpc
from optuna.storages._grpc.client import GrpcClientCache, GrpcStorageProxy
from optuna.trial import FrozenTrial, TrialState

from metalearn.credentials import find_token, open_channel
from metalearn.optuna.channel import DEFAULT_GATEWAY, gateway_address, gateway_tls
from metalearn.optuna.pruner import LearnedPruner
from metalearn.optuna.warm import warm_start
from metalearn.tls import ClientTls
from metalearn.v1 import optuna_trial_service_pb2 as otpb
from metalearn.v1 import optuna_trial_service_pb2_grpc as otpb_grpc

# What the gateway adds to CreateNewTrial's answer (gateway/optuna/servicer.py), in
# Optuna's protocol's time format.
NUMBER_KEY = "metalearn-trial-number"
START_KEY = "metalearn-trial-start"
WAITING_KEY = "metalearn-study-waiting"
TIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"
# How long a running trial's intermediate values wait to go out together (a dashboard
# following the trial sees them this much later; its end sends them at once).
FLUSH_SECONDS = 0.2
# How long "no trial waits in this study" (what the gateway says with each new trial)
# stands in for reading the study's waiting trials, which Optuna does before every trial:
# a trial enqueued by another process is taken by this worker at most this much later
# (and by any worker that reads sooner); one enqueued through this storage, at once.
WAITING_SECONDS = 1.0
_WRITE_STATES = {
    TrialState.RUNNING: otpb.OPTUNA_TRIAL_STATE_RUNNING,
    TrialState.COMPLETE: otpb.OPTUNA_TRIAL_STATE_COMPLETE,
    TrialState.PRUNED: otpb.OPTUNA_TRIAL_STATE_PRUNED,
    TrialState.FAIL: otpb.OPTUNA_TRIAL_STATE_FAIL,
}


def _optuna_error(err: grpc.RpcError) -> Exception:
    """A refusal as Optuna's own client raises it."""
    call: Any = err
    if call.code() == grpc.StatusCode.NOT_FOUND:
        return KeyError(call.details())
    if call.code() == grpc.StatusCode.FAILED_PRECONDITION:
        return UpdateFinishedTrialError(call.details())
    return err


# Optuna's client reads a whole study's trials in one answer: no limit of its own.
_OPTIONS = [("grpc.max_receive_message_length", -1)]


def _only_waiting(states: Container[TrialState]) -> bool:
    """Whether `states` asks for waiting trials alone (Optuna's `_pop_waiting_trial_id`)."""
    return TrialState.WAITING in states and not any(
        s in states for s in TrialState if s != TrialState.WAITING
    )


class Storage(GrpcStorageProxy):
    """An Optuna storage held by a metalearn gateway.

    `gateway`: HOST:PORT, else METALEARN_GATEWAY, else 127.0.0.1:50051. `token`: else as
    the CLI finds it (METALEARN_TOKEN, METALEARN_TOKEN_FILE, the local gateway's admin
    token). `tls`: what to trust (None: METALEARN_TLS_CA when set, else plaintext).
    Writers make studies and change their own; readers may load any study to read it.
    """

    def __init__(
        self,
        gateway: str | None = None,
        *,
        token: str | None = None,
        tls: ClientTls | None = None,
    ) -> None:
        # Optuna's own __init__ would open a plaintext channel without credentials.
        self._address = gateway_address(gateway)
        self._host, _, port = self._address.rpartition(":")
        self._port = int(port) if port.isdigit() else 0
        self._token = find_token(token)
        self._tls = gateway_tls(tls)
        self._setup()

    def _setup(self) -> None:
        self._channel = open_channel(self._address, self._token, self._tls, options=_OPTIONS)
        self._stub = api_pb2_grpc.StorageServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self._cache = GrpcClientCache(self._stub)
        # The running trials this process runs, as it wrote them (see `get_trial`).
        self._owned_lock = threading.Lock()
        self._running: set[int] = set()
        self._owned: dict[int, FrozenTrial] = {}
        self._trials = otpb_grpc.OptunaTrialServiceStub(self._channel)
        # Intermediate values not yet sent, by trial (see set_trial_intermediate_value);
        # a trial's writes in order; a refusal met by the timer's flush, for its end.
        self._unsent: dict[int, dict[int, float]] = {}
        self._writing: dict[int, threading.Lock] = {}
        self._failed: dict[int, Exception] = {}
        self._timer: threading.Timer | None = None
        self._closed = False
        # study id -> when the gateway last said none of its trials waits (as asked);
        # when a trial was last enqueued through this storage.
        self._none_waiting: dict[int, float] = {}
        self._enqueued_at = -math.inf

    # A running trial is written by the one worker that runs it, so that worker knows it
    # as well as the gateway does: Optuna reads it twice a trial (when the trial starts,
    # and before its result is told), and each read here saves a call (2 of 9 a trial
    # with 3 intermediate values). Optuna's _CachedStorage made the same assumption for
    # the trials a process owned. A trial another process changes while it runs (a
    # `study.tell` by number from elsewhere) is seen from its next read that misses here:
    # once it finishes, reads go to the gateway again.

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        if template_trial is not None:
            trial_id = super().create_new_trial(study_id, template_trial)
            with self._owned_lock:
                if template_trial.state == TrialState.RUNNING:
                    self._running.add(trial_id)
                # Enqueued here: the next read of waiting trials goes to the gateway.
                self._enqueued_at = time.monotonic()
            return trial_id
        request = api_pb2.CreateNewTrialRequest(study_id=study_id, template_trial_is_none=True)
        asked = time.monotonic()
        try:
            reply, call = self._stub.CreateNewTrial.with_call(request)
        except grpc.RpcError as err:
            raise _optuna_error(err) from err
        trial_id = int(reply.trial_id)
        # The gateway adds the new trial's number and start to Optuna's answer, so the
        # worker knows its trial without reading it back (Optuna reads it at once), and
        # whether trials wait.
        told = dict(call.trailing_metadata() or ())
        with self._owned_lock:
            if told.get(WAITING_KEY) == "0":
                self._none_waiting[study_id] = asked
            else:
                self._none_waiting.pop(study_id, None)
            self._running.add(trial_id)
            if NUMBER_KEY in told and told.get(START_KEY):
                self._owned[trial_id] = FrozenTrial(
                    number=int(told[NUMBER_KEY]),
                    state=TrialState.RUNNING,
                    value=None,
                    values=None,
                    datetime_start=datetime.datetime.strptime(told[START_KEY], TIME_FORMAT),
                    datetime_complete=None,
                    params={},
                    distributions={},
                    user_attrs={},
                    system_attrs={},
                    intermediate_values={},
                    trial_id=trial_id,
                )
        return trial_id

    def get_trial(self, trial_id: int) -> FrozenTrial:
        with self._owned_lock:
            owned = self._owned.get(trial_id)
            if owned is not None:
                return copy.deepcopy(owned)
        self._flush()
        trial = super().get_trial(trial_id)
        with self._owned_lock:
            if trial_id in self._running and trial.state == TrialState.RUNNING:
                self._owned[trial_id] = copy.deepcopy(trial)
        return trial

    def _update(self, trial_id: int, change: Callable[[FrozenTrial], None]) -> None:
        with self._owned_lock:
            owned = self._owned.get(trial_id)
            if owned is not None:
                change(owned)

    def set_trial_param(
        self,
        trial_id: int,
        param_name: str,
        param_value_internal: float,
        distribution: BaseDistribution,
    ) -> None:
        super().set_trial_param(trial_id, param_name, param_value_internal, distribution)

        def change(trial: FrozenTrial) -> None:
            trial.distributions = {**trial.distributions, param_name: distribution}
            external = distribution.to_external_repr(param_value_internal)
            trial.params = {**trial.params, param_name: external}

        self._update(trial_id, change)

    def set_trial_intermediate_value(
        self, trial_id: int, step: int, intermediate_value: float
    ) -> None:
        with self._owned_lock:
            owned = trial_id in self._owned
            if owned:
                # A running trial's own worker keeps its values a moment and sends them
                # together (OptunaTrialService.WriteTrial): with its end when the trial
                # ends first, else within FLUSH_SECONDS, and before any read of the
                # store, so nothing reads past a value not yet stored. A refusal (the
                # trial ended elsewhere) is raised at the trial's end.
                self._unsent.setdefault(trial_id, {})[step] = intermediate_value
                if self._timer is None:
                    self._timer = threading.Timer(FLUSH_SECONDS, self._flush_later)
                    self._timer.daemon = True
                    self._timer.start()
        if not owned:
            super().set_trial_intermediate_value(trial_id, step, intermediate_value)
            return

        def change(trial: FrozenTrial) -> None:
            trial.intermediate_values = {**trial.intermediate_values, step: intermediate_value}

        self._update(trial_id, change)

    def _write(
        self,
        trial_id: int,
        state: TrialState | None = None,
        values: Sequence[float] | None = None,
    ) -> bool:
        """Sends a trial's unsent values (with its new state, when given) in one call,
        after any other write of the same trial; Optuna's exceptions for its refusals."""
        with self._owned_lock:
            lock = self._writing.setdefault(trial_id, threading.Lock())
        with lock:
            with self._owned_lock:
                unsent = self._unsent.pop(trial_id, {})
                failed = self._failed.pop(trial_id, None)
            if failed is not None:
                raise failed
            if not unsent and state is None:
                return True
            request = otpb.WriteTrialRequest(
                trial_id=trial_id,
                steps=list(unsent),
                intermediate_values=list(unsent.values()),
                state=_WRITE_STATES[state]
                if state is not None
                else otpb.OPTUNA_TRIAL_STATE_UNSPECIFIED,
                values=list(values or ()),
            )
            try:
                reply = self._trials.WriteTrial(request)
            except grpc.RpcError as err:
                raise _optuna_error(err) from err
            return bool(reply.trial_updated)

    def _flush(self) -> None:
        """Every trial's unsent values, stored now. A refusal is kept for its own trial's
        end (a read by another worker's thread is not the place to raise it)."""
        with self._owned_lock:
            trials = list(self._unsent)
        for trial_id in trials:
            try:
                self._write(trial_id)
            except (KeyError, UpdateFinishedTrialError, grpc.RpcError) as err:
                with self._owned_lock:
                    self._failed[trial_id] = err

    def _flush_later(self) -> None:
        with self._owned_lock:
            self._timer = None
            if self._closed:
                return
        self._flush()

    def close(self) -> None:
        """Sends what is unsent, then closes the channel (a later timer sends nothing:
        grpc must not be called on a closed channel)."""
        with self._owned_lock:
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        self._flush()
        with self._owned_lock:
            self._closed = True
        super().close()

    def get_all_trials(
        self,
        study_id: int,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
    ) -> list[FrozenTrial]:
        if states is not None and _only_waiting(states):
            with self._owned_lock:
                said = self._none_waiting.get(study_id, -math.inf)
                if said > self._enqueued_at and time.monotonic() - said < WAITING_SECONDS:
                    return []  # the gateway said so just now (see WAITING_SECONDS)
        self._flush()
        return super().get_all_trials(study_id, deepcopy, states)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        super().set_trial_user_attr(trial_id, key, value)
        # As read back: through JSON, as the gateway keeps it.
        stored = json.loads(json.dumps(value))

        def change(trial: FrozenTrial) -> None:
            trial.user_attrs = {**trial.user_attrs, key: stored}

        self._update(trial_id, change)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        super().set_trial_system_attr(trial_id, key, value)
        stored = json.loads(json.dumps(value))

        def change(trial: FrozenTrial) -> None:
            trial.system_attrs = {**trial.system_attrs, key: stored}

        self._update(trial_id, change)

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        with self._owned_lock:
            # Whatever the answer, the next read asks the gateway: a trial told finished
            # is the gateway's to describe (its completion time), and one that failed
            # to change was changed by someone else.
            owned = self._owned.pop(trial_id, None) is not None or trial_id in self._unsent
            self._running.discard(trial_id)
        if owned and state in _WRITE_STATES:  # its values and its end in one call
            try:
                return self._write(trial_id, state, values)
            finally:
                with self._owned_lock:
                    self._writing.pop(trial_id, None)
        self._flush()
        updated = super().set_trial_state_values(trial_id, state, values)
        if updated and state == TrialState.RUNNING:  # a waiting trial this worker took
            with self._owned_lock:
                self._running.add(trial_id)
        return updated

    def wait_server_ready(self, timeout: float | None = None) -> None:
        """Waits until the gateway answers (ConnectionError after `timeout` seconds)."""
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout)
        except grpc.FutureTimeoutError as err:
            raise ConnectionError(f"gateway {self._address} did not answer") from err

    def __repr__(self) -> str:
        return f"metalearn.optuna.Storage({self._address!r})"

    def __getstate__(self) -> dict[Any, Any]:
        state = super().__getstate__()
        self._flush()
        for local in ("_owned_lock", "_running", "_owned", "_trials", "_unsent", "_writing",
                      "_failed", "_timer", "_closed", "_none_waiting",
                      "_enqueued_at"):  # fmt: skip
            state.pop(local, None)
        return state


__all__ = ["DEFAULT_GATEWAY", "LearnedPruner", "Storage", "gateway_tls", "warm_start"]
