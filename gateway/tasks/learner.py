"""What the gateway learns from its history: the task distance (fitted, kept, refitted),
a task's neighbours, the command to suggest, and a study's warm-start plan.

The maths lives in `similarity` and `warmstart` (pure, shared with the benchmark); this
module reads the store, groups its finished attempts by task and by command, and keeps
the fitted distance in `task_distance` so that every replica answers with the same one.

It learns from evidence, not from claims: every run trained here, but an imported run or
one reported by users' own code only when its owner is trusted (an admin, an owner the
gateway was told to trust, or the caller asking), since any writer may claim anything.
The distance is shared by every caller, so it trusts no caller in particular. A trusted
claim still weighs less than evidence (`claim_weight`): each task weighs as the mean of
its runs' weights, in the distance's fit and among a target's neighbours.

Two kinds of task hold two kinds of "what was tried": a task of images held here, the
commands trained on it; a task declared by reported runs, the params their code ran with
(gateway/tasks/declaring.py). A suggestion or a warm start draws only on tasks of the
target's kind (what it proposes must be runnable there); similar tasks and the
distance's fit take every kind.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.store.tasks import Evaluation, TaskRecord, TaskStore
from learning import provenance
from learning.studies import space
from learning.tasks import similarity, transfer, warmstart

log = logging.getLogger(__name__)

# Refit the distance when this many studies have finished since the last fit, or the
# profiled tasks have grown by a quarter.
REFIT_AFTER_STUDIES = 3
REFIT_GROWTH = 1.25
# Keys of a command that belong to the task or the run, not to "what was tried".
_NOT_THE_COMMAND = ("label_names", "n_labels", "image_ops", "seed", "model_name")


def signature(command: Mapping[str, Any]) -> str:
    """A command as "what was tried": its JSON without the task's labels and image ops,
    the seed and names, so runs of one command on one task are grouped together."""
    kept = {k: v for k, v in command.items() if k not in _NOT_THE_COMMAND}
    return json.dumps(kept, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class Tried:
    """One command on one task: its mean value over its runs and its best run."""

    signature: str
    value: float
    best_attempt: Evaluation


def by_command(evaluations: Sequence[Evaluation]) -> dict[str, Tried]:
    runs: dict[str, list[Evaluation]] = {}
    for e in evaluations:
        runs.setdefault(signature(e.command), []).append(e)
    return {
        sig: Tried(
            sig,
            sum(e.best_val_accuracy for e in es) / len(es),
            max(es, key=lambda e: (e.best_val_accuracy, -e.attempt_id)),
        )
        for sig, es in runs.items()
    }


def _distance_json(d: similarity.Distance, ready: int) -> dict[str, Any]:
    def clean(x: float) -> float | None:
        return x if math.isfinite(x) else None

    return {
        "kind": d.kind,
        "features": list(d.features),
        "means": list(d.means),
        "scales": list(d.scales),
        "weights": list(d.weights),
        "tasks": d.tasks,
        "pairs": d.pairs,
        "spearman": clean(d.spearman),
        "standardized_spearman": clean(d.standardized_spearman),
        "ready_tasks": ready,
    }


def _distance_of(model: Mapping[str, Any]) -> similarity.Distance:
    def num(x: Any) -> float:
        return math.nan if x is None else float(x)

    return similarity.Distance(
        str(model["kind"]),
        tuple(model["features"]),
        tuple(model["means"]),
        tuple(model["scales"]),
        tuple(model["weights"]),
        int(model["tasks"]),
        int(model["pairs"]),
        num(model.get("spearman")),
        num(model.get("standardized_spearman")),
    )


@dataclass(frozen=True)
class Known:
    """The store as learning sees it: profiled tasks by key, and per key what was tried."""

    tasks: dict[str, TaskRecord]
    tried: dict[str, dict[str, Tried]]
    # Every finished run it may learn from (a warm start picks its own among them).
    runs: list[Evaluation]
    # The owners whose imported runs count (beside admins' and every trained run).
    trusted: tuple[str, ...] = ()
    # Per task key, how far its runs are evidence: the mean of their provenance weights.
    evidence: dict[str, float] = field(default_factory=dict)

    def values(self, keys: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
        chosen = self.tried if keys is None else {k: self.tried[k] for k in keys if k in self.tried}
        return {k: {s: t.value for s, t in ts.items()} for k, ts in chosen.items()}

    def profiles(self) -> dict[str, dict[str, float]]:
        return {k: dict(t.features or {}) for k, t in self.tasks.items()}


@dataclass(frozen=True)
class Fitted:
    """The distance in use and when it was fitted."""

    distance: similarity.Distance
    at: dt.datetime


@dataclass(frozen=True)
class Suggestion:
    command: dict[str, Any] | None  # None: no history (the caller's default)
    sources: list[tuple[TaskRecord, float, float, Evaluation, float]]  # task, d, w, run, q
    # Which ranking put it first ("learned" or "static") and the score it gave it.
    ranking: str = ""
    score: float = math.nan
    # The history the ranking was fitted on, and the held-out figures it was chosen by.
    choice: transfer.Choice | None = None


# A suggestion's ranking is fitted on at most this many past tasks (those with the most
# recent runs): a fit is seconds of CPU per hundred tasks. It is refitted once the tasks
# with history grew by a tenth (at least one) or their runs by a quarter.
MAX_TRANSFER_TASKS = 500
TRANSFER_TASK_GROWTH = 1.1
TRANSFER_RUN_GROWTH = 1.25


@dataclass(frozen=True)
class _Fitted:
    """A kind's ranking, and the state of the history it was fitted on."""

    model: transfer.Transfer
    keys: tuple[str, ...]
    stamp: tuple[Any, ...]


