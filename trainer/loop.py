"""One epoch of training and one pass of evaluation, returning numbers.

Modeled on pytorch/examples' mnist/main.py: plain loops over batches. `should_stop`
is polled before every batch, which is how a cancelled call stops within one batch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from trainer.failures import CommandFailed, Diverged, Stopped
from trainer.optim import Target
from trainer.transforms import BatchTransform, command_fault

if TYPE_CHECKING:
    from trainer.team import Team

__all__ = [
    "Batches",
    "CommandFailed",
    "Diverged",
    "EpochResult",
    "Evaluation",
    "Stopped",
    "TensorImages",
    "eval_batch_size",
    "evaluate",
    "loader",
    "train_one_epoch",
]


def _transformed(transform: BatchTransform, images: torch.Tensor, batch: int) -> torch.Tensor:
    try:
        return transform(images)
    except Exception as err:
        if not command_fault(err):
            raise
        raise CommandFailed("transform", batch, err) from err


def _failure(err: Exception, batch: int) -> CommandFailed:
    """What a rank of several met at a batch, as every rank will raise it."""
    return err if isinstance(err, CommandFailed) else CommandFailed("model", batch, err)


def _loss(criterion: nn.Module, scores: torch.Tensor, y: torch.Tensor, batch: int) -> Any:
    """The criterion's 0-d loss tensor (Any, as torch types a module's output)."""
    try:
        return criterion(scores, y)
    except Exception as err:
        if not command_fault(err):
            raise
        raise CommandFailed("criterion", batch, err) from err


@dataclass
class TensorImages:
    """Cached images (uint8, or floats once prepared) and their class indices."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])


