"""CLI commands that run things: train, test, watch, cancel, download, plot, compare."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from metalearn import documents
from metalearn.client import (
    TERMINAL,
    Client,
    EpochMetrics,
    NotFoundError,
    TestProgress,
)
from metalearn.structs import integral_struct
from metalearn.tls import TlsError, client_tls
from metalearn.v1 import attempt_pb2
from metalearn.views.attempts import (
    comparison_table,
    differing,
    plot_curves,
    prognosis_short,
    prognosis_text,
    result_values,
    status_text,
)

_TIMEOUT = 30.0
LOCAL_NAME = re.compile(r"[A-Za-z0-9._-]{1,128}")
LIVE = frozenset(
    {
        attempt_pb2.ATTEMPT_STATUS_QUEUED,
        attempt_pb2.ATTEMPT_STATUS_TRAINING,
        attempt_pb2.ATTEMPT_STATUS_TESTING,
    }
)


class CliError(Exception):
    """A problem to print as one line before exiting with status 1."""


def client_for(args: argparse.Namespace) -> Client:
    """The gateway named by --gateway, with the token and TLS the flags say."""
    try:
        tls = client_tls(args)
    except TlsError as err:
        raise CliError(str(err)) from err
    return Client(args.gateway, timeout=_TIMEOUT, token=getattr(args, "token", None), tls=tls)


def load_command(path: str, name: str | None) -> tuple[str, attempt_pb2.TrainCommand]:
    """A TrainCommand file, or a whole prototype document; and the attempt's name."""
    doc = read_json(path)
    try:
        if "training_commands" in doc:
            attempt = documents.attempt_from_document(doc)
            command = attempt.training_commands
            name = name or attempt.name
        else:
            command = documents.parse(doc, attempt_pb2.TrainCommand(), "training_commands")
    except documents.DocumentError as err:
        raise CliError(f"{path}: {err}") from err
    name = name or command.model_name or Path(path).stem
    return name, command


def read_json(path: str) -> dict[str, Any]:
    """A file's JSON object; any problem is a CliError naming the file."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise CliError(f"cannot read {path}: {err.strerror}") from err
    except ValueError as err:
        raise CliError(f"{path} is not JSON: {err}") from err
    if not isinstance(doc, dict):
        raise CliError(f"{path} must hold a JSON object")
    return doc


def print_json(value: Any) -> None:
    """One JSON value on stdout, indented for people (scripts do not mind)."""
    print(json.dumps(value, indent=2))


def answer(args: argparse.Namespace, value: Any, text: str) -> int:
    """A command's result: `value` as JSON with --json, else `text`; exit status 0."""
    if getattr(args, "json", False):
        print_json(value)
    else:
        print(text)
    return 0


def print_attempt(attempt: attempt_pb2.Attempt, as_json: bool, full: bool = False) -> None:
    """An attempt as a line (status, epochs, last loss, accuracy), with --full a row per
    epoch; or its document."""
    if as_json:
        print_json(documents.attempt_to_document(attempt))
        return
    losses = attempt.training_losses
    line = f"{attempt.name} (id {attempt.id})  {status_text(attempt.status)}"
    planned = attempt.n_epoch or attempt.training_commands.n_epoch
    line += f"  epochs {len(losses)}" + (f"/{planned}" if planned else "")
    if losses:
        line += f"  last loss {losses[-1]:.4f}"
    if attempt.HasField("test_result") or attempt.accuracy:
        line += f"  accuracy {attempt.accuracy:.3f}"
    print(line)
    if attempt.error:
        print(f"  error: {attempt.error}")
    if attempt.HasField("reported"):
        reported = attempt.reported
        params = json.dumps(integral_struct(reported.params), sort_keys=True)
        metrics = f", metrics {', '.join(reported.metric_keys)}" if reported.metric_keys else ""
        print(f"  reported by {attempt.owner or 'its owner'}'s code: params {params}{metrics}")
    if attempt.HasField("prognosis"):
        print(f"  {prognosis_text(attempt.prognosis)}")
    if full:
        _print_epochs(attempt)


def _print_epochs(attempt: attempt_pb2.Attempt) -> None:
    """Each epoch's numbers, a row per epoch (the losses alone for recorded history)."""
    if not attempt.epochs:
        print(f"{'EPOCH':>6}  {'LOSS':>10}")
        for i, loss in enumerate(attempt.training_losses, 1):
            print(f"{i:>6}  {loss:>10.4f}")
        return
    print(
        f"{'EPOCH':>6}  {'LOSS':>10}  {'VAL LOSS':>10}  {'VAL ACC':>8}  {'LR':>10}"
        f"  {'SECONDS':>8}  {'SAMPLES/S':>10}"
    )
    for e in attempt.epochs:
        print(
            f"{e.epoch:>6}  {e.loss:>10.4f}  {e.val_loss:>10.4f}  {e.val_accuracy:>8.3f}"
            f"  {e.learning_rate:>10.3g}  {e.seconds:>8.2f}  {e.samples_per_second:>10.0f}"
        )


