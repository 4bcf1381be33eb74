"""Learning from stored curves (issue 14), replayed over both suites' tables.

Leave-one-family-out (issue 29): the curve model is fitted on the runs of every other
family's tasks (as the gateway fits it from its store) and judged on the left-out
family's curves, epoch by epoch, with the gateway's own code (gateway/curves):

(a) pruning: simulated searches on the left-out task replay its stored curves epoch by
    epoch, and a pruner may stop a trial after any epoch; epochs spent against no
    pruning, and the regret of what the search keeps (see `pruning`);
(b) bad-run detection by epoch 3: a run is bad when it ends at chance (the largest
    class's share of its validation split), diverges, or ends below half of its task's
    best final accuracy; it is detected when a rule fires or the model is confident it
    ends low (`prognosis.hopeless`, as `stop_when_hopeless` decides). The verdict's
    thresholds (`prognosis.Verdict`) are chosen for each left-out family on the other
    families' runs (the most recall at precision >= 0.95 there), so no family's figures
    come from thresholds fitted on it. Precision and recall over every run of every
    task, and per family.
(c) mean absolute error of the final validation accuracy predicted from 3 epochs, against
    "the last value seen".
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.storages import InMemoryStorage
from optuna.trial import TrialState
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from gateway.studies import pruning as optuna_pruning
from learning.curves import chance, features, model, prognosis, pruner, rules
from metalearn.examples import grid
from metalearn.examples.tasks import family

DETECT_EPOCH = 3
# The verdicts each left-out family's is chosen from: which quantile of the predicted
# final accuracy must fall below a bar, from which epoch the model's word counts, and
# which quantile must stay at chance for AT_CHANCE to be hopeless.
_QUANTILES = (model.MEDIAN, model.LIKELY, model.HIGH)
VERDICTS = tuple(prognosis.Verdict(q, e, c) for q in _QUANTILES for e in (2, 3) for c in _QUANTILES)
# The precision a verdict must keep on the families it is chosen on (precision first:
# a hopeless verdict may stop a run).
VERDICT_PRECISION = 0.95


@dataclass(frozen=True)
class TableRun:
    task: str  # "<suite>:<task>": a task's runs of one grid (a search draws from them)
    point: int
    run: features.Run
    final: float | None  # None: diverged (a non-finite epoch) or ended early
    # The run as an Optuna script reports it: its validation accuracies alone.
    blind: features.Run
    family: str = ""


def runs_of(
    table: Mapping[str, Any], profiles: Mapping[str, Mapping[str, float]]
) -> list[TableRun]:
    """Every run of the table as the curve model reads a stored attempt, with what
    chance is on its task's data (the counts the table keeps, as a trainer reports
    them)."""
    suite = table.get("grid", grid.CLASSIC.name)
    found = []
    for task in table["tasks"]:
        n_labels = len(task["labels"])
        at_chance = chance.of(
            n_labels, task.get("validation_per_label", ()), task.get("images_per_label", ())
        )
        kind = family(task["labels"][0].split("/", 1)[0])
        for index, (point, stored) in enumerate(zip(table["points"], task["points"], strict=True)):
            points = [
                rules.Point(e, float(loss), float(vl), float(va))
                for e, (loss, vl, va) in enumerate(
                    zip(stored["loss"], stored["val_loss"], stored["val_accuracy"], strict=True), 1
                )
            ]
            run = features.Run(
                points=points,
                n_epoch=grid.EPOCHS,
                n_labels=n_labels,
                learning_rate=float(point["optimizer.lr"]),
                optimizer=str(point["optimizer.name"]),
                batch_size=int(point["batch_size"]),
                profile=profiles.get(task["name"], {}),
                chance=at_chance,
            )
            final = run.final()
            if any(not math.isfinite(p.loss) for p in points):
                final = None
            name = f"{suite}:{task['name']}"
            found.append(TableRun(name, index, run, final, features.without_loss(run), kind))
    return found


def bad_runs(runs: Sequence[TableRun]) -> list[bool]:
    """The issue's definition: ends at chance (the largest class's share of its
    validation split, and a margin), diverges, or ends below half of its task's best
    final validation accuracy."""
    best: dict[str, float] = {}
    for r in runs:
        if r.final is not None:
            best[r.task] = max(best.get(r.task, 0.0), r.final)
    return [
        r.final is None
        or r.final <= r.run.at_chance().ceiling(rules.CHANCE_ACCURACY_MARGIN)
        or r.final < prognosis.HALF_OF_BEST * best[r.task]
        for r in runs
    ]


def leave_one_family_out(runs: Sequence[TableRun], seed: int = 0) -> dict[str, model.CurveModel]:
    """One model per family, fitted on every other family's runs, keyed by each task of
    the left-out family (one thread each, as the gateway fits: OpenMP's threads on a
    busy machine are many times slower than one). The runs' task names group the
    model's own quality folds."""
    fitted = {}
    with threadpool_limits(limits=1):
        for kind in sorted({r.family for r in runs}):
            train = [r for r in runs if r.family != kind]
            found = model.fit([r.run for r in train], [r.task for r in train], seed=seed)
            fitted.update({r.task: found for r in runs if r.family == kind})
    return fitted


