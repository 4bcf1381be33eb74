"""A run's prognosis after k epochs: the rules that fired, the curve model's prediction
of its final validation accuracy, and whether it is hopeless (what `stop_when_hopeless`
and the bad-run figures act on).

Hopeless means one of two things, both from the first epochs:
- a rule that no run recovers from fired: NON_FINITE, DIVERGING, or AT_CHANCE while the
  model (if there is one) does not expect it to leave chance (its
  `Verdict.chance_quantile`, the upper quartile by default, at or below chance);
- from epoch `Verdict.model_epoch` on (2), the model is confident (its
  `Verdict.quantile`, the 90th percentile) that the run ends at chance, below half of
  the best final accuracy its task has reached so far, or below the run's own
  threshold.
OVERFITTING alone is never hopeless: the best epoch has already been seen. Chance is
what learning nothing scores on the run's own data (`chance`: the largest class's share
of its validation split).

The verdict's thresholds (`VERDICT`) are the benchmark's choice (bench/metalearning/
curves.py, BENCHMARKS.md), which judges each family with thresholds chosen on the others:
a lower quantile finds more bad runs but stops more good ones with them (a hopeless
verdict may stop a run: precision first).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from learning.curves import rules
from learning.curves.features import Run
from learning.curves.model import CEILING, HIGH, LIKELY, LOW, MEDIAN, CurveModel, Prediction

# The share of its task's best that a run must still be able to reach.
HALF_OF_BEST = 0.5
_FATAL = ("NON_FINITE", "DIVERGING")


@dataclass(frozen=True)
class Verdict:
    """When the model's word makes a run hopeless."""

    # The quantile of the predicted final accuracy that must fall below a bar (one the
    # model fits: model.FITTED); the higher, the surer the model must be.
    quantile: float = LIKELY
    # The first epoch the model's own verdict counts (the rules count from any epoch).
    model_epoch: int = 3
    # The quantile that must not leave chance for AT_CHANCE to make a run hopeless (a
    # run the rule saw at chance has shown it: the model need be less sure).
    chance_quantile: float = LIKELY


# What the benchmark's choice makes over both suites' 3,776 runs (the most bad runs
# found at precision >= 0.95; BENCHMARKS.md, issue 29): the model's 90th percentile
# below a bar from epoch 2; AT_CHANCE confirmed by its upper quartile.
VERDICT = Verdict(quantile=HIGH, model_epoch=2, chance_quantile=LIKELY)


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
    verdict: Verdict = VERDICT,
) -> Assessment:
    """The prognosis of `run` after its first k epochs. `task_best`: the best final
    validation accuracy of the task's finished runs (None: none yet); `below`: the run's
    own threshold (0: none)."""
    seen = run.points[:k]
    found = tuple(rules.flags(seen, run.n_labels, run.at_chance()))
    prediction = curve_model.predict(run, k) if curve_model is not None else None
    chance = run.at_chance().ceiling(rules.CHANCE_ACCURACY_MARGIN)
    reason = ""
    for flag in found:
        if flag.kind in _FATAL:
            reason = f"{flag.kind.lower().replace('_', '-')} since epoch {flag.since_epoch}"
            break
        sure = None if prediction is None else _quantile(prediction, verdict.chance_quantile)
        if flag.kind == "AT_CHANCE" and (sure is None or sure <= chance):
            reason = f"at chance since epoch {flag.since_epoch}"
            break
    if not reason and prediction is not None and k >= verdict.model_epoch:
        bars = [(chance, "chance")]
        if task_best is not None:
            bars.append((HALF_OF_BEST * task_best, f"half of its task's best ({task_best:.3f})"))
        if below > 0:
            bars.append((below, "its threshold"))
        bar, name = max(bars)
        sure = _quantile(prediction, verdict.quantile)
        if sure < bar:
            reason = (
                f"predicted to end at {prediction.median:.3f} ({verdict.quantile:.0%} sure "
                f"below {sure:.3f}), below {name}: {bar:.3f}"
            )
    return Assessment(k, found, prediction, bool(reason), reason)


def _quantile(p: Prediction, q: float) -> float:
    """The prediction's quantile q (the upper quartile of a model fitted without it is
    its upper quantile)."""
    at = {LOW: p.low, MEDIAN: p.median, LIKELY: p.likely, HIGH: p.high, CEILING: p.ceiling}
    found = at.get(q)
    if found is None:
        raise ValueError(f"the curve model fits no quantile {q}")
    return found if math.isfinite(found) else p.high
