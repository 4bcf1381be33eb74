"""ImportAttempts: checks a document recorded elsewhere and makes it stored history.

The prototype's documents (and `attempts get --json` of another metalearn) carry
results this gateway never saw being made: losses, accuracy, a test result, a status.
CreateAttempt ignores those (they are output only); an import keeps them, marked
`imported`, so history from before metalearn counts as history.

Every number in it gets the checks a trainer's reports get (`trainer_checks`): an
import is a claim, and a claim of accuracy 42 would top every sort and teach the curve
model nonsense. The checks are Python, a few microseconds per layer, label or epoch, so
they run in a worker process (the event loop answers other calls meanwhile) under bounds
that keep the largest allowed call to a few seconds of CPU (`_check_size`).
"""

from __future__ import annotations

import datetime as dt
import json
import math

from google.protobuf import timestamp_pb2

from gateway import workers
from gateway.attempts import convert
from gateway.attempts.validation import WRITABLE_FIELDS, check_writable, text_problem
from gateway.config import Limits
from gateway.curves.live import filter_form, of_history
from gateway.names import check_name
from gateway.store import EpochRecord, Imported
from gateway.store.attempts import epoch_columns
from gateway.trainers.checks import epoch_problems, problems_of_test_result
from metalearn.errors import Violations
from metalearn.v1 import attempt_pb2

MAX_IMPORTS = 1000
MAX_ERROR_CHARS = 4096
# What one call may hold in all its documents together. Each is walked in Python, so
# these bound a call's CPU time, measured on the worst documents that fit (largest
# layers, one-character labels, ...): about 2 s for commands at their bound, and 1 s
# for epochs at theirs (issue 25: 1,000 documents of 256-layer commands took 10 s).
# 1,000 of the prototype's documents hold 3 MB of commands and 100,000 epochs.
MAX_COMMAND_BYTES = 4 * 1024 * 1024  # training and testing commands, serialized
MAX_EPOCHS = 200_000  # epochs, or training losses where a document has no epochs
MAX_RESULT_VALUES = 1_000_000  # confusion-matrix cells and per-label accuracies
# States nothing here runs: an import of a live attempt would wait for a trainer forever.
_LIVE = {
    attempt_pb2.ATTEMPT_STATUS_QUEUED,
    attempt_pb2.ATTEMPT_STATUS_TRAINING,
    attempt_pb2.ATTEMPT_STATUS_TESTING,
}
# Where a clock may run ahead of ours, and still be believed.
_CLOCK_SKEW = dt.timedelta(minutes=5)


def _status(attempt: attempt_pb2.Attempt) -> int:
    """The status as written, or (unspecified) what the document shows it reached."""
    if attempt.status != attempt_pb2.ATTEMPT_STATUS_UNSPECIFIED:
        return attempt.status
    if attempt.HasField("test_result") or attempt.accuracy:
        return attempt_pb2.ATTEMPT_STATUS_COMPLETE
    if attempt.training_losses or attempt.epochs:
        return attempt_pb2.ATTEMPT_STATUS_TRAINED
    return attempt_pb2.ATTEMPT_STATUS_INCOMPLETE


def _same(a: float, b: float) -> bool:
    """Equal, NaN (a diverged epoch's loss) included."""
    return a == b or (math.isnan(a) and math.isnan(b))


def _epochs(
    v: Violations, field: str, attempt: attempt_pb2.Attempt, limits: Limits
) -> tuple[EpochRecord, ...]:
    """Per-epoch detail when the document has it, else one loss per epoch, in order. A
    non-finite loss is kept: a run that diverged is a fact (`trainer_checks.diverged`)."""
    if attempt.epochs:
        if len(attempt.epochs) > limits.max_epochs:
            v.add(f"{field}.epochs", f"at most {limits.max_epochs} epochs")
            return ()
        found = []
        for i, e in enumerate(attempt.epochs):
            if e.epoch != i + 1:
                v.add(f"{field}.epochs[{i}].epoch", "epochs are numbered 1, 2, ... in order")
                return ()
            problems = epoch_problems(e)
            for problem in problems:
                v.add(f"{field}.epochs[{i}].{problem.field}", problem.detail)
            if problems:
                return ()  # the first bad epoch is named; a run of them says no more
            found.append(convert.epoch_record(e))
        losses = attempt.training_losses
        if losses and (
            len(losses) != len(found)
            or not all(_same(x, e.loss) for x, e in zip(losses, found, strict=True))
        ):
            v.add(f"{field}.training_losses", "must be the losses of `epochs`, or empty")
        return tuple(found)
    if len(attempt.training_losses) > limits.max_epochs:
        v.add(f"{field}.training_losses", f"at most {limits.max_epochs} epochs")
        return ()
    return tuple(EpochRecord(i, loss) for i, loss in enumerate(attempt.training_losses, 1))


def _check_result(v: Violations, field: str, attempt: attempt_pb2.Attempt, limits: Limits) -> None:
    if not 0.0 <= attempt.accuracy <= 1.0:  # also refuses NaN
        v.add(f"{field}.accuracy", "must be between 0 and 1")
    if not attempt.HasField("test_result"):
        return
    result = attempt.test_result
    if len(result.per_label_accuracy) > limits.max_labels:
        v.add(f"{field}.test_result.per_label_accuracy", f"at most {limits.max_labels} labels")
        return
    # The labels a test reports on are the model's, those it was trained on.
    labels = list(attempt.training_commands.label_names)
    for problem in problems_of_test_result(result, labels, None):
        v.add(f"{field}.test_result.{problem.field}", problem.detail)


