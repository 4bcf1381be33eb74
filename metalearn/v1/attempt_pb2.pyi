import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AttemptStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ATTEMPT_STATUS_UNSPECIFIED: _ClassVar[AttemptStatus]
    ATTEMPT_STATUS_INCOMPLETE: _ClassVar[AttemptStatus]
    ATTEMPT_STATUS_QUEUED: _ClassVar[AttemptStatus]
    ATTEMPT_STATUS_TRAINING: _ClassVar[AttemptStatus]
    ATTEMPT_STATUS_TRAINED: _ClassVar[AttemptStatus]
    ATTEMPT_STATUS_TESTING: _ClassVar[AttemptStatus]
    ATTEMPT_STATUS_COMPLETE: _ClassVar[AttemptStatus]
    ATTEMPT_STATUS_FAILED: _ClassVar[AttemptStatus]
    ATTEMPT_STATUS_CANCELLED: _ClassVar[AttemptStatus]
    ATTEMPT_STATUS_PRUNED: _ClassVar[AttemptStatus]

class CurveFlagKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CURVE_FLAG_KIND_UNSPECIFIED: _ClassVar[CurveFlagKind]
    CURVE_FLAG_KIND_NON_FINITE: _ClassVar[CurveFlagKind]
    CURVE_FLAG_KIND_AT_CHANCE: _ClassVar[CurveFlagKind]
    CURVE_FLAG_KIND_DIVERGING: _ClassVar[CurveFlagKind]
    CURVE_FLAG_KIND_OVERFITTING: _ClassVar[CurveFlagKind]

class Provenance(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PROVENANCE_UNSPECIFIED: _ClassVar[Provenance]
    PROVENANCE_TRAINED: _ClassVar[Provenance]
    PROVENANCE_IMPORTED: _ClassVar[Provenance]
    PROVENANCE_REPORTED: _ClassVar[Provenance]
ATTEMPT_STATUS_UNSPECIFIED: AttemptStatus
ATTEMPT_STATUS_INCOMPLETE: AttemptStatus
ATTEMPT_STATUS_QUEUED: AttemptStatus
ATTEMPT_STATUS_TRAINING: AttemptStatus
ATTEMPT_STATUS_TRAINED: AttemptStatus
ATTEMPT_STATUS_TESTING: AttemptStatus
ATTEMPT_STATUS_COMPLETE: AttemptStatus
ATTEMPT_STATUS_FAILED: AttemptStatus
ATTEMPT_STATUS_CANCELLED: AttemptStatus
ATTEMPT_STATUS_PRUNED: AttemptStatus
CURVE_FLAG_KIND_UNSPECIFIED: CurveFlagKind
CURVE_FLAG_KIND_NON_FINITE: CurveFlagKind
CURVE_FLAG_KIND_AT_CHANCE: CurveFlagKind
CURVE_FLAG_KIND_DIVERGING: CurveFlagKind
CURVE_FLAG_KIND_OVERFITTING: CurveFlagKind
PROVENANCE_UNSPECIFIED: Provenance
PROVENANCE_TRAINED: Provenance
PROVENANCE_IMPORTED: Provenance
PROVENANCE_REPORTED: Provenance

class Model(_message.Message):
    __slots__ = ("layers", "name")
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    layers: _containers.RepeatedCompositeFieldContainer[_struct_pb2.Struct]
    name: str
    def __init__(self, layers: _Optional[_Iterable[_Union[_struct_pb2.Struct, _Mapping]]] = ..., name: _Optional[str] = ...) -> None: ...

class Resize(_message.Message):
    __slots__ = ("size", "resample")
    SIZE_FIELD_NUMBER: _ClassVar[int]
    RESAMPLE_FIELD_NUMBER: _ClassVar[int]
    size: _containers.RepeatedScalarFieldContainer[int]
    resample: str
    def __init__(self, size: _Optional[_Iterable[int]] = ..., resample: _Optional[str] = ...) -> None: ...

class Convert(_message.Message):
    __slots__ = ("mode",)
    MODE_FIELD_NUMBER: _ClassVar[int]
    mode: str
    def __init__(self, mode: _Optional[str] = ...) -> None: ...

class CenterCrop(_message.Message):
    __slots__ = ("size",)
    SIZE_FIELD_NUMBER: _ClassVar[int]
    size: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, size: _Optional[_Iterable[int]] = ...) -> None: ...

