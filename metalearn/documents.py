"""The prototype's JSON document format, read into and written from `Attempt` protos.

The proto's field names are the prototype's, so most of a prototype document parses
as it is; this module adds what JSON mapping alone cannot: the prototype's status
strings ("Complete") and its integral numbers written back as integers.
"""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import json_format

from metalearn.v1 import attempt_pb2

_PROTOTYPE_STATUS = {
    "incomplete": "ATTEMPT_STATUS_INCOMPLETE",
    "queued": "ATTEMPT_STATUS_QUEUED",
    "training": "ATTEMPT_STATUS_TRAINING",
    "trained": "ATTEMPT_STATUS_TRAINED",
    "testing": "ATTEMPT_STATUS_TESTING",
    "complete": "ATTEMPT_STATUS_COMPLETE",
    "failed": "ATTEMPT_STATUS_FAILED",
    "cancelled": "ATTEMPT_STATUS_CANCELLED",
}


class DocumentError(ValueError):
    """A document that is not an attempt; the message says where."""


def attempt_from_document(doc: dict[str, Any]) -> attempt_pb2.Attempt:
    """Parses a prototype (or metalearn) attempt document."""
    if not isinstance(doc, dict):
        raise DocumentError("an attempt document is a JSON object")
    doc = dict(doc)
    status = doc.get("status")
    if isinstance(status, str) and status.lower() in _PROTOTYPE_STATUS:
        doc["status"] = _PROTOTYPE_STATUS[status.lower()]
    try:
        return json_format.ParseDict(doc, attempt_pb2.Attempt())
    except json_format.ParseError as err:
        raise DocumentError(str(err)) from err


def attempt_from_json(text: str) -> attempt_pb2.Attempt:
    """Parses the JSON text of an attempt document."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise DocumentError(f"not JSON: {err}") from err
    return attempt_from_document(doc)


def _integral(value: Any) -> Any:
    """3.0 -> 3 throughout: JSON Struct numbers are doubles, the prototype wrote integers."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral(v) for v in value]
    return value


def attempt_to_document(attempt: attempt_pb2.Attempt) -> dict[str, Any]:
    """The prototype-style document of an attempt: its field names, every field present."""
    doc = json_format.MessageToDict(
        attempt, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    for command in ("training_commands", "testing_commands"):
        if command in doc:
            doc[command] = _integral(doc[command])
    # Proto JSON writes 64-bit integers as strings; the prototype wrote numbers.
    doc["id"] = int(doc["id"])
    if "testing_commands" in doc:
        doc["testing_commands"]["ids"] = [int(i) for i in doc["testing_commands"].get("ids", [])]
    if "training_commands" in doc:
        doc["training_commands"]["seed"] = int(doc["training_commands"].get("seed", 0))
    return doc
