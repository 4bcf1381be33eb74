"""Checkpoints and final weights as bytes, and the chunks they travel in.

Nothing a client sends is unpickled: weights are safetensors (a JSON header and raw
tensor bytes), and a checkpoint is read with `torch.load(weights_only=True)`, whose
unpickler only rebuilds tensors, numbers, strings and containers of them.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import safetensors.torch
import torch

from metalearn.errors import InvalidArgument
from metalearn.v1 import trainer_service_pb2

CHECKPOINT_FORMAT = 1
WEIGHTS_FORMAT = 1
_SPEC_KEY = "metalearn"


@dataclass(frozen=True)
class Checkpoint:
    """Everything a run needs to continue after `epoch` exactly as if never stopped."""

    epoch: int
    command_fingerprint: str
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: dict[str, torch.Tensor]
    best_metrics: dict[str, float]


def checkpoint_bytes(checkpoint: Checkpoint) -> bytes:
    buffer = io.BytesIO()
    torch.save(
        {
            "format": CHECKPOINT_FORMAT,
            "epoch": checkpoint.epoch,
            "command_fingerprint": checkpoint.command_fingerprint,
            "model": checkpoint.model,
            "optimizer": checkpoint.optimizer,
            "scheduler": checkpoint.scheduler,
            "rng": checkpoint.rng,
            "best_metrics": checkpoint.best_metrics,
        },
        buffer,
    )
    return buffer.getvalue()


def read_checkpoint(data: bytes, field: str = "resume_checkpoint") -> Checkpoint:
    """Parses a checkpoint; INVALID_ARGUMENT naming `field` if it is not one of ours."""
    try:
        raw = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        if not isinstance(raw, dict) or raw.get("format") != CHECKPOINT_FORMAT:
            raise ValueError("not a metalearn checkpoint")
        return Checkpoint(
            epoch=int(raw["epoch"]),
            command_fingerprint=str(raw["command_fingerprint"]),
            model=raw["model"],
            optimizer=raw["optimizer"],
            scheduler=raw["scheduler"],
            rng=raw["rng"],
            best_metrics=dict(raw.get("best_metrics", {})),
        )
    except Exception as err:  # whatever is wrong, it is the client's data
        raise InvalidArgument.one(field, f"not a readable checkpoint: {err}") from err


def weights_bytes(state: dict[str, torch.Tensor], spec: dict[str, Any]) -> bytes:
    """The final weights as safetensors, with the spec needed to rebuild and test them."""
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}
    metadata = {_SPEC_KEY: json.dumps({"format": WEIGHTS_FORMAT, **spec})}
    data: bytes = safetensors.torch.save(tensors, metadata=metadata)
    return data


def read_weights(
    data: bytes, field: str = "weights"
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and spec of a weights file; INVALID_ARGUMENT naming `field` if unreadable."""
    spec = read_weights_spec(data, field)
    return read_weights_tensors(data, field), spec


def read_weights_spec(data: bytes, field: str = "weights") -> dict[str, Any]:
    """The spec a weights file carries, read from its header alone: it is checked before
    a tensor of the file is loaded or a model is built (see `model.check_spec`)."""
    try:
        (header_size,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8 : 8 + header_size])
        spec = json.loads(header["__metadata__"][_SPEC_KEY])
        if not isinstance(spec, dict) or spec.get("format") != WEIGHTS_FORMAT:
            raise ValueError("unknown format")
        return spec
    except Exception as err:  # whatever is wrong, it is the client's data
        raise InvalidArgument.one(field, f"not a metalearn weights file: {err}") from err


def read_weights_tensors(data: bytes, field: str = "weights") -> dict[str, torch.Tensor]:
    """The tensors of a weights file; INVALID_ARGUMENT naming `field` if unreadable."""
    try:
        tensors: dict[str, torch.Tensor] = safetensors.torch.load(data)
        return tensors
    except Exception as err:  # whatever is wrong, it is the client's data
        raise InvalidArgument.one(field, f"not a metalearn weights file: {err}") from err


def chunks(data: bytes, epoch: int, size: int) -> Iterator[trainer_service_pb2.ArtifactChunk]:
    """A file in pieces of at most `size` bytes; the last names the whole file's hash."""
    digest = hashlib.sha256(data).hexdigest()
    offsets = range(0, max(len(data), 1), size)
    for offset in offsets:
        last = offset + size >= len(data)
        yield trainer_service_pb2.ArtifactChunk(
            epoch=epoch,
            offset=offset,
            data=data[offset : offset + size],
            total_size=len(data),
            sha256=digest if last else "",
        )


def assemble(pieces: list[trainer_service_pb2.ArtifactChunk]) -> bytes:
    """The file a series of chunks carries, checked against its size and hash."""
    data = b"".join(p.data for p in pieces)
    if not pieces or len(data) != pieces[-1].total_size:
        raise ValueError("chunks do not add up to the file's size")
    if hashlib.sha256(data).hexdigest() != pieces[-1].sha256:
        raise ValueError("chunks do not match the file's sha256")
    return data
