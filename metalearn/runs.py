"""CLI commands that run things: train, test, watch, cancel, download."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from metalearn import documents, looking
from metalearn.client import Client, status_text
from metalearn.tls import TlsError, client_tls
from metalearn.v1 import attempt_pb2

_TIMEOUT = 30.0
LOCAL_NAME = re.compile(r"[A-Za-z0-9._-]{1,128}")


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
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise CliError(f"cannot read {path}: {err.strerror}") from err
    except ValueError as err:
        raise CliError(f"{path} is not JSON: {err}") from err
    if not isinstance(doc, dict):
        raise CliError(f"{path} must hold a JSON object")
    try:
        if "training_commands" in doc:
            attempt = documents.attempt_from_document(doc)
            command = attempt.training_commands
            name = name or attempt.name
        else:
            command = json_format.ParseDict(doc, attempt_pb2.TrainCommand())
    except (documents.DocumentError, json_format.ParseError) as err:
        raise CliError(f"{path} is not a training command: {err}") from err
    name = name or command.model_name or Path(path).stem
    return name, command


def cmd_train(args: argparse.Namespace) -> int:
    name, command = load_command(args.file, args.name)
    with client_for(args) as client:
        attempt = client.train(name, command)
        print(f"{name} (id {attempt.id}) {status_text(attempt.status)}", flush=True)
        return follow(client, name, 0) if args.follow else 0


def cmd_test(args: argparse.Namespace) -> int:
    command = None
    if args.file:
        command = attempt_pb2.TestCommand()
        try:
            json_format.Parse(Path(args.file).read_text(encoding="utf-8"), command)
        except (OSError, json_format.ParseError) as err:
            raise CliError(f"{args.file} is not a test command: {err}") from err
    with client_for(args) as client:
        attempt = client.test(args.name, command)
        print(f"{args.name} (id {attempt.id}) {status_text(attempt.status)}", flush=True)
        return follow(client, args.name, attempt.current_epoch) if args.follow else 0


def cmd_watch(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        return follow(client, args.name, args.from_epoch)


def cmd_cancel(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        attempt = client.cancel(args.name)
    print(f"{args.name} {status_text(attempt.status)}")
    return 0


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
    print(f"{weights} ({weights.stat().st_size:,} bytes), {spec}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        attempt = client.get(args.name, full=True)
    print(looking.plot_curves([attempt], args.output))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        attempts = [client.get(name, full=True) for name in args.names]
    print(looking.comparison_table(attempts))
    if args.plot:
        print(f"\nloss curves: {looking.plot_curves(attempts, args.plot)}")
    return 0


def follow(client: Client, name: str, from_epoch: int) -> int:
    """Prints an attempt's progress until it stops: a bar with the latest loss, status
    changes, test progress. Exit status 0 unless it FAILED or was CANCELLED."""
    n_epoch, last = 0, attempt_pb2.ATTEMPT_STATUS_UNSPECIFIED
    tty = sys.stdout.isatty()
    for event in client.watch(name, from_epoch):
        if isinstance(event, attempt_pb2.Attempt):
            n_epoch = event.n_epoch or event.training_commands.n_epoch or n_epoch
            if event.status != last:
                last = event.status
                error = f": {event.error}" if event.error else ""
                accuracy = f"  accuracy {event.accuracy:.3f}" if event.accuracy else ""
                lead = "\n" if tty else ""
                print(f"{lead}{name} {status_text(last)}{accuracy}{error}", flush=True)
        elif isinstance(event, attempt_pb2.EpochMetrics):
            width = 20
            filled = width * event.epoch // max(n_epoch, event.epoch, 1)
            line = (
                f"[{'#' * filled}{'.' * (width - filled)}] epoch {event.epoch}/{n_epoch}"
                f"  loss {event.loss:.4f}  val loss {event.val_loss:.4f}"
                f"  val accuracy {event.val_accuracy:.3f}"
            )
            print(f"\r{line}" if tty else line, end="" if tty else "\n", flush=True)
        else:
            print(f"  testing {event.done}/{event.total}", flush=True)
    if tty:
        print()
    failed = {attempt_pb2.ATTEMPT_STATUS_FAILED, attempt_pb2.ATTEMPT_STATUS_CANCELLED}
    return 1 if last in failed else 0


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """train, test, watch, cancel and download, on the `metalearn` parser."""
    train = sub.add_parser("train", parents=[common], help="queue training (and follow it)")
    train.add_argument("--file", required=True, help="a TrainCommand, or a prototype document")
    train.add_argument("--name", help="the attempt's name (default: the document's)")
    train.add_argument("--follow", action="store_true", help="watch it until it stops")
    train.set_defaults(func=cmd_train)
    test = sub.add_parser("test", parents=[common], help="queue a test of a trained attempt")
    test.add_argument("name")
    test.add_argument("--file", help="a TestCommand (default: the attempt's testing_commands)")
    test.add_argument("--follow", action="store_true", help="watch it until it stops")
    test.set_defaults(func=cmd_test)
    watch = sub.add_parser("watch", parents=[common], help="follow an attempt live")
    watch.add_argument("name")
    watch.add_argument("--from-epoch", type=int, default=0, help="skip epochs up to this one")
    watch.set_defaults(func=cmd_watch)
    cancel = sub.add_parser("cancel", parents=[common], help="stop a queued or running attempt")
    cancel.add_argument("name")
    cancel.set_defaults(func=cmd_cancel)
    download = sub.add_parser("download", parents=[common], help="save trained weights")
    download.add_argument("name")
    download.add_argument("-o", "--output", default=".", help="directory (default: here)")
    download.set_defaults(func=cmd_download)
    plot = sub.add_parser("plot", parents=[common], help="loss and validation curves as a PNG")
    plot.add_argument("name")
    plot.add_argument("-o", "--output", required=True, help="the PNG file to write")
    plot.set_defaults(func=cmd_plot)
    compare = sub.add_parser("compare", parents=[common], help="commands and results side by side")
    compare.add_argument("names", nargs="+", metavar="NAME")
    compare.add_argument("--plot", help="also write their loss curves to this PNG")
    compare.set_defaults(func=cmd_compare)
