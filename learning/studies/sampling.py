"""Optuna as a library: a study rebuilt in memory from our rows for each ask.

PostgreSQL holds every trial; Optuna holds nothing between asks. Each ask builds an
in-memory Optuna study from the trials as they stand (numbers in order, params, state,
value), restores the state a sampler keeps in Optuna's system attributes (CMA-ES's
generation, QMC's counter, the grid's cells), asks, and hands back what to store.

A fresh sampler restarts its random stream, so a rebuilt study with a fixed seed would
draw trial 0's values again and again; each ask's seed is therefore derived from the
study's seed and the trial number, which also makes an ask repeatable (a replica that
died before committing is replaced by one that asks the same). See
docs/research/optuna5-studies.md for the experiments behind each choice.
"""

from __future__ import annotations

import hashlib
import importlib.util
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.samplers import (
    BaseSampler,
    CmaEsSampler,
    GPSampler,
    GridSampler,
    QMCSampler,
    RandomSampler,
    TPESampler,
)
from optuna.storages import InMemoryStorage
from optuna.trial import TrialState, create_trial

from learning.studies import arguments
from learning.studies.space import Parameter
from metalearn.errors import Violations

# Once, at import: warnings.catch_warnings is not thread-safe, and these would be logged
# for every rebuilt study.
optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

MAX_SEED = 2**32 - 1  # numpy's bound
# The keyword arguments a user may give each sampler, their kinds and ranges (Optuna's
# defaults in comments). The seed, the search space and the fallback sampler are ours.
# An ask rebuilds the study and scores candidates against every past trial: measured on
# 1,000 trials of 32 parameters, TPE's ask takes 0.3 s with 24 candidates and 2.7 s
# with 1,000 (about what 100-choice categoricals cost with the default), so 1,000 is the
# bound, far beyond the few dozen that papers and Optuna's own tests use.
_STARTUP = arguments.whole(0, "trials")  # past it, every trial is a random one
SAMPLER_ARGS: dict[str, dict[str, arguments.Arg]] = {
    "tpe": {
        "n_startup_trials": _STARTUP,  # 10
        "n_ei_candidates": arguments.whole(1, 1000),  # 24
        "multivariate": arguments.FLAG_ARG,
        "group": arguments.FLAG_ARG,  # Optuna refuses it without multivariate
        "constant_liar": arguments.FLAG_ARG,
    },
    "random": {},
    # Not sigma0: Optuna deprecated it in 4.9.
    "cmaes": {
        "n_startup_trials": _STARTUP,  # 1
        # 4 + 3 ln(dimensions) by default (14 for 32); CMA-ES needs 2 to select from, and
        # a generation larger than a study's every trial never ends.
        "popsize": arguments.whole(2, "trials"),
        "use_separable_cma": arguments.FLAG_ARG,
        "with_margin": arguments.FLAG_ARG,
        "lr_adapt": arguments.FLAG_ARG,
    },
    "qmc": {"qmc_type": arguments.choice("sobol", "halton"), "scramble": arguments.FLAG_ARG},
    "grid": {},
    # The gateway asks it in a process of its own (gateway/studies/asking.ask_async).
    "gp": {"n_startup_trials": _STARTUP, "deterministic_objective": arguments.FLAG_ARG},
}
MAX_GRID = 100_000


