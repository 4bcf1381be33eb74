"""What a study and its trials are, read from their rows: states, objective values, the
best trial, and the Study proto."""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format
from optuna.trial import TrialState

from gateway.store.studies import StudyRecord, TrialRecord
from metalearn.documents import integral
from metalearn.v1 import study_service_pb2 as pb

_RUNNING = frozenset({"QUEUED", "TRAINING"})
_TRAINED = frozenset({"TRAINED", "TESTING", "COMPLETE"})
_MAXIMIZE = frozenset({pb.OBJECTIVE_UNSPECIFIED, pb.OBJECTIVE_BEST_VAL_ACCURACY,
                       pb.OBJECTIVE_LAST_VAL_ACCURACY})  # fmt: skip


def trial_name(study: str, number: int) -> str:
    """A trial's attempt: `STUDY-number`."""
    return f"{study}-{number}"


def timed_out(study: pb.Study, record: StudyRecord) -> bool:
    """Its time limit has passed."""
    if not study.timeout_seconds:
        return False
    age = (dt.datetime.now(dt.UTC) - record.created_at).total_seconds()
    return age > study.timeout_seconds


def spec_of(record: StudyRecord) -> pb.Study:
    """The study as its creator asked for it."""
    return pb.Study.FromString(record.spec)


def maximize(study: pb.Study) -> bool:
    if study.HasField("optuna"):  # an Optuna client's study: its first objective
        return list(study.optuna.directions[:1]) == [pb.STUDY_DIRECTION_MAXIMIZE]
    return study.objective in _MAXIMIZE


def value(study: pb.Study, trial: TrialRecord) -> float | None:
    """The objective's value of a trial's epochs (None: no epochs, or not finite)."""
    found = {
        pb.OBJECTIVE_UNSPECIFIED: trial.best_val_accuracy,
        pb.OBJECTIVE_BEST_VAL_ACCURACY: trial.best_val_accuracy,
        pb.OBJECTIVE_LAST_VAL_ACCURACY: trial.last_val_accuracy,
        pb.OBJECTIVE_BEST_VAL_LOSS: trial.best_val_loss,
        pb.OBJECTIVE_LAST_VAL_LOSS: trial.last_val_loss,
    }.get(study.objective)
    return found if found is not None and math.isfinite(found) else None


def curve(study: pb.Study, trial: TrialRecord) -> dict[int, float]:
    """The objective's metric at each epoch (the pruner's intermediate values); NaN left
    out (Optuna's pruners skip it anyway)."""
    metric = trial.val_losses if not maximize(study) else trial.val_accuracies
    return {step: v for step, v in zip(trial.steps, metric, strict=True) if math.isfinite(v)}


@dataclass(frozen=True)
class Outcome:
    """Where a trial stands, for the sampler and for people."""

    state: TrialState
    value: float | None
    error: str


_OPTUNA_STATES = {
    "WAITING": TrialState.WAITING,
    "RUNNING": TrialState.RUNNING,
    "COMPLETE": TrialState.COMPLETE,
    "PRUNED": TrialState.PRUNED,
    "FAIL": TrialState.FAIL,
}


def outcome(study: pb.Study, trial: TrialRecord) -> Outcome:
    if trial.optuna_state is not None:  # as the Optuna client that runs it set it
        first = trial.values[0] if trial.values else None
        return Outcome(_OPTUNA_STATES[trial.optuna_state], first, "")
    if not trial.queued:
        if trial.error:
            return Outcome(TrialState.FAIL, None, trial.error)
        return Outcome(TrialState.RUNNING, None, "")  # asked, being queued
    if trial.attempt_id is None:
        return Outcome(TrialState.FAIL, None, "its attempt was deleted")
    if trial.status in _RUNNING and trial.work != "test":
        return Outcome(TrialState.RUNNING, None, "")
    if trial.status == "PRUNED":
        # Optuna's own rule: a pruned trial's value is its last intermediate value.
        points = curve(study, trial)
        last = points[max(points)] if points else None
        return Outcome(TrialState.PRUNED, last, trial.error)
    if trial.status in _TRAINED or trial.work == "test":  # trained; its test queued
        found = value(study, trial)
        if found is None:
            return Outcome(TrialState.FAIL, None, "no finite validation metric")
        return Outcome(TrialState.COMPLETE, found, "")
    return Outcome(TrialState.FAIL, None, trial.error or trial.status.lower())