def cmd_train(args: argparse.Namespace) -> int:
    name, command = load_command(args.file, args.name)
    if args.stop_when_hopeless:
        command.stop_when_hopeless = True
    if args.hopeless_below is not None:
        command.hopeless_below = args.hopeless_below
    with client_for(args) as client:
        if not args.overwrite:
            _refuse_overwrite(client, name)
        attempt = client.train(name, command)
        return _queued(client, attempt, args, 0)


def _refuse_overwrite(client: Client, name: str) -> None:
    """Training a name again forgets its epochs and results (the API's, and the
    prototype's, semantics): the CLI asks for --overwrite before it lets that happen."""
    try:
        existing = client.get(name)
    except NotFoundError:
        return
    if existing.status in LIVE:
        return  # the gateway refuses it: cancel it or wait
    held = []
    if existing.training_losses:
        held.append(f"{len(existing.training_losses)} epochs")
    if existing.HasField("test_result") or existing.accuracy:
        held.append(f"test accuracy {existing.accuracy:.3f}")
    if held:
        raise CliError(
            f"{name} already has {' and '.join(held)}: add --overwrite to train it again"
            " and forget them"
        )


def _queued(client: Client, attempt: attempt_pb2.Attempt, args: argparse.Namespace, at: int) -> int:
    """Prints a queued attempt (its status once), then follows it if asked: with --json,
    the attempt, or with --follow the watch's events alone (its snapshot comes first)."""
    if args.json and not args.follow:
        print_json(documents.attempt_to_document(attempt))
        return 0
    if not args.json:
        print(f"{attempt.name} (id {attempt.id}) {status_text(attempt.status)}", flush=True)
    if args.follow:
        return follow(client, attempt.name, at, as_json=args.json, seen=attempt.status)
    return 0


def cmd_test(args: argparse.Namespace) -> int:
    command = None
    if args.file:
        try:
            command = documents.parse(
                read_json(args.file), attempt_pb2.TestCommand(), "testing_commands"
            )
        except documents.DocumentError as err:
            raise CliError(f"{args.file}: {err}") from err
    with client_for(args) as client:
        attempt = client.test(args.name, command)
        return _queued(client, attempt, args, attempt.current_epoch)


