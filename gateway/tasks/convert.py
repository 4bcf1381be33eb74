"""Tasks as the API shows them (TaskService, and the task a sample made for
ReportingService.UploadTaskSample)."""

from __future__ import annotations

from google.protobuf import json_format

from gateway.store.tasks import TaskRecord
from metalearn.v1 import attempt_pb2, task_pb2

_PROVENANCES = {
    "TRAINED": attempt_pb2.PROVENANCE_TRAINED,
    "IMPORTED": attempt_pb2.PROVENANCE_IMPORTED,
    "REPORTED": attempt_pb2.PROVENANCE_REPORTED,
}
_STATES = {
    "PENDING": task_pb2.TASK_STATE_PENDING,
    "READY": task_pb2.TASK_STATE_READY,
    "FAILED": task_pb2.TASK_STATE_FAILED,
}
_SOURCES = {
    "IMAGES": task_pb2.TASK_SOURCE_IMAGES,
    "SAMPLE": task_pb2.TASK_SOURCE_SAMPLE,
    "DECLARED": task_pb2.TASK_SOURCE_DECLARED,
}


def task_proto(record: TaskRecord) -> task_pb2.Task:
    task = task_pb2.Task(
        fingerprint=record.fingerprint,
        label_names=record.label_names,
        state=_STATES[record.state],
        error=record.error,
        attempts=record.attempts,
        best_val_accuracy=record.best_val_accuracy or 0.0,
        source=_SOURCES.get(record.source, task_pb2.TASK_SOURCE_UNSPECIFIED),
        dataset=record.dataset,
        owner=record.owner,
    )
    for op in record.image_ops:
        json_format.ParseDict(op, task.image_ops.add())
    if record.profile:
        task.profile.ParseFromString(record.profile)
    task.create_time.FromDatetime(record.created_at)
    if record.profiled_at is not None:
        task.profile_time.FromDatetime(record.profiled_at)
    return task


def provenance_value(provenance: str) -> attempt_pb2.Provenance:
    """The store's spelling of a provenance ("TRAINED") as the API's enum."""
    return _PROVENANCES.get(provenance, attempt_pb2.PROVENANCE_UNSPECIFIED)
