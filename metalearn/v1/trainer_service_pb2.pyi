from metalearn.v1 import attempt_pb2 as _attempt_pb2
from metalearn.v1 import task_pb2 as _task_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RunFileKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUN_FILE_KIND_UNSPECIFIED: _ClassVar[RunFileKind]
    RUN_FILE_KIND_CHECKPOINT: _ClassVar[RunFileKind]
    RUN_FILE_KIND_WEIGHTS: _ClassVar[RunFileKind]

class TrainOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRAIN_OUTCOME_UNSPECIFIED: _ClassVar[TrainOutcome]
    TRAIN_OUTCOME_COMPLETED: _ClassVar[TrainOutcome]
    TRAIN_OUTCOME_DIVERGED: _ClassVar[TrainOutcome]
    TRAIN_OUTCOME_INTERRUPTED: _ClassVar[TrainOutcome]
RUN_FILE_KIND_UNSPECIFIED: RunFileKind
RUN_FILE_KIND_CHECKPOINT: RunFileKind
RUN_FILE_KIND_WEIGHTS: RunFileKind
TRAIN_OUTCOME_UNSPECIFIED: TrainOutcome
TRAIN_OUTCOME_COMPLETED: TrainOutcome
TRAIN_OUTCOME_DIVERGED: TrainOutcome
TRAIN_OUTCOME_INTERRUPTED: TrainOutcome

class TrainerServiceProfileTaskRequest(_message.Message):
    __slots__ = ("task", "sample")
    TASK_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_FIELD_NUMBER: _ClassVar[int]
    task: _task_pb2.TaskKey
    sample: _task_pb2.TaskSample
    def __init__(self, task: _Optional[_Union[_task_pb2.TaskKey, _Mapping]] = ..., sample: _Optional[_Union[_task_pb2.TaskSample, _Mapping]] = ...) -> None: ...

class TrainerServiceProfileTaskResponse(_message.Message):
    __slots__ = ("profile",)
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    profile: _task_pb2.TaskProfile
    def __init__(self, profile: _Optional[_Union[_task_pb2.TaskProfile, _Mapping]] = ...) -> None: ...