class Grayscale(_message.Message):
    __slots__ = ("num_output_channels",)
    NUM_OUTPUT_CHANNELS_FIELD_NUMBER: _ClassVar[int]
    num_output_channels: int
    def __init__(self, num_output_channels: _Optional[int] = ...) -> None: ...

class ImageOp(_message.Message):
    __slots__ = ("resize", "convert", "center_crop", "grayscale")
    RESIZE_FIELD_NUMBER: _ClassVar[int]
    CONVERT_FIELD_NUMBER: _ClassVar[int]
    CENTER_CROP_FIELD_NUMBER: _ClassVar[int]
    GRAYSCALE_FIELD_NUMBER: _ClassVar[int]
    resize: Resize
    convert: Convert
    center_crop: CenterCrop
    grayscale: Grayscale
    def __init__(self, resize: _Optional[_Union[Resize, _Mapping]] = ..., convert: _Optional[_Union[Convert, _Mapping]] = ..., center_crop: _Optional[_Union[CenterCrop, _Mapping]] = ..., grayscale: _Optional[_Union[Grayscale, _Mapping]] = ...) -> None: ...

class TrainCommand(_message.Message):
    __slots__ = ("batch_size", "criterion", "image_ops", "label_names", "model", "model_name", "n_epoch", "n_labels", "optimizer", "target_transform", "transform", "scheduler", "seed", "stop_when_hopeless", "hopeless_below", "devices")
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    CRITERION_FIELD_NUMBER: _ClassVar[int]
    IMAGE_OPS_FIELD_NUMBER: _ClassVar[int]
    LABEL_NAMES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    N_EPOCH_FIELD_NUMBER: _ClassVar[int]
    N_LABELS_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    TARGET_TRANSFORM_FIELD_NUMBER: _ClassVar[int]
    TRANSFORM_FIELD_NUMBER: _ClassVar[int]
    SCHEDULER_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    STOP_WHEN_HOPELESS_FIELD_NUMBER: _ClassVar[int]
    HOPELESS_BELOW_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    batch_size: int
    criterion: _struct_pb2.Struct
    image_ops: _containers.RepeatedCompositeFieldContainer[ImageOp]
    label_names: _containers.RepeatedScalarFieldContainer[str]
    model: Model
    model_name: str
    n_epoch: int
    n_labels: int
    optimizer: _struct_pb2.Struct
    target_transform: _struct_pb2.Struct
    transform: _struct_pb2.Struct
    scheduler: _struct_pb2.Struct
    seed: int
    stop_when_hopeless: bool
    hopeless_below: float
    devices: int
    def __init__(self, batch_size: _Optional[int] = ..., criterion: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., image_ops: _Optional[_Iterable[_Union[ImageOp, _Mapping]]] = ..., label_names: _Optional[_Iterable[str]] = ..., model: _Optional[_Union[Model, _Mapping]] = ..., model_name: _Optional[str] = ..., n_epoch: _Optional[int] = ..., n_labels: _Optional[int] = ..., optimizer: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., target_transform: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., transform: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., scheduler: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., seed: _Optional[int] = ..., stop_when_hopeless: _Optional[bool] = ..., hopeless_below: _Optional[float] = ..., devices: _Optional[int] = ...) -> None: ...

