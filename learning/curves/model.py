"""The learned curve model: from a run's first k epochs, its command and its task's
profile, the final validation accuracy it will reach, as quantiles.

Gradient boosting (scikit-learn's HistGradientBoostingRegressor with the quantile loss,
one model per quantile) over `features.row`, predicting how far the last seen
validation accuracy still moves. Chosen by the suite's figures (bench/metalearning,
BENCHMARKS.md): on 1,536 stored curves it beats "last value seen" by a wide margin from
epoch 3, needs no GPU and fits in seconds. Every run gives one training row per prefix
length k, so one model serves every epoch of every run.

Five quantiles, each for one reader: LOW, MEDIAN and HIGH are the prediction and its
80 % interval that people see; the prognosis holds one of them against its bars (a run
is hopeless when even that ends below them: HIGH by default, and LIKELY, the upper
quartile, to confirm that a run at chance stays there; `prognosis.Verdict`); CEILING (the 99th
percentile) is what the learned pruner holds against a study's best, since pruning the
run that would have won costs the whole study. The tails' trees are kept small and their
leaves large (MIN_LEAF rows): on tasks it never saw, tails fitted closer to the data were
sure of themselves too often (too narrow), which is what both readers pay for; the
median keeps finer trees, which predict it better (BENCHMARKS.md, issue 14).

Its quality is measured when it is fitted, on tasks it did not see (grouped k-fold by
task), and kept with it: a prediction is only as good as that figure says.
"""

from __future__ import annotations

import io
import math
import pickle  # only models this gateway fitted and stored itself (see loads)
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import sklearn
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.model_selection import GroupKFold

from learning.curves.features import NAMES, Run, row, without_loss

LOW, MEDIAN, HIGH = 0.1, 0.5, 0.9
QUANTILES = (LOW, MEDIAN, HIGH)
LIKELY, CEILING = 0.75, 0.99
# Every quantile fitted, in order (QUANTILES are its first, second and fourth).
FITTED = (LOW, MEDIAN, LIKELY, HIGH, CEILING)
# Below these the model would be guessing: it says so instead of predicting.
MIN_RUNS = 30
MIN_TASKS = 2
# Prefix lengths a long run contributes (all of them up to here, then a sparse few).
_DENSE_K = 12
_SPARSE_K = 8
_FOLDS = 5
# The boosting's settings (see the module's docstring; BENCHMARKS.md has the figures):
# (learning rate, leaves per tree, rows per leaf), for the median and for the tails.
_ITERATIONS = 150
_MEDIAN_TREES = (0.08, 15, 20)
_TAIL_TREES = (0.05, 8, 60)
MIN_LEAF = _TAIL_TREES[2]
# The epoch the stored quality (and BENCHMARKS.md) quotes first.
QUOTED_K = 3
# The blind models (curves known by their accuracies alone: an Optuna trial's reports)
# learn from one run in this many: half again the fit's rows, not twice them.
BLIND_EVERY = 2


class TooLittleData(Exception):
    """Not enough finished runs to fit, with what there is and what is needed."""


@dataclass(frozen=True)
class Prediction:
    median: float
    low: float
    high: float
    likely: float = math.nan  # the upper quartile (prognosis.Verdict.chance_quantile)
    ceiling: float = math.nan  # the 99th percentile: what the learned pruner reads


@dataclass(frozen=True)
class Quality:
    """Error on tasks the model did not see, at epoch QUOTED_K and over every prefix."""

    runs: int
    tasks: int
    folds: int
    mae_at_k: float
    baseline_mae_at_k: float  # "the last value seen" as the prediction
    mae: float
    baseline_mae: float
    coverage: float  # share of finals inside [LOW, HIGH]

    def as_dict(self) -> dict[str, float]:
        """The figures as stored (JSON): one that could not be measured (no run reached
        epoch QUOTED_K, say) is left out, never NaN, which JSON and PostgreSQL refuse."""
        return {k: float(v) for k, v in asdict(self).items() if math.isfinite(v)}


def prefixes(n_epoch: int) -> list[int]:
    """The prefix lengths k < n_epoch a run of n_epoch epochs is learnt from."""
    ks = list(range(1, min(n_epoch, _DENSE_K + 1)))
    if n_epoch > _DENSE_K + 1:
        ks += sorted({int(x) for x in np.geomspace(_DENSE_K + 1, n_epoch - 1, _SPARSE_K)} - set(ks))
    return ks