class RunFile(_message.Message):
    __slots__ = ("attempt_id", "fence", "kind", "size", "sha256")
    ATTEMPT_ID_FIELD_NUMBER: _ClassVar[int]
    FENCE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    attempt_id: int
    fence: int
    kind: RunFileKind
    size: int
    sha256: str
    def __init__(self, attempt_id: _Optional[int] = ..., fence: _Optional[int] = ..., kind: _Optional[_Union[RunFileKind, str]] = ..., size: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class TrainerServiceTrainRequest(_message.Message):
    __slots__ = ("attempt_name", "command", "resume_checkpoint", "checkpoint_every_epochs", "checkpoint_every_seconds")
    ATTEMPT_NAME_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    RESUME_CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_EVERY_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_EVERY_SECONDS_FIELD_NUMBER: _ClassVar[int]
    attempt_name: str
    command: _attempt_pb2.TrainCommand
    resume_checkpoint: RunFile
    checkpoint_every_epochs: int
    checkpoint_every_seconds: float
    def __init__(self, attempt_name: _Optional[str] = ..., command: _Optional[_Union[_attempt_pb2.TrainCommand, _Mapping]] = ..., resume_checkpoint: _Optional[_Union[RunFile, _Mapping]] = ..., checkpoint_every_epochs: _Optional[int] = ..., checkpoint_every_seconds: _Optional[float] = ...) -> None: ...

class TrainStarted(_message.Message):
    __slots__ = ("device", "parameters", "train_images", "validation_images", "first_epoch", "input_shape", "cache_hit", "dataset")
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    TRAIN_IMAGES_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_IMAGES_FIELD_NUMBER: _ClassVar[int]
    FIRST_EPOCH_FIELD_NUMBER: _ClassVar[int]
    INPUT_SHAPE_FIELD_NUMBER: _ClassVar[int]
    CACHE_HIT_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    device: str
    parameters: int
    train_images: int
    validation_images: int
    first_epoch: int
    input_shape: _containers.RepeatedScalarFieldContainer[int]
    cache_hit: bool
    dataset: _attempt_pb2.DatasetFingerprint
    def __init__(self, device: _Optional[str] = ..., parameters: _Optional[int] = ..., train_images: _Optional[int] = ..., validation_images: _Optional[int] = ..., first_epoch: _Optional[int] = ..., input_shape: _Optional[_Iterable[int]] = ..., cache_hit: _Optional[bool] = ..., dataset: _Optional[_Union[_attempt_pb2.DatasetFingerprint, _Mapping]] = ...) -> None: ...

class ArtifactChunk(_message.Message):
    __slots__ = ("epoch", "offset", "data", "total_size", "sha256")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    offset: int
    data: bytes
    total_size: int
    sha256: str
    def __init__(self, epoch: _Optional[int] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ..., total_size: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class TrainFinished(_message.Message):
    __slots__ = ("outcome", "reason", "epochs", "seconds")
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    outcome: TrainOutcome
    reason: str
    epochs: int
    seconds: float
    def __init__(self, outcome: _Optional[_Union[TrainOutcome, str]] = ..., reason: _Optional[str] = ..., epochs: _Optional[int] = ..., seconds: _Optional[float] = ...) -> None: ...

class TrainerServiceTrainResponse(_message.Message):
    __slots__ = ("started", "epoch", "checkpoint", "weights", "finished")
    STARTED_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    started: TrainStarted
    epoch: _attempt_pb2.EpochMetrics
    checkpoint: ArtifactChunk
    weights: ArtifactChunk
    finished: TrainFinished
    def __init__(self, started: _Optional[_Union[TrainStarted, _Mapping]] = ..., epoch: _Optional[_Union[_attempt_pb2.EpochMetrics, _Mapping]] = ..., checkpoint: _Optional[_Union[ArtifactChunk, _Mapping]] = ..., weights: _Optional[_Union[ArtifactChunk, _Mapping]] = ..., finished: _Optional[_Union[TrainFinished, _Mapping]] = ...) -> None: ...

class TrainerServiceTestRequest(_message.Message):
    __slots__ = ("attempt_name", "command", "weights")
    ATTEMPT_NAME_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    attempt_name: str
    command: _attempt_pb2.TestCommand
    weights: RunFile
    def __init__(self, attempt_name: _Optional[str] = ..., command: _Optional[_Union[_attempt_pb2.TestCommand, _Mapping]] = ..., weights: _Optional[_Union[RunFile, _Mapping]] = ...) -> None: ...

class TestProgress(_message.Message):
    __slots__ = ("done", "total")
    DONE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    done: int
    total: int
    def __init__(self, done: _Optional[int] = ..., total: _Optional[int] = ...) -> None: ...

class TrainerServiceTestResponse(_message.Message):
    __slots__ = ("progress", "result")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    progress: TestProgress
    result: _attempt_pb2.TestResult
    def __init__(self, progress: _Optional[_Union[TestProgress, _Mapping]] = ..., result: _Optional[_Union[_attempt_pb2.TestResult, _Mapping]] = ...) -> None: ...

class InterruptRequest(_message.Message):
    __slots__ = ("attempt_name",)
    ATTEMPT_NAME_FIELD_NUMBER: _ClassVar[int]
    attempt_name: str
    def __init__(self, attempt_name: _Optional[str] = ...) -> None: ...

class InterruptResponse(_message.Message):
    __slots__ = ("interrupted",)
    INTERRUPTED_FIELD_NUMBER: _ClassVar[int]
    interrupted: int
    def __init__(self, interrupted: _Optional[int] = ...) -> None: ...

class GetTrainerInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Device(_message.Message):
    __slots__ = ("name", "description", "memory_bytes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    memory_bytes: int
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., memory_bytes: _Optional[int] = ...) -> None: ...

class GetTrainerInfoResponse(_message.Message):
    __slots__ = ("devices", "capacity", "busy_slots", "version", "torch_version")
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    BUSY_SLOTS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TORCH_VERSION_FIELD_NUMBER: _ClassVar[int]
    devices: _containers.RepeatedCompositeFieldContainer[Device]
    capacity: int
    busy_slots: int
    version: str
    torch_version: str
    def __init__(self, devices: _Optional[_Iterable[_Union[Device, _Mapping]]] = ..., capacity: _Optional[int] = ..., busy_slots: _Optional[int] = ..., version: _Optional[str] = ..., torch_version: _Optional[str] = ...) -> None: ...
