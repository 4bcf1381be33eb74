"""Trainer daemons for the benchmarks, started as they are deployed: `metalearn trainer`
processes (a run's process then starts from the daemon's forkserver as in production)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from gateway.inprocess import GatewayThread


def start_trainer(
    gateway: GatewayThread,
    cache: Path,
    threads: int = 0,
    *,
    checkpoint_every_epochs: int = 1000,
    credential: str = "",
) -> tuple[subprocess.Popen[str], str]:
    """A trainer registered with `gateway`; its address. With `credential` it obeys calls
    that carry it (a benchmark calling the trainer directly, as its gateway would) and
    reads images with the admin token (a trainer token reads only the work it holds)."""
    env = {**os.environ, "METALEARN_TOKEN": gateway.trainer_token}
    if credential:
        env |= {"METALEARN_TOKEN": gateway.admin_token, "METALEARN_GATEWAY_CREDENTIAL": credential}
    proc = subprocess.Popen(
        [sys.executable, "-m", "metalearn.cli", "trainer", "--listen", "127.0.0.1:0",
         "--gateway", gateway.address, "--cache-dir", str(cache),
         "--checkpoint-every-epochs", str(checkpoint_every_epochs), "--threads", str(threads)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
    )  # fmt: skip
    assert proc.stdout is not None
    return proc, proc.stdout.readline().rsplit(" ", 1)[-1].strip()


def stop_trainer(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    proc.wait(60)
