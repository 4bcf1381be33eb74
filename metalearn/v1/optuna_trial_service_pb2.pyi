from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class OptunaTrialState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OPTUNA_TRIAL_STATE_UNSPECIFIED: _ClassVar[OptunaTrialState]
    OPTUNA_TRIAL_STATE_RUNNING: _ClassVar[OptunaTrialState]
    OPTUNA_TRIAL_STATE_COMPLETE: _ClassVar[OptunaTrialState]
    OPTUNA_TRIAL_STATE_PRUNED: _ClassVar[OptunaTrialState]
    OPTUNA_TRIAL_STATE_FAIL: _ClassVar[OptunaTrialState]
OPTUNA_TRIAL_STATE_UNSPECIFIED: OptunaTrialState
OPTUNA_TRIAL_STATE_RUNNING: OptunaTrialState
OPTUNA_TRIAL_STATE_COMPLETE: OptunaTrialState
OPTUNA_TRIAL_STATE_PRUNED: OptunaTrialState
OPTUNA_TRIAL_STATE_FAIL: OptunaTrialState

class WriteTrialRequest(_message.Message):
    __slots__ = ("trial_id", "steps", "intermediate_values", "state", "values")
    TRIAL_ID_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    INTERMEDIATE_VALUES_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    trial_id: int
    steps: _containers.RepeatedScalarFieldContainer[int]
    intermediate_values: _containers.RepeatedScalarFieldContainer[float]
    state: OptunaTrialState
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, trial_id: _Optional[int] = ..., steps: _Optional[_Iterable[int]] = ..., intermediate_values: _Optional[_Iterable[float]] = ..., state: _Optional[_Union[OptunaTrialState, str]] = ..., values: _Optional[_Iterable[float]] = ...) -> None: ...

class WriteTrialResponse(_message.Message):
    __slots__ = ("trial_updated",)
    TRIAL_UPDATED_FIELD_NUMBER: _ClassVar[int]
    trial_updated: bool
    def __init__(self, trial_updated: _Optional[bool] = ...) -> None: ...