def cmd_watch(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        return follow(client, args.name, args.from_epoch, as_json=args.json)


def cmd_cancel(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        attempt = client.cancel(args.name)
    text = f"{args.name} {status_text(attempt.status)}"
    return answer(args, documents.attempt_to_document(attempt), text)


def cmd_download(args: argparse.Namespace) -> int:
    # Local files are named from what the user typed, checked here, never from the
    # server's answer: a gateway cannot make this command write anywhere else.
    if not LOCAL_NAME.fullmatch(args.name) or args.name in (".", ".."):
        raise CliError(f"{args.name!r} is not an attempt name (letters, digits, '._-')")
    out = Path(args.output)
    with client_for(args) as client:
        weights = client.download(args.name, out)
        attempt = client.get(args.name)
    spec = out / f"{args.name}.json"
    spec.write_text(json.dumps(documents.attempt_to_document(attempt), indent=2) + "\n")
    size = weights.stat().st_size
    value = {"name": args.name, "weights": str(weights), "bytes": size, "spec": str(spec)}
    return answer(args, value, f"{weights} ({size:,} bytes), {spec}")


def cmd_plot(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        attempt = client.get(args.name, full=True)
    path = plot_curves([attempt], args.output)
    return answer(args, {"name": args.name, "plot": str(path)}, str(path))


def cmd_compare(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        attempts = [client.get(name, full=True) for name in args.names]
    plot = plot_curves(attempts, args.plot) if args.plot else None
    if args.json:
        print_json(
            {
                "names": [a.name for a in attempts],
                "differences": differing(attempts),
                "results": [result_values(a) for a in attempts],
                "plot": str(plot) if plot else None,
            }
        )
        return 0
    print(comparison_table(attempts))
    if plot:
        print(f"\nloss curves: {plot}")
    return 0


def follow(
    client: Client,
    name: str,
    from_epoch: int,
    *,
    as_json: bool = False,
    seen: int = attempt_pb2.ATTEMPT_STATUS_UNSPECIFIED,
) -> int:
    """Prints an attempt's progress until it stops: a bar with the latest loss, status
    changes, test progress; with `as_json`, one JSON object per event (NDJSON). `seen`:
    a status already printed. Exit status 0 unless it FAILED or was CANCELLED; 130 when
    interrupted (the attempt goes on)."""
    shown = _Progress(name, from_epoch, as_json, seen)
    try:
        for event in client.watch(name, from_epoch):
            shown.event(event)
    except KeyboardInterrupt:
        shown.interrupted()
        return 130
    shown.end()
    failed = {attempt_pb2.ATTEMPT_STATUS_FAILED, attempt_pb2.ATTEMPT_STATUS_CANCELLED}
    return 1 if shown.last.status in failed else 0


class _Progress:
    """What `follow` prints, event by event."""

    def __init__(self, name: str, from_epoch: int, as_json: bool, seen: int) -> None:
        self.name = name
        self.as_json = as_json
        self.tty = sys.stdout.isatty() and not as_json
        self.last = attempt_pb2.Attempt(status=seen)  # type: ignore[arg-type]
        self.n_epoch = 0
        self.epoch = from_epoch
        self.snapshot = True
        # A finished attempt's state is printed after its epochs, not before.
        self.final: attempt_pb2.Attempt | None = None
        self.bar = False
        self.line = ""  # the latest epoch's bar
        self.heading = ""  # the latest prognosis, short, on a terminal's bar
        self.said = ""  # the latest prognosis printed, without its epoch

    def event(
        self, event: attempt_pb2.Attempt | EpochMetrics | TestProgress | attempt_pb2.Prognosis
    ) -> None:
        if isinstance(event, attempt_pb2.Attempt):
            kind = "snapshot" if self.snapshot else "status"
            self.snapshot = False
            self.n_epoch = event.n_epoch or event.training_commands.n_epoch or self.n_epoch
            # Known before it is printed: a Ctrl-C after the line reports this state.
            last, self.last = self.last, event
            if self.as_json:
                self._json({"event": kind, **documents.attempt_to_document(event)})
            elif kind == "snapshot" and event.status in TERMINAL:
                self.final = event
            elif event.status != last.status:
                self._line(self._state(event))
        elif isinstance(event, attempt_pb2.EpochMetrics):
            self.epoch = event.epoch
            if self.as_json:
                self._json({"event": "epoch", "name": self.name, **documents.plain(event)})
                return
            width, total = 20, max(self.n_epoch, event.epoch, 1)
            filled = width * event.epoch // total
            self.line = (
                f"[{'#' * filled}{'.' * (width - filled)}] epoch {event.epoch}/{self.n_epoch}"
                f"  loss {event.loss:.4f}  val loss {event.val_loss:.4f}"
                f"  val accuracy {event.val_accuracy:.3f}"
            )
            self._bar(f"{self.line}  {self.heading}" if self.heading else self.line)
        elif isinstance(event, attempt_pb2.Prognosis):
            if self.as_json:
                self._json({"event": "prognosis", "name": self.name, **documents.plain(event)})
            elif self.tty:
                # The bar gains where the run is heading, redrawn in place, and keeps it
                # on the next epochs' bars until a newer prognosis.
                self.heading = prognosis_short(event)
                self._bar(f"{self.line}  {self.heading}")
            else:
                # A line when where the run is heading changed: the same "no model yet"
                # after every epoch says nothing new. (The gateway makes a prognosis at
                # most once a second on short epochs, and after the last one.)
                said = prognosis_text(event).partition(": ")[2]
                if said != self.said:
                    self.said = said
                    print(f"  {prognosis_text(event)}", flush=True)
        elif self.as_json:
            self._json({"event": "test_progress", "name": self.name, **documents.plain(event)})
        else:
            self._line(f"  testing {event.done}/{event.total}")

    def _json(self, value: dict[str, Any]) -> None:
        print(json.dumps(value), flush=True)

    def _bar(self, line: str) -> None:
        if self.tty:
            print(f"\r\x1b[K{line}", end="", flush=True)  # ESC[K: clear a longer old line
        else:
            print(line, flush=True)
        self.bar = self.tty

    def _line(self, text: str) -> None:
        """A line of its own, after a bar redrawn in place."""
        print(f"\n{text}" if self.bar else text, flush=True)
        self.bar = False

    def _state(self, attempt: attempt_pb2.Attempt) -> str:
        status = attempt.status
        if status == attempt_pb2.ATTEMPT_STATUS_CANCELLED:
            done = f" at epoch {attempt.current_epoch}/{self.n_epoch}" if self.n_epoch else ""
            return f"{self.name} was cancelled{done}"
        error = f": {attempt.error}" if attempt.error else ""
        accuracy = f"  accuracy {attempt.accuracy:.3f}" if attempt.accuracy else ""
        return f"{self.name} {status_text(status)}{accuracy}{error}"

    def end(self) -> None:
        if self.final is not None:
            self._line(self._state(self.final))
        elif self.bar:
            print()

    def interrupted(self) -> None:
        if self.bar:
            print(flush=True)
        state = status_text(self.last.status) if self.last.status else "waiting"
        print(
            f"metalearn: stopped watching; {self.name} goes on ({state})."
            f" Watch it again: metalearn watch {self.name} --from-epoch {self.epoch};"
            f" stop it: metalearn cancel {self.name}",
            file=sys.stderr,
            flush=True,
        )


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """train, test, watch, cancel, download, plot and compare, on the `metalearn` parser."""
    train = sub.add_parser(
        "train",
        parents=[common],
        help="queue training (and follow it)",
        description="Queues training of an attempt and returns at once (--follow watches"
        " it). The file holds a TrainCommand, or a whole attempt document whose"
        " training_commands are used. Training a name that already has epochs or results"
        " forgets them, so it needs --overwrite.",
    )
    train.add_argument("--file", required=True, help="a TrainCommand, or a prototype document")
    train.add_argument("--name", help="the attempt's name (default: the document's)")
    train.add_argument("--follow", action="store_true", help="watch it until it stops")
    train.add_argument(
        "--stop-when-hopeless",
        action="store_true",
        help="stop it (PRUNED) as soon as its prognosis is hopeless: at chance, diverging,"
        " or predicted to end low",
    )
    train.add_argument(
        "--hopeless-below",
        type=float,
        metavar="ACCURACY",
        help="with --stop-when-hopeless: also stop when the curve model is confident the"
        " final validation accuracy stays below this",
    )
    train.add_argument(
        "--overwrite", action="store_true", help="train a name that has epochs or results again"
    )
    train.set_defaults(func=cmd_train)
    test = sub.add_parser(
        "test",
        parents=[common],
        help="queue a test of a trained attempt",
        description="Queues a test of a trained attempt on images it never trained on and"
        " returns at once (--follow watches it).",
    )
    test.add_argument("name", help="the attempt's name")
    test.add_argument("--file", help="a TestCommand (default: the attempt's testing_commands)")
    test.add_argument("--follow", action="store_true", help="watch it until it stops")
    test.set_defaults(func=cmd_test)
    watch = sub.add_parser(
        "watch",
        parents=[common],
        help="follow an attempt live",
        description="Follows an attempt: its epochs so far, then every epoch, status change"
        " and test progress until it stops; a finished one shows its epochs, then its final"
        ' state. --json prints one JSON object per event (NDJSON), its "event" one of'
        " snapshot, epoch, status, test_progress. Exit status 1 if it failed or was"
        " cancelled; Ctrl-C stops the watching (exit 130), not the attempt.",
    )
    watch.add_argument("name", help="the attempt's name")
    watch.add_argument("--from-epoch", type=int, default=0, help="skip epochs up to this one")
    watch.set_defaults(func=cmd_watch)
    cancel = sub.add_parser("cancel", parents=[common], help="stop a queued or running attempt")
    cancel.add_argument("name", help="the attempt's name")
    cancel.set_defaults(func=cmd_cancel)
    download = sub.add_parser(
        "download",
        parents=[common],
        help="save trained weights",
        description="Saves a trained attempt's weights as NAME.safetensors and its document"
        " as NAME.json in a directory.",
    )
    download.add_argument("name", help="the attempt's name")
    download.add_argument("-o", "--output", default=".", help="directory to write to")
    download.set_defaults(func=cmd_download)
    plot = sub.add_parser("plot", parents=[common], help="loss and validation curves as a PNG")
    plot.add_argument("name", help="the attempt's name")
    plot.add_argument("-o", "--output", required=True, help="the PNG file to write")
    plot.set_defaults(func=cmd_plot)
    compare = sub.add_parser(
        "compare",
        parents=[common],
        help="commands and results side by side",
        description="Shows the training-command settings in which attempts differ, then"
        " their results, one column per attempt.",
    )
    compare.add_argument("names", nargs="+", metavar="NAME", help="the attempts to compare")
    compare.add_argument("--plot", help="also write their loss curves to this PNG")
    compare.set_defaults(func=cmd_compare)
