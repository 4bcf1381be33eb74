"""What the pages show, made from the gateway's messages: plain dicts and lists that the
templates render and the charts' JSON carries. Pure functions, no I/O."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format

from metalearn import documents, looking
from metalearn.client import status_text
from metalearn.runs import prognosis_short
from metalearn.study_views import objective_text, study_state, trial_state
from metalearn.v1 import attempt_pb2, study_service_pb2, task_pb2

pb = attempt_pb2
spb = study_service_pb2

STATUSES = [
    "incomplete", "queued", "training", "trained", "testing", "complete", "failed",
    "cancelled", "pruned",
]  # fmt: skip
RUNNING = {"queued", "training", "testing"}
TERMINAL = {"trained", "complete", "failed", "cancelled", "pruned"}
# What the attempts table can be sorted by: the name in the URL, the label shown, and
# the ListAttempts fields that do it.
SORTS: dict[str, tuple[str, dict[str, Any]]] = {
    "updated": ("updated", {"order_by": 3}),  # ATTEMPT_ORDER_UPDATE_TIME
    "id": ("oldest", {"order_by": 1}),
    "val_acc": ("best val acc", {"order_by_field": "best_val_accuracy desc"}),
    "accuracy": ("test acc", {"order_by": 2}),  # ATTEMPT_ORDER_ACCURACY
    "epochs": ("epochs", {"order_by_field": "current_epoch desc"}),
    "lr": ("learning rate", {"order_by_field": "training_commands.optimizer.lr desc"}),
    "batch": ("batch size", {"order_by_field": "training_commands.batch_size desc"}),
}


def number(value: float | None) -> float | None:
    """A float JSON can carry (NaN and infinities become null)."""
    return value if value is not None and math.isfinite(value) else None


def when(stamp: Any) -> str:
    """A protobuf Timestamp as UTC text ('' when unset)."""
    if not stamp.seconds and not stamp.nanos:
        return ""
    return datetime.fromtimestamp(stamp.seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")


def attempt_row(a: pb.Attempt) -> dict[str, Any]:
    """One line of the attempts table (a BASIC view is enough)."""
    losses = [x for x in a.training_losses if math.isfinite(x)]
    return {
        "id": a.id,
        "name": a.name,
        "status": status_text(a.status),
        "owner": a.owner,
        "epochs": len(a.training_losses) or a.current_epoch,
        "n_epoch": a.training_commands.n_epoch,
        "last_loss": number(a.training_losses[-1]) if a.training_losses else None,
        "best_loss": min(losses) if losses else None,
        "best_val_accuracy": number(a.best_val_accuracy) or None,
        "test_accuracy": number(a.accuracy) if a.HasField("test_result") else None,
        "flags": prognosis_short(a.prognosis) if a.HasField("prognosis") else "",
        "hopeless": a.prognosis.hopeless,
        "predicted": number(a.prognosis.final_val_accuracy) if a.prognosis.predicted else None,
        "labels": list(a.training_commands.label_names),
        "updated": when(a.update_time),
        "imported": a.imported,
        "study": a.trial.study,
    }


def curves(a: pb.Attempt) -> dict[str, Any]:
    """An attempt's per-epoch series (FULL view; the losses alone otherwise)."""
    if a.epochs:
        points = [epoch_event(e) for e in a.epochs]
        return {"name": a.name} | {key: [p[key] for p in points] for key in _SERIES}
    n = len(a.training_losses)
    return {
        "name": a.name,
        "epoch": list(range(1, n + 1)),
        "loss": [number(x) for x in a.training_losses],
        "val_loss": [None] * n,
        "val_accuracy": [None] * n,
        "learning_rate": [None] * n,
    }


_SERIES = ("epoch", "loss", "val_loss", "val_accuracy", "learning_rate")


