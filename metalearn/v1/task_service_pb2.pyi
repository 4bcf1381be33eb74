import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from metalearn.v1 import attempt_pb2 as _attempt_pb2
from metalearn.v1 import task_pb2 as _task_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SuggestionRanking(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SUGGESTION_RANKING_UNSPECIFIED: _ClassVar[SuggestionRanking]
    SUGGESTION_RANKING_DEFAULT: _ClassVar[SuggestionRanking]
    SUGGESTION_RANKING_STATIC: _ClassVar[SuggestionRanking]
    SUGGESTION_RANKING_LEARNED: _ClassVar[SuggestionRanking]
SUGGESTION_RANKING_UNSPECIFIED: SuggestionRanking
SUGGESTION_RANKING_DEFAULT: SuggestionRanking
SUGGESTION_RANKING_STATIC: SuggestionRanking
SUGGESTION_RANKING_LEARNED: SuggestionRanking

class ProfileTaskRequest(_message.Message):
    __slots__ = ("task", "wait")
    TASK_FIELD_NUMBER: _ClassVar[int]
    WAIT_FIELD_NUMBER: _ClassVar[int]
    task: _task_pb2.TaskKey
    wait: bool
    def __init__(self, task: _Optional[_Union[_task_pb2.TaskKey, _Mapping]] = ..., wait: _Optional[bool] = ...) -> None: ...

class ProfileTaskResponse(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: _task_pb2.Task
    def __init__(self, task: _Optional[_Union[_task_pb2.Task, _Mapping]] = ...) -> None: ...

class ListTasksRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "all_versions")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ALL_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    all_versions: bool
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., all_versions: _Optional[bool] = ...) -> None: ...

