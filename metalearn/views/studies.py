"""A study as people and scripts read it: its JSON, its rows, and the live table that
follows it until it is done. Shared by the CLI and the dashboard; it takes a client
but never makes one, so importing it does not import `metalearn.client`."""

from __future__ import annotations

import json
import math
import shutil
import sys
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from metalearn import documents
from metalearn.structs import plain_struct
from metalearn.v1 import study_service_pb2 as pb

if TYPE_CHECKING:
    from metalearn.client import Client

PARAMS_WIDTH = 60


def _enum_text(enum: Any, value: int, prefix: str) -> str:
    """STUDY_STATE_DONE -> "done"; a value newer than this client as its number."""
    try:
        name: str = enum.Name(value)
    except ValueError:
        return str(value)
    return name.removeprefix(prefix).lower().replace("_", " ")


def trial_state(value: int) -> str:
    return _enum_text(pb.TrialState, value, "TRIAL_STATE_")


def study_state(value: int) -> str:
    return _enum_text(pb.StudyState, value, "STUDY_STATE_")


def objective_text(value: int) -> str:
    text = _enum_text(pb.Objective, value, "OBJECTIVE_")
    return "best val accuracy" if text == "unspecified" else text


def trial_document(trial: pb.Trial) -> dict[str, Any]:
    """A trial as JSON for scripts: params with whole numbers as ints, no value: null."""
    doc = documents.plain(trial)
    doc["params"] = documents.integral(doc.get("params", {}))
    doc["value"] = trial.value if math.isfinite(trial.value) else None
    return doc


def study_document(study: pb.Study, trials: bool = True) -> dict[str, Any]:
    """A study as JSON for scripts (`documents.plain`'s conventions); the best trial is
    null before one completes."""
    doc: dict[str, Any] = documents.integral(documents.plain(study))
    if trials:
        doc["trials"] = [trial_document(t) for t in study.trials]
    else:
        doc.pop("trials", None)
    doc["best_trial"] = trial_document(study.best_trial) if study.HasField("best_trial") else None
    for field in ("warm_start", "warm_start_report"):  # cold, or not reported yet: null
        doc.setdefault(field, None)
    return doc


def fingerprint_prefix(fingerprint: str) -> str:
    """A task's fingerprint as tables show it (and `--fingerprint` takes it)."""
    return fingerprint[:12] or "-"


def label_list(labels: Sequence[str], width: int = 30) -> str:
    """A task's labels in at most `width` characters: "cat, dog, +8 more"."""
    for k in range(len(labels), 0, -1):
        more = f", +{len(labels) - k} more" if k < len(labels) else ""
        text = ", ".join(labels[:k]) + more
        if len(text) <= width:
            return text
    more = f", +{len(labels) - 1} more" if len(labels) > 1 else ""
    return (labels[0][: max(width - len(more) - 1, 8)] + "…" + more) if labels else "-"


def is_warm(study: pb.Study) -> bool:
    """Whether a study starts warm (its tables then say which trials are zero-shot)."""
    return study.HasField("warm_start") or any(t.seeded_by_attempt_id for t in study.trials)


def origin(trial: pb.Trial) -> str:
    """ "warm" for a warm start's zero-shot trial (it repeats a past attempt's command),
    "-" for one the sampler asked."""
    return "warm" if trial.seeded_by_attempt_id else "-"


def warm_start_text(warm: pb.WarmStart) -> str:
    """Where a study starts from, as asked: "the 5 most similar tasks"."""
    parts = []
    if warm.similar_tasks:
        k = warm.similar_tasks
        parts.append("the most similar task" if k == 1 else f"the {k} most similar tasks")
    if warm.studies:
        kind = "study" if len(warm.studies) == 1 else "studies"
        parts.append(f"the trials of {kind} {', '.join(warm.studies)}")
    text = " and ".join(parts) or "past tasks"
    if warm.zero_shot_trials < 0:
        text += ", no zero-shot trials"
    elif warm.zero_shot_trials:
        text += f", at most {warm.zero_shot_trials} zero-shot trials"
    return text