_STATES = {
    # Enqueued by an Optuna client, not yet taken by one of its workers.
    TrialState.WAITING: pb.TRIAL_STATE_RUNNING,
    TrialState.RUNNING: pb.TRIAL_STATE_RUNNING,
    TrialState.COMPLETE: pb.TRIAL_STATE_COMPLETE,
    TrialState.FAIL: pb.TRIAL_STATE_FAILED,
    TrialState.PRUNED: pb.TRIAL_STATE_PRUNED,
}


_STUDY_STATES = {
    "RUNNING": pb.STUDY_STATE_RUNNING,
    "STOPPING": pb.STUDY_STATE_STOPPING,
    "DONE": pb.STUDY_STATE_DONE,
}


def best(study: pb.Study, trials: Sequence[TrialRecord]) -> TrialRecord | None:
    """The complete trial with the best value (the earliest among equals)."""
    scored = [
        (v, -t.number, t)
        for t in trials
        if (o := outcome(study, t)).state == TrialState.COMPLETE and (v := o.value) is not None
    ]
    if not scored:
        return None
    pick = max(scored, key=lambda s: (s[0] if maximize(study) else -s[0], s[1]))
    return pick[2]


def trial_proto(study: pb.Study, trial: TrialRecord) -> pb.Trial:
    o = outcome(study, trial)
    message = pb.Trial(
        number=trial.number,
        attempt_name=trial.attempt_name or "",
        attempt_id=trial.attempt_id or 0,
        state=_STATES[o.state],
        value=o.value if o.value is not None else math.nan,
        epochs=trial.epochs,
        error=o.error[:2000],
        seeded_by_attempt_id=trial.seeded_by or 0,
        values=trial.values or [],
    )
    json_format.ParseDict(integral(trial.params), message.params)
    return message


def warm_report(study: pb.Study, plan: dict[str, Any] | None) -> pb.WarmStartReport:
    """What a warm start found, from the plan kept with the study."""
    if plan is None:
        return pb.WarmStartReport(state="waiting for the task's profile")
    report = pb.WarmStartReport(
        state=str(plan.get("state", "")),
        priors=len(plan.get("priors", [])),
        zero_shot_trials=len(plan.get("zero_shot", [])),
        ranking=str(plan.get("ranking", "")),
        ranking_reason=str(plan.get("ranking_why", "")),
    )
    for source in plan.get("sources", []):
        distance = source.get("distance")
        report.sources.add(
            task_fingerprint=source.get("fingerprint", ""),
            label_names=source.get("labels", []),
            distance=math.nan if distance is None else float(distance),
            weight=float(source.get("weight", 0.0)),
            trials=int(source.get("trials", 0)),
        )
    return report


def _attrs(texts: dict[str, str]) -> dict[str, Any]:
    """An Optuna study's attributes as JSON values (one JSON cannot hold, as its text)."""
    shown: dict[str, Any] = {}
    for key, text in texts.items():
        try:
            shown[key] = json.loads(text, parse_constant=lambda c: c)
        except ValueError:
            shown[key] = text
    return shown


def study_proto(record: StudyRecord, trials: Sequence[TrialRecord] | None = None) -> pb.Study:
    """The API's view of a study (with its trials when given)."""
    study = spec_of(record)
    message = pb.Study()
    message.CopyFrom(study)
    message.id = record.id
    message.name = record.name
    message.owner = record.owner
    message.state = _STUDY_STATES[record.state]
    message.trials_made = record.trials_made
    message.stop_reason = record.stop_reason
    message.create_time.FromDatetime(record.created_at)
    message.update_time.FromDatetime(record.updated_at)
    if study.HasField("warm_start"):
        message.warm_start_report.CopyFrom(warm_report(study, record.warm_plan))
    if study.HasField("optuna"):
        json_format.ParseDict(_attrs(record.user_attrs), message.optuna.user_attrs)
    if trials is not None:
        message.trials.extend(trial_proto(study, t) for t in trials)
        top = best(study, trials)
        if top is not None:
            message.best_trial.CopyFrom(trial_proto(study, top))
    return message
