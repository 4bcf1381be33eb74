"""Pruning on the live epoch stream: Optuna's pruners over curves rebuilt from our rows.

After an epoch of a trial is stored, the dispatcher running it asks `Pruning.decide`.
The study is rebuilt in memory without params (pruners read only states, values and
intermediate values), the pruner is asked about the running trial, and the state some
pruners write onto a trial (successive halving's and Hyperband's `completed_rung_*`)
is stored back, after every decision, pruned or not: the next decision needs it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.pruners import (
    BasePruner,
    HyperbandPruner,
    MedianPruner,
    NopPruner,
    PercentilePruner,
    SuccessiveHalvingPruner,
    WilcoxonPruner,
)
from optuna.storages import InMemoryStorage
from optuna.trial import TrialState, create_trial

from gateway.curves.live import Curves
from gateway.curves.pruner import LearnedPruner
from gateway.store.studies import StudyStore, TrialRecord
from gateway.studies import arguments, model
from metalearn.errors import Violations
from metalearn.structs import plain_struct
from metalearn.v1 import study_service_pb2 as pb

log = logging.getLogger(__name__)

# The keyword arguments a user may give each pruner, their kinds and ranges (Optuna's
# defaults in comments). Steps and resources are epochs, trial counts are trials: a
# bound beyond the most a command or a study may have would only stand for "never".
_TRIALS = arguments.whole(0, "trials")
_EPOCHS = arguments.whole(0, "epochs")
_SOME_EPOCHS = arguments.whole(1, "epochs")
# Rungs sit at min_resource * reduction_factor^k epochs: a factor past 100 leaves no rung
# after the first in any command, and Optuna raises the factor to the power of the
# early-stopping rate, which unbounded (2^31) is an integer of billions of digits.
_FACTOR = arguments.whole(2, 100)  # 3 (Hyperband), 4 (successive halving)
_COMMON = {
    "n_startup_trials": _TRIALS,  # 5
    "n_warmup_steps": _EPOCHS,  # 0
    "interval_steps": _SOME_EPOCHS,  # 1
    "n_min_trials": arguments.whole(1, "trials"),  # 1
}
PRUNER_ARGS: dict[str, dict[str, arguments.Arg]] = {
    "none": {},
    "median": _COMMON,
    "percentile": {"percentile": arguments.number(0, 100), **_COMMON},  # 50 (ours)
    "successive_halving": {
        "min_resource": _SOME_EPOCHS,  # 1 (ours; Optuna's "auto" waits for a trial)
        "reduction_factor": _FACTOR,
        # 2^32 epochs: past any command's last rung.
        "min_early_stopping_rate": arguments.whole(0, 32),  # 0
        "bootstrap_count": _TRIALS,  # 0
    },
    "hyperband": {
        "min_resource": _SOME_EPOCHS,  # 1
        "max_resource": _SOME_EPOCHS,  # the command's epochs (ours)
        "reduction_factor": _FACTOR,
        "bootstrap_count": _TRIALS,  # 0
    },
    "wilcoxon": {"p_threshold": arguments.number(0, 1), "n_startup_steps": _EPOCHS},  # 0.1, 2
    # metalearn's own (gateway/curves/pruner.py), not Optuna's: it reads the curve model.
    "learned": {
        "min_epoch": _SOME_EPOCHS,  # 2
        "n_startup_trials": _TRIALS,  # 1
        "margin": arguments.number(-1, 1),  # 0: an accuracy
    },
}


def make(name: str, args: dict[str, Any], n_epoch: int) -> BasePruner:
    """The pruner, by name. Resources are epochs; left out, successive halving starts at
    epoch 1 and Hyperband ends at the command's last epoch (Optuna's "auto" waits for a
    finished trial before it prunes anything)."""
    kwargs = arguments.convert(args, PRUNER_ARGS[name])
    if name == "median":
        return MedianPruner(**kwargs)
    if name == "percentile":
        return PercentilePruner(**{"percentile": 50.0, **kwargs})
    if name == "successive_halving":
        return SuccessiveHalvingPruner(**{"min_resource": 1, **kwargs})
    if name == "hyperband":
        return HyperbandPruner(**{"min_resource": 1, "max_resource": max(n_epoch, 1), **kwargs})
    if name == "wilcoxon":
        return WilcoxonPruner(**kwargs)
    return NopPruner()


def learned(args: dict[str, Any]) -> LearnedPruner:
    """The learned pruner with a study's arguments (checked by `check`)."""
    kwargs = arguments.convert(args, PRUNER_ARGS["learned"])
    return LearnedPruner(**kwargs)


