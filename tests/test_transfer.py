"""The rankings a new task's first commands come from (learning/tasks/transfer.py), on
made-up histories whose answers are known: a static portfolio covers the tasks a single
default misses; a learned ranking finds the command a task's profile calls for; the
choice takes the learned ranking only when it wins on tasks it was not fitted on."""

from __future__ import annotations

import math

import numpy as np
import pytest

from learning.tasks import transfer

COMMANDS = {
    f"{name}-{lr}": {"optimizer": {"name": name, "lr": lr}, "batch_size": 32}
    for name in ("SGD", "Adam")
    for lr in (0.001, 0.01, 0.1)
}


# Which command is best for a task of each fifth of image sizes: more kinds of task than
# a portfolio's first TOP commands can cover.
BEST = ("SGD-0.1", "SGD-0.01", "Adam-0.01", "Adam-0.001", "SGD-0.001")


def _task(size: float, rng: np.random.Generator) -> dict[str, float]:
    """The command of the task's size is best; the rest are mediocre."""
    best = BEST[min(int(size * len(BEST)), len(BEST) - 1)]
    return {c: (0.95 if c == best else 0.5) + rng.normal(0, 0.01) for c in COMMANDS}


def _history(n: int, seed: int = 0) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    sizes = np.linspace(0.05, 0.95, n)
    names = [f"t{i}" for i in range(n)]
    pairs = list(zip(names, sizes, strict=True))
    profiles = {t: {"log_pixels": float(s), "log_classes": 1.0} for t, s in pairs}
    evaluations = {t: _task(float(s), rng) for t, s in pairs}
    return profiles, evaluations


def test_normalized_values_and_regret() -> None:
    values = {"a": 0.9, "b": 0.5, "c": 0.7}
    assert transfer.normalized(values) == pytest.approx({"a": 1.0, "b": 0.0, "c": 0.5})
    assert transfer.normalized({"a": 0.3, "b": 0.3}) == {"a": 1.0, "b": 1.0}
    assert transfer.regret_of(values, ["b", "c"]) == pytest.approx(0.5)
    assert transfer.regret_of(values, ["x"]) == 1.0
    assert transfer.normalized({"a": math.nan, "b": 0.2}) == {"a": 0.0, "b": 1.0}


def test_the_static_portfolio_covers_what_one_default_misses() -> None:
    evaluations = {
        "t1": {"a": 0.9, "b": 0.1, "c": 0.5},
        "t2": {"a": 0.9, "b": 0.1, "c": 0.5},
        "t3": {"a": 0.1, "b": 0.9, "c": 0.3},
    }
    # "a" is best on most tasks; "b" then covers the task "a" misses, though "c" has
    # the higher mean.
    assert transfer.static_portfolio(evaluations) == ["a", "b", "c"]
    assert transfer.static_portfolio(evaluations, 1) == ["a"]
    # Ties go to the smaller key, as the gateway breaks them.
    assert transfer.static_portfolio({"t": {"y": 0.5, "x": 0.5}}) == ["x", "y"]


def test_settings_read_numbers_and_text_that_vary() -> None:
    settings = transfer.Settings.of(COMMANDS)
    assert settings.paths == ("optimizer.lr", "optimizer.name")  # batch_size never varies
    assert settings.categorical == [False, True]
    assert settings.row({"optimizer": {"name": "Adam", "lr": 0.01}}) == [0.01, 0.0]
    unseen = settings.row({"optimizer": {"name": "Lion"}})
    assert all(math.isnan(x) for x in unseen)


