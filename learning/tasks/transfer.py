"""Which past commands a new task should try first: a static portfolio that needs no task
distance, a ranking learned from task profiles and commands, and the choice between them
made on held-out past tasks.

Pure functions over plain numbers, shared by the gateway (SuggestCommand, warm-started
studies) and the meta-learning benchmark that replays them (bench/metalearning).

- The static portfolio (Pfisterer et al., "Learning multiple defaults for machine
  learning algorithms", 2021): commands chosen greedily so that, over the past tasks, the
  best of the first k is as good as it can be; no distance, no profile. It is the
  baseline every transfer method has to beat, and the fallback when none does.
- The learned ranking: a command's mean normalized value over the past tasks (1 a
  task's best, 0 its worst: the static score) plus a correction that a gradient-boosted
  model (scikit-learn's histogram boosting) predicts from the task's profile and the
  command's settings, fitted on every (past task, command) pair to how far the command's
  value on that task was from its mean. For a new task it ranks the commands by the
  sum: a command's worth may depend on the task (a crop that suits digits framed by
  clutter and ruins bars at an image's edge), which a portfolio over tasks cannot
  express. Fitting the correction rather than the value itself spends the model on what
  the tasks disagree on (which command suits which task), not on what every task agrees
  on (which learning rates ruin all of them), and where it has learned nothing the
  ranking is the static score's. The model is an average of BAGS, each fitted on a
  bootstrap sample of the past tasks (bagging): with a few dozen tasks, one boosted
  model's first command swings with which tasks it saw, and the average's less so.
- The order a new task tries commands in under the learned ranking (`led`): the command
  the model puts first, then the static portfolio's in its order. The model is trusted
  with the one command it says suits this task; the portfolio's complementary commands
  hedge it, so that when the model is wrong the second trial is the best default.
- `choose`: the learned ranking only where, on past tasks it was not fitted on (grouped
  k-fold by task), its order's regret after 1 to TOP trials was lower than the static
  portfolio's on average and on more tasks than it was higher; the answer says which
  ranking it is and both figures, so a suggestion can say why. No further margin: the
  learned order's second command is the portfolio's first, so where the model is wrong
  it costs one trial.

Written here rather than taken from a library: syne-tune's transfer schedulers and
BoTorch's RGPE drive their own searches, one GP or surrogate per past task refitted as
trials come; here the candidates are the commands the store holds, ranked once per task
in the gateway's process, without their dependencies (syne-tune's import alone pulls
xgboost and CUDA libraries). The benchmark runs RGPE on BoTorch beside it
(bench/metalearning/rgpe.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.model_selection import GroupKFold

Command = str
TaskId = str

# The learned ranking is judged by the mean normalized regret of the best of its first k
# commands on held-out tasks, over k = 1..TOP.
TOP = 3
# Bootstrap samples of the past tasks the learned ranking averages over.
BAGS = 5
# Below these there is too little to learn a ranking from, or to judge it on.
MIN_TASKS = 6
_FOLDS = 5
# A command's settings the model reads: at most this many, the most common first.
MAX_SETTINGS = 64
_ITERATIONS = 100
_MAX_CATEGORIES = 250
GREEDY = 32  # scikit-learn's histogram boosting takes at most 255


def normalized(values: Mapping[Command, float]) -> dict[Command, float]:
    """Each command's value on its task scaled to 0 (the task's worst) .. 1 (its best);
    a task where every command scored alike says nothing (every command 1)."""
    if not values:
        return {}
    finite = {c: v for c, v in values.items() if math.isfinite(v)}
    if not finite:
        return dict.fromkeys(values, 0.0)
    best, worst = max(finite.values()), min(finite.values())
    span = best - worst
    return {
        c: (1.0 if span <= 1e-12 else (finite[c] - worst) / span) if c in finite else 0.0
        for c in values
    }


def informative(values: Mapping[Command, float]) -> bool:
    """Whether a task tells one command from another: two finite values that differ (a
    task that ran one command, or where all scored alike, ranks nothing)."""
    finite = [v for v in values.values() if math.isfinite(v)]
    return len(finite) >= 2 and max(finite) - min(finite) > 1e-12


def regret_of(values: Mapping[Command, float], tried: Sequence[Command]) -> float:
    """Normalized regret of the best of `tried` on a task (1 when none of them ran)."""
    scores = normalized(values)
    found = [scores[c] for c in tried if c in scores]
    return 1.0 - max(found) if found else 1.0


def _weights(
    tasks: Iterable[TaskId], weights: Mapping[TaskId, float] | None
) -> dict[TaskId, float]:
    return {t: 1.0 if weights is None else float(weights.get(t, 1.0)) for t in tasks}


def mean_values(
    scores: Mapping[TaskId, Mapping[Command, float]],
    commands: Sequence[Command],
    weights: Mapping[TaskId, float],
) -> dict[Command, float]:
    """Each command's weighted mean normalized value over the tasks (0 where a task did
    not run it): the static portfolio's score."""
    total = sum(weights[t] for t in scores)
    return {
        c: sum(weights[t] * s.get(c, 0.0) for t, s in scores.items()) / total if total > 0 else 0.0
        for c in commands
    }


