"""What the pages show, made from the gateway's messages: plain dicts and lists that the
templates render and the charts' JSON carries. Pure functions, no I/O."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format

from metalearn import documents
from metalearn.v1 import attempt_pb2, task_pb2
from metalearn.views.attempts import (
    as_text,
    command_fields,
    differing_in,
    prognosis_short,
    status_text,
)

pb = attempt_pb2

STATUSES = [
    "incomplete", "queued", "training", "trained", "testing", "complete", "failed",
    "cancelled", "pruned",
]  # fmt: skip
RUNNING = {"queued", "training", "testing"}
# The tag that holds an attempt's free-text note, as MLflow keeps its note in the tag
# `mlflow.note.content`: a dotted name under the product's own prefix, which no user's
# `team=vision` collides with.
NOTE_TAG = "metalearn.note"
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


def human(value: Any) -> str:
    """A parameter's value as a person writes it: 4 significant digits (0.04612, not
    0.046116328...), whole numbers whole, text without JSON's quotes."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:.4g}"
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(", ", ": "))


def when(stamp: Any) -> str:
    """A protobuf Timestamp as UTC text ('' when unset)."""
    if not stamp.seconds and not stamp.nanos:
        return ""
    return datetime.fromtimestamp(stamp.seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")


def attempt_row(a: pb.Attempt) -> dict[str, Any]:
    """One line of the attempts table (a BASIC view is enough)."""
    losses = [x for x in a.training_losses if math.isfinite(x)]
    validated = [e.val_accuracy for e in a.epochs if e.val_loss and math.isfinite(e.val_accuracy)]
    return {
        "id": a.id,
        "name": a.name,
        "status": status_text(a.status),
        "owner": a.owner,
        "epochs": len(a.training_losses) or a.current_epoch,
        "n_epoch": a.training_commands.n_epoch,
        "last_loss": number(a.training_losses[-1]) if a.training_losses else None,
        "best_loss": min(losses) if losses else None,
        # The gateway's figure, else the epochs' (a FULL view of a run still training).
        "best_val_accuracy": number(a.best_val_accuracy) or (max(validated) if validated else None),
        # A prototype's document has its accuracy without a test result: it is its test's.
        "test_accuracy": number(a.accuracy) if a.HasField("test_result") or a.accuracy else None,
        "flags": _flags(a),
        "hopeless": a.prognosis.hopeless,
        "predicted": number(a.prognosis.final_val_accuracy) if a.prognosis.predicted else None,
        "labels": list(a.training_commands.label_names),
        "updated": when(a.update_time),
        "imported": a.imported,
        "study": a.trial.study,
    }


def _flags(a: pb.Attempt) -> str:
    """The prognosis in a table cell: its flags, hopeless, the predicted final accuracy;
    nothing (not "ok": no rule fired is no prediction) when there is none of those, and
    "at chance" for a run stopped there."""
    short = prognosis_short(a.prognosis) if a.HasField("prognosis") else ""
    short = "" if short == "-" else short
    last = number(a.training_losses[-1]) if a.training_losses else None
    stopped = status_text(a.status) in _STOPPED and "at-chance" not in short
    if stopped and chance_note(last, len(a.training_commands.label_names)):
        short = f"{short} at chance".strip()
    return short


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


_STOPPED = ("pruned", "failed", "cancelled")


def chance_note(loss: float | None, n_labels: int) -> str:
    """Says so when a loss is what a classifier that learnt nothing scores, ln(n_labels)."""
    if loss is None or n_labels < 2 or not math.isfinite(loss):
        return ""
    chance = math.log(n_labels)
    if abs(loss - chance) > max(0.05 * chance, 0.05):
        return ""
    return f"its loss {loss:.3f} is what learning nothing scores (ln {n_labels} = {chance:.3f})"


def prognosis_text(
    p: dict[str, Any] | None, status: str, epochs: int, last_loss: float | None, n_labels: int
) -> str:
    """The prognosis in words, never a bare "ok": the rules that fired, the predicted
    final accuracy or why there is none, and for a stopped run how it stopped."""
    parts: list[str] = []
    if status in _STOPPED:
        parts.append(f"{status} after epoch {epochs}")
        if note := chance_note(last_loss, n_labels):
            parts.append(note)
    if p is None:
        return "; ".join(parts)
    parts += [f"{f['kind'].lower().replace('_', ' ')} since epoch {f['since']}" for f in p["flags"]]
    if p["hopeless"]:
        parts.append(f"hopeless: {p['hopeless_reason']}")
    if not parts:
        parts.append("no rule fired")
    if p["predicted"] and None not in (p["final"], p["low"], p["high"]):
        parts.append(f"final val accuracy {p['final']:.3f} ({p['low']:.3f}\u2013{p['high']:.3f})")
    else:
        parts.append(f"no prediction: {p['note'] or 'no curve model is fitted yet'}")
    return "; ".join(parts)


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


def reported_run(a: pb.Attempt) -> dict[str, Any] | None:
    """What a run reported by users' own code says of itself (it has no command): its
    params, the task it declares, what reported it and the names of its metrics."""
    if not a.HasField("reported"):
        return None
    r = a.reported
    task = r.task
    return {
        "params": json.dumps(json_format.MessageToDict(r.params), indent=2, sort_keys=True),
        "dataset": task.dataset,
        "labels": list(task.labels),
        "input_shape": "x".join(str(d) for d in task.input_shape),
        "train_size": task.train_size,
        "features": sorted((k, number(v)) for k, v in task.features.items()),
        "client": r.client,
        "metric_keys": list(r.metric_keys),
    }


def attempt_page(a: pb.Attempt) -> dict[str, Any]:
    row = attempt_row(a)
    told = prognosis(a.prognosis) if a.HasField("prognosis") else None
    reported = reported_run(a)
    n_labels = len(reported["labels"]) if reported else len(a.training_commands.label_names)
    tags = dict(sorted(a.tags.items()))
    return {
        **row,
        "created": when(a.create_time),
        "trainer": a.trainer,
        "error": a.error,
        "restarts": a.restart_count,
        "current_epoch": a.current_epoch,
        "running": row["status"] in RUNNING,
        "command": command_json(a.training_commands),
        "prognosis": told,
        "prognosis_text": prognosis_text(
            told, row["status"], row["epochs"], row["last_loss"], n_labels
        ),
        "n_labels": n_labels,
        "test": test_results(a),
        "artifact": {"size": a.model_artifact.size_bytes, "sha256": a.model_artifact.sha256}
        if a.model_artifact.sha256
        else None,
        "tags": {k: v for k, v in tags.items() if k != NOTE_TAG},
        "note": tags.get(NOTE_TAG, ""),
        "has_validation": any(e.val_loss for e in a.epochs),
        "trial": {"study": a.trial.study, "number": a.trial.number} if a.trial.study else None,
        "reported": reported,
        # A reported run is tested by its own code (Test refuses it).
        "can_test": row["status"] in ("trained", "complete") and reported is None,
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
    flat = command_fields(attempts)
    keys = sorted(set().union(*flat)) if flat else []
    differing = set(differing_in(flat))
    fields = [
        {
            "key": key,
            "differs": key in differing,
            "values": ["" if f.get(key) is None else as_text(f.get(key)) for f in flat],
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


# Tasks.
def task_row(t: task_pb2.Task) -> dict[str, Any]:
    state = task_pb2.TaskState.Name(t.state).removeprefix("TASK_STATE_").lower()  # type: ignore[arg-type]
    missing = t.fingerprint.startswith("missing:")
    return {
        "fingerprint": t.fingerprint,
        "short": "no images" if missing else t.fingerprint[:12],
        "labels": list(t.label_names),
        "state": state,
        # The gateway's row for labels that have no images here (an imported history's):
        # nothing to profile, nor to train or test.
        "missing": missing,
        "images": t.profile.images if state == "ready" else None,
        "classes": t.profile.classes,
        "input_shape": list(t.profile.input_shape),
        "attempts": t.attempts,
        "best_val_accuracy": number(t.best_val_accuracy) or None,
        "error": _task_error(t, missing),
        "profiled": when(t.profile_time),
    }


def _task_error(t: task_pb2.Task, missing: bool) -> str:
    """Why a task failed, without repeating its labels when none of them has images."""
    named = t.error.removeprefix("labels without images: ")
    if missing and set(named.split(", ")) >= set(t.label_names):
        return "none of these labels has images here (imported history?)"
    return t.error


def distinct_tasks(tasks: Sequence[task_pb2.Task]) -> list[dict[str, Any]]:
    """One row per task (its labels and image ops). ListTasks gives one already; a
    gateway from before it did listed every version of a task (one per state of its
    labels' images), newest first: then the row is the newest version that is not failed
    (else the newest), with how many versions there are."""
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    for t in tasks:
        ops = tuple(op.SerializeToString(deterministic=True) for op in t.image_ops)
        key = (tuple(sorted(t.label_names)), ops)
        row = rows.get(key)
        if row is None:
            rows[key] = task_row(t) | {"versions": 1}
            continue
        row["versions"] += 1
        if row["state"] == "failed" and t.state != task_pb2.TASK_STATE_FAILED:
            rows[key] = task_row(t) | {"versions": row["versions"]}
    return list(rows.values())


def task_profile(t: task_pb2.Task) -> list[tuple[str, float | None]]:
    return sorted((k, number(v)) for k, v in t.profile.features.items())
