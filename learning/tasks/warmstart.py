"""Starting from what worked on similar tasks: neighbour weights, the portfolio of
commands to try first, and past trials turned into a sampler's prior knowledge.

Pure functions over plain numbers, shared by the gateway (SuggestCommand, warm-started
studies) and the meta-learning benchmark that replays them over its table.

A task's raw accuracies are not comparable with another's (90 % is poor on one task and
excellent on the next), so every value is first turned into its quantile within its own
task (1 = that task's best, 0 = its worst). A command's score is the similarity-weighted
mean of its quantiles over the neighbours that ran it, shrunk towards the middle when few
did: a command good on every close task beats one that was best on a single task once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

# Weight (in units of the neighbours' total weight 1) of the 0.5 prior that a command's
# score is shrunk towards: a command seen on one far task cannot outrank one seen on all.
SHRINK = 0.25
MAX_PRIORS = 300

Command = str
# Tasks and commands are named by text (a task key, a command's signature).
TaskId = str


def quantiles(values: Mapping[Command, float]) -> dict[Command, float]:
    """Each command's quantile within its task, 0 (worst) to 1 (best); ties share the
    mean rank. Higher values are better."""
    if not values:
        return {}
    keys = list(values)
    if len(keys) == 1:
        return {keys[0]: 1.0}
    ranks = rankdata([values[k] for k in keys], method="average")
    return {k: float((r - 1) / (len(keys) - 1)) for k, r in zip(keys, ranks, strict=True)}


def neighbour_weights(distances: Sequence[tuple[TaskId, float]]) -> dict[TaskId, float]:
    """Similarity weights of the neighbours (nearest first), summing to 1: a Gaussian
    kernel whose width is the median neighbour distance, so the weights follow how much
    closer one neighbour is than the others rather than the distance's units."""
    if not distances:
        return {}
    ds = np.array([max(d, 0.0) for _, d in distances])
    width = float(np.median(ds))
    # All at distance 0: the nearest alone (a near-copy of the task) carry the weight.
    raw = np.where(ds <= 1e-12, 1.0, 1e-6) if width <= 1e-12 else np.exp(-0.5 * (ds / width) ** 2)
    raw = raw / raw.sum()
    return {t: float(w) for (t, _), w in zip(distances, raw, strict=True)}


@dataclass(frozen=True)
class Scored:
    """A candidate command: its score and where the evidence came from."""

    command: Command
    score: float
    # (task, quantile there) for each neighbour that ran it.
    evidence: tuple[tuple[TaskId, float], ...]


def portfolio(
    evaluations: Mapping[TaskId, Mapping[Command, float]],
    weights: Mapping[TaskId, float],
    shrink: float = SHRINK,
) -> list[Scored]:
    """Every command the weighted neighbours ran, best score first (ties: more evidence,
    then the command's key)."""
    per_task = {t: quantiles(evaluations.get(t, {})) for t in weights}
    commands: set[Command] = set()
    for qs in per_task.values():
        commands.update(qs)
    scored = []
    for command in commands:
        evidence = tuple((t, per_task[t][command]) for t in weights if command in per_task[t])
        mass = sum(weights[t] for t, _ in evidence)
        total = sum(weights[t] * q for t, q in evidence)
        scored.append(Scored(command, (total + shrink * 0.5) / (mass + shrink), evidence))
    scored.sort(key=lambda s: (-s.score, -len(s.evidence), repr(s.command)))
    return scored


def zero_shot(
    evaluations: Mapping[TaskId, Mapping[Command, float]],
    weights: Mapping[TaskId, float],
    count: int,
) -> list[Scored]:
    """The first `count` distinct commands to try: the portfolio's best."""
    return portfolio(evaluations, weights)[: max(count, 0)]


@dataclass(frozen=True)
class Prior:
    """A past trial as prior knowledge: its command and its goodness, 0..1 (the quantile
    within its task, pulled towards 0.5 the less similar its task is)."""

    command: Command
    goodness: float
    task: TaskId


def priors(
    evaluations: Mapping[TaskId, Mapping[Command, float]],
    weights: Mapping[TaskId, float],
    limit: int = MAX_PRIORS,
) -> list[Prior]:
    """Every neighbour's trials as priors; the nearest neighbour keeps its full spread,
    a neighbour half as heavy keeps half of it. At most `limit`, heaviest tasks first."""
    if not weights:
        return []
    top = max(weights.values())
    found = []
    for task in sorted(weights, key=lambda t: (-weights[t], repr(t))):
        spread = weights[task] / top if top > 0 else 0.0
        ranked = sorted(quantiles(evaluations.get(task, {})).items(), key=lambda cq: repr(cq[0]))
        for command, q in ranked:
            found.append(Prior(command, 0.5 + (q - 0.5) * spread, task))
    return found[:limit]


def on_own_scale(goodness: float, own: Sequence[float], maximize: bool) -> float:
    """A prior's goodness as a value of this study's objective: the quantile of the
    study's own finished values (at least two), or the goodness itself (flipped for a
    minimized objective) before there are any to compare with."""
    finite = [v for v in own if math.isfinite(v)]
    if len(finite) < 2:
        return goodness if maximize else 1.0 - goodness
    q = goodness if maximize else 1.0 - goodness
    return float(np.quantile(np.array(finite), min(max(q, 0.0), 1.0)))
