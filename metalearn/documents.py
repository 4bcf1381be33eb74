"""The prototype's JSON document format, read into and written from `Attempt` protos.

The proto's field names are the prototype's, so most of a prototype document parses
as it is; this module adds what JSON mapping alone cannot: the prototype's status
strings ("Complete") and its integral numbers written back as integers.

JSON for scripts (every `--json` of the CLI) comes from `plain`: proto field names,
every field present (zero counts too), 64-bit integers as numbers (proto JSON writes
them as strings), and statuses in one spelling, the prototype's: "Complete", "Training"
(`STATUS_SPELLING`). A document also lists, under `metalearn_fields`, the fields the
prototype did not have; reading a document ignores that list.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from metalearn.v1 import attempt_pb2

M = TypeVar("M", bound=Message)

# The one spelling of a status in JSON: the prototype's ("Training", "Testing",
# "Complete"; it wrote "incomplete" in lower case, and any case is read back).
STATUS_SPELLING = {
    value: name.removeprefix("ATTEMPT_STATUS_").capitalize()
    for name, value in attempt_pb2.AttemptStatus.items()
}
_STATUS_VALUES = {
    **{spelling.lower(): value for value, spelling in STATUS_SPELLING.items()},
    **{name.lower(): value for name, value in attempt_pb2.AttemptStatus.items()},
}
# The key of a document that lists metalearn's additions to the prototype's format.
OURS_KEY = "metalearn_fields"
# What the prototype's documents held (tests/fixtures/attempt_american_dog_species_3.json).
_PROTOTYPE_FIELDS = {
    "": {"id", "name", "training_commands", "training_losses", "n_epoch",
         "testing_commands", "accuracy", "status", "limit"},
    "training_commands": {"batch_size", "criterion", "image_ops", "label_names", "model",
                          "model_name", "n_epoch", "n_labels", "optimizer",
                          "target_transform", "transform"},
    "testing_commands": {"criterion", "ids", "image_ops", "label_names", "limit", "model",
                         "model_name", "n_labels", "target_transform", "transform"},
}  # fmt: skip
_INT64 = frozenset(
    {
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED64,
    }
)
# JSON values of these are JSON already (Struct) or strings on purpose (times).
_OPAQUE = frozenset(
    {"google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue",
     "google.protobuf.Timestamp", "google.protobuf.Duration", "google.protobuf.FieldMask"}
)  # fmt: skip


class DocumentError(ValueError):
    """A document that is not an attempt; the message says where."""


def attempt_from_document(doc: dict[str, Any]) -> attempt_pb2.Attempt:
    """Parses a prototype (or metalearn) attempt document."""
    if not isinstance(doc, dict):
        raise DocumentError("an attempt document is a JSON object")
    doc = dict(doc)
    doc.pop(OURS_KEY, None)  # what we write, not a field
    status = doc.get("status")
    if isinstance(status, str):
        if status.lower() not in _STATUS_VALUES:
            spellings = list(STATUS_SPELLING.values())[1:]
            close = difflib.get_close_matches(status.capitalize(), spellings, n=1)
            hint = f'did you mean "{close[0]}"?' if close else f"one of {', '.join(spellings)}"
            raise DocumentError(f'status: unknown status "{status}"; {hint}')
        doc["status"] = _STATUS_VALUES[status.lower()]
    result = doc.get("test_result")
    if isinstance(result, dict) and isinstance(result.get("confusion_matrix"), list):
        rows = result["confusion_matrix"]
        if all(isinstance(row, list) for row in rows):  # as `plain` writes it
            doc["test_result"] = {**result, "confusion_matrix": [n for r in rows for n in r]}
    return parse(doc, attempt_pb2.Attempt(), "")


def parse(doc: Any, message: M, where: str) -> M:
    """`doc` parsed into `message`; a mistake is a one-line DocumentError naming the field
    as written, where it is (`where` names the root: "training_commands", or "" for a
    document) and, for a misspelt name, the nearest valid one."""
    try:
        return json_format.ParseDict(_enum_names(message.DESCRIPTOR, doc), message)
    except json_format.ParseError as err:
        raise DocumentError(_one_line(str(err), message.DESCRIPTOR, where)) from None


def _enum_names(descriptor: Any, doc: Any) -> Any:
    """`doc` with enums written as `plain` writes them ("Ready", "best_val_accuracy")
    given their full names, which is what proto JSON reads: what a command prints, it
    reads back."""
    if not isinstance(doc, dict) or descriptor.full_name in _OPAQUE:
        return doc
    out = dict(doc)
    for key, value in doc.items():
        field = descriptor.fields_by_name.get(key)
        if field is None:
            continue
        if field.enum_type is not None:
            values = value if isinstance(value, list) else [value]
            named = [_enum_name(field.enum_type, v) for v in values]
            out[key] = named if isinstance(value, list) else named[0]
        elif field.message_type is not None and not field.message_type.GetOptions().map_entry:
            if isinstance(value, list):
                out[key] = [_enum_names(field.message_type, v) for v in value]
            else:
                out[key] = _enum_names(field.message_type, value)
    return out


def _enum_name(enum: Any, value: Any) -> Any:
    if not isinstance(value, str):
        return value
    number = enum_value(enum, value)
    return enum.values_by_number[number].name if number is not None else value


_UNKNOWN = re.compile(r'Message type "([\w.]+)" has no field named "(.*?)" at "(.*?)"')
_FAILED = re.compile(r"Failed to parse (\w+) field: ")


def _one_line(text: str, root: Any, where: str) -> str:
    """json_format's ParseError (nested "Failed to parse" prefixes, a second line listing
    camelCase names) as one line in the document's own terms."""
    if found := _UNKNOWN.search(text):
        type_name, field, at = found.groups()
        path = ".".join(p for p in (where, at.partition(".")[2]) if p)
        names = [f.name for f in root.file.pool.FindMessageTypeByName(type_name).fields]
        close = difflib.get_close_matches(field, names, n=1, cutoff=0.6)
        hint = f'did you mean "{close[0]}"?' if close else f"known fields: {', '.join(names)}"
        return f'unknown field "{field[:64]}" in {path or "the document"}; {hint}'
    path = ".".join(p for p in (where, *_FAILED.findall(text)) if p)
    reason = _FAILED.sub("", text).splitlines()[0].rstrip(".") if text else "not valid"
    return f"{path}: {reason}" if path else reason