def static_portfolio(
    evaluations: Mapping[TaskId, Mapping[Command, float]],
    count: int | None = None,
    weights: Mapping[TaskId, float] | None = None,
) -> list[Command]:
    """Commands in the order a static portfolio tries them: each next one the command
    that most raises the summed best normalized value over the past tasks (Pfisterer et
    al.'s greedy; a task counts its weight, 1 by default), then, once no command adds
    anything, the rest by mean normalized value. Ties: the command's key."""
    scores = {t: normalized(v) for t, v in evaluations.items() if informative(v)}
    commands = sorted({c for v in evaluations.values() for c in v})
    if not scores:
        # No task tells commands apart: the raw values, however incomparable, are all
        # there is to go by.
        raw = {c: [v[c] for v in evaluations.values() if c in v and math.isfinite(v[c])]
               for c in commands}  # fmt: skip
        commands.sort(key=lambda c: (-(float(np.mean(raw[c])) if raw[c] else -math.inf), c))
        return commands if count is None else commands[:count]
    w = _weights(scores, weights)
    limit = len(commands) if count is None else min(count, len(commands))
    covered = dict.fromkeys(scores, 0.0)
    chosen: list[Command] = []
    left = list(commands)
    mean = mean_values(scores, commands, w)
    # The greedy's cost grows with the square of the commands: past GREEDY of them the
    # rest follow by mean value (a portfolio's first few are what it is for).
    while left and len(chosen) < min(limit, GREEDY):
        gains = {
            c: sum(w[t] * max(s.get(c, 0.0) - covered[t], 0.0) for t, s in scores.items())
            for c in left
        }
        best = max(left, key=lambda c: (gains[c], mean[c], _neg(c)))
        if gains[best] <= 1e-12:
            best = max(left, key=lambda c: (mean[c], _neg(c)))
        chosen.append(best)
        left.remove(best)
        for t, s in scores.items():
            covered[t] = max(covered[t], s.get(best, 0.0))
    left.sort(key=lambda c: (-mean[c], c))
    return chosen + left[: limit - len(chosen)]


def _neg(key: str) -> tuple[int, ...]:
    """A key that sorts the command with the smaller key first under max()."""
    return tuple(-ord(ch) for ch in key)


# --- the learned ranking -------------------------------------------------------------


def flatten(document: Any, prefix: str = "") -> dict[str, Any]:
    """A command's settings as path -> scalar ("optimizer.lr", "model.layers[0].name")."""
    found: dict[str, Any] = {}
    if isinstance(document, Mapping):
        for k, v in document.items():
            found.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(document, list):
        for i, v in enumerate(document):
            found.update(flatten(v, f"{prefix}[{i}]"))
    elif isinstance(document, int | float):  # booleans too
        found[prefix] = float(document)
    elif isinstance(document, str):
        found[prefix] = document
    return found


class Commands(Mapping[Command, Mapping[str, Any]]):
    """Commands by key, each flattened at most once. A fit flattens a command in each
    fold's settings and rows and again in the final fit and every ranking after it; at
    2,000 tasks of 60 commands that was half a minute of one request's first fit."""

    def __init__(self, documents: Mapping[Command, Mapping[str, Any]]) -> None:
        self._documents = documents
        self._flat: dict[Command, dict[str, Any]] = {}

    @staticmethod
    def of(commands: Mapping[Command, Mapping[str, Any]]) -> Commands:
        return commands if isinstance(commands, Commands) else Commands(commands)

    def __getitem__(self, key: Command) -> Mapping[str, Any]:
        return self._documents[key]

    def __iter__(self) -> Iterator[Command]:
        return iter(self._documents)

    def __len__(self) -> int:
        return len(self._documents)

    def only(self, keys: Iterable[Command]) -> Commands:
        """These of the commands, with what was flattened of them kept."""
        found = Commands({c: self._documents[c] for c in keys if c in self._documents})
        found._flat = self._flat  # a key's flattening is the same in both
        return found

    def flat(self, key: Command) -> dict[str, Any]:
        """The command's settings as `flatten` gives them (kept: do not change them)."""
        found = self._flat.get(key)
        if found is None:
            found = self._flat[key] = flatten(self._documents[key])
        return found


