"""What the curve model reads of a run after its first k epochs: hand-made curve features,
the command's few numbers that shape a curve, and its task's profile.

One function, `row`, makes the features for the gateway's live prognosis, for fitting
from the store and for the benchmark's replay alike, so the three cannot drift apart.
NaN stands for "not measured" (a run without validation, a task not profiled yet):
scikit-learn's histogram gradient boosting routes missing values by itself.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from learning.curves import rules
from learning.curves.chance import Chance, uniform

# Task profile features the model may read (gateway/tasks/profiler.FEATURES, in a fixed
# order: a model's columns must not move between fits).
PROFILE = (
    "log_images", "log_classes", "landmark_centroid", "landmark_1nn", "landmark_linear",
    "probe_1nn", "probe_centroid", "probe_fisher",
)  # fmt: skip
_OPTIMIZERS = ("SGD", "Adam", "AdamW", "RMSprop")
NAMES: tuple[str, ...] = (
    "k", "n_epoch", "fraction", "remaining", "log_labels",
    "va_last", "va_best", "va_first", "va_step", "va_gain", "va_over_chance", "chance",
    "loss_last", "loss_first", "loss_ratio", "loss_step", "val_loss_last", "loss_gap",
    "at_chance", "diverging", "log_lr", "log_batch", "momentum",
    *(f"opt_{o}" for o in _OPTIMIZERS), "opt_other",
    *(f"task_{p}" for p in PROFILE),
)  # fmt: skip


@dataclass(frozen=True)
class Run:
    """A training run as the curve model sees it: epochs in order, and what shaped them."""

    points: Sequence[rules.Point]
    n_epoch: int
    n_labels: int
    learning_rate: float = math.nan
    optimizer: str = ""
    batch_size: int = 0
    momentum: float = math.nan
    profile: Mapping[str, float] = field(default_factory=dict)
    # What it weighs in a fit beside other runs (learning/provenance.py: a claim less
    # than a run trained here).
    weight: float = 1.0
    # False for a curve known only by its validation accuracy (an Optuna trial's
    # intermediate values): its losses are "not measured", not "diverged" as a NaN
    # loss from a trainer means.
    measures_loss: bool = True
    # What learning nothing scores on its data (None: even classes, 1/n_labels).
    chance: Chance | None = None

    def at_chance(self) -> Chance:
        """What learning nothing scores on this run's data."""
        return self.chance or uniform(self.n_labels)

    def final(self) -> float | None:
        """The last epoch's validation accuracy, if the run reached its last epoch with
        one (what the model learns to predict)."""
        if len(self.points) < self.n_epoch or not self.points:
            return None
        last = self.points[-1].val_accuracy
        return last if math.isfinite(last) and 0.0 <= last <= 1.0 else None


def _log(x: float) -> float:
    return math.log10(x) if x > 0 and math.isfinite(x) else math.nan


def without_loss(run: Run) -> Run:
    """The run as a curve known only by its validation accuracy would show it."""
    return replace(run, measures_loss=False)


def row(run: Run, k: int) -> list[float]:
    """The features after the first k epochs of `run` (k >= 1, at most its epochs)."""
    seen = run.points[:k]
    n = max(run.n_labels, 2)
    chance = run.at_chance()
    # An accuracy outside [0, 1] is no measurement (a store from before imports were
    # checked may hold 42): read as not measured.
    va = [p.val_accuracy if 0.0 <= p.val_accuracy <= 1.0 else math.nan for p in seen]
    finite_va = [v for v in va if math.isfinite(v)]
    losses = [p.loss for p in seen]
    nan = math.nan

    def scaled(x: float) -> float:
        # Losses over chance's (ln(n_labels) for even classes): 1 is chance whatever
        # the number of labels; a non-finite loss is read as far above it (unless the
        # run measures none).
        if not run.measures_loss:
            return nan
        return x / chance.loss if math.isfinite(x) else 10.0

    va_last = va[-1] if math.isfinite(va[-1]) else nan
    va_prev = va[-2] if k >= 2 and math.isfinite(va[-2]) else nan
    if run.measures_loss:
        found = {f.kind for f in rules.flags(seen, n, chance)}
    else:
        found = {f.kind for f in rules.accuracy_flags(seen, n, chance)}
        losses = [nan] * len(seen)
    optimizer = run.optimizer if run.optimizer in _OPTIMIZERS else ""
    values = [
        float(k),
        float(run.n_epoch),
        k / max(run.n_epoch, 1),
        float(max(run.n_epoch - k, 0)),
        math.log(n),
        va_last,
        max(finite_va) if finite_va else nan,
        finite_va[0] if finite_va else nan,
        va_last - va_prev,
        va_last - (finite_va[0] if finite_va else nan),
        va_last - chance.accuracy,
        chance.accuracy,
        scaled(losses[-1]),
        scaled(losses[0]),
        (losses[-1] / losses[0])
        if losses[0] > 0 and math.isfinite(losses[0]) and math.isfinite(losses[-1])
        else nan,
        scaled(losses[-1]) - scaled(losses[-2]) if k >= 2 else nan,
        scaled(seen[-1].val_loss),
        scaled(seen[-1].val_loss) - scaled(losses[-1]),
        float("AT_CHANCE" in found),
        float("DIVERGING" in found or "NON_FINITE" in found),
        _log(run.learning_rate),
        math.log2(run.batch_size) if run.batch_size > 0 else nan,
        run.momentum,
        *(float(optimizer == o) for o in _OPTIMIZERS),
        float(bool(run.optimizer) and not optimizer),
        *(float(run.profile.get(p, nan)) for p in PROFILE),
    ]
    return _bounded(values)


# Beyond this a feature says nothing more (a loss 10^6 times chance is as bad as 10^300).
_LARGEST = 1e6


def _bounded(values: list[float]) -> list[float]:
    """Every feature finite or NaN ("not measured"), and of a size the boosting's binning
    can take: a difference of two huge losses may be inf, which scikit-learn refuses
    outright, and 1e308 overflows its quantiles."""
    return [min(max(x, -_LARGEST), _LARGEST) if math.isfinite(x) else math.nan for x in values]
