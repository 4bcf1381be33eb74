from google.protobuf import struct_pb2 as _struct_pb2
from metalearn.v1 import attempt_pb2 as _attempt_pb2
from metalearn.v1 import task_pb2 as _task_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RunEnd(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUN_END_UNSPECIFIED: _ClassVar[RunEnd]
    RUN_END_FINISHED: _ClassVar[RunEnd]
    RUN_END_FAILED: _ClassVar[RunEnd]
    RUN_END_KILLED: _ClassVar[RunEnd]
RUN_END_UNSPECIFIED: RunEnd
RUN_END_FINISHED: RunEnd
RUN_END_FAILED: RunEnd
RUN_END_KILLED: RunEnd

class StartRunRequest(_message.Message):
    __slots__ = ("name", "task", "params", "tags", "n_epoch", "stop_when_hopeless", "heartbeat_seconds", "client", "request_id", "origin")
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    N_EPOCH_FIELD_NUMBER: _ClassVar[int]
    STOP_WHEN_HOPELESS_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    name: str
    task: _attempt_pb2.DeclaredTask
    params: _struct_pb2.Struct
    tags: _containers.ScalarMap[str, str]
    n_epoch: int
    stop_when_hopeless: bool
    heartbeat_seconds: int
    client: str
    request_id: str
    origin: _attempt_pb2.RunOrigin
    def __init__(self, name: _Optional[str] = ..., task: _Optional[_Union[_attempt_pb2.DeclaredTask, _Mapping]] = ..., params: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., tags: _Optional[_Mapping[str, str]] = ..., n_epoch: _Optional[int] = ..., stop_when_hopeless: _Optional[bool] = ..., heartbeat_seconds: _Optional[int] = ..., client: _Optional[str] = ..., request_id: _Optional[str] = ..., origin: _Optional[_Union[_attempt_pb2.RunOrigin, _Mapping]] = ...) -> None: ...

class StartRunResponse(_message.Message):
    __slots__ = ("attempt",)
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    attempt: _attempt_pb2.Attempt
    def __init__(self, attempt: _Optional[_Union[_attempt_pb2.Attempt, _Mapping]] = ...) -> None: ...

class ReportRunRequest(_message.Message):
    __slots__ = ("attempt_id", "batch")
    ATTEMPT_ID_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    attempt_id: int
    batch: ReportBatch
    def __init__(self, attempt_id: _Optional[int] = ..., batch: _Optional[_Union[ReportBatch, _Mapping]] = ...) -> None: ...

class ReportBatch(_message.Message):
    __slots__ = ("sequence", "epochs", "metrics")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    epochs: _containers.RepeatedCompositeFieldContainer[ReportedEpoch]
    metrics: _containers.RepeatedCompositeFieldContainer[MetricSeries]
    def __init__(self, sequence: _Optional[int] = ..., epochs: _Optional[_Iterable[_Union[ReportedEpoch, _Mapping]]] = ..., metrics: _Optional[_Iterable[_Union[MetricSeries, _Mapping]]] = ...) -> None: ...

class ReportedEpoch(_message.Message):
    __slots__ = ("epoch", "loss", "learning_rate", "seconds", "samples_per_second", "val_loss", "val_accuracy", "metrics")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    VAL_LOSS_FIELD_NUMBER: _ClassVar[int]
    VAL_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    loss: float
    learning_rate: float
    seconds: float
    samples_per_second: float
    val_loss: float
    val_accuracy: float
    metrics: _containers.ScalarMap[str, float]
    def __init__(self, epoch: _Optional[int] = ..., loss: _Optional[float] = ..., learning_rate: _Optional[float] = ..., seconds: _Optional[float] = ..., samples_per_second: _Optional[float] = ..., val_loss: _Optional[float] = ..., val_accuracy: _Optional[float] = ..., metrics: _Optional[_Mapping[str, float]] = ...) -> None: ...

class MetricSeries(_message.Message):
    __slots__ = ("key", "steps", "values", "timestamps_ms")
    KEY_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMPS_MS_FIELD_NUMBER: _ClassVar[int]
    key: str
    steps: _containers.RepeatedScalarFieldContainer[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    timestamps_ms: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, key: _Optional[str] = ..., steps: _Optional[_Iterable[int]] = ..., values: _Optional[_Iterable[float]] = ..., timestamps_ms: _Optional[_Iterable[int]] = ...) -> None: ...

class ReportRunResponse(_message.Message):
    __slots__ = ("acknowledged", "stop")
    ACKNOWLEDGED_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    acknowledged: Acknowledged
    stop: Stop
    def __init__(self, acknowledged: _Optional[_Union[Acknowledged, _Mapping]] = ..., stop: _Optional[_Union[Stop, _Mapping]] = ...) -> None: ...

class Acknowledged(_message.Message):
    __slots__ = ("sequence", "current_epoch")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    CURRENT_EPOCH_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    current_epoch: int
    def __init__(self, sequence: _Optional[int] = ..., current_epoch: _Optional[int] = ...) -> None: ...

class Stop(_message.Message):
    __slots__ = ("status", "reason")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    status: _attempt_pb2.AttemptStatus
    reason: str
    def __init__(self, status: _Optional[_Union[_attempt_pb2.AttemptStatus, str]] = ..., reason: _Optional[str] = ...) -> None: ...

class UploadModelRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: UploadHeader
    chunk: bytes
    def __init__(self, header: _Optional[_Union[UploadHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class UploadHeader(_message.Message):
    __slots__ = ("attempt_id", "size_bytes", "sha256")
    ATTEMPT_ID_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    attempt_id: int
    size_bytes: int
    sha256: str
    def __init__(self, attempt_id: _Optional[int] = ..., size_bytes: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class UploadModelResponse(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: _attempt_pb2.ArtifactInfo
    def __init__(self, model: _Optional[_Union[_attempt_pb2.ArtifactInfo, _Mapping]] = ...) -> None: ...

class FinishRunRequest(_message.Message):
    __slots__ = ("attempt_id", "end", "error", "test_result", "last_epoch")
    ATTEMPT_ID_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    TEST_RESULT_FIELD_NUMBER: _ClassVar[int]
    LAST_EPOCH_FIELD_NUMBER: _ClassVar[int]
    attempt_id: int
    end: RunEnd
    error: str
    test_result: _attempt_pb2.TestResult
    last_epoch: int
    def __init__(self, attempt_id: _Optional[int] = ..., end: _Optional[_Union[RunEnd, str]] = ..., error: _Optional[str] = ..., test_result: _Optional[_Union[_attempt_pb2.TestResult, _Mapping]] = ..., last_epoch: _Optional[int] = ...) -> None: ...

class FinishRunResponse(_message.Message):
    __slots__ = ("attempt",)
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    attempt: _attempt_pb2.Attempt
    def __init__(self, attempt: _Optional[_Union[_attempt_pb2.Attempt, _Mapping]] = ...) -> None: ...

class UploadTaskSampleRequest(_message.Message):
    __slots__ = ("attempt_id", "sample")
    ATTEMPT_ID_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_FIELD_NUMBER: _ClassVar[int]
    attempt_id: int
    sample: _task_pb2.TaskSample
    def __init__(self, attempt_id: _Optional[int] = ..., sample: _Optional[_Union[_task_pb2.TaskSample, _Mapping]] = ...) -> None: ...

class UploadTaskSampleResponse(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: _task_pb2.Task
    def __init__(self, task: _Optional[_Union[_task_pb2.Task, _Mapping]] = ...) -> None: ...

class GetMetricHistoryRequest(_message.Message):
    __slots__ = ("attempt_id", "key", "after_step", "page_size")
    ATTEMPT_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    AFTER_STEP_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    attempt_id: int
    key: str
    after_step: int
    page_size: int
    def __init__(self, attempt_id: _Optional[int] = ..., key: _Optional[str] = ..., after_step: _Optional[int] = ..., page_size: _Optional[int] = ...) -> None: ...

class GetMetricHistoryResponse(_message.Message):
    __slots__ = ("steps", "values", "timestamps_ms", "next_after_step")
    STEPS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMPS_MS_FIELD_NUMBER: _ClassVar[int]
    NEXT_AFTER_STEP_FIELD_NUMBER: _ClassVar[int]
    steps: _containers.RepeatedScalarFieldContainer[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    timestamps_ms: _containers.RepeatedScalarFieldContainer[int]
    next_after_step: int
    def __init__(self, steps: _Optional[_Iterable[int]] = ..., values: _Optional[_Iterable[float]] = ..., timestamps_ms: _Optional[_Iterable[int]] = ..., next_after_step: _Optional[int] = ...) -> None: ...