def warm_start_line(study: pb.Study) -> str:
    """The warm start and what it found, on one line ("" for a cold study)."""
    if not study.HasField("warm_start"):
        return ""
    line = f"warm start from {warm_start_text(study.warm_start)}: "
    if not study.HasField("warm_start_report"):
        return line + "not started yet"
    report = study.warm_start_report
    n = len(report.sources)
    ranked = f" (ranked by the {report.ranking} ranking)" if report.ranking else ""
    return line + (
        f"{report.state or 'pending'}; {n} past {'task' if n == 1 else 'tasks'},"
        f" {report.priors} prior trials, {report.zero_shot_trials} zero-shot trials{ranked}"
    )


def warm_start_lines(study: pb.Study) -> list[str]:
    """The warm start line, then a row per past task drawn from (nearest first)."""
    line = warm_start_line(study)
    if not line:
        return []
    sources = study.warm_start_report.sources
    why = study.warm_start_report.ranking_reason
    head = [line, f"  zero-shot ranking: {why}"] if why else [line]
    if not sources:
        return head
    columns = f"  {'TASK':<12}  {'LABELS':<30}  {'DISTANCE':>8}  {'WEIGHT':>6}  {'TRIALS':>6}"
    lines = [*head, columns]
    for source in sources:
        lines.append(
            f"  {fingerprint_prefix(source.task_fingerprint):<12}"
            f"  {label_list(source.label_names):<30}  {source.distance:>8.4f}"
            f"  {source.weight:>6.3f}  {source.trials:>6}"
        )
    return lines


def short_labels(paths: list[str]) -> dict[str, str]:
    """Each parameter's short label: its last key (the one before for `name`), or the
    whole path where that would be ambiguous."""
    found = {}
    for path in paths:
        parts = path.split(".")
        label = parts[-2] if parts[-1] == "name" and len(parts) > 1 else parts[-1]
        found[path] = label
    counts = {label: list(found.values()).count(label) for label in found.values()}
    return {path: label if counts[label] == 1 else path for path, label in found.items()}


def short_value(value: Any) -> str:
    """A JSON value in a few characters: 0.003, SGD(momentum=0.9), [8,8]."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:.3g}"
    if isinstance(value, dict) and isinstance(value.get("name"), str):
        rest = ",".join(f"{k}={short_value(v)}" for k, v in value.items() if k != "name")
        return f"{value['name']}({rest})" if rest else value["name"]
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def short_params(trial: pb.Trial, labels: dict[str, str], width: int = PARAMS_WIDTH) -> str:
    """A trial's params on one line in the search space's order, cut to `width`."""
    values = plain_struct(trial.params)
    order = [path for path in labels if path in values] + sorted(set(values) - set(labels))
    text = " ".join(f"{labels.get(path, path)}={short_value(values[path])}" for path in order)
    return text if len(text) <= width else text[: width - 1] + "…"


def value_text(value: float) -> str:
    return f"{value:.4f}" if math.isfinite(value) else "-"


def optuna_maximizes(study: pb.Study) -> bool:
    """An Optuna client's study: whether its (first) objective is maximized."""
    return list(study.optuna.directions[:1]) == [pb.STUDY_DIRECTION_MAXIMIZE]


def study_objective(study: pb.Study) -> str:
    """What a study optimizes, as people read it."""
    if study.HasField("optuna"):
        ways = [
            _enum_text(pb.StudyDirection, d, "STUDY_DIRECTION_") for d in study.optuna.directions
        ]
        if len(ways) == 1:
            return f"value ({ways[0]}d)"
        return "values (" + ", ".join(f"{w}d" for w in ways) + "; the first shown)"
    return objective_text(study.objective)


def best_line(study: pb.Study) -> str:
    if not study.HasField("best_trial"):
        return "no trial has completed yet"
    best = study.best_trial
    return (
        f"best: trial {best.number} ({best.attempt_name}),"
        f" {study_objective(study)} {best.value:.4f}"
    )


