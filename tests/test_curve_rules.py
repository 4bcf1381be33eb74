"""The curve rules on known curves: the prototype's own document is at chance from its
first epoch; divergence, overfitting and non-finite losses are named with their epoch;
healthy curves and noise fire nothing."""

from __future__ import annotations

import json
import math
from pathlib import Path

from gateway.curves import forecast
from gateway.curves.live import run_of_row
from gateway.store.curves import CurveRow
from learning.curves import chance
from learning.curves.prognosis import assess
from learning.curves.rules import Point, accuracy_flags, flags, from_losses
from metalearn.documents import attempt_from_document
from metalearn.v1 import curve_service_pb2 as cpb

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


def test_chance_is_the_largest_class_share_of_the_validation_split() -> None:
    # Two labels, one with nine images in ten: naming it every time scores 0.9.
    majority = chance.of(2, validation_per_label=[18, 2], images_per_label=[160, 20])
    assert majority.accuracy == 0.9 and majority.source == "validation split"
    # The loss bar is the entropy of the training images' shares (8/9 and 1/9).
    entropy = -(8 / 9 * math.log(8 / 9) + 1 / 9 * math.log(1 / 9))
    assert math.isclose(majority.loss, entropy, rel_tol=1e-9)
    # Without the validation split's counts, the training images' shares stand in;
    # with neither (an import, an older trainer), even classes.
    assert chance.of(2, images_per_label=[160, 20]).accuracy == 160 / 180
    assert chance.of(2, [1, 2, 3]).source == "uniform"  # counts that do not fit the labels
    assert chance.of(4) == chance.uniform(4)
    # Near 1, the margin shrinks to half the way: 0.9 is chance, 1.0 is not.
    assert math.isclose(majority.ceiling(0.05), 0.95)
    assert math.isclose(chance.of(19, [1] * 19).ceiling(0.05), 1 / 19 + 0.05)


def test_a_run_stuck_at_the_majority_class_is_at_chance() -> None:
    majority = chance.of(2, validation_per_label=[18, 2], images_per_label=[160, 20])
    # Accuracy 0.9 on every epoch, the loss at the entropy of the shares (0.325).
    stuck = [Point(e, 0.33, val_loss=0.33, val_accuracy=0.9) for e in range(1, 6)]
    found = flags(stuck, 2, majority)
    assert _kinds(found) == ["AT_CHANCE"] and found[0].since_epoch == 1
    # Exactly the largest label's share, epoch after epoch: it names that label.
    assert "label 0's share of the validation split" in found[0].detail
    # Read against 1/n_labels, the same run looked like it learnt: nothing fired.
    assert flags(stuck, 2) == []
    # Known by its accuracies alone, the accuracy rule says the same.
    blind = [Point(p.epoch, math.nan, val_accuracy=p.val_accuracy) for p in stuck]
    assert "names that label every time" in accuracy_flags(blind, 2, majority)[0].detail
    # Near the largest share but moving, it is at chance by the margin, not named.
    wobbly = [Point(e, 0.2, 0.2, 0.9 + 0.01 * (e % 2)) for e in range(1, 6)]
    found = flags(wobbly, 2, majority)
    assert _kinds(found) == ["AT_CHANCE"]
    assert "largest class's share of the validation split, 0.900" in found[0].detail
    # The loss at the entropy of the classes' shares is chance too.
    flat = [Point(e, 0.34, math.nan, math.nan) for e in range(1, 5)]
    assert "entropy of its classes' shares" in flags(flat, 2, majority)[0].detail
    # One that learns the rare class leaves chance.
    learning = [*stuck[:2], *(Point(e, 0.1, 0.12, 1.0) for e in range(3, 6))]
    assert flags(learning, 2, majority) == []


def test_the_gateway_reads_chance_from_the_dataset_its_trainer_reported() -> None:
    # As the store holds it: DatasetFingerprint as proto JSON (int64 as strings).
    row = CurveRow(
        attempt_id=1, task_key="k", command={"label_names": ["a", "b"], "n_epoch": 3},
        n_epoch=3, epochs=[1, 2, 3], losses=[0.33] * 3, learning_rates=[0.1] * 3,
        val_losses=[0.33] * 3, val_accuracies=[0.9] * 3, features={},
        dataset={"images_per_label": ["160", "20"], "validation_images_per_label": ["18", "2"]},
    )  # fmt: skip
    run = run_of_row(row)
    assert run.at_chance().accuracy == 0.9
    assessed = assess(run, 3, None)
    assert assessed.hopeless and assessed.reason.startswith("at chance since epoch 1")
    # A document without them (an older trainer's, an import) reads even classes.
    older = run_of_row(CurveRow(**{**row.__dict__, "dataset": {"images_per_label": "junk"}}))
    assert older.at_chance() == chance.uniform(2) and not assess(older, 3, None).hopeless


def test_a_forecast_reads_chance_from_the_callers_validation_split() -> None:
    request = cpb.ForecastCurveRequest(n_epoch=10, n_labels=2, validation_images_per_label=[18, 2])
    for _ in range(3):
        request.epochs.add(val_accuracy=0.9)
    forecast.check(request)
    run = forecast.run_of(request, {})
    assert run.at_chance().accuracy == 0.9
    assert _kinds(accuracy_flags(run.points, 2, run.at_chance())) == ["AT_CHANCE"]
