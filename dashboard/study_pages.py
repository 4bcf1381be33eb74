"""What a study's pages show, made from GetStudy's and the trials' attempts' messages:
the studies table's rows, a study's trials, the objective's history, the parameters'
axes and each trial's intermediate values. Pure functions, no I/O."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from google.protobuf import json_format

from dashboard.views import command_json, human, number, when
from metalearn import documents
from metalearn.v1 import attempt_pb2, study_service_pb2
from metalearn.views.studies import (
    objective_text,
    optuna_maximizes,
    study_objective,
    study_state,
    trial_state,
)

pb = attempt_pb2
spb = study_service_pb2


def objective_of(s: spb.Study) -> tuple[str, bool, Callable[[pb.EpochMetrics], float]]:
    """The objective's name, whether larger is better, and its value in one epoch (as
    metalearn.views.study_plots has it, without importing Optuna into the dashboard)."""
    if s.HasField("optuna"):  # an Optuna client's study: its value, either way
        maximize = optuna_maximizes(s)
        return study_objective(s), maximize, lambda e: e.val_accuracy if maximize else e.val_loss
    text = objective_text(s.objective)
    if "loss" in text:
        return text, False, lambda e: e.val_loss
    return text, True, lambda e: e.val_accuracy


def trial_row(t: spb.Trial, best: int | None) -> dict[str, Any]:
    params = json_format.MessageToDict(t.params) if t.params.fields else {}
    return {
        "number": t.number,
        "attempt": t.attempt_name,
        "attempt_id": t.attempt_id,
        "state": trial_state(t.state),
        "value": number(t.value) if t.state == spb.TRIAL_STATE_COMPLETE else None,
        "epochs": t.epochs,
        "params": {k: documents.integral(v) for k, v in params.items()},
        "params_text": {k: human(documents.integral(v)) for k, v in params.items()},
        "error": t.error,
        "best": t.number == best,
        "warm": bool(t.seeded_by_attempt_id),
    }


def study_summary(s: spb.Study) -> dict[str, Any]:
    return {
        "name": s.name,
        "state": study_state(s.state),
        "objective": study_objective(s),
        "n_trials": s.n_trials,
        "trials_made": s.trials_made,
        "best_value": number(s.best_trial.value) if s.HasField("best_trial") else None,
        "best_trial": s.best_trial.number if s.HasField("best_trial") else None,
        "sampler": "Optuna's clients" if s.HasField("optuna") else s.sampler.name,
        "pruner": "Optuna's clients" if s.HasField("optuna") else s.pruner.name,
        "owner": s.owner,
        "created": when(s.create_time),
        "updated": when(s.update_time),
        "stop_reason": s.stop_reason,
    }


def search_space(s: spb.Study) -> list[dict[str, Any]]:
    """Each parameter's axis: its kind, range and whether it is on a log scale."""
    found = []
    for p in s.search_space:
        kind = p.WhichOneof("kind")
        axis: dict[str, Any] = {"path": p.path, "kind": kind, "log": False}
        if kind in ("float", "int"):
            r = getattr(p, kind)
            axis.update(low=r.low, high=r.high, log=bool(r.log))
        elif kind == "categorical":
            values = json_format.MessageToDict(p.categorical).get("values", [])
            axis["choices"] = [human(documents.integral(v)) for v in values]
        found.append(axis)
    return found


def study_data(
    s: spb.Study, attempts: dict[int, pb.Attempt], importance: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Everything a study's page draws: the trials, the objective's history, the
    parameters' parallel coordinates, their importances and each trial's intermediate
    values."""
    best = s.best_trial.number if s.HasField("best_trial") else None
    trials = [trial_row(t, best) for t in sorted(s.trials, key=lambda t: t.number)]
    name, maximize, value_of = objective_of(s)
    intermediate = []
    reached: dict[int, float | None] = {}
    for t in sorted(s.trials, key=lambda t: t.number):
        a = attempts.get(t.attempt_id)
        if a is None or not a.epochs:
            continue
        values = [number(value_of(e)) if e.val_loss else None for e in a.epochs]
        intermediate.append(
            {
                "trial": t.number,
                "state": trial_state(t.state),
                "epoch": [e.epoch for e in a.epochs],
                "value": values,
            }
        )
        seen = [v for v in values if v is not None]
        reached[t.number] = seen[-1] if seen else None
    for row in trials:
        # Where a pruned trial had got to: its last intermediate value (what the pruner
        # judged), so the parallel coordinates can show it, dimmed.
        row["reached"] = row["value"] if row["value"] is not None else reached.get(row["number"])
    return {
        "study": study_summary(s),
        "objective": name,
        "maximize": maximize,
        "trials": trials,
        "params": _param_names(s),
        "space": search_space(s),
        "intermediate": intermediate,
        "importance": importance or {"params": [], "values": [], "note": ""},
        "best_command": command_json(_best_command(s, attempts)) if best is not None else "",
    }


def _param_names(s: spb.Study) -> list[str]:
    """The search space's paths; an Optuna client's study has none ahead (its clients
    define parameters as they run), so the names its trials used."""
    if s.search_space or not s.HasField("optuna"):
        return [p.path for p in s.search_space]
    return sorted({name for t in s.trials for name in t.params.fields})


def _best_command(s: spb.Study, attempts: dict[int, pb.Attempt]) -> pb.TrainCommand:
    a = attempts.get(s.best_trial.attempt_id)
    return a.training_commands if a is not None else s.base_command


def trial_event(kind: str, t: spb.Trial) -> dict[str, Any]:
    return {"kind": kind, "trial": trial_row(t, None)}
