"""Transfer judged so that it cannot flatter us (issue 29): leave-one-family-out as the
headline, leave-one-task-out beside it, mean normalized regret after 1, 3, 5 and 10
trials, every method beside the baselines in the same run.

For each task in turn, the history is every other task (leave-one-task-out) or every
task of another family (leave-one-family-out: nothing of the left-out task's own kind is
known). Each method then searches the left-out task's grid for 10 trials, replaying its
stored values, and its normalized regret after k trials is (best - best found so far) /
(best - worst) over the task's table row. Methods:

- `random`, `cold_tpe`: Optuna's random and TPE samplers through the gateway's own
  `sampling.ask` (seeded);
- `static`: the static portfolio (`transfer.static_portfolio`, no distance), then TPE
  with no priors;
- `similarity`: what the gateway's warm start did before issue 29: the k nearest tasks'
  similarity-weighted portfolio first, then TPE with their trials as priors;
- `learned`: the learned ranking (`transfer.fit_ranker`) in the order the gateway tries
  it (`transfer.led`: its first command, then the static portfolio's), then TPE;
- `warm`: what the gateway does now (`transfer.choose`: the learned ranking where it beat
  the static portfolio on held-out past tasks, else the static portfolio), then TPE;
- `rgpe`: the ranking-weighted GP ensemble on BoTorch (Feurer et al. 2018;
  bench/metalearning/rgpe.py), a published transfer method: one GP per past task, one
  on the left-out task's trials, weighted by how well each ranks its observations, and
  expected improvement over the grid from the first trial to the last (one seed: its
  only randomness is the sampled weights).

Portfolio methods try ZERO_SHOT commands before their sampler. Ties are broken as the
gateway breaks them (by the command's key: here the grid point's index as text).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from optuna.trial import TrialState

from bench.metalearning import rgpe
from bench.metalearning.evaluate import TableTask, internal_of, lookup_table, parameters, regret
from learning.studies import sampling, space
from learning.tasks import similarity, transfer, warmstart
from metalearn.examples import grid
from metalearn.examples import tasks as example_tasks

KS = (1, 3, 5, 10)
BUDGET = max(KS)
ZERO_SHOT = 3
NEIGHBOURS = 5
# A first command this far from the best "leaves a gap" for `gap_closed_first_trial`.
GAP = 0.05


# A task where the best static default is this far below its own best (accuracy)
# needs more than a default: issue 29 asks for a suite where a third of tasks do.
WIDE_GAP = 0.10


def family_of(task: TableTask) -> str:
    """The task's family (digits, shapes, letters, colours, painted, arrows, textures:
    the variant named by its labels)."""
    return example_tasks.family(task.labels[0].split("/", 1)[0])


@dataclass(frozen=True)
class History:
    """What a method may learn from for one left-out task, and the task distance fitted
    on it (once: the similarity methods and the rank agreement share it)."""

    evaluations: dict[str, dict[str, float]]
    profiles: dict[str, dict[str, float]]
    distance: similarity.Distance
    # Every command of the grid, by its key (the grid point's index as text).
    commands: dict[str, dict[str, Any]]


Order = Callable[[History, Mapping[str, float]], list[str]]


def static_order(history: History, profile: Mapping[str, float]) -> list[str]:
    return transfer.static_portfolio(history.evaluations, ZERO_SHOT)


def _neighbour_weights(history: History, profile: Mapping[str, float]) -> dict[str, float]:
    near = similarity.nearest(history.distance, dict(profile), history.profiles, NEIGHBOURS)
    return warmstart.neighbour_weights(near)


def similarity_order(history: History, profile: Mapping[str, float]) -> list[str]:
    weights = _neighbour_weights(history, profile)
    return [s.command for s in warmstart.portfolio(history.evaluations, weights)[:ZERO_SHOT]]


def learned_order(history: History, profile: Mapping[str, float]) -> list[str]:
    ranker = transfer.fit_ranker(history.profiles, history.evaluations, history.commands)
    if ranker is None:
        return static_order(history, profile)
    ranked = [c for c, _ in ranker.rank(profile, history.commands)]
    return transfer.led(ranked, transfer.static_portfolio(history.evaluations))[:ZERO_SHOT]


def warm_order(history: History, profile: Mapping[str, float]) -> list[str]:
    """As the gateway orders a new task's first commands (`transfer.fit(...).order`)."""
    fitted = transfer.fit(history.profiles, history.evaluations, history.commands)
    return [c for c, _ in fitted.order(profile)[:ZERO_SHOT]]


