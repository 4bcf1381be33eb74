"""Conversions between Attempt protos and the store's rows and documents."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format

from gateway.store import AttemptRecord
from metalearn.v1 import attempt_pb2

# Fields of an Attempt kept in the `doc` column; the rest are columns or epoch rows.
CLIENT_DOC_FIELDS = ("training_commands", "testing_commands", "n_epoch", "limit", "tags")
RESULT_DOC_FIELDS = ("accuracy", "test_result", "model_artifact", "dataset")


def status_name(status: int) -> str:
    """ATTEMPT_STATUS_TRAINING -> "TRAINING" (the store's spelling)."""
    return attempt_pb2.AttemptStatus.Name(status).removeprefix("ATTEMPT_STATUS_")  # type: ignore[arg-type]


def status_value(name: str) -> Any:
    """ "TRAINING" -> ATTEMPT_STATUS_TRAINING."""
    return attempt_pb2.AttemptStatus.Value("ATTEMPT_STATUS_" + name)


def doc_fields(
    attempt: attempt_pb2.Attempt, paths: tuple[str, ...]
) -> tuple[dict[str, Any], list[str]]:
    """The document keys to set, and those to remove, for the named client fields."""
    full = json_format.MessageToDict(attempt, preserving_proto_field_name=True)
    set_fields = {p: full[p] for p in paths if p in full}
    clear_fields = [p for p in paths if p not in full]
    return set_fields, clear_fields


def attempt_from_record(record: AttemptRecord) -> attempt_pb2.Attempt:
    """The API's view of a stored attempt."""
    attempt = attempt_pb2.Attempt()
    # Unknown keys are a newer schema's fields: ignore them rather than fail a read.
    json_format.ParseDict(record.doc, attempt, ignore_unknown_fields=True)
    attempt.id = record.id
    attempt.name = record.name
    attempt.status = status_value(record.status)
    attempt.create_time.FromDatetime(record.created_at)
    attempt.update_time.FromDatetime(record.updated_at)
    attempt.current_epoch = record.current_epoch
    attempt.restart_count = record.restart_count
    attempt.trainer = record.trainer
    attempt.error = record.error
    attempt.training_losses.extend(record.losses)
    if record.epochs is not None:
        add = attempt.epochs.add
        for e in record.epochs:
            add(
                epoch=e.epoch,
                loss=e.loss,
                learning_rate=e.learning_rate,
                seconds=e.seconds,
                samples_per_second=e.samples_per_second,
                val_loss=e.val_loss,
                val_accuracy=e.val_accuracy,
            )
    return attempt
