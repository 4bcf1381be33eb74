from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Split(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SPLIT_UNSPECIFIED: _ClassVar[Split]
    SPLIT_ALL: _ClassVar[Split]
    SPLIT_TRAIN: _ClassVar[Split]
    SPLIT_TEST: _ClassVar[Split]
SPLIT_UNSPECIFIED: Split
SPLIT_ALL: Split
SPLIT_TRAIN: Split
SPLIT_TEST: Split

class UploadImagesRequest(_message.Message):
    __slots__ = ("label", "data", "filename")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    label: str
    data: bytes
    filename: str
    def __init__(self, label: _Optional[str] = ..., data: _Optional[bytes] = ..., filename: _Optional[str] = ...) -> None: ...

class Rejection(_message.Message):
    __slots__ = ("index", "filename", "reason")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    index: int
    filename: str
    reason: str
    def __init__(self, index: _Optional[int] = ..., filename: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class UploadImagesResponse(_message.Message):
    __slots__ = ("added", "duplicates", "rejected", "rejections")
    ADDED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    REJECTIONS_FIELD_NUMBER: _ClassVar[int]
    added: int
    duplicates: int
    rejected: int
    rejections: _containers.RepeatedCompositeFieldContainer[Rejection]
    def __init__(self, added: _Optional[int] = ..., duplicates: _Optional[int] = ..., rejected: _Optional[int] = ..., rejections: _Optional[_Iterable[_Union[Rejection, _Mapping]]] = ...) -> None: ...

class ListLabelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LabelInfo(_message.Message):
    __slots__ = ("name", "image_count")
    NAME_FIELD_NUMBER: _ClassVar[int]
    IMAGE_COUNT_FIELD_NUMBER: _ClassVar[int]
    name: str
    image_count: int
    def __init__(self, name: _Optional[str] = ..., image_count: _Optional[int] = ...) -> None: ...

class ListLabelsResponse(_message.Message):
    __slots__ = ("labels",)
    LABELS_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.RepeatedCompositeFieldContainer[LabelInfo]
    def __init__(self, labels: _Optional[_Iterable[_Union[LabelInfo, _Mapping]]] = ...) -> None: ...

class ReadImagesRequest(_message.Message):
    __slots__ = ("label_names", "split", "test_fraction", "seed", "limit", "ids", "skip_data")
    LABEL_NAMES_FIELD_NUMBER: _ClassVar[int]
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    TEST_FRACTION_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    SKIP_DATA_FIELD_NUMBER: _ClassVar[int]
    label_names: _containers.RepeatedScalarFieldContainer[str]
    split: Split
    test_fraction: float
    seed: int
    limit: int
    ids: _containers.RepeatedScalarFieldContainer[int]
    skip_data: bool
    def __init__(self, label_names: _Optional[_Iterable[str]] = ..., split: _Optional[_Union[Split, str]] = ..., test_fraction: _Optional[float] = ..., seed: _Optional[int] = ..., limit: _Optional[int] = ..., ids: _Optional[_Iterable[int]] = ..., skip_data: _Optional[bool] = ...) -> None: ...

class ReadImagesResponse(_message.Message):
    __slots__ = ("id", "label", "sha256", "data", "format", "width", "height", "split")
    ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    id: int
    label: str
    sha256: str
    data: bytes
    format: str
    width: int
    height: int
    split: Split
    def __init__(self, id: _Optional[int] = ..., label: _Optional[str] = ..., sha256: _Optional[str] = ..., data: _Optional[bytes] = ..., format: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., split: _Optional[_Union[Split, str]] = ...) -> None: ...

class ListImagesRequest(_message.Message):
    __slots__ = ("label_names", "split", "test_fraction", "seed", "limit", "ids", "page_size", "page_token")
    LABEL_NAMES_FIELD_NUMBER: _ClassVar[int]
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    TEST_FRACTION_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    label_names: _containers.RepeatedScalarFieldContainer[str]
    split: Split
    test_fraction: float
    seed: int
    limit: int
    ids: _containers.RepeatedScalarFieldContainer[int]
    page_size: int
    page_token: str
    def __init__(self, label_names: _Optional[_Iterable[str]] = ..., split: _Optional[_Union[Split, str]] = ..., test_fraction: _Optional[float] = ..., seed: _Optional[int] = ..., limit: _Optional[int] = ..., ids: _Optional[_Iterable[int]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListImagesResponse(_message.Message):
    __slots__ = ("ids", "labels", "label_names", "sha256", "splits", "next_page_token")
    IDS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    LABEL_NAMES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SPLITS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[int]
    labels: _containers.RepeatedScalarFieldContainer[int]
    label_names: _containers.RepeatedScalarFieldContainer[str]
    sha256: bytes
    splits: _containers.RepeatedScalarFieldContainer[Split]
    next_page_token: str
    def __init__(self, ids: _Optional[_Iterable[int]] = ..., labels: _Optional[_Iterable[int]] = ..., label_names: _Optional[_Iterable[str]] = ..., sha256: _Optional[bytes] = ..., splits: _Optional[_Iterable[_Union[Split, str]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteImagesRequest(_message.Message):
    __slots__ = ("label_names",)
    LABEL_NAMES_FIELD_NUMBER: _ClassVar[int]
    label_names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, label_names: _Optional[_Iterable[str]] = ...) -> None: ...

class DeleteImagesResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: int
    def __init__(self, deleted: _Optional[int] = ...) -> None: ...