def fit_transfer(known: Known, declared: bool) -> tuple[transfer.Transfer, tuple[str, ...]]:
    """The rankings of the commands tried on tasks of one kind (commands on images held
    here, or declared tasks' params), fitted on the tasks with the newest runs."""
    newest: dict[str, int] = {}
    for e in known.runs:
        newest[e.key] = max(newest.get(e.key, 0), e.attempt_id)
    keys = [
        k for k, t in known.tasks.items()
        if k in known.tried and bool(t.declared) == declared
    ]  # fmt: skip
    keys = sorted(keys, key=lambda k: (-newest.get(k, 0), k))[:MAX_TRANSFER_TASKS]
    values = known.values(keys)
    commands = {sig: json.loads(sig) for k in keys for sig in known.tried[k]}
    profiles = {k: dict(known.tasks[k].features or {}) for k in keys}
    weights = {k: known.evidence.get(k, 1.0) for k in keys}
    return transfer.fit(profiles, values, commands, weights), tuple(keys)


class Learner:
    """One per gateway."""

    def __init__(
        self, tasks: TaskStore, trusted_owners: Sequence[str] = (), claim_weight: float = 1.0
    ) -> None:
        self._tasks = tasks
        self._trusted = tuple(sorted(set(trusted_owners)))
        self._claim_weight = claim_weight
        self._fit_lock = asyncio.Lock()
        # The rankings by (trusted owners, declared kind), refitted when the history moves.
        self._transfers: dict[tuple[tuple[str, ...], bool], _Fitted] = {}
        self._transfer_lock = asyncio.Lock()
        # What `known` read, by trusted owners, with the store's stamp when it was read.
        self._known: dict[tuple[str, ...], tuple[tuple[Any, ...], Known]] = {}

    def trusted(self, caller: str | None = None) -> tuple[str, ...]:
        """The owners whose imported runs count for `caller` (None: for what every
        caller shares): the configured ones, and the caller's own."""
        return tuple(sorted({*self._trusted, caller})) if caller else self._trusted

    def _shared(self, known: Known) -> int:
        """Profiled tasks every caller learns from alike (what decides a refit of the
        shared distance): a caller's own declared tasks do not count, or each call of a
        caller with many would refit it."""
        return sum(t.source == "IMAGES" or t.owner in self._trusted for t in known.tasks.values())

    async def known(self, caller: str | None = None) -> Known:
        """The store as `caller` may learn from it (None: as every caller may): kept per
        set of trusted owners until the store's learning stamp moves, since reading it
        is a row per finished run (seconds at a million attempts) and every
        FindSimilarTasks and SuggestCommand needs it."""
        trusted = self.trusted(caller)
        stamp = await self._tasks.learning_stamp()
        kept = self._known.get(trusted)
        if kept is not None and kept[0] == stamp:
            return kept[1]
        found = await self._read_known(trusted)
        if len(self._known) >= 64:  # one per caller's trust: keep it bounded
            self._known.clear()
        self._known[trusted] = (stamp, found)
        return found

    async def _read_known(self, trusted: tuple[str, ...]) -> Known:
        ready = {t.key: t for t in await self._tasks.ready(trusted)}
        runs = await self._tasks.evaluations(trusted)
        tried: dict[str, list[Evaluation]] = {}
        for e in runs:
            tried.setdefault(e.key, []).append(e)
        evidence = {
            k: sum(provenance.weight(e.provenance, self._claim_weight) for e in es) / len(es)
            for k, es in tried.items()
        }
        return Known(ready, {k: by_command(es) for k, es in tried.items()}, runs, trusted, evidence)

    async def fit(self, known: Known | None = None) -> Fitted:
        """Refits the distance on the store now and keeps it (on what every caller may
        learn from: a caller's own claims must not move everyone's distance)."""
        async with self._fit_lock:
            if known is None or known.trusted != self._trusted:
                known = await self.known()
            done = await self._tasks.studies_done()
            # Measured profiles (images here, or a sample) choose the distance's features
            # and scales; a store where declared tasks outnumber them must not take the
            # pixel features from everyone's distance. Declared profiles are compared on
            # what they have (similarity.Distance.between).
            measured = {
                k: p for k, p in known.profiles().items() if known.tasks[k].source != "DECLARED"
            }
            with_history = {k: p for k, p in (measured or known.profiles()).items()
                            if k in known.tried}  # fmt: skip
            # Fitting is numpy work on at most a few thousand pairs: off the event loop.
            distance = await asyncio.to_thread(
                similarity.fit,
                with_history,
                known.values(list(with_history)),
                similarity.RIDGE,
                known.evidence,
            )
            if not distance.features:  # nothing with history yet: scale over every task
                distance = similarity.standardized(measured or known.profiles())
            at = await self._tasks.save_distance(
                distance.kind, _distance_json(distance, self._shared(known)), done
            )
            log.info(
                "task distance refitted: %s over %d tasks, %d pairs",
                distance.kind,
                distance.tasks,
                distance.pairs,
            )
            return Fitted(distance, at)

    async def distance(self, known: Known) -> Fitted:
        """The kept distance, refitted first when enough has happened since. While no
        task every caller shares is profiled (a store of one owner's declared tasks),
        it has no features: the caller's own tasks are then scaled for this answer."""
        fitted = await self._kept_or_fitted(known)
        if not fitted.distance.features and known.tasks:
            return Fitted(similarity.standardized(known.profiles()), fitted.at)
        return fitted

    async def _kept_or_fitted(self, known: Known) -> Fitted:
        kept = await self._tasks.distance()
        if kept is not None:
            model, studies_at_fit, at = kept
            done = await self._tasks.studies_done()
            grown = self._shared(known) >= max(
                REFIT_GROWTH * int(model.get("ready_tasks", 0)),
                int(model.get("ready_tasks", 0)) + 1,
            )
            if done - studies_at_fit < REFIT_AFTER_STUDIES and not grown:
                return Fitted(_distance_of(model), at)
        return await self.fit(known)

    @staticmethod
    def neighbours(
        known: Known,
        distance: similarity.Distance,
        target: TaskRecord,
        limit: int,
        same_kind: bool = False,
    ) -> list[tuple[TaskRecord, float]]:
        """Past tasks with finished attempts, nearest first (the target itself left out);
        with `same_kind`, only tasks whose runs tried what the target's can (commands on
        images held here, or a declared task's params)."""
        candidates = {
            k: dict(t.features or {})
            for k, t in known.tasks.items()
            if k != target.key
            and k in known.tried
            and (not same_kind or t.declared == target.declared)
        }
        near = similarity.nearest(distance, dict(target.features or {}), candidates, limit)
        return [(known.tasks[str(k)], d) for k, d in near]

    async def transfer(self, known: Known, declared: bool) -> _Fitted:
        """The rankings for tasks of one kind, as fitted on `known` (kept until its runs
        or tasks change; fitted off the event loop, once for concurrent callers)."""
        stamp = (len(known.tried), len(known.runs))
        key = (known.trusted, declared)
        async with self._transfer_lock:
            kept = self._transfers.get(key)
            if kept is not None and not _grown(kept.stamp, stamp):
                return kept
            model, keys = await asyncio.to_thread(fit_transfer, known, declared)
            fitted = _Fitted(model, keys, stamp)
            if len(self._transfers) >= 64:  # one per caller's trust: keep it bounded
                self._transfers.clear()
            self._transfers[key] = fitted
            return fitted

    def suggest(
        self,
        known: Known,
        distance: similarity.Distance,
        target: TaskRecord,
        k: int,
        fitted: _Fitted,
    ) -> Suggestion:
        """The command the chosen ranking puts first for this task, and the past runs of
        it on other tasks of its kind (nearest first, at most k) as its sources."""
        model = fitted.model
        profile = dict(target.features or {})
        order = model.order(profile)
        if not order:
            return Suggestion(None, [])
        top, score = order[0]
        ran = [
            key for key in fitted.keys
            if top in known.tried.get(key, {}) and key != target.key
        ] or [key for key in fitted.keys if top in known.tried.get(key, {})]  # fmt: skip
        profiled = {key: dict(known.tasks[key].features or {}) for key in ran}
        near = similarity.nearest(distance, profile, profiled, max(k, 1))
        near = near or [(ran[0], math.nan)]
        sources = []
        for key, d in near:
            record = known.tasks[str(key)]
            tried = known.tried[str(key)][top]
            q = warmstart.quantiles(known.values([str(key)])[str(key)]).get(top, math.nan)
            sources.append((record, d, 1.0 / len(near), tried.best_attempt, q))
        best = sources[0][3]  # the nearest task's run of it
        return Suggestion(dict(best.command), sources, model.ranking(profile), score, model.choice)


