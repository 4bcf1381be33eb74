"""Leave-one-task-out evaluation over the learning-curve table, in seconds.

Each task in turn is the new one: its profile is known, its curves are not. The methods
see only the other tasks (profiles and table rows), exactly as the gateway would see a
store holding them, and simulated searches replay the left-out task's stored values
instead of training. Every search uses the gateway's own code: `sampling.ask` (Optuna
rebuilt per ask), `similarity` and `warmstart`.

A search "reaches" the task when the best value found has a normalized regret of at most
0.05: (best - found) / (best - worst) over the task's table row.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from optuna.trial import TrialState
from scipy.stats import spearmanr

from learning.studies import sampling, space
from learning.tasks import similarity, warmstart
from metalearn.errors import Violations
from metalearn.examples import grid
from metalearn.v1 import study_service_pb2

REACHED = 0.05
# A task is hard when at most this many of the grid's 64 commands are within REACHED of
# its best (a random command then has under a 1-in-10 chance).
HARD = 6


@dataclass(frozen=True)
class TableTask:
    name: str
    labels: tuple[str, ...]
    # Grid point index (as text, as the learning code names commands) -> the objective
    # (best validation accuracy over the epochs).
    values: dict[str, float]


def objective(row: Mapping[str, Any]) -> float:
    """Best validation accuracy over a run's epochs; a run that failed or diverged before
    any finite epoch counts as 0."""
    finite = [v for v in row["val_accuracy"] if isinstance(v, float | int) and math.isfinite(v)]
    return float(max(finite)) if finite else 0.0


def load(table: Mapping[str, Any]) -> list[TableTask]:
    return [
        TableTask(
            t["name"],
            tuple(t["labels"]),
            {str(i): objective(row) for i, row in enumerate(t["points"])},
        )
        for t in table["tasks"]
    ]


def parameters(commands: grid.Grid = grid.CLASSIC) -> list[space.Parameter]:
    v = Violations()
    searched = [
        study_service_pb2.SearchParameter(
            path=p["path"],
            categorical=study_service_pb2.Choices(
                values=[_value(x) for x in p["categorical"]["values"]]
            ),
        )
        for p in commands.space
    ]
    found = space.parse(v, "search_space", commands.base_command(["x"]), searched)
    assert not v.items, v.items
    return found


def _value(x: Any) -> Any:
    from google.protobuf import struct_pb2

    value = struct_pb2.Value()
    if isinstance(x, str):
        value.string_value = x
    elif isinstance(x, bool):
        value.bool_value = x
    elif isinstance(x, dict):
        value.struct_value.update(x)
    else:
        value.number_value = float(x)
    return value


def internal_of(point: Mapping[str, Any], params: Sequence[space.Parameter]) -> dict[str, Any]:
    """A grid point as Optuna holds it (each choice's canonical JSON text)."""
    out = {}
    for p in params:
        value = space.internal_value(p, point[p.path])
        assert value is not None, (p.path, point[p.path])
        out[p.path] = value
    return out


def regret(values: Mapping[str, float], found: float) -> float:
    best, worst = max(values.values()), min(values.values())
    return 0.0 if best - worst <= 1e-12 else (best - found) / (best - worst)


@dataclass
class Search:
    """One simulated search on a left-out task."""

    values: dict[str, float]
    budget: int
    lookup: dict[str, int]  # canonical internal -> point index

    def trials_to_reach(
        self,
        sampler: str,
        seed: int,
        params: Sequence[space.Parameter],
        first: Sequence[str] = (),
        priors: Sequence[tuple[str, float]] = (),
    ) -> int:
        """Trials until one is within REACHED; budget + 1 when none is."""
        trials: list[sampling.PastTrial] = []
        own: list[float] = []
        points = grid.points()
        for n in range(self.budget):
            if n < len(first):
                index = first[n]
            else:
                scaled = [
                    (internal_of(points[int(i)], params), warmstart.on_own_scale(g, own, True))
                    for i, g in priors
                ]
                asked = sampling.ask("sim", params, True, sampler, {}, seed, trials, {}, scaled)
                index = str(self.lookup[_key(asked.internal)])
            value = self.values[index]
            own.append(value)
            trials.append(
                sampling.PastTrial(
                    n, internal_of(points[int(index)], params), TrialState.COMPLETE, value
                )
            )
            if regret(self.values, value) <= REACHED:
                return n + 1
        return self.budget + 1


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def _key(internal: Mapping[str, Any]) -> str:
    return "|".join(f"{k}={internal[k]}" for k in sorted(internal))


def lookup_table(
    params: Sequence[space.Parameter], commands: grid.Grid = grid.CLASSIC
) -> dict[str, int]:
    return {_key(internal_of(p, params)): i for i, p in enumerate(commands.points())}


def leave_one_out(
    tasks: Sequence[TableTask],
    profiles: Mapping[str, Mapping[str, float]],
    *,
    seeds: int = 3,
    budget: int = 64,
    neighbours: int = 5,
    zero_shot: int = 3,
) -> dict[str, float]:
    params = parameters()
    lookup = lookup_table(params)
    evaluations = {t.name: dict(t.values) for t in tasks}
    cold: list[int] = []
    random_search: list[int] = []
    warm: list[int] = []
    # The same, on the hard tasks only: at most HARD of the grid's commands within reach.
    hard: dict[str, list[int]] = {"cold": [], "warm": [], "random": []}
    suggest_regrets: list[float] = []
    learned_rho: list[float] = []
    fixed_rho: list[float] = []
    # (learned distance, standardized distance, transfer regret) of every left-out task
    # and every other task.
    pairs: list[tuple[float, float, float]] = []
    for task in tasks:
        others = {t.name: profiles[t.name] for t in tasks if t.name != task.name}
        other_evals = {n: evaluations[n] for n in others}
        distance = similarity.fit(others, other_evals)
        near = similarity.nearest(distance, profiles[task.name], others, neighbours)
        weights = warmstart.neighbour_weights(near)
        ranked = warmstart.portfolio(other_evals, weights)
        suggest_regrets.append(regret(task.values, task.values[ranked[0].command]))
        # (c): the distance's ranking of every other task against their transfer regret.
        regrets = similarity.transfer_regrets({**other_evals, task.name: task.values})
        mine = {pair: r for pair, r in regrets.items() if pair[0] == task.name}
        both = {**others, task.name: profiles[task.name]}
        learned_rho.append(similarity.rank_agreement(distance, both, mine))
        fixed = similarity.standardized(others)
        fixed_rho.append(similarity.rank_agreement(fixed, both, mine))
        for (_, source), r in mine.items():
            pairs.append((distance.between(profiles[task.name], profiles[source]),
                          fixed.between(profiles[task.name], profiles[source]), r))  # fmt: skip
        first = [s.command for s in ranked[:zero_shot]]
        prior = [(p.command, p.goodness) for p in warmstart.priors(other_evals, weights)]
        search = Search(task.values, budget, lookup)
        within = sum(regret(task.values, v) <= REACHED for v in task.values.values())
        for seed in range(1, seeds + 1):
            found = {
                "cold": search.trials_to_reach("tpe", seed, params),
                "random": search.trials_to_reach("random", seed, params),
                "warm": search.trials_to_reach("tpe", seed, params, first, prior),
            }
            cold.append(found["cold"])
            random_search.append(found["random"])
            warm.append(found["warm"])
            if within <= HARD:
                for arm, n in found.items():
                    hard[arm].append(n)
    good = [r <= REACHED for r in suggest_regrets]
    finite_learned = [r for r in learned_rho if math.isfinite(r)]
    finite_fixed = [r for r in fixed_rho if math.isfinite(r)]
    return {
        "tasks": len(tasks),
        "seeds": seeds,
        "warm_trials_median": statistics.median(warm),
        "cold_tpe_trials_median": statistics.median(cold),
        "random_trials_median": statistics.median(random_search),
        "warm_cold_trials_ratio": statistics.median(warm) / statistics.median(cold),
        "hard_tasks": len(hard["cold"]) // seeds,
        "hard_warm_trials_median": statistics.median(hard["warm"]) if hard["warm"] else math.nan,
        "hard_cold_tpe_trials_median": statistics.median(hard["cold"])
        if hard["cold"]
        else math.nan,
        "hard_random_trials_median": statistics.median(hard["random"])
        if hard["random"]
        else math.nan,
        "warm_trials_mean": float(np.mean(warm)),
        "cold_tpe_trials_mean": float(np.mean(cold)),
        "random_trials_mean": float(np.mean(random_search)),
        "suggest_good_fraction": sum(good) / len(good),
        "suggest_regret_median": statistics.median(suggest_regrets),
        # (c) over every (left-out task, other task) pair; then the mean of each left-out
        # task's own correlation (how well it ranks one task's neighbours).
        "distance_regret_spearman": float(
            spearmanr([p[0] for p in pairs], [p[2] for p in pairs]).statistic
        ),
        "standardized_regret_spearman": float(
            spearmanr([p[1] for p in pairs], [p[2] for p in pairs]).statistic
        ),
        "distance_regret_spearman_per_task": float(np.mean(finite_learned))
        if finite_learned
        else math.nan,
        "standardized_regret_spearman_per_task": float(np.mean(finite_fixed))
        if finite_fixed
        else math.nan,
    }


# Which meta-features earn their place: (b) and (c) with the profile cut to each group.
FEATURE_GROUPS: dict[str, tuple[str, ...]] = {
    "simple": ("log_images", "log_classes", "imbalance", "log_pixels", "channels",
               "pixel_mean", "pixel_std", "pixel_skew", "sparsity"),
    "landmarkers": ("landmark_centroid", "landmark_1nn", "landmark_linear"),
    "probe": ("probe_1nn", "probe_centroid", "probe_fisher", "probe_class_distance"),
    "views": ("centre_centroid", "centre_1nn", "centre_linear", "grey_centroid", "grey_1nn",
              "grey_linear"),
}  # fmt: skip


def ablation(
    tasks: Sequence[TableTask],
    profiles: Mapping[str, Mapping[str, float]],
    neighbours: int = 5,
) -> dict[str, float]:
    """Leave-one-task-out suggestions and distance agreement with the simple features
    alone, with the landmarkers added, and with everything (the probe too)."""
    evaluations = {t.name: dict(t.values) for t in tasks}
    cuts = {
        "simple": FEATURE_GROUPS["simple"],
        "simple_landmarkers": FEATURE_GROUPS["simple"] + FEATURE_GROUPS["landmarkers"],
        "all": tuple(n for group in FEATURE_GROUPS.values() for n in group),
    }
    found: dict[str, float] = {}
    for cut, names in cuts.items():
        cut_profiles = {t: {n: p[n] for n in names if n in p} for t, p in profiles.items()}
        good, distances, regrets = [], [], []
        for task in tasks:
            others = {t.name: cut_profiles[t.name] for t in tasks if t.name != task.name}
            other_evals = {n: evaluations[n] for n in others}
            distance = similarity.fit(others, other_evals)
            near = similarity.nearest(distance, cut_profiles[task.name], others, neighbours)
            ranked = warmstart.portfolio(other_evals, warmstart.neighbour_weights(near))
            good.append(regret(task.values, task.values[ranked[0].command]) <= REACHED)
            for (_, source), r in similarity.transfer_regrets(
                {**other_evals, task.name: task.values}
            ).items():
                if _ == task.name:
                    distances.append(
                        distance.between(cut_profiles[task.name], cut_profiles[source])
                    )
                    regrets.append(r)
        found[f"ablation_{cut}_suggest_good_fraction"] = sum(good) / len(good)
        found[f"ablation_{cut}_distance_regret_spearman"] = float(
            spearmanr(distances, regrets).statistic
        )
    return found