def prediction_error(
    runs: Sequence[TableRun], models: Mapping[str, model.CurveModel], k: int = 3
) -> dict[str, float]:
    """(c): MAE of the final validation accuracy predicted after k epochs."""
    errs, base, inside, blind = [], [], [], []
    for r in runs:
        if r.final is None:
            continue
        p = models[r.task].predict(r.run, k)
        assert p is not None
        errs.append(abs(p.median - r.final))
        seen = models[r.task].predict(r.blind, k)
        assert seen is not None
        blind.append(abs(seen.median - r.final))
        base.append(abs(r.run.points[k - 1].val_accuracy - r.final))
        inside.append(p.low - 1e-9 <= r.final <= p.high + 1e-9)
    return {
        "curve_mae_3": float(np.mean(errs)),
        # From the validation accuracies alone (an Optuna trial's intermediate values).
        "curve_blind_mae_3": float(np.mean(blind)),
        "last_value_mae_3": float(np.mean(base)),
        "interval_coverage": float(np.mean(inside)),
    }


def stratified(runs: Sequence[TableRun], limit: int) -> list[TableRun]:
    """At most `limit` runs as the gateway samples a fit's (`CurveStore.finished`): one
    run of each task, then a second of each, and so on, each task's runs in the order
    of a hash of their place (the store hashes the attempt's id)."""
    by_task: dict[str, list[tuple[str, TableRun]]] = {}
    for i, r in enumerate(runs):
        by_task.setdefault(r.task, []).append((hashlib.md5(str(i).encode()).hexdigest(), r))
    turns = [
        (turn, digest, r)
        for rs in by_task.values()
        for turn, (digest, r) in enumerate(sorted(rs, key=lambda x: x[0]))
    ]
    return [r for _, _, r in sorted(turns, key=lambda x: (x[0], x[1]))[:limit]]


def sampled_prediction_error(runs: Sequence[TableRun], share: float = 0.5) -> dict[str, float]:
    """(c) again with each left-out family's model fitted on a stratified sample of
    `share` of the other families' runs: what the gateway's cap on a fit's runs
    (MAX_RUNS) costs in accuracy, on a suite small enough to fit whole beside it."""
    fitted = {}
    sizes = []
    with threadpool_limits(limits=1):
        for kind in sorted({r.family for r in runs}):
            others = [r for r in runs if r.family != kind]
            train = stratified(others, int(len(others) * share))
            sizes.append(len(train))
            found = model.fit([r.run for r in train], [r.task for r in train])
            fitted.update({r.task: found for r in runs if r.family == kind})
    errors = prediction_error(runs, fitted)
    return {
        "curve_mae_3_sampled": errors["curve_mae_3"],
        "curve_sampled_share": share,
        "curve_sampled_runs_mean": float(np.mean(sizes)),
    }