@dataclass(frozen=True)
class Settings:
    """Which of the commands' settings the model reads, and how: a number as it is (the
    trees need no scaling), text as the index of its value (a category)."""

    paths: tuple[str, ...]
    vocabulary: tuple[tuple[str, ...], ...]  # per path; empty for a number

    @staticmethod
    def of(
        commands: Mapping[Command, Mapping[str, Any]], keys: Iterable[Command] | None = None
    ) -> Settings:
        """The settings of these commands (of `keys` among them, when given)."""
        kept = Commands.of(commands)
        flat = [kept.flat(c) for c in (kept if keys is None else keys)]
        seen: dict[str, list[Any]] = {}
        for f in flat:
            for path, value in f.items():
                seen.setdefault(path, []).append(value)
        # Settings that vary between commands (a constant says nothing), most common first;
        # text of more values than the boosting's categories hold is left out. A setting
        # some commands lack varies by being there or not (a crop of one size in half the
        # commands, none in the others): the row holds NaN where it is absent, which the
        # boosting sends down a branch of its own.
        varying = [
            p
            for p, vs in seen.items()
            if (len({repr(v) for v in vs}) > 1 or len(vs) < len(flat))
            and len({v for v in vs if isinstance(v, str)}) <= _MAX_CATEGORIES
        ]
        varying.sort(key=lambda p: (-len(seen[p]), p))
        paths = tuple(varying[:MAX_SETTINGS])
        vocabulary = tuple(
            tuple(sorted({v for v in seen[p] if isinstance(v, str)}))
            if any(isinstance(v, str) for v in seen[p])
            else ()
            for p in paths
        )
        return Settings(paths, vocabulary)

    def row(self, document: Mapping[str, Any]) -> list[float]:
        return self.row_of(flatten(document))

    def row_of(self, flat: Mapping[str, Any]) -> list[float]:
        """`row` of a command already flattened."""
        out = []
        for path, words in zip(self.paths, self.vocabulary, strict=True):
            value = flat.get(path)
            if words:
                out.append(float(words.index(value)) if value in words else math.nan)
            else:
                out.append(value if isinstance(value, float) else math.nan)
        return out

    @property
    def categorical(self) -> list[bool]:
        return [bool(words) for words in self.vocabulary]


@dataclass(frozen=True)
class Ranker:
    """The learned ranking, fitted on past tasks."""

    models: tuple[HistGradientBoostingRegressor, ...]  # one per bag
    profile_names: tuple[str, ...]
    settings: Settings
    tasks: int
    # Each command's mean normalized value over the past tasks: what the model corrects.
    means: Mapping[Command, float]

    def rank(
        self,
        profile: Mapping[str, float],
        commands: Mapping[Command, Mapping[str, Any]],
        keys: Iterable[Command] | None = None,
    ) -> list[tuple[Command, float]]:
        """The commands (those of `keys` among them, when given), best predicted first,
        with their predicted normalized value (a command no past task ran starts from
        0)."""
        keys = sorted(commands if keys is None else keys)
        if not keys:
            return []
        kept = Commands.of(commands)
        task = _profile_row(profile, self.profile_names)
        xs = np.asarray([task + self.settings.row_of(kept.flat(c)) for c in keys], dtype=float)
        base = np.asarray([self.means.get(c, 0.0) for c in keys])
        predicted = base + np.mean([m.predict(xs) for m in self.models], axis=0)
        order = sorted(range(len(keys)), key=lambda i: (-predicted[i], keys[i]))
        return [(keys[i], float(predicted[i])) for i in order]


def _profile_row(profile: Mapping[str, float], names: Sequence[str]) -> list[float]:
    return [float(profile.get(n, math.nan)) for n in names]


