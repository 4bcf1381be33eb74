"""One rank's training of a run, from its recipe: build, resume, the epochs, the outcome.

`fit` runs in the run's own worker process (rank 0, the only rank of a one-device run) and
in each `python -m trainer.distributed` process of a run on several devices; rank 0 alone
emits events and checkpoints.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

import torch
from google.protobuf import json_format
from torch import nn

from metalearn.errors import InvalidArgument
from metalearn.structs import plain_struct
from metalearn.v1 import attempt_pb2, trainer_service_pb2
from trainer import artifacts, checks, loop, model, optim
from trainer.data import TEST_FRACTION, VALIDATION_FRACTION
from trainer.recipe import Emit, Recipe, Signals
from trainer.team import Team, backend
from trainer.transforms import BatchTransform

pb = trainer_service_pb2


def _rng_state(generator: torch.Generator, device: torch.device) -> dict[str, torch.Tensor]:
    state = {"torch": torch.get_rng_state(), "loader": generator.get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(
    state: dict[str, torch.Tensor], generator: torch.Generator, device: torch.device
) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["loader"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def fit(
    recipe: Recipe,
    device: torch.device,
    emit: Emit,
    signals: Signals,
    team: Team | None = None,
    started_at: float | None = None,
) -> None:
    """Trains one rank of a run (the only one without `team`); rank 0 emits its events.

    In the order of a run: build the rank's model from the seed, resume it from the
    recipe's checkpoint, say that it started, train the epochs, then deliver the weights
    (a run that diverged or was interrupted has sent its outcome already)."""
    started_at = time.perf_counter() if started_at is None else started_at
    transforms = _transforms(recipe)
    rank = _build(recipe, device, team)
    first_epoch = _resume(rank, recipe.resume, device)
    trained = rank.net if team is None else team.wrap(rank.net)
    started = _started(recipe, rank.net, device, team, first_epoch)
    emit(pb.TrainerServiceTrainResponse(started=started))
    epochs = _Epochs(recipe, rank, trained, transforms, device, team, emit, signals, started_at)
    last = epochs.run(first_epoch)
    if last is not None and (team is None or team.leads):
        _deliver(recipe, rank.net, last, emit, started_at)


def _transforms(recipe: Recipe) -> tuple[BatchTransform, BatchTransform]:
    """The per-batch transforms of training and of evaluation (the latter without
    augmentation); none when the recipe's images were converted and normalized once
    already (`Recipe.prepared`), so that no batch pays for them again."""
    if recipe.prepared:
        identity = BatchTransform.identity()
        return identity, identity
    return (
        BatchTransform(recipe.pipeline),
        BatchTransform(recipe.pipeline.without_augmentation()),
    )


@dataclass(frozen=True)
class _Rank:
    """One rank's model and all that steps it."""

    net: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    criterion: nn.Module
    target: optim.Target
    # The training batches' order.
    generator: torch.Generator
    # The checkpoint's key for this rank's own torch stream: "" for rank 0, whose stream
    # is the checkpoint's "torch".
    rank_rng: str


def _build(recipe: Recipe, device: torch.device, team: Team | None) -> _Rank:
    """The rank's model, optimizer, scheduler and criterion, drawn in one fixed order
    from the command's seed: the same command and seed give the same initial weights and
    random streams, on any trainer, whatever runs beside it."""
    cmd = recipe.cmd
    _seed_everything(cmd.seed)
    net = model.build(recipe.spec).to(device)
    optimizer = optim.make_optimizer(recipe.optimizer, net.parameters())
    scheduler = optim.make_scheduler(recipe.scheduler, optimizer)
    criterion = optim.make_criterion(recipe.criterion).to(device)
    target = optim.target_kind(recipe.criterion)
    generator = torch.Generator().manual_seed(cmd.seed)
    rank_rng = f"torch_rank_{team.rank}" if team is not None and not team.leads else ""
    if team is not None and rank_rng:
        # Each rank its own stream for random transforms and dropout; the model's
        # initial weights are rank 0's (DDP hands them out).
        torch.manual_seed(cmd.seed + team.rank)
    return _Rank(net, optimizer, scheduler, criterion, target, generator, rank_rng)


def _resume(rank: _Rank, resume: artifacts.Checkpoint | None, device: torch.device) -> int:
    """The first epoch to train: 1, or the one after the checkpoint's, whose model,
    optimizer, scheduler and random streams (this rank's own too) are loaded first, so
    that a resumed run goes on as the run would have. INVALID_ARGUMENT for a checkpoint
    that does not fit this model."""
    if resume is None:
        return 1
    try:
        rank.net.load_state_dict(resume.model)
        rank.optimizer.load_state_dict(resume.optimizer)
        rank.scheduler.load_state_dict(resume.scheduler)
        _set_rng_state(resume.rng, rank.generator, device)
        if rank.rank_rng in resume.rng:
            torch.set_rng_state(resume.rng[rank.rank_rng])
            cuda_rng = rank.rank_rng.replace("torch_", "cuda_")
            if device.type == "cuda" and cuda_rng in resume.rng:
                torch.cuda.set_rng_state(resume.rng[cuda_rng], device)
    except Exception as err:  # a checkpoint of another shape of model
        raise InvalidArgument.one("resume_checkpoint", f"does not fit this model: {err}") from err
    return resume.epoch + 1