def hopeless_by(
    runs: Sequence[TableRun],
    models: Mapping[str, model.CurveModel],
    verdict: prognosis.Verdict,
    order_seed: int = 0,
) -> list[bool]:
    """Which runs `prognosis` calls hopeless by epoch 3 under `verdict`.

    Runs of a task arrive in a random order (a seed); a run's "task best so far" is the
    best final of the runs of its task that finished before it, as the store would
    know it."""
    rng = np.random.default_rng(order_seed)
    order = rng.permutation(len(runs))
    best_so_far: dict[str, float] = {}
    said = [False] * len(runs)
    for i in order:
        r = runs[i]
        for k in range(1, DETECT_EPOCH + 1):
            found = prognosis.assess(
                r.run, k, models[r.task], best_so_far.get(r.task), verdict=verdict
            )
            if found.hopeless:
                said[i] = True
                break
        if r.final is not None:
            best_so_far[r.task] = max(best_so_far.get(r.task, 0.0), r.final)
    return said


def _scores(said: Sequence[bool], truth: Sequence[bool]) -> tuple[float, float]:
    tp = sum(s and t for s, t in zip(said, truth, strict=True))
    fp = sum(s and not t for s, t in zip(said, truth, strict=True))
    fn = sum(t and not s for s, t in zip(said, truth, strict=True))
    return (tp / (tp + fp) if tp + fp else math.nan, tp / (tp + fn) if tp + fn else math.nan)


def choose_verdict(
    said: Mapping[prognosis.Verdict, Sequence[bool]], truth: Sequence[bool]
) -> prognosis.Verdict:
    """The verdict with the most recall among those with precision >= VERDICT_PRECISION
    on these runs (none: the most precise), ties to the earlier in VERDICTS."""

    def key(v: prognosis.Verdict) -> tuple[bool, float, float]:
        precision, recall = _scores(said[v], truth)
        precision = 0.0 if math.isnan(precision) else precision
        recall = 0.0 if math.isnan(recall) else recall
        ok = precision >= VERDICT_PRECISION
        return (ok, recall if ok else precision, precision)

    return max(said, key=key)


def detection(
    runs: Sequence[TableRun], models: Mapping[str, model.CurveModel], order_seed: int = 0
) -> dict[str, Any]:
    """(b): which runs are called hopeless by epoch 3 against which are bad, each family
    under the verdict chosen on the other families' runs (`bad_run_*`), and under the
    gateway's own `prognosis.VERDICT` (`bad_run_*_default`); `verdict_all_families`:
    the verdict the same choice makes on every family (what VERDICT should be)."""
    truth = bad_runs(runs)
    said = {v: hopeless_by(runs, models, v, order_seed) for v in VERDICTS}
    families = sorted({r.family for r in runs})
    chosen = [False] * len(runs)
    figures: dict[str, Any] = {}
    for kind in families:
        inside = [r.family == kind for r in runs]
        others = [not x for x in inside]
        verdict = choose_verdict(
            {v: _pick(s, others) for v, s in said.items()}, _pick(truth, others)
        )
        for i, x in enumerate(inside):
            if x:
                chosen[i] = said[verdict][i]
        precision, recall = _scores(_pick(chosen, inside), _pick(truth, inside))
        figures[f"family_{kind}_bad_run_precision"] = precision
        figures[f"family_{kind}_bad_run_recall"] = recall
        figures[f"family_{kind}_bad_runs"] = float(sum(_pick(truth, inside)))
        figures[f"family_{kind}_verdict"] = _verdict_text(verdict)
    figures["bad_run_precision"], figures["bad_run_recall"] = _scores(chosen, truth)
    default = said.get(prognosis.VERDICT) or hopeless_by(runs, models, prognosis.VERDICT)
    precision, recall = _scores(default, truth)
    figures["bad_run_precision_default"], figures["bad_run_recall_default"] = precision, recall
    figures["verdict_all_families"] = _verdict_text(choose_verdict(said, truth))
    figures["bad_runs"] = float(sum(truth))
    figures["runs"] = float(len(runs))
    return figures


