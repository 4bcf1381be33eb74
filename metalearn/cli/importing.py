"""`metalearn import SYSTEM ...`: runs recorded by other systems brought in as reported
attempts (metalearn/importing/). Each system is a subcommand added by its own
`_add_<system>(subs, common)`; `add_commands` makes the `import` command and calls them.

Exit status: 0 when every run was imported (or skipped as the summary says), 1 when
some runs failed (the summary names each with the gateway's reason), 2 for bad
arguments, a source that cannot be read, or MLflow not installed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import grpc

from metalearn.cli import import_optuna
from metalearn.credentials import find_token, open_channel
from metalearn.outgoing import translate
from metalearn.tls import TlsError, client_tls


def cmd_import_mlflow(args: argparse.Namespace) -> int:
    # Imported here: `metalearn --help` and every other command stay free of it.
    from metalearn.importing import mlflow as importer

    def bad(message: str) -> int:
        print(f"metalearn import mlflow: {message}", file=sys.stderr)
        return 2

    try:
        mapping = importer.TaskMapping(
            dataset_param=args.dataset_param,
            dataset_tag=args.dataset_tag,
            labels_param=args.labels_param,
            labels_tag=args.labels_tag,
            train_size_param=args.train_size_param,
            input_shape_param=args.input_shape_param,
            epoch_metrics=importer.parse_epoch_metrics(args.epoch_metric),
        )
        mapping.check()
        since = importer.parse_since(args.since) if args.since else None
    except ValueError as err:
        return bad(str(err))
    if args.workers < 1:
        return bad(f"--workers must be at least 1, got {args.workers}")
    if not 0 <= args.readers <= 64:
        return bad(f"--readers is 0 to 64, got {args.readers}")
    if not 1 <= args.max_artifact_mb <= importer.MAX_MODEL_BYTES // 2**20:
        return bad(f"--max-artifact-mb is 1 to {importer.MAX_MODEL_BYTES // 2**20}")
    options = importer.Options(
        uri=args.uri,
        experiments=tuple(args.experiment or ()),
        since_ms=since,
        artifacts=args.artifacts,
        max_artifact_bytes=args.max_artifact_mb * 2**20,
        dry_run=args.dry_run,
        workers=args.workers,
        readers=args.readers,
        mapping=mapping,
    )
    # MLflow's HTTP client retries an unreachable server for minutes by default: a
    # mistyped URI should fail within seconds (a user's own setting is kept).
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    channel = None
    if not args.dry_run:
        try:
            tls = client_tls(args)
        except TlsError as err:
            return bad(str(err))
        channel = open_channel(args.gateway, find_token(getattr(args, "token", None)), tls)
    try:
        summary = importer.import_mlflow(options, channel, sys.stderr)
    except importer.MlflowMissing as err:
        return bad(str(err))
    except importer.SourceProblem as err:
        return bad(str(err))
    except grpc.RpcError as err:  # the gateway could not list what was imported before
        print(f"metalearn import mlflow: {translate(err)}", file=sys.stderr)
        return 1
    finally:
        if channel is not None:
            channel.close()
    if getattr(args, "json", False):
        print(json.dumps(summary.as_dict()))
    else:
        print(summary.text())
    return 1 if summary.failed else 0


def _add_mlflow(subs: Any, common: argparse.ArgumentParser) -> None:
    mlflow = subs.add_parser(
        "mlflow",
        parents=[common],
        help="import the runs of an MLflow tracking store",
        description="Reads URI (an MLflow tracking server http(s)://..., a sqlite:///"
        " store, or a file store's directory) through MLflow's own client and reports"
        " each run as an attempt named mlflow-<run id>, with its params, tags, every"
        " metric's whole history, status and times, its origin kept. Runs imported and"
        " ended before are skipped; runs still running are updated and finished once they"
        " end. Needs MLflow: pip install 'metalearn[mlflow]'.",
    )
    mlflow.add_argument("uri", help="the tracking URI")
    mlflow.add_argument(
        "--experiment",
        action="append",
        metavar="NAME",
        help="import this experiment only (again for several; default: all)",
    )
    mlflow.add_argument(
        "--since", metavar="DATE", help="only runs started at or after DATE (ISO, UTC)"
    )
    mlflow.add_argument(
        "--artifacts",
        action="store_true",
        help="also upload each ended run's model (a directory is zipped)",
    )
    mlflow.add_argument(
        "--max-artifact-mb",
        type=int,
        default=2048,
        help="larger models are not uploaded (counted); default 2048",
    )
    mlflow.add_argument(
        "--epoch-metric",
        action="append",
        default=[],
        metavar="FIELD=METRIC",
        help="map a metric onto an epoch field (loss, val_loss, val_accuracy,"
        " learning_rate, seconds, samples_per_second): the loss metric's steps become"
        " epochs 1..N; e.g. --epoch-metric loss=train_loss --epoch-metric val_accuracy=val_acc",
    )
    for what, flag in (
        ("dataset", "the dataset's name"),
        ("labels", "the class names (a JSON list or comma-separated)"),
    ):
        mlflow.add_argument(f"--{what}-param", metavar="NAME", help=f"the param holding {flag}")
        mlflow.add_argument(f"--{what}-tag", metavar="NAME", help=f"the tag holding {flag}")
    mlflow.add_argument(
        "--train-size-param", metavar="NAME", help="the param holding the training examples"
    )
    mlflow.add_argument(
        "--input-shape-param",
        metavar="NAME",
        help="the param holding one input's shape, C x H x W (a JSON list or 3x32x32)",
    )
    mlflow.add_argument("--workers", type=int, default=4, help="runs streamed at once (default 4)")
    mlflow.add_argument(
        "--readers",
        type=int,
        default=0,
        help="processes reading a local store's metrics (default 0: the import's threads;"
        " worth it where cores are free beside the gateway)",
    )
    mlflow.add_argument(
        "--dry-run",
        action="store_true",
        help="read and map everything, send nothing (no gateway needed)",
    )
    mlflow.set_defaults(func=cmd_import_mlflow)


def add_commands(sub: Any, common: argparse.ArgumentParser) -> Any:
    """Adds `metalearn import` with its systems; returns its subparsers, to which
    another system's `_add_<system>(subs, common)` adds its own."""
    parser = sub.add_parser(
        "import",
        help="bring in runs recorded by other systems (mlflow)",
        description="Brings runs recorded by other systems in as reported attempts,"
        " keeping where each came from. Exit status 0: all imported; 1: some runs failed;"
        " 2: bad arguments, an unreadable source, or the system's library missing.",
    )
    subs = parser.add_subparsers(dest="system", metavar="SYSTEM", required=True)
    _add_mlflow(subs, common)
    import_optuna.add_command(subs, common)
    return subs