def _started(
    recipe: Recipe, net: nn.Module, device: torch.device, team: Team | None, first_epoch: int
) -> pb.TrainStarted:
    """What `started` says: the recipe's data, and what only the rank knows (its
    devices, the model's size, the epoch it starts from)."""
    started = pb.TrainStarted()
    started.CopyFrom(recipe.started)
    started.device = str(device)
    if team is not None:
        started.device = f"{team.world} x {device.type} ({backend(device)})"
    started.parameters = model.parameter_count(net)
    started.first_epoch = first_epoch
    return started


class _Epochs:
    """The epochs of one rank: train, validate, step the scheduler, report, then between
    two epochs stop or checkpoint. Every rank runs them in step (the team agrees at every
    batch and between epochs); rank 0's `emit` alone goes anywhere."""

    def __init__(
        self,
        recipe: Recipe,
        rank: _Rank,
        trained: nn.Module,
        transforms: tuple[BatchTransform, BatchTransform],
        device: torch.device,
        team: Team | None,
        emit: Emit,
        signals: Signals,
        started_at: float,
    ) -> None:
        self.recipe = recipe
        self.rank = rank
        # The model that trains: `rank.net`, or DDP's wrapper of it in a team.
        self.trained = trained
        self.transform, self.eval_transform = transforms
        self.device = device
        self.team = team
        self.emit = emit
        self.signals = signals
        self.started_at = started_at
        cmd = recipe.cmd
        self.train_batches = loop.loader(
            recipe.train_data, cmd.batch_size, shuffle=True, generator=rank.generator
        )
        self.val_batches = loop.loader(
            recipe.val_data, loop.eval_batch_size(recipe.val_data, cmd.batch_size), shuffle=False
        )
        self.last_checkpoint = time.monotonic()
        self.per_batch = optim.steps_per_batch(recipe.scheduler)

    def run(self, first_epoch: int) -> int | None:
        """Trains epochs `first_epoch`..n_epoch. The last epoch trained (`first_epoch` - 1
        when none was left), or None when the run ended early, diverged or interrupted,
        with its outcome sent."""
        n_epoch = self.recipe.cmd.n_epoch
        epoch = first_epoch - 1
        for epoch in range(first_epoch, n_epoch + 1):
            # The rate this epoch trains at (its first batch's), read before the scheduler
            # steps for the next epoch: epoch 6 of StepLR(5, 0.5) from 0.003 shows 0.0015.
            learning_rate = self.rank.optimizer.param_groups[0]["lr"]
            try:
                result = self._train(epoch)
            except loop.Diverged as err:
                self._finish(pb.TRAIN_OUTCOME_DIVERGED, f"epoch {epoch}: {err}", epoch - 1)
                return None
            evaluation = self._validate(epoch)
            self._step_scheduler(result, evaluation)
            self.emit(_metrics(epoch, learning_rate, result, evaluation))
            if epoch == n_epoch:
                break
            if self._interrupted_after(epoch):
                return None
        return epoch

    def _train(self, epoch: int) -> loop.EpochResult:
        """One pass over the training split; the command's own failure (its transform or
        loss refusing the data) becomes INVALID_ARGUMENT naming the epoch."""
        rank, recipe = self.rank, self.recipe
        try:
            return loop.train_one_epoch(
                self.trained, self.train_batches, self.transform, rank.criterion,
                rank.optimizer, self.device, rank.target, recipe.n_labels,
                self.signals.cancelled, rank.scheduler.step if self.per_batch else None,
                self.team,
            )  # fmt: skip
        except loop.CommandFailed as err:
            raise checks.command_error(
                err, recipe.pipeline, recipe.criterion, f"in epoch {epoch}"
            ) from err

    def _validate(self, epoch: int) -> loop.Evaluation | None:
        """The validation split's loss and accuracy, None when the split is empty."""
        rank, recipe = self.rank, self.recipe
        if not len(recipe.val_data):
            return None
        try:
            return loop.evaluate(
                rank.net, self.val_batches, self.eval_transform, rank.criterion, self.device,
                rank.target, recipe.n_labels, self.signals.cancelled, team=self.team,
            )  # fmt: skip
        except loop.CommandFailed as err:
            where = f"validating epoch {epoch}"
            raise checks.command_error(err, recipe.pipeline, recipe.criterion, where) from err

    def _step_scheduler(self, result: loop.EpochResult, evaluation: loop.Evaluation | None) -> None:
        """A scheduler that steps per epoch steps now (ReduceLROnPlateau on the epoch's
        validation loss, or its training loss without a validation split); one that steps
        per batch has stepped in the epoch."""
        if self.per_batch:
            return
        scheduler = self.rank.scheduler
        if self.recipe.scheduler.name == "ReduceLROnPlateau":
            scheduler.step(evaluation.loss if evaluation else result.loss)
        else:
            scheduler.step()

    def _interrupted_after(self, epoch: int) -> bool:
        """Between two epochs: whether the trainer's stopping ends the run here (with a
        checkpoint to resume from, and its outcome sent), else a checkpoint if one is due
        (every `every_epochs` epochs, or `every_seconds` after the last). Rank 0 decides;
        every rank of a team follows it."""
        recipe = self.recipe
        interrupted = self.signals.interrupted()
        due = (
            epoch % recipe.every_epochs == 0
            or time.monotonic() - self.last_checkpoint >= recipe.every_seconds
        )
        if self.team is not None:
            interrupted, due = self.team.from_leader(interrupted, due)
        if interrupted:
            self._checkpoint(epoch)
            self._finish(pb.TRAIN_OUTCOME_INTERRUPTED, "the trainer is stopping", epoch)
            return True
        if due:
            self._checkpoint(epoch)
            self.last_checkpoint = time.monotonic()
        return False

    def _checkpoint(self, epoch: int) -> None:
        """Sends a checkpoint of the end of `epoch` in chunks: the model, optimizer,
        scheduler and every rank's random streams, so that each rank resumes its own.
        Every rank of a team takes part (they gather the streams); rank 0 sends it."""
        rank, device, team = self.rank, self.device, self.team
        rng = _rng_state(rank.generator, device)
        if team is not None:  # every rank's streams, so that each resumes its own
            cuda = device.type == "cuda"
            mine = (torch.get_rng_state(), torch.cuda.get_rng_state(device) if cuda else None)
            for other, (state, cuda_state) in enumerate(team.gather(mine)):
                if other:
                    rng[f"torch_rank_{other}"] = state
                    if cuda_state is not None:
                        rng[f"cuda_rank_{other}"] = cuda_state
        if team is not None and not team.leads:
            return
        data = artifacts.checkpoint_bytes(
            artifacts.Checkpoint(
                epoch=epoch, command_fingerprint=self.recipe.fingerprint,
                model=rank.net.state_dict(), optimizer=rank.optimizer.state_dict(),
                scheduler=rank.scheduler.state_dict(), rng=rng, best_metrics={},
            )
        )  # fmt: skip
        for chunk in artifacts.chunks(data, epoch, self.recipe.chunk_bytes):
            self.emit(pb.TrainerServiceTrainResponse(checkpoint=chunk))

    def _finish(self, outcome: int, reason: str, epochs: int) -> None:
        self.emit(_finished(outcome, reason, epochs, self.started_at))


