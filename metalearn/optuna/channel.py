"""Where the Optuna integration's gateway is, and what its channel trusts: as the CLI
finds them, for the storage and the pruner alike."""

from __future__ import annotations

import os
from pathlib import Path

from metalearn.tls import ClientTls

DEFAULT_GATEWAY = "127.0.0.1:50051"


def gateway_address(gateway: str | None) -> str:
    """`gateway`, else METALEARN_GATEWAY, else 127.0.0.1:50051."""
    return gateway or os.environ.get("METALEARN_GATEWAY") or DEFAULT_GATEWAY


def gateway_tls(tls: ClientTls | None) -> ClientTls | None:
    """`tls`, else METALEARN_TLS_CA's (with METALEARN_TLS_SERVER_NAME), else None."""
    if tls is None and (ca := os.environ.get("METALEARN_TLS_CA")):
        return ClientTls(Path(ca), server_name=os.environ.get("METALEARN_TLS_SERVER_NAME", ""))
    return tls
