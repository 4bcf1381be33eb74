"""Optuna's pruners as a study may name them: their arguments, each bounded to what a
real study needs, and a decision over a study rebuilt from our rows (pruning.py reads
the rows; a decision runs in a worker process, gateway/workers.py). Imports nothing of the
gateway's servers or pools: a worker imports this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
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
from optuna.trial import FrozenTrial, TrialState, create_trial

from gateway.store.studies import TrialRecord
from gateway.studies import model
from learning.studies import arguments
from metalearn.errors import Violations
from metalearn.v1 import study_service_pb2 as pb

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
    # metalearn's own (learning/curves/pruner.py), not Optuna's: it reads the curve model.
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


@dataclass(frozen=True)
class Parts:
    """A trial as a pruner sees it: what Optuna's `create_trial` is given."""

    state: TrialState
    value: float | None
    intermediate_values: dict[int, float]
    system_attrs: dict[str, Any]

    def frozen(self) -> FrozenTrial:
        return create_trial(
            state=self.state,
            value=self.value,
            intermediate_values=self.intermediate_values,
            system_attrs=self.system_attrs,
        )


def parts(study: pb.Study, trial: TrialRecord, running: bool) -> Parts:
    """The trial for a pruner (`running`: the one being decided, running whatever its
    attempt says: a replay asks about finished trials)."""
    o = model.outcome(study, trial)
    state = TrialState.RUNNING if running else o.state
    return Parts(
        state=state,
        value=o.value if state in (TrialState.COMPLETE, TrialState.PRUNED) else None,
        intermediate_values=model.curve(study, trial),
        system_attrs=dict(trial.sampler_state),
    )


def new_study(study_name: str, study: pb.Study, pruner: BasePruner) -> optuna.Study:
    """An empty in-memory study the pruner decides over."""
    return optuna.create_study(
        storage=InMemoryStorage(),
        study_name=study_name,  # Hyperband picks a trial's bracket from it
        pruner=pruner,
        direction="maximize" if model.maximize(study) else "minimize",
    )


def prune(rebuilt: optuna.Study, number: int) -> tuple[bool, dict[str, Any]]:
    """Whether running trial `number` is pruned, and the state the pruner added to it
    (successive halving's and Hyperband's rungs)."""
    frozen = rebuilt.get_trials(deepcopy=False)[number]
    before = dict(frozen.system_attrs)
    pruned = bool(rebuilt.pruner.prune(rebuilt, frozen))
    storage = rebuilt._storage  # the pruner itself writes its rungs through it
    after = storage.get_trial_system_attrs(frozen._trial_id)
    return pruned, {k: v for k, v in after.items() if before.get(k) != v}


def decide(
    study_name: str,
    study: pb.Study,
    pruner: BasePruner,
    trials: Sequence[TrialRecord],
    number: int,
) -> tuple[bool, dict[str, Any]]:
    """Whether trial `number` (running) is pruned, and the state the pruner added to it,
    over a study rebuilt from every trial (the reference gateway/studies/decisions.py
    keeps between decisions instead)."""
    rebuilt = new_study(study_name, study, pruner)
    for trial in trials:
        rebuilt.add_trial(parts(study, trial, trial.number == number).frozen())
    return prune(rebuilt, number)
