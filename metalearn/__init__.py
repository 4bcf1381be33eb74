"""metalearn: remembers every training attempt so that machines can learn how to learn.

`from metalearn import Client, MetalearnError` is the Python client;
`metalearn.start_run(...)` reports a run of your own training code. The client is
imported when one of them is first asked for (PEP 562), not with the package: the
gateway, the trainer and the dashboard import the shared modules here (errors, status,
documents, limits, tls, credentials…) without loading the client.
"""

import os
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Before anything imports grpc, which reads it once. gRPC's fork handlers are for
# processes that fork with live channels; ours fork only to exec (pg_ctl, `metalearn
# up`'s daemons) or from a forkserver that never imports grpc (trainer/workers.py), and
# the handlers log "Other threads are currently calling into gRPC, skipping fork()
# handlers" on every such fork. A value the environment already holds wins.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")

if TYPE_CHECKING:
    from metalearn.client import Client
    from metalearn.outgoing import MetalearnError
    from metalearn.reporting import Run, start_run

__all__ = ["Client", "MetalearnError", "Run", "__version__", "start_run"]

# The names imported on first use, and the module each comes from.
_LAZY = {
    "Client": "metalearn.client",
    "MetalearnError": "metalearn.outgoing",
    "Run": "metalearn.reporting",
    "start_run": "metalearn.reporting",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'metalearn' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # asked once: later lookups find it without this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