def summary(study: pb.Study) -> str:
    """A study's headline: state, trials by state, sampler, parallelism; and why it
    stopped, on a line of its own."""
    states = Counter(trial_state(trial.state) for trial in study.trials)
    counts = ", ".join(f"{n} {state}" for state, n in states.items())
    if study.HasField("optuna"):  # its clients sample, prune and decide when it ends
        return (
            f"{study.name} (id {study.id})  held for Optuna's clients"
            f"  trials {study.trials_made}{f' ({counts})' if counts else ''}"
            f"  {study_objective(study)}"
        )
    parallel = study.max_parallel or "the trainers' slots"
    line = (
        f"{study.name} (id {study.id})  {study_state(study.state)}"
        f"  trials {study.trials_made}/{study.n_trials}{f' ({counts})' if counts else ''}"
        f"  {study.sampler.name or 'tpe'} seed {study.seed}  at most {parallel} at once"
    )
    return line + (f"\n  {study.stop_reason}" if study.stop_reason else "")


def follow_study(client: Client, name: str, *, as_json: bool = False) -> int:
    """Prints a study's trials as they change until it is done: a table redrawn in place
    on a terminal, else each change once; with `as_json` one JSON object per change
    (NDJSON). Exit status 0 once done with a best trial, 1 without; 130 when interrupted
    (the study goes on)."""
    live = LiveTable(name, as_json, sys.stdout.isatty() and not as_json)
    study = pb.Study()
    try:
        for event in client.watch_study(name):
            kind = event.WhichOneof("event")
            if kind in ("snapshot", "study_finished"):
                study = getattr(event, kind)
            else:
                apply(study, event)
            if kind != "trial_epoch" or live.tty or as_json:  # a pipe gets ends, not epochs
                live.show(study)
    except KeyboardInterrupt:
        live.interrupted()
        return 130
    live.end(study)
    return 0 if study.HasField("best_trial") else 1


def apply(study: pb.Study, event: pb.WatchStudyResponse) -> None:
    """One WatchStudy event applied to the study as last known."""
    kind = event.WhichOneof("event")
    if kind == "new_best":
        study.best_trial.CopyFrom(event.new_best)
    elif kind == "trial_epoch":
        for trial in study.trials:
            if trial.number == event.trial_epoch.trial:
                trial.epochs = max(trial.epochs, event.trial_epoch.epoch.epoch)
    elif kind in ("trial_started", "trial_pruned", "trial_finished"):
        changed: pb.Trial = getattr(event, kind)
        for trial in study.trials:
            if trial.number == changed.number:
                trial.CopyFrom(changed)
                break
        else:
            study.trials.append(changed)
        study.trials_made = max(study.trials_made, changed.number + 1)
        if changed.state == pb.TRIAL_STATE_COMPLETE and _better(study, changed):
            # new_best follows; known now, the finished row shows it at once.
            study.best_trial.CopyFrom(changed)


def _better(study: pb.Study, trial: pb.Trial) -> bool:
    if not study.HasField("best_trial"):
        return True
    minimize = study.objective in (pb.OBJECTIVE_BEST_VAL_LOSS, pb.OBJECTIVE_LAST_VAL_LOSS)
    best = study.best_trial.value
    return trial.value < best if minimize else trial.value > best


