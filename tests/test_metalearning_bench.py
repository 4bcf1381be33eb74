"""The meta-learning benchmark's replay on a made-up table where the answer is known:
two kinds of task, each with its own good commands, told apart by one meta-feature.
Warm starts must find a good command sooner than cold TPE, suggestions must be good,
and the learned distance must rank same-kind tasks first."""

from __future__ import annotations

import random

from bench.metalearning import evaluate, grid


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
