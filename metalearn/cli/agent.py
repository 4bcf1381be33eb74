"""`metalearn agent STUDY -- COMMAND...`: runs a script once per trial of an external
study (metalearn/reporting/agent.py)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from metalearn.outgoing import MetalearnError
from metalearn.reporting.agent import Agent
from metalearn.tls import TlsError, client_tls


def cmd_agent(args: argparse.Namespace) -> int:
    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        print("metalearn agent: give the command to run after --", file=sys.stderr)
        return 2
    try:
        agent = Agent(
            args.study, command, gateway=args.gateway, token=args.token, tls=client_tls(args),
            worker=args.worker, grace_seconds=args.grace,
        )  # fmt: skip
    except TlsError as err:
        print(f"metalearn agent: {err}", file=sys.stderr)
        return 2
    try:
        runs = agent.run(args.count)
    except MetalearnError as err:
        print(f"metalearn agent: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        agent.close()
    for run in runs:
        stopped = f", stopped: {run.stopped}" if run.stopped else ""
        print(f"trial {run.number} (attempt {run.attempt_id}): exit {run.exit_code}{stopped}")
    return 0


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    agent = sub.add_parser(
        "agent",
        parents=[common],
        help="run a script once per trial of an external study",
        description="Asks STUDY (an external study: `study create` with `external`) for its"
        " next trial, runs COMMAND with the trial's parameters as --name=value arguments and"
        " in METALEARN_TRIAL_PARAMS (JSON), with METALEARN_RUN_ID naming the trial's run"
        " (metalearn.start_run() in the script reports to it), and asks again when it ends,"
        " until the study is done. Start as many agents as the study has slots, on any"
        " machines. A trial metalearn stops (pruned, cancelled) gets SIGTERM.",
    )
    agent.add_argument("study", help="the external study")
    agent.add_argument("--count", type=int, default=0, help="run at most N trials (0: all)")
    agent.add_argument("--worker", default="", help="this agent's name (default host-pid)")
    agent.add_argument(
        "--grace", type=float, default=30.0, help="seconds from SIGTERM to SIGKILL (30)"
    )
    agent.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    agent.set_defaults(func=cmd_agent)
