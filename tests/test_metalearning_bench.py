"""The meta-learning benchmark's replay on a made-up table where the answer is known:
two kinds of task, each with its own good commands, told apart by one meta-feature.
Warm starts must find a good command sooner than cold TPE, suggestions must be good,
and the learned distance must rank same-kind tasks first. And issue 14's pruning replay
on four made-up curves, where every pruner's epochs and regret can be counted by hand."""

from __future__ import annotations

import random

import pytest

from bench.metalearning import curves, evaluate
from learning.curves import chance, features, model, rules
from learning.curves.pruner import LearnedPruner
from metalearn.examples import grid


def _table() -> tuple[list[evaluate.TableTask], dict[str, dict[str, float]]]:
    rng = random.Random(7)
    n = len(grid.points())
    good = {0: {5, 6}, 1: {40, 41}}
    tasks, profiles = [], {}
    for i in range(8):
        kind = i % 2
        values = {str(p): 0.3 + 0.3 * rng.random() for p in range(n)}
        for p in good[kind]:
            values[str(p)] = 0.95 + 0.01 * rng.random()
        name = f"t{i}"
        tasks.append(evaluate.TableTask(name, (name,), values))
        profiles[name] = {"kind": kind + rng.gauss(0, 0.05), "noise": rng.gauss(0, 1)}
    return tasks, profiles


def test_the_replay_finds_what_the_history_knows() -> None:
    tasks, profiles = _table()
    figures = evaluate.leave_one_out(tasks, profiles, seeds=1, budget=24, zero_shot=2)
    assert figures["warm_trials_median"] <= 2
    assert figures["warm_trials_median"] < figures["cold_tpe_trials_median"]
    assert figures["suggest_good_fraction"] == 1.0
    assert figures["distance_regret_spearman"] > 0.5
    assert set(figures) >= {"warm_cold_trials_ratio", "random_trials_median",
                            "standardized_regret_spearman"}  # fmt: skip


class _Oracle(model.CurveModel):
    """A curve model that knows every run's final accuracy (its ceiling is exactly it)."""

    def __init__(self) -> None:
        super().__init__({}, 0, 0)

    def predict(self, run: features.Run, k: int) -> model.Prediction | None:
        final = run.points[-1].val_accuracy
        return model.Prediction(final, final, final, final, final)


def _search() -> list[curves.TableRun]:
    """Four runs of 10 epochs, rising linearly from their first epoch to their final."""
    found = []
    for i, (first, final) in enumerate(((0.5, 0.9), (0.4, 0.5), (0.1, 0.3), (0.2, 0.95))):
        points = [
            rules.Point(e, 1.0 / e, 1.0 / e, first + (final - first) * (e - 1) / 9)
            for e in range(1, 11)
        ]
        run = features.Run(points, 10, 10)
        found.append(curves.TableRun("t", i, run, final, features.without_loss(run)))
    return found


def test_the_pruning_replay_counts_epochs_and_regret() -> None:
    trials = _search()
    drawn: curves.Drawn = [("t", 1, trials)]

    def run(name: str, replay: curves.Replay) -> curves.Search:
        (found,) = curves.replay(drawn, name, {"t": replay})
        return found

    none = run("none", curves.no_pruning)
    assert (none.epochs, none.full, none.regret) == (40, 40, 0.0)
    # Top quarter after one epoch: only the first run (0.5 at epoch 1) goes on, and the
    # best (the last, a slow starter) is lost.
    top = run("top_k", curves.top_k_replay(0.25))
    assert top.epochs == 10 + 3 and top.regret == pytest.approx(0.05)
    # A model that knows the finals: after the first run (0.9) finishes, the two that end
    # lower stop at min_epoch, the one that beats it runs to the end.
    learned = run("learned", curves.learned_replay(_Oracle(), LearnedPruner(min_epoch=2)))
    assert learned.epochs == 10 + 2 + 2 + 10 and learned.regret == 0.0
    # Optuna's median pruner in a real study: after one finished trial, every later
    # trial's first epoch is below the finished one's, so each stops there.
    median = run("median", curves.optuna_replay("median", {"n_startup_trials": 1}))
    assert median.epochs == 10 + 1 + 1 + 1 and median.regret == pytest.approx(0.05)
    figures = curves.summary([none, top, learned])
    assert figures["epochs_ratio"] == pytest.approx((40 + 13 + 24) / 120)
    assert figures["regret_ok"] == pytest.approx(2 / 3)
    # The whole figure over searches drawn from the same runs, with a sweep.
    found = curves.pruning(
        trials,
        {"t": _Oracle()},
        seeds=2,
        trials=4,
        optuna_pruners={"median": {"n_startup_trials": 1}},
        sweep={"top_k": [{"share": 1.0}]},
    )
    assert found["epochs_ratio_none"] == 1.0 and found["regret_ok_learned"] == 1.0
    assert found["epochs_at_goal_top_k"] == 1.0  # only keeping every trial keeps the best
    assert found["learned_epochs_ratio"] < 1.0 and found["pruning_searches"] == 2