def _time(v: Violations, field: str, attempt: attempt_pb2.Attempt, name: str) -> dt.datetime | None:
    if not attempt.HasField(name):  # type: ignore[arg-type]
        return None
    stamp: timestamp_pb2.Timestamp = getattr(attempt, name)
    try:
        when = stamp.ToDatetime(dt.UTC)
    except (ValueError, OverflowError):
        v.add(f"{field}.{name}", "is not a valid time")
        return None
    if when > dt.datetime.now(dt.UTC) + _CLOCK_SKEW:
        v.add(f"{field}.{name}", "is in the future")
        return None
    return when


def _check_size(v: Violations, attempts: list[attempt_pb2.Attempt]) -> None:
    """The call's bounds, from sizes alone (no Python walks over its contents)."""
    command_bytes = epochs = values = 0
    for a in attempts:
        command_bytes += a.training_commands.ByteSize() + a.testing_commands.ByteSize()
        epochs += max(len(a.epochs), len(a.training_losses))
        result = a.test_result
        values += len(result.confusion_matrix) + len(result.per_label_accuracy)
    split = "split the documents into several calls"
    if command_bytes > MAX_COMMAND_BYTES:
        v.add(
            "attempts",
            f"their commands hold {command_bytes} bytes; at most {MAX_COMMAND_BYTES}"
            f" per call: {split}",
        )
    if epochs > MAX_EPOCHS:
        v.add("attempts", f"they hold {epochs} epochs; at most {MAX_EPOCHS} per call: {split}")
    if values > MAX_RESULT_VALUES:
        v.add(
            "attempts",
            f"their test results hold {values} values (confusion-matrix cells and per-label"
            f" accuracies); at most {MAX_RESULT_VALUES} per call: {split}",
        )


async def check_imports_elsewhere(
    attempts: list[attempt_pb2.Attempt], limits: Limits
) -> list[Imported]:
    """`check_imports` in a worker process (gateway/workers.py): the gateway answers
    other calls while a large import is checked. Not a thread: a thread walking 17 MB of
    documents in Python held the interpreter's lock the event loop needs at every turn
    (an honest GetAttempt's p99 150-210 ms beside it)."""
    return await workers.run(check_imports, attempts, limits)


def check_imports(attempts: list[attempt_pb2.Attempt], limits: Limits) -> list[Imported]:
    """The documents as the store keeps them; INVALID_ARGUMENT naming `attempts[i].…`
    for every mistake (none is stored unless all are good)."""
    v = Violations()
    if not attempts:
        v.add("attempts", "give at least one attempt")
    if len(attempts) > MAX_IMPORTS:
        v.add("attempts", f"at most {MAX_IMPORTS} per call")
        v.raise_if_any()
    _check_size(v, attempts)
    v.raise_if_any()
    seen: set[str] = set()
    found: list[Imported] = []
    for i, attempt in enumerate(attempts):
        field = f"attempts[{i}]"
        check_name(v, f"{field}.name", attempt.name)
        if attempt.name in seen:
            v.add(f"{field}.name", f"{attempt.name!r} is given twice")
        seen.add(attempt.name)
        check_writable(v, field, attempt, WRITABLE_FIELDS, limits)
        status = _status(attempt)
        if status in _LIVE:
            v.add(
                f"{field}.status",
                f"{convert.status_name(status)} is a live state: import history at rest"
                " (INCOMPLETE, TRAINED, COMPLETE, FAILED, CANCELLED or PRUNED)",
            )
        elif status not in attempt_pb2.AttemptStatus.values():
            v.add(f"{field}.status", f"unknown status {status}")
        epochs = _epochs(v, field, attempt, limits)
        _check_result(v, field, attempt, limits)
        if problem := text_problem(attempt.error, MAX_ERROR_CHARS):
            v.add(f"{field}.error", problem)
        created = _time(v, field, attempt, "create_time")
        updated = _time(v, field, attempt, "update_time")
        if created and updated and updated < created:
            v.add(f"{field}.update_time", "is before create_time")
        if v.items:
            continue
        spec = convert.new_spec(attempt)
        spec.accuracy = attempt.accuracy
        if attempt.HasField("test_result"):
            spec.test_result.CopyFrom(attempt.test_result)
        spec.imported = True
        stored_spec, doc = convert.stored_forms(spec)
        prognosis = (
            of_history(
                [(e.epoch, e.loss, e.val_loss, e.val_accuracy) for e in epochs],
                doc.get("training_commands") or {},
                doc.get("dataset") or {},
            )
            if epochs
            else None
        )
        found.append(
            Imported(
                name=attempt.name,
                status=convert.status_name(status),
                spec=stored_spec,
                doc=json.dumps(doc),
                epochs=epoch_columns(epochs) if epochs else None,
                current_epoch=max((e.epoch for e in epochs), default=0),
                error=attempt.error,
                created_at=created,
                updated_at=updated,
                prognosis_wire=prognosis.SerializeToString() if prognosis else None,
                prognosis=json.dumps(filter_form(prognosis)) if prognosis else None,
            )
        )
    v.raise_if_any()
    return found
