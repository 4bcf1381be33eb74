"""One Test call, start to finish: trained weights on the test split (or given ids).

Runs in a worker process of its own, like a training run (see `trainer.run`).
"""

from __future__ import annotations

import time

import grpc
from google.protobuf import json_format

from metalearn.errors import FailedPrecondition, InvalidArgument, Violations
from metalearn.v1 import attempt_pb2, dataset_service_pb2, trainer_service_pb2
from trainer import artifacts, loop, model, optim
from trainer.config import TrainerConfig
from trainer.data import ImageSource, Preprocessor
from trainer.run import Emit, Signals, device_for
from trainer.transforms import BatchTransform, check_image_ops, check_pipeline

pb = trainer_service_pb2


def test(
    request: pb.TrainerServiceTestRequest,
    config: TrainerConfig,
    channel: grpc.Channel,
    slot: int,
    emit: Emit,
    signals: Signals,
) -> None:
    """Runs a Test call: the weights' model on the test split (or the given ids)."""
    weights, spec_json = artifacts.read_weights(request.weights)
    cmd = request.command
    v = Violations()
    try:
        spec = model.ModelSpec.from_json(spec_json["model"])
        trained_labels = [str(label) for label in spec_json["label_names"]]
        image_ops = [
            json_format.ParseDict(op, attempt_pb2.ImageOp()) for op in spec_json["image_ops"]
        ]
        transform_struct = json_format.ParseDict(
            spec_json["transform"], attempt_pb2.TrainCommand().transform
        )
        seed = int(spec_json["seed"])
    except Exception as err:  # the client's weights file
        raise InvalidArgument.one("weights", f"its model spec is unreadable: {err}") from err
    if len(cmd.image_ops):
        check_image_ops(v, "command.image_ops", cmd.image_ops, config.limits.max_image_pixels)
        image_ops = list(cmd.image_ops)
    pipeline = check_pipeline(
        v,
        "command.transform" if len(cmd.transform.fields) else "weights",
        cmd.transform if len(cmd.transform.fields) else transform_struct,
    )
    labels = list(cmd.label_names) or trained_labels
    for i, label in enumerate(cmd.label_names):
        if label not in trained_labels:
            v.add(
                f"command.label_names[{i}]",
                f"{label!r} is not a label the model was trained on: {trained_labels}",
            )
    if cmd.limit < 0:
        v.add("command.limit", "must not be negative")
    criterion_spec = optim.check_criterion(v, "command.criterion", cmd.criterion)
    v.raise_if_any()
    assert pipeline is not None and criterion_spec is not None

    source = ImageSource(channel, config.gateway_deadline_seconds)
    split = dataset_service_pb2.SPLIT_ALL if len(cmd.ids) else dataset_service_pb2.SPLIT_TEST
    refs = source.list(
        labels if not len(cmd.ids) else [], split, seed, ids=list(cmd.ids), limit=cmd.limit
    )
    strangers = sorted({r.label for r in refs} - set(trained_labels))
    if strangers:
        raise InvalidArgument.one(
            "command.ids", f"images of labels the model does not know: {strangers}"
        )
    if not refs:
        raise FailedPrecondition(f"no test images for labels {labels}")
    refs = sorted(refs, key=lambda r: (trained_labels.index(r.label), r.sha256, r.id))
    preprocessor = Preprocessor(
        source, config.cache_dir, config.limits.max_data_bytes, config.limits.max_image_pixels
    )
    tensors = preprocessor.tensors(refs, trained_labels, image_ops, pipeline)
    if tensors.input_shape != spec.input_shape:
        raise InvalidArgument.one(
            "command.image_ops",
            f"images are {tensors.input_shape} after the ops; the model takes {spec.input_shape}",
        )
    device = device_for(config, slot)
    net = model.build(spec)
    try:
        net.load_state_dict(weights)
    except Exception as err:  # the client's weights file
        raise InvalidArgument.one("weights", f"do not fit their model spec: {err}") from err
    net.to(device)
    criterion = optim.make_criterion(criterion_spec).to(device)
    total = len(refs)
    last = [0.0]

    def progress(done: int) -> None:
        now = time.monotonic()
        if now - last[0] >= 0.5 or done == total:
            last[0] = now
            emit(pb.TrainerServiceTestResponse(progress=pb.TestProgress(done=done, total=total)))

    evaluation = loop.evaluate(
        net, loop.loader(loop.TensorImages(tensors.images, tensors.labels), 256, shuffle=False),
        BatchTransform(pipeline.without_augmentation()), criterion, device,
        optim.target_kind(criterion_spec), spec.n_labels, signals.cancelled, progress,
    )  # fmt: skip
    confusion = evaluation.confusion
    per_label = {}
    for index, label in enumerate(trained_labels):
        seen = int(confusion[index].sum())
        if seen:
            per_label[label] = int(confusion[index, index]) / seen
    emit(
        pb.TrainerServiceTestResponse(
            result=attempt_pb2.TestResult(
                loss=evaluation.loss, accuracy=evaluation.accuracy, per_label_accuracy=per_label,
                confusion_matrix=confusion.flatten().tolist(), images=evaluation.samples,
            )
        )
    )  # fmt: skip
