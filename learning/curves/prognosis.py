"""A run's prognosis after k epochs: the rules that fired, the curve model's prediction
of its final validation accuracy, and whether it is hopeless (what `stop_when_hopeless`
and the bad-run figures act on).

Hopeless means one of two things, both from the first epochs:
- a rule that no run recovers from fired: NON_FINITE, DIVERGING, or AT_CHANCE while the
  model (if there is one) does not expect it to leave chance (its upper quartile,
  `Prediction.likely`, at or below chance);
- from epoch MODEL_EPOCH on, the model is confident (its upper quartile) that the run
  ends at chance, below half of the best final accuracy its task has reached so far, or
  below the run's own threshold.
OVERFITTING alone is never hopeless: the best epoch has already been seen.

The upper quartile and epoch 3 are the suite's choice (bench/metalearning, BENCHMARKS.md):
a lower quantile, or the model's verdict from the first two epochs, finds more bad runs
but stops more good ones with them (a hopeless verdict may stop a run: precision first).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from learning.curves import rules
from learning.curves.features import Run
from learning.curves.model import CurveModel, Prediction

# The share of its task's best that a run must still be able to reach.
HALF_OF_BEST = 0.5
# The first epoch the model's own verdict counts (the rules count from any epoch).
MODEL_EPOCH = 3
_FATAL = ("NON_FINITE", "DIVERGING")


@dataclass(frozen=True)
class Assessment:
    epoch: int
    flags: tuple[rules.Flag, ...]
    prediction: Prediction | None
    hopeless: bool
    reason: str  # why hopeless ('' when not)


def assess(
    run: Run,
    k: int,
    curve_model: CurveModel | None,
    task_best: float | None = None,
    below: float = 0.0,
) -> Assessment:
    """The prognosis of `run` after its first k epochs. `task_best`: the best final
    validation accuracy of the task's finished runs (None: none yet); `below`: the run's
    own threshold (0: none)."""
    seen = run.points[:k]
    found = tuple(rules.flags(seen, run.n_labels))
    prediction = curve_model.predict(run, k) if curve_model is not None else None
    chance = 1 / max(run.n_labels, 2) + rules.CHANCE_ACCURACY_MARGIN
    reason = ""
    for flag in found:
        if flag.kind in _FATAL:
            reason = f"{flag.kind.lower().replace('_', '-')} since epoch {flag.since_epoch}"
            break
        if flag.kind == "AT_CHANCE" and (prediction is None or _likely(prediction) <= chance):
            reason = f"at chance since epoch {flag.since_epoch}"
            break
    if not reason and prediction is not None and k >= MODEL_EPOCH:
        bars = [(chance, "chance")]
        if task_best is not None:
            bars.append((HALF_OF_BEST * task_best, f"half of its task's best ({task_best:.3f})"))
        if below > 0:
            bars.append((below, "its threshold"))
        bar, name = max(bars)
        if _likely(prediction) < bar:
            reason = (
                f"predicted to end at {prediction.median:.3f} (3 in 4 below "
                f"{_likely(prediction):.3f}), below {name}: {bar:.3f}"
            )
    return Assessment(k, found, prediction, bool(reason), reason)


def _likely(p: Prediction) -> float:
    """The upper quartile (the upper quantile of a model fitted without it)."""
    return p.likely if math.isfinite(p.likely) else p.high
