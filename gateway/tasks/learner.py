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
import dataclasses
import datetime as dt
import functools
import json
import logging
import math
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from gateway.store.tasks import Evaluation, History, TaskRecord, TaskStore, TriedCommand
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
    runs: int = 1


def by_command(tried: Sequence[TriedCommand]) -> dict[str, Tried]:
    """A task's commands by signature. The database grouped them by their JSON's value;
    two it told apart that print alike (1 and 1.0) are one command here."""
    found: dict[str, Tried] = {}
    for t in tried:
        sig = signature(t.command)
        other = found.get(sig)
        if other is not None:
            runs = other.runs + t.runs
            value = (other.value * other.runs + t.value * t.runs) / runs
            best = max(
                (other.best_attempt, t.best),
                key=lambda e: (e.best_val_accuracy, -e.attempt_id),
            )
            found[sig] = Tried(sig, value, best, runs)
        else:
            found[sig] = Tried(sig, t.value, t.best, t.runs)
    return found


@dataclass(frozen=True)
class TaskHistory:
    """A task's finished runs that learning may read: how many, how far they are
    evidence (the mean of their provenance weights), the newest one's id, and a version
    that moves whenever they change."""

    runs: int
    evidence: float
    newest: int
    version: int


def task_histories(rows: Sequence[History], claim_weight: float) -> dict[str, TaskHistory]:
    """Per task key, its rows (one per provenance) as one history; a task whose runs
    were all deleted is left out."""
    grouped: dict[str, list[History]] = {}
    for r in rows:
        grouped.setdefault(r.key, []).append(r)
    found = {}
    for key, rs in grouped.items():
        runs = sum(r.runs for r in rs)
        if runs <= 0:
            continue
        weight = sum(r.runs * provenance.weight(r.provenance, claim_weight) for r in rs)
        found[key] = TaskHistory(
            runs, weight / runs, max(r.newest_id for r in rs), sum(r.version for r in rs)
        )
    return found


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
    """The store as learning sees it: profiled tasks by key, the tasks with finished runs
    to learn from, and, for the tasks a call asked for (`Learner.with_tried`), what was
    tried on them. A store of a million attempts is a row per task here, not per run."""

    tasks: dict[str, TaskRecord]
    history: dict[str, TaskHistory]
    # Per task key, its commands: only the keys loaded for this call.
    tried: dict[str, dict[str, Tried]] = field(default_factory=dict)
    # The owners whose imported runs count (beside admins' and every trained run).
    trusted: tuple[str, ...] = ()
    # The owners the reads were made for: `trusted` less a caller whose own claims
    # change nothing (`TaskStore.own_claims`), so that such callers share what is kept.
    counted: tuple[str, ...] = ()

    # The tasks' profiles as rows of a distance's features, by its features (`neighbours`
    # scores every task with history at each call).
    _rows: dict[tuple[str, ...], tuple[list[str], np.ndarray]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def rows(self, features: tuple[str, ...]) -> tuple[list[str], np.ndarray]:
        """The profiled tasks with history, and their profiles as rows of `features`."""
        found = self._rows.get(features)
        if found is None:
            keys = [k for k in self.tasks if k in self.history]
            profiles = [self.tasks[k].features or {} for k in keys]
            found = (keys, similarity.rows(features, profiles))
            self._rows[features] = found
        return found

    @functools.cached_property
    def evidence(self) -> dict[str, float]:
        """Per task key, how far its runs are evidence: the mean of their provenance
        weights."""
        return {k: h.evidence for k, h in self.history.items()}

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


# What was tried on a task is read for this many tasks in one statement, and kept for
# the most recently used MAX_KEPT_TASKS (per set of trusted owners).
READ_TASKS_AT_ONCE = 25
MAX_KEPT_TASKS = 4096
# The distance is fitted on at most this many tasks (those with the newest runs): its
# fit compares every pair of them.
MAX_DISTANCE_TASKS = 500
# A suggestion's ranking is fitted on at most this many past tasks (those with the most
# recent runs): a fit is seconds of CPU per hundred tasks. It is refitted once the tasks
# with history grew by a tenth (at least one) or their runs by a quarter.
MAX_TRANSFER_TASKS = 500
TRANSFER_TASK_GROWTH = 1.1
TRANSFER_RUN_GROWTH = 1.25
# A grown history of at most this many tasks of a kind is refitted before the answer (a
# second or less); a larger one in the background, the kept ranking answering meanwhile.
REFIT_INLINE_TASKS = 50
# Readings and rankings kept for callers whose own claims count for them (beside the one
# every caller shares): at most this many at once.
MAX_KEPT_CLAIMANTS = 64


@dataclass(frozen=True)
class _Fitted:
    """A kind's ranking, and the state of the history it was fitted on."""

    model: transfer.Transfer
    keys: tuple[str, ...]
    stamp: tuple[Any, ...]


def _shown_as(known: Known, trusted: tuple[str, ...]) -> Known:
    """What another caller's call read (the same reads: `Learner._counted`), shown with
    this caller's trusted owners."""
    return dataclasses.replace(known, trusted=trusted, _rows=known._rows)


def history_of_kind(known: Known, declared: bool) -> tuple[int, int]:
    """The tasks of one kind (declared or not) with history, and their runs: what a
    ranking of that kind is fitted on, and refitted when it grows."""
    kind = [k for k, t in known.tasks.items() if bool(t.declared) == declared]
    return (
        sum(k in known.history for k in kind),
        sum(known.history[k].runs for k in kind if k in known.history),
    )


def newest_tasks(known: Known, keys: Sequence[str], limit: int) -> list[str]:
    """Of these task keys, the `limit` with history whose newest run is newest."""
    with_history = [k for k in keys if k in known.history]
    return sorted(with_history, key=lambda k: (-known.history[k].newest, k))[:limit]


def transfer_keys(known: Known, declared: bool) -> list[str]:
    """The tasks of one kind (commands on images held here, or declared tasks' params)
    that a ranking is fitted on: those with the newest runs."""
    kind = [k for k, t in known.tasks.items() if bool(t.declared) == declared]
    return newest_tasks(known, kind, MAX_TRANSFER_TASKS)


def fit_transfer(known: Known, keys: Sequence[str]) -> transfer.Transfer:
    """The rankings of the commands tried on these tasks (their commands loaded)."""
    values = known.values(keys)
    commands = {sig: json.loads(sig) for k in keys for sig in known.tried[k]}
    profiles = {k: dict(known.tasks[k].features or {}) for k in keys}
    weights = {k: known.evidence.get(k, 1.0) for k in keys}
    # One thread (as the curve model's fit): a background fit must not take both cores
    # from the gateway's calls, and the boosting's threads gain little here (4.2 s on two
    # against 4.6 s on one, 120 tasks).
    with threadpool_limits(limits=1):
        return transfer.fit(profiles, values, commands, weights)


class Learner:
    """One per gateway."""

    def __init__(
        self, tasks: TaskStore, trusted_owners: Sequence[str] = (), claim_weight: float = 1.0
    ) -> None:
        self._tasks = tasks
        self._trusted = tuple(sorted(set(trusted_owners)))
        self._claim_weight = claim_weight
        self._fit_lock = asyncio.Lock()
        # The rankings by (owners counted, declared kind), refitted when the history moves.
        self._transfers: dict[tuple[tuple[str, ...], bool], _Fitted] = {}
        self._transfer_lock = asyncio.Lock()
        # What `known` read, by owners counted, with the store's stamp when it was read.
        self._known: dict[tuple[str, ...], tuple[tuple[Any, ...], Known]] = {}
        # The ready tasks by owners counted, with the tasks' part of the stamp.
        self._ready: dict[tuple[str, ...], tuple[tuple[Any, ...], dict[str, TaskRecord]]] = {}
        # What was tried on a task, by (owners counted, key), with its history's version
        # when read: the most recently used MAX_KEPT_TASKS.
        # Two of them: the tasks every caller shares, and the claimants' (so that
        # claimants' first fits cannot push out what everyone reads).
        self._tried: OrderedDict[tuple[tuple[str, ...], str], tuple[int, dict[str, Tried]]]
        self._tried = OrderedDict()
        self._tried_claimants: OrderedDict[
            tuple[tuple[str, ...], str], tuple[int, dict[str, Tried]]
        ] = OrderedDict()
        # Refits running in the background, by what they refit.
        self._refits: dict[str, asyncio.Task[None]] = {}

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
        """The store as `caller` may learn from it (None: as every caller may): its
        profiled tasks and, per task, how many runs it has and how far they are evidence
        (a row per task, kept by the writes). Kept per set of trusted owners until the
        store's learning stamp moves; what was tried on a task is read apart, for the
        tasks a call needs (`with_tried`)."""
        trusted = self.trusted(caller)
        counted = await self._counted(caller)
        stamp = await self._tasks.learning_stamp()
        kept = self._known.get(counted)
        if kept is not None and kept[0] == stamp:
            return kept[1] if kept[1].trusted == trusted else _shown_as(kept[1], trusted)
        ready = self._ready.get(counted)
        if ready is None or ready[0] != stamp[2:]:
            ready = (stamp[2:], {t.key: t for t in await self._tasks.ready(counted)})
            self._bounded(self._ready, lambda k: k)
            self._ready[counted] = ready
        history = task_histories(await self._tasks.history(counted), self._claim_weight)
        found = Known(ready[1], history, {}, trusted, counted)
        self._bounded(self._known, lambda k: k)
        self._known[counted] = (stamp, found)
        return found

    def _bounded(self, kept: dict[Any, Any], counted: Callable[[Any], tuple[str, ...]]) -> None:
        """Makes room in a dict kept per caller's claims (one entry per claimant beside
        the shared one): full, it drops every claimant's entry but never the one every
        caller shares, so that writers cycling through many tokens with a claim each
        cannot make everyone's next call read and fit again."""
        if len(kept) >= MAX_KEPT_CLAIMANTS:
            for key in [k for k in kept if counted(k) != self._trusted]:
                del kept[key]

    async def _counted(self, caller: str | None) -> tuple[str, ...]:
        """The owners whose claims `known` reads for `caller`: the configured ones, and the
        caller only where its own claims would change what it reads. Most callers have
        none (they train here), and then share the configured owners' reads and ranking:
        a ranking's first fit is a minute of reads and CPU at a million attempts."""
        if not caller or caller in self._trusted:
            return self._trusted
        if await self._tasks.own_claims(caller, self._trusted):
            return self.trusted(caller)
        return self._trusted

    async def with_tried(self, known: Known, keys: Sequence[str]) -> Known:
        """`known` with what was tried on these tasks: kept per task until its history's
        version moves, read from the store (grouped by command there) otherwise."""
        loaded: dict[str, dict[str, Tried]] = {}
        missing = []
        tried = self._tried if known.counted == self._trusted else self._tried_claimants
        for key in dict.fromkeys(keys):
            if key in known.tried or key not in known.history:
                continue
            kept = tried.get((known.counted, key))
            if kept is not None and kept[0] == known.history[key].version:
                tried.move_to_end((known.counted, key))
                loaded[key] = kept[1]
            else:
                missing.append(key)
        for at in range(0, len(missing), READ_TASKS_AT_ONCE):
            chunk = missing[at : at + READ_TASKS_AT_ONCE]
            rows = await self._tasks.tried(chunk, known.counted, _NOT_THE_COMMAND)
            per_key: dict[str, list[TriedCommand]] = {k: [] for k in chunk}
            for row in rows:
                per_key[row.key].append(row)
            for key, found in per_key.items():
                loaded[key] = by_command(found)
                tried[(known.counted, key)] = (known.history[key].version, loaded[key])
        while len(tried) > MAX_KEPT_TASKS:
            tried.popitem(last=False)
        if not loaded:
            return known
        return dataclasses.replace(known, tried={**known.tried, **loaded})

    async def runs(self, caller: str | None = None) -> list[Evaluation]:
        """Every finished run `caller` may learn from (a warm start picks among them)."""
        return await self._tasks.evaluations(self.trusted(caller))

    async def fit(self, known: Known | None = None) -> Fitted:
        """Refits the distance on the store now and keeps it (on what every caller may
        learn from: a caller's own claims must not move everyone's distance)."""
        async with self._fit_lock:
            if known is None or known.counted != self._trusted:
                known = await self.known()
            done = await self._tasks.studies_done()
            # Measured profiles (images here, or a sample) choose the distance's features
            # and scales; a store where declared tasks outnumber them must not take the
            # pixel features from everyone's distance. Declared profiles are compared on
            # what they have (similarity.Distance.between).
            measured = {
                k: p for k, p in known.profiles().items() if known.tasks[k].source != "DECLARED"
            }
            profiles = measured or known.profiles()
            # The tasks with the newest runs: a fit compares every pair of its tasks.
            chosen = newest_tasks(known, list(profiles), MAX_DISTANCE_TASKS)
            known = await self.with_tried(known, chosen)
            with_history = {k: profiles[k] for k in chosen}
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
            # Stale, not wrong: this answer uses it while the refit runs (seconds of reads
            # and fitting at a million attempts, beyond one request's budget).
            self._in_background("distance", self.fit(known))
            return Fitted(_distance_of(model), at)
        return await self.fit(known)

    def _in_background(self, what: str, work: Coroutine[Any, Any, Any]) -> None:
        """Runs a refit once at a time per `what` (its failure is logged: the kept fit
        stands, and the next call that finds it stale tries again)."""
        if what in self._refits:
            work.close()
            return

        async def run() -> None:
            try:
                await work
            except Exception:
                log.exception("refitting the %s failed; the kept one stands", what)
            finally:
                self._refits.pop(what, None)

        self._refits[what] = asyncio.get_running_loop().create_task(run())

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
        keys, x = known.rows(distance.features)
        chosen = [
            i for i, k in enumerate(keys)
            if k != target.key and (not same_kind or known.tasks[k].declared == target.declared)
        ]  # fmt: skip
        near = similarity.nearest_rows(
            distance, dict(target.features or {}), [keys[i] for i in chosen], x[chosen], limit
        )
        return [(known.tasks[str(k)], d) for k, d in near]

    async def transfer(self, known: Known, declared: bool) -> _Fitted:
        """The rankings for tasks of one kind, as fitted on `known` (kept until its runs
        or tasks grow; fitted off the event loop, once for concurrent callers)."""
        stamp = history_of_kind(known, declared)
        key = (known.counted, declared)
        kept = self._transfers.get(key)
        # A ranking of the history it was fitted on is used while a grown history is
        # refitted (minutes of CPU at 2,000 tasks); one whose runs were deleted is not.
        if kept is not None and not _shrunk(kept.stamp, stamp):
            if not _grown(kept.stamp, stamp):
                return kept
            # Inline only when no other fit holds the lock (a large one is minutes).
            if stamp[0] > REFIT_INLINE_TASKS or self._transfer_lock.locked():
                self._in_background(f"ranking {key}", self._fit_transfer(known, declared, stamp))
                return kept
        return await self._fit_transfer(known, declared, stamp)

    async def _fit_transfer(self, known: Known, declared: bool, stamp: tuple[int, int]) -> _Fitted:
        key = (known.counted, declared)
        async with self._transfer_lock:
            kept = self._transfers.get(key)
            if (
                kept is not None
                and not _grown(kept.stamp, stamp)
                and not _shrunk(kept.stamp, stamp)
            ):
                return kept  # a concurrent caller fitted it
            keys = transfer_keys(known, declared)
            known = await self.with_tried(known, keys)
            model = await asyncio.to_thread(fit_transfer, known, keys)
            fitted = _Fitted(model, tuple(keys), stamp)
            self._bounded(self._transfers, lambda k: k[0])
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
        if not ran:  # deleted since the ranking was fitted (its refit is under way)
            return Suggestion(None, [])
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
    tenth (at least one), or their runs by a quarter."""
    tasks, runs = before
    return now[0] >= max(TRANSFER_TASK_GROWTH * tasks, tasks + 1) or (
        now[1] >= TRANSFER_RUN_GROWTH * runs + 1
    )


def _shrunk(before: tuple[int, int], now: tuple[int, int]) -> bool:
    """Whether runs or tasks were deleted since a fit (it may name what is gone)."""
    return now[0] < before[0] or now[1] < before[1]


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
    with threadpool_limits(limits=1):  # as `fit_transfer`
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
