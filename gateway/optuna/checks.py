"""What a request of Optuna's storage protocol may hold, checked before anything is
stored: names, attribute values (JSON text), distributions, parameters, states, values,
steps and template trials. Pure: each check names the offending field.

Optuna's own storages take whatever the Optuna library sends. Here the sender is any
client on the network, so every text is bounded and parsed once, and a parameter's
value must lie in its distribution (else its external form, which the attempt shows,
could not be made).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    check_distribution_compatibility,
    json_to_distribution,
)
from optuna.storages._grpc.auto_generated import api_pb2

from gateway import names
from gateway.store.optuna import TrialTemplate
from metalearn import errors
from metalearn.errors import Violations

# A study's name leaves room for "-<number>" of its trials' attempts: ten digits.
MAX_STUDY_NAME = names.MAX_NAME - 11
# Optuna's RDB storage keeps keys and parameter names in 512 characters.
MAX_KEY_CHARS = 512
MAX_VALUE_BYTES = 256 * 1024
MAX_DISTRIBUTION_BYTES = 64 * 1024
# Objectives of one study (Optuna's multi-objective samplers handle a handful).
MAX_DIRECTIONS = 32
MAX_TEMPLATE_ENTRIES = 10_000
# Optuna's protocol carries times as naive text in this form (its servicer's).
TIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"

DIRECTIONS: dict[int, str] = {api_pb2.MINIMIZE: "MINIMIZE", api_pb2.MAXIMIZE: "MAXIMIZE"}
STATES: dict[int, str] = {
    api_pb2.RUNNING: "RUNNING",
    api_pb2.COMPLETE: "COMPLETE",
    api_pb2.PRUNED: "PRUNED",
    api_pb2.FAIL: "FAIL",
    api_pb2.WAITING: "WAITING",
}


def study_name(name: str) -> str:
    return names.require_name("study_name", name, MAX_STUDY_NAME)


def directions(values: Sequence[int]) -> list[str]:
    v = Violations()
    if not values:
        v.add("directions", "at least one is required")
    if len(values) > MAX_DIRECTIONS:
        v.add("directions", f"at most {MAX_DIRECTIONS}")
    for i, d in enumerate(values[:MAX_DIRECTIONS]):
        if d not in DIRECTIONS:
            v.add(f"directions[{i}]", "must be MINIMIZE or MAXIMIZE")
    v.raise_if_any()
    return [DIRECTIONS[d] for d in values]


def _key(v: Violations, field: str, key: str) -> None:
    if not key:
        v.add(field, "is required")
    elif len(key) > MAX_KEY_CHARS:
        v.add(field, f"at most {MAX_KEY_CHARS} characters")
    elif "\x00" in key:  # PostgreSQL's text cannot hold it
        v.add(field, "must not contain NUL characters")


def _json_text(v: Violations, field: str, text: str) -> None:
    if len(text.encode("utf-8", errors="replace")) > MAX_VALUE_BYTES:
        v.add(field, f"at most {MAX_VALUE_BYTES} bytes of JSON")
        return
    if "\x00" in text:
        v.add(field, "must not contain NUL characters")
        return
    try:
        json.loads(text)
    except ValueError:
        v.add(field, "must be JSON text (what json.dumps writes)")


def attribute(key: str, value: str) -> None:
    v = Violations()
    _key(v, "key", key)
    _json_text(v, "value", value)
    v.raise_if_any()


@functools.lru_cache(maxsize=4096)
def _parsed(text: str) -> BaseDistribution:
    return json_to_distribution(text)


def distribution(field: str, text: str) -> BaseDistribution:
    """The distribution `text` describes (Optuna's JSON of one); InvalidArgument."""
    if len(text) > MAX_DISTRIBUTION_BYTES:
        raise errors.InvalidArgument.one(field, f"at most {MAX_DISTRIBUTION_BYTES} characters")
    if "\x00" in text:
        raise errors.InvalidArgument.one(field, "must not contain NUL characters")
    try:
        return _parsed(text)
    except Exception as err:  # hostile JSON fails in many ways, all of them the client's
        raise errors.InvalidArgument.one(
            field, f"is not an Optuna distribution's JSON ({type(err).__name__})"
        ) from None


def external(field: str, dist: BaseDistribution, internal: float) -> Any:
    """The value an objective sees of `internal`, as JSON shows it. Optuna's storages keep
    a value outside its distribution's range (its own tests set one), so only what has no
    external form is refused: a non-finite number, or a choice's index that is not one."""
    if not math.isfinite(internal):
        raise errors.InvalidArgument.one(field, "must be finite")
    if isinstance(dist, CategoricalDistribution) and not (
        internal.is_integer() and 0 <= internal < len(dist.choices)
    ):
        raise errors.InvalidArgument.one(
            field, f"{internal!r} is not the index of one of {len(dist.choices)} choices"
        )
    return shown(dist.to_external_repr(internal))


def shown(value: Any) -> Any:
    """A parameter's value as JSON can show it: a choice of infinity or NaN as its text,
    a NUL (which PostgreSQL's text cannot hold) as U+FFFD. Only for people to read: the
    value itself is its internal form and its distribution."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, str) and "\x00" in value:
        return value.replace("\x00", "\ufffd")
    return value


def is_compatible(earlier: str, dist: BaseDistribution) -> bool:
    try:
        check_distribution_compatibility(_parsed(earlier), dist)
    except ValueError:
        return False
    return True


def compatible(field: str, earlier: str, dist: BaseDistribution) -> None:
    """Another trial gave the same parameter `earlier`: the two must be compatible, as
    Optuna's storages require."""
    try:
        check_distribution_compatibility(_parsed(earlier), dist)
    except ValueError as err:
        raise errors.InvalidArgument.one(field, str(err)) from None


def parameter(name: str) -> None:
    v = Violations()
    _key(v, "param_name", name)
    v.raise_if_any()


def state(value: int, field: str = "state") -> str:
    if value not in STATES:
        raise errors.InvalidArgument.one(field, "must be a trial state")
    return STATES[value]


def values(found: Sequence[float], field: str = "values") -> list[float] | None:
    if len(found) > MAX_DIRECTIONS:
        raise errors.InvalidArgument.one(field, f"at most {MAX_DIRECTIONS}")
    return list(found) if found else None


def step(value: int, field: str = "step") -> int:
    if value < 0:
        raise errors.InvalidArgument.one(field, "must be 0 or more")
    return value


# Intermediate values one WriteTrial call may carry.
MAX_WRITE_VALUES = 10_000


def intermediate(steps: Sequence[int], values: Sequence[float]) -> dict[int, float]:
    """A WriteTrial's intermediate values by step (a step given twice: its last value)."""
    v = Violations()
    if len(steps) != len(values):
        v.add("intermediate_values", f"{len(values)} values for {len(steps)} steps")
    if len(steps) > MAX_WRITE_VALUES:
        v.add("steps", f"at most {MAX_WRITE_VALUES} a call")
    v.raise_if_any()
    for i, found in enumerate(steps):
        if found < 0:
            v.add(f"steps[{i}]", "must be 0 or more")
    v.raise_if_any()
    return dict(zip(steps, values, strict=True))


def parse_time(field: str, text: str) -> dt.datetime | None:
    """A naive time of Optuna's protocol, as this machine's local time."""
    if not text:
        return None
    try:
        return dt.datetime.strptime(text, TIME_FORMAT).astimezone()
    except ValueError:
        raise errors.InvalidArgument.one(field, f"must be a time as {TIME_FORMAT}") from None


def format_time(at: dt.datetime | None) -> str:
    return at.astimezone().strftime(TIME_FORMAT) if at is not None else ""


# A trial brought in from another Optuna storage names where it came from in this system
# attribute (`metalearn import optuna`): its attempt's origin says so in turn.
ORIGIN_ATTR = "metalearn.origin"
_ORIGIN_FIELDS = {"system": 32, "id": 256, "uri": 1024, "group": 256}


def origin(system_attrs: Mapping[str, str]) -> dict[str, str] | None:
    """The origin a template trial declares (None: none); InvalidArgument if malformed."""
    text = system_attrs.get(ORIGIN_ATTR)
    if text is None:
        return None
    field = f"template_trial.system_attributes[{ORIGIN_ATTR}]"
    found = json.loads(text)  # checked as JSON text already
    if not isinstance(found, dict) or not all(
        isinstance(found.get(k, ""), str) and len(found.get(k, "")) <= most
        for k, most in _ORIGIN_FIELDS.items()
    ):
        raise errors.InvalidArgument.one(
            field, "an object of strings: system (32), id (256), uri (1024), group (256)"
        )
    if "\x00" in "".join(str(v) for v in found.values()):
        raise errors.InvalidArgument.one(field, "must not contain NUL characters")
    return {k: str(found.get(k, "")) for k in _ORIGIN_FIELDS}


def _entries(v: Violations, field: str, found: Mapping[Any, Any]) -> None:
    if len(found) > MAX_TEMPLATE_ENTRIES:
        v.add(field, f"at most {MAX_TEMPLATE_ENTRIES}")


def template(trial: api_pb2.Trial) -> TrialTemplate:
    """A whole trial sent to be stored as it is (enqueued, copied, added)."""
    prefix = "template_trial"
    v = Violations()
    found_state = state(trial.state, f"{prefix}.state")
    for name, found in (
        ("params", trial.params),
        ("distributions", trial.distributions),
        ("user_attributes", trial.user_attributes),
        ("system_attributes", trial.system_attributes),
        ("intermediate_values", trial.intermediate_values),
    ):
        _entries(v, f"{prefix}.{name}", found)
    v.raise_if_any()
    for kind in ("user_attributes", "system_attributes"):
        attrs: Mapping[str, str] = getattr(trial, kind)
        for key, text in attrs.items():
            _key(v, f"{prefix}.{kind}[{key[:64]}]", key)
            _json_text(v, f"{prefix}.{kind}[{key[:64]}]", text)
    for step_, _ in trial.intermediate_values.items():
        if step_ < 0:
            v.add(f"{prefix}.intermediate_values[{step_}]", "a step must be 0 or more")
    for name in trial.params:
        _key(v, f"{prefix}.params[{name[:64]}]", name)
        if name not in trial.distributions:
            v.add(f"{prefix}.distributions[{name[:64]}]", "every parameter needs its distribution")
    v.raise_if_any()
    params: dict[str, Any] = {}
    for name, internal in trial.params.items():
        field = f"{prefix}.params[{name[:64]}]"
        dist = distribution(f"{prefix}.distributions[{name[:64]}]", trial.distributions[name])
        params[name] = external(field, dist, internal)
    declared = origin(trial.system_attributes)
    return TrialTemplate(
        origin=declared,
        state=found_state,
        values=values(trial.values, f"{prefix}.values"),
        started_at=parse_time(f"{prefix}.datetime_start", trial.datetime_start),
        completed_at=parse_time(f"{prefix}.datetime_complete", trial.datetime_complete),
        params=params,
        internal=dict(trial.params),
        distributions={k: trial.distributions[k] for k in trial.params},
        user_attrs=dict(trial.user_attributes),
        system_attrs=dict(trial.system_attributes),
        intermediate=dict(trial.intermediate_values),
    )
