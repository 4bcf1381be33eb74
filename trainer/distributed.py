"""One attempt on several devices: DistributedDataParallel over N processes on one machine.

Rank 0 is the run's own worker process: it alone talks to the gateway, prepares the data,
emits events and writes checkpoints. It starts ranks 1..N-1 as `python -m
trainer.distributed` processes (a worker is a daemonic multiprocessing child, which
multiprocessing forbids to have children of its own; torchrun starts its ranks the same
way), hands them the prepared run in a private directory, and all N meet through a
FileStore there, so no port is opened for the rendezvous. gloo on CPU, NCCL on GPUs.

What the ranks do together once they have met (split every batch, weight its loss, agree
before every backward pass) is `trainer.team`. Cancellation needs no agreement: rank 0
stops and kills the others. A rank that dies takes the run with it: rank 0 exits, its
trainer reports that the process died, and the gateway runs the attempt again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from metalearn.errors import DomainError
from trainer.fitting import fit
from trainer.recipe import Recipe, Signals
from trainer.team import Team, backend

__all__ = ["TIMEOUT", "Team", "backend", "lead"]

log = logging.getLogger(__name__)

# How long a rank waits for the others at the rendezvous or in one collective: the
# slowest step of a rank (a large batch on a slow device) must fit in it.
TIMEOUT = timedelta(minutes=10)
# Seconds the other ranks get to finish after rank 0 has, before they are killed.
_FINISH_SECONDS = 30.0
_RECIPE = "recipe.pt"


def _join(run_dir: Path, rank: int, world: int, device: torch.device) -> Team:
    if device.type == "cuda":
        torch.cuda.set_device(device)
    # One machine: gloo's connections between the ranks stay on loopback.
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo0" if sys.platform == "darwin" else "lo")
    store = dist.FileStore(str(run_dir / "store"), world)  # type: ignore[attr-defined]
    dist.init_process_group(
        backend(device), store=store, rank=rank, world_size=world, timeout=TIMEOUT
    )
    return Team(rank, world, device)


def _watch(
    children: Sequence[subprocess.Popen[bytes]], done: threading.Event, run_dir: Path
) -> None:
    """Rank 0 ends the run if another rank dies (before the rendezvous too): it would
    otherwise wait in a collective until TIMEOUT."""
    while not done.wait(0.5):
        for rank, child in enumerate(children, start=1):
            code = child.poll()
            if code is not None and code != 0 and not done.is_set():
                log.error("rank %d of the run died (exit code %s): ending the run", rank, code)
                for other in children:
                    other.kill()
                shutil.rmtree(run_dir, ignore_errors=True)
                os._exit(1)


@contextlib.contextmanager
def lead(recipe: Recipe, devices: Sequence[torch.device], threads: int) -> Iterator[Team]:
    """Starts ranks 1..N-1 on `devices[1:]` and joins them as rank 0 on `devices[0]`."""
    world = len(devices)
    # Private to this user (mkdtemp makes it 0700): the ranks load its recipe unpickled.
    run_dir = Path(tempfile.mkdtemp(prefix="metalearn-ranks-"))
    children: list[subprocess.Popen[bytes]] = []
    done = threading.Event()
    finished = False
    try:
        torch.save(recipe, run_dir / _RECIPE)
        for rank in range(1, world):
            children.append(
                subprocess.Popen(
                    [sys.executable, "-m", "trainer.distributed", str(run_dir), str(rank),
                     str(world), str(devices[rank]), str(threads)],
                    stdin=subprocess.PIPE,
                )
            )  # fmt: skip
        threading.Thread(target=_watch, args=(children, done, run_dir), daemon=True).start()
        team = _join(run_dir, 0, world, devices[0])
        # Every rank has mapped the recipe before it joined: the file (the whole dataset)
        # goes now, not only if rank 0 lives to clean up.
        (run_dir / _RECIPE).unlink()
        yield team
        finished = True
    finally:
        done.set()
        for child in children:
            if finished:
                try:
                    child.wait(_FINISH_SECONDS)
                except subprocess.TimeoutExpired:
                    log.warning("rank %s did not finish in time: killing it", child.args)
            if child.poll() is None:
                child.kill()
                child.wait()
        shutil.rmtree(run_dir, ignore_errors=True)
        if dist.is_initialized():
            dist.destroy_process_group()


def _exit_with_leader() -> None:
    """Ends this rank the moment rank 0 is gone (its end of our stdin closes)."""

    def watch() -> None:
        # os.read, not sys.stdin: a thread blocked in a buffered read holds its lock and
        # makes the interpreter's own exit fail.
        while os.read(0, 4096):
            pass
        os._exit(1)

    threading.Thread(target=watch, name="leader-watch", daemon=True).start()


def _rank_main(argv: Sequence[str]) -> int:
    run_dir, rank, world, device, threads = argv
    _exit_with_leader()
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s trainer-rank{rank} %(levelname)s %(message)s"
    )
    torch.set_num_threads(int(threads))
    # Written by rank 0 into a directory only this user can write (see `lead`).
    recipe = torch.load(Path(run_dir) / _RECIPE, weights_only=False, mmap=True)
    team = _join(Path(run_dir), int(rank), int(world), torch.device(device))
    try:
        fit(recipe, team.device, lambda _: None, Signals.never(), team)
    except DomainError:
        pass  # every rank met it at the same batch: rank 0 reports it
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(_rank_main(sys.argv[1:]))
