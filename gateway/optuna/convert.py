"""Optuna's protocol messages from stored rows, and the attempt each trial is."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format
from optuna.storages._grpc.auto_generated import api_pb2

from gateway.attempts import convert
from gateway.optuna.checks import format_time
from gateway.store.optuna import INTERMEDIATE, OptunaStudyRow, OptunaTrialRow
from metalearn.documents import integral
from metalearn.v1 import attempt_pb2
from metalearn.v1 import study_service_pb2 as spb

# What reports an Optuna client's trials, as a reported run's `client` says.
CLIENT = "optuna"
_STATES = {
    "RUNNING": api_pb2.RUNNING,
    "COMPLETE": api_pb2.COMPLETE,
    "PRUNED": api_pb2.PRUNED,
    "FAIL": api_pb2.FAIL,
    "WAITING": api_pb2.WAITING,
}
_DIRECTIONS = {"MINIMIZE": api_pb2.MINIMIZE, "MAXIMIZE": api_pb2.MAXIMIZE}
STUDY_DIRECTIONS = {
    "MINIMIZE": spb.STUDY_DIRECTION_MINIMIZE,
    "MAXIMIZE": spb.STUDY_DIRECTION_MAXIMIZE,
}


def study_spec(name: str, directions: list[str]) -> bytes:
    """The stored spec of a study an Optuna client made: its name and directions."""
    study = spb.Study(name=name)
    study.optuna.directions.extend(STUDY_DIRECTIONS[d] for d in directions)
    return study.SerializeToString()


def directions(row: OptunaStudyRow) -> list[api_pb2.StudyDirection.ValueType]:
    return [_DIRECTIONS[d] for d in row.directions]


def study(row: OptunaStudyRow) -> api_pb2.Study:
    return api_pb2.Study(
        study_id=row.id,
        study_name=row.name,
        directions=directions(row),
        user_attributes=row.user_attrs,
        system_attributes=row.system_attrs,
    )


def trial(row: OptunaTrialRow) -> api_pb2.Trial:
    return api_pb2.Trial(
        trial_id=row.id,
        number=row.number,
        state=_STATES[row.state],
        values=row.values or [],
        datetime_start=format_time(row.started_at),
        datetime_complete=format_time(row.completed_at),
        params=row.internal,
        distributions=row.distributions,
        user_attributes=row.user_attrs,
        system_attributes=row.system_attrs,
        intermediate_values=dict(zip(row.steps, row.intermediate, strict=True)),
    )


def attempt_doc(
    study_id: int,
    study: str,
    number: int,
    params: dict[str, Any] | None = None,
    values: list[float] | None = None,
    origin: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The JSON document of trial `number`'s attempt: a reported run of client "optuna"
    whose origin is the trial, with its parameters (by name) and values once known."""
    spec = attempt_pb2.Attempt()
    spec.tags.update({"study": study, "trial": str(number)})
    spec.trial.study, spec.trial.number = study, number
    spec.reported.client = CLIENT
    spec.reported.metric_keys.append(INTERMEDIATE)
    found = spec.reported.origin
    if origin is not None:  # brought in from another storage: as it says
        found.system, found.id = origin["system"] or CLIENT, origin["id"]
        found.uri, found.group = origin["uri"], origin["group"]
    else:
        found.system, found.id, found.group = CLIENT, f"{study_id}/{number}", study
    if params:
        shown = integral(params)
        json_format.ParseDict(shown, spec.trial.params)
        json_format.ParseDict(shown, spec.reported.params)
    if values:
        spec.trial.values.extend(values)  # JSON writes a non-finite one as "Infinity"...
    return convert.stored_forms(spec)[1]