def _pick(values: Sequence[Any], mask: Sequence[bool]) -> list[Any]:
    return [v for v, m in zip(values, mask, strict=True) if m]


def _verdict_text(v: prognosis.Verdict) -> str:
    return (
        f"quantile {v.quantile} from epoch {v.model_epoch}, at chance confirmed by "
        f"quantile {v.chance_quantile}"
    )


class Known(model.CurveModel):
    """A fitted model whose predictions for a set of runs are worked out at once, in one
    batch: the very answers `predict` gives (the model is a pure function), without a
    call into scikit-learn per epoch of every replayed trial."""

    def __init__(self, fitted: model.CurveModel, runs: Sequence[features.Run]) -> None:
        super().__init__(fitted._models, fitted.runs, fitted.tasks, fitted._blind)
        self._known: dict[tuple[int, int], model.Prediction] = {}
        for blind in (False, True):
            keys, xs, last = [], [], []
            for run in (r for r in runs if r.measures_loss != blind):
                for k in range(1, len(run.points) + 1):
                    if math.isfinite(run.points[k - 1].val_accuracy):
                        keys.append((id(run), k))
                        xs.append(features.row(run, k))
                        last.append(run.points[k - 1].val_accuracy)
            found = (
                fitted.quantile_rows(
                    np.asarray(xs, dtype=float), np.asarray(last, dtype=float), blind
                )
                if xs
                else np.zeros((0, len(fitted.quantiles)))
            )
            self._known.update(
                {key: fitted.prediction(q) for key, q in zip(keys, found.tolist(), strict=True)}
            )
        self._runs = list(runs)  # kept alive: their ids are the keys

    def predict(self, run: features.Run, k: int) -> model.Prediction | None:
        found = self._known.get((id(run), k))
        return found if found is not None else super().predict(run, k)


def known(runs: Sequence[TableRun], models: Mapping[str, model.CurveModel]) -> dict[str, Known]:
    """Each task's model with its predictions for the runs it judges worked out (one
    batch per fitted model: a left-out family's tasks share theirs)."""
    shared: dict[int, tuple[model.CurveModel, set[str]]] = {}
    for name, fitted in models.items():
        shared.setdefault(id(fitted), (fitted, set()))[1].add(name)
    found: dict[str, Known] = {}
    for fitted, names in shared.values():
        wrapped = Known(fitted, [x for r in runs if r.task in names for x in (r.run, r.blind)])
        found.update(dict.fromkeys(names, wrapped))
    return found


