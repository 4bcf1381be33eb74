"""A study's search space: parameters addressed by paths into the base command.

A path (`optimizer.lr`, `model.layers[3].out_channels`, `transform.RandomRotation.degrees`)
is checked against the base command once, at CreateStudy: every step but the last must
exist there. A trial's command is the base command with each sampled value set at its
path, then checked exactly as `Train` checks a command.

Choices are any JSON values. Optuna holds them as their canonical JSON text, which keeps
`1`, `1.0` and `true` apart (Optuna would treat them as one choice) and lets a whole
object be one choice.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from metalearn.documents import integral
from metalearn.errors import Violations
from metalearn.structs import plain_value
from metalearn.v1 import attempt_pb2, study_service_pb2

MAX_PARAMETERS = 32
MAX_CHOICES = 100
MAX_STEPS = 1_000_000
_PATH = re.compile(
    r"[A-Za-z_][A-Za-z0-9_]*(?:\[\d{1,4}\])*(?:\.[A-Za-z_][A-Za-z0-9_]*(?:\[\d{1,4}\])*)*"
)
_STEP = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]")
_INT_BOUND = 2**53  # beyond it a JSON number is no longer an exact integer

Step = str | int


def _json_number(value: Any) -> bool:
    """No NaN or infinity anywhere in it (JSON has neither)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_json_number(v) for v in value.values())
    if isinstance(value, list):
        return all(_json_number(v) for v in value)
    return True


def canonical(value: Any) -> str:
    """A choice as Optuna holds it: its canonical JSON text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class Parameter:
    """One dimension of the search."""

    path: str
    steps: tuple[Step, ...]
    distribution: BaseDistribution

    def value(self, internal: Any) -> Any:
        """The JSON value set in the command for Optuna's value."""
        if isinstance(self.distribution, CategoricalDistribution):
            return json.loads(internal)
        return internal


def _steps(path: str) -> tuple[Step, ...]:
    return tuple(key if key else int(index) for key, index in _STEP.findall(path))


def _parent(document: dict[str, Any], steps: Sequence[Step]) -> tuple[Any, str | None]:
    """The container that `steps[-1]` is set in, or None and why not."""
    node: Any = document
    walked = ""
    for step in steps[:-1]:
        walked += f"[{step}]" if isinstance(step, int) else (f".{step}" if walked else step)
        if isinstance(step, int):
            if not isinstance(node, list) or step >= len(node):
                return None, f"{walked} is not in the base command"
            node = node[step]
        else:
            if not isinstance(node, dict) or step not in node:
                return None, f"{walked} is not in the base command"
            node = node[step]
    last = steps[-1]
    if isinstance(last, int) and (not isinstance(node, list) or last >= len(node)):
        return None, "the index is past the end of the base command's list"
    if isinstance(last, str) and not isinstance(node, dict):
        return None, "its parent in the base command is not an object"
    return node, None


def apply(
    base: dict[str, Any], values: dict[str, Any], params: Sequence[Parameter]
) -> dict[str, Any]:
    """The base command (as JSON) with each parameter's value set at its path.

    Only the objects and lists on a path are copied; the rest, and the values, are
    shared with `base` and `values`: read the document, never change it. (A deep copy
    of a 256-layer command for each value checked at CreateStudy was a third of its
    time.)"""
    document = dict(base)
    for parameter in params:
        node: Any = document
        for step in parameter.steps[:-1]:
            inner = node[step]
            inner = list(inner) if isinstance(inner, list) else dict(inner)
            node[step] = inner
            node = inner
        node[parameter.steps[-1]] = values[parameter.path]
    return document


def command_json(command: attempt_pb2.TrainCommand) -> dict[str, Any]:
    """A command as JSON with the prototype's field names."""
    document: dict[str, Any] = integral(
        json_format.MessageToDict(command, preserving_proto_field_name=True)
    )
    return document


def _finite(v: Violations, field: str, *numbers: float) -> bool:
    if all(math.isfinite(x) for x in numbers):
        return True
    v.add(field, "bounds and step must be finite numbers")
    return False


