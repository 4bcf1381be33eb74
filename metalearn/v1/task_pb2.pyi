import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from metalearn.v1 import attempt_pb2 as _attempt_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TaskSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_SOURCE_UNSPECIFIED: _ClassVar[TaskSource]
    TASK_SOURCE_IMAGES: _ClassVar[TaskSource]
    TASK_SOURCE_SAMPLE: _ClassVar[TaskSource]
    TASK_SOURCE_DECLARED: _ClassVar[TaskSource]

class TaskState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_STATE_UNSPECIFIED: _ClassVar[TaskState]
    TASK_STATE_PENDING: _ClassVar[TaskState]
    TASK_STATE_READY: _ClassVar[TaskState]
    TASK_STATE_FAILED: _ClassVar[TaskState]
TASK_SOURCE_UNSPECIFIED: TaskSource
TASK_SOURCE_IMAGES: TaskSource
TASK_SOURCE_SAMPLE: TaskSource
TASK_SOURCE_DECLARED: TaskSource
TASK_STATE_UNSPECIFIED: TaskState
TASK_STATE_PENDING: TaskState
TASK_STATE_READY: TaskState
TASK_STATE_FAILED: TaskState

class TaskKey(_message.Message):
    __slots__ = ("label_names", "image_ops")
    LABEL_NAMES_FIELD_NUMBER: _ClassVar[int]
    IMAGE_OPS_FIELD_NUMBER: _ClassVar[int]
    label_names: _containers.RepeatedScalarFieldContainer[str]
    image_ops: _containers.RepeatedCompositeFieldContainer[_attempt_pb2.ImageOp]
    def __init__(self, label_names: _Optional[_Iterable[str]] = ..., image_ops: _Optional[_Iterable[_Union[_attempt_pb2.ImageOp, _Mapping]]] = ...) -> None: ...

class TaskSample(_message.Message):
    __slots__ = ("images",)
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedCompositeFieldContainer[SampleImage]
    def __init__(self, images: _Optional[_Iterable[_Union[SampleImage, _Mapping]]] = ...) -> None: ...

class SampleImage(_message.Message):
    __slots__ = ("label", "data")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    label: int
    data: bytes
    def __init__(self, label: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class TaskProfile(_message.Message):
    __slots__ = ("features", "images", "classes", "input_shape", "seconds")
    class FeaturesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    INPUT_SHAPE_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    features: _containers.ScalarMap[str, float]
    images: int
    classes: int
    input_shape: _containers.RepeatedScalarFieldContainer[int]
    seconds: float
    def __init__(self, features: _Optional[_Mapping[str, float]] = ..., images: _Optional[int] = ..., classes: _Optional[int] = ..., input_shape: _Optional[_Iterable[int]] = ..., seconds: _Optional[float] = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ("fingerprint", "label_names", "image_ops", "state", "profile", "error", "create_time", "profile_time", "attempts", "best_val_accuracy", "source", "dataset", "owner")
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    LABEL_NAMES_FIELD_NUMBER: _ClassVar[int]
    IMAGE_OPS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    PROFILE_TIME_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    BEST_VAL_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    fingerprint: str
    label_names: _containers.RepeatedScalarFieldContainer[str]
    image_ops: _containers.RepeatedCompositeFieldContainer[_attempt_pb2.ImageOp]
    state: TaskState
    profile: TaskProfile
    error: str
    create_time: _timestamp_pb2.Timestamp
    profile_time: _timestamp_pb2.Timestamp
    attempts: int
    best_val_accuracy: float
    source: TaskSource
    dataset: str
    owner: str
    def __init__(self, fingerprint: _Optional[str] = ..., label_names: _Optional[_Iterable[str]] = ..., image_ops: _Optional[_Iterable[_Union[_attempt_pb2.ImageOp, _Mapping]]] = ..., state: _Optional[_Union[TaskState, str]] = ..., profile: _Optional[_Union[TaskProfile, _Mapping]] = ..., error: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., profile_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., attempts: _Optional[int] = ..., best_val_accuracy: _Optional[float] = ..., source: _Optional[_Union[TaskSource, str]] = ..., dataset: _Optional[str] = ..., owner: _Optional[str] = ...) -> None: ...
