"""`metalearn optuna-proxy`: serves Optuna's gRPC storage protocol on loopback for Optuna
clients that cannot send credentials (metalearn/optuna/proxy.py)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any

from metalearn.credentials import find_token
from metalearn.optuna.proxy import make_server
from metalearn.tls import TlsError, client_tls


def cmd_optuna_proxy(args: argparse.Namespace) -> int:
    host, _, port = args.listen.rpartition(":")
    if not port.isdigit():
        print("metalearn optuna-proxy: --listen is HOST:PORT", file=sys.stderr)
        return 2
    try:
        server, bound = make_server(
            args.gateway, find_token(args.token), client_tls(args), host.strip("[]"), int(port)
        )
    except (ValueError, OSError, TlsError) as err:
        print(f"metalearn optuna-proxy: {err}", file=sys.stderr)
        return 2
    server.start()
    # The bound address, for scripts that asked for port 0, then nothing until stopped.
    print(f"optuna-proxy listening on {host}:{bound}, forwarding to {args.gateway}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop(grace=5).wait()
    return 0


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    proxy = sub.add_parser(
        "optuna-proxy",
        parents=[common],
        help="serve Optuna's gRPC storage protocol on loopback, forwarded with your token",
        description="For Optuna clients that speak only Optuna's own gRPC storage protocol"
        " (optuna.storages.GrpcStorageProxy, OptunaSharp): they connect to this proxy on"
        " loopback, and each call goes on to the gateway with your token (and TLS), so their"
        " studies and trials are held by metalearn. Optuna's protocol has no credentials:"
        " the proxy listens on a loopback address only. Python scripts need no proxy:"
        " optuna.create_study(storage=metalearn.optuna.Storage()).",
    )
    proxy.add_argument(
        "--listen", default="127.0.0.1:13000", help="loopback HOST:PORT (default 127.0.0.1:13000)"
    )
    proxy.set_defaults(func=cmd_optuna_proxy)