def _similarity_priors(history: History, profile: Mapping[str, float]) -> list[tuple[str, float]]:
    weights = _neighbour_weights(history, profile)
    return [(p.command, p.goodness) for p in warmstart.priors(history.evaluations, weights)]


def search(
    values: Mapping[str, float],
    first: Sequence[str],
    sampler: str,
    seed: int,
    params: Sequence[space.Parameter],
    lookup: Mapping[str, int],
    priors: Sequence[tuple[str, float]] = (),
    commands: grid.Grid = grid.CLASSIC,
) -> list[float]:
    """The values found by BUDGET trials: `first` (distinct), then the sampler."""
    points = commands.points()
    trials: list[sampling.PastTrial] = []
    found: list[float] = []
    for n in range(BUDGET):
        if n < len(first):
            index = first[n]
        else:
            scaled = [
                (internal_of(points[int(i)], params), warmstart.on_own_scale(g, found, True))
                for i, g in priors
            ]
            asked = sampling.ask("sim", params, True, sampler, {}, seed, trials, {}, scaled)
            index = str(
                lookup["|".join(f"{k}={asked.internal[k]}" for k in sorted(asked.internal))]
            )
        value = values[index]
        found.append(value)
        trials.append(
            sampling.PastTrial(
                n, internal_of(points[int(index)], params), TrialState.COMPLETE, value
            )
        )
    return found


def curve(values: Mapping[str, float], found: Sequence[float]) -> list[float]:
    """Normalized regret of the best found after each trial."""
    best = -math.inf
    out = []
    for v in found:
        best = max(best, v)
        out.append(regret(values, best))
    return out


ORDERS: dict[str, Order] = {
    "static": static_order,
    "similarity": similarity_order,
    "learned": learned_order,
    "warm": warm_order,
}


def evaluate(
    tasks: Sequence[TableTask],
    profiles: Mapping[str, Mapping[str, float]],
    *,
    by_family: bool,
    seeds: int = 5,
    commands: grid.Grid = grid.CLASSIC,
) -> dict[str, Any]:
    """Every method on every left-out task: per method, the mean normalized regret after
    each of KS trials (over tasks and seeds), overall and per family; the first command's
    regret per task; and issue 29's figures."""
    params = parameters(commands)
    lookup = lookup_table(params, commands)
    by_key = {str(i): p for i, p in enumerate(commands.points())}
    families = {t.name: family_of(t) for t in tasks}
    curves: dict[str, list[tuple[str, list[float]]]] = {}
    keys = sorted(by_key)  # the gateway's tie order: the command's key as text
    encoded = rgpe.encode([by_key[k] for k in keys], params)
    gps: dict[str, Any] = {}  # a past task's GP, whichever task is left out
    firsts: dict[str, dict[str, float]] = {}
    spearman: list[float] = []
    for task in tasks:
        others = [
            t for t in tasks
            if t.name != task.name and (not by_family or families[t.name] != families[task.name])
        ]  # fmt: skip
        evaluations = {t.name: dict(t.values) for t in others}
        known = {t.name: dict(profiles[t.name]) for t in others}
        history = History(evaluations, known, similarity.fit(known, evaluations), by_key)
        profile = profiles[task.name]
        orders: dict[str, list[str]] = {
            name: make(history, profile) for name, make in ORDERS.items()
        }
        priors = _similarity_priors(history, profile)
        for name, order in orders.items():
            firsts.setdefault(name, {})[task.name] = regret(task.values, task.values[order[0]])
        # The distance's ranking of this task's sources against their transfer regret.
        regrets = similarity.transfer_regrets({**history.evaluations, task.name: task.values})
        mine = {pair: r for pair, r in regrets.items() if pair[0] == task.name}
        rho = similarity.rank_agreement(
            history.distance, {**history.profiles, task.name: dict(profile)}, mine
        )
        if math.isfinite(rho):
            spearman.append(rho)
        found = rgpe.search(
            task.values, rgpe.base_models(evaluations, encoded, keys, gps), encoded, keys,
            BUDGET, seed=1,
        )  # fmt: skip
        curves.setdefault("rgpe", []).append((task.name, curve(task.values, found)))
        firsts.setdefault("rgpe", {})[task.name] = regret(task.values, found[0])
        for seed in range(1, seeds + 1):
            runs = {
                "random": search(task.values, (), "random", seed, params, lookup, (), commands),
                "cold_tpe": search(task.values, (), "tpe", seed, params, lookup, (), commands),
            }
            for name, order in orders.items():
                chosen = priors if name in ("similarity", "warm") else ()
                runs[name] = search(
                    task.values, order, "tpe", seed, params, lookup, chosen, commands
                )
            for name, found in runs.items():
                curves.setdefault(name, []).append((task.name, curve(task.values, found)))
    figures = _figures(curves, firsts, families, spearman, seeds)
    figures.update(static_gap(tasks))
    return figures


