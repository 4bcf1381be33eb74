"""One Test call, start to finish: trained weights on the test split (or given ids).

Runs in a worker process of its own, like a training run (see `trainer.run`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import grpc
import torch
from google.protobuf import json_format, struct_pb2
from torch import nn

from metalearn.errors import FailedPrecondition, FieldViolation, InvalidArgument, Violations
from metalearn.v1 import attempt_pb2, dataset_service_pb2, trainer_service_pb2
from trainer import artifacts, checks, loop, model, optim, run_files
from trainer.config import Limits, TrainerConfig
from trainer.data import ImageSource, Preprocessor, Tensors
from trainer.recipe import Emit, Signals
from trainer.run import device_for
from trainer.transforms import (
    BatchTransform,
    Pipeline,
    check_image_ops,
    check_pipeline,
    check_sizes,
)

pb = trainer_service_pb2
_INT64 = 2**63
_WEIGHTS = "weights"
# Labels a description lists at most (an error must stay small enough to arrive).
_SHOWN_LABELS = 20


def _folded(violations: list[FieldViolation]) -> InvalidArgument:
    """Mistakes inside the weights file are the `weights` field's (the request's field),
    as one violation: each path inside the file goes in front of its description."""
    prefix = f"{_WEIGHTS}."
    inside = [
        f"{f.field.removeprefix(prefix)}: {f.description}"
        for f in violations
        if f.field.startswith(prefix)
    ]
    rest = [f for f in violations if not f.field.startswith(prefix)]
    if not inside:
        return InvalidArgument(rest)
    return InvalidArgument([*rest, FieldViolation(_WEIGHTS, "; ".join(inside))])


def test(
    request: pb.TrainerServiceTestRequest,
    config: TrainerConfig,
    channel: grpc.Channel,
    slot: int,
    emit: Emit,
    signals: Signals,
) -> None:
    """Runs a Test call: the weights' model on the test split (or the given ids)."""
    try:
        _test(request, config, channel, slot, emit, signals)
    except InvalidArgument as err:
        raise _folded(err.violations) from err


def _test(
    request: pb.TrainerServiceTestRequest,
    config: TrainerConfig,
    channel: grpc.Channel,
    slot: int,
    emit: Emit,
    signals: Signals,
) -> None:
    """In the order of a Test call: the weights file's spec read and checked with the
    request, the test images, the model, its evaluation, the result."""
    limits = config.limits
    # The header alone first: nothing of a file anyone can write is loaded or built until
    # its spec has passed every check a command's model passes.
    if not request.HasField("weights"):
        raise InvalidArgument.one(_WEIGHTS, "no weights file named")
    # Read from the gateway and checked against its size and sha256 first.
    data = run_files.read(channel, request.weights, _WEIGHTS, config.gateway_deadline_seconds)
    written = _written(data)
    plan = _checks(request.command, written, limits)
    source = ImageSource(channel, config.gateway_deadline_seconds)
    total, tensors = _images(source, config, request.command, written, plan)
    weights = artifacts.read_weights_tensors(data)
    del data
    device = device_for(config, slot)
    net = _model(plan.spec, weights, device)
    criterion = optim.make_criterion(plan.criterion).to(device)
    last = [0.0]

    def progress(done: int) -> None:
        now = time.monotonic()
        if now - last[0] >= 0.5 or done == total:
            last[0] = now
            emit(pb.TrainerServiceTestResponse(progress=pb.TestProgress(done=done, total=total)))

    try:
        evaluation = loop.evaluate(
            net, loop.loader(loop.TensorImages(tensors.images, tensors.labels), 256, shuffle=False),
            BatchTransform(plan.pipeline.without_augmentation()), criterion, device,
            optim.target_kind(plan.criterion), plan.spec.n_labels, signals.cancelled, progress,
        )  # fmt: skip
    except loop.CommandFailed as err:
        raise checks.command_error(err, plan.pipeline, plan.criterion, "testing") from err
    emit(_result(evaluation, written.labels))


@dataclass(frozen=True)
class _Written:
    """What a weights file's spec says of the run that made it, parsed but not checked."""

    model: model.ModelSpec
    labels: list[str]
    image_ops: list[attempt_pb2.ImageOp]
    transform: struct_pb2.Struct
    seed: int


def _written(data: bytes) -> _Written:
    """The spec of a weights file (the client's): INVALID_ARGUMENT naming `weights` when
    a part of it cannot be read."""
    spec_json = artifacts.read_weights_spec(data)
    try:
        written = model.ModelSpec.from_json(spec_json["model"])
        trained_labels = spec_json["label_names"]
        if not isinstance(trained_labels, list) or not all(
            isinstance(label, str) for label in trained_labels
        ):
            raise ValueError("label_names is not a list of strings")
        image_ops = [
            json_format.ParseDict(op, attempt_pb2.ImageOp()) for op in spec_json["image_ops"]
        ]
        transform_struct = json_format.ParseDict(
            spec_json["transform"], attempt_pb2.TrainCommand().transform
        )
        seed = int(spec_json["seed"])
        if not -_INT64 <= seed < _INT64:
            raise ValueError(f"seed {seed} is not a 64-bit integer")
    except Exception as err:  # the client's weights file
        raise InvalidArgument.one(_WEIGHTS, f"its model spec is unreadable: {err}") from err
    return _Written(written, trained_labels, image_ops, transform_struct, seed)


