"""Keyword arguments of an Optuna sampler or pruner as a client sends them: a Struct, in
which every number is a double. Each name takes a known set, each of a kind; what a
kind allows is checked here and the value converted, the rest (a reduction factor of
1, an unknown QMC type) is left to Optuna's own constructor, whose refusal is said as
it is."""

from __future__ import annotations

import math
from typing import Any

from metalearn.errors import Violations

# Kinds: how a value is checked, what it is said to be, and how it is converted.
COUNT, POSITIVE, NUMBER, FLAG, TEXT = "count", "positive", "number", "flag", "text"
_WHOLE = 2**31


def _ok(kind: str, value: Any) -> bool:
    if kind in (COUNT, POSITIVE):
        low = 0 if kind == COUNT else 1
        return isinstance(value, float) and value.is_integer() and low <= value < _WHOLE
    if kind == NUMBER:
        return isinstance(value, float) and math.isfinite(value)
    if kind == FLAG:
        return isinstance(value, bool)
    return isinstance(value, str)


_SAID = {
    COUNT: "a whole number, at least 0",
    POSITIVE: "a whole number, at least 1",
    NUMBER: "a number",
    FLAG: "true or false",
    TEXT: "a string",
}


def check(
    v: Violations, field: str, name: str, args: dict[str, Any], allowed: dict[str, str]
) -> bool:
    """Names each argument `name` does not take or whose value is not of its kind;
    True when there was none."""
    ok = True
    for key, value in args.items():
        kind = allowed.get(key)
        if kind is None:
            v.add(f"{field}.args.{key[:40]}", f"{name} takes {sorted(allowed) or 'no arguments'}")
            ok = False
        elif not _ok(kind, value):
            v.add(f"{field}.args.{key}", _SAID[kind])
            ok = False
    return ok


def convert(args: dict[str, Any], allowed: dict[str, str]) -> dict[str, Any]:
    """Checked arguments as Optuna takes them (whole numbers as ints)."""
    return {k: int(v) if allowed[k] in (COUNT, POSITIVE) else v for k, v in args.items()}
