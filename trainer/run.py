"""One Train call, start to finish: check the command, load data, run, emit events.

This runs in a worker process of its own (see `trainer.workers`), so a run owns torch's
global random state (same command + seed + data -> the same losses, whatever runs beside
it) and its memory is returned when it ends. `emit` sends one response message upstream.
What is trained, once checked and prepared, is a `trainer.recipe.Recipe`; the training
itself is `trainer.fitting.fit`, on one device or on each rank of several.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import torch

from metalearn import vocabulary
from metalearn.errors import FailedPrecondition, InvalidArgument, ResourceExhausted, Violations
from metalearn.structs import plain_struct
from metalearn.v1 import attempt_pb2, dataset_service_pb2, trainer_service_pb2
from trainer import artifacts, checks, distributed, loop, model, optim, run_files
from trainer.config import Limits, TrainerConfig
from trainer.data import ImageRef, ImageSource, Preprocessor, Tensors, in_validation
from trainer.fitting import fit
from trainer.recipe import Emit, Recipe, Signals
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
    for); raises a DomainError for a bad command or missing data.

    In the order of a call: the command's checks (while the gateway lists the images),
    the images loaded and split, the checks that need them, the recipe, the training."""
    started_at = time.perf_counter()
    cmd = request.command
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
    data = _load(source, config, cmd, listing.result(), checked.pipeline)
    spec, scheduler = _checks_with_images(cmd, checked, data, config.limits)
    prepared = _prepare(checked.pipeline, data, config.limits)
    recipe = Recipe(
        cmd=cmd, resume=checked.resume, fingerprint=checked.fingerprint, spec=spec,
        pipeline=checked.pipeline, criterion=checked.criterion, optimizer=checked.optimizer,
        scheduler=scheduler, n_labels=checked.n_labels, train_data=data.train,
        val_data=data.validation, prepared=prepared, started=_started(labels, data),
        every_epochs=request.checkpoint_every_epochs or config.checkpoint_every_epochs,
        every_seconds=request.checkpoint_every_seconds or config.checkpoint_every_seconds,
        chunk_bytes=config.chunk_bytes,
    )  # fmt: skip
    _fit_on(recipe, checked.devices, emit, signals, started_at)


@dataclass(frozen=True)
class _Data:
    """A run's images, loaded and split."""

    tensors: Tensors
    train: loop.TensorImages
    validation: loop.TensorImages
    # Training images (validation included) of each label.
    counts: dict[str, int]


def _load(
    source: ImageSource,
    config: TrainerConfig,
    cmd: attempt_pb2.TrainCommand,
    refs: list[ImageRef],
    pipeline: Pipeline,
) -> _Data:
    """The listed images, preprocessed (from the cache when it has them) and split into
    training and validation by each image's content and the seed, so that the split of a
    dataset never depends on the order of its listing; FAILED_PRECONDITION for a label
    without images."""
    limits = config.limits
    labels = list(cmd.label_names)
    counts = {label: 0 for label in labels}
    for ref in refs:
        counts[ref.label] += 1
    empty = [label for label, count in counts.items() if count == 0]
    if empty:
        raise FailedPrecondition(f"no training images for labels {empty}: upload some first")
    preprocessor = Preprocessor(
        source,
        config.cache_dir,
        limits.max_data_bytes,
        limits.max_input_pixels,
        cache_max_bytes=config.cache_max_bytes,
    )
    refs = sorted(refs, key=lambda r: (labels.index(r.label), r.sha256, r.id))
    tensors = preprocessor.tensors(refs, labels, cmd.image_ops, pipeline)
    held_out = torch.tensor([in_validation(r.sha256, cmd.seed) for r in refs])
    if held_out.all():
        held_out[0] = False  # a label of one image still trains
    train_data = loop.TensorImages(tensors.images[~held_out], tensors.labels[~held_out])
    val_data = loop.TensorImages(tensors.images[held_out], tensors.labels[held_out])
    return _Data(tensors, train_data, val_data, counts)


def _checks_with_images(
    cmd: attempt_pb2.TrainCommand, checked: Checked, data: _Data, limits: Limits
) -> tuple[model.ModelSpec, optim.Named]:
    """The checks that need the images' shape and number: the model resolved against
    them, the transform's channels, the augmentation, the scheduler's steps, and the
    transform tried on one image. INVALID_ARGUMENT naming each offending field."""
    tensors, pipeline = data.tensors, checked.pipeline
    v = Violations()
    spec = model.resolve(
        v, "command.model", cmd.model, tensors.input_shape, checked.n_labels,
        limits.max_parameters,
    )  # fmt: skip
    _check_channels(v, "command.transform", pipeline, tensors.input_shape[0])
    if spec is not None:
        checks.augmentation(v, spec, pipeline, tensors.input_shape, limits)
    steps = math.ceil(len(data.train) / cmd.batch_size)
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
    return spec, scheduler_spec


def _prepare(pipeline: Pipeline, data: _Data, limits: Limits) -> bool:
    """Whether the images were converted and normalized once, here, rather than every
    batch: when the pipeline has nothing random and nothing after Normalize, and the
    images as floats fit in the data limit."""
    prepared = (
        not pipeline.random
        and not pipeline.after_normalize
        and (data.tensors.images.numel() * 4 <= limits.max_data_bytes)
    )
    if prepared:
        # Nothing random: convert and normalize every image once, not every batch.
        transform = BatchTransform(pipeline)
        data.train.images = transform(data.train.images)
        data.validation.images = transform(data.validation.images)
    return prepared


def _started(labels: list[str], data: _Data) -> pb.TrainStarted:
    """What `started` says of the data (each rank adds its model and devices)."""
    tensors = data.tensors
    return pb.TrainStarted(
        train_images=len(data.train), validation_images=len(data.validation),
        input_shape=list(tensors.input_shape), cache_hit=tensors.cache_hit,
        dataset=attempt_pb2.DatasetFingerprint(
            label_names=labels,
            images_per_label=[data.counts[label] for label in labels],
            validation_images_per_label=torch.bincount(
                data.validation.labels, minlength=len(labels)
            ).tolist(),
            image_size=list(tensors.input_shape[1:]),
            sha256=tensors.fingerprint,
        ),
    )  # fmt: skip


def _fit_on(
    recipe: Recipe,
    devices: list[torch.device],
    emit: Emit,
    signals: Signals,
    started_at: float,
) -> None:
    """Trains the recipe on one device in this process, or on several as rank 0 of a
    team whose other ranks `distributed.lead` starts (sharing this machine's cores when
    they are CPUs)."""
    if len(devices) == 1:
        fit(recipe, devices[0], emit, signals, started_at=started_at)
        return
    threads = max(1, torch.get_num_threads() // len(devices))
    if devices[0].type == "cpu":
        torch.set_num_threads(threads)  # the ranks share this machine's cores
    with distributed.lead(recipe, devices, threads) as team:
        fit(recipe, devices[0], emit, signals, team, started_at)


__all__ = [
    "BatchTransform",
    "Emit",
    "ImageRef",
    "Recipe",
    "Signals",
    "command_fingerprint",
    "device_for",
    "fit",
    "train",
]