class TestCommand(_message.Message):
    __slots__ = ("criterion", "ids", "image_ops", "label_names", "limit", "model", "model_name", "n_labels", "target_transform", "transform")
    CRITERION_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_OPS_FIELD_NUMBER: _ClassVar[int]
    LABEL_NAMES_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    N_LABELS_FIELD_NUMBER: _ClassVar[int]
    TARGET_TRANSFORM_FIELD_NUMBER: _ClassVar[int]
    TRANSFORM_FIELD_NUMBER: _ClassVar[int]
    criterion: _struct_pb2.Struct
    ids: _containers.RepeatedScalarFieldContainer[int]
    image_ops: _containers.RepeatedCompositeFieldContainer[ImageOp]
    label_names: _containers.RepeatedScalarFieldContainer[str]
    limit: int
    model: Model
    model_name: str
    n_labels: int
    target_transform: _struct_pb2.Struct
    transform: _struct_pb2.Struct
    def __init__(self, criterion: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., ids: _Optional[_Iterable[int]] = ..., image_ops: _Optional[_Iterable[_Union[ImageOp, _Mapping]]] = ..., label_names: _Optional[_Iterable[str]] = ..., limit: _Optional[int] = ..., model: _Optional[_Union[Model, _Mapping]] = ..., model_name: _Optional[str] = ..., n_labels: _Optional[int] = ..., target_transform: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., transform: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class EpochMetrics(_message.Message):
    __slots__ = ("epoch", "loss", "learning_rate", "seconds", "samples_per_second", "val_loss", "val_accuracy")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    VAL_LOSS_FIELD_NUMBER: _ClassVar[int]
    VAL_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    loss: float
    learning_rate: float
    seconds: float
    samples_per_second: float
    val_loss: float
    val_accuracy: float
    def __init__(self, epoch: _Optional[int] = ..., loss: _Optional[float] = ..., learning_rate: _Optional[float] = ..., seconds: _Optional[float] = ..., samples_per_second: _Optional[float] = ..., val_loss: _Optional[float] = ..., val_accuracy: _Optional[float] = ...) -> None: ...

class TestResult(_message.Message):
    __slots__ = ("loss", "accuracy", "per_label_accuracy", "confusion_matrix", "images")
    class PerLabelAccuracyEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    LOSS_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    PER_LABEL_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    CONFUSION_MATRIX_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    loss: float
    accuracy: float
    per_label_accuracy: _containers.ScalarMap[str, float]
    confusion_matrix: _containers.RepeatedScalarFieldContainer[int]
    images: int
    def __init__(self, loss: _Optional[float] = ..., accuracy: _Optional[float] = ..., per_label_accuracy: _Optional[_Mapping[str, float]] = ..., confusion_matrix: _Optional[_Iterable[int]] = ..., images: _Optional[int] = ...) -> None: ...

class ArtifactInfo(_message.Message):
    __slots__ = ("size_bytes", "sha256")
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    size_bytes: int
    sha256: str
    def __init__(self, size_bytes: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class DatasetFingerprint(_message.Message):
    __slots__ = ("label_names", "images_per_label", "image_size", "sha256", "validation_images_per_label")
    LABEL_NAMES_FIELD_NUMBER: _ClassVar[int]
    IMAGES_PER_LABEL_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_IMAGES_PER_LABEL_FIELD_NUMBER: _ClassVar[int]
    label_names: _containers.RepeatedScalarFieldContainer[str]
    images_per_label: _containers.RepeatedScalarFieldContainer[int]
    image_size: _containers.RepeatedScalarFieldContainer[int]
    sha256: str
    validation_images_per_label: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, label_names: _Optional[_Iterable[str]] = ..., images_per_label: _Optional[_Iterable[int]] = ..., image_size: _Optional[_Iterable[int]] = ..., sha256: _Optional[str] = ..., validation_images_per_label: _Optional[_Iterable[int]] = ...) -> None: ...

class StudyTrial(_message.Message):
    __slots__ = ("study", "number", "params", "seeded_by_attempt_id", "values")
    STUDY_FIELD_NUMBER: _ClassVar[int]
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    SEEDED_BY_ATTEMPT_ID_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    study: str
    number: int
    params: _struct_pb2.Struct
    seeded_by_attempt_id: int
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, study: _Optional[str] = ..., number: _Optional[int] = ..., params: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., seeded_by_attempt_id: _Optional[int] = ..., values: _Optional[_Iterable[float]] = ...) -> None: ...

