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
import json
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from optuna.distributions import BaseDistribution
from optuna.storages._grpc.auto_generated import api_pb2_grpc
from optuna.storages._grpc.client import GrpcClientCache, GrpcStorageProxy
from optuna.trial import FrozenTrial, TrialState

from metalearn.credentials import find_token, open_channel
from metalearn.tls import ClientTls

DEFAULT_GATEWAY = "127.0.0.1:50051"
# Optuna's client reads a whole study's trials in one answer: no limit of its own.
_OPTIONS = [("grpc.max_receive_message_length", -1)]


def gateway_tls(tls: ClientTls | None) -> ClientTls | None:
    """`tls`, else METALEARN_TLS_CA's (with METALEARN_TLS_SERVER_NAME), else None."""
    if tls is None and (ca := os.environ.get("METALEARN_TLS_CA")):
        return ClientTls(Path(ca), server_name=os.environ.get("METALEARN_TLS_SERVER_NAME", ""))
    return tls


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
        self._address = gateway or os.environ.get("METALEARN_GATEWAY") or DEFAULT_GATEWAY
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

    # A running trial is written by the one worker that runs it, so that worker knows it
    # as well as the gateway does: Optuna reads it twice a trial (when the trial starts,
    # and before its result is told), and each read here saves a call (2 of 9 a trial
    # with 3 intermediate values). Optuna's _CachedStorage made the same assumption for
    # the trials a process owned. A trial another process changes while it runs (a
    # `study.tell` by number from elsewhere) is seen from its next read that misses here:
    # once it finishes, reads go to the gateway again.

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        trial_id = super().create_new_trial(study_id, template_trial)
        if template_trial is None or template_trial.state == TrialState.RUNNING:
            with self._owned_lock:
                self._running.add(trial_id)
        return trial_id

    def get_trial(self, trial_id: int) -> FrozenTrial:
        with self._owned_lock:
            owned = self._owned.get(trial_id)
            if owned is not None:
                return copy.deepcopy(owned)
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
        super().set_trial_intermediate_value(trial_id, step, intermediate_value)

        def change(trial: FrozenTrial) -> None:
            trial.intermediate_values = {**trial.intermediate_values, step: intermediate_value}

        self._update(trial_id, change)

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
            self._owned.pop(trial_id, None)
            self._running.discard(trial_id)
        updated = super().set_trial_state_values(trial_id, state, values)
        if updated and state == TrialState.RUNNING:  # a waiting trial this worker took
            with self._owned_lock:
                self._running.add(trial_id)
        return updated

    def wait_server_ready(self, timeout: float | None = None) -> None:
        """Waits until the gateway answers (ConnectionError after `timeout` seconds)."""
        import grpc

        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout)
        except grpc.FutureTimeoutError as err:
            raise ConnectionError(f"gateway {self._address} did not answer") from err

    def __repr__(self) -> str:
        return f"metalearn.optuna.Storage({self._address!r})"

    def __getstate__(self) -> dict[Any, Any]:
        state = super().__getstate__()
        for local in ("_owned_lock", "_running", "_owned"):
            state.pop(local, None)
        return state


__all__ = ["Storage"]
