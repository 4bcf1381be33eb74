"""`metalearn up`: the whole system on one machine — embedded PostgreSQL, a gateway and
N trainer daemons, each its own process — stopped cleanly by Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import IO

from metalearn.cli.runs import CliError
from metalearn.launch import LAUNCH_KEY_ENV, LAUNCH_KEY_MINUTES

CLI = [sys.executable, "-m", "metalearn.cli"]
DEFAULT_LISTEN = "127.0.0.1:50051"
DEFAULT_DATA_DIR = ".metalearn"


class Daemon:
    """A `metalearn` subcommand running as a child, its log in a file."""

    def __init__(
        self, name: str, args: list[str], log_dir: Path, env: dict[str, str] | None = None
    ) -> None:
        self.name = name
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{name}.log"
        self._log: IO[str] = self.log_path.open("a")
        start = self._log.tell()
        self.proc = subprocess.Popen(
            [*CLI, *args],
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env={**os.environ, **(env or {})},
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "listening on" not in line:
            self.proc.kill()
            self.proc.wait()
            self._log.close()
            raise CliError(f"{name} did not start: {_reason(self.log_path, start)}")
        self.address = line.rsplit(" ", 1)[-1].strip()

    def stop(self, timeout: float) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()
        finally:
            self._log.close()


def _reason(log: Path, start: int) -> str:
    """Why a daemon that did not start stopped: the one line it said last in its log
    since `start` (a `metalearn` command's error, e.g. "cannot listen on 127.0.0.1:50051:
    is the port in use?"), and where the whole log is."""
    with log.open(encoding="utf-8", errors="replace") as lines:
        lines.seek(start)
        said = [line.strip() for line in lines if line.startswith("metalearn: ")]
    reason = said[-1].removeprefix("metalearn: ") if said else "it exited"
    return f"{reason} (log: {log})"


def cmd_up(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir)
    logs = data_dir / "logs"
    # A plain flag, not a threading.Event: the handler runs in the main thread between
    # two bytecodes, and Event.set() there deadlocks when the signal lands while the main
    # thread holds the Event's own lock inside Event.wait() (seen: `up` hung for good
    # after a Ctrl-C, its daemons never stopped).
    stop: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.append(signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    daemons: list[Daemon] = []
    try:
        gateway = Daemon(
            "gateway", ["gateway", "--listen", args.listen, "--data-dir", str(data_dir)], logs
        )
        daemons.append(gateway)
        # Its trainers get a trainer token of their own (in their environment, never in
        # argv where `ps` shows it): made again at each start, the old one revoked.
        trainer_env = {"METALEARN_TOKEN": _trainer_token(gateway.address, data_dir)}
        for i in range(args.trainers):
            daemons.append(
                Daemon(
                    f"trainer-{i + 1}",
                    ["trainer", "--listen", "127.0.0.1:0", "--gateway", gateway.address,
                     "--cache-dir", str(data_dir / "trainer-cache"),
                     "--capacity", str(args.capacity)],
                    logs,
                    trainer_env,
                )
            )  # fmt: skip
        trainers = ", ".join(d.address for d in daemons[1:]) or "none"
        dashboard = ""
        if args.ui != "off":
            # The dashboard signs a browser in with the admin token from a link whose key
            # only this terminal sees (in its environment, never in argv): once, and only
            # in its first minutes (a link left in a scrollback is worth nothing).
            key = secrets.token_urlsafe(24)
            ui = Daemon(
                "ui",
                ["ui", "--listen", args.ui, "--gateway", gateway.address,
                 "--launch-token-file", str(data_dir / "admin.token")],
                logs,
                {LAUNCH_KEY_ENV: key},
            )  # fmt: skip
            daemons.append(ui)
            dashboard = (
                f"; dashboard on {ui.address}/login/launch?key={key}; that link signs in"
                f" once, within {LAUNCH_KEY_MINUTES} minutes"
            )
        print(
            f"metalearn up: gateway on {gateway.address}, {args.trainers} trainer(s)"
            f" ({trainers}); logs in {logs}; admin token in {data_dir / 'admin.token'}"
            f"{dashboard}; Ctrl-C stops",
            flush=True,
        )
        if args.listen != DEFAULT_LISTEN or data_dir.resolve() != Path(DEFAULT_DATA_DIR).resolve():
            # The CLI looks at 127.0.0.1:50051 and ./.metalearn unless told otherwise.
            print(
                "metalearn up: for the CLI in another terminal:"
                f" export METALEARN_GATEWAY={gateway.address}"
                f" METALEARN_DATA_DIR={shlex.quote(str(data_dir.resolve()))}",
                flush=True,
            )
        while not stop:
            time.sleep(0.5)  # a signal ends the sleep early (PEP 475 resumes it; it is short)
            for daemon in daemons:
                if daemon.proc.poll() is not None and not stop:
                    print(
                        f"metalearn up: {daemon.name} exited ({daemon.proc.returncode});"
                        f" see {daemon.log_path}"
                    )
                    stop.append(0)
        return 0
    finally:
        # Trainers first (each checkpoints its run), then the gateway (and its database).
        for daemon in reversed(daemons):
            daemon.stop(120 if daemon.name.startswith("trainer") else 60)
        if daemons:
            print("metalearn up: stopped", flush=True)


def _trainer_token(address: str, data_dir: Path) -> str:
    """A fresh trainer token for this machine's trainers, made with the admin token the
    gateway wrote into `data_dir`."""
    from metalearn.client import Client, NotFoundError
    from metalearn.credentials import find_token

    token_file = data_dir / "admin.token"
    admin = token_file.read_text(encoding="utf-8").strip() if token_file.is_file() else None
    with Client(address, timeout=30, token=admin or find_token()) as client:
        with contextlib.suppress(NotFoundError):  # the first start
            client.revoke_token("local-trainers")
        return str(client.create_token("local-trainers", "trainer").secret)


def add_command(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    up = sub.add_parser(
        "up",
        help="run gateway, database and trainers on this machine",
        description="Runs the embedded PostgreSQL, a gateway and trainer daemons, each its"
        " own process with its log under DATA_DIR/logs, in the foreground: use a second"
        " terminal for the other commands. Ctrl-C or SIGTERM stops them all.",
    )
    up.add_argument("--listen", default=DEFAULT_LISTEN, help="the gateway's HOST:PORT")
    up.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help="database, caches and logs")
    up.add_argument("--trainers", type=int, default=1, help="trainer processes")
    up.add_argument("--capacity", type=int, default=1, help="runs per trainer")
    up.add_argument(
        "--ui",
        default="127.0.0.1:8080",
        metavar="HOST:PORT",
        help="the web dashboard's address ('off': none)",
    )
    up.set_defaults(func=cmd_up)
