"""The curve rules on known curves: the prototype's own document is at chance from its
first epoch; divergence, overfitting and non-finite losses are named with their epoch;
healthy curves and noise fire nothing."""

from __future__ import annotations

import json
import math
from pathlib import Path

from learning.curves.rules import Point, flags, from_losses
from metalearn.documents import attempt_from_document

FIXTURE = Path(__file__).parent / "fixtures" / "attempt_american_dog_species_3.json"


def _kinds(found: list) -> list[str]:  # type: ignore[type-arg]
    return [f.kind for f in found]


def test_the_prototypes_document_is_at_chance_since_epoch_1() -> None:
    attempt = attempt_from_document(json.loads(FIXTURE.read_text()))
    n_labels = len(attempt.training_commands.label_names)
    found = flags(from_losses(attempt.training_losses), n_labels)
    assert _kinds(found) == ["AT_CHANCE"]
    assert found[0].since_epoch == 1
    assert "ln(9) = 2.197" in found[0].detail


def test_a_learning_curve_fires_nothing() -> None:
    losses = [2.3 * math.exp(-0.4 * e) + 0.05 for e in range(10)]
    points = [Point(e + 1, x, val_loss=x * 1.1, val_accuracy=min(0.99, 0.3 + 0.07 * e))
              for e, x in enumerate(losses)]  # fmt: skip
    assert flags(points, 10) == []


def test_a_run_that_leaves_chance_is_no_longer_flagged() -> None:
    losses = [math.log(10)] * 4 + [1.5, 1.0, 0.6]
    assert flags(from_losses(losses), 10) == []
    # ... and one that falls back to chance is flagged from when it did.
    found = flags(from_losses([1.0, 0.8, math.log(10), math.log(10) + 0.02, math.log(10)]), 10)
    assert _kinds(found) == ["AT_CHANCE"] and found[0].since_epoch == 3


def test_chance_by_validation_accuracy() -> None:
    points = [Point(e, 1.0 - 0.01 * e, val_accuracy=0.2 + 0.01 * (e % 2)) for e in range(1, 6)]
    found = flags(points, 5)
    assert _kinds(found) == ["AT_CHANCE"] and found[0].since_epoch == 1
    assert "validation accuracy" in found[0].detail


def test_divergence_is_named_from_where_the_rise_began() -> None:
    found = flags(from_losses([1.0, 0.7, 0.5, 0.9, 1.6, 3.0]), 4)
    assert _kinds(found) == ["DIVERGING"] and found[0].since_epoch == 4
    # A small wobble upwards is noise.
    assert flags(from_losses([1.0, 0.7, 0.5, 0.501, 0.502, 0.503]), 4) == []


def test_overfitting_needs_the_training_loss_to_fall() -> None:
    train = [1.0, 0.6, 0.4, 0.3, 0.2, 0.1]
    val = [1.0, 0.7, 0.6, 0.8, 1.0, 1.3]
    points = [Point(e + 1, t, val_loss=v) for e, (t, v) in enumerate(zip(train, val, strict=True))]
    found = flags(points, 10)
    assert _kinds(found) == ["OVERFITTING"] and found[0].since_epoch == 4
    both_rise = [Point(e + 1, v, val_loss=v) for e, v in enumerate(val)]
    assert _kinds(flags(both_rise, 10)) == ["DIVERGING"]


def test_a_non_finite_loss_is_the_only_flag() -> None:
    found = flags(from_losses([math.log(10)] * 3 + [math.nan]), 10)
    assert _kinds(found) == ["NON_FINITE"] and found[0].since_epoch == 4


def test_too_few_epochs_fire_nothing_and_one_label_has_no_chance() -> None:
    assert flags(from_losses([math.log(10)] * 2), 10) == []
    assert flags(from_losses([0.0] * 5), 1) == []
    assert flags([], 10) == []
