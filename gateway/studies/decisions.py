"""A study's trials kept in memory between pruning decisions, changed trial by trial.

Rebuilding the study for each decision (`pruners.decide`) reads every epoch of every
trial and hands each to Optuna again: 80 ms at 500 trials of 50 epochs (bench/pruning.py),
after every epoch of every trial. A `Mirror` keeps the in-memory Optuna study instead.
Each decision reads one light row per trial (`StudyStore.decision_rows`: states, rungs,
when its attempt last changed; no epochs), then, with their epochs, only the trial
being decided and the trials whose row changed since the last decision; it changes those
in the study and asks the pruner. A trial at rest has no new epochs without its
attempt's `updated_at` moving (a retried or deleted attempt is read again).

What the pruner sees equals a rebuild (tests/test_pruning_decisions.py compares them
decision by decision), except the curves of other trials still running, kept as last
read: no pruner offered here reads them (median and percentile read completed trials,
successive halving and Hyperband the rungs in each trial's system attributes, Wilcoxon
the best trial); and where Optuna's best trial would be another than a rebuild's (equal
values completing out of number order) the study is built again. A study too large to
keep (MAX_MIRROR_VALUES) is decided as before. Hand-written because Optuna keeps no
study in step with rows it does not own: its own RDB storage reads every trial again.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from typing import Any

from optuna.pruners import BasePruner
from optuna.trial import TrialState

from gateway.store.studies import TrialRecord
from gateway.studies import model
from gateway.studies.pruners import Parts, new_study, parts, prune
from metalearn.v1 import study_service_pb2 as pb

# What one gateway keeps: a mirror holds every trial's curve, about 110 bytes a value
# (Optuna's dicts and the floats): the least recently decided studies go first beyond
# these many values in all (~220 MB), and a study larger than MAX_MIRROR_VALUES (its
# trials times its command's epochs) is not kept at all: its decisions rebuild it in a
# worker process, as every decision did before (a 1,000-trial study of 10,000 epochs
# would be 1 GB, and seconds of CPU to build on the event loop).
MAX_KEPT_VALUES = 2_000_000
MAX_MIRROR_VALUES = 200_000
# New steps of one trial added in place; more (a trial this gateway has not decided for
# long) and the study is built again: Optuna copies a trial's curve at every step added.
_STEPS_IN_PLACE = 100
# Intermediate values added between two turns of the event loop while a mirror is
# built: a study of 1,000 trials of 10,000 epochs does not hold every other call up.
_STEPS_A_TURN = 20_000
_MISSING = object()


class Mirror:
    """One study as its pruner sees it, brought up to date before each decision (under
    `lock`: one decision of a study at a time)."""

    def __init__(self, name: str, study: pb.Study, pruner: BasePruner) -> None:
        self.lock = asyncio.Lock()
        self._name = name
        self._study = study
        self._pruner = pruner
        self._clear()

    def _clear(self) -> None:
        self._optuna = new_study(self._name, self._study, self._pruner)
        # As the Optuna study holds them, by number; their ids in its storage; and the
        # light rows they were read at (None: read it again, as the trial last decided).
        self._applied: list[Parts] = []
        self._ids: list[int] = []
        self._keys: list[tuple[Any, ...] | None] = []
        self._added = 0  # intermediate values added since the event loop last turned
        self.values = 0  # intermediate values held, and one a trial

    @staticmethod
    def fits(trials: int, epochs: int) -> bool:
        """Whether a study of this size is kept (MAX_MIRROR_VALUES)."""
        return trials * (epochs + 1) <= MAX_MIRROR_VALUES

    def changed(self, keys: Sequence[tuple[Any, ...]], current: int) -> list[int]:
        """The trials to read (`keys`: `StudyStore.decision_rows`): the one decided, new
        ones, and those whose row changed."""
        if [k[0] for k in keys] != list(range(len(keys))):
            raise ValueError(f"study {self._name!r}: trials are not numbered 0..n-1")
        # `keys` may be older than this mirror (read before its lock was taken, while
        # another decision added a trial): what they cover is compared.
        held = len(self._keys)
        return [k[0] for k in keys
                if k[0] == current or k[0] >= held or self._keys[k[0]] != k[1:]]  # fmt: skip

    async def sync(
        self, keys: Sequence[tuple[Any, ...]], read: Sequence[TrialRecord], current: int
    ) -> bool:
        """Brings the study to `read` (the trials `changed` named, with their epochs);
        False: Optuna cannot change one of them in place (a finished trial changed, a
        step or an attribute went away): `rebuild` with every trial."""
        for trial in sorted(read, key=lambda t: t.number):
            new = parts(self._study, trial, trial.number == current)
            if trial.number < len(self._ids):
                if not self._update(trial.number, new):
                    return False
            elif trial.number == len(self._ids):
                await self._add(new)
            else:
                return False
            self._keys[trial.number] = self._key(keys[trial.number], trial, current)
        return True

    def _key(
        self, key: tuple[Any, ...], trial: TrialRecord, current: int
    ) -> tuple[Any, ...] | None:
        """The row a trial was read at; None for the trial decided while at rest (a
        replay), made to run for its decision: the next one reads it again."""
        if trial.number == current and model.outcome(self._study, trial).state.is_finished():
            return None
        return key[1:]

    async def rebuild(
        self, keys: Sequence[tuple[Any, ...]], trials: Sequence[TrialRecord], current: int
    ) -> None:
        """The study again from every trial (`StudyStore.trials`, read after `keys`)."""
        self._clear()
        for trial in trials:  # one added since `keys` were read is read again next time
            await self._add(parts(self._study, trial, trial.number == current))
            if trial.number < len(keys):
                self._keys[trial.number] = self._key(keys[trial.number], trial, current)

    async def _add(self, new: Parts) -> None:
        trial_id = self._optuna._storage.create_new_trial(
            self._optuna._study_id, template_trial=new.frozen()
        )
        self._applied.append(new)
        self._ids.append(trial_id)
        self._keys.append(None)
        self.values += len(new.intermediate_values) + 1
        self._added += len(new.intermediate_values) + 1
        if self._added >= _STEPS_A_TURN:
            self._added = 0
            await asyncio.sleep(0)

    def _update(self, number: int, new: Parts) -> bool:
        """Changes trial `number` to `new` in place (False where Optuna cannot)."""
        old = self._applied[number]
        if new == old:
            return True
        if old.state.is_finished() or (new.state == TrialState.WAITING != old.state):
            return False
        if not old.system_attrs.keys() <= new.system_attrs.keys():
            return False
        if not old.intermediate_values.keys() <= new.intermediate_values.keys():
            return False
        if len(new.intermediate_values) - len(old.intermediate_values) > _STEPS_IN_PLACE:
            return False
        if new.state == TrialState.COMPLETE and new.value in self.completed_values():
            # Optuna's best trial is the first of equals to complete; a rebuild adds
            # trials by number, so the lowest-numbered one is (Wilcoxon reads it).
            return False
        storage, trial_id = self._optuna._storage, self._ids[number]
        for key, value in new.system_attrs.items():
            if old.system_attrs.get(key, _MISSING) != value:
                storage.set_trial_system_attr(trial_id, key, value)
        for step, value in new.intermediate_values.items():
            if old.intermediate_values.get(step) != value:
                storage.set_trial_intermediate_value(trial_id, step, value)
        if new.state != old.state:
            values = None if new.value is None else [new.value]
            storage.set_trial_state_values(trial_id, new.state, values)
        self.values += len(new.intermediate_values) - len(old.intermediate_values)
        self._applied[number] = new
        return True

    def prune(self, number: int) -> tuple[bool, dict[str, Any]]:
        """The pruner's decision on running trial `number`, and the rungs it added."""
        pruned, state = prune(self._optuna, number)
        if state:
            old = self._applied[number]
            attrs = {**old.system_attrs, **state}
            self._applied[number] = dataclasses.replace(old, system_attrs=attrs)
            self._keys[number] = None  # read again: the rungs' write may yet fail
        return pruned, state

    def completed_values(self) -> list[float]:
        """The objective's values of the completed trials."""
        return [p.value for p in self._applied
                if p.state == TrialState.COMPLETE and p.value is not None]  # fmt: skip


class Mirrors:
    """The studies kept, least recently decided dropped first beyond `limit` values."""

    def __init__(self, limit: int = MAX_KEPT_VALUES) -> None:
        self._limit = limit
        self._kept: OrderedDict[Hashable, Mirror] = OrderedDict()

    def of(self, key: Hashable, name: str, study: pb.Study, pruner: BasePruner) -> Mirror:
        """The mirror kept under `key` (what tells one study from any other), or a new
        one."""
        mirror = self._kept.get(key)
        if mirror is None:
            mirror = self._kept[key] = Mirror(name, study, pruner)
        self._kept.move_to_end(key)
        total = sum(m.values for m in self._kept.values())
        while total > self._limit and len(self._kept) > 1:
            _, dropped = self._kept.popitem(last=False)
            total -= dropped.values
        return mirror
