"""Rules for the unambiguous ways a training run goes bad, read off its curve (issue 14).

Pure functions over an attempt's epochs: no store, no model. Each rule fires from the
first epochs it can be sure of, and says since which epoch:

- NON_FINITE: a loss that is NaN or infinite (the trainer already ends such a run).
- AT_CHANCE: the training loss flat at what a classifier that learnt nothing scores
  with cross-entropy (ln(n_labels) for even classes), or the validation accuracy at the
  largest class's share of the validation split (1/n_labels for even classes; see
  `chance`), for the last CHANCE_EPOCHS epochs or more. The prototype's own document is
  the textbook case: 100 epochs between 2.15 and 2.24 for nine labels (ln 9 = 2.197).
- DIVERGING: the training loss rising epoch after epoch, by more than noise.
- OVERFITTING: the validation loss rising while the training loss falls.

Written by hand: these are a few comparisons over a short list, and no library states
them (Optuna's pruners compare trials with each other, not one curve with chance).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from learning.curves.chance import Chance, uniform

# Consecutive epochs a rule needs before it fires (one or two can be noise).
CHANCE_EPOCHS = 3
RISING_EPOCHS = 3
# The band around ln(n_labels) that counts as chance: relative, with a floor.
CHANCE_LOSS_TOLERANCE = 0.05
CHANCE_LOSS_FLOOR = 0.05
# A validation accuracy this close above chance counts as chance (less on a split where
# chance is near 1: `Chance.ceiling`).
CHANCE_ACCURACY_MARGIN = 0.05
# A rise smaller than this (relative to where it started) is noise, not divergence.
MIN_RISE = 0.1


@dataclass(frozen=True)
class Point:
    """One epoch as the rules read it; NaN where the run did not measure a value."""

    epoch: int
    loss: float
    val_loss: float = math.nan
    val_accuracy: float = math.nan


@dataclass(frozen=True)
class Flag:
    kind: str  # NON_FINITE, AT_CHANCE, DIVERGING, OVERFITTING
    since_epoch: int
    detail: str


def _trailing(points: Sequence[Point], holds: list[bool]) -> int | None:
    """The epoch where the last unbroken run of `holds` began, if it is long enough."""
    count = 0
    for ok in reversed(holds):
        if not ok:
            break
        count += 1
    if count < CHANCE_EPOCHS:
        return None
    return points[len(points) - count].epoch


def _non_finite(points: Sequence[Point]) -> Flag | None:
    for p in points:
        if not math.isfinite(p.loss):
            return Flag("NON_FINITE", p.epoch, f"the loss is {p.loss} at epoch {p.epoch}")
    return None


def _at_chance(points: Sequence[Point], chance: Chance) -> Flag | None:
    found = _one_class(points, chance)
    if found is not None:
        return found
    band = max(CHANCE_LOSS_TOLERANCE * chance.loss, CHANCE_LOSS_FLOOR)
    since = _trailing(points, [abs(p.loss - chance.loss) <= band for p in points])
    if since is not None:
        return Flag(
            "AT_CHANCE",
            since,
            f"the loss has stayed within {band:.3g} of {chance.describe_loss()}, what learning "
            f"nothing scores, since epoch {since}",
        )
    return _accuracy_at_chance(points, chance)


def _one_class(points: Sequence[Point], chance: Chance) -> Flag | None:
    """AT_CHANCE, said as what it is when the validation accuracy is exactly one label's
    share of the validation split epoch after epoch: the model names that label every
    time. (Not surer than any other AT_CHANCE: a slow run names one label for several
    epochs, then learns.)"""
    measured = [p for p in points if math.isfinite(p.val_accuracy)]
    named = [chance.one_class(p.val_accuracy) for p in measured]
    same = [n is not None and n == named[-1] for n in named]
    since = _trailing(measured, same) if measured else None
    if since is None:
        return None
    return Flag(
        "AT_CHANCE",
        since,
        f"the validation accuracy has been {measured[-1].val_accuracy:.4g}, label "
        f"{named[-1]}'s share of the validation split, since epoch {since}: the model "
        "names that label every time",
    )


def _accuracy_at_chance(points: Sequence[Point], chance: Chance) -> Flag | None:
    found = _one_class(points, chance)
    if found is not None:
        return found
    measured = [p for p in points if math.isfinite(p.val_accuracy)]
    if measured:
        ceiling = chance.ceiling(CHANCE_ACCURACY_MARGIN)
        since = _trailing(measured, [p.val_accuracy <= ceiling for p in measured])
        if since is not None:
            return Flag(
                "AT_CHANCE",
                since,
                f"the validation accuracy has stayed at chance ({chance.describe()}) "
                f"since epoch {since}",
            )
    return None


def _rising(values: Sequence[float]) -> int | None:
    """Where the trailing strict rise of `values` began (an index), if it lasted
    RISING_EPOCHS epochs and rose by more than MIN_RISE of where it started."""
    start = len(values) - 1
    while start > 0 and values[start - 1] < values[start]:
        start -= 1
    rises = len(values) - 1 - start
    if rises < RISING_EPOCHS:
        return None
    base = values[start]
    if values[-1] - base <= MIN_RISE * max(abs(base), 1e-12):
        return None
    return start


def _diverging(points: Sequence[Point]) -> Flag | None:
    losses = [p.loss for p in points]
    if not all(math.isfinite(x) for x in losses):
        return None
    start = _rising(losses)
    if start is None:
        return None
    p = points[start]
    return Flag("DIVERGING", p.epoch + 1,
                f"the loss has risen every epoch since epoch {p.epoch} "
                f"({losses[start]:.4g} to {losses[-1]:.4g})")  # fmt: skip


def _overfitting(points: Sequence[Point]) -> Flag | None:
    measured = [p for p in points if math.isfinite(p.val_loss) and math.isfinite(p.loss)]
    if len(measured) <= RISING_EPOCHS:
        return None
    start = _rising([p.val_loss for p in measured])
    if start is None or measured[-1].loss >= measured[start].loss:
        return None
    p = measured[start]
    return Flag("OVERFITTING", p.epoch + 1,
                f"the validation loss has risen every epoch since epoch {p.epoch} "
                f"({p.val_loss:.4g} to {measured[-1].val_loss:.4g}) while the training "
                f"loss fell ({p.loss:.4g} to {measured[-1].loss:.4g})")  # fmt: skip


def flags(points: Sequence[Point], n_labels: int, chance: Chance | None = None) -> list[Flag]:
    """Every rule that fires on this curve (epochs in order), in a fixed order. `chance`:
    what learning nothing scores on the run's data (default: even classes)."""
    ordered = sorted(points, key=lambda p: p.epoch)
    found = [_non_finite(ordered)]
    if found[0] is None and n_labels >= 2:
        found.append(_at_chance(ordered, chance or uniform(n_labels)))
    if found[0] is None:
        found += [_diverging(ordered), _overfitting(ordered)]
    return [f for f in found if f is not None]


def accuracy_flags(
    points: Sequence[Point], n_labels: int, chance: Chance | None = None
) -> list[Flag]:
    """The rules a curve known only by its validation accuracy can fire (its losses,
    unmeasured, say nothing)."""
    if n_labels < 2:
        return []
    ordered = sorted(points, key=lambda p: p.epoch)
    found = _accuracy_at_chance(ordered, chance or uniform(n_labels))
    return [found] if found is not None else []


def from_losses(losses: Sequence[float]) -> list[Point]:
    """A curve known only by its training losses (the prototype's documents)."""
    return [Point(i, float(x)) for i, x in enumerate(losses, 1)]
