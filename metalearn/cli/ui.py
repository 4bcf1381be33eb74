"""`metalearn ui`: its flags, and serving the dashboard (the top-level `dashboard`
package) in the foreground. The CLI imports this at every start, so the web server's
modules are imported only when the command runs, and images without the dashboard
(the gateway's, the trainer's) still have a working CLI."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from metalearn.launch import LAUNCH_KEY_ENV
from metalearn.tls import client_tls, is_loopback


def _split(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    if not host or not (port.isascii() and port.isdigit()) or not 0 <= int(port) < 65536:
        raise OSError(f"--listen wants HOST:PORT, not {listen!r}")
    return host.strip("[]"), int(port)


def cmd_ui(args: argparse.Namespace) -> int:
    try:
        from dashboard.config import UiConfig
        from dashboard.server import create_server
    except ImportError as err:
        raise OSError(f"the dashboard is not installed here ({err.name} is missing)") from err

    host, port = _split(args.listen)
    launch_token = ""
    if args.launch_token_file:
        launch_token = Path(args.launch_token_file).read_text(encoding="utf-8").strip()
    config = UiConfig(
        gateway=args.gateway,
        tls=client_tls(args),
        host=host,
        port=port,
        secure_cookies=args.secure_cookies,
        allowed_hosts=tuple(h for h in (args.allowed_hosts or "").split(",") if h),
        launch_key=os.environ.get(LAUNCH_KEY_ENV, "") if launch_token else "",
        launch_token=launch_token,
    )
    if not is_loopback(args.listen):
        print(
            f"metalearn ui: WARNING: serving beyond this machine on {args.listen}; put it"
            " behind HTTPS and pass --secure-cookies, or tokens cross the network in clear",
            file=sys.stderr,
            flush=True,
        )
    server = create_server(config)
    print(f"metalearn ui: gateway {config.gateway}; listening on {server.url}", flush=True)
    server.serve()
    return 0


def add_command(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:  # type: ignore[type-arg]
    ui = sub.add_parser(
        "ui",
        parents=[common],
        help="the web dashboard (a gRPC client of the gateway)",
        description="Serves the web dashboard: attempts, live curves, comparisons, studies"
        " and tasks. Browsers sign in with a token; each acts with its own token's rights.",
    )
    ui.add_argument("--listen", default="127.0.0.1:8080", help="HOST:PORT for browsers")
    ui.add_argument(
        "--allowed-hosts",
        metavar="NAME,...",
        help="the host names browsers may reach it by (default: this machine's names when"
        " it listens on loopback, any otherwise)",
    )
    ui.add_argument(
        "--secure-cookies",
        action="store_true",
        help="mark cookies Secure (when browsers reach it through HTTPS)",
    )
    ui.add_argument(
        "--launch-token-file",
        help=f"sign browsers in with this token from a link with ${LAUNCH_KEY_ENV} as its key"
        " (metalearn up uses it for the local admin token)",
    )
    ui.set_defaults(func=cmd_ui)