class LiveTable:
    """What `follow_study` prints: trial, params, epochs, value, state, best so far (the
    study's best when that row last changed)."""

    def __init__(self, name: str, as_json: bool, tty: bool) -> None:
        self.name = name
        self.as_json = as_json
        self.tty = tty
        self.rows: dict[int, tuple[Any, str]] = {}
        self.state: tuple[int, str] | None = None
        self.labels: dict[str, str] = {}
        self.drawn = 0  # lines of the last table drawn in place
        self.footer = ""
        self.warm = False  # a FROM column: "warm" for a warm start's zero-shot trials
        self.warm_line = ""  # the warm start and what it found, as last shown
        self.seen = ""  # the study's state as last shown, for an interruption

    def show(self, study: pb.Study) -> None:
        first = self.state is None
        if first:
            self.labels = short_labels([p.path for p in study.search_space])
            self.warm = is_warm(study)
            if self.as_json:
                self._json({"event": "snapshot", **study_document(study)})
            elif not self.tty:
                for line in warm_start_lines(study):
                    print(line, flush=True)
                print(self._header(), flush=True)
            self.warm_line = warm_start_line(study)
        best = study.best_trial if study.HasField("best_trial") else None
        for trial in study.trials:
            key = (trial.state, trial.epochs, value_text(trial.value), trial.error)
            if trial.number in self.rows and self.rows[trial.number][0] == key:
                continue
            self.rows[trial.number] = (key, self._row(trial, best))
            if self.as_json and not first:
                self._json({"event": "trial", "study": self.name, **trial_document(trial),
                            "best_trial": best.number if best else None,
                            "best_value": best.value if best else None})  # fmt: skip
            elif not self.as_json and not self.tty:
                print(self.rows[trial.number][1], flush=True)
        state = (study.state, study.stop_reason)
        warm_line = warm_start_line(study)
        if state != self.state or warm_line != self.warm_line:
            if self.as_json and not first:
                self._json({"event": "study", **study_document(study, trials=False)})
            elif not self.as_json and not self.tty and warm_line != self.warm_line:
                print(warm_line, flush=True)
            if not self.as_json and not self.tty and state != self.state:
                print(self._state_line(study), flush=True)
        self.state = state
        self.warm_line = warm_line
        self.footer = f"{self._state_line(study)}; {best_line(study)}"
        self.seen = f"{study_state(study.state)}, {study.trials_made}/{study.n_trials} trials made"
        if self.tty:
            self._redraw()

    def _header(self) -> str:
        warm = f"{'FROM':<4}  " if self.warm else ""
        return (f"{'TRIAL':>5}  {warm}{'PARAMS':<{PARAMS_WIDTH}} {'EPOCHS':>6} {'VALUE':>7}"
                f"  {'STATE':<9} {'BEST':>7}")  # fmt: skip

    def _row(self, trial: pb.Trial, best: pb.Trial | None) -> str:
        best_value = value_text(best.value) if best else "-"
        warm = f"{origin(trial):<4}  " if self.warm else ""
        return (
            f"{trial.number:>5}  {warm}{short_params(trial, self.labels):<{PARAMS_WIDTH}}"
            f" {trial.epochs:>6} {value_text(trial.value):>7}  {trial_state(trial.state):<9}"
            f" {best_value:>7}"
        )

    def _state_line(self, study: pb.Study) -> str:
        reason = f" ({study.stop_reason})" if study.stop_reason else ""
        return (
            f"study {self.name} {study_state(study.state)}{reason}:"
            f" {study.trials_made}/{study.n_trials} trials made"
        )

    def _redraw(self) -> None:
        """The whole table again over the last one (its newest rows where it would not fit)."""
        top = [self.warm_line] if self.warm_line else []
        room = max(shutil.get_terminal_size((100, 24)).lines - 3 - len(top), 1)
        rows = [line for _, (_, line) in sorted(self.rows.items())][-room:]
        lines = [*top, self._header(), *rows, self.footer]
        up = f"\x1b[{self.drawn}F\x1b[J" if self.drawn else ""
        sys.stdout.write(up + "\n".join(lines) + "\n")
        sys.stdout.flush()
        self.drawn = len(lines)

    def _json(self, value: dict[str, Any]) -> None:
        print(json.dumps(value), flush=True)

    def end(self, study: pb.Study) -> None:
        if not self.as_json and not self.tty:  # a terminal's table ends with it already
            print(best_line(study), flush=True)

    def interrupted(self) -> None:
        state = f" ({self.seen})" if self.seen else ""
        print(
            f"metalearn: stopped following; study {self.name} goes on{state}."
            f" Follow it again: metalearn study watch {self.name};"
            f" stop it: metalearn study stop {self.name} [--cancel-running]",
            file=sys.stderr,
            flush=True,
        )
