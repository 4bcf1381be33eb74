"""One attempt on several devices: DistributedDataParallel over N processes on one machine.

Rank 0 is the run's own worker process: it alone talks to the gateway, prepares the data,
emits events and writes checkpoints. It starts ranks 1..N-1 as `python -m
trainer.distributed` processes (a worker is a daemonic multiprocessing child, which
multiprocessing forbids to have children of its own; torchrun starts its ranks the same
way), hands them the prepared run in a private directory, and all N meet through a
FileStore there, so no port is opened for the rendezvous. gloo on CPU, NCCL on GPUs.

Every global batch is the one-device run's batch, split in N contiguous parts, and each
rank's loss is weighted so that DDP's mean of the gradients is the gradient of the whole
batch's loss: N devices follow the one-device curve, up to the order of float sums (and,
with random transforms or dropout, each rank's own random stream).

The ranks agree before every backward pass (one all-reduce of two numbers): a non-finite
loss, or a part of the command failing, on any rank stops every rank at the same batch,
the way one process stops. Cancellation needs no agreement: rank 0 stops and kills the
others. A rank that dies takes the run with it: rank 0 exits, its trainer reports that
the process died, and the gateway runs the attempt again.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from trainer.loop import CommandFailed, Diverged

if TYPE_CHECKING:
    from trainer.run import Recipe

log = logging.getLogger(__name__)

# How long a rank waits for the others at the rendezvous or in one collective: the
# slowest step of a rank (a large batch on a slow device) must fit in it.
TIMEOUT = timedelta(minutes=10)
# Seconds the other ranks get to finish after rank 0 has, before they are killed.
_FINISH_SECONDS = 30.0
_RECIPE = "recipe.pt"


class Team:
    """This process's place among the N ranks of one run, and what they do together."""

    def __init__(self, rank: int, world: int, device: torch.device) -> None:
        self.rank = rank
        self.world = world
        self.device = device

    @property
    def leads(self) -> bool:
        return self.rank == 0

    def wrap(self, net: nn.Module) -> nn.Module:
        """The model whose backward pass averages the gradients of every rank."""
        if self.device.type == "cuda":
            # Batch statistics over the whole global batch, as on one device.
            net = nn.SyncBatchNorm.convert_sync_batchnorm(net)  # type: ignore[no-untyped-call]
            return DistributedDataParallel(net, device_ids=[self.device])
        return DistributedDataParallel(net)

    def share(
        self, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """This rank's part of a global batch and how many images it really holds. A
        last batch smaller than the team leaves some ranks none: they run the whole batch
        at weight 0, since every rank must take part in every backward pass."""
        part = images.tensor_split(self.world)[self.rank]
        part_labels = labels.tensor_split(self.world)[self.rank]
        if len(part_labels) == 0:
            return images, labels, 0
        return part, part_labels, len(part_labels)

    def weight(
        self, count: int, part: torch.Tensor, labels: torch.Tensor, criterion: nn.Module
    ) -> float:
        """What this rank's loss is multiplied by so that DDP's mean over the ranks of
        the gradients is the gradient of the global batch's loss: the rank's share of
        the batch's mean's denominator (every rank has the whole batch's labels)."""
        if not count:
            return 0.0
        if getattr(criterion, "reduction", "mean") == "sum":
            return float(self.world)
        whole = _denominator(criterion, labels)
        return self.world * _denominator(criterion, part) / whole if whole else 0.0

    def agree(self, batch: int, value: float, failure: CommandFailed | None) -> None:
        """Every rank raises what any rank met at this batch, or none does."""
        flags = torch.tensor(
            [float(failure is not None), float(not math.isfinite(value))], device=self.device
        )
        dist.all_reduce(flags)
        if flags[0].item():
            found: list[Any] = [None] * self.world
            mine = (failure.stage, str(failure.error)) if failure is not None else None
            dist.all_gather_object(found, mine)
            stage, message = next(f for f in found if f is not None)
            raise CommandFailed(stage, batch, RuntimeError(message))
        if flags[1].item():
            where = f"{value}" if not math.isfinite(value) else "not finite on another device"
            raise Diverged(f"the loss is {where} at batch {batch}")

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """`values` summed over every rank (float64, so counts stay exact)."""
        total = values.to(self.device, torch.float64)
        dist.all_reduce(total)
        return total.cpu()

    def from_leader(self, *flags: bool) -> list[bool]:
        """Rank 0's decisions (stop here, checkpoint now), the same on every rank."""
        values = torch.tensor([float(f) if self.leads else 0.0 for f in flags])
        return [bool(v) for v in self.sum(values)]

    def gather(self, value: Any) -> list[Any]:
        """Each rank's `value`, in rank order, on every rank."""
        found: list[Any] = [None] * self.world
        dist.all_gather_object(found, value)
        return found


def _denominator(criterion: nn.Module, labels: torch.Tensor) -> float:
    """What a "mean" loss divides by for these labels: the number of samples, or for
    CrossEntropyLoss and NLLLoss the sum of their class weights over the samples not
    ignored (`weight`, `ignore_index`)."""
    if isinstance(criterion, nn.CrossEntropyLoss | nn.NLLLoss):
        kept = labels[labels != criterion.ignore_index]
        weights = criterion.weight
        return float(weights[kept].sum()) if weights is not None else float(len(kept))
    return float(len(labels))


def backend(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


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
    from metalearn.errors import DomainError
    from trainer import run

    # Written by rank 0 into a directory only this user can write (see `lead`).
    recipe = torch.load(Path(run_dir) / _RECIPE, weights_only=False, mmap=True)
    team = _join(Path(run_dir), int(rank), int(world), torch.device(device))
    try:
        run.fit(recipe, team.device, lambda _: None, run.Signals.never(), team)
    except DomainError:
        pass  # every rank met it at the same batch: rank 0 reports it
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(_rank_main(sys.argv[1:]))
