"""`metalearn retention`: old runs' per-step data thinned, their summaries untouched
(gateway/store/retention.py). An operator's command, run against the database itself
(as `metalearn gateway` is), e.g. nightly from cron or a Kubernetes CronJob."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
from typing import Any

from metalearn.cli.runs import CliError, answer

# Fewer points than this would leave a curve nobody could read.
MIN_KEEP = 10


async def _compact(url: str, args: argparse.Namespace) -> dict[str, Any]:
    from gateway.store import open_pool
    from gateway.store.retention import RetentionStore

    before = dt.datetime.now(dt.UTC) - dt.timedelta(days=args.older_than_days)
    found = {"runs": 0, "epochs_removed": 0, "points_removed": 0, "dry_run": args.dry_run}
    async with open_pool(url, 1, 1) as pool:
        store = RetentionStore(pool)
        after = 0
        while True:
            done = await store.compact(before, args.keep, after, args.batch, args.dry_run)
            if done.last_id is None:
                break
            found["runs"] += done.attempts
            found["epochs_removed"] += done.epochs_removed
            found["points_removed"] += done.points_removed
            after = done.last_id
    return found


def cmd_retention(args: argparse.Namespace) -> int:
    from gateway.config import GatewayConfig

    if args.older_than_days <= 0:
        raise CliError("--older-than-days must be more than 0")
    if args.keep < MIN_KEEP:
        raise CliError(f"--keep must be at least {MIN_KEEP}")
    if not 1 <= args.batch <= 10_000:
        raise CliError("--batch must be between 1 and 10000")
    config = GatewayConfig.from_args(None, args.data_dir, args.database_url)
    embedded = None
    url = config.database_url
    if url is None:  # the embedded PostgreSQL of --data-dir (running or not)
        from gateway.embedded import EmbeddedPostgres

        embedded = EmbeddedPostgres(config.data_dir)
        url = embedded.start()
    try:
        found = asyncio.run(_compact(url, args))
    finally:
        if embedded is not None:
            embedded.stop()
    verb = "would remove" if args.dry_run else "removed"
    text = (
        f"{found['runs']} runs at rest for {args.older_than_days} days thinned to about"
        f" {args.keep} points: {verb} {found['epochs_removed']} epochs and"
        f" {found['points_removed']} metric points"
    )
    return answer(args, found, text)


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """`retention` on the `metalearn` parser."""
    retention = sub.add_parser(
        "retention",
        parents=[common],
        help="thin old runs' per-step data (operators: against the database)",
        description="Runs at rest (finished, failed, cancelled or pruned) whose last change"
        " is older than --older-than-days keep about --keep epochs each: their first 10, their"
        " best by validation accuracy, their last, and evenly spaced ones between; a reported"
        " run's metrics as many points each (first, lowest, highest, last, evenly spaced)."
        " What each run says of itself (status, best accuracy, epochs run, prognosis) does"
        " not change, nor do its task's counts; the curve model stops learning from a thinned"
        " run. Batches of --batch runs, each its own transaction; a run is thinned once.",
    )
    retention.add_argument(
        "--older-than-days",
        type=float,
        required=True,
        metavar="DAYS",
        help="thin runs at rest whose last change is older than this",
    )
    retention.add_argument("--keep", type=int, default=200, help="points a run keeps (200)")
    retention.add_argument("--batch", type=int, default=200, help="runs a transaction (200)")
    retention.add_argument("--dry-run", action="store_true", help="count, change nothing")
    retention.add_argument("--data-dir", help="the embedded PostgreSQL's home (./.metalearn)")
    retention.add_argument(
        "--database-url", help="the PostgreSQL to thin (env METALEARN_DATABASE_URL)"
    )
    retention.set_defaults(func=cmd_retention)
