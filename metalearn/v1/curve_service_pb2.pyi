import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CurveModelQuality(_message.Message):
    __slots__ = ("mae_at_3", "baseline_mae_at_3", "mae", "baseline_mae", "interval_coverage", "folds")
    MAE_AT_3_FIELD_NUMBER: _ClassVar[int]
    BASELINE_MAE_AT_3_FIELD_NUMBER: _ClassVar[int]
    MAE_FIELD_NUMBER: _ClassVar[int]
    BASELINE_MAE_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_COVERAGE_FIELD_NUMBER: _ClassVar[int]
    FOLDS_FIELD_NUMBER: _ClassVar[int]
    mae_at_3: float
    baseline_mae_at_3: float
    mae: float
    baseline_mae: float
    interval_coverage: float
    folds: int
    def __init__(self, mae_at_3: _Optional[float] = ..., baseline_mae_at_3: _Optional[float] = ..., mae: _Optional[float] = ..., baseline_mae: _Optional[float] = ..., interval_coverage: _Optional[float] = ..., folds: _Optional[int] = ...) -> None: ...

class CurveModel(_message.Message):
    __slots__ = ("version", "fit_time", "attempts", "tasks", "quality", "seconds")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FIT_TIME_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    version: int
    fit_time: _timestamp_pb2.Timestamp
    attempts: int
    tasks: int
    quality: CurveModelQuality
    seconds: float
    def __init__(self, version: _Optional[int] = ..., fit_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., attempts: _Optional[int] = ..., tasks: _Optional[int] = ..., quality: _Optional[_Union[CurveModelQuality, _Mapping]] = ..., seconds: _Optional[float] = ...) -> None: ...

class FitCurveModelRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class FitCurveModelResponse(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: CurveModel
    def __init__(self, model: _Optional[_Union[CurveModel, _Mapping]] = ...) -> None: ...

class GetCurveModelRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetCurveModelResponse(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: CurveModel
    def __init__(self, model: _Optional[_Union[CurveModel, _Mapping]] = ...) -> None: ...

class CurvePoint(_message.Message):
    __slots__ = ("val_accuracy", "loss", "val_loss")
    VAL_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    VAL_LOSS_FIELD_NUMBER: _ClassVar[int]
    val_accuracy: float
    loss: float
    val_loss: float
    def __init__(self, val_accuracy: _Optional[float] = ..., loss: _Optional[float] = ..., val_loss: _Optional[float] = ...) -> None: ...

class ForecastCurveRequest(_message.Message):
    __slots__ = ("epochs", "n_epoch", "n_labels", "optimizer", "learning_rate", "momentum", "batch_size", "task_fingerprint", "best", "finished", "min_epoch", "n_startup_trials", "margin", "validation_images_per_label")
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    N_EPOCH_FIELD_NUMBER: _ClassVar[int]
    N_LABELS_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    MOMENTUM_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    TASK_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    BEST_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    MIN_EPOCH_FIELD_NUMBER: _ClassVar[int]
    N_STARTUP_TRIALS_FIELD_NUMBER: _ClassVar[int]
    MARGIN_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_IMAGES_PER_LABEL_FIELD_NUMBER: _ClassVar[int]
    epochs: _containers.RepeatedCompositeFieldContainer[CurvePoint]
    n_epoch: int
    n_labels: int
    optimizer: str
    learning_rate: float
    momentum: float
    batch_size: int
    task_fingerprint: str
    best: float
    finished: int
    min_epoch: int
    n_startup_trials: int
    margin: float
    validation_images_per_label: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, epochs: _Optional[_Iterable[_Union[CurvePoint, _Mapping]]] = ..., n_epoch: _Optional[int] = ..., n_labels: _Optional[int] = ..., optimizer: _Optional[str] = ..., learning_rate: _Optional[float] = ..., momentum: _Optional[float] = ..., batch_size: _Optional[int] = ..., task_fingerprint: _Optional[str] = ..., best: _Optional[float] = ..., finished: _Optional[int] = ..., min_epoch: _Optional[int] = ..., n_startup_trials: _Optional[int] = ..., margin: _Optional[float] = ..., validation_images_per_label: _Optional[_Iterable[int]] = ...) -> None: ...

class ForecastCurveResponse(_message.Message):
    __slots__ = ("predicted", "final_val_accuracy", "final_val_accuracy_low", "final_val_accuracy_high", "final_val_accuracy_ceiling", "model_version", "note", "prune", "prune_reason")
    PREDICTED_FIELD_NUMBER: _ClassVar[int]
    FINAL_VAL_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    FINAL_VAL_ACCURACY_LOW_FIELD_NUMBER: _ClassVar[int]
    FINAL_VAL_ACCURACY_HIGH_FIELD_NUMBER: _ClassVar[int]
    FINAL_VAL_ACCURACY_CEILING_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    PRUNE_FIELD_NUMBER: _ClassVar[int]
    PRUNE_REASON_FIELD_NUMBER: _ClassVar[int]
    predicted: bool
    final_val_accuracy: float
    final_val_accuracy_low: float
    final_val_accuracy_high: float
    final_val_accuracy_ceiling: float
    model_version: int
    note: str
    prune: bool
    prune_reason: str
    def __init__(self, predicted: _Optional[bool] = ..., final_val_accuracy: _Optional[float] = ..., final_val_accuracy_low: _Optional[float] = ..., final_val_accuracy_high: _Optional[float] = ..., final_val_accuracy_ceiling: _Optional[float] = ..., model_version: _Optional[int] = ..., note: _Optional[str] = ..., prune: _Optional[bool] = ..., prune_reason: _Optional[str] = ...) -> None: ...
