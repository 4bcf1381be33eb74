"""A stored checkpoint or weights file named to a trainer, never sent inside its request.

The trainer's Train and Test requests carry a `RunFile`: the run's attempt and claim,
the file's kind, size and sha256. The trainer reads the file itself, in 1 MiB chunks,
with TrainerRegistryService.ReadRunFile over its own channel to the gateway, and checks
size and hash before it loads anything. So the gateway holds at most one chunk of the
file per reader (not the whole file, twice over, while grpc sent it), and a file is
not bounded by a message's size (a checkpoint may be up to `max_artifact_bytes`).
"""

from __future__ import annotations

from gateway.store.work import Claimed, WorkStore
from metalearn.v1 import trainer_service_pb2

tpb = trainer_service_pb2
_KINDS = {"checkpoint": tpb.RUN_FILE_KIND_CHECKPOINT, "weights": tpb.RUN_FILE_KIND_WEIGHTS}


async def run_file(work: WorkStore, claimed: Claimed, kind: str) -> tuple[int, tpb.RunFile] | None:
    """The claimed run's `kind` file as a trainer is to read it, with the epoch it
    holds; None if the attempt has none. Reads where the file lies, not its bytes."""
    layout = await work.artifact_layout(claimed.id, kind)
    if layout is None:
        return None
    reference = tpb.RunFile(
        attempt_id=claimed.id,
        fence=claimed.fence,
        kind=_KINDS[kind],
        size=layout.size,
        # Empty for a file stored before hashes were kept: its size alone is checked.
        sha256=layout.sha256.hex() if layout.sha256 is not None else "",
    )
    return layout.epoch, reference
