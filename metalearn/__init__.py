"""metalearn: remembers every training attempt so that machines can learn how to learn."""

import os

__version__ = "0.1.0"

# Before anything imports grpc, which reads it once. gRPC's fork handlers are for
# processes that fork with live channels; ours fork only to exec (pg_ctl, `metalearn
# up`'s daemons) or from a forkserver that never imports grpc (trainer/workers.py), and
# the handlers log "Other threads are currently calling into gRPC, skipping fork()
# handlers" on every such fork. A value the environment already holds wins.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")

from metalearn.client import Client, MetalearnError

__all__ = ["Client", "MetalearnError", "__version__"]