class ListTasksResponse(_message.Message):
    __slots__ = ("tasks", "next_page_token")
    TASKS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[_task_pb2.Task]
    next_page_token: str
    def __init__(self, tasks: _Optional[_Iterable[_Union[_task_pb2.Task, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class TaskDistance(_message.Message):
    __slots__ = ("kind", "weights", "tasks", "pairs", "fit_time", "spearman", "standardized_spearman")
    class WeightsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    KIND_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    PAIRS_FIELD_NUMBER: _ClassVar[int]
    FIT_TIME_FIELD_NUMBER: _ClassVar[int]
    SPEARMAN_FIELD_NUMBER: _ClassVar[int]
    STANDARDIZED_SPEARMAN_FIELD_NUMBER: _ClassVar[int]
    kind: str
    weights: _containers.ScalarMap[str, float]
    tasks: int
    pairs: int
    fit_time: _timestamp_pb2.Timestamp
    spearman: float
    standardized_spearman: float
    def __init__(self, kind: _Optional[str] = ..., weights: _Optional[_Mapping[str, float]] = ..., tasks: _Optional[int] = ..., pairs: _Optional[int] = ..., fit_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., spearman: _Optional[float] = ..., standardized_spearman: _Optional[float] = ...) -> None: ...

class FindSimilarTasksRequest(_message.Message):
    __slots__ = ("task", "fingerprint", "attempt_id", "limit", "attempts_per_task")
    TASK_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_PER_TASK_FIELD_NUMBER: _ClassVar[int]
    task: _task_pb2.TaskKey
    fingerprint: str
    attempt_id: int
    limit: int
    attempts_per_task: int
    def __init__(self, task: _Optional[_Union[_task_pb2.TaskKey, _Mapping]] = ..., fingerprint: _Optional[str] = ..., attempt_id: _Optional[int] = ..., limit: _Optional[int] = ..., attempts_per_task: _Optional[int] = ...) -> None: ...

class SimilarTask(_message.Message):
    __slots__ = ("task", "distance", "best_attempts")
    TASK_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_FIELD_NUMBER: _ClassVar[int]
    BEST_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    task: _task_pb2.Task
    distance: float
    best_attempts: _containers.RepeatedCompositeFieldContainer[_attempt_pb2.Attempt]
    def __init__(self, task: _Optional[_Union[_task_pb2.Task, _Mapping]] = ..., distance: _Optional[float] = ..., best_attempts: _Optional[_Iterable[_Union[_attempt_pb2.Attempt, _Mapping]]] = ...) -> None: ...

class FindSimilarTasksResponse(_message.Message):
    __slots__ = ("target", "tasks", "distance", "trusted_owners")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_FIELD_NUMBER: _ClassVar[int]
    TRUSTED_OWNERS_FIELD_NUMBER: _ClassVar[int]
    target: _task_pb2.Task
    tasks: _containers.RepeatedCompositeFieldContainer[SimilarTask]
    distance: TaskDistance
    trusted_owners: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, target: _Optional[_Union[_task_pb2.Task, _Mapping]] = ..., tasks: _Optional[_Iterable[_Union[SimilarTask, _Mapping]]] = ..., distance: _Optional[_Union[TaskDistance, _Mapping]] = ..., trusted_owners: _Optional[_Iterable[str]] = ...) -> None: ...

class SuggestCommandRequest(_message.Message):
    __slots__ = ("task", "neighbours")
    TASK_FIELD_NUMBER: _ClassVar[int]
    NEIGHBOURS_FIELD_NUMBER: _ClassVar[int]
    task: _task_pb2.TaskKey
    neighbours: int
    def __init__(self, task: _Optional[_Union[_task_pb2.TaskKey, _Mapping]] = ..., neighbours: _Optional[int] = ...) -> None: ...

class SuggestionSource(_message.Message):
    __slots__ = ("task", "distance", "weight", "attempt_id", "attempt_name", "val_accuracy", "quantile", "provenance", "owner")
    TASK_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_NAME_FIELD_NUMBER: _ClassVar[int]
    VAL_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    QUANTILE_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    task: _task_pb2.Task
    distance: float
    weight: float
    attempt_id: int
    attempt_name: str
    val_accuracy: float
    quantile: float
    provenance: _attempt_pb2.Provenance
    owner: str
    def __init__(self, task: _Optional[_Union[_task_pb2.Task, _Mapping]] = ..., distance: _Optional[float] = ..., weight: _Optional[float] = ..., attempt_id: _Optional[int] = ..., attempt_name: _Optional[str] = ..., val_accuracy: _Optional[float] = ..., quantile: _Optional[float] = ..., provenance: _Optional[_Union[_attempt_pb2.Provenance, str]] = ..., owner: _Optional[str] = ...) -> None: ...

class SuggestCommandResponse(_message.Message):
    __slots__ = ("command", "reason", "sources", "fallback", "task", "distance", "trusted_owners", "ranking", "score")
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_FIELD_NUMBER: _ClassVar[int]
    TRUSTED_OWNERS_FIELD_NUMBER: _ClassVar[int]
    RANKING_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    command: _attempt_pb2.TrainCommand
    reason: str
    sources: _containers.RepeatedCompositeFieldContainer[SuggestionSource]
    fallback: bool
    task: _task_pb2.Task
    distance: TaskDistance
    trusted_owners: _containers.RepeatedScalarFieldContainer[str]
    ranking: SuggestionRanking
    score: float
    def __init__(self, command: _Optional[_Union[_attempt_pb2.TrainCommand, _Mapping]] = ..., reason: _Optional[str] = ..., sources: _Optional[_Iterable[_Union[SuggestionSource, _Mapping]]] = ..., fallback: _Optional[bool] = ..., task: _Optional[_Union[_task_pb2.Task, _Mapping]] = ..., distance: _Optional[_Union[TaskDistance, _Mapping]] = ..., trusted_owners: _Optional[_Iterable[str]] = ..., ranking: _Optional[_Union[SuggestionRanking, str]] = ..., score: _Optional[float] = ...) -> None: ...

class FitTaskDistanceRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class FitTaskDistanceResponse(_message.Message):
    __slots__ = ("distance",)
    DISTANCE_FIELD_NUMBER: _ClassVar[int]
    distance: TaskDistance
    def __init__(self, distance: _Optional[_Union[TaskDistance, _Mapping]] = ...) -> None: ...