def _grown(before: tuple[int, int], now: tuple[int, int]) -> bool:
    """Whether the history grew enough since a fit to fit again: tasks with history by a
    tenth (at least one), or their runs by a quarter; or it shrank (runs deleted)."""
    tasks, runs = before
    return (
        now[0] >= max(TRANSFER_TASK_GROWTH * tasks, tasks + 1)
        or now[1] >= TRANSFER_RUN_GROWTH * runs + 1
        or now[0] < tasks
        or now[1] < runs
    )


def weighted(weights: Mapping[str, float], known: Known) -> dict[str, float]:
    """Neighbours' similarity weights times how far each is evidence (the provenance of
    its runs), normalized to sum 1."""
    raw = {k: w * known.evidence.get(k, 1.0) for k, w in weights.items()}
    total = sum(raw.values())
    # Claims that weigh nothing (claim_weight 0) are no source at all.
    return {k: v / total for k, v in raw.items() if v > 0} if total > 0 else {}


def params_of(
    command: Mapping[str, Any], params: Sequence[space.Parameter]
) -> dict[str, Any] | None:
    """A past command's (or reported run's params') values at a study's paths, as Optuna
    holds them, or None when one is missing or outside its range (then it says nothing
    about this search). A reported run's params may name a path whole ("model.depth")."""
    internal: dict[str, Any] = {}
    for p in params:
        node: Any = command
        if p.path in command:
            value = space.internal_value(p, command[p.path])
            if value is None:
                return None
            internal[p.path] = value
            continue
        for step in p.steps:
            if isinstance(step, int):
                if not isinstance(node, list) or step >= len(node):
                    return None
            elif not isinstance(node, dict) or step not in node:
                return None
            node = node[step]
        value = space.internal_value(p, node)
        if value is None:
            return None
        internal[p.path] = value
    return internal


