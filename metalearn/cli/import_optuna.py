"""`metalearn import optuna URL`: another Optuna storage's studies brought in
(metalearn/importing/optuna.py)."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from typing import Any

from metalearn.credentials import find_token
from metalearn.tls import TlsError, client_tls


def _since(text: str) -> dt.datetime:
    """A date or time (ISO 8601), this machine's local time when it names no zone."""
    try:
        found = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date such as 2026-01-31") from None
    return found if found.tzinfo is not None else found.astimezone()


def cmd_import_optuna(args: argparse.Namespace) -> int:
    # Imported here: `metalearn --help` and every other command stay free of Optuna.
    from metalearn.importing import optuna as importer
    from metalearn.optuna import Storage

    try:
        source = importer.source_storage(args.url)
    except Exception as err:  # Optuna's storages raise many kinds, all of them the source's
        print(f"metalearn import optuna: cannot read {args.url}: {err}", file=sys.stderr)
        return 2
    del source  # opened again by the import; here only to refuse a bad URL early
    try:
        target = Storage(args.gateway, token=find_token(args.token), tls=client_tls(args))
    except TlsError as err:
        print(f"metalearn import optuna: {err}", file=sys.stderr)
        return 2

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        summary = importer.import_studies(
            args.url, target, args.study or (), args.since, None if args.json else progress
        )
    finally:
        target.close()
    print(importer.summary_json(summary) if args.json else importer.describe(summary))
    return 1 if summary.failed else 0


def add_command(subs: Any, common: argparse.ArgumentParser) -> None:
    optuna = subs.add_parser(
        "optuna",
        parents=[common],
        help="bring in the studies of an Optuna storage (RDB or journal)",
        description="Reads every study (or those named) of an Optuna storage through"
        " Optuna's own storage classes and brings each into metalearn: its name, directions"
        " and attributes, and each finished trial whole (parameters and distributions,"
        " state, values, intermediate values, attributes, times) as a reported attempt whose"
        " origin names the source. Running it again brings in only what is new.",
    )
    optuna.add_argument(
        "url", help="sqlite:///PATH, postgresql://..., mysql://..., or journal:PATH"
    )
    optuna.add_argument(
        "--study", action="append", help="only this study (again for more; default all)"
    )
    optuna.add_argument(
        "--since", type=_since, help="only trials started at or after this date or time"
    )
    optuna.set_defaults(func=cmd_import_optuna)
