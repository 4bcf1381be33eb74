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
    return parse(doc, attempt_pb2.Attempt(), "")


def parse(doc: Any, message: M, where: str) -> M:
    """`doc` parsed into `message`; a mistake is a one-line DocumentError naming the field
    as written, where it is (`where` names the root: "training_commands", or "" for a
    document) and, for a misspelt name, the nearest valid one."""
    try:
        return json_format.ParseDict(doc, message)
    except json_format.ParseError as err:
        raise DocumentError(_one_line(str(err), message.DESCRIPTOR, where)) from None


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
    """A message as JSON for scripts: proto field names, every field present, 64-bit
    integers as numbers and statuses spelt as in `STATUS_SPELLING`."""
    doc = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return _numbers(message.DESCRIPTOR, doc)


def _numbers(descriptor: Any, doc: dict[str, Any]) -> dict[str, Any]:
    """Proto JSON's 64-bit integer strings as numbers, and status names spelt ours."""
    for field in descriptor.fields:
        if field.name not in doc:
            continue
        value = doc[field.name]
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            entry = field.message_type.fields_by_name["value"]
            doc[field.name] = {k: _value(entry, v) for k, v in value.items()}
        elif isinstance(value, list):
            doc[field.name] = [_value(field, v) for v in value]
        else:
            doc[field.name] = _value(field, value)
    return doc


def _value(field: FieldDescriptor, value: Any) -> Any:
    if field.type in _INT64 and isinstance(value, str):
        return int(value)
    if field.enum_type is attempt_pb2.AttemptStatus.DESCRIPTOR and isinstance(value, str):
        return STATUS_SPELLING[attempt_pb2.AttemptStatus.Value(value)]
    message = field.message_type
    if message is not None and message.full_name not in _OPAQUE and isinstance(value, dict):
        return _numbers(message, value)
    return value


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
