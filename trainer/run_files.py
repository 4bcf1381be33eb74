"""The stored file a run starts from, read from the gateway and checked before use.

A Train or Test request names its checkpoint or weights by reference (`RunFile`: the
run's attempt and claim, the file's kind, size and sha256); the run's process reads the
file with TrainerRegistryService.ReadRunFile over its channel to the gateway. A file
that is not the size and hash its reference says is refused as the request's field
(`resume_checkpoint`, `weights`) is refused when unreadable: the gateway's dispatcher
tells a refused checkpoint by that field name.
"""

from __future__ import annotations

import hashlib
from collections.abc import Generator

import grpc

from metalearn.errors import Aborted, InvalidArgument, ResourceExhausted, Unavailable
from metalearn.v1 import trainer_registry_service_pb2 as rpb
from metalearn.v1 import trainer_registry_service_pb2_grpc, trainer_service_pb2


def _gateway_error(err: grpc.RpcError) -> Exception:
    code = err.code()
    if code == grpc.StatusCode.ABORTED:  # replaced while read: the run may be retried
        return Aborted(f"gateway: {err.details()}")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:  # the gateway is busy serving others
        return ResourceExhausted(f"gateway: {err.details()}")
    # Not found (the claim ended), refused, or away: none of it is the command's fault.
    return Unavailable(f"gateway: {code.name}: {err.details()}")


def stream(
    channel: grpc.Channel, file: trainer_service_pb2.RunFile, deadline_seconds: float
) -> Generator[bytes]:
    """The chunks of the file `file` names, as the gateway sends them (unchecked)."""
    stub = trainer_registry_service_pb2_grpc.TrainerRegistryServiceStub(channel)
    request = rpb.ReadRunFileRequest(attempt_id=file.attempt_id, fence=file.fence, kind=file.kind)
    call = stub.ReadRunFile(request, timeout=deadline_seconds)
    try:
        for response in call:
            yield response.data
    except grpc.RpcError as err:
        raise _gateway_error(err) from err
    finally:
        call.cancel()  # a reader that stops early stops the gateway's stream too


def read(
    channel: grpc.Channel, file: trainer_service_pb2.RunFile, field: str, deadline_seconds: float
) -> bytes:
    """The file `file` names, read from the gateway in chunks and checked against its
    size and sha256: INVALID_ARGUMENT on `field` if it is not the file named."""
    pieces: list[bytes] = []
    size = 0
    digest = hashlib.sha256()
    chunks = stream(channel, file, deadline_seconds)
    for piece in chunks:
        size += len(piece)
        if size > file.size:  # read no further than the file named
            chunks.close()
            raise InvalidArgument.one(
                field, f"the gateway's file is larger than the {file.size} bytes named"
            )
        digest.update(piece)
        pieces.append(piece)
    if size != file.size:
        raise InvalidArgument.one(
            field, f"the gateway's file has {size} bytes, not the {file.size} named"
        )
    if file.sha256 and digest.hexdigest() != file.sha256.lower():
        raise InvalidArgument.one(
            field, f"the gateway's file's sha256 is {digest.hexdigest()}, not {file.sha256}"
        )
    return b"".join(pieces)
