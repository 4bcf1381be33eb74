"""`metalearn tasks ...` and `metalearn suggest`: what metalearn learns from its history
(TaskService).

A task is the set of labels a command trains on, with their image ops and images. It is
profiled once by a trainer (meta-features: sizes, balance, pixel statistics,
landmarkers, a probe network's feature statistics); tasks are compared by a distance
over profiles whose weights are fitted on the store, and the nearest tasks' best
commands become suggestions and warm starts.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from metalearn import documents
from metalearn.cli import runs
from metalearn.cli.runs import CliError, client_for, print_json
from metalearn.client import (
    Client,
    MetalearnError,
    NotFoundError,
    UnavailableError,
)
from metalearn.documents import integral
from metalearn.structs import plain_struct
from metalearn.v1 import attempt_pb2, task_pb2
from metalearn.v1 import task_service_pb2 as pb
from metalearn.views.attempts import status_text
from metalearn.views.studies import fingerprint_prefix, label_list, short_value

# The meta-features in the order TaskProfile documents them; others (probe_*, newer
# ones) follow by name.
FEATURE_ORDER = (
    "log_images", "log_classes", "imbalance", "log_pixels", "channels", "pixel_mean",
    "pixel_std", "pixel_skew", "sparsity", "landmark_centroid", "landmark_1nn",
    "landmark_linear",
)  # fmt: skip
LABELS_WIDTH = 30
NOT_YET = (
    "not profiled yet: no trainer has profiled it in time (is one running?); run this again"
    " to wait longer"
)


# Text for people.
def task_state(value: int) -> str:
    """TASK_STATE_READY -> "ready"; a value newer than this client as its number."""
    try:
        name: str = task_pb2.TaskState.Name(value)  # type: ignore[arg-type]
    except ValueError:
        return str(value)
    return name.removeprefix("TASK_STATE_").lower()


def number(value: float, form: str = ".4f") -> str:
    """A number for a table; "-" for NaN or infinity (no value)."""
    return format(value, form) if math.isfinite(value) else "-"


def input_shape(task: task_pb2.Task) -> str:
    """Channels x height x width of one input after the image ops: "1x8x8"."""
    return "x".join(str(n) for n in task.profile.input_shape) or "-"


def attempt_val_accuracy(similar: pb.SimilarTask, i: int) -> float | None:
    """The best validation accuracy of a similar task's i-th best attempt: over its
    epochs, or for the first (the task's best) the task's; None when neither was sent."""
    attempt = similar.best_attempts[i]
    if attempt.epochs:
        return max(e.val_accuracy for e in attempt.epochs)
    if i == 0 and similar.task.attempts:
        return _finite(similar.task.best_val_accuracy)
    return None


def image_ops_text(ops: Sequence[attempt_pb2.ImageOp]) -> str:
    """Image ops on one line: "resize(size=[28,28]) convert(mode=L)"."""
    parts = []
    for op in ops:
        kind = op.WhichOneof("op") or "?"
        args = documents.integral(documents.plain(getattr(op, kind))) if kind != "?" else {}
        given = {k: v for k, v in args.items() if v not in ("", [])}  # unset: the default
        parts.append(short_value({"name": kind, **given}))
    return " ".join(parts) or "none"


def distance_line(distance: pb.TaskDistance) -> str:
    """Which distance ranked the tasks, and what it was fitted on."""
    fitted = f"{distance.tasks} tasks and {distance.pairs} pairs"
    if distance.kind == "learned":
        return (
            f"distance: learned, fitted on {fitted} (spearman with transfer regret"
            f" {number(distance.spearman, '.3f')}; standardized"
            f" {number(distance.standardized_spearman, '.3f')})"
        )
    return (
        f"distance: {distance.kind or 'standardized'} (every meta-feature z-scored and"
        f" weighted 1: {fitted} are too little history to learn weights from)"
    )


def task_line(task: task_pb2.Task) -> str:
    """A task on one line: labels, fingerprint, state and profile's sizes."""
    line = f"{label_list(task.label_names, 60)} ({fingerprint_prefix(task.fingerprint)},"
    line += f" {task_state(task.state)}"
    if task.HasField("profile"):
        line += (
            f": {task.profile.images} images, {task.profile.classes} classes,"
            f" input {input_shape(task)}"
        )
    return line + ")"


def command_summary(command: attempt_pb2.TrainCommand) -> str:
    """What a training command does, in a line: model, optimizer, batch size, epochs."""
    layers = command.model.name or f"{len(command.model.layers)} layers"
    parts = [f"model {layers}"]
    if command.optimizer.fields:
        parts.append(f"optimizer {short_value(integral(plain_struct(command.optimizer)))}")
    if command.scheduler.fields:
        parts.append(f"scheduler {short_value(integral(plain_struct(command.scheduler)))}")
    parts.append(f"batch_size {command.batch_size}")
    parts.append(f"n_epoch {command.n_epoch}")
    if command.image_ops:
        parts.append(f"image ops {image_ops_text(command.image_ops)}")
    return "  ".join(parts)


# JSON for scripts: proto field names, every field present (null where there is none),
# numbers as numbers (NaN and infinity as null).
def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def task_document(task: task_pb2.Task) -> dict[str, Any]:
    """A task as JSON: its profile null until it is profiled, its best validation
    accuracy null without trained attempts."""
    doc = documents.plain(task)
    doc["image_ops"] = [documents.integral(op) for op in doc.get("image_ops", [])]
    if task.HasField("profile"):
        features = {k: _finite(v) for k, v in task.profile.features.items()}
        doc["profile"] = {**documents.plain(task.profile), "features": features}
    else:
        doc["profile"] = None
    for field in ("create_time", "profile_time"):
        doc.setdefault(field, None)
    doc["best_val_accuracy"] = _finite(task.best_val_accuracy) if task.attempts else None
    return doc


def distance_document(distance: pb.TaskDistance) -> dict[str, Any]:
    doc = documents.plain(distance)
    doc["weights"] = {k: _finite(v) for k, v in distance.weights.items()}
    doc["spearman"] = _finite(distance.spearman)
    doc["standardized_spearman"] = _finite(distance.standardized_spearman)
    doc.setdefault("fit_time", None)
    return doc


def similar_document(reply: pb.FindSimilarTasksResponse) -> dict[str, Any]:
    """FindSimilarTasks as JSON; each attempt is its document (as `attempts get --json`)
    with its `best_val_accuracy` added (see `attempt_val_accuracy`)."""
    return {
        "target": task_document(reply.target),
        "tasks": [
            {
                "task": task_document(similar.task),
                "distance": _finite(similar.distance),
                "best_attempts": [
                    {
                        **documents.attempt_to_document(attempt),
                        "best_val_accuracy": attempt_val_accuracy(similar, i),
                    }
                    for i, attempt in enumerate(similar.best_attempts)
                ],
            }
            for similar in reply.tasks
        ],
        "distance": distance_document(reply.distance) if reply.HasField("distance") else None,
    }


def command_document(command: attempt_pb2.TrainCommand) -> dict[str, Any]:
    """A training command as `metalearn train --file` takes it."""
    return documents.command_as_written(command)


def evidence_from(provenance: int, owner: str) -> str:
    """Where a run's numbers come from, in a word or three: "trained" (here, measured by
    a trainer) or "imported by NAME" (a claim, counted because NAME is trusted)."""
    if provenance == attempt_pb2.PROVENANCE_IMPORTED:
        return f"imported by {owner}" if owner else "imported"
    return "trained" if provenance == attempt_pb2.PROVENANCE_TRAINED else "-"


def suggestion_document(reply: pb.SuggestCommandResponse) -> dict[str, Any]:
    return {
        "command": command_document(reply.command),
        "reason": reply.reason,
        "fallback": reply.fallback,
        "ranking": pb.SuggestionRanking.Name(reply.ranking)
        .removeprefix("SUGGESTION_RANKING_")
        .lower(),
        "score": _finite(reply.score),
        "sources": [
            {
                "task": task_document(s.task),
                "distance": _finite(s.distance),
                "weight": _finite(s.weight),
                "attempt_id": s.attempt_id,
                "attempt_name": s.attempt_name,
                "val_accuracy": _finite(s.val_accuracy),
                "quantile": _finite(s.quantile),
                "provenance": attempt_pb2.Provenance.Name(s.provenance).removeprefix("PROVENANCE_"),
                "owner": s.owner,
            }
            for s in reply.sources
        ],
        "trusted_owners": list(reply.trusted_owners),
        "task": task_document(reply.task) if reply.HasField("task") else None,
        "distance": distance_document(reply.distance) if reply.HasField("distance") else None,
    }


# Tables.
def _source(task: task_pb2.Task) -> str:
    """Where its profile comes from: images held here, or what a reporter declared or
    sent (with the dataset and the owner of such a task)."""
    if task.source in (task_pb2.TASK_SOURCE_UNSPECIFIED, task_pb2.TASK_SOURCE_IMAGES):
        return "images"
    kind = "sample" if task.source == task_pb2.TASK_SOURCE_SAMPLE else "declared"
    named = f" {task.dataset}" if task.dataset else ""
    return f"{kind}{named} ({task.owner})"


def tasks_table(tasks: Sequence[task_pb2.Task]) -> list[str]:
    sources = [_source(t) for t in tasks]
    width = max([len("FROM"), *(len(x) for x in sources)])
    lines = [
        f"{'FINGERPRINT':<12}  {'LABELS':<{LABELS_WIDTH}}  {'STATE':<7}  {'IMAGES':>7}"
        f"  {'CLASSES':>7}  {'INPUT':<11}  {'ATTEMPTS':>8}  {'BEST VAL':>8}  {'FROM':<{width}}"
    ]
    for t, source in zip(tasks, sources, strict=True):
        profiled = t.HasField("profile")
        images = str(t.profile.images) if profiled else "-"
        classes = str(t.profile.classes) if profiled else str(len(t.label_names))
        best = number(t.best_val_accuracy) if t.attempts else "-"
        lines.append(
            f"{fingerprint_prefix(t.fingerprint):<12}  {label_list(t.label_names):<{LABELS_WIDTH}}"
            f"  {task_state(t.state):<7}  {images:>7}  {classes:>7}  {input_shape(t):<11}"
            f"  {t.attempts:>8}  {best:>8}  {source:<{width}}"
        )
    for t in tasks:
        if t.error:
            lines.append(f"  task {fingerprint_prefix(t.fingerprint)}: {t.error.splitlines()[0]}")
    return lines


def features_table(profile: task_pb2.TaskProfile) -> list[str]:
    def order(name: str) -> tuple[int, str]:
        known = name in FEATURE_ORDER
        return (FEATURE_ORDER.index(name) if known else len(FEATURE_ORDER), name)

    names = sorted(profile.features, key=order)
    width = max([len("FEATURE"), *(len(n) for n in names)])
    lines = [f"{'FEATURE':<{width}}  {'VALUE':>10}"]
    lines += [f"{n:<{width}}  {number(profile.features[n]):>10}" for n in names]
    return lines


def similar_table(reply: pb.FindSimilarTasksResponse) -> list[str]:
    """A row per similar task with its best attempt, then a row per other attempt."""
    names = [a.name for s in reply.tasks for a in s.best_attempts]
    width = max([len("ATTEMPT"), *(len(n) for n in names)])
    lines = [
        f"{'RANK':>4}  {'TASK':<12}  {'LABELS':<{LABELS_WIDTH}}  {'DISTANCE':>8}"
        f"  {'ATTEMPTS':>8}  {'ATTEMPT':<{width}}  {'VAL ACC':>7}"
    ]
    blank = f"{'':>4}  {'':<12}  {'':<{LABELS_WIDTH}}  {'':>8}  {'':>8}"
    for rank, similar in enumerate(reply.tasks, 1):
        task = similar.task
        head = (
            f"{rank:>4}  {fingerprint_prefix(task.fingerprint):<12}"
            f"  {label_list(task.label_names):<{LABELS_WIDTH}}  {number(similar.distance):>8}"
            f"  {task.attempts:>8}"
        )
        if not similar.best_attempts:
            lines.append(f"{head}  {'-':<{width}}  {'-':>7}")
        for i, attempt in enumerate(similar.best_attempts):
            value = attempt_val_accuracy(similar, i)
            accuracy = "-" if value is None else f"{value:.4f}"
            lines.append(f"{head if i == 0 else blank}  {attempt.name:<{width}}  {accuracy:>7}")
    return lines


def sources_table(sources: Sequence[pb.SuggestionSource]) -> list[str]:
    width = max([len("ATTEMPT"), *(len(s.attempt_name) for s in sources)])
    lines = [
        f"{'TASK':<12}  {'LABELS':<{LABELS_WIDTH}}  {'DISTANCE':>8}  {'WEIGHT':>6}"
        f"  {'ATTEMPT':<{width}}  {'VAL ACC':>7}  {'QUANTILE':>8}  FROM"
    ]
    for s in sources:
        lines.append(
            f"{fingerprint_prefix(s.task.fingerprint):<12}"
            f"  {label_list(s.task.label_names):<{LABELS_WIDTH}}  {number(s.distance):>8}"
            f"  {number(s.weight, '.3f'):>6}  {s.attempt_name or '-':<{width}}"
            f"  {number(s.val_accuracy):>7}  {number(s.quantile, '.3f'):>8}"
            f"  {evidence_from(s.provenance, s.owner)}"
        )
    return lines


def suggestion_lines(reply: pb.SuggestCommandResponse) -> list[str]:
    """The suggestion for people: the command in a line (--command-only or --json print
    it whole), why, the distance and the past attempts it came from; a fallback says so
    first."""
    labels = label_list(reply.command.label_names or reply.task.label_names, 60)
    if reply.fallback:
        head = (
            f"no history to draw from: metalearn's default command for {labels} (a fallback,"
            " not learned from past tasks)"
        )
    else:
        task = reply.task.fingerprint if reply.HasField("task") else ""
        where = f" (task {fingerprint_prefix(task)})" if task else ""
        how = {
            pb.SUGGESTION_RANKING_LEARNED: "ranked for this task by a model of past tasks",
            pb.SUGGESTION_RANKING_STATIC: "the best across past tasks (static portfolio)",
        }.get(reply.ranking, "from past tasks")
        head = f"suggested command for {labels}{where}: {how}"
    lines = [head, f"  {command_summary(reply.command)}"]
    if reply.reason:
        lines.append(f"why: {reply.reason}")
    if reply.HasField("distance") and not reply.fallback:
        lines.append(distance_line(reply.distance))
    if reply.sources:
        lines += sources_table(reply.sources)
    return lines


def distance_lines(distance: pb.TaskDistance, top: int) -> list[str]:
    """A fit's kind, size, quality and its largest weights."""
    when = ""
    if distance.HasField("fit_time"):
        when = f" at {distance.fit_time.ToDatetime().strftime('%Y-%m-%d %H:%M:%S')}"
    lines = [distance_line(distance) + when]
    weights = sorted(distance.weights.items(), key=lambda kv: (-abs(kv[1]), kv[0]))
    shown = weights if top <= 0 else weights[:top]
    if shown:
        more = f" (the {len(shown)} largest of {len(weights)})" if len(shown) < len(weights) else ""
        lines.append(f"weights on the meta-features' z-scores{more}:")
        width = max([len("FEATURE"), *(len(k) for k, _ in shown)])
        lines.append(f"  {'FEATURE':<{width}}  {'WEIGHT':>8}")
        lines += [f"  {k:<{width}}  {number(v):>8}" for k, v in shown]
    return lines


# The target of a command: --labels or --command, with --image-ops.
def parse_image_ops(value: str) -> list[attempt_pb2.ImageOp]:
    """`--image-ops`: a JSON list of image ops as a TrainCommand's `image_ops`, or a file
    holding one."""
    text = value
    if not value.lstrip().startswith(("[", "{")):
        try:
            text = Path(value).read_text(encoding="utf-8")
        except OSError as err:
            raise CliError(
                f"--image-ops: {value!r} is neither a JSON list nor a file ({err.strerror})"
            ) from err
    try:
        loaded = json.loads(text)
    except ValueError as err:
        raise CliError(f"--image-ops is not JSON: {err}") from err
    if not isinstance(loaded, list):
        raise CliError('--image-ops must be a JSON list, e.g. [{"resize": {"size": [32, 32]}}]')
    ops = []
    for i, op in enumerate(loaded):
        try:
            ops.append(documents.parse(op, attempt_pb2.ImageOp(), f"image_ops[{i}]"))
        except documents.DocumentError as err:
            raise CliError(f"--image-ops: {err}") from err
    return ops


def task_target(args: argparse.Namespace) -> tuple[list[str], list[attempt_pb2.ImageOp]]:
    """The labels and image ops that --labels or --command name (--image-ops replaces
    the command's)."""
    if args.command_file:
        _, command = runs.load_command(args.command_file, None)
        if not command.label_names:
            raise CliError(f"{args.command_file} has no label_names")
        labels, ops = list(command.label_names), list(command.image_ops)
    else:
        labels, ops = list(args.labels or []), []
    if args.image_ops is not None:
        ops = parse_image_ops(args.image_ops)
    return labels, ops


@contextlib.contextmanager
def task_service(args: argparse.Namespace, *, profiles: bool = False) -> Iterator[Client]:
    """A client for TaskService calls: an older gateway without it, and (for calls that
    may wait for a profile) a profile not ready in time, are said as such."""
    with client_for(args) as client:
        try:
            yield client
        except MetalearnError as err:
            if err.code == "UNIMPLEMENTED":
                raise CliError(
                    f"the gateway at {args.gateway} has no TaskService (it is older than"
                    " this client): upgrade it"
                ) from err
            if profiles and isinstance(err, UnavailableError) and err.code == "DEADLINE_EXCEEDED":
                raise CliError(NOT_YET) from err
            raise


def resolve_fingerprint(client: Client, prefix: str) -> str:
    """A whole fingerprint from a prefix of it (as `tasks list` shows: 12 characters)."""
    prefix = prefix.strip().lower()
    if len(prefix) >= 64:
        return prefix
    found = [t.fingerprint for t in client.tasks() if t.fingerprint.startswith(prefix)]
    if not found:
        raise CliError(f"no task's fingerprint starts with {prefix!r} (see metalearn tasks list)")
    if len(set(found)) > 1:
        raise CliError(f"{len(found)} tasks' fingerprints start with {prefix!r}: give more of it")
    return found[0]


# Commands.
def cmd_list(args: argparse.Namespace) -> int:
    with task_service(args) as client:
        tasks = list(client.tasks(all_versions=args.all_versions))
    if args.json:
        print_json([task_document(t) for t in tasks])
        return 0
    for line in tasks_table(tasks):
        print(line)
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    labels, ops = task_target(args)
    with task_service(args, profiles=True) as client:
        task = client.profile_task(labels, ops, wait=not args.no_wait)
    if args.json:
        print_json(task_document(task))
    else:
        print(f"task {task_line(task)}")
        print(f"  fingerprint  {task.fingerprint}")
        print(f"  labels       {', '.join(task.label_names)}")
        print(f"  image ops    {image_ops_text(task.image_ops)}")
        if task.HasField("profile"):
            print(f"  profiled in  {task.profile.seconds:.1f} s")
            for line in features_table(task.profile):
                print(line)
        elif task.state == task_pb2.TASK_STATE_PENDING and args.no_wait:
            print(
                "queued for a trainer to profile; run this again without --no-wait to wait for it"
            )
        elif task.state == task_pb2.TASK_STATE_PENDING:
            print(NOT_YET)
        if task.error:
            print(f"  error: {task.error}")
    return 1 if task.state == task_pb2.TASK_STATE_FAILED else 0


def with_epochs(client: Client, reply: pb.FindSimilarTasksResponse) -> None:
    """The best attempts that came without their epochs, fetched whole: their validation
    accuracy is in their epochs (one deleted meanwhile stays as it came)."""
    for similar in reply.tasks:
        for attempt in similar.best_attempts:
            if not attempt.epochs and attempt.name:
                with contextlib.suppress(NotFoundError):
                    attempt.CopyFrom(client.get(attempt.name, full=True))


def cmd_similar(args: argparse.Namespace) -> int:
    with task_service(args, profiles=True) as client:
        if args.fingerprint:
            fingerprint = resolve_fingerprint(client, args.fingerprint)
            reply = client.similar_tasks(
                fingerprint=fingerprint, limit=args.limit, attempts_per_task=args.attempts
            )
        else:
            labels, ops = task_target(args)
            reply = client.similar_tasks(
                labels, limit=args.limit, attempts_per_task=args.attempts, image_ops=ops
            )
        with_epochs(client, reply)
    if args.json:
        print_json(similar_document(reply))
        return 0
    print(f"target: {task_line(reply.target)}")
    if reply.HasField("distance"):
        print(distance_line(reply.distance))
    if not reply.tasks:
        print("no past task with trained attempts to compare it with")
        return 0
    for line in similar_table(reply):
        print(line)
    return 0


def cmd_fit(args: argparse.Namespace) -> int:
    with task_service(args) as client:
        distance = client.fit_task_distance()
    if args.json:
        print_json(distance_document(distance))
        return 0
    for line in distance_lines(distance, args.top):
        print(line)
    return 0


def cmd_suggest(args: argparse.Namespace) -> int:
    if args.follow and not args.train:
        raise CliError("--follow needs --train NAME")
    labels, ops = task_target(args)
    with task_service(args, profiles=True) as client:
        reply = client.suggest_command(labels, args.neighbours, image_ops=ops)
        doc = suggestion_document(reply)
        if args.command_only:
            print_json(doc["command"])
            return 0
        if not args.train:
            if args.json:
                print_json(doc)
            else:
                for line in suggestion_lines(reply):
                    print(line)
                print(
                    "train it: add --train NAME [--follow]; or save it for `metalearn train"
                    " --file` with --command-only > command.json"
                )
            return 0
        return _train(client, args, reply, doc)


def _train(
    client: Client, args: argparse.Namespace, reply: pb.SuggestCommandResponse, doc: Any
) -> int:
    """Queues the suggested command as the attempt --train names, as `metalearn train`
    does (a name with epochs or results needs --overwrite), then follows it if asked."""
    command = attempt_pb2.TrainCommand()
    command.CopyFrom(reply.command)
    command.model_name = args.train  # the prototype's key: the attempt's name
    if not args.overwrite:
        runs._refuse_overwrite(client, args.train)
    attempt = client.train(args.train, command)
    if args.json:
        queued = {**doc, "attempt": documents.attempt_to_document(attempt)}
        if not args.follow:
            print_json(queued)
            return 0
        print(json.dumps({"event": "suggestion", **queued}), flush=True)
    else:
        for line in suggestion_lines(reply):
            print(line)
        print(f"{attempt.name} (id {attempt.id}) {status_text(attempt.status)}", flush=True)
        if not args.follow:
            print(f"follow it: metalearn watch {attempt.name}")
            return 0
    return runs.follow(client, attempt.name, 0, as_json=args.json, seen=attempt.status)


def _target_flags(parser: argparse.ArgumentParser, *, fingerprint: bool = False) -> None:
    """--labels or --command (or, where a stored task will do, --fingerprint), and
    --image-ops."""
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "--labels",
        nargs="+",
        metavar="LABEL",
        help="the task's labels, in order (quote a label with spaces: 'digit 0')",
    )
    target.add_argument(
        "--command",
        dest="command_file",
        metavar="FILE",
        help="take the labels and image ops from this TrainCommand (or attempt document)",
    )
    if fingerprint:
        target.add_argument(
            "--fingerprint",
            metavar="HEX",
            help="a stored task, by its fingerprint or a unique prefix (as `tasks list`)",
        )
    parser.add_argument(
        "--image-ops",
        metavar="JSON",
        help='the image ops, as a command\'s: a JSON list, e.g. \'[{"resize": {"size": [32,'
        " 32]}}]', or a file holding one (replaces --command's; default: none)",
    )


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """`tasks list|profile|similar|fit` and `suggest` on the `metalearn` parser."""
    tasks = sub.add_parser(
        "tasks",
        help="tasks (labels + image ops + images), their profiles and similarity",
        description="A task is the labels a command trains on, with their image ops and"
        " images. A trainer profiles each task once (meta-features: sizes, balance, pixel"
        " statistics, landmarkers, a probe network's feature statistics); tasks are"
        " compared by a distance over profiles whose weights are learned from the store, so"
        " that tasks whose best commands transfer well to each other come out close.",
    ).add_subparsers(dest="action", required=True, metavar="ACTION")
    lst = tasks.add_parser(
        "list",
        parents=[common],
        help="every task, newest first",
        description="Lists every task: fingerprint (its first 12 characters), labels, state,"
        " images, classes, input shape after the image ops, trained attempts and the best"
        " validation accuracy among them. One row per task (labels and image ops): its"
        " newest version; a task gets a new version when its images change.",
    )
    lst.add_argument("--all-versions", action="store_true", help="every version of every task")
    lst.set_defaults(func=cmd_list)
    profile = tasks.add_parser(
        "profile",
        parents=[common],
        help="profile a task and print its meta-features",
        description="Profiles the task that these labels (and image ops) make and prints its"
        " meta-features. A stored profile comes at once; otherwise a trainer computes it (a"
        " few seconds) and this waits for it, at most a minute. Exit status 1 if the task"
        " could not be profiled.",
    )
    _target_flags(profile)
    profile.add_argument(
        "--no-wait", action="store_true", help="queue the profile and return at once"
    )
    profile.set_defaults(func=cmd_profile)
    similar = tasks.add_parser(
        "similar",
        parents=[common],
        help="past tasks ranked by distance to a task",
        description="Ranks the past tasks that have trained attempts by their distance to a"
        " task (profiled first if need be), each with its best attempts by validation"
        " accuracy, and says which distance ranked them: learned from the store, or"
        " standardized while there is too little history.",
    )
    _target_flags(similar, fingerprint=True)
    similar.add_argument(
        "--limit", type=int, default=5, metavar="N", help="at most this many tasks (1-100)"
    )
    similar.add_argument(
        "--attempts", type=int, default=3, metavar="N", help="best attempts shown per task (1-20)"
    )
    similar.set_defaults(func=cmd_similar)
    fit = tasks.add_parser(
        "fit",
        parents=[common],
        help="refit the learned task distance now (admins)",
        description="Refits the task distance on the store now (it is also refitted when"
        " studies have finished since the last fit) and prints it: learned or standardized,"
        " the tasks and pairs it was fitted on, its Spearman correlation with transfer"
        " regret against the standardized distance's, and its largest weights. Too little"
        " history keeps the standardized distance. Admins only.",
    )
    fit.add_argument(
        "--top", type=int, default=10, metavar="N", help="weights shown, largest first (0: all)"
    )
    fit.set_defaults(func=cmd_fit)

    suggest = sub.add_parser(
        "suggest",
        parents=[common],
        help="the command metalearn would start a task with, and why",
        description="Suggests a training command for a task: the command that ranks best"
        " (by quantile within each task) across the most similar past tasks, weighted by"
        " similarity, with this task's labels and image ops; it prints the command, the"
        " reason and the past attempts it came from. With no history it says so and gives"
        " metalearn's stated default. --train NAME queues it as `metalearn train` would.",
    )
    _target_flags(suggest)
    suggest.add_argument(
        "--neighbours",
        type=int,
        default=5,
        metavar="K",
        help="similar past tasks to draw from (1-50)",
    )
    suggest.add_argument(
        "--command-only",
        action="store_true",
        help="print only the command (JSON for `metalearn train --file`)",
    )
    suggest.add_argument("--train", metavar="NAME", help="queue the suggested command as NAME")
    suggest.add_argument(
        "--follow", action="store_true", help="with --train: watch it until it stops"
    )
    suggest.add_argument(
        "--overwrite",
        action="store_true",
        help="with --train: train a name that has epochs or results again",
    )
    suggest.set_defaults(func=cmd_suggest)
