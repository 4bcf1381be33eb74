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

import os
from pathlib import Path
from typing import Any

from optuna.storages._grpc.auto_generated import api_pb2_grpc
from optuna.storages._grpc.client import GrpcClientCache, GrpcStorageProxy

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
        return super().__getstate__()


__all__ = ["Storage"]