# (a) Pruning. A search is SEARCH_TRIALS commands of the task's 64, drawn at random
# without replacement and run one after the other, as a random-search study of half the
# grid would: each seed draws another set, so the searches differ in which commands they
# hold, not only in order (all 64 every time would give every search of a task the same
# best run, and the seeds would be mere reorderings). Every pruner sees the same searches.
SEARCH_TRIALS = 32
SEARCH_SEEDS = 5
# A search keeps its best when the best final accuracy among the trials the pruner let
# finish is at most this far below the best final among all its trials (accuracy units),
# and the goal is that share of searches.
REGRET_OK = 0.01
GOAL_OK = 0.95
# The top-k baseline: every trial's first epoch, then the best quarter run on.
TOP_K_SHARE = 0.25
# Optuna's pruners, with the arguments a study would give them (gateway/studies/pruning
# fills in the rest as it does for a study: successive halving from epoch 1, Hyperband
# from 1 to the command's last epoch). Percentile 25 keeps the top quarter at each epoch
# (the median pruner is the 50th).
OPTUNA_PRUNERS: dict[str, dict[str, Any]] = {
    "median": {},
    "percentile": {"percentile": 25.0},
    "successive_halving": {},
    "hyperband": {},
    "wilcoxon": {},
}
# Other settings of each pruner, to compare pruners at equal regret: the fewest epochs
# at which each keeps the best in GOAL_OK of the searches. Wilcoxon is left at its
# default: scipy's exact test makes it a hundred times slower to replay than the
# others, and a stricter p prunes less, so it spends more epochs than its default does.
SWEEP: dict[str, list[dict[str, Any]]] = {
    "median": [{"n_warmup_steps": w} for w in (1, 2, 3, 4)] + [{"n_startup_trials": 10}],
    "percentile": [
        {"percentile": p, "n_warmup_steps": w}
        for p in (25.0, 50.0, 75.0)
        for w in (0, 1, 2, 3)
        if (p, w) != (25.0, 0)
    ],
    "successive_halving": [
        {"min_resource": r, "reduction_factor": f}
        for r in (1, 2, 3)
        for f in (2, 3, 4)
        if (r, f) != (1, 4)
    ],
    "hyperband": [{"reduction_factor": 2}, {"reduction_factor": 4}, {"min_resource": 2}],
    "top_k": [{"share": 0.5}, {"share": 0.75}],
    "learned": [
        {"min_epoch": 1},
        {"min_epoch": 3},
        {"margin": -0.01},
        {"margin": 0.01},
        {"n_startup_trials": 5},
    ],
    "learned_blind": [
        {"min_epoch": 1},
        {"min_epoch": 3},
        {"margin": -0.01},
        {"margin": 0.01},
        {"n_startup_trials": 5},
    ],
}

# A pruner in the replay: a search's trials in order (and a name for its study) ->
# how many epochs each trial ran (its last epoch: it finished; fewer: it was pruned).
Replay = Callable[[Sequence[TableRun], str], list[int]]


def value(r: TableRun) -> float:
    """A trial's value: its last epoch's validation accuracy (0 when not finite)."""
    last = r.run.points[-1].val_accuracy
    return last if math.isfinite(last) else 0.0


def no_pruning(trials: Sequence[TableRun], name: str) -> list[int]:
    return [len(r.run.points) for r in trials]


def optuna_replay(kind: str, args: Mapping[str, Any]) -> Replay:
    """Optuna's pruner in a real study (in memory, ask and tell): every epoch's validation
    accuracy is reported as the intermediate value (maximized) and the pruner asked after
    every epoch but the last (a prune then would save nothing); a finished trial is told
    its last epoch's accuracy, a pruned one PRUNED."""

    def replay(trials: Sequence[TableRun], name: str) -> list[int]:
        study = optuna.create_study(
            storage=InMemoryStorage(),
            study_name=name,  # Hyperband picks a trial's bracket from it
            pruner=optuna_pruning.make(kind, dict(args), grid.EPOCHS),
            direction="maximize",
        )
        spent = []
        for r in trials:
            trial = study.ask()
            points = r.run.points
            ran = len(points)
            for p in points:
                if math.isfinite(p.val_accuracy):
                    trial.report(p.val_accuracy, p.epoch)
                if p.epoch < len(points) and trial.should_prune():
                    ran = p.epoch
                    break
            if ran < len(points):
                study.tell(trial, state=TrialState.PRUNED)
            else:
                study.tell(trial, value(r))
            spent.append(ran)
        return spent

    return replay


def top_k_replay(share: float = TOP_K_SHARE) -> Replay:
    """The simplest honest baseline: every trial of the search trains one epoch, then the
    best `share` of them by that epoch's validation accuracy (ties: the earlier trial)
    train to the end. It needs the whole search drawn up front, which a sequential
    study does not: a batch schedule, like successive halving's first rung."""

    def replay(trials: Sequence[TableRun], name: str) -> list[int]:
        first = [r.run.points[0].val_accuracy for r in trials]
        keep = max(1, math.ceil(share * len(trials)))
        ranked = sorted(
            range(len(trials)),
            key=lambda i: (-(first[i] if math.isfinite(first[i]) else -1.0), i),
        )
        kept = set(ranked[:keep])
        return [len(r.run.points) if i in kept else 1 for i, r in enumerate(trials)]

    return replay


