"""A stored checkpoint or weights file sent to a trainer, held no longer than grpc needs.

The trainer's Train and Test take the file in one field of their request. A grpc call
object keeps its request for the call's whole life: a run of hours would keep the
gateway holding its checkpoint (up to `max_artifact_bytes`) all that time, in the
protobuf message besides the bytes it was built from. So the request travels as a
`WithFile`: the message without the file, and the file's pieces as the store read them
(1 MiB each). It is encoded into its wire form only when grpc sends it, the file's
field appended after the rest (protobuf reads fields in any order), and lets go of the
pieces at once: the gateway holds the file while it is sent, never after.
"""

from __future__ import annotations

from typing import Any

import grpc

from gateway.store.work import WorkStore
from metalearn.v1 import trainer_service_pb2

tpb = trainer_service_pb2
_SERVICE = "/metalearn.v1.TrainerService/"


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


class WithFile:
    """A request `message` whose bytes field `field` holds the file made of `pieces`."""

    __slots__ = ("_field", "_pieces", "message")

    def __init__(self, message: Any, field: str, pieces: list[bytes]) -> None:
        self.message = message
        self._field = message.DESCRIPTOR.fields_by_name[field].number
        self._pieces = pieces

    def encode(self) -> bytes:
        pieces, self._pieces = self._pieces, []  # let go: only the wire form is left
        size = sum(len(piece) for piece in pieces)
        key = _varint(self._field << 3 | 2)  # wire type 2: length-delimited
        return b"".join([self.message.SerializeToString(), key, _varint(size), *pieces])


def _serialize(request: Any) -> bytes:
    if isinstance(request, WithFile):
        return request.encode()
    return bytes(request.SerializeToString())


class TrainerStub:
    """The trainer's Train and Test, which also take a `WithFile` request."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.Train = channel.unary_stream(
            _SERVICE + "Train",
            request_serializer=_serialize,
            response_deserializer=tpb.TrainerServiceTrainResponse.FromString,
        )
        self.Test = channel.unary_stream(
            _SERVICE + "Test",
            request_serializer=_serialize,
            response_deserializer=tpb.TrainerServiceTestResponse.FromString,
        )


async def read_file(work: WorkStore, attempt_id: int, kind: str) -> tuple[int, list[bytes]] | None:
    """The attempt's `kind` file as the store's pieces, and its epoch; None if none."""
    layout = await work.artifact_layout(attempt_id, kind)
    if layout is None:
        return None
    return layout.epoch, [piece async for piece in work.read_artifact(layout)]
