"""Conversions between Attempt protos and the store's rows and documents."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from google.protobuf import field_mask_pb2, json_format

from gateway.attempts.validation import MAX_TAGS, WRITABLE_FIELDS, tag_key
from gateway.store import AttemptRecord, EpochRecord, Rewrite, Stored
from metalearn import errors
from metalearn.v1 import attempt_pb2


def status_name(status: int) -> str:
    """ATTEMPT_STATUS_TRAINING -> "TRAINING" (the store's spelling)."""
    return attempt_pb2.AttemptStatus.Name(status).removeprefix("ATTEMPT_STATUS_")  # type: ignore[arg-type]


def status_value(name: str) -> Any:
    """ "TRAINING" -> ATTEMPT_STATUS_TRAINING."""
    return attempt_pb2.AttemptStatus.Value("ATTEMPT_STATUS_" + name)


def stored_forms(spec: attempt_pb2.Attempt) -> tuple[bytes, dict[str, Any]]:
    """The two stored forms of an attempt's document fields: serialized, and as JSON.

    The document fields are those a client writes and the results; the rest of an
    Attempt lives in columns and epoch rows.
    """
    doc = json_format.MessageToDict(spec, preserving_proto_field_name=True)
    return spec.SerializeToString(), doc


def image_ops_json(ops: Iterable[attempt_pb2.ImageOp]) -> list[dict[str, Any]]:
    """Image ops as a stored document holds them (`stored_forms`): what task keys are
    computed from, so a task named by a request matches its attempts' documents."""
    return [json_format.MessageToDict(op, preserving_proto_field_name=True) for op in ops]


def epoch_record(e: attempt_pb2.EpochMetrics) -> EpochRecord:
    """An epoch's metrics as the store keeps them (a trainer's report, or an import's)."""
    return EpochRecord(
        e.epoch, e.loss, e.learning_rate, e.seconds, e.samples_per_second, e.val_loss,
        e.val_accuracy,
    )  # fmt: skip


def new_spec(attempt: attempt_pb2.Attempt) -> attempt_pb2.Attempt:
    """The client-writable fields of `attempt`, the document of a new attempt."""
    spec = attempt_pb2.Attempt()
    field_mask_pb2.FieldMask(paths=WRITABLE_FIELDS).MergeMessage(attempt, spec)
    return spec


def spec_of(stored: Stored) -> attempt_pb2.Attempt:
    """The document fields of a stored attempt."""
    spec = attempt_pb2.Attempt()
    if stored.spec is not None:
        spec.ParseFromString(stored.spec)
    elif stored.doc is not None:
        # A row from before `spec` existed. Unknown keys are a newer schema's fields:
        # ignore them rather than fail a read.
        json_format.ParseDict(stored.doc, spec, ignore_unknown_fields=True)
    return spec


def replacing(source: attempt_pb2.Attempt, paths: tuple[str, ...]) -> Rewrite:
    """A store rewrite that replaces the named top-level fields with those of `source`,
    and sets (or, when `source` lacks it, removes) each tag a `tags.KEY` path names.

    The store runs it under the row's lock: one key's change never loses another's."""
    keys = [key for key in map(tag_key, paths) if key is not None]
    mask = field_mask_pb2.FieldMask(paths=[p for p in paths if tag_key(p) is None])

    def change(spec: attempt_pb2.Attempt) -> None:
        if mask.paths:
            mask.MergeMessage(source, spec, replace_message_field=True, replace_repeated_field=True)
        for key in keys:
            if key in source.tags:
                spec.tags[key] = source.tags[key]
            elif key in spec.tags:
                del spec.tags[key]
        if keys and len(spec.tags) > MAX_TAGS:
            raise errors.InvalidArgument.one("attempt.tags", f"at most {MAX_TAGS} tags")

    return rewrite_with(change)


def attempt_from_record(record: AttemptRecord) -> attempt_pb2.Attempt:
    """The API's view of a stored attempt."""
    attempt = spec_of(record.stored)
    attempt.id = record.id
    attempt.name = record.name
    attempt.status = status_value(record.status)
    attempt.create_time.FromDatetime(record.created_at)
    attempt.update_time.FromDatetime(record.updated_at)
    attempt.current_epoch = record.current_epoch
    attempt.restart_count = record.restart_count
    attempt.trainer = record.trainer
    attempt.error = record.error
    attempt.owner = record.owner
    # Derived, never stored: as the `provenance` column is from the document's flag.
    if attempt.imported:
        attempt.provenance = attempt_pb2.PROVENANCE_IMPORTED
    elif attempt.HasField("reported"):
        attempt.provenance = attempt_pb2.PROVENANCE_REPORTED
    else:
        attempt.provenance = attempt_pb2.PROVENANCE_TRAINED
    # Encoded repeated fields from PostgreSQL: merging appends them, parsed natively.
    attempt.MergeFromString(record.losses_wire)
    if record.epochs_wire:
        attempt.MergeFromString(record.epochs_wire)
    if record.prognosis_wire:
        attempt.prognosis.MergeFromString(record.prognosis_wire)
    return attempt


# Results of a training run, forgotten when it trains again.
_RESULTS = (
    "accuracy", "test_result", "model_artifact", "dataset", "imported", "trial", "reported"
)  # fmt: skip


def rewrite_with(
    change: Callable[[attempt_pb2.Attempt], None],
) -> Rewrite:
    """A store rewrite that applies `change` to the stored document."""

    def rewrite(stored: Stored) -> tuple[bytes, dict[str, Any]]:
        spec = spec_of(stored)
        change(spec)
        return stored_forms(spec)

    return rewrite


def for_training(
    command: attempt_pb2.TrainCommand,
) -> Rewrite:
    """Train's rewrite: the new command (and its epoch count), the old results gone."""

    def change(spec: attempt_pb2.Attempt) -> None:
        spec.training_commands.CopyFrom(command)
        spec.n_epoch = command.n_epoch
        for name in _RESULTS:
            spec.ClearField(name)  # type: ignore[arg-type]

    return rewrite_with(change)


def for_testing(
    command: attempt_pb2.TestCommand,
) -> Rewrite:
    """Test's rewrite when a command is given: it becomes the attempt's testing_commands."""
    return rewrite_with(lambda spec: spec.testing_commands.CopyFrom(command))


def trained(
    weights: attempt_pb2.ArtifactInfo, dataset: attempt_pb2.DatasetFingerprint | None
) -> Rewrite:
    """A finished training run's results."""

    def change(spec: attempt_pb2.Attempt) -> None:
        spec.model_artifact.CopyFrom(weights)
        if dataset is not None:
            spec.dataset.CopyFrom(dataset)

    return rewrite_with(change)


def tested(result: attempt_pb2.TestResult) -> Rewrite:
    """A finished test's results: `accuracy` is the prototype's field."""

    def change(spec: attempt_pb2.Attempt) -> None:
        spec.test_result.CopyFrom(result)
        spec.accuracy = result.accuracy

    return rewrite_with(change)