class CurveFlag(_message.Message):
    __slots__ = ("kind", "since_epoch", "detail")
    KIND_FIELD_NUMBER: _ClassVar[int]
    SINCE_EPOCH_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    kind: CurveFlagKind
    since_epoch: int
    detail: str
    def __init__(self, kind: _Optional[_Union[CurveFlagKind, str]] = ..., since_epoch: _Optional[int] = ..., detail: _Optional[str] = ...) -> None: ...

class Prognosis(_message.Message):
    __slots__ = ("epoch", "flags", "predicted", "final_val_accuracy", "final_val_accuracy_low", "final_val_accuracy_high", "model_version", "note", "hopeless", "hopeless_reason")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_FIELD_NUMBER: _ClassVar[int]
    FINAL_VAL_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    FINAL_VAL_ACCURACY_LOW_FIELD_NUMBER: _ClassVar[int]
    FINAL_VAL_ACCURACY_HIGH_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    HOPELESS_FIELD_NUMBER: _ClassVar[int]
    HOPELESS_REASON_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    flags: _containers.RepeatedCompositeFieldContainer[CurveFlag]
    predicted: bool
    final_val_accuracy: float
    final_val_accuracy_low: float
    final_val_accuracy_high: float
    model_version: int
    note: str
    hopeless: bool
    hopeless_reason: str
    def __init__(self, epoch: _Optional[int] = ..., flags: _Optional[_Iterable[_Union[CurveFlag, _Mapping]]] = ..., predicted: _Optional[bool] = ..., final_val_accuracy: _Optional[float] = ..., final_val_accuracy_low: _Optional[float] = ..., final_val_accuracy_high: _Optional[float] = ..., model_version: _Optional[int] = ..., note: _Optional[str] = ..., hopeless: _Optional[bool] = ..., hopeless_reason: _Optional[str] = ...) -> None: ...

class DeclaredTask(_message.Message):
    __slots__ = ("dataset", "labels", "input_shape", "train_size", "features", "validation_images_per_label")
    class FeaturesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    DATASET_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    INPUT_SHAPE_FIELD_NUMBER: _ClassVar[int]
    TRAIN_SIZE_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_IMAGES_PER_LABEL_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    labels: _containers.RepeatedScalarFieldContainer[str]
    input_shape: _containers.RepeatedScalarFieldContainer[int]
    train_size: int
    features: _containers.ScalarMap[str, float]
    validation_images_per_label: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, dataset: _Optional[str] = ..., labels: _Optional[_Iterable[str]] = ..., input_shape: _Optional[_Iterable[int]] = ..., train_size: _Optional[int] = ..., features: _Optional[_Mapping[str, float]] = ..., validation_images_per_label: _Optional[_Iterable[int]] = ...) -> None: ...

class ReportedRun(_message.Message):
    __slots__ = ("params", "task", "metric_keys", "heartbeat_seconds", "client", "stop_when_hopeless", "origin")
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    METRIC_KEYS_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    STOP_WHEN_HOPELESS_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    params: _struct_pb2.Struct
    task: DeclaredTask
    metric_keys: _containers.RepeatedScalarFieldContainer[str]
    heartbeat_seconds: int
    client: str
    stop_when_hopeless: bool
    origin: RunOrigin
    def __init__(self, params: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., task: _Optional[_Union[DeclaredTask, _Mapping]] = ..., metric_keys: _Optional[_Iterable[str]] = ..., heartbeat_seconds: _Optional[int] = ..., client: _Optional[str] = ..., stop_when_hopeless: _Optional[bool] = ..., origin: _Optional[_Union[RunOrigin, _Mapping]] = ...) -> None: ...