def attempt_from_json(text: str) -> attempt_pb2.Attempt:
    """Parses the JSON text of an attempt document."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise DocumentError(f"not JSON: {err}") from err
    return attempt_from_document(doc)


def integral(value: Any) -> Any:
    """3.0 -> 3 throughout: JSON Struct numbers are doubles, the prototype wrote integers."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [integral(v) for v in value]
    return value


def plain(message: Message) -> dict[str, Any]:
    """A message as JSON for scripts: proto field names in the proto's order, every field
    present (an unset message is null), 64-bit integers as numbers, every enum spelt as a
    status is (`enum_spelling`), maps sorted by key, a confusion matrix as rows."""
    doc = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return _tidy(message.DESCRIPTOR, doc)


def enum_spelling(enum: Any, name: str) -> str:
    """The one JSON spelling of every enum value, the prototype's of a status: the type's
    prefix dropped, capitalized ("TASK_STATE_READY" -> "Ready", "ATTEMPT_STATUS_COMPLETE"
    -> "Complete"). `enum_value` reads it back, in any case."""
    return name.removeprefix(_enum_prefix(enum)).capitalize()


def enum_value(enum: Any, text: str) -> int | None:
    """The number of an enum value written as `enum_spelling` writes it, or by its full
    name, in any case; None when it is neither."""
    wanted = text.strip().upper().replace(" ", "_")
    for value in enum.values:
        if wanted in (value.name, value.name.removeprefix(_enum_prefix(enum))):
            return int(value.number)
    return None