@dataclass(frozen=True)
class _Plan:
    """A Test command checked with its weights' spec: what is tested, and how."""

    spec: model.ModelSpec
    pipeline: Pipeline
    criterion: optim.Named
    # The labels whose test images are tested (without ids).
    labels: list[str]
    # The command's image ops, else the weights' (the ones the model was trained with);
    # `ops_path` names the field they came from.
    image_ops: list[attempt_pb2.ImageOp]
    ops_path: str


def _checks(cmd: attempt_pb2.TestCommand, written: _Written, limits: Limits) -> _Plan:
    """Every check of a Test command and of its weights' spec, before a tensor of the
    file is loaded: INVALID_ARGUMENT naming each offending field (`weights.` for the
    file's own, folded into one by `test`)."""
    v = Violations()
    spec = model.check_spec(v, f"{_WEIGHTS}.model", written.model, limits)
    trained_labels = written.labels
    checks.labels(v, _WEIGHTS, trained_labels, written.model.n_labels, limits.max_labels)
    if len(cmd.image_ops):
        ops_path = "command.image_ops"
        image_ops = list(cmd.image_ops)
    else:
        ops_path = f"{_WEIGHTS}.image_ops"
        image_ops = written.image_ops
    check_image_ops(v, ops_path, image_ops, limits)
    pipeline = check_pipeline(
        v,
        "command.transform" if len(cmd.transform.fields) else f"{_WEIGHTS}.transform",
        cmd.transform if len(cmd.transform.fields) else written.transform,
    )
    if pipeline is not None:
        check_sizes(v, ops_path, image_ops, pipeline, limits.max_input_pixels)
    labels = list(cmd.label_names) or trained_labels
    for i, label in enumerate(cmd.label_names):
        if label not in trained_labels:
            v.add(
                f"command.label_names[{i}]",
                f"{label[:64]!r} is not a label the model was trained on:"
                f" {trained_labels[:_SHOWN_LABELS]}"
                + ("..." if len(trained_labels) > _SHOWN_LABELS else ""),
            )
    if cmd.limit < 0:
        v.add("command.limit", "must not be negative")
    criterion_spec = optim.check_criterion(v, "command.criterion", cmd.criterion)
    if criterion_spec is not None and spec is not None:
        optim.check_criterion_for(v, "command.criterion", criterion_spec, spec.n_labels)
    v.raise_if_any()
    assert spec is not None and pipeline is not None and criterion_spec is not None
    return _Plan(spec, pipeline, criterion_spec, labels, image_ops, ops_path)


def _images(
    source: ImageSource,
    config: TrainerConfig,
    cmd: attempt_pb2.TestCommand,
    written: _Written,
    plan: _Plan,
) -> tuple[int, Tensors]:
    """How many images are tested, and the images: the test split of the plan's labels,
    or the command's ids, preprocessed as the model's training images were.
    INVALID_ARGUMENT for images of labels the model does not know or of another shape
    than it takes, FAILED_PRECONDITION for none."""
    limits = config.limits
    trained_labels = written.labels
    split = dataset_service_pb2.SPLIT_ALL if len(cmd.ids) else dataset_service_pb2.SPLIT_TEST
    refs = source.list(
        plan.labels if not len(cmd.ids) else [],
        split,
        written.seed,
        ids=list(cmd.ids),
        limit=cmd.limit,
    )
    strangers = sorted({r.label for r in refs} - set(trained_labels))
    if strangers:
        raise InvalidArgument.one(
            "command.ids", f"images of labels the model does not know: {strangers}"
        )
    if not refs:
        raise FailedPrecondition(f"no test images for labels {plan.labels}")
    refs = sorted(refs, key=lambda r: (trained_labels.index(r.label), r.sha256, r.id))
    preprocessor = Preprocessor(
        source,
        config.cache_dir,
        limits.max_data_bytes,
        limits.max_input_pixels,
        cache_max_bytes=config.cache_max_bytes,
    )
    tensors = preprocessor.tensors(refs, trained_labels, plan.image_ops, plan.pipeline)
    if tensors.input_shape != plan.spec.input_shape:
        raise InvalidArgument.one(
            plan.ops_path,
            f"images are {tensors.input_shape} after the ops;"
            f" the model takes {plan.spec.input_shape}",
        )
    return len(refs), tensors


def _model(
    spec: model.ModelSpec, weights: dict[str, torch.Tensor], device: torch.device
) -> nn.Module:
    """The spec's model with the file's weights, on `device`: INVALID_ARGUMENT when they
    do not fit it."""
    net = model.build(spec)
    try:
        net.load_state_dict(weights)
    except Exception as err:  # the client's weights file
        raise InvalidArgument.one("weights", f"do not fit their model spec: {err}") from err
    return net.to(device)


def _result(
    evaluation: loop.Evaluation, trained_labels: list[str]
) -> pb.TrainerServiceTestResponse:
    """The test's result: loss, accuracy (and each label's that was tested), confusion."""
    confusion = evaluation.confusion
    per_label = {}
    for index, label in enumerate(trained_labels):
        seen = int(confusion[index].sum())
        if seen:
            per_label[label] = int(confusion[index, index]) / seen
    return pb.TrainerServiceTestResponse(
        result=attempt_pb2.TestResult(
            loss=evaluation.loss, accuracy=evaluation.accuracy, per_label_accuracy=per_label,
            confusion_matrix=confusion.flatten().tolist(), images=evaluation.samples,
        )
    )  # fmt: skip
