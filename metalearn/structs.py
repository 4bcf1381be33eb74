"""`google.protobuf.Struct` values as plain Python, the form every command check reads."""

from __future__ import annotations

from typing import Any

from google.protobuf import struct_pb2


def plain_value(value: struct_pb2.Value) -> Any:
    """One Struct value as Python: dicts, lists, floats, strings, bools and None."""
    kind = value.WhichOneof("kind")
    if kind == "struct_value":
        return plain_struct(value.struct_value)
    if kind == "list_value":
        return [plain_value(item) for item in value.list_value.values]
    return None if kind in (None, "null_value") else getattr(value, kind)


def plain_struct(struct: struct_pb2.Struct) -> dict[str, Any]:
    """A Struct as Python values, as sent: unlike MessageToDict, keeps NaN and infinity
    (so they are reported as the client's mistake) and is about twice as fast."""
    return {key: plain_value(value) for key, value in struct.fields.items()}


def _integral(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral(v) for v in value]
    return value


def integral_struct(struct: struct_pb2.Struct) -> dict[str, Any]:
    """A Struct as Python values with whole numbers as integers: a Struct holds doubles
    only, and a study's integer parameter must reach a script as `--depth=4`, not 4.0."""
    found: dict[str, Any] = _integral(plain_struct(struct))
    return found
