"""One Train or Test call, start to finish: check the command, load data, run, emit events.

This runs in a worker process of its own (see `trainer.workers`), so a run owns torch's
global random state (same command + seed + data -> the same losses, whatever runs beside
it) and its memory is returned when it ends. `emit` sends one response message upstream.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import torch
from google.protobuf import json_format

from metalearn import vocabulary
from metalearn.errors import FailedPrecondition, InvalidArgument, ResourceExhausted, Violations
from metalearn.structs import plain_struct
from metalearn.v1 import attempt_pb2, dataset_service_pb2, trainer_service_pb2
from trainer import artifacts, checks, distributed, loop, model, optim, run_files
from trainer.config import TrainerConfig
from trainer.data import (
    TEST_FRACTION,
    VALIDATION_FRACTION,
    ImageRef,
    ImageSource,
    Preprocessor,
    in_validation,
)
from trainer.transforms import (
    BatchTransform,
    Pipeline,
    check_image_ops,
    check_pipeline,
    check_sizes,
    command_fault,
)

log = logging.getLogger(__name__)
pb = trainer_service_pb2
Emit = Callable[[Any], None]


@dataclass(frozen=True)
class Signals:
    """How the parent process talks to a run: cancel now, or stop after this epoch."""

    cancelled: Callable[[], bool]
    interrupted: Callable[[], bool]

    @staticmethod
    def never() -> Signals:
        """For a rank other than 0: rank 0 alone hears the trainer (see `distributed`)."""
        return Signals(cancelled=_no, interrupted=_no)


def _no() -> bool:
    return False


def device_for(config: TrainerConfig, slot: int) -> torch.device:
    """CUDA when present (slot i on device i mod count), else CPU."""
    if config.device == "cpu" or (config.device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise FailedPrecondition("this trainer was told to use CUDA but has no CUDA device")
    return torch.device(f"cuda:{slot % torch.cuda.device_count()}")


def devices_for(config: TrainerConfig, slots: Sequence[int], count: int) -> list[torch.device]:
    """The devices of a run on `count` devices, one per slot it was given: distinct
    GPUs (NCCL takes one device per rank), or the CPU for each."""
    if len(slots) != count:
        raise InvalidArgument.one(
            "command.devices", f"asks for {count} devices; this run was given {len(slots)} slots"
        )
    devices = [device_for(config, slot) for slot in slots]
    if devices[0].type == "cuda" and len(set(devices)) < count:
        # Its free slots share GPUs now: another trainer, or this one later, can run it.
        raise ResourceExhausted(
            f"this trainer's free slots are on fewer than {count} distinct CUDA devices"
        )
    return devices


def command_fingerprint(command: attempt_pb2.TrainCommand) -> str:
    """What must match for a checkpoint to resume a run: everything but the epoch count."""
    same = attempt_pb2.TrainCommand()
    same.CopyFrom(command)
    same.ClearField("n_epoch")
    same.ClearField("model_name")
    return hashlib.sha256(same.SerializeToString(deterministic=True)).hexdigest()


def _check_target_transform(v: Violations, path: str, command: Any) -> None:
    for name in plain_struct(command.target_transform):
        if name not in vocabulary.TARGET_TRANSFORMS:
            v.add(f"{path}.{name}", f"unknown; allowed: {sorted(vocabulary.TARGET_TRANSFORMS)}")


def _check_channels(v: Violations, path: str, pipeline: Pipeline, channels: int) -> None:
    if pipeline.normalize is None:
        return
    for key in ("mean", "std"):
        values = pipeline.normalize.get(key)
        if not isinstance(values, list) or len(values) not in (1, channels):
            v.add(
                f"{path}.Normalize.{key}",
                f"give 1 or {channels} values (the images have {channels} channels)",
            )
        elif key == "std" and any(not isinstance(s, (int, float)) or s == 0 for s in values):
            v.add(f"{path}.Normalize.std", "must be non-zero numbers")


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


@dataclass(frozen=True)
class Recipe:
    """A checked command resolved against its prepared data: all a rank needs to train
    (rank 0 pickles it for the others, see `trainer.distributed`)."""

    cmd: attempt_pb2.TrainCommand
    resume: artifacts.Checkpoint | None
    fingerprint: str
    spec: model.ModelSpec
    pipeline: Pipeline
    criterion: optim.Named
    optimizer: optim.Named
    scheduler: optim.Named
    n_labels: int
    train_data: loop.TensorImages
    val_data: loop.TensorImages
    # The images are already converted and normalized: no transform runs per batch.
    prepared: bool
    # What `started` says, less what the model and devices add.
    started: pb.TrainStarted
    every_epochs: int
    every_seconds: float
    chunk_bytes: int


@dataclass(frozen=True)
class Checked:
    """What the checks of a Train request made of it."""

    n_labels: int
    pipeline: Pipeline
    criterion: optim.Named
    optimizer: optim.Named
    resume: artifacts.Checkpoint | None
    fingerprint: str
    devices: list[torch.device]


def _checks(
    request: pb.TrainerServiceTrainRequest,
    config: TrainerConfig,
    slots: Sequence[int],
    labels: list[str],
    channel: grpc.Channel,
) -> Checked:
    """Every check of a Train request that needs no images; INVALID_ARGUMENT naming each
    offending field, RESOURCE_EXHAUSTED for busy devices."""
    cmd = request.command
    limits = config.limits
    v = Violations()
    n_labels = checks.labels(v, "command", labels, cmd.n_labels, limits.max_labels)
    if not 1 <= cmd.batch_size <= limits.max_batch_size:
        v.add("command.batch_size", f"must be between 1 and {limits.max_batch_size}")
    if not 0 <= cmd.devices <= limits.max_devices:
        v.add("command.devices", f"must be between 0 and {limits.max_devices}")
    elif cmd.devices > 1 and cmd.batch_size < cmd.devices:
        v.add("command.batch_size", f"give each of the {cmd.devices} devices an image")
    if not 1 <= cmd.n_epoch <= limits.max_epochs:
        v.add("command.n_epoch", f"must be between 1 and {limits.max_epochs}")
    if len(cmd.model.layers) > limits.max_layers:
        v.add("command.model.layers", f"at most {limits.max_layers} layers")
    if request.checkpoint_every_epochs < 0 or not request.checkpoint_every_seconds >= 0:
        v.add("checkpoint_every_epochs", "must not be negative")
    check_image_ops(v, "command.image_ops", cmd.image_ops, limits)
    pipeline = check_pipeline(v, "command.transform", cmd.transform)
    if pipeline is not None:
        check_sizes(v, "command.image_ops", cmd.image_ops, pipeline, limits.max_input_pixels)
    _check_target_transform(v, "command.target_transform", cmd)
    criterion_spec = optim.check_criterion(v, "command.criterion", cmd.criterion)
    if criterion_spec is not None and 1 <= n_labels <= limits.max_labels:
        optim.check_criterion_for(v, "command.criterion", criterion_spec, n_labels)
    optimizer_spec = optim.check_optimizer(v, "command.optimizer", cmd.optimizer)
    resume: artifacts.Checkpoint | None = None
    fingerprint = command_fingerprint(cmd)
    # A command refused already does not need its checkpoint read (up to gigabytes).
    if request.HasField("resume_checkpoint") and not v.items:
        # Read from the gateway and checked against its size and sha256 first.
        data = run_files.read(
            channel, request.resume_checkpoint, "resume_checkpoint", config.gateway_deadline_seconds
        )
        resume = artifacts.read_checkpoint(data)
        del data
        if resume.command_fingerprint != fingerprint:
            v.add("resume_checkpoint", "was made by a different command")
        elif not 0 <= resume.epoch <= cmd.n_epoch:
            # Its epochs would be streamed as the run's: only 1..n_epoch exist.
            v.add(
                "resume_checkpoint",
                f"is of epoch {resume.epoch}; the command has epochs 0 to {cmd.n_epoch}",
            )
    v.raise_if_any()
    assert pipeline is not None and criterion_spec is not None and optimizer_spec is not None
    return Checked(
        n_labels, pipeline, criterion_spec, optimizer_spec, resume, fingerprint,
        devices_for(config, slots, max(1, cmd.devices)),
    )  # fmt: skip


def train(
    request: pb.TrainerServiceTrainRequest,
    config: TrainerConfig,
    channel: grpc.Channel,
    slots: Sequence[int],
    emit: Emit,
    signals: Signals,
) -> None:
    """Runs a Train call on the devices of `slots` (one per device the command asks
    for); raises a DomainError for a bad command or missing data."""
    started_at = time.perf_counter()
    cmd = request.command
    limits = config.limits
    labels = list(cmd.label_names)
    # Data: the gateway's train split, less the validation part. Asked before the checks
    # and read after them: the gateway lists while this process checks (a listing of a
    # command that fails them is dropped).
    source = ImageSource(channel, config.gateway_deadline_seconds)
    listing = source.listing(labels, dataset_service_pb2.SPLIT_TRAIN, cmd.seed)
    try:
        checked = _checks(request, config, slots, labels, channel)
    except BaseException:
        listing.cancel()
        raise
    refs = listing.result()
    n_labels, pipeline = checked.n_labels, checked.pipeline
    resume, fingerprint, devices = checked.resume, checked.fingerprint, checked.devices
    counts = {label: 0 for label in labels}
    for ref in refs:
        counts[ref.label] += 1
    empty = [label for label, count in counts.items() if count == 0]
    if empty:
        raise FailedPrecondition(f"no training images for labels {empty}: upload some first")
    preprocessor = Preprocessor(
        source, config.cache_dir, limits.max_data_bytes, limits.max_input_pixels
    )
    refs = sorted(refs, key=lambda r: (labels.index(r.label), r.sha256, r.id))
    tensors = preprocessor.tensors(refs, labels, cmd.image_ops, pipeline)
    held_out = torch.tensor([in_validation(r.sha256, cmd.seed) for r in refs])
    if held_out.all():
        held_out[0] = False  # a label of one image still trains
    train_data = loop.TensorImages(tensors.images[~held_out], tensors.labels[~held_out])
    val_data = loop.TensorImages(tensors.images[held_out], tensors.labels[held_out])

    v = Violations()
    spec = model.resolve(
        v, "command.model", cmd.model, tensors.input_shape, n_labels, limits.max_parameters
    )
    _check_channels(v, "command.transform", pipeline, tensors.input_shape[0])
    if spec is not None:
        checks.augmentation(v, spec, pipeline, tensors.input_shape, limits)
    steps = math.ceil(len(train_data) / cmd.batch_size)
    scheduler_spec = optim.check_scheduler(
        v, "command.scheduler", cmd.scheduler, cmd.n_epoch, steps
    )
    v.raise_if_any()
    assert spec is not None and scheduler_spec is not None
    try:
        BatchTransform(pipeline)(tensors.images[:1])
    except Exception as err:  # e.g. ColorJitter's hue on one channel
        if not command_fault(err):
            raise
        raise InvalidArgument.one(
            "command.transform", f"cannot transform these images: {err}"
        ) from err
    prepared = (
        not pipeline.random
        and not pipeline.after_normalize
        and (tensors.images.numel() * 4 <= limits.max_data_bytes)
    )
    if prepared:
        # Nothing random: convert and normalize every image once, not every batch.
        transform = BatchTransform(pipeline)
        train_data.images = transform(train_data.images)
        val_data.images = transform(val_data.images)

    recipe = Recipe(
        cmd=cmd, resume=resume, fingerprint=fingerprint, spec=spec, pipeline=pipeline,
        criterion=checked.criterion, optimizer=checked.optimizer, scheduler=scheduler_spec,
        n_labels=n_labels, train_data=train_data, val_data=val_data, prepared=prepared,
        started=pb.TrainStarted(
            train_images=len(train_data), validation_images=len(val_data),
            input_shape=list(tensors.input_shape), cache_hit=tensors.cache_hit,
            dataset=attempt_pb2.DatasetFingerprint(
                label_names=labels,
                images_per_label=[counts[label] for label in labels],
                image_size=list(tensors.input_shape[1:]),
                sha256=tensors.fingerprint,
            ),
        ),
        every_epochs=request.checkpoint_every_epochs or config.checkpoint_every_epochs,
        every_seconds=request.checkpoint_every_seconds or config.checkpoint_every_seconds,
        chunk_bytes=config.chunk_bytes,
    )  # fmt: skip
    if len(devices) == 1:
        fit(recipe, devices[0], emit, signals, started_at=started_at)
        return
    threads = max(1, torch.get_num_threads() // len(devices))
    if devices[0].type == "cpu":
        torch.set_num_threads(threads)  # the ranks share this machine's cores
    with distributed.lead(recipe, devices, threads) as team:
        fit(recipe, devices[0], emit, signals, team, started_at)


def fit(
    recipe: Recipe,
    device: torch.device,
    emit: Emit,
    signals: Signals,
    team: distributed.Team | None = None,
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
        started.device = f"{team.world} x {device.type} ({distributed.backend(device)})"
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


__all__ = ["ImageRef", "Recipe", "Signals", "command_fingerprint", "device_for", "fit", "train"]