# At most this many zero-shot trials by default, and never more than half the budget.
DEFAULT_ZERO_SHOT = 8
MAX_WARM_TASKS = 20


def _usable(
    evaluations: Sequence[Evaluation], params: Sequence[space.Parameter]
) -> dict[str, list[tuple[dict[str, Any], Evaluation]]]:
    """Per task key, the runs whose command has a value in range at every path."""
    found: dict[str, list[tuple[dict[str, Any], Evaluation]]] = {}
    for e in evaluations:
        internal = params_of(e.command, params)
        if internal is not None:
            found.setdefault(e.key, []).append((internal, e))
    return found


def _grouped(
    runs: Sequence[tuple[dict[str, Any], Evaluation]],
) -> dict[str, tuple[dict[str, Any], float, Evaluation]]:
    """Runs with the same values grouped: (values, mean accuracy, best run)."""
    groups: dict[str, list[tuple[dict[str, Any], Evaluation]]] = {}
    for internal, e in runs:
        groups.setdefault(json.dumps(internal, sort_keys=True), []).append((internal, e))
    return {
        k: (
            rs[0][0],
            sum(e.best_val_accuracy for _, e in rs) / len(rs),
            max((e for _, e in rs), key=lambda e: (e.best_val_accuracy, -e.attempt_id)),
        )
        for k, rs in groups.items()
    }