def static_gap(tasks: Sequence[TableTask]) -> dict[str, float]:
    """How much a suite needs more than a default: the best static default (the static
    portfolio's first command, fitted on every task) against each task's own best, in
    accuracy: the share of tasks it leaves WIDE_GAP or more below (`static_gap_share`),
    and the mean gap."""
    evaluations = {t.name: dict(t.values) for t in tasks}
    first = transfer.static_portfolio(evaluations, 1)[0]
    gaps = [max(t.values.values()) - t.values[first] for t in tasks]
    return {
        "static_gap_share": float(np.mean([g >= WIDE_GAP - 1e-9 for g in gaps])),
        "static_gap_mean": float(np.mean(gaps)),
    }


def _mean_at(rows: Sequence[tuple[str, list[float]]], k: int) -> float:
    return float(np.mean([c[k - 1] for _, c in rows])) if rows else math.nan


def _figures(
    curves: Mapping[str, list[tuple[str, list[float]]]],
    firsts: Mapping[str, Mapping[str, float]],
    families: Mapping[str, str],
    spearman: Sequence[float],
    seeds: int,
) -> dict[str, Any]:
    out: dict[str, Any] = {"tasks": len(families), "seeds": seeds}
    for name, rows in curves.items():
        for k in KS:
            out[f"{name}_regret_at_{k}"] = _mean_at(rows, k)
    # Per family (of the left-out task): family_<family>_<figure>.
    for family in sorted(set(families.values())):
        for name, rows in curves.items():
            mine = [r for r in rows if families[r[0]] == family]
            for k in KS:
                out[f"family_{family}_{name}_regret_at_{k}"] = _mean_at(mine, k)
        for name, by_task in firsts.items():
            mine_first = [r for t, r in by_task.items() if families[t] == family]
            out[f"family_{family}_{name}_suggest_good_fraction"] = float(
                np.mean([r <= GAP for r in mine_first])
            )
    for name, by_task in firsts.items():
        out[f"{name}_suggest_good_fraction"] = float(np.mean([r <= GAP for r in by_task.values()]))
    # The share of the static portfolio's first-trial regret the warm start's first removes,
    # on the tasks where that regret is at least GAP.
    gaps = [
        (firsts["static"][t] - firsts["warm"][t]) / firsts["static"][t]
        for t in firsts["static"]
        if firsts["static"][t] >= GAP
    ]
    out["gap_tasks"] = len(gaps)
    out["gap_closed_first_trial"] = float(np.mean(gaps)) if gaps else math.nan
    out["suggest_good_fraction"] = out["warm_suggest_good_fraction"]
    out["warm_vs_static_regret_at_3"] = out["warm_regret_at_3"] / max(
        out["static_regret_at_3"], 1e-9
    )
    out["warm_vs_cold_tpe_regret_at_3"] = out["warm_regret_at_3"] / max(
        out["cold_tpe_regret_at_3"], 1e-9
    )
    out["distance_regret_spearman_per_task"] = float(np.mean(spearman)) if spearman else math.nan
    return out
