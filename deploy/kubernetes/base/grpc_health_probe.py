"""Kubernetes probe of a metalearn gRPC server from inside its own pod.

Kubernetes' native `grpc:` probe speaks plaintext, and the gateway and the trainers
serve TLS only, so the kubelet runs this instead (an exec probe, as docker-compose.yml's
health checks do). It calls `grpc.health.v1.Health/Check` on 127.0.0.1 over TLS with the
pod's own files, named by the same METALEARN_TLS_* variables the server reads: the CA,
and the pod's certificate and key where its port wants one (METALEARN_TLS_CLIENT_AUTH,
the trainers' mutual TLS).

    python grpc_health_probe.py PORT SERVER_NAME ready   # exit 0 only when SERVING
    python grpc_health_probe.py PORT SERVER_NAME alive   # exit 0 when it answers at all

`alive` is for liveness: a gateway whose database is down answers NOT_SERVING and must
not be restarted for it (it serves again by itself once the database is back), and a
stopping server answers NOT_SERVING while it drains.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def _file(variable: str) -> bytes:
    return Path(os.environ[variable]).read_bytes()


def main(argv: list[str]) -> int:
    port, server_name, mode = argv
    if mode not in ("ready", "alive"):
        raise SystemExit(f"mode is 'ready' or 'alive', not {mode!r}")
    mutual = bool(os.environ.get("METALEARN_TLS_CLIENT_AUTH"))
    credentials = grpc.ssl_channel_credentials(
        root_certificates=_file("METALEARN_TLS_CA"),
        private_key=_file("METALEARN_TLS_KEY") if mutual else None,
        certificate_chain=_file("METALEARN_TLS_CERT") if mutual else None,
    )
    options = [("grpc.ssl_target_name_override", server_name)]
    with grpc.secure_channel(f"127.0.0.1:{port}", credentials, options=options) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            status = stub.Check(health_pb2.HealthCheckRequest(), timeout=3).status
        except grpc.RpcError as err:
            print(f"no answer: {err.code().name}", file=sys.stderr)
            return 1
    if mode == "ready" and status != health_pb2.HealthCheckResponse.SERVING:
        print(f"not ready: {health_pb2.HealthCheckResponse.ServingStatus.Name(status)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
