from metalearn.v1 import trainer_service_pb2 as _trainer_service_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ReadRunFileRequest(_message.Message):
    __slots__ = ("attempt_id", "fence", "kind")
    ATTEMPT_ID_FIELD_NUMBER: _ClassVar[int]
    FENCE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    attempt_id: int
    fence: int
    kind: _trainer_service_pb2.RunFileKind
    def __init__(self, attempt_id: _Optional[int] = ..., fence: _Optional[int] = ..., kind: _Optional[_Union[_trainer_service_pb2.RunFileKind, str]] = ...) -> None: ...

class ReadRunFileResponse(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class RegisterTrainerRequest(_message.Message):
    __slots__ = ("address", "devices", "capacity", "version")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    address: str
    devices: _containers.RepeatedCompositeFieldContainer[_trainer_service_pb2.Device]
    capacity: int
    version: str
    def __init__(self, address: _Optional[str] = ..., devices: _Optional[_Iterable[_Union[_trainer_service_pb2.Device, _Mapping]]] = ..., capacity: _Optional[int] = ..., version: _Optional[str] = ...) -> None: ...

class RegisterTrainerResponse(_message.Message):
    __slots__ = ("heartbeat_seconds", "gateway_credential")
    HEARTBEAT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    heartbeat_seconds: float
    gateway_credential: str
    def __init__(self, heartbeat_seconds: _Optional[float] = ..., gateway_credential: _Optional[str] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("address", "busy_slots")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    BUSY_SLOTS_FIELD_NUMBER: _ClassVar[int]
    address: str
    busy_slots: int
    def __init__(self, address: _Optional[str] = ..., busy_slots: _Optional[int] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