def epoch_event(e: pb.EpochMetrics) -> dict[str, Any]:
    """One epoch as a chart point (no validation: None, not 0)."""
    return {
        "epoch": e.epoch,
        "loss": number(e.loss),
        "val_loss": number(e.val_loss) if e.val_loss else None,
        "val_accuracy": number(e.val_accuracy) if e.val_loss else None,
        "learning_rate": number(e.learning_rate),
        "seconds": number(e.seconds),
    }


def command_json(command: pb.TrainCommand) -> str:
    """A training command as `metalearn train --file` reads it."""
    doc = json_format.MessageToDict(command, preserving_proto_field_name=True)
    return json.dumps(documents.integral(doc), indent=2)


def prognosis(p: pb.Prognosis) -> dict[str, Any]:
    flags = [
        {
            "kind": pb.CurveFlagKind.Name(f.kind).removeprefix("CURVE_FLAG_KIND_"),  # type: ignore[arg-type]
            "since": f.since_epoch,
            "detail": f.detail,
        }
        for f in p.flags
    ]
    return {
        "epoch": p.epoch,
        "flags": flags,
        "predicted": p.predicted,
        "final": number(p.final_val_accuracy),
        "low": number(p.final_val_accuracy_low),
        "high": number(p.final_val_accuracy_high),
        "note": p.note,
        "hopeless": p.hopeless,
        "hopeless_reason": p.hopeless_reason,
    }


def test_results(a: pb.Attempt) -> dict[str, Any] | None:
    """Accuracy per label and the confusion matrix (rows: true label), when tested."""
    if not a.HasField("test_result"):
        return None
    r = a.test_result
    labels = list(a.testing_commands.label_names) or list(a.training_commands.label_names)
    n = len(labels)
    cells = list(r.confusion_matrix)
    matrix = [cells[i * n : (i + 1) * n] for i in range(n)] if n and len(cells) == n * n else []
    return {
        "loss": number(r.loss),
        "accuracy": number(r.accuracy),
        "images": r.images,
        "labels": labels,
        "per_label": sorted(
            ((label, number(acc)) for label, acc in r.per_label_accuracy.items()),
            key=lambda item: labels.index(item[0]) if item[0] in labels else n,
        ),
        "matrix": matrix,
    }


def attempt_page(a: pb.Attempt) -> dict[str, Any]:
    row = attempt_row(a)
    return {
        **row,
        "created": when(a.create_time),
        "trainer": a.trainer,
        "error": a.error,
        "restarts": a.restart_count,
        "current_epoch": a.current_epoch,
        "running": row["status"] in RUNNING,
        "command": command_json(a.training_commands),
        "prognosis": prognosis(a.prognosis) if a.HasField("prognosis") else None,
        "test": test_results(a),
        "artifact": {"size": a.model_artifact.size_bytes, "sha256": a.model_artifact.sha256}
        if a.model_artifact.sha256
        else None,
        "tags": dict(sorted(a.tags.items())),
        "trial": {"study": a.trial.study, "number": a.trial.number} if a.trial.study else None,
        "can_test": row["status"] in ("trained", "complete"),
        "can_cancel": row["status"] in RUNNING,
    }


def _stats(values: Iterable[float | None]) -> dict[str, float | None]:
    seen = [v for v in values if v is not None]
    return {
        "final": seen[-1] if seen else None,
        "min": min(seen) if seen else None,
        "max": max(seen) if seen else None,
    }


def comparison(attempts: Sequence[pb.Attempt]) -> dict[str, Any]:
    """Side by side: every command field with whether it differs, and the metrics'
    final, best, smallest and largest values."""
    flat = looking.command_fields(attempts)
    keys = sorted(set().union(*flat)) if flat else []
    differing = set(looking.differing_in(flat))
    fields = [
        {
            "key": key,
            "differs": key in differing,
            "values": ["" if f.get(key) is None else looking.as_text(f.get(key)) for f in flat],
        }
        for key in keys
    ]
    series = [curves(a) for a in attempts]
    metrics = [
        {
            "id": a.id,
            "name": a.name,
            "status": status_text(a.status),
            "epochs": len(c["epoch"]),
            "loss": _stats(c["loss"]),
            "val_loss": _stats(c["val_loss"]),
            "val_accuracy": _stats(c["val_accuracy"]),
            "test_accuracy": number(a.accuracy) if a.HasField("test_result") else None,
            "seconds": sum(e.seconds for e in a.epochs) or None,
        }
        for a, c in zip(attempts, series, strict=True)
    ]
    return {
        "attempts": [{"id": a.id, "name": a.name} for a in attempts],
        "fields": fields,
        "differing": sorted(differing),
        "metrics": metrics,
        "curves": series,
    }


