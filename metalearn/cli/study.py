"""`metalearn study ...`: searches over training commands (StudyService).

A study file is the Study message's JSON with the protos' field names; its
`base_command` may instead be the path of a command file (relative to the study file).
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from typing import Any

from metalearn import documents
from metalearn.cli import runs
from metalearn.cli.runs import CliError, answer, client_for, print_json
from metalearn.client import Client, NotFoundError
from metalearn.v1 import attempt_pb2
from metalearn.v1 import study_service_pb2 as pb
from metalearn.views.studies import (
    PARAMS_WIDTH,
    best_line,
    follow_study,
    is_warm,
    origin,
    short_labels,
    short_params,
    study_document,
    study_state,
    summary,
    trial_state,
    value_text,
    warm_start_line,
    warm_start_lines,
)

# Keys of `study show --json` that are not Study fields (a study file may hold them).
_EXTRA_KEYS = ("best_command",)


def load_study(path: str, name: str | None = None) -> pb.Study:
    """A study file; a string `base_command` names a command file beside it."""
    doc = runs.read_json(path)
    command = None
    if isinstance(doc.get("base_command"), str):
        command = runs.load_command(str(Path(path).parent / doc["base_command"]), None)[1]
    doc = {k: v for k, v in doc.items() if k not in _EXTRA_KEYS and not (
        k == "base_command" and command is not None)}  # fmt: skip
    try:
        study = documents.parse(doc, pb.Study(), "")
    except documents.DocumentError as err:
        raise CliError(f"{path}: {err}") from err
    if command is not None:
        study.base_command.CopyFrom(command)
    if name:
        study.name = name
    return study


def warm_start_flag(value: str) -> pb.WarmStart:
    """`--warm-start`: "similar" (the 5 most similar tasks), "similar:K", or
    "study:NAME[,NAME...]" (those studies' trials)."""
    kind, _, rest = value.partition(":")
    kind = kind.strip().lower()
    if kind == "similar":
        try:
            k = int(rest) if rest.strip() else 5
        except ValueError:
            k = 0
        if k < 1:
            raise argparse.ArgumentTypeError(
                f"{value!r}: K in similar:K is a whole number, 1 to 20"
            )
        return pb.WarmStart(similar_tasks=k)
    if kind in ("study", "studies"):
        names = [n.strip() for n in rest.split(",") if n.strip()]
        if names:
            return pb.WarmStart(studies=names)
    raise argparse.ArgumentTypeError(f"{value!r}: give similar, similar:K or study:NAME[,NAME...]")


def apply_warm_start(
    study: pb.Study, warm_start: pb.WarmStart | None, zero_shot: int | None
) -> None:
    """`--warm-start` replaces the file's warm start; `--zero-shot` sets its zero-shot
    trials (a study file's `warm_start` is kept otherwise)."""
    if warm_start is not None:
        study.warm_start.CopyFrom(warm_start)
    if zero_shot is not None:
        if not study.HasField("warm_start"):
            raise CliError(
                "--zero-shot needs a warm start (--warm-start, or warm_start in the file)"
            )
        study.warm_start.zero_shot_trials = zero_shot


def best_command(client: Client, study: pb.Study) -> dict[str, Any] | None:
    """The best trial's training command as `train --file` takes it (None: no best, or
    its attempt was deleted)."""
    if not study.HasField("best_trial") or study.HasField("external") or study.HasField("optuna"):
        return None  # an external or Optuna study's trials run their workers' code: no command
    try:
        attempt = client.get(study.best_trial.attempt_name)
    except NotFoundError:
        return None
    return documents.command_as_written(attempt.training_commands)


def cmd_create(args: argparse.Namespace) -> int:
    study = load_study(args.file, args.name)
    apply_warm_start(study, args.warm_start, args.zero_shot)
    if args.pruner is not None:
        study.pruner.Clear()
        study.pruner.name = args.pruner
    with client_for(args) as client:
        created = client.create_study(study)
        if args.follow:
            return follow_study(client, created.name, as_json=args.json)
    external = created.HasField("external")
    parallel = created.max_parallel or (
        "as many as agents ask for" if external else "the trainers' slots"
    )
    text = (
        f"{created.name} (id {created.id}) {study_state(created.state)}: {created.n_trials}"
        f" trials, at most {parallel} at once. Follow it: metalearn study watch {created.name}"
    )
    if external:
        text += f"\nRun its trials: metalearn agent {created.name} -- COMMAND [ARGS...]"
    if warm := warm_start_line(created):
        text += f"\n{warm}"
    return answer(args, study_document(created), text)


def cmd_show(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        study = client.study(args.name)
        command = best_command(client, study)
    if args.best_command:
        if command is None:
            raise CliError(f"{args.name}: no best command to print ({best_line(study)})")
        print_json(command)
        return 0
    if args.json:
        print_json({**study_document(study), "best_command": command})
        return 0
    print(summary(study))
    for line in warm_start_lines(study):
        print(line)
    labels = short_labels([p.path for p in study.search_space])
    width = max([len("ATTEMPT"), *(len(t.attempt_name) for t in study.trials)])
    warm = is_warm(study)  # a FROM column: "warm" for the zero-shot trials
    print(f"{'TRIAL':>5}  {'ATTEMPT':<{width}}  {'STATE':<9} {'FROM  ' if warm else ''}"
          f"{'PARAMS':<{PARAMS_WIDTH}} {'EPOCHS':>6} {'VALUE':>7}")  # fmt: skip
    for t in study.trials:
        print(
            f"{t.number:>5}  {t.attempt_name or '-':<{width}}  {trial_state(t.state):<9}"
            f" {f'{origin(t):<4}  ' if warm else ''}{short_params(t, labels):<{PARAMS_WIDTH}}"
            f" {t.epochs:>6} {value_text(t.value):>7}"
        )
    for t in study.trials:
        if t.error:
            print(f"  trial {t.number}: {t.error.splitlines()[0][:200]}")
    print(best_line(study))
    if command is not None:
        print(f"its command (save it for `metalearn train --file`, or: metalearn study show"
              f" {study.name} --best-command > best.json):")  # fmt: skip
        print_json(command)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        studies = list(client.studies())
    if args.json:
        print_json([study_document(s, trials=False) for s in studies])
        return 0
    width = max([len("NAME"), *(len(s.name) for s in studies)])
    print(
        f"{'ID':>5}  {'NAME':<{width}}  {'STATE':<9} {'TRIALS':>9} {'BEST':>7}  {'CREATED':<19}"
        "  OWNER"
    )
    for s in studies:
        trials = f"{s.trials_made}" if s.HasField("optuna") else f"{s.trials_made}/{s.n_trials}"
        best = value_text(s.best_trial.value) if s.HasField("best_trial") else "-"
        created = s.create_time.ToDatetime().strftime("%Y-%m-%d %H:%M:%S")
        print(
            f"{s.id:>5}  {s.name:<{width}}  {study_state(s.state):<9} {trials:>9} {best:>7}"
            f"  {created}  {s.owner}"
        )
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        study = client.stop_study(args.name, cancel_running=args.cancel_running)
    running = sum(t.state == pb.TRIAL_STATE_RUNNING for t in study.trials)
    text = f"{study.name} {study_state(study.state)}"
    if running:
        text += f": {running} running trials finish (--cancel-running cancels them)"
    return answer(args, study_document(study), text)


def cmd_delete(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        client.delete_study(args.name)
    text = f"deleted study {args.name} (its trials stay as attempts)"
    return answer(args, {"deleted": args.name}, text)


def cmd_watch(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        return follow_study(client, args.name, as_json=args.json)


def cmd_plot(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        study = client.study(args.name)
        if not any(t.state == pb.TRIAL_STATE_COMPLETE for t in study.trials):
            raise CliError(f"{args.name} has no complete trial yet: nothing to plot")
        epochs: dict[int, list[attempt_pb2.EpochMetrics]] = {}
        for trial in study.trials:
            if trial.attempt_name and trial.epochs:
                # A deleted attempt: its trial is drawn without its curve.
                with contextlib.suppress(NotFoundError):
                    epochs[trial.number] = list(client.get(trial.attempt_name, full=True).epochs)
    from metalearn.views import study_plots  # late: Optuna and matplotlib take a while to import

    path = study_plots.plot_study(study, epochs, args.output)
    return answer(args, {"name": args.name, "plot": str(path)}, str(path))


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """`study create|show|list|watch|stop|delete|plot` on the `metalearn` parser."""
    study = sub.add_parser(
        "study",
        help="searches over training commands (Optuna), each trial an attempt",
        description="A study samples training commands around a base command from a search"
        " space with an Optuna sampler; trial k of study S is the attempt S-k, trained by the"
        " same queue and trainers as any other.",
    ).add_subparsers(dest="action", required=True, metavar="ACTION")
    create = study.add_parser(
        "create",
        parents=[common],
        help="start a study from a study file",
        description="Starts a study: the file holds the Study message's JSON (name,"
        " base_command, search_space, objective, n_trials, max_parallel, timeout_seconds,"
        " sampler, seed, test_best, warm_start); base_command may be the path of a command"
        " file, relative to the study file (e.g. examples/digits_study.json). The gateway"
        " checks it whole first: every path, range and the command at each bound and"
        " choice. A warm start begins with the best commands of the most similar past tasks"
        " (or of named studies) as zero-shot trials, then searches with their trials as"
        " prior knowledge.",
    )
    create.add_argument("--file", required=True, help="the study file (JSON)")
    create.add_argument("--name", help="the study's name instead of the file's")
    create.add_argument(
        "--warm-start",
        type=warm_start_flag,
        metavar="similar[:K]|study:NAME[,NAME...]",
        help="start from the K (default 5, at most 20) most similar past tasks' trials, or"
        " from these studies' trials; replaces the file's warm_start (default: the file's,"
        " else cold)",
    )
    create.add_argument(
        "--zero-shot",
        type=int,
        metavar="N",
        help="a warm start's zero-shot trials first: their best distinct commands, each"
        " repeated as a trial (0: min(K, 8), -1: none; at most half of n_trials)",
    )
    create.add_argument(
        "--pruner",
        metavar="NAME",
        help='the pruner instead of the file\'s (its arguments dropped): "none", "median",'
        ' "percentile", "successive_halving", "hyperband", "wilcoxon" or "learned" (the'
        " curve model's)",
    )
    create.add_argument("--follow", action="store_true", help="follow its trials until it is done")
    create.set_defaults(func=cmd_create)
    show = study.add_parser(
        "show",
        parents=[common],
        help="a study's trials and its best command",
        description="Shows a study: its state, a row per trial (attempt, state, params,"
        " epochs, value), then the best trial and its training command as JSON that"
        " `metalearn train --file` takes.",
    )
    show.add_argument("name", help="the study's name")
    show.add_argument(
        "--best-command",
        action="store_true",
        help="print only the best trial's command (JSON for `train --file`)",
    )
    show.set_defaults(func=cmd_show)
    lst = study.add_parser("list", parents=[common], help="every study, newest first")
    lst.set_defaults(func=cmd_list)
    watch = study.add_parser(
        "watch",
        parents=[common],
        help="follow a study's trials live",
        description="Follows a study until it is done: a row per trial (params, epochs,"
        " value, state, best so far), redrawn in place on a terminal, else each change"
        ' printed once; --json prints one JSON object per change (NDJSON), its "event"'
        " one of snapshot, trial, study. Ctrl-C stops the following (exit 130), not the"
        " study.",
    )
    watch.add_argument("name", help="the study's name")
    watch.set_defaults(func=cmd_watch)
    stop = study.add_parser(
        "stop",
        parents=[common],
        help="ask for no more trials",
        description="Stops asking for trials; running trials finish (or are cancelled with"
        " --cancel-running), then the study is done. Its owner or an admin only.",
    )
    stop.add_argument("name", help="the study's name")
    stop.add_argument(
        "--cancel-running", action="store_true", help="also cancel its queued and running trials"
    )
    stop.set_defaults(func=cmd_stop)
    delete = study.add_parser(
        "delete",
        parents=[common],
        help="remove a study that is done (its trials stay as attempts)",
        description="Removes a study that no longer runs (stop it first); its trials stay"
        " as attempts. Its owner or an admin only.",
    )
    delete.add_argument("name", help="the study's name")
    delete.set_defaults(func=cmd_delete)
    plot = study.add_parser(
        "plot",
        parents=[common],
        help="Optuna's plots of a study as a PNG",
        description="Writes Optuna's optimization history, intermediate values (each"
        " trial's validation metric per epoch), parallel coordinates and slice plots of a"
        " study's trials, one under the other, to a PNG.",
    )
    plot.add_argument("name", help="the study's name")
    plot.add_argument("-o", "--output", required=True, help="the PNG file to write")
    plot.set_defaults(func=cmd_plot)