def _rows(
    runs: Sequence[Run], blind: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Features, target (final minus last seen), weight, and run index of every row.

    With `blind`, every BLIND_EVERY-th run as a curve known only by its validation
    accuracy (`features.without_loss`): what the blind models learn from.
    """
    xs, ys, ws, which = [], [], [], []
    for i, run in enumerate(runs):
        final = run.final()
        if final is None or (blind and i % BLIND_EVERY):
            continue
        ks = [k for k in prefixes(run.n_epoch) if _accuracy(run.points[k - 1].val_accuracy)]
        view = without_loss(run) if blind else run
        for k in ks:
            xs.append(row(view, k))
            ys.append(final - run.points[k - 1].val_accuracy)
            ws.append(run.weight / len(ks))  # a run weighs its weight, however long
            which.append(i)
    return (
        _measured(np.asarray(xs, dtype=float).reshape(-1, len(NAMES))),
        np.asarray(ys, dtype=float),
        np.asarray(ws, dtype=float),
        np.asarray(which, dtype=int),
    )


def _accuracy(value: float) -> bool:
    """A measured accuracy (NaN is "not measured"; anything outside [0, 1] is no
    measurement either, whatever a store from before the checks holds)."""
    return 0.0 <= value <= 1.0


def _measured(matrix: np.ndarray) -> np.ndarray:
    """A column nobody measured (no task profiled yet, no momentum anywhere) trips the
    binning of scikit-learn's histogram boosting: make it a constant it never splits on.
    Per fitted subset (a fold may hold only unprofiled tasks)."""
    blank = np.all(np.isnan(matrix), axis=0)
    if not blank.any():
        return matrix
    filled = matrix.copy()
    filled[:, blank] = 0.0
    return filled


def _regressor(quantile: float, seed: int) -> HistGradientBoostingRegressor:
    rate, leaves, leaf = _MEDIAN_TREES if quantile == MEDIAN else _TAIL_TREES
    return HistGradientBoostingRegressor(
        loss="quantile",
        quantile=quantile,
        max_iter=_ITERATIONS,
        learning_rate=rate,
        max_leaf_nodes=leaves,
        min_samples_leaf=leaf,
        early_stopping=False,  # no random validation split: the same data, the same model
        random_state=seed,
    )


def usable(runs: Sequence[Run], tasks: Sequence[str]) -> tuple[int, int]:
    """How many finished runs with a final validation accuracy there are, on how many
    tasks."""
    kept = [t for r, t in zip(runs, tasks, strict=True) if r.final() is not None]
    return len(kept), len(set(kept))


def check_enough(runs: Sequence[Run], tasks: Sequence[str]) -> None:
    n, t = usable(runs, tasks)
    if n < MIN_RUNS or t < MIN_TASKS:
        raise TooLittleData(
            f"a curve model needs {MIN_RUNS} finished runs with a validation accuracy on "
            f"{MIN_TASKS} tasks; the store has {n} on {t}"
        )


def _learnable(runs: Sequence[Run], tasks: Sequence[str], which: np.ndarray) -> None:
    """Rows (prefixes of runs longer than one epoch, with an accuracy) of enough tasks."""
    found = len({tasks[i] for i in which})
    if found < MIN_TASKS:  # tasks whose runs are all too short give no rows
        raise TooLittleData(
            f"a curve model is judged on tasks it never saw: the runs long enough to learn"
            f" from are of {found} task(s), it needs {MIN_TASKS}"
        )


class CurveModel:
    """Fitted quantile models, and what they were fitted on."""

    def __init__(
        self,
        models: dict[float, HistGradientBoostingRegressor],
        runs: int,
        tasks: int,
        blind: dict[float, HistGradientBoostingRegressor] | None = None,
    ) -> None:
        self._models = models
        # For curves without losses (None: predicted by `models`, in a fold's quality).
        self._blind = blind
        self.names = NAMES
        self.runs = runs
        self.tasks = tasks
        self.sklearn = sklearn.__version__

    def quantile_rows(self, xs: np.ndarray, last: np.ndarray, blind: bool = False) -> np.ndarray:
        """Every fitted quantile (one column each, in the order of `self.quantiles`,
        sorted so they never cross) of the final validation accuracy for rows whose last
        seen accuracy is `last` (`blind`: rows of curves without losses)."""
        models = self._blind if blind and self._blind is not None else self._models
        found = np.column_stack([models[q].predict(xs) for q in self.quantiles])
        clipped: np.ndarray = np.clip(np.sort(found + last[:, None], axis=1), 0.0, 1.0)
        return clipped

    @property
    def quantiles(self) -> tuple[float, ...]:
        return tuple(sorted(self._models))

    def predict_rows(self, xs: np.ndarray, last: np.ndarray) -> np.ndarray:
        """Quantiles (one column each, in QUANTILES' order, sorted so they never cross)
        of the final validation accuracy for rows whose last seen accuracy is `last`."""
        found = self.quantile_rows(xs, last)
        return found[:, [self.quantiles.index(q) for q in QUANTILES]]

    def prediction(self, quantiles: Sequence[float]) -> Prediction:
        """One row of `quantile_rows` as a Prediction."""
        at = dict(zip(self.quantiles, quantiles, strict=True))
        return Prediction(
            median=float(at[MEDIAN]),
            low=float(at[LOW]),
            high=float(at[HIGH]),
            likely=float(at.get(LIKELY, math.nan)),
            ceiling=float(at.get(CEILING, math.nan)),
        )

    def predict(self, run: Run, k: int) -> Prediction | None:
        """The final validation accuracy after k epochs (None: the run measured none)."""
        last = run.points[k - 1].val_accuracy
        if not _accuracy(last):
            return None
        xs = np.asarray([row(run, k)], dtype=float)
        found = self.quantile_rows(xs, np.asarray([last]), not run.measures_loss)[0]
        # Never NaN (it would be stored as JSON): a model that cannot say, says nothing.
        return self.prediction(found) if np.all(np.isfinite(found)) else None

    def dumps(self) -> bytes:
        out = io.BytesIO()
        pickle.dump(self, out, protocol=5)
        return out.getvalue()

    @staticmethod
    def loads(data: bytes) -> CurveModel | None:
        """A stored model, or None when it was made by another feature set or another
        scikit-learn (refit then: an old pickle may not load, or mean something else)."""
        try:
            model = _Unpickler(io.BytesIO(data)).load()
        except (ImportError, AttributeError, pickle.UnpicklingError):
            return None  # a class no longer where it was: refit
        if not isinstance(model, CurveModel) or model.names != NAMES:
            return None
        if getattr(model, "_models", {}).keys() != set(FITTED):
            return None  # fitted before the prognosis and the pruner read LIKELY, CEILING
        if (getattr(model, "_blind", None) or {}).keys() != set(FITTED):
            return None  # fitted before curves without losses were learnt
        return model if model.sklearn == sklearn.__version__ else None


class _Unpickler(pickle.Unpickler):
    """Models stored before the maths moved out of the gateway (issue 26) name their
    classes under `gateway.curves`: they load from `learning.curves`."""

    def find_class(self, module: str, name: str) -> Any:
        if module.startswith("gateway.curves."):
            module = "learning.curves." + module.removeprefix("gateway.curves.")
        return super().find_class(module, name)


def fit(runs: Sequence[Run], tasks: Sequence[str], seed: int = 0) -> CurveModel:
    """The model over every finished run (`tasks[i]` names run i's task)."""
    check_enough(runs, tasks)
    xs, ys, ws, which = _rows(runs)
    _learnable(runs, tasks, which)
    models = {q: _regressor(q, seed).fit(xs, ys, sample_weight=ws) for q in FITTED}
    # Apart from the models that read losses, so that what they learnt stays as it was
    # (one set of trees over both kinds of rows predicted curves with losses worse).
    xs, ys, ws, _ = _rows(runs, blind=True)
    blind = {q: _regressor(q, seed).fit(xs, ys, sample_weight=ws) for q in FITTED}
    n, t = usable(runs, tasks)
    return CurveModel(models, n, t, blind)


def assess(runs: Sequence[Run], tasks: Sequence[str], seed: int = 0) -> Quality:
    """Errors on held-out tasks: each fold's model predicts tasks it never saw (fitted
    for the quantiles the figures read, QUANTILES, only)."""
    check_enough(runs, tasks)
    xs, ys, ws, which = _rows(runs)
    _learnable(runs, tasks, which)
    # Tasks as small integers: a key holds every label (up to 10,000 of 256 characters),
    # and an array of such strings is as wide as the longest, times every row.
    ids: dict[str, int] = {}
    groups = np.asarray([ids.setdefault(tasks[i], len(ids)) for i in which])
    n_groups = len(set(groups))
    folds = min(_FOLDS, n_groups)
    last = np.asarray(
        [runs[i].points[int(x[0]) - 1].val_accuracy for i, x in zip(which, xs, strict=True)]
    )
    predicted = np.zeros((len(ys), len(QUANTILES)))
    for train, test in GroupKFold(n_splits=folds).split(xs, ys, groups):
        part = _measured(xs[train])
        models = {q: _regressor(q, seed).fit(part, ys[train], sample_weight=ws[train])
                  for q in QUANTILES}  # fmt: skip
        model = CurveModel(models, 0, 0)
        predicted[test] = model.predict_rows(xs[test], last[test])
    final = ys + last
    at_k = xs[:, 0] == QUOTED_K
    err = np.abs(predicted[:, 1] - final)
    base = np.abs(last - final)
    inside = (predicted[:, 0] <= final + 1e-9) & (final <= predicted[:, 2] + 1e-9)

    def mean(values: np.ndarray, mask: np.ndarray | None = None) -> float:
        w = ws if mask is None else ws * mask
        return float(np.sum(values * w) / np.sum(w)) if np.sum(w) > 0 else math.nan

    n, t = usable(runs, tasks)
    return Quality(
        runs=n,
        tasks=t,
        folds=folds,
        mae_at_k=mean(err, at_k),
        baseline_mae_at_k=mean(base, at_k),
        mae=mean(err),
        baseline_mae=mean(base),
        coverage=mean(inside.astype(float)),
    )