def learned_replay(
    curve_model: model.CurveModel, learned: pruner.LearnedPruner, blind: bool = False
) -> Replay:
    """The learned pruner as a study runs it: after each epoch, `decide` with the best
    final accuracy among the search's finished trials so far, and how many finished.
    `blind`: from the validation accuracies alone, as an Optuna script's trial reports
    them to `metalearn.optuna.LearnedPruner`."""

    def replay(trials: Sequence[TableRun], name: str) -> list[int]:
        best: float | None = None
        finished = 0
        spent = []
        for r in trials:
            ran = len(r.run.points)
            seen = r.blind if blind else r.run
            for k in range(1, len(r.run.points)):
                if learned.decide(curve_model, seen, k, best, finished) is not None:
                    ran = k
                    break
            if ran == len(r.run.points):
                finished += 1
                best = value(r) if best is None else max(best, value(r))
            spent.append(ran)
        return spent

    return replay


@dataclass(frozen=True)
class Search:
    pruner: str
    task: str
    seed: int
    epochs: int  # spent
    full: int  # what no pruning spends
    regret: float


Drawn = list[tuple[str, int, list[TableRun]]]


def searches(
    runs: Sequence[TableRun], seeds: int = SEARCH_SEEDS, trials: int = SEARCH_TRIALS
) -> Drawn:
    """Every search: (task, seed, its trials in order)."""
    by_task: dict[str, list[TableRun]] = {}
    for r in runs:
        by_task.setdefault(r.task, []).append(r)
    found = []
    for t, name in enumerate(sorted(by_task)):
        pool = by_task[name]
        for seed in range(1, seeds + 1):
            rng = np.random.default_rng([seed, t])
            drawn = rng.choice(len(pool), size=min(trials, len(pool)), replace=False)
            found.append((name, seed, [pool[int(i)] for i in drawn]))
    return found


def replay(drawn: Drawn, name: str, replays: Mapping[str, Replay]) -> list[Search]:
    """Each search under one pruner (`replays` maps a task to its pruner: the learned
    one has a model per left-out task). Regret: the best final among all the search's
    trials (what no pruning finds) minus the best among those the pruner let finish."""
    found = []
    for task, seed, trials in drawn:
        spent = replays[task](trials, f"{name}-{task}-{seed}")
        finals = [value(r) for r in trials]
        kept = [f for f, n, r in zip(finals, spent, trials, strict=True) if n == len(r.run.points)]
        regret = max(finals) - (max(kept) if kept else 0.0)
        full = sum(len(r.run.points) for r in trials)
        found.append(Search(name, task, seed, sum(spent), full, regret))
    return found


def summary(found: Sequence[Search]) -> dict[str, float]:
    """Epochs spent over what no pruning spends, the share of searches with regret at
    most REGRET_OK, and the median regret."""
    return {
        "epochs_ratio": sum(s.epochs for s in found) / sum(s.full for s in found),
        "regret_ok": float(np.mean([s.regret <= REGRET_OK + 1e-9 for s in found])),
        "regret_median": float(np.median([s.regret for s in found])),
    }


def _replays(
    name: str, args: Mapping[str, Any], tasks: Sequence[str], models: Mapping[str, model.CurveModel]
) -> dict[str, Replay]:
    if name == "none":
        return dict.fromkeys(tasks, no_pruning)
    if name == "top_k":
        return dict.fromkeys(tasks, top_k_replay(**args))
    if name in ("learned", "learned_blind"):
        learned = pruner.LearnedPruner(**args)
        blind = name == "learned_blind"
        return {t: learned_replay(models[t], learned, blind) for t in tasks}
    return dict.fromkeys(tasks, optuna_replay(name, args))


def _shown(args: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in args.items()) or "defaults"