def test_the_learned_ranking_follows_the_profile() -> None:
    profiles, evaluations = _history(20)
    ranker = transfer.fit_ranker(profiles, evaluations, COMMANDS)
    assert ranker is not None and ranker.tasks == 20
    for size, best in ((0.1, "SGD-0.1"), (0.5, "Adam-0.01"), (0.9, "SGD-0.001")):
        assert ranker.rank({"log_pixels": size, "log_classes": 1.0}, COMMANDS)[0][0] == best
    # The same data, the same model.
    again = transfer.fit_ranker(profiles, evaluations, COMMANDS)
    assert again is not None and again.rank(profiles["t0"], COMMANDS) == ranker.rank(
        profiles["t0"], COMMANDS
    )
    assert transfer.fit_ranker(*_history(transfer.MIN_TASKS - 1), COMMANDS) is None


def test_the_choice_takes_the_learned_ranking_only_where_it_wins() -> None:
    profiles, evaluations = _history(20)
    chosen = transfer.choose(profiles, evaluations, COMMANDS)
    assert chosen.kind == "learned", chosen
    assert chosen.learned_regret < chosen.static_regret
    assert "better on" in chosen.why
    # One command best everywhere: nothing to learn beyond the portfolio.
    rng = np.random.default_rng(1)
    flat = {t: {c: (0.9 if c == "Adam-0.01" else 0.4) + rng.normal(0, 0.01) for c in COMMANDS}
            for t in evaluations}  # fmt: skip
    chosen = transfer.choose(profiles, flat, COMMANDS)
    assert chosen.kind == "static" and "did not beat" in chosen.why, chosen
    few = transfer.choose(*_history(transfer.MIN_TASKS), COMMANDS)
    assert few.kind == "static" and "too few past tasks" in few.why


def test_a_setting_only_some_commands_have_is_read_as_one_that_varies() -> None:
    # A crop of one size in half the commands and none in the others (the wide grid's
    # CenterCrop: False or {"size": 8}): the size never varies where it is there, but
    # being there is the choice, so the model has to see it.
    commands = {
        "plain": {"optimizer": {"lr": 0.01}, "transform": {"CenterCrop": False}},
        "crop": {"optimizer": {"lr": 0.01}, "transform": {"CenterCrop": {"size": 8}}},
        "crop-fast": {"optimizer": {"lr": 0.1}, "transform": {"CenterCrop": {"size": 8}}},
    }
    settings = transfer.Settings.of(commands)
    assert "transform.CenterCrop.size" in settings.paths
    assert "transform.CenterCrop" in settings.paths
    size = settings.paths.index("transform.CenterCrop.size")
    assert math.isnan(settings.row(commands["plain"])[size])
    assert settings.row(commands["crop"])[size] == 8.0


def test_a_feature_few_past_tasks_have_does_not_stop_the_fit() -> None:
    # Profiles made before a feature existed lack it: a bootstrap sample may draw none
    # of the tasks that have it, and the fit must still stand (the gateway fits on
    # whatever its store holds).
    profiles, evaluations = _history(8)
    profiles["t0"] = {**profiles["t0"], "centre_1nn": 0.3}
    for seed in range(4):
        ranker = transfer.fit_ranker(profiles, evaluations, COMMANDS, seed=seed)
        assert ranker is not None
        assert len(ranker.rank(profiles["t1"], COMMANDS)) == len(COMMANDS)
    assert transfer.fit(profiles, evaluations, COMMANDS).static


def test_the_learned_order_leads_with_its_first_then_hedges_with_the_portfolio() -> None:
    assert transfer.led(["x", "a", "y"], ["a", "b"]) == ["x", "a", "b", "y"]
    # When the model agrees with the portfolio's first, the portfolio's order follows.
    assert transfer.led(["a", "y"], ["a", "b"]) == ["a", "b", "y"]
    profiles, evaluations = _history(20)
    fitted = transfer.fit(profiles, evaluations, COMMANDS)
    assert fitted.choice.kind == "learned"
    order = [c for c, _ in fitted.order({"log_pixels": 0.9, "log_classes": 1.0})]
    assert order[0] == "SGD-0.001"
    assert order[1] == fitted.static[0] != order[0]
    assert sorted(order) == sorted(COMMANDS)
