"""A study's trials as Optuna's matplotlib plots, over an Optuna study rebuilt in memory.

GetStudy's trials (params, state, value) and their attempts' epochs become an in-memory
Optuna study through `create_trial`; Optuna draws the optimization history, the
intermediate values, the parallel coordinates and the slice, and the four are stacked in
one PNG. Nothing is stored anywhere but the file: PostgreSQL stays the one source.
Imported only by `metalearn study plot` and the dashboard's importance view, when used
(Optuna and matplotlib take a while to import).
"""

from __future__ import annotations

import io
import json
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState, create_trial
from PIL import Image

from metalearn import documents
from metalearn.structs import plain_value
from metalearn.v1 import attempt_pb2
from metalearn.v1 import study_service_pb2 as pb

# "A new study created in memory" is noise here.
optuna.logging.set_verbosity(optuna.logging.WARNING)


def _choice(value: Any) -> Any:
    """A categorical choice as Optuna can hold it: strings as they are, others as JSON."""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def distributions(study: pb.Study) -> dict[str, BaseDistribution]:
    """Each parameter's Optuna distribution, by path, from the study's search space."""
    found: dict[str, BaseDistribution] = {}
    for parameter in study.search_space:
        kind = parameter.WhichOneof("kind")
        if kind == "float":
            r = parameter.float
            found[parameter.path] = FloatDistribution(r.low, r.high, log=r.log, step=r.step or None)
        elif kind == "int":
            i = parameter.int
            found[parameter.path] = IntDistribution(i.low, i.high, log=i.log, step=i.step or 1)
        elif kind == "categorical":
            values = [documents.integral(plain_value(v)) for v in parameter.categorical.values]
            choices = [_choice(v) for v in values]
            if len(set(choices)) != len(choices):  # "1" and 1: tell them apart
                choices = [json.dumps(v, sort_keys=True) for v in values]
            found[parameter.path] = CategoricalDistribution(choices)
    return found


def _state(trial: pb.Trial) -> TrialState | None:
    """Optuna's state of a trial (ours are named alike: RUNNING, COMPLETE, FAILED, ...)."""
    try:
        name = pb.TrialState.Name(trial.state).removeprefix("TRIAL_STATE_")
    except ValueError:  # a state newer than this client
        return None
    return TrialState.__members__.get("FAIL" if name == "FAILED" else name)


def _param(distribution: BaseDistribution, value: Any) -> Any:
    """A trial's value of a parameter as its distribution holds it."""
    if isinstance(distribution, CategoricalDistribution):
        text = _choice(value)
        return text if text in distribution.choices else json.dumps(value, sort_keys=True)
    if isinstance(distribution, IntDistribution):
        return int(value)
    return float(value)


def objective_of(study: pb.Study) -> tuple[str, bool, Callable[[attempt_pb2.EpochMetrics], float]]:
    """The objective's name, whether it is maximized, and its value in one epoch."""
    try:
        name = pb.Objective.Name(study.objective)
    except ValueError:
        name = "OBJECTIVE_BEST_VAL_ACCURACY"
    if name == "OBJECTIVE_UNSPECIFIED":
        name = "OBJECTIVE_BEST_VAL_ACCURACY"
    text = name.removeprefix("OBJECTIVE_").lower().replace("_", " ")
    if "LOSS" in name:
        return text, False, lambda e: e.val_loss
    return text, True, lambda e: e.val_accuracy


def rebuild(
    study: pb.Study, epochs: Mapping[int, Sequence[attempt_pb2.EpochMetrics]]
) -> optuna.Study:
    """An in-memory Optuna study holding the trials (`epochs`: each trial's, by number,
    for the intermediate values). A trial that does not fit the space is left out."""
    _, maximize, per_epoch = objective_of(study)
    rebuilt = optuna.create_study(
        study_name=study.name, direction="maximize" if maximize else "minimize"
    )
    space = distributions(study)
    for trial in sorted(study.trials, key=lambda t: t.number):
        state = _state(trial)
        if state is None:
            continue
        values = documents.integral(plain_value_of(trial))
        try:
            params = {path: _param(space[path], v) for path, v in values.items() if path in space}
            finished = state == TrialState.COMPLETE and math.isfinite(trial.value)
            rebuilt.add_trial(
                create_trial(
                    state=state if state != TrialState.COMPLETE or finished else TrialState.FAIL,
                    value=trial.value if finished else None,
                    params=params,
                    distributions={path: space[path] for path in params},
                    intermediate_values={
                        e.epoch: per_epoch(e)
                        for e in epochs.get(trial.number, ())
                        if math.isfinite(per_epoch(e))
                    },
                    user_attrs={"attempt": trial.attempt_name},
                )
            )
        except (ValueError, KeyError, TypeError):
            continue
    return rebuilt


def plain_value_of(trial: pb.Trial) -> dict[str, Any]:
    """A trial's params as plain Python, by path."""
    return {path: plain_value(value) for path, value in trial.params.fields.items()}


def _figure(axes: Any) -> Any:
    """The figure of what an Optuna plot returned (one Axes, or an array of them)."""
    first = axes.flat[0] if hasattr(axes, "flat") else axes
    return first.figure


def plot_study(
    study: pb.Study,
    epochs: Mapping[int, Sequence[attempt_pb2.EpochMetrics]],
    path: str | Path,
) -> Path:
    """Optimization history, intermediate values, parallel coordinates and slice of a
    study's trials, stacked in one PNG."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and in CI (before pyplot)
    from matplotlib import pyplot as plt
    from optuna.visualization import matplotlib as optuna_plots

    # Every matplotlib plot of Optuna's is experimental and says so each time. A filter,
    # not catch_warnings (not thread-safe); set here rather than at import, where a
    # caller's catch_warnings around the import (pytest's) would undo it.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    rebuilt = rebuild(study, epochs)
    target, _, _ = objective_of(study)
    plots: list[Callable[[], Any]] = [
        lambda: optuna_plots.plot_optimization_history(rebuilt, target_name=target),
        lambda: optuna_plots.plot_intermediate_values(rebuilt),
        lambda: optuna_plots.plot_parallel_coordinate(rebuilt, target_name=target),
        lambda: optuna_plots.plot_slice(rebuilt, target_name=target),
    ]
    images = []
    for draw in plots:
        figure = _figure(draw())
        figure.suptitle(f"study {study.name}", x=0.01, ha="left")
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
        plt.close(figure)
        images.append(Image.open(buffer).convert("RGB"))
    width = max(image.width for image in images)
    sheet = Image.new("RGB", (width, sum(image.height for image in images)), "white")
    top = 0
    for image in images:
        sheet.paste(image, ((width - image.width) // 2, top))
        top += image.height
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out, format="PNG")
    return out
