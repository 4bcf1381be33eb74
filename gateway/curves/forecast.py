"""ForecastCurve's request: checked field by field, and read as the curve model reads a
run. Pure (no store, no model): the servicer looks up the task's profile and asks
`Curves.forecast`.

A forecast is for a curve that is not stored here, so nothing in it is trusted: every
number is bounded before a feature is made from it (the model's features are bounded
too, but a NaN accuracy would be "not measured" and a prediction from nothing).
"""

from __future__ import annotations

import math
import re

from learning.curves import chance, rules
from learning.curves.features import Run
from learning.curves.pruner import LearnedPruner
from metalearn.errors import Violations
from metalearn.v1 import curve_service_pb2 as pb

MAX_EPOCHS = 10_000  # what a command may ask for (metalearn/limits.py)
MAX_LABELS = 10_000
MAX_OPTIMIZER_CHARS = 64
# A learning rate, momentum or loss beyond these is no real run's (and the features read
# their logarithms or ratios).
MAX_LOSS = 1e6
MAX_LEARNING_RATE = 1e3
MAX_BATCH = 1 << 24
# A class of more images than this is no validation split's.
MAX_CLASS_IMAGES = 1 << 40
FINGERPRINT = re.compile(r"(missing:)?[0-9a-f]{64}")


def _finite(x: float, low: float, high: float) -> bool:
    return math.isfinite(x) and low <= x <= high


def check(request: pb.ForecastCurveRequest) -> None:
    """InvalidArgument naming every bad field."""
    v = Violations()
    n = len(request.epochs)
    if not 1 <= request.n_epoch <= MAX_EPOCHS:
        v.add("n_epoch", f"the epochs the run will have: 1 to {MAX_EPOCHS}")
    if not 1 <= n <= MAX_EPOCHS:
        v.add("epochs", f"1 to {MAX_EPOCHS} epochs, in order")
    elif request.n_epoch and n > request.n_epoch:
        v.add("epochs", f"{n} epochs, more than n_epoch ({request.n_epoch})")
    with_loss = sum(e.HasField("loss") for e in request.epochs)
    if with_loss not in (0, n):
        v.add("epochs", "a training loss at every epoch or at none")
    for i, e in enumerate(request.epochs):
        if not _finite(e.val_accuracy, 0.0, 1.0):
            v.add(f"epochs[{i}].val_accuracy", "a validation accuracy in [0, 1]")
        for name in ("loss", "val_loss"):
            if e.HasField(name) and not _finite(getattr(e, name), 0.0, MAX_LOSS):  # type: ignore[arg-type]
                v.add(f"epochs[{i}].{name}", f"a finite loss in [0, {MAX_LOSS:g}]")
    if not 2 <= request.n_labels <= MAX_LABELS:
        v.add("n_labels", f"the classes the task has: 2 to {MAX_LABELS}")
    if len(request.optimizer) > MAX_OPTIMIZER_CHARS:
        v.add("optimizer", f"an optimizer's name, at most {MAX_OPTIMIZER_CHARS} characters")
    if request.HasField("learning_rate") and not (
        _finite(request.learning_rate, 0.0, MAX_LEARNING_RATE) and request.learning_rate > 0
    ):
        v.add("learning_rate", f"a learning rate in (0, {MAX_LEARNING_RATE:g}]")
    if request.HasField("momentum") and not _finite(request.momentum, 0.0, 1.0):
        v.add("momentum", "a momentum in [0, 1]")
    if request.HasField("batch_size") and not 1 <= request.batch_size <= MAX_BATCH:
        v.add("batch_size", f"a batch size of 1 to {MAX_BATCH}")
    if request.task_fingerprint and not FINGERPRINT.fullmatch(request.task_fingerprint):
        v.add("task_fingerprint", "a task's fingerprint (64 hex digits), or empty")
    if request.HasField("best") and not _finite(request.best, 0.0, 1.0):
        v.add("best", "the best final validation accuracy so far, in [0, 1]")
    if request.finished < 0:
        v.add("finished", "the finished trials: 0 or more")
    if request.HasField("min_epoch") and not 1 <= request.min_epoch <= MAX_EPOCHS:
        v.add("min_epoch", f"1 to {MAX_EPOCHS} epochs")
    if request.HasField("n_startup_trials") and request.n_startup_trials < 0:
        v.add("n_startup_trials", "0 or more trials")
    if request.HasField("margin") and not _finite(request.margin, -1.0, 1.0):
        v.add("margin", "an accuracy in [-1, 1]")
    counts = request.validation_images_per_label
    if counts and (
        len(counts) != request.n_labels
        or any(not 0 <= c <= MAX_CLASS_IMAGES for c in counts)
        or sum(counts) < 1
    ):
        v.add(
            "validation_images_per_label",
            f"one count per class (n_labels of them), each 0 to {MAX_CLASS_IMAGES:,},"
            " at least one image in all; or none",
        )
    v.raise_if_any()


def run_of(request: pb.ForecastCurveRequest, profile: dict[str, float]) -> Run:
    """The request's curve as the model reads a run (checked by `check`)."""
    measured = all(e.HasField("loss") for e in request.epochs)
    points = [
        rules.Point(
            i,
            e.loss if measured else math.nan,
            e.val_loss if e.HasField("val_loss") else math.nan,
            e.val_accuracy,
        )
        for i, e in enumerate(request.epochs, 1)
    ]
    return Run(
        points=points,
        n_epoch=request.n_epoch,
        n_labels=request.n_labels,
        learning_rate=request.learning_rate if request.HasField("learning_rate") else math.nan,
        optimizer=request.optimizer,
        batch_size=request.batch_size if request.HasField("batch_size") else 0,
        momentum=request.momentum if request.HasField("momentum") else math.nan,
        profile=profile,
        measures_loss=measured,
        chance=chance.of(request.n_labels, list(request.validation_images_per_label)),
    )


def pruner_of(request: pb.ForecastCurveRequest) -> LearnedPruner:
    """The learned pruner with the request's settings (its defaults where absent)."""
    default = LearnedPruner()
    return LearnedPruner(
        min_epoch=request.min_epoch if request.HasField("min_epoch") else default.min_epoch,
        n_startup_trials=request.n_startup_trials
        if request.HasField("n_startup_trials")
        else default.n_startup_trials,
        margin=request.margin if request.HasField("margin") else default.margin,
    )