class Batches:
    """A split's batches, each gathered by one indexing operation. The order is what a
    DataLoader over the same tensors gives with the same generator, without its per-batch
    work of turning indices into Python lists and back,
    which cost a small model 5 % of its epoch. Written out because no torch or
    torchvision class iterates tensors already in memory without that work."""

    def __init__(
        self,
        data: TensorImages,
        batch_size: int,
        *,
        shuffle: bool,
        generator: torch.Generator | None = None,
    ) -> None:
        if shuffle and generator is None:
            raise ValueError("shuffled batches need their generator")
        self.data = data
        self.batch_size = batch_size
        self.generator = generator if shuffle else None

    def __len__(self) -> int:
        return math.ceil(len(self.data) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n, size = len(self.data), self.batch_size
        images, labels = self.data.images, self.data.labels
        if self.generator is None:
            # A DataLoader without a generator drew its iterator's base seed from torch's
            # own; so do we, so that random transforms see the numbers they saw.
            torch.empty((), dtype=torch.int64).random_()
            for start in range(0, n, size):
                yield images[start : start + size], labels[start : start + size]
            return
        # Draws from the generator as a DataLoader does, so that a seed gives the batches
        # it gave when runs went through one: its iterator's base seed, the sampler's
        # permutation, and the empty permutation that ends the sampler's pass.
        torch.empty((), dtype=torch.int64).random_(generator=self.generator)
        order = torch.randperm(n, generator=self.generator)
        for start in range(0, n, size):
            index = order[start : start + size]
            yield images[index], labels[index]
        torch.randperm(n, generator=self.generator)


def loader(
    data: TensorImages, batch_size: int, *, shuffle: bool, generator: torch.Generator | None = None
) -> Batches:
    return Batches(data, batch_size, shuffle=shuffle, generator=generator)


# Float input of one validation forward pass, at most (when a training batch is smaller).
_EVAL_INPUT_BYTES = 8 * 1024 * 1024


def eval_batch_size(data: TensorImages, batch_size: int) -> int:
    """Images per validation pass: a training batch at least, and as many more as fit in
    `_EVAL_INPUT_BYTES` of float input. A small split is then one forward pass, so
    validating costs its arithmetic rather than a call per training batch (the digits'
    148 images: 1.3 ms instead of 2.3 ms, every epoch). In eval mode the batch does not
    change the results."""
    if not len(data):
        return batch_size
    per_image = max(1, data.images[0].numel() * 4)
    return max(batch_size, min(len(data), _EVAL_INPUT_BYTES // per_image))


@dataclass(frozen=True)
class EpochResult:
    loss: float
    samples: int
    seconds: float


@dataclass(frozen=True)
class Evaluation:
    loss: float
    accuracy: float
    samples: int
    # [true][predicted] counts.
    confusion: torch.Tensor


def _targets(labels: torch.Tensor, kind: Target, n_labels: int) -> torch.Tensor:
    if kind is Target.INDEX:
        return labels
    return nn.functional.one_hot(labels, n_labels).to(torch.float32)


def _sample_loss(value: float, criterion: nn.Module, batch: int) -> float:
    """The batch's summed loss, whatever the criterion's reduction."""
    return value if getattr(criterion, "reduction", "mean") == "sum" else value * batch


def train_one_epoch(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    transform: BatchTransform,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    target: Target,
    n_labels: int,
    should_stop: Callable[[], bool],
    after_batch: Callable[[], None] | None = None,
    team: Team | None = None,
) -> EpochResult:
    """A full pass over the training split; the loss is the mean over its samples.

    With a `team`, this rank trains on its part of every batch (`Team.share`) and the
    result is the whole team's."""
    model.train()
    start = time.perf_counter()
    total, samples = 0.0, 0
    for index, (images, labels) in enumerate(batches):
        if should_stop():
            raise Stopped
        weight, count = 1.0, len(labels)
        if team is not None:
            whole = labels
            images, labels, count = team.share(images, labels)
            weight = team.weight(count, labels, whole, criterion)
        failure: CommandFailed | None = None
        try:
            x = _transformed(transform, images, index + 1).to(device, non_blocking=True)
            y = _targets(labels, target, n_labels).to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            loss = _loss(criterion, model(x), y, index + 1)
            value = float(loss.item())  # one read serves the NaN check and the mean
        except Exception as err:
            if team is None:
                raise
            # Whatever one rank meets, every rank stops with (a model that cannot take
            # its part of a batch: BatchNorm given one image): never a rank's crash.
            failure, value = _failure(err, index + 1), 0.0
        if team is not None:  # every rank stops at this batch, or none does
            team.agree(index + 1, value, failure)
        if not math.isfinite(value):
            raise Diverged(f"the loss is {value} at batch {index + 1}")
        (loss if team is None else loss * weight).backward()
        optimizer.step()
        if after_batch is not None:
            after_batch()
        if count:
            total += _sample_loss(value, criterion, count)
        samples += count
    if team is not None:
        summed = team.sum(torch.tensor([total, samples]))
        total, samples = float(summed[0]), int(summed[1])
    return EpochResult(total / max(samples, 1), samples, time.perf_counter() - start)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    transform: BatchTransform,
    criterion: nn.Module,
    device: torch.device,
    target: Target,
    n_labels: int,
    should_stop: Callable[[], bool],
    on_batch: Callable[[int], None] | None = None,
    team: Team | None = None,
) -> Evaluation:
    """Loss, accuracy and confusion matrix over a split, without changing the model.

    With a `team`, this rank evaluates its part of every batch and the result is the
    whole team's."""
    model.eval()
    total, samples = 0.0, 0
    confusion = torch.zeros((n_labels, n_labels), dtype=torch.int64)
    for index, (images, labels) in enumerate(batches):
        if should_stop():
            raise Stopped
        count = len(labels)
        if team is not None:
            images, labels, count = team.share(images, labels)
        failure: CommandFailed | None = None
        if count:
            try:
                x = _transformed(transform, images, index + 1).to(device)
                scores = model(x)
                y = _targets(labels, target, n_labels).to(device)
                value = float(_loss(criterion, scores, y, index + 1).item())
            except Exception as err:
                if team is None:
                    raise
                failure = _failure(err, index + 1)
        if team is not None:
            team.agree(index + 1, 0.0, failure)  # every rank stops here, or none does
        if not count:
            continue
        total += _sample_loss(value, criterion, count)
        predicted = scores.argmax(dim=1).cpu()
        confusion += torch.bincount(
            labels * n_labels + predicted, minlength=n_labels * n_labels
        ).view(n_labels, n_labels)
        samples += count
        if on_batch is not None:
            on_batch(samples)
    if team is not None:
        summed = team.sum(torch.cat([torch.tensor([total, samples]), confusion.flatten()]))
        total, samples = float(summed[0]), int(summed[1])
        confusion = summed[2:].to(torch.int64).view(n_labels, n_labels)
    correct = int(confusion.diagonal().sum())
    loss = total / samples if samples else math.nan
    return Evaluation(loss, correct / samples if samples else 0.0, samples, confusion)