def test_the_verdict_is_the_most_recall_that_keeps_precision() -> None:
    # Ten runs, the first four bad. The eager verdict finds all four but calls two good
    # runs hopeless (precision 0.67); the careful one finds three with none wrong.
    truth = [True] * 4 + [False] * 6
    eager, careful, timid = curves.VERDICTS[0], curves.VERDICTS[1], curves.VERDICTS[2]
    said = {
        eager: [True] * 6 + [False] * 4,
        careful: [True] * 3 + [False] * 7,
        timid: [True] + [False] * 9,
    }
    assert curves.choose_verdict(said, truth) == careful
    # When none keeps the precision, the most precise.
    said[careful] = [True] * 3 + [False, True, True] + [False] * 4
    assert curves.choose_verdict(said, truth) == timid


def test_the_bad_runs_are_judged_against_the_majority_class() -> None:
    # Two runs of one task whose validation split is 18 of one label to 2 of the other:
    # the one that ends at 0.9 learnt nothing (it names the majority every time).
    at_chance = chance.of(2, [18, 2], [160, 20])

    def run(final: float) -> curves.TableRun:
        points = [rules.Point(e, 0.3, 0.3, final) for e in range(1, 11)]
        found = features.Run(points, 10, 2, chance=at_chance)
        return curves.TableRun("wide:t", 0, found, final, features.without_loss(found), "f")

    assert curves.bad_runs([run(0.9), run(1.0)]) == [True, False]


# --- RGPE, the published transfer baseline (bench/metalearning/rgpe.py) ----------------


def _line(values: list[float]) -> dict[str, float]:
    return {f"{i:02d}": v for i, v in enumerate(values)}


def test_rgpe_weighs_the_past_task_that_ranks_the_new_one_best() -> None:
    import torch

    from bench.metalearning import rgpe

    x = torch.linspace(0, 1, 16, dtype=rgpe.DTYPE).unsqueeze(-1)
    keys = [f"{i:02d}" for i in range(16)]
    rising = _line([i / 15 for i in range(16)])
    falling = _line([1 - i / 15 for i in range(16)])
    base = rgpe.base_models({"rising": rising, "falling": falling}, x, keys, {})
    seen = [0, 5, 10, 15]  # the new task rises like "rising"
    y = torch.tensor([rising[keys[i]] for i in seen], dtype=rgpe.DTYPE)
    weights = rgpe.ranking_weights(base, None, x[seen], y, torch.Generator().manual_seed(0))
    # Sorted by name: "falling" then "rising". The rising GP ranks all four points right
    # in every draw, the falling one wrong: all the weight, give or take nothing.
    assert weights.tolist() == pytest.approx([0.0, 1.0], abs=1e-9)
    # Before two trials nothing is ranked: the past tasks weigh alike.
    one = rgpe.ranking_weights(base, None, x[:1], y[:1], torch.Generator().manual_seed(0))
    assert one.tolist() == pytest.approx([0.5, 0.5], abs=1e-9)


def test_rgpe_finds_the_best_command_a_like_past_task_knows() -> None:
    import torch

    from bench.metalearning import rgpe

    x = torch.linspace(0, 1, 16, dtype=rgpe.DTYPE).unsqueeze(-1)
    keys = [f"{i:02d}" for i in range(16)]
    # Two past tasks peak at point 12; the new one too. Cold, the peak would take a
    # search; from the past tasks' GPs it is the first trial.
    peak = _line([1.0 - abs(i - 12) / 16 for i in range(16)])
    base = rgpe.base_models({"a": peak, "b": dict(peak)}, x, keys, {})
    found = rgpe.search(peak, base, x, keys, budget=4, seed=1)
    assert found[0] == max(peak.values())
    assert len(found) == 4