def _enum_prefix(enum: Any) -> str:
    """ "TaskState" -> "TASK_STATE_" (buf's rule for value names)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", enum.name).upper() + "_"


def _tidy(descriptor: Any, doc: dict[str, Any], fill: bool = True) -> dict[str, Any]:
    """`plain`'s conventions on proto JSON; `fill`: every field present (else only those
    in `doc`)."""
    out: dict[str, Any] = {}
    for field in descriptor.fields:
        if field.name not in doc:
            if not fill:
                continue
            oneof = field.containing_oneof
            if oneof is not None and not oneof.name.startswith("_"):
                continue  # a oneof holds one of its members: `{"resize": {...}}`, as written
            out[field.name] = None  # a message not set
            continue
        value = doc[field.name]
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            entry = field.message_type.fields_by_name["value"]
            out[field.name] = {k: _value(entry, value[k], fill) for k in sorted(value)}
        elif isinstance(value, list):
            out[field.name] = [_value(field, v, fill) for v in value]
        else:
            out[field.name] = _value(field, value, fill)
    if descriptor is attempt_pb2.TestResult.DESCRIPTOR and "confusion_matrix" in out:
        out["confusion_matrix"] = confusion_rows(out["confusion_matrix"])
    return out


def confusion_rows(flat: list[int]) -> list[list[int]]:
    """A row-major square matrix's rows ([true label][predicted label])."""
    side = math.isqrt(len(flat))
    if side * side != len(flat):
        return [flat] if flat else []
    return [flat[row * side : (row + 1) * side] for row in range(side)]


def _value(field: FieldDescriptor, value: Any, fill: bool = True) -> Any:
    if field.type in _INT64 and isinstance(value, str):
        return int(value)
    if field.enum_type is not None and isinstance(value, str):
        return enum_spelling(field.enum_type, value)
    message = field.message_type
    if message is not None and message.full_name not in _OPAQUE and isinstance(value, dict):
        return _tidy(message, value, fill)
    return value


def command_as_written(command: attempt_pb2.TrainCommand) -> dict[str, Any]:
    """A training command as a person writes it for `train --file`: only the fields that
    are set (no `"model_name": ""` or `"devices": 0`), in the proto's order, whole
    numbers as integers, and each layer's, optimizer's and scheduler's `name` first."""
    written = json_format.MessageToDict(command, preserving_proto_field_name=True)
    doc = integral(_tidy(command.DESCRIPTOR, written, fill=False))  # "seed": 1, not "1"
    return {f.name: _names_first(doc[f.name]) for f in command.DESCRIPTOR.fields if f.name in doc}


def _names_first(value: Any) -> Any:
    """Dicts with "name" first and the other keys sorted (a Struct keeps no order)."""
    if isinstance(value, list):
        return [_names_first(v) for v in value]
    if not isinstance(value, dict):
        return value
    keys = sorted(value, key=lambda k: (k != "name", k))
    return {k: _names_first(value[k]) for k in keys}


def metalearn_fields() -> list[str]:
    """The fields of a document the prototype did not have, as paths."""
    ours = []
    for prefix, descriptor in (
        ("", attempt_pb2.Attempt.DESCRIPTOR),
        ("training_commands", attempt_pb2.TrainCommand.DESCRIPTOR),
        ("testing_commands", attempt_pb2.TestCommand.DESCRIPTOR),
    ):
        ours += [
            f"{prefix}.{f.name}" if prefix else f.name
            for f in descriptor.fields
            if f.name not in _PROTOTYPE_FIELDS[prefix]
        ]
    return ours


def attempt_to_document(attempt: attempt_pb2.Attempt) -> dict[str, Any]:
    """The prototype-style document of an attempt: its field names, every field present,
    and under `metalearn_fields` the ones the prototype did not have."""
    doc = plain(attempt)
    for command in ("training_commands", "testing_commands"):
        if command in doc:
            doc[command] = integral(doc[command])
    doc[OURS_KEY] = metalearn_fields()
    return doc