def derive_seed(seed: int, number: int) -> int:
    """Trial `number`'s seed (not hash(): Python salts str hashes per process)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{number}".encode()).digest()[:4], "big")


def _grid_size(params: Sequence[Parameter]) -> int | None:
    """How many points the grid has (None: a parameter is continuous), counted without
    listing them: a range of 2^53 integers is a valid range and no grid."""
    size = 1
    for p in params:
        d = p.distribution
        if isinstance(d, CategoricalDistribution):
            size *= len(d.choices)
        elif isinstance(d, IntDistribution) and not d.log:
            size *= (d.high - d.low) // d.step + 1
        elif isinstance(d, FloatDistribution) and d.step:
            size *= round((d.high - d.low) / d.step) + 1
        else:
            return None
    return size


def _grid(params: Sequence[Parameter]) -> dict[str, list[Any]] | None:
    """Every value of every parameter, or None if one is continuous."""
    grid: dict[str, list[Any]] = {}
    for p in params:
        d = p.distribution
        if isinstance(d, CategoricalDistribution):
            grid[p.path] = list(d.choices)
        elif isinstance(d, IntDistribution) and not d.log:
            grid[p.path] = list(range(d.low, d.high + 1, d.step))
        elif isinstance(d, FloatDistribution) and d.step:
            n = round((d.high - d.low) / d.step)
            grid[p.path] = [d.low + i * d.step for i in range(n + 1)]
        else:
            return None
    return grid


def check_sampler(
    v: Violations,
    field: str,
    name: str,
    args: dict[str, Any],
    params: Sequence[Parameter],
    scale: arguments.Scale,
) -> None:
    """Refuses an unknown sampler, argument or value, naming it."""
    allowed = SAMPLER_ARGS.get(name)
    if name == "gp" and importlib.util.find_spec("torch") is None:
        v.add(f"{field}.name", "gp needs torch, which this gateway cannot import (install"
              " requirements-trainer.txt beside it), or use tpe, cmaes or qmc")  # fmt: skip
        return
    if allowed is None:
        v.add(f"{field}.name", f"unknown sampler {name!r}; use one of {sorted(SAMPLER_ARGS)}")
        return
    ok = arguments.check(v, field, name, args, allowed, scale)
    if name == "grid":
        size = _grid_size(params)
        if size is None:
            v.add(field, "grid needs choices, int ranges or float ranges with a step")
        elif size > MAX_GRID:
            v.add(field, f"the grid has more than {MAX_GRID:,} points")
        ok = ok and size is not None and size <= MAX_GRID
    if ok:
        try:
            sampler(name, args, 0, 0, params)
        except (ValueError, TypeError) as err:
            v.add(f"{field}.args", str(err)[:300])


def sampler(
    name: str, args: dict[str, Any], seed: int, number: int, params: Sequence[Parameter]
) -> BaseSampler:
    """The sampler that asks for trial `number`."""
    derived = derive_seed(seed, number)
    kwargs = arguments.convert(args, SAMPLER_ARGS[name])
    if name == "random":
        return RandomSampler(seed=derived)
    if name == "cmaes":
        # Categoricals fall back to independent sampling: fine, and not worth a warning.
        return CmaEsSampler(**kwargs, seed=derived, warn_independent_sampling=False)
    if name == "qmc":
        # The QMC seed fixes its scrambling: constant; the point index is restored state.
        return QMCSampler(**kwargs, seed=seed, independent_sampler=RandomSampler(seed=derived))
    if name == "grid":
        grid = _grid(params)
        assert grid is not None  # checked at CreateStudy
        return GridSampler(grid, seed=seed)  # the seed fixes the order of the cells
    if name == "gp":
        return GPSampler(**kwargs, seed=derived, warn_independent_sampling=False)
    return TPESampler(**kwargs, seed=derived)


@dataclass(frozen=True)
class PastTrial:
    """A trial as the sampler sees it."""

    number: int
    # Optuna's values by path (a choice as its canonical text).
    internal: dict[str, Any]
    state: TrialState
    value: float | None
    sampler_state: dict[str, Any] = field(default_factory=dict)
    # The objective's metric by epoch (TPE ranks pruned trials by them).
    intermediate: dict[int, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Asked:
    """A new trial: Optuna's values by path, and the state to keep."""

    internal: dict[str, Any]
    trial_state: dict[str, Any]
    study_state: dict[str, Any]


def ask(
    study_name: str,
    params: Sequence[Parameter],
    maximize: bool,
    sampler_name: str,
    sampler_args: dict[str, Any],
    seed: int,
    trials: Sequence[PastTrial],
    study_state: dict[str, Any],
    priors: Sequence[tuple[dict[str, Any], float]] = (),
) -> Asked:
    """Rebuilds the study from `trials` (numbered 0..n-1) and asks for trial n.

    `priors` (Optuna's values by path, and an objective value) are past tasks' trials,
    added first as finished trials: a warm start's prior knowledge (only samplers that
    model the history, TPE and GP, are given any)."""
    number = len(trials)
    storage = InMemoryStorage()
    study = optuna.create_study(
        storage=storage,
        study_name=study_name,
        sampler=sampler(sampler_name, sampler_args, seed, number, params),
        direction="maximize" if maximize else "minimize",
    )
    distributions = {p.path: p.distribution for p in params}
    study_id = storage.get_study_id_from_name(study_name)
    for key, value in study_state.items():
        storage.set_study_system_attr(study_id, key, value)
    for internal, value in priors:
        study.add_trial(
            create_trial(
                state=TrialState.COMPLETE,
                params=internal,
                distributions=distributions,
                value=value,
            )
        )
    for past in trials:
        study.add_trial(
            create_trial(
                state=past.state,
                params=past.internal,
                distributions=distributions,
                value=past.value,
                system_attrs=past.sampler_state,
                intermediate_values=past.intermediate,
            )
        )
    trial = study.ask(distributions)
    frozen = study.get_trials(deepcopy=False)[trial.number]
    return Asked(
        internal=dict(trial.params),
        trial_state=dict(frozen.system_attrs),
        study_state=dict(storage.get_study_system_attrs(study_id)),
    )