class RunOrigin(_message.Message):
    __slots__ = ("system", "id", "uri", "group")
    SYSTEM_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    system: str
    id: str
    uri: str
    group: str
    def __init__(self, system: _Optional[str] = ..., id: _Optional[str] = ..., uri: _Optional[str] = ..., group: _Optional[str] = ...) -> None: ...

class Attempt(_message.Message):
    __slots__ = ("id", "name", "training_commands", "training_losses", "n_epoch", "testing_commands", "accuracy", "status", "limit", "create_time", "update_time", "current_epoch", "epochs", "test_result", "error", "restart_count", "trainer", "model_artifact", "dataset", "tags", "owner", "imported", "trial", "prognosis", "best_val_accuracy", "provenance", "reported", "waiting")
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TRAINING_COMMANDS_FIELD_NUMBER: _ClassVar[int]
    TRAINING_LOSSES_FIELD_NUMBER: _ClassVar[int]
    N_EPOCH_FIELD_NUMBER: _ClassVar[int]
    TESTING_COMMANDS_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    CURRENT_EPOCH_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    TEST_RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RESTART_COUNT_FIELD_NUMBER: _ClassVar[int]
    TRAINER_FIELD_NUMBER: _ClassVar[int]
    MODEL_ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    IMPORTED_FIELD_NUMBER: _ClassVar[int]
    TRIAL_FIELD_NUMBER: _ClassVar[int]
    PROGNOSIS_FIELD_NUMBER: _ClassVar[int]
    BEST_VAL_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    REPORTED_FIELD_NUMBER: _ClassVar[int]
    WAITING_FIELD_NUMBER: _ClassVar[int]
    id: int
    name: str
    training_commands: TrainCommand
    training_losses: _containers.RepeatedScalarFieldContainer[float]
    n_epoch: int
    testing_commands: TestCommand
    accuracy: float
    status: AttemptStatus
    limit: int
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    current_epoch: int
    epochs: _containers.RepeatedCompositeFieldContainer[EpochMetrics]
    test_result: TestResult
    error: str
    restart_count: int
    trainer: str
    model_artifact: ArtifactInfo
    dataset: DatasetFingerprint
    tags: _containers.ScalarMap[str, str]
    owner: str
    imported: bool
    trial: StudyTrial
    prognosis: Prognosis
    best_val_accuracy: float
    provenance: Provenance
    reported: ReportedRun
    waiting: str
    def __init__(self, id: _Optional[int] = ..., name: _Optional[str] = ..., training_commands: _Optional[_Union[TrainCommand, _Mapping]] = ..., training_losses: _Optional[_Iterable[float]] = ..., n_epoch: _Optional[int] = ..., testing_commands: _Optional[_Union[TestCommand, _Mapping]] = ..., accuracy: _Optional[float] = ..., status: _Optional[_Union[AttemptStatus, str]] = ..., limit: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., current_epoch: _Optional[int] = ..., epochs: _Optional[_Iterable[_Union[EpochMetrics, _Mapping]]] = ..., test_result: _Optional[_Union[TestResult, _Mapping]] = ..., error: _Optional[str] = ..., restart_count: _Optional[int] = ..., trainer: _Optional[str] = ..., model_artifact: _Optional[_Union[ArtifactInfo, _Mapping]] = ..., dataset: _Optional[_Union[DatasetFingerprint, _Mapping]] = ..., tags: _Optional[_Mapping[str, str]] = ..., owner: _Optional[str] = ..., imported: _Optional[bool] = ..., trial: _Optional[_Union[StudyTrial, _Mapping]] = ..., prognosis: _Optional[_Union[Prognosis, _Mapping]] = ..., best_val_accuracy: _Optional[float] = ..., provenance: _Optional[_Union[Provenance, str]] = ..., reported: _Optional[_Union[ReportedRun, _Mapping]] = ..., waiting: _Optional[str] = ...) -> None: ...