def warm_plan(
    known: Known,
    distance: similarity.Distance,
    target: TaskRecord | None,
    evaluations: Sequence[Evaluation],
    params: Sequence[space.Parameter],
    *,
    similar_tasks: int,
    zero_shot: int,
    n_trials: int,
    with_priors: bool,
) -> dict[str, Any]:
    """A study's warm start, as JSON kept with the study: its sources, the zero-shot
    trials (values as Optuna holds them, and the run each repeats) and the priors.

    `evaluations` are the candidate runs (every finished run, or the named studies'
    trials); with `similar_tasks` the k nearest of their tasks are drawn from, else all
    of them. Tasks are weighted by similarity when the target and they are profiled,
    equally otherwise."""
    # Similar tasks are other tasks; named studies may have run on this very task.
    usable = {
        k: _grouped(runs)
        for k, runs in _usable(evaluations, params).items()
        if not similar_tasks or target is None or k != target.key
    }
    if not usable:
        return {
            "state": "cold: no past run of another task fits this search space",
            "sources": [],
            "zero_shot": [],
            "priors": [],
        }
    profiled = {k: dict(known.tasks[k].features or {}) for k in usable if k in known.tasks}
    if target is not None and target.features and profiled:
        near = similarity.nearest(
            distance, dict(target.features), profiled, similar_tasks or MAX_WARM_TASKS
        )
        ranked = [(str(k), d) for k, d in near]
    else:
        ranked = [(k, math.nan) for k in sorted(usable)][: similar_tasks or MAX_WARM_TASKS]
    finite = [(k, d) for k, d in ranked if math.isfinite(d)]
    weights = weighted(
        warmstart.neighbour_weights(finite)
        if len(finite) == len(ranked)
        else {k: 1.0 / len(ranked) for k, _ in ranked},
        known,
    )
    ranked = [(k, d) for k, d in ranked if k in weights]
    if not ranked:
        return {
            "state": "cold: the past runs that fit this search space are claims that weigh"
            " nothing here (claim_weight 0)",
            "sources": [],
            "zero_shot": [],
            "priors": [],
        }
    values = {k: {g: v for g, (_, v, _) in usable[k].items()} for k, _ in ranked}
    count = zero_shot if zero_shot > 0 else min(len(ranked), DEFAULT_ZERO_SHOT)
    count = 0 if zero_shot < 0 else min(count, max(n_trials // 2, 1))
    # The zero-shot trials are ranked over every usable task (the learned ranking where
    # it beat the static portfolio on held-out ones, else that portfolio); the similar
    # tasks weigh the sampler's priors.
    every = {k: {g: v for g, (_, v, _) in runs.items()} for k, runs in usable.items()}
    evidence = {k: known.evidence.get(k, 1.0) for k in every}
    rankings = transfer.fit(
        {k: dict(known.tasks[k].features or {}) for k in every if k in known.tasks},
        {k: v for k, v in every.items() if evidence[k] > 0},
        {g: internal for runs in usable.values() for g, (internal, _, _) in runs.items()},
        evidence,
    )
    profile = dict(target.features or {}) if target is not None else None
    first = []
    for command, score in rankings.order(profile)[:count]:
        # The run it repeats: from the nearest (else the heaviest) task that ran it, of
        # those whose runs count here.
        holders = [k for k in every if command in every[k] and evidence[k] > 0]
        task = min(holders, key=lambda k: (-weights.get(k, 0.0), k))
        internal, _, run = usable[task][command]
        first.append(
            {
                "internal": internal,
                "attempt_id": run.attempt_id,
                "attempt_name": run.name,
                "score": round(score, 6),
                # Where the repeated run's numbers came from.
                "provenance": run.provenance,
                "owner": run.owner,
            }
        )
    priors = []
    if with_priors:
        for prior in warmstart.priors(values, weights):
            internal, _, _ = usable[str(prior.task)][str(prior.command)]
            priors.append({"internal": internal, "goodness": round(prior.goodness, 6)})
    sources = []
    for k, d in ranked:
        record = known.tasks.get(k)
        sources.append(
            {
                "key": k,
                "fingerprint": record.fingerprint if record else "",
                "labels": record.label_names
                if record
                else list(next(iter(usable[k].values()))[2].command.get("label_names", [])),
                "distance": None if not math.isfinite(d) else round(d, 6),
                "weight": round(weights[k], 6),
                "trials": len(usable[k]),
            }
        )
    return {
        "state": "ready",
        "sources": sources,
        "zero_shot": first,
        "priors": priors,
        "trusted_owners": list(known.trusted),
        # Which ranking chose the zero-shot trials, and why that one.
        "ranking": rankings.ranking(profile),
        "ranking_why": rankings.choice.why,
    }
