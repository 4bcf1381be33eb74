"""The distance between tasks, and how its weights are learned from the store.

Pure functions over plain numbers: the gateway runs them on profiles and evaluations
read from PostgreSQL, the meta-learning benchmark on its table, the same code.

A task is a vector of meta-features (its profile). Each feature is z-scored over the
tasks known, and the distance is a weighted Euclidean one over the z-scores:
d(i, j) = sqrt(sum_k w_k (z_ik - z_jk)^2). The *standardized* distance weighs every
feature 1. The *learned* one fits w >= 0 so that d^2 tracks the transfer regret of task
pairs: how much worse, on task i, the best command of task j is than i's own best
(normalized to 0..1 within i). That is metric learning by non-negative least squares
(scipy's `nnls`), ridge-regularized towards uniform weights so that a small store cannot
pull it far from the standardized baseline. Written here because no well-kept library
fits a feature-weighted metric to a pairwise target: metric-learn's methods learn from
class labels or similar/dissimilar pairs, not from a graded pairwise loss.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import nnls
from scipy.stats import spearmanr

# Fewer measured pairs than this and the distance stays standardized.
MIN_PAIRS = 12
MIN_TASKS = 4
# Ridge towards uniform weights, per feature, in units of the pairs' count.
RIDGE = 0.05
# A task's best commands whose regret on another task measures how well it transfers.
TOP_COMMANDS = 3

# Tasks and commands are named by text (a task key, a command's signature).
TaskId = str


@dataclass(frozen=True)
class Distance:
    """A fitted distance: the features it reads, their centring and scale, weights."""

    kind: str  # "learned" or "standardized"
    features: tuple[str, ...]
    means: tuple[float, ...]
    scales: tuple[float, ...]
    weights: tuple[float, ...]
    tasks: int = 0
    pairs: int = 0
    spearman: float = math.nan
    standardized_spearman: float = math.nan
    extra: dict[str, float] = field(default_factory=dict)

    def z(self, profile: Mapping[str, float]) -> np.ndarray:
        """The profile's z-scores; NaN for a feature it lacks (a declared task's profile
        has only the features its declaration gives: learning/tasks/declared.py)."""
        x = np.array([float(profile.get(f, math.nan)) for f in self.features])
        z: np.ndarray = (x - np.array(self.means)) / np.array(self.scales)
        return z

    def between(self, a: Mapping[str, float], b: Mapping[str, float]) -> float:
        """The distance from target `a` to `b`. A feature the target has and `b` lacks (a
        declared task's) counts as its expected squared difference under the standardized
        features' own prior, a standard normal z-score: z^2 + 1. So a task known by a few
        features is no nearer than what is known of it says: sharing its class count with
        the target does not put it before a task measured close on every feature. A
        feature the target lacks counts 0: it cannot tell candidates apart. (So from a
        declared target the distance is not symmetric.) scikit-learn's
        `nan_euclidean_distances` scales the shared features up instead, which puts a
        task known by one matching feature at distance 0; and it has no feature
        weights."""
        za, zb = self.z(a), self.z(b)
        lack_a, lack_b = np.isnan(za), np.isnan(zb)
        squared = np.where(lack_a, 0.0, np.where(lack_b, za * za + 1.0, (za - zb) ** 2))
        # Learned weights were fitted on pairs of whole profiles, where a feature that
        # never varied (every measured task's size, say) may weigh 0: a pair with a
        # partial profile is compared with every feature weighing 1.
        whole = not (lack_a.any() or lack_b.any())
        weights = np.array(self.weights) if whole else np.ones(len(self.weights))
        return float(math.sqrt(float(np.dot(weights, squared))))

    def to_many(self, a: Mapping[str, float], others: Sequence[Mapping[str, float]]) -> np.ndarray:
        """`between(a, b)` for every b at once: one array operation over all of them,
        not one per task (2,000 tasks took 33 ms one by one)."""
        return self.to_rows(a, rows(self.features, others))

    def to_rows(self, a: Mapping[str, float], x: np.ndarray) -> np.ndarray:
        """`to_many` of profiles already made rows of this distance's features (`rows`)."""
        if not len(x):
            return np.zeros(0)
        za = self.z(a)
        zb = (x - np.array(self.means)) / np.array(self.scales)
        lack_a, lack_b = np.isnan(za), np.isnan(zb)
        squared = np.where(lack_a, 0.0, np.where(lack_b, za * za + 1.0, (za - zb) ** 2))
        whole = ~(lack_a.any() | lack_b.any(axis=1))
        weights = np.where(whole[:, None], np.array(self.weights), 1.0)
        found: np.ndarray = np.sqrt(np.einsum("ij,ij->i", weights, squared))
        return found

    def standardized(self) -> Distance:
        return Distance(
            "standardized",
            self.features,
            self.means,
            self.scales,
            tuple(1.0 for _ in self.features),
            self.tasks,
        )


def common_features(profiles: Sequence[Mapping[str, float]]) -> tuple[str, ...]:
    """The features at least half of the profiles have, finite, in a fixed order: every
    feature when all were measured from images, and a declared profile's few features do
    not take away the others."""
    if not profiles:
        return ()
    counts: dict[str, int] = {}
    for profile in profiles:
        for name, value in profile.items():
            if math.isfinite(float(value)):
                counts[name] = counts.get(name, 0) + 1
    return tuple(sorted(n for n, c in counts.items() if 2 * c >= len(profiles)))


def standardized(profiles: Mapping[TaskId, Mapping[str, float]]) -> Distance:
    """Every feature z-scored over the tasks that have it and weighted 1."""
    rows = list(profiles.values())
    names = common_features(rows)
    if not rows or not names:
        return Distance("standardized", (), (), (), ())
    x = np.array([[float(p.get(n, math.nan)) for n in names] for p in rows])
    x = np.where(np.isfinite(x), x, np.nan)
    means = np.nanmean(x, axis=0)
    scales = np.nanstd(x, axis=0)
    # A feature constant over the store carries no information: scale 1 keeps it at 0.
    scales = np.where(scales > 1e-9, scales, 1.0)
    return Distance(
        "standardized",
        names,
        tuple(float(m) for m in means),
        tuple(float(s) for s in scales),
        tuple(1.0 for _ in names),
        tasks=len(rows),
    )


def normalized_regret(values: Mapping[str, float], command: str) -> float | None:
    """How far `command`'s value on a task is from that task's best, 0 (its best) to 1
    (its worst); None when the task never ran it. Values: higher is better."""
    if command not in values:
        return None
    best, worst = max(values.values()), min(values.values())
    if best - worst <= 1e-12:
        return 0.0
    return (best - values[command]) / (best - worst)


def best_commands(values: Mapping[str, float], count: int) -> list[str]:
    """The `count` commands with the highest values (ties by the command's key)."""
    return sorted(values, key=lambda c: (-values[c], c))[:count]


def transfer_regrets(
    evaluations: Mapping[TaskId, Mapping[str, float]], top: int = TOP_COMMANDS
) -> dict[tuple[TaskId, TaskId], float]:
    """r(i <- j): the mean normalized regret on task i of task j's `top` best commands
    (those i ran), for every ordered pair where i ran at least one of them. The mean of a
    few rather than the single best: the best of many runs is partly luck (validation
    noise), and a task's few best commands say more about what transfers."""
    found: dict[tuple[TaskId, TaskId], float] = {}
    best = {t: best_commands(v, top) for t, v in evaluations.items() if v}
    for i, values in evaluations.items():
        for j, commands in best.items():
            if i == j:
                continue
            regrets = [r for c in commands if (r := normalized_regret(values, c)) is not None]
            if regrets:
                found[(i, j)] = sum(regrets) / len(regrets)
    return found


def _spearman(x: Sequence[float], y: Sequence[float]) -> float:
    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return math.nan
    return float(spearmanr(x, y).statistic)


def rank_agreement(
    distance: Distance,
    profiles: Mapping[TaskId, Mapping[str, float]],
    regrets: Mapping[tuple[TaskId, TaskId], float],
) -> float:
    """Mean over target tasks of the Spearman correlation between the distance to each
    other task and that task's transfer regret: how well the distance ranks neighbours."""
    by_target: dict[TaskId, tuple[list[float], list[float]]] = {}
    for (i, j), r in regrets.items():
        if i in profiles and j in profiles:
            ds, rs = by_target.setdefault(i, ([], []))
            ds.append(distance.between(profiles[i], profiles[j]))
            rs.append(r)
    values = [_spearman(ds, rs) for ds, rs in by_target.values()]
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def fit(
    profiles: Mapping[TaskId, Mapping[str, float]],
    evaluations: Mapping[TaskId, Mapping[str, float]],
    ridge: float = RIDGE,
    task_weights: Mapping[TaskId, float] | None = None,
) -> Distance:
    """The learned distance, or the standardized one when there is too little to learn
    from (fewer than MIN_TASKS profiled tasks with evaluations or MIN_PAIRS pairs).
    `task_weights` (default 1) weigh each pair by the product of its tasks' weights: how
    far their numbers are evidence (runs trained here) rather than claims."""
    base = standardized(profiles)
    regrets = {
        pair: r
        for pair, r in transfer_regrets(evaluations).items()
        if pair[0] in profiles and pair[1] in profiles
    }
    # The weights are fitted on tasks with every feature (a pair's row cannot hold a
    # feature one of them lacks); the others are compared on what they have.
    whole = {t for t in profiles if np.all(np.isfinite(base.z(profiles[t])))}
    regrets = {pair: r for pair, r in regrets.items() if pair[0] in whole and pair[1] in whole}
    tasks = {t for pair in regrets for t in pair}
    baseline = rank_agreement(base, profiles, regrets)
    if len(tasks) < MIN_TASKS or len(regrets) < MIN_PAIRS or not base.features:
        return Distance(
            "standardized",
            base.features,
            base.means,
            base.scales,
            base.weights,
            tasks=len(tasks),
            pairs=len(regrets),
            spearman=baseline,
            standardized_spearman=baseline,
        )
    # Each pair's squared z-differences; the target is the pair's regret as a rank in
    # 0..1 (what matters is the order of neighbours, not the regret's scale).
    pairs = list(regrets)
    z = {t: base.z(profiles[t]) for t in tasks}
    a = np.array([(z[i] - z[j]) ** 2 for i, j in pairs])
    order = np.argsort(np.argsort([regrets[p] for p in pairs], kind="stable"), kind="stable")
    target = order / max(len(pairs) - 1, 1)
    # Weighted least squares: each pair's row (its intercept too) scaled by the root of
    # its weight, so a pair of claimed tasks pulls the weights less than one of evidence.
    weight = task_weights or {}
    root = np.sqrt([weight.get(i, 1.0) * weight.get(j, 1.0) for i, j in pairs])
    a, target = a * root[:, None], target * root
    # An intercept (pairs at distance 0 still lose something) and the ridge rows that
    # pull every weight towards the one uniform weight `c` that fits best alone.
    sums = a.sum(axis=1)
    c = float(np.dot(sums, target) / max(float(np.dot(sums, sums)), 1e-12))
    k = a.shape[1]
    # The ridge in units of the pairs' total weight (their count when all weigh 1), so
    # weighing every pair alike changes nothing.
    lam = math.sqrt(ridge * float(np.sum(root * root)))
    design = np.vstack(
        [np.hstack([a, root[:, None]]), np.hstack([lam * np.eye(k), np.zeros((k, 1))])]
    )
    rhs = np.concatenate([target, np.full(k, lam * c)])
    solution, _ = nnls(design, rhs)
    weights = solution[:k]
    if not np.any(weights > 0):
        weights = np.ones(k)
    # Only the ratios matter for ranking; scale so that the mean weight is 1.
    weights = weights / weights.mean()
    learned = Distance(
        "learned",
        base.features,
        base.means,
        base.scales,
        tuple(float(w) for w in weights),
        tasks=len(tasks),
        pairs=len(pairs),
    )
    return dataclasses.replace(
        learned,
        spearman=rank_agreement(learned, profiles, regrets),
        standardized_spearman=baseline,
    )


def rows(features: Sequence[str], profiles: Sequence[Mapping[str, float]]) -> np.ndarray:
    """Profiles as an array, a row each, a column per feature (NaN where one lacks it)."""
    return np.array(
        [[float(p.get(f, math.nan)) for f in features] for p in profiles], dtype=float
    ).reshape(len(profiles), len(features))


def nearest_rows(
    distance: Distance,
    target: Mapping[str, float],
    ids: Sequence[TaskId],
    x: np.ndarray,
    limit: int,
) -> list[tuple[TaskId, float]]:
    """`nearest` of candidates given as rows of the distance's features (`rows`)."""
    found = distance.to_rows(target, x)
    scored = [(t, float(d)) for t, d in zip(ids, found, strict=True)]
    scored.sort(key=lambda item: (item[1], repr(item[0])))
    return scored[:limit]


def nearest(
    distance: Distance,
    target: Mapping[str, float],
    candidates: Mapping[TaskId, Mapping[str, float]],
    limit: int,
) -> list[tuple[TaskId, float]]:
    """The `limit` candidates closest to `target`, nearest first (ties by id)."""
    ids = list(candidates)
    x = rows(distance.features, [candidates[t] for t in ids])
    return nearest_rows(distance, target, ids, x, limit)
