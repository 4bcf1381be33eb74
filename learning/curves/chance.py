"""What a run that has learnt nothing scores (issue 29): the bar every rule and verdict
about "chance" reads.

A classifier that has learnt nothing names the largest class every time. On the
validation split that scores the largest class's share of it, not 1/n_labels: on a
task of two labels where one holds nine images in ten, a run stuck at 0.9 has learnt
nothing. Its cross-entropy is the entropy of the training split's class shares
(ln(n_labels) only when they are equal).

Where the counts are unknown (a run from an older trainer, an import, a reported run
that declared only its labels), chance is 1/n_labels and ln(n_labels), as before.
Pure: no store, no model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

# How close an accuracy must be to a label's share to be that share: stored accuracies
# keep 4 decimals, and two labels' shares of a split under 10,000 images differ by more.
ONE_CLASS_TOLERANCE = 1e-4


@dataclass(frozen=True)
class Chance:
    """What learning nothing scores on a run's data."""

    # The validation accuracy of always naming the largest class.
    accuracy: float
    # The training loss (cross-entropy) of predicting the class shares.
    loss: float
    # How `accuracy` was found, in words for a flag's detail.
    source: str
    n_labels: int = 2
    # Each label's share of the validation split (empty: not known).
    shares: tuple[float, ...] = ()

    def one_class(self, accuracy: float) -> int | None:
        """The label whose share of the validation split this accuracy is (what naming
        that label every time scores), if it is one's; None when the shares are not
        known or it is none's."""
        for i, share in enumerate(self.shares):
            if abs(accuracy - share) <= ONE_CLASS_TOLERANCE:
                return i
        return None

    def ceiling(self, margin: float) -> float:
        """The validation accuracy still read as chance: `margin` above it, but never
        more than half the way to 1 (on a split where one class holds 95 %, 0.95 is
        chance and 1.0 is not)."""
        return self.accuracy + min(margin, (1.0 - self.accuracy) / 2)

    def describe(self) -> str:
        """The accuracy bar, in words."""
        if self.source == "uniform":
            return f"1/{self.n_labels} = {self.accuracy:.3f}"
        return f"the largest class's share of the {self.source}, {self.accuracy:.3f}"

    def describe_loss(self) -> str:
        """The loss bar, in words."""
        if self.source == "uniform" or math.isclose(self.loss, math.log(self.n_labels)):
            return f"ln({self.n_labels}) = {self.loss:.3f}"
        return f"{self.loss:.3f} (the entropy of its classes' shares)"


def uniform(n_labels: int) -> Chance:
    n = max(n_labels, 2)
    return Chance(1 / n, math.log(n), "uniform", n)


def of(
    n_labels: int,
    validation_per_label: Sequence[int] = (),
    images_per_label: Sequence[int] = (),
) -> Chance:
    """Chance for a run of `n_labels` labels, from its validation split's counts per
    label (the accuracy) and its training images per label (the loss), where known."""
    base = uniform(n_labels)
    loss = _entropy(images_per_label) if _usable(images_per_label, n_labels) else base.loss
    if _usable(validation_per_label, n_labels):
        total = sum(validation_per_label)
        shares = tuple(c / total for c in validation_per_label)
        return Chance(max(shares), loss, "validation split", n_labels, shares)
    if _usable(images_per_label, n_labels):
        # The validation split is a hash-chosen tenth of these: the same shares, on
        # average.
        share = max(images_per_label) / sum(images_per_label)
        return Chance(share, loss, "training images", n_labels)
    return Chance(base.accuracy, loss, "uniform", base.n_labels)


def _usable(counts: Sequence[int], n_labels: int) -> bool:
    return len(counts) == n_labels >= 2 and all(c >= 0 for c in counts) and sum(counts) > 0


def _entropy(counts: Sequence[int]) -> float:
    total = sum(counts)
    return -sum(c / total * math.log(c / total) for c in counts if c > 0)
