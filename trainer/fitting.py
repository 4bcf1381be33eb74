"""One rank's training of a run, from its recipe: build, resume, the epochs, the outcome.

`fit` runs in the run's own worker process (rank 0, the only rank of a one-device run) and
in each `python -m trainer.distributed` process of a run on several devices; rank 0 alone
emits events and checkpoints.
"""

from __future__ import annotations

import random
import time

import torch
from google.protobuf import json_format

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
    """Trains one rank of a run (the only one without `team`); rank 0 emits its events."""
    started_at = time.perf_counter() if started_at is None else started_at
    cmd = recipe.cmd
    leads = team is None or team.leads
    if recipe.prepared:
        transform = eval_transform = BatchTransform.identity()
    else:
        transform = BatchTransform(recipe.pipeline)
        eval_transform = BatchTransform(recipe.pipeline.without_augmentation())
    _seed_everything(cmd.seed)
    net = model.build(recipe.spec).to(device)
    optimizer = optim.make_optimizer(recipe.optimizer, net.parameters())
    scheduler = optim.make_scheduler(recipe.scheduler, optimizer)
    criterion = optim.make_criterion(recipe.criterion).to(device)
    target = optim.target_kind(recipe.criterion)
    generator = torch.Generator().manual_seed(cmd.seed)
    rank_rng = f"torch_rank_{team.rank}" if team is not None and not team.leads else ""
    if rank_rng:
        # Each rank its own stream for random transforms and dropout; the model's
        # initial weights are rank 0's (DDP hands them out).
        torch.manual_seed(cmd.seed + team.rank)  # type: ignore[union-attr]
    first_epoch = 1
    resume = recipe.resume
    if resume is not None:
        try:
            net.load_state_dict(resume.model)
            optimizer.load_state_dict(resume.optimizer)
            scheduler.load_state_dict(resume.scheduler)
            _set_rng_state(resume.rng, generator, device)
            if rank_rng in resume.rng:
                torch.set_rng_state(resume.rng[rank_rng])
                cuda_rng = rank_rng.replace("torch_", "cuda_")
                if device.type == "cuda" and cuda_rng in resume.rng:
                    torch.cuda.set_rng_state(resume.rng[cuda_rng], device)
        except Exception as err:  # a checkpoint of another shape of model
            raise InvalidArgument.one(
                "resume_checkpoint", f"does not fit this model: {err}"
            ) from err
        first_epoch = resume.epoch + 1
    trained = net if team is None else team.wrap(net)

    started = pb.TrainStarted()
    started.CopyFrom(recipe.started)
    started.device = str(device)
    if team is not None:
        started.device = f"{team.world} x {device.type} ({backend(device)})"
    started.parameters = model.parameter_count(net)
    started.first_epoch = first_epoch
    emit(pb.TrainerServiceTrainResponse(started=started))

    train_data, val_data = recipe.train_data, recipe.val_data
    train_batches = loop.loader(train_data, cmd.batch_size, shuffle=True, generator=generator)
    val_batches = loop.loader(
        val_data, loop.eval_batch_size(val_data, cmd.batch_size), shuffle=False
    )
    last_checkpoint = time.monotonic()
    per_batch = optim.steps_per_batch(recipe.scheduler)

    def checkpoint(epoch: int) -> None:
        rng = _rng_state(generator, device)
        if team is not None:  # every rank's streams, so that each resumes its own
            cuda = device.type == "cuda"
            mine = (torch.get_rng_state(), torch.cuda.get_rng_state(device) if cuda else None)
            for rank, (state, cuda_state) in enumerate(team.gather(mine)):
                if rank:
                    rng[f"torch_rank_{rank}"] = state
                    if cuda_state is not None:
                        rng[f"cuda_rank_{rank}"] = cuda_state
        if not leads:
            return
        data = artifacts.checkpoint_bytes(
            artifacts.Checkpoint(
                epoch=epoch, command_fingerprint=recipe.fingerprint, model=net.state_dict(),
                optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                rng=rng, best_metrics={},
            )
        )  # fmt: skip
        for chunk in artifacts.chunks(data, epoch, recipe.chunk_bytes):
            emit(pb.TrainerServiceTrainResponse(checkpoint=chunk))

    epoch = first_epoch - 1
    for epoch in range(first_epoch, cmd.n_epoch + 1):
        # The rate this epoch trains at (its first batch's), read before the scheduler
        # steps for the next epoch: epoch 6 of StepLR(5, 0.5) from 0.003 shows 0.0015.
        learning_rate = optimizer.param_groups[0]["lr"]
        try:
            result = loop.train_one_epoch(
                trained, train_batches, transform, criterion, optimizer, device, target,
                recipe.n_labels, signals.cancelled, scheduler.step if per_batch else None, team,
            )  # fmt: skip
        except loop.Diverged as err:
            emit(
                _finished(pb.TRAIN_OUTCOME_DIVERGED, f"epoch {epoch}: {err}", epoch - 1, started_at)
            )
            return
        except loop.CommandFailed as err:
            raise checks.command_error(
                err, recipe.pipeline, recipe.criterion, f"in epoch {epoch}"
            ) from err
        try:
            evaluation = (
                loop.evaluate(
                    net, val_batches, eval_transform, criterion, device, target,
                    recipe.n_labels, signals.cancelled, team=team,
                )
                if len(val_data)
                else None
            )  # fmt: skip
        except loop.CommandFailed as err:
            where = f"validating epoch {epoch}"
            raise checks.command_error(err, recipe.pipeline, recipe.criterion, where) from err
        if not per_batch:
            if recipe.scheduler.name == "ReduceLROnPlateau":
                scheduler.step(evaluation.loss if evaluation else result.loss)
            else:
                scheduler.step()
        emit(
            pb.TrainerServiceTrainResponse(
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
        )
        if epoch == cmd.n_epoch:
            break
        interrupted = signals.interrupted()
        due = (
            epoch % recipe.every_epochs == 0
            or time.monotonic() - last_checkpoint >= recipe.every_seconds
        )
        if team is not None:
            interrupted, due = team.from_leader(interrupted, due)
        if interrupted:
            checkpoint(epoch)
            emit(
                _finished(
                    pb.TRAIN_OUTCOME_INTERRUPTED, "the trainer is stopping", epoch, started_at
                )
            )
            return
        if due:
            checkpoint(epoch)
            last_checkpoint = time.monotonic()

    if not leads:
        return
    spec_json = {
        "model": recipe.spec.to_json(),
        "label_names": list(cmd.label_names),
        "image_ops": [json_format.MessageToDict(op) for op in cmd.image_ops],
        "transform": plain_struct(cmd.transform),
        "seed": cmd.seed,
        "test_fraction": TEST_FRACTION,
        "validation_fraction": VALIDATION_FRACTION,
        "epochs": epoch,
    }
    weights = artifacts.weights_bytes(net.state_dict(), spec_json)
    for chunk in artifacts.chunks(weights, epoch, recipe.chunk_bytes):
        emit(pb.TrainerServiceTrainResponse(weights=chunk))
    emit(_finished(pb.TRAIN_OUTCOME_COMPLETED, "", epoch, started_at))


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