# Studies.
def objective_of(s: spb.Study) -> tuple[str, bool, Callable[[pb.EpochMetrics], float]]:
    """The objective's name, whether larger is better, and its value in one epoch (as
    metalearn.study_plots has it, without importing Optuna into the dashboard)."""
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
        "error": t.error,
        "best": t.number == best,
        "warm": bool(t.seeded_by_attempt_id),
    }


def study_summary(s: spb.Study) -> dict[str, Any]:
    return {
        "name": s.name,
        "state": study_state(s.state),
        "objective": objective_text(s.objective),
        "n_trials": s.n_trials,
        "trials_made": s.trials_made,
        "best_value": number(s.best_trial.value) if s.HasField("best_trial") else None,
        "best_trial": s.best_trial.number if s.HasField("best_trial") else None,
        "sampler": s.sampler.name,
        "pruner": s.pruner.name,
        "owner": s.owner,
        "created": when(s.create_time),
        "updated": when(s.update_time),
        "stop_reason": s.stop_reason,
    }


def study_data(s: spb.Study, attempts: dict[int, pb.Attempt]) -> dict[str, Any]:
    """Everything a study's page draws: the trials, the objective's history, the
    parameters' parallel coordinates and each trial's intermediate values."""
    best = s.best_trial.number if s.HasField("best_trial") else None
    trials = [trial_row(t, best) for t in sorted(s.trials, key=lambda t: t.number)]
    name, maximize, value_of = objective_of(s)
    intermediate = []
    for t in sorted(s.trials, key=lambda t: t.number):
        a = attempts.get(t.attempt_id)
        if a is None or not a.epochs:
            continue
        intermediate.append(
            {
                "trial": t.number,
                "state": trial_state(t.state),
                "epoch": [e.epoch for e in a.epochs],
                "value": [number(value_of(e)) for e in a.epochs],
            }
        )
    paths = [p.path for p in s.search_space]
    return {
        "study": study_summary(s),
        "objective": name,
        "maximize": maximize,
        "trials": trials,
        "params": paths,
        "intermediate": intermediate,
        "best_command": command_json(_best_command(s, attempts)) if best is not None else "",
    }


def _best_command(s: spb.Study, attempts: dict[int, pb.Attempt]) -> pb.TrainCommand:
    a = attempts.get(s.best_trial.attempt_id)
    return a.training_commands if a is not None else s.base_command


def trial_event(kind: str, t: spb.Trial) -> dict[str, Any]:
    return {"kind": kind, "trial": trial_row(t, None)}


# Tasks.
def task_row(t: task_pb2.Task) -> dict[str, Any]:
    return {
        "fingerprint": t.fingerprint,
        "short": t.fingerprint[:12],
        "labels": list(t.label_names),
        "state": task_pb2.TaskState.Name(t.state).removeprefix("TASK_STATE_").lower(),  # type: ignore[arg-type]
        "images": t.profile.images,
        "classes": t.profile.classes,
        "input_shape": list(t.profile.input_shape),
        "attempts": t.attempts,
        "best_val_accuracy": number(t.best_val_accuracy) or None,
        "error": t.error,
        "profiled": when(t.profile_time),
    }


def task_profile(t: task_pb2.Task) -> list[tuple[str, float | None]]:
    return sorted((k, number(v)) for k, v in t.profile.features.items())
