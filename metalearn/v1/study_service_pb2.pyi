import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from metalearn.v1 import attempt_pb2 as _attempt_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Objective(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OBJECTIVE_UNSPECIFIED: _ClassVar[Objective]
    OBJECTIVE_BEST_VAL_ACCURACY: _ClassVar[Objective]
    OBJECTIVE_LAST_VAL_ACCURACY: _ClassVar[Objective]
    OBJECTIVE_BEST_VAL_LOSS: _ClassVar[Objective]
    OBJECTIVE_LAST_VAL_LOSS: _ClassVar[Objective]

class StudyState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STUDY_STATE_UNSPECIFIED: _ClassVar[StudyState]
    STUDY_STATE_RUNNING: _ClassVar[StudyState]
    STUDY_STATE_STOPPING: _ClassVar[StudyState]
    STUDY_STATE_DONE: _ClassVar[StudyState]

class TrialState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRIAL_STATE_UNSPECIFIED: _ClassVar[TrialState]
    TRIAL_STATE_RUNNING: _ClassVar[TrialState]
    TRIAL_STATE_COMPLETE: _ClassVar[TrialState]
    TRIAL_STATE_FAILED: _ClassVar[TrialState]
    TRIAL_STATE_PRUNED: _ClassVar[TrialState]

class StudyDirection(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STUDY_DIRECTION_UNSPECIFIED: _ClassVar[StudyDirection]
    STUDY_DIRECTION_MINIMIZE: _ClassVar[StudyDirection]
    STUDY_DIRECTION_MAXIMIZE: _ClassVar[StudyDirection]
OBJECTIVE_UNSPECIFIED: Objective
OBJECTIVE_BEST_VAL_ACCURACY: Objective
OBJECTIVE_LAST_VAL_ACCURACY: Objective
OBJECTIVE_BEST_VAL_LOSS: Objective
OBJECTIVE_LAST_VAL_LOSS: Objective
STUDY_STATE_UNSPECIFIED: StudyState
STUDY_STATE_RUNNING: StudyState
STUDY_STATE_STOPPING: StudyState
STUDY_STATE_DONE: StudyState
TRIAL_STATE_UNSPECIFIED: TrialState
TRIAL_STATE_RUNNING: TrialState
TRIAL_STATE_COMPLETE: TrialState
TRIAL_STATE_FAILED: TrialState
TRIAL_STATE_PRUNED: TrialState
STUDY_DIRECTION_UNSPECIFIED: StudyDirection
STUDY_DIRECTION_MINIMIZE: StudyDirection
STUDY_DIRECTION_MAXIMIZE: StudyDirection

class FloatRange(_message.Message):
    __slots__ = ("low", "high", "log", "step")
    LOW_FIELD_NUMBER: _ClassVar[int]
    HIGH_FIELD_NUMBER: _ClassVar[int]
    LOG_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    low: float
    high: float
    log: bool
    step: float
    def __init__(self, low: _Optional[float] = ..., high: _Optional[float] = ..., log: _Optional[bool] = ..., step: _Optional[float] = ...) -> None: ...

class IntRange(_message.Message):
    __slots__ = ("low", "high", "step", "log")
    LOW_FIELD_NUMBER: _ClassVar[int]
    HIGH_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    LOG_FIELD_NUMBER: _ClassVar[int]
    low: int
    high: int
    step: int
    log: bool
    def __init__(self, low: _Optional[int] = ..., high: _Optional[int] = ..., step: _Optional[int] = ..., log: _Optional[bool] = ...) -> None: ...

class Choices(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedCompositeFieldContainer[_struct_pb2.Value]
    def __init__(self, values: _Optional[_Iterable[_Union[_struct_pb2.Value, _Mapping]]] = ...) -> None: ...

class SearchParameter(_message.Message):
    __slots__ = ("path", "float", "int", "categorical")
    PATH_FIELD_NUMBER: _ClassVar[int]
    FLOAT_FIELD_NUMBER: _ClassVar[int]
    INT_FIELD_NUMBER: _ClassVar[int]
    CATEGORICAL_FIELD_NUMBER: _ClassVar[int]
    path: str
    float: FloatRange
    int: IntRange
    categorical: Choices
    def __init__(self, path: _Optional[str] = ..., float: _Optional[_Union[FloatRange, _Mapping]] = ..., int: _Optional[_Union[IntRange, _Mapping]] = ..., categorical: _Optional[_Union[Choices, _Mapping]] = ...) -> None: ...

class Algorithm(_message.Message):
    __slots__ = ("name", "args")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    name: str
    args: _struct_pb2.Struct
    def __init__(self, name: _Optional[str] = ..., args: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class Trial(_message.Message):
    __slots__ = ("number", "attempt_name", "attempt_id", "state", "params", "value", "epochs", "error", "seeded_by_attempt_id", "values")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_NAME_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    SEEDED_BY_ATTEMPT_ID_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    number: int
    attempt_name: str
    attempt_id: int
    state: TrialState
    params: _struct_pb2.Struct
    value: float
    epochs: int
    error: str
    seeded_by_attempt_id: int
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, number: _Optional[int] = ..., attempt_name: _Optional[str] = ..., attempt_id: _Optional[int] = ..., state: _Optional[_Union[TrialState, str]] = ..., params: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., value: _Optional[float] = ..., epochs: _Optional[int] = ..., error: _Optional[str] = ..., seeded_by_attempt_id: _Optional[int] = ..., values: _Optional[_Iterable[float]] = ...) -> None: ...

class WarmStart(_message.Message):
    __slots__ = ("similar_tasks", "studies", "zero_shot_trials")
    SIMILAR_TASKS_FIELD_NUMBER: _ClassVar[int]
    STUDIES_FIELD_NUMBER: _ClassVar[int]
    ZERO_SHOT_TRIALS_FIELD_NUMBER: _ClassVar[int]
    similar_tasks: int
    studies: _containers.RepeatedScalarFieldContainer[str]
    zero_shot_trials: int
    def __init__(self, similar_tasks: _Optional[int] = ..., studies: _Optional[_Iterable[str]] = ..., zero_shot_trials: _Optional[int] = ...) -> None: ...

class WarmStartReport(_message.Message):
    __slots__ = ("state", "sources", "priors", "zero_shot_trials", "ranking", "ranking_reason")
    STATE_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    PRIORS_FIELD_NUMBER: _ClassVar[int]
    ZERO_SHOT_TRIALS_FIELD_NUMBER: _ClassVar[int]
    RANKING_FIELD_NUMBER: _ClassVar[int]
    RANKING_REASON_FIELD_NUMBER: _ClassVar[int]
    state: str
    sources: _containers.RepeatedCompositeFieldContainer[WarmStartSource]
    priors: int
    zero_shot_trials: int
    ranking: str
    ranking_reason: str
    def __init__(self, state: _Optional[str] = ..., sources: _Optional[_Iterable[_Union[WarmStartSource, _Mapping]]] = ..., priors: _Optional[int] = ..., zero_shot_trials: _Optional[int] = ..., ranking: _Optional[str] = ..., ranking_reason: _Optional[str] = ...) -> None: ...

class WarmStartSource(_message.Message):
    __slots__ = ("task_fingerprint", "label_names", "distance", "weight", "trials")
    TASK_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    LABEL_NAMES_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    TRIALS_FIELD_NUMBER: _ClassVar[int]
    task_fingerprint: str
    label_names: _containers.RepeatedScalarFieldContainer[str]
    distance: float
    weight: float
    trials: int
    def __init__(self, task_fingerprint: _Optional[str] = ..., label_names: _Optional[_Iterable[str]] = ..., distance: _Optional[float] = ..., weight: _Optional[float] = ..., trials: _Optional[int] = ...) -> None: ...

class Study(_message.Message):
    __slots__ = ("id", "name", "base_command", "search_space", "objective", "n_trials", "max_parallel", "timeout_seconds", "sampler", "pruner", "seed", "test_best", "state", "owner", "create_time", "update_time", "trials_made", "best_trial", "trials", "stop_reason", "warm_start", "warm_start_report", "external", "optuna")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    BASE_COMMAND_FIELD_NUMBER: _ClassVar[int]
    SEARCH_SPACE_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVE_FIELD_NUMBER: _ClassVar[int]
    N_TRIALS_FIELD_NUMBER: _ClassVar[int]
    MAX_PARALLEL_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SAMPLER_FIELD_NUMBER: _ClassVar[int]
    PRUNER_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    TEST_BEST_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    TRIALS_MADE_FIELD_NUMBER: _ClassVar[int]
    BEST_TRIAL_FIELD_NUMBER: _ClassVar[int]
    TRIALS_FIELD_NUMBER: _ClassVar[int]
    STOP_REASON_FIELD_NUMBER: _ClassVar[int]
    WARM_START_FIELD_NUMBER: _ClassVar[int]
    WARM_START_REPORT_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_FIELD_NUMBER: _ClassVar[int]
    OPTUNA_FIELD_NUMBER: _ClassVar[int]
    id: int
    name: str
    base_command: _attempt_pb2.TrainCommand
    search_space: _containers.RepeatedCompositeFieldContainer[SearchParameter]
    objective: Objective
    n_trials: int
    max_parallel: int
    timeout_seconds: float
    sampler: Algorithm
    pruner: Algorithm
    seed: int
    test_best: bool
    state: StudyState
    owner: str
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    trials_made: int
    best_trial: Trial
    trials: _containers.RepeatedCompositeFieldContainer[Trial]
    stop_reason: str
    warm_start: WarmStart
    warm_start_report: WarmStartReport
    external: ExternalTrials
    optuna: OptunaStudy
    def __init__(self, id: _Optional[int] = ..., name: _Optional[str] = ..., base_command: _Optional[_Union[_attempt_pb2.TrainCommand, _Mapping]] = ..., search_space: _Optional[_Iterable[_Union[SearchParameter, _Mapping]]] = ..., objective: _Optional[_Union[Objective, str]] = ..., n_trials: _Optional[int] = ..., max_parallel: _Optional[int] = ..., timeout_seconds: _Optional[float] = ..., sampler: _Optional[_Union[Algorithm, _Mapping]] = ..., pruner: _Optional[_Union[Algorithm, _Mapping]] = ..., seed: _Optional[int] = ..., test_best: _Optional[bool] = ..., state: _Optional[_Union[StudyState, str]] = ..., owner: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., trials_made: _Optional[int] = ..., best_trial: _Optional[_Union[Trial, _Mapping]] = ..., trials: _Optional[_Iterable[_Union[Trial, _Mapping]]] = ..., stop_reason: _Optional[str] = ..., warm_start: _Optional[_Union[WarmStart, _Mapping]] = ..., warm_start_report: _Optional[_Union[WarmStartReport, _Mapping]] = ..., external: _Optional[_Union[ExternalTrials, _Mapping]] = ..., optuna: _Optional[_Union[OptunaStudy, _Mapping]] = ...) -> None: ...

class OptunaStudy(_message.Message):
    __slots__ = ("directions", "user_attrs")
    DIRECTIONS_FIELD_NUMBER: _ClassVar[int]
    USER_ATTRS_FIELD_NUMBER: _ClassVar[int]
    directions: _containers.RepeatedScalarFieldContainer[StudyDirection]
    user_attrs: _struct_pb2.Struct
    def __init__(self, directions: _Optional[_Iterable[_Union[StudyDirection, str]]] = ..., user_attrs: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class ExternalTrials(_message.Message):
    __slots__ = ("task", "n_epoch", "heartbeat_seconds")
    TASK_FIELD_NUMBER: _ClassVar[int]
    N_EPOCH_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    task: _attempt_pb2.DeclaredTask
    n_epoch: int
    heartbeat_seconds: int
    def __init__(self, task: _Optional[_Union[_attempt_pb2.DeclaredTask, _Mapping]] = ..., n_epoch: _Optional[int] = ..., heartbeat_seconds: _Optional[int] = ...) -> None: ...

class CreateStudyRequest(_message.Message):
    __slots__ = ("study",)
    STUDY_FIELD_NUMBER: _ClassVar[int]
    study: Study
    def __init__(self, study: _Optional[_Union[Study, _Mapping]] = ...) -> None: ...

class CreateStudyResponse(_message.Message):
    __slots__ = ("study",)
    STUDY_FIELD_NUMBER: _ClassVar[int]
    study: Study
    def __init__(self, study: _Optional[_Union[Study, _Mapping]] = ...) -> None: ...

class GetStudyRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetStudyResponse(_message.Message):
    __slots__ = ("study",)
    STUDY_FIELD_NUMBER: _ClassVar[int]
    study: Study
    def __init__(self, study: _Optional[_Union[Study, _Mapping]] = ...) -> None: ...

class ListStudiesRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListStudiesResponse(_message.Message):
    __slots__ = ("studies", "next_page_token")
    STUDIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    studies: _containers.RepeatedCompositeFieldContainer[Study]
    next_page_token: str
    def __init__(self, studies: _Optional[_Iterable[_Union[Study, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class WatchStudyRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class TrialEpoch(_message.Message):
    __slots__ = ("trial", "epoch")
    TRIAL_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    trial: int
    epoch: _attempt_pb2.EpochMetrics
    def __init__(self, trial: _Optional[int] = ..., epoch: _Optional[_Union[_attempt_pb2.EpochMetrics, _Mapping]] = ...) -> None: ...

class WatchStudyResponse(_message.Message):
    __slots__ = ("snapshot", "trial_started", "trial_epoch", "trial_pruned", "trial_finished", "new_best", "study_finished")
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    TRIAL_STARTED_FIELD_NUMBER: _ClassVar[int]
    TRIAL_EPOCH_FIELD_NUMBER: _ClassVar[int]
    TRIAL_PRUNED_FIELD_NUMBER: _ClassVar[int]
    TRIAL_FINISHED_FIELD_NUMBER: _ClassVar[int]
    NEW_BEST_FIELD_NUMBER: _ClassVar[int]
    STUDY_FINISHED_FIELD_NUMBER: _ClassVar[int]
    snapshot: Study
    trial_started: Trial
    trial_epoch: TrialEpoch
    trial_pruned: Trial
    trial_finished: Trial
    new_best: Trial
    study_finished: Study
    def __init__(self, snapshot: _Optional[_Union[Study, _Mapping]] = ..., trial_started: _Optional[_Union[Trial, _Mapping]] = ..., trial_epoch: _Optional[_Union[TrialEpoch, _Mapping]] = ..., trial_pruned: _Optional[_Union[Trial, _Mapping]] = ..., trial_finished: _Optional[_Union[Trial, _Mapping]] = ..., new_best: _Optional[_Union[Trial, _Mapping]] = ..., study_finished: _Optional[_Union[Study, _Mapping]] = ...) -> None: ...

class StopStudyRequest(_message.Message):
    __slots__ = ("name", "cancel_running")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CANCEL_RUNNING_FIELD_NUMBER: _ClassVar[int]
    name: str
    cancel_running: bool
    def __init__(self, name: _Optional[str] = ..., cancel_running: _Optional[bool] = ...) -> None: ...

class StopStudyResponse(_message.Message):
    __slots__ = ("study",)
    STUDY_FIELD_NUMBER: _ClassVar[int]
    study: Study
    def __init__(self, study: _Optional[_Union[Study, _Mapping]] = ...) -> None: ...

class AskTrialRequest(_message.Message):
    __slots__ = ("name", "worker", "request_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    worker: str
    request_id: str
    def __init__(self, name: _Optional[str] = ..., worker: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class AskTrialResponse(_message.Message):
    __slots__ = ("trial", "wait_seconds", "done")
    TRIAL_FIELD_NUMBER: _ClassVar[int]
    WAIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    trial: Trial
    wait_seconds: float
    done: Study
    def __init__(self, trial: _Optional[_Union[Trial, _Mapping]] = ..., wait_seconds: _Optional[float] = ..., done: _Optional[_Union[Study, _Mapping]] = ...) -> None: ...

class DeleteStudyRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteStudyResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
