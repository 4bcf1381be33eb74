"""CLI commands that run things: train, test, watch, cancel, download."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format

from metalearn import documents
from metalearn.v1 import attempt_pb2, attempt_service_pb2, attempt_service_pb2_grpc

pb = attempt_service_pb2
_TIMEOUT = 30.0


class RunError(Exception):
    """A problem to print as one line (the CLI turns it into exit status 1)."""


def _stub(args: argparse.Namespace) -> tuple[grpc.Channel, Any]:
    channel = grpc.insecure_channel(args.gateway)
    return channel, attempt_service_pb2_grpc.AttemptServiceStub(channel)


def _status(value: int) -> str:
    return attempt_pb2.AttemptStatus.Name(value).removeprefix("ATTEMPT_STATUS_").lower()  # type: ignore[arg-type]


def load_command(path: str, name: str | None) -> tuple[str, attempt_pb2.TrainCommand]:
    """A TrainCommand file, or a whole prototype document; and the attempt's name."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise RunError(f"cannot read {path}: {err.strerror}") from err
    except ValueError as err:
        raise RunError(f"{path} is not JSON: {err}") from err
    if not isinstance(doc, dict):
        raise RunError(f"{path} must hold a JSON object")
    try:
        if "training_commands" in doc:
            attempt = documents.attempt_from_document(doc)
            command = attempt.training_commands
            name = name or attempt.name
        else:
            command = json_format.ParseDict(doc, attempt_pb2.TrainCommand())
    except (documents.DocumentError, json_format.ParseError) as err:
        raise RunError(f"{path} is not a training command: {err}") from err
    name = name or command.model_name or Path(path).stem
    return name, command


def cmd_train(args: argparse.Namespace) -> int:
    name, command = load_command(args.file, args.name)
    channel, stub = _stub(args)
    with channel:
        reply = stub.Train(pb.TrainRequest(name=name, command=command), timeout=_TIMEOUT)
        print(f"{name} (id {reply.attempt.id}) {_status(reply.attempt.status)}", flush=True)
        if args.follow:
            return follow(stub, name, 0)
    return 0


def cmd_test(args: argparse.Namespace) -> int:
    request = pb.TestRequest(name=args.name)
    if args.file:
        try:
            json_format.Parse(Path(args.file).read_text(encoding="utf-8"), request.command)
        except (OSError, json_format.ParseError) as err:
            raise RunError(f"{args.file} is not a test command: {err}") from err
    channel, stub = _stub(args)
    with channel:
        reply = stub.Test(request, timeout=_TIMEOUT)
        print(f"{args.name} (id {reply.attempt.id}) {_status(reply.attempt.status)}", flush=True)
        if args.follow:
            return follow(stub, args.name, reply.attempt.current_epoch)
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    channel, stub = _stub(args)
    with channel:
        return follow(stub, args.name, args.from_epoch)


def cmd_cancel(args: argparse.Namespace) -> int:
    channel, stub = _stub(args)
    with channel:
        reply = stub.CancelAttempt(pb.CancelAttemptRequest(name=args.name), timeout=_TIMEOUT)
    print(f"{args.name} {_status(reply.attempt.status)}")
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    channel, stub = _stub(args)
    data, digest = bytearray(), ""
    with channel:
        for chunk in stub.DownloadModel(pb.DownloadModelRequest(name=args.name)):
            data += chunk.data
            digest = chunk.sha256
        attempt = stub.GetAttempt(pb.GetAttemptRequest(name=args.name), timeout=_TIMEOUT).attempt
    if hashlib.sha256(data).hexdigest() != digest:
        raise RunError("the download arrived damaged (sha256 differs); try again")
    # The attempt's name is checked by the gateway (letters, digits, '._-'), so it is
    # safe in a file name.
    weights = out / f"{attempt.name}.safetensors"
    weights.write_bytes(bytes(data))
    spec = out / f"{attempt.name}.json"
    spec.write_text(json.dumps(documents.attempt_to_document(attempt), indent=2) + "\n")
    print(f"{weights} ({len(data):,} bytes, sha256 {digest[:12]}...), {spec}")
    return 0


def follow(stub: Any, name: str, from_epoch: int) -> int:
    """Prints an attempt's progress until it stops: a bar with the latest loss, status
    changes, test progress. Exit status 0 unless it FAILED or was CANCELLED."""
    n_epoch, last = 0, attempt_pb2.ATTEMPT_STATUS_UNSPECIFIED
    tty = sys.stdout.isatty()
    for event in stub.WatchAttempt(pb.WatchAttemptRequest(name=name, from_epoch=from_epoch)):
        kind = event.WhichOneof("event")
        if kind in ("snapshot", "status"):
            attempt = getattr(event, kind)
            n_epoch = attempt.n_epoch or attempt.training_commands.n_epoch or n_epoch
            if attempt.status != last:
                last = attempt.status
                error = f": {attempt.error}" if attempt.error else ""
                accuracy = f"  accuracy {attempt.accuracy:.3f}" if attempt.accuracy else ""
                print(
                    f"{'' if not tty else chr(10)}{name} {_status(last)}{accuracy}{error}",
                    flush=True,
                )
        elif kind == "epoch":
            e = event.epoch
            width = 20
            filled = width * e.epoch // max(n_epoch, e.epoch, 1)
            line = (
                f"[{'#' * filled}{'.' * (width - filled)}] epoch {e.epoch}/{n_epoch}"
                f"  loss {e.loss:.4f}  val loss {e.val_loss:.4f}  val accuracy {e.val_accuracy:.3f}"
            )
            print(f"\r{line}" if tty else line, end="" if tty else "\n", flush=True)
        elif kind == "test_progress":
            p = event.test_progress
            print(f"  testing {p.done}/{p.total}", flush=True)
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