def _metrics(
    epoch: int,
    learning_rate: float,
    result: loop.EpochResult,
    evaluation: loop.Evaluation | None,
) -> pb.TrainerServiceTrainResponse:
    """An epoch's event: its training loss and speed, and its validation numbers (zero
    without a validation split)."""
    return pb.TrainerServiceTrainResponse(
        epoch=attempt_pb2.EpochMetrics(
            epoch=epoch,
            loss=result.loss,
            learning_rate=learning_rate,
            seconds=result.seconds,
            samples_per_second=result.samples / max(result.seconds, 1e-9),
            val_loss=evaluation.loss if evaluation else 0.0,
            val_accuracy=evaluation.accuracy if evaluation else 0.0,
        )
    )


def _deliver(recipe: Recipe, net: nn.Module, epochs: int, emit: Emit, started_at: float) -> None:
    """Rank 0's end of a completed run: the weights in chunks, stored with the spec that
    rebuilds the model and its preprocessing, then COMPLETED."""
    cmd = recipe.cmd
    spec_json = {
        "model": recipe.spec.to_json(),
        "label_names": list(cmd.label_names),
        "image_ops": [json_format.MessageToDict(op) for op in cmd.image_ops],
        "transform": plain_struct(cmd.transform),
        "seed": cmd.seed,
        "test_fraction": TEST_FRACTION,
        "validation_fraction": VALIDATION_FRACTION,
        "epochs": epochs,
    }
    weights = artifacts.weights_bytes(net.state_dict(), spec_json)
    for chunk in artifacts.chunks(weights, epochs, recipe.chunk_bytes):
        emit(pb.TrainerServiceTrainResponse(weights=chunk))
    emit(_finished(pb.TRAIN_OUTCOME_COMPLETED, "", epochs, started_at))


def _finished(
    outcome: int, reason: str, epochs: int, started_at: float
) -> pb.TrainerServiceTrainResponse:
    return pb.TrainerServiceTrainResponse(
        finished=pb.TrainFinished(
            outcome=outcome,  # type: ignore[arg-type]
            reason=reason,
            epochs=epochs,
            seconds=time.perf_counter() - started_at,
        )
    )
