"""`metalearn attempts import`: documents recorded elsewhere, brought in as history."""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from metalearn import documents
from metalearn.cli.runs import CliError, client_for
from metalearn.client import InvalidRequest
from metalearn.v1 import attempt_pb2

# One ImportAttempts call: the gateway takes at most 1000 documents and 32 MiB, and of
# those 4 MiB of commands and 200,000 epochs (gateway.attempts.importing: what bounds its checks).
_BATCH_DOCUMENTS = 1000
_BATCH_BYTES = 16 * 1024 * 1024
_BATCH_COMMAND_BYTES = 4 * 1024 * 1024
_BATCH_EPOCHS = 200_000
_INDEX = re.compile(r"^attempts\[(\d+)\]")


def _documents(path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, document) for each document in a file: one JSON object, a JSON list of
    them (`attempts list --json`), or one object per line (NDJSON)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise CliError(f"cannot read {path}: {err.strerror}") from err
    try:
        loaded: Any = json.loads(text)
        items = loaded if isinstance(loaded, list) else [loaded]
    except ValueError:
        try:
            items = [json.loads(line) for line in text.splitlines() if line.strip()]
        except ValueError as err:
            raise CliError(
                f"{path} is not JSON (one document, a list, or one per line): {err}"
            ) from err
    for i, item in enumerate(items):
        yield (f"{path}[{i}]" if len(items) > 1 else path), item


def _batches(
    parsed: list[tuple[str, attempt_pb2.Attempt]],
) -> Iterator[list[tuple[str, attempt_pb2.Attempt]]]:
    batch: list[tuple[str, attempt_pb2.Attempt]] = []
    size = commands = epochs = 0
    for where, attempt in parsed:
        n = attempt.ByteSize()
        c = attempt.training_commands.ByteSize() + attempt.testing_commands.ByteSize()
        e = max(len(attempt.epochs), len(attempt.training_losses))
        if batch and (
            len(batch) == _BATCH_DOCUMENTS
            or size + n > _BATCH_BYTES
            or commands + c > _BATCH_COMMAND_BYTES
            or epochs + e > _BATCH_EPOCHS
        ):
            yield batch
            batch, size, commands, epochs = [], 0, 0, 0
        batch.append((where, attempt))
        size, commands, epochs = size + n, commands + c, epochs + e
    if batch:
        yield batch


def _where(err: InvalidRequest, batch: list[tuple[str, attempt_pb2.Attempt]]) -> str:
    """The gateway's `attempts[i].field` violations, said as FILE[j] field."""
    lines = []
    for field, description in err.violations.items():
        match = _INDEX.match(field)
        if match and int(match.group(1)) < len(batch):
            where = batch[int(match.group(1))][0]
            field = f"{where}: {field[match.end() + 1 :] or 'document'}"
        lines.append(f"{field}: {description}")
    return "; ".join(lines) or err.message


def cmd_attempts_import(args: argparse.Namespace) -> int:
    parsed: list[tuple[str, attempt_pb2.Attempt]] = []
    for path in args.files:
        for where, doc in _documents(path):
            try:
                parsed.append((where, documents.attempt_from_document(doc)))
            except documents.DocumentError as err:
                raise CliError(f"{where} is not an attempt document: {err}") from err
    stored: list[attempt_pb2.Attempt] = []
    skipped: list[str] = []
    with client_for(args) as client:
        for batch in _batches(parsed):
            try:
                reply = client.import_attempts(
                    [a for _, a in batch], skip_existing=args.skip_existing
                )
            except InvalidRequest as err:
                done = f" ({len(stored)} imported before it)" if stored else ""
                raise CliError(
                    f"nothing of this batch was imported{done}: {_where(err, batch)}"
                ) from err
            stored += reply.attempts
            skipped += reply.skipped
    if args.json:
        print(
            json.dumps(
                {
                    "imported": [documents.attempt_to_document(a) for a in stored],
                    "skipped": skipped,
                },
                indent=2,
            )
        )
        return 0
    for attempt in stored:
        print(
            f"{attempt.name} (id {attempt.id})  {len(attempt.training_losses)} epochs"
            + (f"  accuracy {attempt.accuracy:.3f}" if attempt.accuracy else "")
        )
    print(f"imported {len(stored)}" + (f", skipped {len(skipped)} taken: {', '.join(skipped)}"
                                       if skipped else ""))  # fmt: skip
    return 0


def add_command(attempts: Any, common: argparse.ArgumentParser) -> None:
    """`attempts import` on the `attempts` subcommands."""
    imp = attempts.add_parser(
        "import",
        parents=[common],
        help="bring in attempt documents as recorded history",
        description="Stores attempt documents made elsewhere (the prototype's, or another"
        " metalearn's `attempts get --json`/`attempts list --json`) with their losses,"
        " accuracy and status, marked imported. Each call of up to 1,000 documents is all"
        " or nothing.",
    )
    imp.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help="JSON: one document, a list of them, or one per line",
    )
    imp.add_argument(
        "--skip-existing",
        action="store_true",
        help="leave out documents whose name is taken (default: refuse the batch)",
    )
    imp.set_defaults(func=cmd_attempts_import)