def pruning(
    runs: Sequence[TableRun],
    models: Mapping[str, model.CurveModel],
    seeds: int = SEARCH_SEEDS,
    trials: int = SEARCH_TRIALS,
    optuna_pruners: Mapping[str, Mapping[str, Any]] = OPTUNA_PRUNERS,
    sweep: Mapping[str, Sequence[Mapping[str, Any]]] = SWEEP,
) -> dict[str, Any]:
    """(a): every pruner over the same searches. Per pruner, at its default settings:
    `epochs_ratio_<name>` (epochs spent over no pruning's), `regret_ok_<name>` (share of
    searches with regret at most REGRET_OK) and `regret_median_<name>`; over its default
    and its SWEEP settings, `epochs_at_goal_<name>`, the fewest epochs at which it
    keeps regret_ok >= GOAL_OK (None: no setting does), and `setting_at_goal_<name>`.
    `pruning_sweep` lists every setting's figures."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not a line per pruned trial
    drawn = searches(runs, seeds, trials)
    tasks = sorted({t for t, _, _ in drawn})
    defaults: dict[str, Mapping[str, Any]] = {
        "none": {}, **optuna_pruners, "top_k": {}, "learned": {}, "learned_blind": {}
    }  # fmt: skip
    figures: dict[str, Any] = {"pruning_searches": len(drawn), "pruning_trials": trials}
    rows = []
    for name, args in defaults.items():
        settings = [args, *[{**args, **more} for more in sweep.get(name, [])]]
        at_goal: tuple[float, str] | None = None
        for i, setting in enumerate(settings):
            found = summary(replay(drawn, name, _replays(name, setting, tasks, models)))
            if i == 0:
                for key, v in found.items():
                    figures[f"{key}_{name}"] = v
            if name == "none":
                break
            rows.append(
                f"{name} ({_shown(setting)}): epochs {found['epochs_ratio']:.3f}, "
                f"regret <= {REGRET_OK} in {found['regret_ok']:.3f}"
            )
            if found["regret_ok"] >= GOAL_OK - 1e-9 and (
                at_goal is None or found["epochs_ratio"] < at_goal[0]
            ):
                at_goal = (found["epochs_ratio"], _shown(setting))
        if name != "none":
            figures[f"epochs_at_goal_{name}"] = at_goal[0] if at_goal else None
            figures[f"setting_at_goal_{name}"] = at_goal[1] if at_goal else "none reaches it"
    figures["learned_epochs_ratio"] = figures["epochs_ratio_learned"]
    figures["learned_regret_ok_fraction"] = figures["regret_ok_learned"]
    # The same pruner reading validation accuracies only (an Optuna script's reports).
    figures["learned_blind_epochs_ratio"] = figures["epochs_ratio_learned_blind"]
    figures["learned_blind_regret_ok_fraction"] = figures["regret_ok_learned_blind"]
    figures["pruning_sweep"] = rows
    return figures


def figures(
    tables: Sequence[Mapping[str, Any]],
    profiles: Mapping[str, Mapping[str, float]],
    seeds: int = SEARCH_SEEDS,
    trials: int = SEARCH_TRIALS,
) -> dict[str, Any]:
    """Issue 14's figures (a)-(c) over the tables' runs together, with one model per
    left-out family fitted once and shared by all three (the fit is deterministic: the
    seeds draw the searches, and the replay's orders, not the models)."""
    runs = [r for t in tables for r in runs_of(t, profiles)]
    start = time.perf_counter()
    fitted = known(runs, leave_one_family_out(runs))
    found: dict[str, Any] = {"curve_fit_seconds": time.perf_counter() - start}
    found.update(prediction_error(runs, fitted))
    found.update(sampled_prediction_error(runs))
    found["curve_mae_3_sampled_change"] = found["curve_mae_3_sampled"] - found["curve_mae_3"]
    found.update(detection(runs, fitted))
    start = time.perf_counter()
    found.update(pruning(runs, fitted, seeds, trials))
    found["pruning_seconds"] = time.perf_counter() - start
    return found