def check(
    v: Violations,
    field: str,
    name: str,
    args: dict[str, Any],
    n_epoch: int,
    scale: arguments.Scale,
    maximize: bool = True,
) -> None:
    """Refuses an unknown pruner or argument, naming it; Optuna's own checks of the
    values (a reduction factor of 1, a percentile of 120) are said as they are."""
    allowed = PRUNER_ARGS.get(name)
    if allowed is None:
        v.add(f"{field}.name", f"unknown pruner {name!r}; use one of {sorted(PRUNER_ARGS)}")
        return
    ok = arguments.check(v, field, name, args, allowed, scale)
    if name == "learned":
        if not maximize:
            v.add(f"{field}.name", "the learned pruner predicts validation accuracy: use an"
                  " accuracy objective")  # fmt: skip
        return
    if ok:
        try:
            make(name, args, n_epoch)
        except (ValueError, TypeError) as err:
            v.add(f"{field}.args", str(err)[:300])


class Pruning:
    """Decides, for the dispatcher, whether a study's trial stops after an epoch."""

    def __init__(self, studies: StudyStore, curves: Curves | None = None) -> None:
        self._studies = studies
        # The learned pruner's model (None: a replay without one lets every trial run).
        self._curves = curves

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
        found = await self._studies.of_attempt(attempt_id)
        if found is None:
            return None
        record, number = found
        study = model.spec_of(record)
        name = study.pruner.name or "none"
        if name == "none":
            return None
        trials = await self._studies.trials(record.id)
        current = next((t for t in trials if t.number == number), None)
        if current is None:
            return None
        if name == "learned":
            return await self._learned(study, trials, attempt_id, epoch)
        pruner = make(name, plain_struct(study.pruner.args), _epochs(study))
        # In a worker thread: the rebuild reads every epoch of every trial.
        prune, state = await asyncio.to_thread(decide, record.name, study, pruner, trials, number)
        if state:
            await self._studies.merge_trial_state(record.id, number, state)
        if not prune:
            return None
        points = model.curve(study, current)
        metric = "validation accuracy" if model.maximize(study) else "validation loss"
        shown = f" ({metric} {points[max(points)]:.4f})" if points else ""
        return f"pruned at epoch {epoch} by the {name} pruner{shown}"

    async def _learned(
        self, study: pb.Study, trials: Sequence[TrialRecord], attempt_id: int, epoch: int
    ) -> str | None:
        if self._curves is None:
            return None
        outcomes = [model.outcome(study, t) for t in trials]
        values = [o.value for o in outcomes
                  if o.state == TrialState.COMPLETE and o.value is not None]  # fmt: skip
        best = max(values) if values else None
        why = await self._curves.prune(
            attempt_id, learned(plain_struct(study.pruner.args)), best, len(values)
        )
        return f"pruned at epoch {epoch} by the learned pruner: {why}" if why else None


def _epochs(study: pb.Study) -> int:
    return study.base_command.n_epoch


def decide(
    study_name: str,
    study: pb.Study,
    pruner: BasePruner,
    trials: Sequence[TrialRecord],
    number: int,
) -> tuple[bool, dict[str, Any]]:
    """Whether trial `number` (running) is pruned, and the state the pruner added to it."""
    storage = InMemoryStorage()
    rebuilt = optuna.create_study(
        storage=storage,
        study_name=study_name,  # Hyperband picks a trial's bracket from it
        pruner=pruner,
        direction="maximize" if model.maximize(study) else "minimize",
    )
    for trial in trials:
        o = model.outcome(study, trial)
        state = TrialState.RUNNING if trial.number == number else o.state
        rebuilt.add_trial(
            create_trial(
                state=state,
                value=o.value if state in (TrialState.COMPLETE, TrialState.PRUNED) else None,
                intermediate_values=model.curve(study, trial),
                system_attrs=trial.sampler_state,
            )
        )
    frozen = rebuilt.get_trials(deepcopy=False)[number]
    before = dict(frozen.system_attrs)
    prune = bool(pruner.prune(rebuilt, frozen))
    trial_id = storage.get_trial_id_from_study_id_trial_number(
        storage.get_study_id_from_name(study_name), number
    )
    after = storage.get_trial_system_attrs(trial_id)
    return prune, {k: v for k, v in after.items() if before.get(k) != v}
