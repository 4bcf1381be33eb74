from google.protobuf import field_mask_pb2 as _field_mask_pb2
from metalearn.v1 import attempt_pb2 as _attempt_pb2
from metalearn.v1 import trainer_service_pb2 as _trainer_service_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AttemptView(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ATTEMPT_VIEW_UNSPECIFIED: _ClassVar[AttemptView]
    ATTEMPT_VIEW_BASIC: _ClassVar[AttemptView]
    ATTEMPT_VIEW_FULL: _ClassVar[AttemptView]

class AttemptOrder(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ATTEMPT_ORDER_UNSPECIFIED: _ClassVar[AttemptOrder]
    ATTEMPT_ORDER_ID: _ClassVar[AttemptOrder]
    ATTEMPT_ORDER_ACCURACY: _ClassVar[AttemptOrder]
    ATTEMPT_ORDER_UPDATE_TIME: _ClassVar[AttemptOrder]
ATTEMPT_VIEW_UNSPECIFIED: AttemptView
ATTEMPT_VIEW_BASIC: AttemptView
ATTEMPT_VIEW_FULL: AttemptView
ATTEMPT_ORDER_UNSPECIFIED: AttemptOrder
ATTEMPT_ORDER_ID: AttemptOrder
ATTEMPT_ORDER_ACCURACY: AttemptOrder
ATTEMPT_ORDER_UPDATE_TIME: AttemptOrder

class CreateAttemptRequest(_message.Message):
    __slots__ = ("attempt", "request_id")
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    attempt: _attempt_pb2.Attempt
    request_id: str
    def __init__(self, attempt: _Optional[_Union[_attempt_pb2.Attempt, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class CreateAttemptResponse(_message.Message):
    __slots__ = ("attempt",)
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    attempt: _attempt_pb2.Attempt
    def __init__(self, attempt: _Optional[_Union[_attempt_pb2.Attempt, _Mapping]] = ...) -> None: ...

class BatchCreateAttemptsRequest(_message.Message):
    __slots__ = ("requests", "request_id")
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[CreateAttemptRequest]
    request_id: str
    def __init__(self, requests: _Optional[_Iterable[_Union[CreateAttemptRequest, _Mapping]]] = ..., request_id: _Optional[str] = ...) -> None: ...

class BatchCreateAttemptsResponse(_message.Message):
    __slots__ = ("attempts",)
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    attempts: _containers.RepeatedCompositeFieldContainer[_attempt_pb2.Attempt]
    def __init__(self, attempts: _Optional[_Iterable[_Union[_attempt_pb2.Attempt, _Mapping]]] = ...) -> None: ...

class ImportAttemptsRequest(_message.Message):
    __slots__ = ("attempts", "skip_existing", "request_id")
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    SKIP_EXISTING_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    attempts: _containers.RepeatedCompositeFieldContainer[_attempt_pb2.Attempt]
    skip_existing: bool
    request_id: str
    def __init__(self, attempts: _Optional[_Iterable[_Union[_attempt_pb2.Attempt, _Mapping]]] = ..., skip_existing: _Optional[bool] = ..., request_id: _Optional[str] = ...) -> None: ...

class ImportAttemptsResponse(_message.Message):
    __slots__ = ("attempts", "skipped")
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    attempts: _containers.RepeatedCompositeFieldContainer[_attempt_pb2.Attempt]
    skipped: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, attempts: _Optional[_Iterable[_Union[_attempt_pb2.Attempt, _Mapping]]] = ..., skipped: _Optional[_Iterable[str]] = ...) -> None: ...

class GetAttemptRequest(_message.Message):
    __slots__ = ("name", "id", "view")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    VIEW_FIELD_NUMBER: _ClassVar[int]
    name: str
    id: int
    view: AttemptView
    def __init__(self, name: _Optional[str] = ..., id: _Optional[int] = ..., view: _Optional[_Union[AttemptView, str]] = ...) -> None: ...

class GetAttemptResponse(_message.Message):
    __slots__ = ("attempt",)
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    attempt: _attempt_pb2.Attempt
    def __init__(self, attempt: _Optional[_Union[_attempt_pb2.Attempt, _Mapping]] = ...) -> None: ...

class UpdateAttemptRequest(_message.Message):
    __slots__ = ("attempt", "update_mask")
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    attempt: _attempt_pb2.Attempt
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, attempt: _Optional[_Union[_attempt_pb2.Attempt, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class UpdateAttemptResponse(_message.Message):
    __slots__ = ("attempt",)
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    attempt: _attempt_pb2.Attempt
    def __init__(self, attempt: _Optional[_Union[_attempt_pb2.Attempt, _Mapping]] = ...) -> None: ...

class ListAttemptsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "statuses", "label_name", "name_prefix", "min_accuracy", "order_by", "view", "owner", "filter", "order_by_field")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATUSES_FIELD_NUMBER: _ClassVar[int]
    LABEL_NAME_FIELD_NUMBER: _ClassVar[int]
    NAME_PREFIX_FIELD_NUMBER: _ClassVar[int]
    MIN_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    ORDER_BY_FIELD_NUMBER: _ClassVar[int]
    VIEW_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    ORDER_BY_FIELD_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    statuses: _containers.RepeatedScalarFieldContainer[_attempt_pb2.AttemptStatus]
    label_name: str
    name_prefix: str
    min_accuracy: float
    order_by: AttemptOrder
    view: AttemptView
    owner: str
    filter: str
    order_by_field: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., statuses: _Optional[_Iterable[_Union[_attempt_pb2.AttemptStatus, str]]] = ..., label_name: _Optional[str] = ..., name_prefix: _Optional[str] = ..., min_accuracy: _Optional[float] = ..., order_by: _Optional[_Union[AttemptOrder, str]] = ..., view: _Optional[_Union[AttemptView, str]] = ..., owner: _Optional[str] = ..., filter: _Optional[str] = ..., order_by_field: _Optional[str] = ...) -> None: ...

class ListAttemptsResponse(_message.Message):
    __slots__ = ("attempts", "next_page_token", "total_size", "total_size_estimated")
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_ESTIMATED_FIELD_NUMBER: _ClassVar[int]
    attempts: _containers.RepeatedCompositeFieldContainer[_attempt_pb2.Attempt]
    next_page_token: str
    total_size: int
    total_size_estimated: bool
    def __init__(self, attempts: _Optional[_Iterable[_Union[_attempt_pb2.Attempt, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total_size: _Optional[int] = ..., total_size_estimated: _Optional[bool] = ...) -> None: ...

class DeleteAttemptRequest(_message.Message):
    __slots__ = ("name", "id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    id: int
    def __init__(self, name: _Optional[str] = ..., id: _Optional[int] = ...) -> None: ...

class DeleteAttemptResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetLatestIndexRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetLatestIndexResponse(_message.Message):
    __slots__ = ("latest_index",)
    LATEST_INDEX_FIELD_NUMBER: _ClassVar[int]
    latest_index: int
    def __init__(self, latest_index: _Optional[int] = ...) -> None: ...

class TrainRequest(_message.Message):
    __slots__ = ("name", "command", "request_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    command: _attempt_pb2.TrainCommand
    request_id: str
    def __init__(self, name: _Optional[str] = ..., command: _Optional[_Union[_attempt_pb2.TrainCommand, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class TrainResponse(_message.Message):
    __slots__ = ("attempt",)
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    attempt: _attempt_pb2.Attempt
    def __init__(self, attempt: _Optional[_Union[_attempt_pb2.Attempt, _Mapping]] = ...) -> None: ...

class TestRequest(_message.Message):
    __slots__ = ("name", "command", "request_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    command: _attempt_pb2.TestCommand
    request_id: str
    def __init__(self, name: _Optional[str] = ..., command: _Optional[_Union[_attempt_pb2.TestCommand, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class TestResponse(_message.Message):
    __slots__ = ("attempt",)
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    attempt: _attempt_pb2.Attempt
    def __init__(self, attempt: _Optional[_Union[_attempt_pb2.Attempt, _Mapping]] = ...) -> None: ...

class WatchAttemptRequest(_message.Message):
    __slots__ = ("name", "id", "from_epoch")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    FROM_EPOCH_FIELD_NUMBER: _ClassVar[int]
    name: str
    id: int
    from_epoch: int
    def __init__(self, name: _Optional[str] = ..., id: _Optional[int] = ..., from_epoch: _Optional[int] = ...) -> None: ...

class WatchAttemptResponse(_message.Message):
    __slots__ = ("snapshot", "epoch", "status", "test_progress", "prognosis")
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    TEST_PROGRESS_FIELD_NUMBER: _ClassVar[int]
    PROGNOSIS_FIELD_NUMBER: _ClassVar[int]
    snapshot: _attempt_pb2.Attempt
    epoch: _attempt_pb2.EpochMetrics
    status: _attempt_pb2.Attempt
    test_progress: _trainer_service_pb2.TestProgress
    prognosis: _attempt_pb2.Prognosis
    def __init__(self, snapshot: _Optional[_Union[_attempt_pb2.Attempt, _Mapping]] = ..., epoch: _Optional[_Union[_attempt_pb2.EpochMetrics, _Mapping]] = ..., status: _Optional[_Union[_attempt_pb2.Attempt, _Mapping]] = ..., test_progress: _Optional[_Union[_trainer_service_pb2.TestProgress, _Mapping]] = ..., prognosis: _Optional[_Union[_attempt_pb2.Prognosis, _Mapping]] = ...) -> None: ...

class CancelAttemptRequest(_message.Message):
    __slots__ = ("name", "id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    id: int
    def __init__(self, name: _Optional[str] = ..., id: _Optional[int] = ...) -> None: ...

class CancelAttemptResponse(_message.Message):
    __slots__ = ("attempt",)
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    attempt: _attempt_pb2.Attempt
    def __init__(self, attempt: _Optional[_Union[_attempt_pb2.Attempt, _Mapping]] = ...) -> None: ...

class DownloadModelRequest(_message.Message):
    __slots__ = ("name", "id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    id: int
    def __init__(self, name: _Optional[str] = ..., id: _Optional[int] = ...) -> None: ...

class DownloadModelResponse(_message.Message):
    __slots__ = ("offset", "data", "total_size", "sha256")
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    offset: int
    data: bytes
    total_size: int
    sha256: str
    def __init__(self, offset: _Optional[int] = ..., data: _Optional[bytes] = ..., total_size: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...
