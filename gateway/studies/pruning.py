"""Pruning on the live epoch stream: Optuna's pruners over curves rebuilt from our rows.

After an epoch of a trial is stored, the epoch path (gateway/epochs.py) asks
`Pruning.decide` through the watcher `Pruning.watch` gives for the run.
The study is kept in memory without params (pruners read only states, values and
intermediate values) and brought up to date from the rows (decisions.py), the pruner is
asked about the running trial, and the state some pruners write onto a trial
(successive halving's and Hyperband's `completed_rung_*`) is stored back, after every
decision, pruned or not: the next decision, maybe another gateway's, needs it.
"""

from __future__ import annotations

import logging
from typing import Any

from optuna.pruners import BasePruner, NopPruner
from optuna.trial import TrialState

from gateway import workers
from gateway.curves.live import Curves
from gateway.epochs import Run, RunWatch
from gateway.store.studies import StudyRecord, StudyStore, TrialRecord
from gateway.studies import model
from gateway.studies.checks import trial_epochs
from gateway.studies.decisions import Mirror, Mirrors
from gateway.studies.pruners import PRUNER_ARGS, check, decide, make
from learning.curves.pruner import LearnedPruner
from learning.studies import arguments
from metalearn.structs import plain_struct
from metalearn.v1 import study_service_pb2 as pb

__all__ = ["PRUNER_ARGS", "Pruning", "check", "decide", "learned", "make"]

log = logging.getLogger(__name__)


def learned(args: dict[str, Any]) -> LearnedPruner:
    """The learned pruner with a study's arguments (checked by `check`)."""
    kwargs = arguments.convert(args, PRUNER_ARGS["learned"])
    return LearnedPruner(**kwargs)


class Pruning:
    """Decides, on the epoch path, whether a study's trial stops after an epoch."""

    name = "pruning"

    def __init__(self, studies: StudyStore, curves: Curves | None = None) -> None:
        self._studies = studies
        # The learned pruner's model (None: a replay without one lets every trial run).
        self._curves = curves
        self._mirrors = Mirrors()

    async def watch(self, run: Run) -> RunWatch | None:
        """Only a study's trial (its document says so) can be pruned."""
        if not run.study_trial:
            return None
        return _TrialPruning(self, run.attempt_id, await self.applies(run.attempt_id))

    async def applies(self, attempt_id: int) -> bool | None:
        """Whether the attempt is the trial of a study with a pruner (asked once a run:
        for every other attempt, `decide` need not be asked after each epoch). None: no
        study has linked it yet (the driver links a trial just after queueing it, so a
        claim can come between the two): ask again."""
        try:
            found = await self._studies.of_attempt(attempt_id)
        except Exception:  # a lookup that fails asks again after every epoch
            log.exception("attempt %s: is it a study's trial?", attempt_id)
            return True
        if found is None:
            return None
        return (model.spec_of(found[0]).pruner.name or "none") != "none"

    async def decide(self, attempt_id: int, epoch: int) -> str | None:
        """Why the attempt should stop now (None: it goes on, or is no study's trial)."""
        found = await self._studies.decision_rows(attempt_id)
        if found is None:
            return None
        record, number, keys, current = found
        study = model.spec_of(record)
        name = study.pruner.name or "none"
        if name == "none":
            return None
        pruner = None if name == "learned" else make(name, plain_struct(study.pruner.args),
                                                     _epochs(study))  # fmt: skip
        if not Mirror.fits(len(keys), _epochs(study)):
            return await self._rebuilt(record, study, current, epoch, pruner)
        # A study is known by its id and its creation: a database restored or emptied
        # under a running gateway hands out the same ids again.
        mirror = self._mirrors.of((record.id, record.created_at), record.name, study,
                                  pruner or NopPruner())  # fmt: skip
        async with mirror.lock:
            others = [n for n in mirror.changed(keys, number) if n != number]
            read = await self._studies.trials_numbered(record.id, others) if others else []
            if not await mirror.sync(keys, [*read, current], number):
                await mirror.rebuild(keys, await self._studies.trials(record.id), number)
            if pruner is None:
                return await self._learned(study, mirror.completed_values(), attempt_id, epoch)
            prune, state = mirror.prune(number)
            if state:
                await self._studies.merge_trial_state(record.id, number, state)
        return _why(study, current, epoch) if prune else None

    async def _rebuilt(
        self, record: StudyRecord, study: pb.Study, current: TrialRecord, epoch: int,
        pruner: BasePruner | None,
    ) -> str | None:  # fmt: skip
        """A decision over the study rebuilt from every trial, in a worker process: for
        a study too large to keep (decisions.MAX_MIRROR_VALUES)."""
        trials = await self._studies.trials(record.id)
        number = current.number
        if pruner is None:
            outcomes = [model.outcome(study, t) for t in trials if t.number != number]
            values = [o.value for o in outcomes
                      if o.state == TrialState.COMPLETE and o.value is not None]  # fmt: skip
            return await self._learned(study, values, current.attempt_id, epoch)
        prune, state = await workers.run(decide, record.name, study, pruner, trials, number)
        if state:
            await self._studies.merge_trial_state(record.id, number, state)
        return _why(study, current, epoch) if prune else None

    async def _learned(
        self, study: pb.Study, values: list[float], attempt_id: int | None, epoch: int
    ) -> str | None:
        """The learned pruner's decision, given the completed trials' values."""
        if self._curves is None or attempt_id is None:
            return None
        best = max(values) if values else None
        why = await self._curves.prune(
            attempt_id, learned(plain_struct(study.pruner.args)), best, len(values)
        )
        return f"pruned at epoch {epoch} by the learned pruner: {why}" if why else None


def _why(study: pb.Study, trial: TrialRecord, epoch: int) -> str:
    """The reason a pruned trial is given (its pruner, and the value it stopped at)."""
    points = model.curve(study, trial)
    metric = "validation accuracy" if model.maximize(study) else "validation loss"
    shown = f" ({metric} {points[max(points)]:.4f})" if points else ""
    return f"pruned at epoch {epoch} by the {study.pruner.name} pruner{shown}"


def _epochs(study: pb.Study) -> int:
    return trial_epochs(study)


class _TrialPruning:
    """A trial's pruning, run by run: whether a pruner judges it is fixed for the run
    once its study has linked it (None: not yet, asked again after each epoch)."""

    def __init__(self, pruning: Pruning, attempt_id: int, applies: bool | None) -> None:
        self._pruning = pruning
        self._attempt_id = attempt_id
        self._applies = applies

    async def after_epoch(self, epoch: int) -> str | None:
        if self._applies is None:
            self._applies = await self._pruning.applies(self._attempt_id)
        if not self._applies:
            return None
        return await self._pruning.decide(self._attempt_id, epoch)

    async def before_end(self) -> None:
        return None
