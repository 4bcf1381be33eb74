"""What the ranks of one run do together: share a batch, weight a loss, agree, sum.

`Team` is this process's place among the N ranks of a run on several devices (see
`trainer.distributed`, which starts them). Every global batch is the one-device run's
batch, split in N contiguous parts, and each rank's loss is weighted so that DDP's mean
of the gradients is the gradient of the whole batch's loss: N devices follow the
one-device curve, up to the order of float sums (and, with random transforms or
dropout, each rank's own random stream).

The ranks agree before every backward pass (one all-reduce of two numbers): a non-finite
loss, or a part of the command failing, on any rank stops every rank at the same batch,
the way one process stops.

A module of its own, below both `trainer.loop` (which trains a rank's part of a batch
with it) and `trainer.distributed` (which starts the ranks and makes their team), so that
neither imports the other.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from trainer.failures import CommandFailed, Diverged


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