def fit_ranker(
    profiles: Mapping[TaskId, Mapping[str, float]],
    evaluations: Mapping[TaskId, Mapping[Command, float]],
    commands: Mapping[Command, Mapping[str, Any]],
    seed: int = 0,
    weights: Mapping[TaskId, float] | None = None,
) -> Ranker | None:
    """The learned ranking over every (task, command) pair with a profile and a value (a
    task counts its weight, 1 by default): each command's mean normalized value, and a
    model of how far a task's value departs from it; None with fewer than MIN_TASKS such
    tasks."""
    tasks = sorted(t for t in evaluations if t in profiles and informative(evaluations[t]))
    if len(tasks) < MIN_TASKS:
        return None
    names = tuple(sorted({n for t in tasks for n in profiles[t]}))
    task_weights = _weights(tasks, weights)
    kept = Commands.of(commands)
    used = {c: None for t in tasks for c in evaluations[t] if c in kept}
    settings = Settings.of(kept, used)
    all_scores = {t: normalized(evaluations[t]) for t in tasks}
    means = mean_values(all_scores, sorted(used), task_weights)
    xs, ys, ws, counts = [], [], [], []
    for t in tasks:
        scores = all_scores[t]
        task = _profile_row(profiles[t], names)
        ran = [c for c in scores if c in commands]
        counts.append(len(ran))
        for c in ran:
            xs.append(task + settings.row_of(kept.flat(c)))
            ys.append(scores[c] - means[c])
            # Each task weighs its weight, however many commands it ran.
            ws.append(task_weights[t] / len(ran))
    x = np.asarray(xs, dtype=float)
    y, w = np.asarray(ys), np.asarray(ws)
    categorical = [False] * len(names) + settings.categorical
    rows = np.repeat(np.arange(len(tasks)), counts)
    models = []
    for bag in range(BAGS):
        # A bootstrap sample of tasks (not of rows: a task's commands go in together),
        # seeded: the same data, the same model.
        drawn = np.random.default_rng([seed, bag]).integers(0, len(tasks), len(tasks))
        times = np.bincount(drawn, minlength=len(tasks))[rows]
        keep = times > 0
        bagged = x[keep]
        # A column none of the drawn tasks has (a feature only newer profiles hold, a
        # setting only some commands have) trips the boosting's binning: a constant.
        bagged[:, np.all(np.isnan(bagged), axis=0)] = 0.0
        model = HistGradientBoostingRegressor(
            max_iter=_ITERATIONS,
            learning_rate=0.1,
            max_leaf_nodes=15,
            min_samples_leaf=5,
            categorical_features=np.asarray(categorical) if any(categorical) else None,
            early_stopping=False,  # the same data, the same model
            random_state=seed,
        )
        model.fit(bagged, y[keep], sample_weight=(w * times)[keep])
        models.append(model)
    return Ranker(tuple(models), names, settings, len(tasks), means)


# --- the choice ----------------------------------------------------------------------


@dataclass(frozen=True)
class Choice:
    """Which ranking to trust, and the held-out figures it was chosen on."""

    kind: str  # "learned" or "static"
    # Mean normalized regret of the best of the first k commands on held-out tasks, over
    # k = 1..TOP.
    learned_regret: float
    static_regret: float
    tasks: int
    why: str


def led(learned: Sequence[Command], static: Sequence[Command]) -> list[Command]:
    """The learned ranking's first command, then the static portfolio's commands in their
    order, then the learned ranking's rest: the order a task tries commands in when the
    learned ranking was chosen."""
    out: list[Command] = []
    for c in [*learned[:1], *static, *learned[1:]]:
        if c not in out:
            out.append(c)
    return out


def _regret_curve(values: Mapping[Command, float], order: Sequence[Command]) -> float:
    """Mean normalized regret of the best of the first k of `order`, over k = 1..TOP."""
    return float(np.mean([regret_of(values, order[:k]) for k in range(1, TOP + 1)]))


