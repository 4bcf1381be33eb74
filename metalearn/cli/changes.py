"""`metalearn attempts update|delete` and `images delete`: changing and removing what
is stored."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from metalearn import documents
from metalearn.cli import runs
from metalearn.cli.runs import CliError, answer, client_for
from metalearn.v1 import attempt_pb2


def cmd_attempts_delete(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        client.delete(args.name)
    return answer(args, {"deleted": args.name}, f"deleted {args.name}")


def cmd_attempts_update(args: argparse.Namespace) -> int:
    """Writes the fields the flags name, and only those (UpdateAttempt's field mask)."""
    changes = attempt_pb2.Attempt(name=args.name)
    fields = []
    if args.file:
        changes.training_commands.CopyFrom(runs.load_command(args.file, args.name)[1])
        fields.append("training_commands")
    if args.test_file:
        doc = runs.read_json(args.test_file)
        try:
            changes.testing_commands.CopyFrom(
                documents.parse(doc, attempt_pb2.TestCommand(), "testing_commands")
            )
        except documents.DocumentError as err:
            raise CliError(f"{args.test_file}: {err}") from err
        fields.append("testing_commands")
    for field in ("n_epoch", "limit"):
        if getattr(args, field) is not None:
            setattr(changes, field, getattr(args, field))
            fields.append(field)
    tags = dict(_tag(t) for t in args.tag or [])
    with client_for(args) as client:
        if args.remove_tag:
            # Removing a tag that is not there is done already, as with `kubectl label
            # KEY-` or `git config --unset`: said, not an error that drops the rest.
            current = client.get(args.name).tags
            for key in args.remove_tag:
                if key not in current:
                    print(f"metalearn: {args.name} had no tag {key!r}", file=sys.stderr)
        # One mask path per tag (`tags.KEY`): the gateway sets or removes each under the
        # attempt's lock, so concurrent updates of other tags are all kept.
        for key in args.remove_tag or []:
            tags.pop(key, None)  # removing wins, as it did when the map was rewritten
        changes.tags.update(tags)
        for key in dict.fromkeys([*tags, *(args.remove_tag or [])]):
            fields.append(f"tags.`{key}`" if "." in key else f"tags.{key}")
        if not fields:
            raise CliError(
                "nothing to change: give --tag, --remove-tag, --file, --test-file,"
                " --n-epoch or --limit"
            )
        attempt = client.update(changes, fields)
    runs.print_attempt(attempt, args.json)
    return 0


def _tag(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise CliError(f"--tag {text!r}: give KEY=VALUE")
    return key, value


def cmd_images_delete(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        deleted = client.delete_images(args.labels)
    text = f"deleted {deleted} images of {', '.join(args.labels)}"
    return answer(args, {"labels": args.labels, "deleted": deleted}, text)


def add_attempt_commands(attempts: Any, common: argparse.ArgumentParser) -> None:
    """`attempts delete` and `attempts update`, on the `attempts` subcommands."""
    delete = attempts.add_parser(
        "delete",
        parents=[common],
        help="remove an attempt with its epochs and weights",
        description="Removes an attempt with its epochs and weights (not while it is queued"
        " or running: cancel it first).",
    )
    delete.add_argument("name", help="the attempt's name")
    delete.set_defaults(func=cmd_attempts_delete)
    update = attempts.add_parser(
        "update",
        parents=[common],
        help="change an attempt's tags, commands, n_epoch or limit",
        description="Changes only what the flags name (UpdateAttempt with a field mask);"
        " commands not while the attempt is queued or running.",
    )
    update.add_argument("name", help="the attempt's name")
    update.add_argument(
        "--tag", action="append", metavar="KEY=VALUE", help="set a tag (repeatable)"
    )
    update.add_argument(
        "--remove-tag", action="append", metavar="KEY", help="remove a tag (repeatable)"
    )
    update.add_argument("--file", help="new training_commands: a TrainCommand or a document")
    update.add_argument("--test-file", help="new testing_commands: a TestCommand")
    update.add_argument("--n-epoch", type=int, help="epochs to train")
    update.add_argument("--limit", type=int, help="images to test on (0: the whole test split)")
    update.set_defaults(func=cmd_attempts_update)


def add_image_commands(images: Any, common: argparse.ArgumentParser) -> None:
    """`images delete`, on the `images` subcommands."""
    remove = images.add_parser(
        "delete", parents=[common], help="delete every image of labels (admins only)"
    )
    remove.add_argument("labels", nargs="+", metavar="LABEL", help="the labels to empty")
    remove.set_defaults(func=cmd_images_delete)