def _distribution(
    v: Violations, field: str, parameter: study_service_pb2.SearchParameter
) -> BaseDistribution | None:
    kind = parameter.WhichOneof("kind")
    if kind == "float":
        r = parameter.float
        if not _finite(v, f"{field}.float", r.low, r.high, r.step):
            return None
        if r.low > r.high:
            v.add(f"{field}.float.high", f"must be at least low ({r.low})")
        elif r.log and r.low <= 0:
            v.add(f"{field}.float.low", "must be above 0 on a log scale")
        elif r.log and r.step:
            v.add(f"{field}.float.step", "a log scale has no step")
        elif r.step < 0:
            v.add(f"{field}.float.step", "must not be negative")
        elif r.step and (r.high - r.low) / r.step > MAX_STEPS:
            v.add(f"{field}.float.step", f"at most {MAX_STEPS:,} steps from low to high")
        elif r.step and not math.isclose(
            round((r.high - r.low) / r.step) * r.step, r.high - r.low, rel_tol=1e-9, abs_tol=1e-12
        ):
            v.add(f"{field}.float.step", f"must divide high - low ({r.high - r.low})")
        else:
            return FloatDistribution(r.low, r.high, log=r.log, step=r.step or None)
        return None
    if kind == "int":
        i = parameter.int
        step = i.step or 1
        if abs(i.low) > _INT_BOUND or abs(i.high) > _INT_BOUND:
            v.add(f"{field}.int", "bounds beyond +-2^53 are not exact in JSON")
        elif i.low > i.high:
            v.add(f"{field}.int.high", f"must be at least low ({i.low})")
        elif step < 0:
            v.add(f"{field}.int.step", "must not be negative")
        elif i.log and i.low < 1:
            v.add(f"{field}.int.low", "must be at least 1 on a log scale")
        elif i.log and step != 1:
            v.add(f"{field}.int.step", "a log scale has step 1")
        elif (i.high - i.low) % step:
            v.add(f"{field}.int.step", f"must divide high - low ({i.high - i.low})")
        else:
            return IntDistribution(i.low, i.high, log=i.log, step=step)
        return None
    if kind == "categorical":
        values = [integral(plain_value(value)) for value in parameter.categorical.values]
        if not all(_json_number(value) for value in values):
            v.add(f"{field}.categorical.values", "choices are JSON values: no NaN or infinity")
            return None
        if not values:
            v.add(f"{field}.categorical.values", "give at least one choice")
            return None
        if len(values) > MAX_CHOICES:
            v.add(f"{field}.categorical.values", f"at most {MAX_CHOICES} choices")
            return None
        texts = [canonical(value) for value in values]
        if len(set(texts)) != len(texts):
            v.add(f"{field}.categorical.values", "each choice once")
            return None
        return CategoricalDistribution(texts)
    v.add(field, "give a float, int or categorical range")
    return None


def parse(
    v: Violations,
    field: str,
    base: dict[str, Any],
    space: Sequence[study_service_pb2.SearchParameter],
) -> list[Parameter]:
    """The search space, each path checked against the base command (as JSON); every
    problem is added to `v` under `field[i]`."""
    if not space:
        v.add(field, "give at least one parameter")
    if len(space) > MAX_PARAMETERS:
        v.add(field, f"at most {MAX_PARAMETERS} parameters")
        return []
    found: list[Parameter] = []
    seen: set[str] = set()
    for i, parameter in enumerate(space):
        where = f"{field}[{i}]"
        path = parameter.path
        if not _PATH.fullmatch(path):
            v.add(f"{where}.path", "a path such as optimizer.lr or model.layers[3].out_channels")
            continue
        if path in seen:
            v.add(f"{where}.path", f"{path!r} is given twice")
            continue
        seen.add(path)
        steps = _steps(path)
        _, problem = _parent(base, steps)
        if problem:
            v.add(f"{where}.path", f"{path}: {problem}")
            continue
        try:
            distribution = _distribution(v, where, parameter)
        except (ValueError, ArithmeticError) as err:
            # Optuna's own checks, for what ours let through: said as they are.
            v.add(where, f"Optuna refuses this range: {str(err)[:200]}")
            continue
        if distribution is not None:
            found.append(Parameter(path, steps, distribution))
    overlapping = [
        (a.path, b.path)
        for a in found
        for b in found
        if a is not b and (b.path.startswith(a.path + ".") or b.path.startswith(a.path + "["))
    ]
    for outer, inner in overlapping:
        v.add(field, f"{inner!r} lies inside {outer!r}: search one or the other")
    return found


def corners(params: Sequence[Parameter]) -> list[tuple[int, dict[str, Any]]]:
    """For each parameter, each value worth checking before any trial runs (its bounds,
    every choice), with the other parameters at their first value: (parameter index,
    values)."""

    def first(p: Parameter) -> Any:
        d = p.distribution
        return p.value(d.choices[0]) if isinstance(d, CategoricalDistribution) else d.low  # type: ignore[attr-defined]

    base = {p.path: first(p) for p in params}
    found: list[tuple[int, dict[str, Any]]] = []
    for i, p in enumerate(params):
        d = p.distribution
        if isinstance(d, CategoricalDistribution):
            candidates = [p.value(c) for c in d.choices]
        elif isinstance(d, FloatDistribution):
            # A value inside too: a whole-number range of a float would pass at its bounds
            # and fail in between (a float for an int field).
            inside = d.low + d.step if d.step else (d.low + d.high) / 2
            candidates = [d.low, min(inside, d.high), d.high]
        else:
            candidates = [d.low, d.high]  # type: ignore[attr-defined]
        for value in candidates:
            found.append((i, {**base, p.path: value}))
    return found


def internal_value(parameter: Parameter, value: Any) -> Any | None:
    """A JSON value found in some command, as Optuna holds it for this parameter, or None
    when the parameter's range does not contain it (a warm start's past trial)."""
    d = parameter.distribution
    value = integral(value)
    if isinstance(d, CategoricalDistribution):
        text = canonical(value)
        return text if text in d.choices else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(d, IntDistribution):
        if not isinstance(value, int) or not d.low <= value <= d.high:
            return None
        return value if (value - d.low) % d.step == 0 else None
    if isinstance(d, FloatDistribution):
        number = float(value)
        if not math.isfinite(number) or not d.low <= number <= d.high:
            return None
        if d.step is not None:
            steps = (number - d.low) / d.step
            if not math.isclose(steps, round(steps), abs_tol=1e-9):
                return None
        return number
    return None