def choose(
    profiles: Mapping[TaskId, Mapping[str, float]],
    evaluations: Mapping[TaskId, Mapping[Command, float]],
    commands: Mapping[Command, Mapping[str, Any]],
    seed: int = 0,
    weights: Mapping[TaskId, float] | None = None,
) -> Choice:
    """The learned ranking when, on past tasks it was not fitted on (grouped k-fold by
    task), its order (`led`) leaves a lower normalized regret after 1 to TOP trials
    than the static portfolio's, on average and on more of those tasks than not; the
    static portfolio otherwise."""
    tasks = sorted(t for t in evaluations if t in profiles and informative(evaluations[t]))
    if len(tasks) < MIN_TASKS + 1:
        return Choice("static", math.nan, math.nan, len(tasks),
                      f"too few past tasks to judge a learned ranking ({len(tasks)}, it needs"
                      f" {MIN_TASKS + 1})")  # fmt: skip
    learned, static = [], []
    commands = Commands.of(commands)
    folds = min(_FOLDS, len(tasks))
    groups = np.arange(len(tasks))
    for train, test in GroupKFold(n_splits=folds).split(groups, groups, groups):
        seen = {tasks[i]: evaluations[tasks[i]] for i in train}
        ranker = fit_ranker(profiles, seen, commands, seed, weights)
        portfolio = static_portfolio(seen, TOP, weights)
        for i in test:
            held = evaluations[tasks[i]]
            static.append(_regret_curve(held, portfolio))
            if ranker is None:
                learned.append(1.0)
                continue
            ran = [c for c in held if c in commands]
            ranked = [c for c, _ in ranker.rank(profiles[tasks[i]], commands, ran)]
            learned.append(_regret_curve(held, led(ranked, portfolio)))
    l_regret, s_regret = float(np.mean(learned)), float(np.mean(static))
    # Differences below float noise are ties.
    wins = sum(a < b - 1e-9 for a, b in zip(learned, static, strict=True))
    losses = sum(a > b + 1e-9 for a, b in zip(learned, static, strict=True))
    record = f"better on {wins} of {len(tasks)}, worse on {losses}"
    if l_regret < s_regret - 1e-9 and wins > losses:
        return Choice("learned", l_regret, s_regret, len(tasks),
                      f"on past tasks it was not fitted on, the learned ranking's first 1 to"
                      f" {TOP} left a mean regret of {l_regret:.3f}, the static portfolio's"
                      f" {s_regret:.3f} ({record})")  # fmt: skip
    return Choice("static", l_regret, s_regret, len(tasks),
                  f"the learned ranking did not beat the static portfolio on past tasks it"
                  f" was not fitted on (mean regret of the first 1 to {TOP}: {l_regret:.3f}"
                  f" against {s_regret:.3f}; {record})")  # fmt: skip


@dataclass(frozen=True)
class Transfer:
    """Both rankings and the choice between them, fitted once on a history: what a
    suggestion and a warm start rank a new task's commands by."""

    choice: Choice
    ranker: Ranker | None  # fitted only when chosen
    static: tuple[Command, ...]  # every command, in the static portfolio's order
    # Each command's mean normalized value over the past tasks (the static score).
    means: dict[Command, float]
    commands: Commands

    def ranking(self, profile: Mapping[str, float] | None) -> str:
        """Which ranking orders a task of this profile: "learned" when it was chosen
        and the task is profiled, else "static"."""
        learned = self.choice.kind == "learned" and self.ranker is not None and profile
        return "learned" if learned else "static"

    def order(self, profile: Mapping[str, float] | None) -> list[tuple[Command, float]]:
        """Every command, first to try first, with its score: under the learned ranking
        (see `ranking`) the order `led` makes of it and the static portfolio, each
        command with its predicted normalized value; else the static portfolio's order
        and mean value."""
        if self.ranking(profile) == "learned" and self.ranker is not None and profile:
            predicted = dict(self.ranker.rank(profile, self.commands))
            ranked = list(predicted)  # best predicted first
            return [(c, predicted[c]) for c in led(ranked, self.static) if c in predicted]
        return [(c, self.means.get(c, 0.0)) for c in self.static]


def fit(
    profiles: Mapping[TaskId, Mapping[str, float]],
    evaluations: Mapping[TaskId, Mapping[Command, float]],
    commands: Mapping[Command, Mapping[str, Any]],
    weights: Mapping[TaskId, float] | None = None,
    seed: int = 0,
) -> Transfer:
    """`choose`, then the chosen ranking fitted on the whole history."""
    commands = Commands.of(commands)
    chosen = choose(profiles, evaluations, commands, seed, weights)
    ranker = (
        fit_ranker(profiles, evaluations, commands, seed, weights)
        if chosen.kind == "learned"
        else None
    )
    scores = {t: normalized(v) for t, v in evaluations.items() if informative(v)}
    tried = sorted({c for v in evaluations.values() for c in v})
    means = mean_values(scores, tried, _weights(scores, weights))
    return Transfer(
        chosen,
        ranker,
        tuple(static_portfolio(evaluations, None, weights)),
        means,
        commands.only(tried),
    )
