import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
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
