"""The trainer's own doors, called directly (no server, no database): what a weights file,
a checkpoint or a command's transforms and loss may ask of it, and how each mistake is
the command's field-named INVALID_ARGUMENT rather than an INTERNAL that gets retried.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
import torch
from google.protobuf import json_format, struct_pb2
from PIL import Image
from torchvision.transforms import v2

from gateway.attempts import validation
from gateway.config import Limits as GatewayLimits
from metalearn import geometry, vocabulary
from metalearn.errors import InvalidArgument, Violations
from metalearn.limits import COMMAND_LIMITS, CommandLimits
from metalearn.v1 import attempt_pb2, trainer_service_pb2, trainer_service_pb2_grpc
from tests import test_trainer
from tests.rpc import expect_error, violations
from tests.trainer_harness import lenet_command
from trainer import artifacts, loop, model, optim, run, run_files, testing
from trainer.config import Limits as TrainerLimits
from trainer.config import TrainerConfig
from trainer.data import ImageRef, Preprocessor
from trainer.transforms import check_image_ops, check_pipeline, check_sizes, command_fault

pb = trainer_service_pb2
LABELS = ["a", "b"]


# --- A trainer without a gateway: images served from memory ---------------------------


def _png(size: tuple[int, int], seed: int) -> bytes:
    rng = random.Random(seed)
    image = Image.new("L", size)
    image.putdata([rng.randrange(256) for _ in range(size[0] * size[1])])
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


class MemorySource:
    """What `trainer.data.ImageSource` gives, from images held here."""

    def __init__(self, size: tuple[int, int] = (8, 8), per_label: int = 12) -> None:
        self.images: dict[int, tuple[str, bytes]] = {}
        for i in range(per_label * len(LABELS)):
            data = _png(size, i)
            self.images[i + 1] = (LABELS[i % len(LABELS)], data)
        self.fetched = 0

    def list(self, labels: Any, split: Any, seed: int, ids: Any = (), limit: int = 0) -> list:
        wanted = set(labels) or set(LABELS)
        return [
            ImageRef(i, label, hashlib.sha256(data).hexdigest())
            for i, (label, data) in self.images.items()
            if label in wanted
        ]

    def listing(self, labels: Any, split: Any, seed: int) -> Any:
        refs = self.list(labels, split, seed)
        return SimpleNamespace(result=lambda: refs, cancel=lambda: None)

    def fetch(self, refs: Any) -> dict[int, bytes]:
        self.fetched += len(refs)
        return {r.id: self.images[r.id][1] for r in refs}


# The files a request names, by attempt id: what the gateway's ReadRunFile would send.
_FILES: dict[int, bytes] = {}


def held(data: bytes, kind: str = "weights") -> pb.RunFile:
    """`data` as the file a request names (served from memory, checked as the gateway's)."""
    _FILES[len(_FILES) + 1] = data
    kinds = {"checkpoint": pb.RUN_FILE_KIND_CHECKPOINT, "weights": pb.RUN_FILE_KIND_WEIGHTS}
    return pb.RunFile(
        attempt_id=len(_FILES), fence=1, kind=kinds[kind], size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )  # fmt: skip


@pytest.fixture()
def source(monkeypatch: pytest.MonkeyPatch) -> MemorySource:
    memory = MemorySource()
    monkeypatch.setattr(run, "ImageSource", lambda channel, deadline: memory)
    monkeypatch.setattr(testing, "ImageSource", lambda channel, deadline: memory)
    monkeypatch.setattr(
        run_files, "stream", lambda channel, file, deadline: iter([_FILES[file.attempt_id]])
    )
    return memory


@pytest.fixture()
def config(tmp_path: Path) -> TrainerConfig:
    return TrainerConfig(device="cpu", cache_dir=tmp_path / "cache", checkpoint_every_epochs=1)


SIGNALS = run.Signals(cancelled=lambda: False, interrupted=lambda: False)


def command(**changes: Any) -> attempt_pb2.TrainCommand:
    doc: dict[str, Any] = {
        "label_names": LABELS,
        "batch_size": 8,
        "n_epoch": 2,
        "seed": 3,
        "model": {
            "layers": [
                {"name": "Flatten"},
                {"name": "Linear", "in_features": "auto", "out_features": "n_labels"},
            ]
        },
        "optimizer": {"name": "SGD", "lr": 0.01},
        "criterion": {"name": "CrossEntropyLoss"},
        "scheduler": {"name": "StepLR", "step_size": 1},
        "transform": {"ToTensor": True},
    }
    doc.update(changes)
    return json_format.ParseDict(doc, attempt_pb2.TrainCommand())


def train(config: TrainerConfig, cmd: attempt_pb2.TrainCommand, **fields: Any) -> list[Any]:
    events: list[Any] = []
    if isinstance(fields.get("resume_checkpoint"), bytes):
        fields["resume_checkpoint"] = held(fields["resume_checkpoint"], "checkpoint")
    request = pb.TrainerServiceTrainRequest(attempt_name="t", command=cmd, **fields)
    run.train(request, config, None, [0], events.append, SIGNALS)  # type: ignore[arg-type]
    return events


def refused(call: Any, *args: Any, **kw: Any) -> dict[str, str]:
    """The field violations of the INVALID_ARGUMENT a call raises."""
    with pytest.raises(InvalidArgument) as info:
        call(*args, **kw)
    return {v.field: v.description for v in info.value.violations}


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(value)
    return s


# --- 1. Test builds a model only through the allowlist and the parameter budget --------


def weights_file(model_json: dict[str, Any], **spec: Any) -> bytes:
    body = {
        "model": model_json,
        "label_names": LABELS,
        "image_ops": [],
        "transform": {"ToTensor": True},
        "seed": 3,
        **spec,
    }
    return artifacts.weights_bytes({"w": torch.zeros(1)}, body)


def layers_model(*layers: dict[str, Any], shape: tuple[int, ...] = (1, 8, 8)) -> dict[str, Any]:
    return {"n_labels": 2, "input_shape": list(shape), "layers": list(layers), "architecture": ""}


# 512 x 512 inputs into 1,008 features: 264 M parameters (a GB of float32).
HUGE = layers_model(
    {"name": "Flatten"},
    {"name": "Linear", "in_features": 512 * 512, "out_features": 1008},
    {"name": "Linear", "in_features": 1008, "out_features": 2},
    shape=(1, 512, 512),
)


@pytest.mark.parametrize(
    "spec,words",
    [
        (layers_model({"name": "Module"}), "unknown layer 'Module'"),
        (layers_model({"name": "__class__"}), "unknown layer '__class__'"),
        (layers_model({"name": "Linear", "in_features": 64, "out_features": 2, "device": "x"}),
         "takes no argument 'device'"),
        ({**layers_model(), "layers": [], "architecture": "no_such_net"}, "unknown architecture"),
        ({**layers_model(), "layers": [], "architecture": "__class__"}, "unknown architecture"),
        (HUGE, "over this trainer's budget of 200,000,000"),
        (layers_model({"name": "Flatten"}, shape=(1, 10**6, 10**6)), "input_shape"),
        ({**layers_model({"name": "Flatten"}, shape=(1, 1, 10**9)), "n_labels": 10**9},
         "n_labels"),
    ],
)  # fmt: skip
def test_a_weights_file_builds_nothing_it_names_without_the_checks(
    spec: dict[str, Any], words: str, source: MemorySource, config: TrainerConfig, monkeypatch
) -> None:
    """Refused as `weights` before a model is built, a tensor loaded or an image read."""

    def forbidden(*args: Any) -> None:
        raise AssertionError("allocated before the spec was checked")

    monkeypatch.setattr(model, "build", forbidden)
    monkeypatch.setattr(artifacts, "read_weights_tensors", forbidden)
    request = pb.TrainerServiceTestRequest(weights=held(weights_file(spec)))
    problems = refused(testing.test, request, config, None, 0, lambda e: None, SIGNALS)
    assert list(problems) == ["weights"] and words in problems["weights"], problems
    assert source.fetched == 0


def test_the_spec_of_a_trained_model_passes_the_same_checks(
    source: MemorySource, config: TrainerConfig
) -> None:
    """A file the trainer wrote itself is tested as before (round trip through the checks)."""
    events = train(config, command(n_epoch=1))
    weights = b"".join(e.weights.data for e in events if e.WhichOneof("event") == "weights")
    results: list[Any] = []
    request = pb.TrainerServiceTestRequest(weights=held(weights))
    testing.test(request, config, None, 0, results.append, SIGNALS)  # type: ignore[arg-type]
    result = results[-1].result
    assert result.images == len(source.images) and 0 <= result.accuracy <= 1
    spec = model.ModelSpec.from_json(artifacts.read_weights_spec(weights)["model"])
    assert model.check_spec(Violations(), "weights.model", spec, COMMAND_LIMITS) == spec


def test_the_weights_image_ops_and_transform_are_checked_too(
    source: MemorySource, config: TrainerConfig
) -> None:
    ops = [{"resize": {"size": [100000, 100000]}}]
    request = pb.TrainerServiceTestRequest(
        weights=held(weights_file(layers_model({"name": "Flatten"}), image_ops=ops))
    )
    problems = refused(testing.test, request, config, None, 0, lambda e: None, SIGNALS)
    assert "image_ops[0].resize.size" in problems["weights"], problems
    request = pb.TrainerServiceTestRequest(
        weights=held(
            weights_file(
                layers_model({"name": "Flatten"}), transform={"Resize": {"size": [10**6, 10**6]}}
            )
        )
    )
    problems = refused(testing.test, request, config, None, 0, lambda e: None, SIGNALS)
    assert "transform.Resize.size" in problems["weights"], problems
    assert source.fetched == 0


# --- 2. A checkpoint's epoch lies in 0..n_epoch ----------------------------------------


def checkpoint_of(cmd: attempt_pb2.TrainCommand, epoch: int) -> bytes:
    return artifacts.checkpoint_bytes(
        artifacts.Checkpoint(
            epoch=epoch, command_fingerprint=run.command_fingerprint(cmd), model={},
            optimizer={}, scheduler={}, rng={}, best_metrics={},
        )
    )  # fmt: skip


@pytest.mark.parametrize("epoch", [-1, -(2**40), 3, 999])
def test_a_checkpoint_from_outside_the_run_is_refused(
    epoch: int, source: MemorySource, config: TrainerConfig
) -> None:
    cmd = command(n_epoch=2)
    problems = refused(train, config, cmd, resume_checkpoint=checkpoint_of(cmd, epoch))
    assert "resume_checkpoint" in problems and f"epoch {epoch}" in problems["resume_checkpoint"]
    assert source.fetched == 0


def test_a_checkpoint_of_the_last_epoch_finishes_the_run(
    source: MemorySource, config: TrainerConfig
) -> None:
    """n_epoch may be lowered (it is not part of a checkpoint's command) to where a
    checkpoint already is: the run then ends with that checkpoint's weights."""
    events = train(config, command(n_epoch=2))
    first = b"".join(
        e.checkpoint.data
        for e in events
        if e.WhichOneof("event") == "checkpoint" and e.checkpoint.epoch == 1
    )
    resumed = train(config, command(n_epoch=1), resume_checkpoint=first)
    kinds = [e.WhichOneof("event") for e in resumed]
    assert "epoch" not in kinds and resumed[-1].finished.outcome == pb.TRAIN_OUTCOME_COMPLETED
    assert resumed[0].started.first_epoch == 2 and resumed[-1].finished.epochs == 1


# --- 3. Sizes set inside `transform` count before any image is made --------------------


def test_sizes_follow_torchvisions_rules() -> None:
    """The arithmetic gives the size torchvision's transforms really make."""
    cases: list[dict[str, Any]] = [
        {"Resize": {"size": [7]}}, {"Resize": {"size": 5, "max_size": 9}},
        {"Resize": {"size": [6, 11]}}, {"Resize": {"size": None, "max_size": 13}},
        {"CenterCrop": {"size": [4, 9]}}, {"CenterCrop": {"size": 20}},
        {"Pad": {"padding": 3}}, {"Pad": {"padding": [1, 2]}}, {"Pad": {"padding": [1, 2, 3, 4]}},
        {"RandomCrop": {"size": [20, 30], "pad_if_needed": True}},
        {"RandomCrop": {"size": 5, "padding": [2, 3]}}, {"RandomResizedCrop": {"size": [9, 4]}},
        {"Resize": {"size": 9}, "CenterCrop": {"size": 8}, "Pad": {"padding": 1},
         "Grayscale": {"num_output_channels": 3}, "RandomCrop": {"size": 6}},
    ]  # fmt: skip
    order = vocabulary.FIXED_TRANSFORMS + vocabulary.RANDOM_TRANSFORMS
    for height, width in [(10, 10), (10, 17), (23, 8)]:
        for case in cases:
            x = torch.zeros(3, height, width, dtype=torch.uint8)
            for name in (n for n in order if n in case):
                x = getattr(v2, name)(**case[name])(x)
            plan = geometry.transform_steps("t", case, geometry.Size(height, width, 3))
            final = plan.final
            assert plan.problems == [], (case, plan.problems)
            assert (final.channels, final.height, final.width) == tuple(x.shape), case


BIG = [
    ({"Resize": {"size": [10**6, 10**6]}}, "command.transform.Resize.size"),
    ({"Resize": {"size": 10**6}}, "command.transform.Resize.size"),
    ({"CenterCrop": {"size": 5000}}, "command.transform.CenterCrop.size"),
    ({"Pad": {"padding": 10**6}}, "command.transform.Pad.padding"),
    ({"RandomResizedCrop": {"size": [4000, 4000]}}, "command.transform.RandomResizedCrop.size"),
    ({"RandomCrop": {"size": 8, "padding": 10**6}}, "command.transform.RandomCrop.padding"),
    ({"RandomCrop": {"size": 3000, "pad_if_needed": True}}, "command.transform.RandomCrop.size"),
]


@pytest.mark.parametrize("transform,field", BIG)
def test_oversized_transforms_are_refused_by_trainer_and_gateway_alike(
    transform: dict[str, Any], field: str, source: MemorySource, config: TrainerConfig
) -> None:
    problems = refused(train, config, command(transform={"ToTensor": True, **transform}))
    assert field in problems and "pixels" in problems[field], problems
    assert source.fetched == 0  # refused before an image was read, let alone made
    v = Violations()
    cmd = command(transform={"ToTensor": True, **transform})
    validation.check_trainable(v, "command", cmd, GatewayLimits())
    assert {i.field: i.description for i in v.items} == {field: problems[field]}


def test_an_image_op_resize_counts_with_the_transforms(source: MemorySource, config) -> None:
    ops = [{"resize": {"size": [1024, 1024]}}]
    # 1024 x 1024 is the limit; 8 pixels of padding each side go over it.
    cmd = command(image_ops=ops, transform={"Pad": {"padding": 8}})
    problems = refused(train, config, cmd)
    assert list(problems) == ["command.transform.Pad.padding"], problems
    assert "1040x1040" in problems["command.transform.Pad.padding"]
    v = Violations()
    validation.check_trainable(v, "command", cmd, GatewayLimits())
    assert [i.field for i in v.items] == ["command.transform.Pad.padding"]


def test_each_images_real_size_is_checked_before_it_is_transformed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Resize(900) keeps the aspect: 900x900 from a square image, 1800x900 from a wide
    one, which only the image's own size tells. Refused before Resize makes it."""
    wide = MemorySource(size=(16, 8), per_label=2)
    v = Violations()
    pipeline = check_pipeline(v, "command.transform", struct({"Resize": {"size": 900}}))
    assert pipeline is not None and v.items == []
    check_sizes(v, "command.image_ops", [], pipeline, COMMAND_LIMITS.max_input_pixels)
    assert v.items == []  # 900 x 900 at least: fits, as far as the command says

    def no_resize(*args: Any, **kw: Any) -> None:
        raise AssertionError("the oversized image was made")

    monkeypatch.setattr(v2.Resize, "__call__", no_resize)
    preprocessor = Preprocessor(
        wide, tmp_path, COMMAND_LIMITS.max_data_bytes, COMMAND_LIMITS.max_input_pixels
    )
    refs = wide.list(LABELS, None, 0)
    problems = refused(preprocessor.tensors, refs, LABELS, [], pipeline)
    assert "1800x900" in problems["command.transform.Resize.size"], problems


def test_the_data_limit_counts_the_transforms_output(tmp_path: Path) -> None:
    images = MemorySource(per_label=4)
    v = Violations()
    pipeline = check_pipeline(v, "command.transform", struct({"Resize": {"size": [100, 100]}}))
    assert pipeline is not None
    # 8 images of 100 x 100 need 80,000 bytes.
    preprocessor = Preprocessor(images, tmp_path, 79_999, COMMAND_LIMITS.max_input_pixels)
    refs = images.list(LABELS, None, 0)
    problems = refused(preprocessor.tensors, refs, LABELS, [], pipeline)
    assert "80,000 bytes" in problems["command.transform.Resize.size"], problems
    preprocessor = Preprocessor(images, tmp_path, 80_000, COMMAND_LIMITS.max_input_pixels)
    assert preprocessor.tensors(refs, LABELS, [], pipeline).images.shape == (8, 1, 100, 100)


def test_random_crops_must_fit_the_model_at_both_sizes(
    source: MemorySource, config: TrainerConfig
) -> None:
    """A random crop trains on 6x6 and evaluates on 8x8; a Linear of "auto" features
    takes only one of them, which used to surface as INTERNAL in the first batch."""
    cmd = command(transform={"ToTensor": True, "RandomCrop": {"size": 6}})
    problems = refused(train, config, cmd)
    assert "(1, 6, 6)" in problems["command.transform.RandomCrop.size"], problems
    adaptive = command(
        transform={"ToTensor": True, "RandomCrop": {"size": 6}},
        model={
            "layers": [
                {"name": "AdaptiveAvgPool2d", "output_size": 2},
                {"name": "Flatten"},
                {"name": "Linear", "in_features": "auto", "out_features": "n_labels"},
            ]
        },
    )
    events = train(config, adaptive)
    assert events[-1].finished.outcome == pb.TRAIN_OUTCOME_COMPLETED


def test_rotating_with_expand_is_refused() -> None:
    v = Violations()
    cmd = command(transform={"RandomRotation": {"degrees": 30, "expand": True}})
    validation.check_trainable(v, "command", cmd, GatewayLimits())
    assert [i.field for i in v.items] == ["command.transform.RandomRotation.expand"]


# --- 4. Mistakes the command makes on real data are its own, never retried -----------


@pytest.mark.parametrize(
    "changes,field,words",
    [
        ({"criterion": {"name": "BCELoss"}}, "command.criterion", "end the model with Sigmoid"),
        ({"criterion": {"name": "CrossEntropyLoss", "weight": [1, 2, 3]}},
         "command.criterion.weight", "has 3 values; give 2"),
        ({"criterion": {"name": "BCEWithLogitsLoss", "pos_weight": [1, 2, 3]}},
         "command.criterion.pos_weight", "give 1 or 2"),
        ({"criterion": {"name": "CrossEntropyLoss", "label_smoothing": 1.5}},
         "command.criterion", "label_smoothing"),
        ({"transform": {"Resize": {"size": [0]}}}, "command.transform.Resize.size", "positive"),
        ({"transform": {"Grayscale": {"num_output_channels": 2}}},
         "command.transform.Grayscale.num_output_channels", "1 or 3"),
        ({"transform": {"GaussianBlur": {"kernel_size": 31}}}, "command.transform", "Padding"),
        ({"transform": {"RandomCrop": {"size": 9}}}, "command.transform.RandomCrop.size",
         "larger than the images (8x8)"),
    ],
)  # fmt: skip
def test_command_mistakes_on_real_data_are_invalid_argument(
    changes: dict[str, Any], field: str, words: str, source: MemorySource, config: TrainerConfig
) -> None:
    problems = refused(train, config, command(**changes))
    assert field in problems and words in problems[field], problems


# A trainer server over the digits gateway, started as tests/test_trainer.py starts one.
trainer = test_trainer.trainer


@pytest.mark.parametrize(
    "change,field",
    [
        ({"criterion": {"name": "BCELoss"}}, "command.criterion"),
        ({"criterion": {"name": "CrossEntropyLoss", "weight": [1.0, 2.0]}},
         "command.criterion.weight"),
        ({"criterion": {"name": "CrossEntropyLoss", "label_smoothing": 1.5}},
         "command.criterion"),
        ({"transform": {"Resize": {"size": [0]}}}, "command.transform.Resize.size"),
        ({"transform": {"Grayscale": {"num_output_channels": 2}}},
         "command.transform.Grayscale.num_output_channels"),
        ({"transform": {"Resize": {"size": [10**6, 10**6]}}}, "command.transform.Resize.size"),
    ],
)  # fmt: skip
def test_the_issues_mistakes_reach_the_gateway_as_invalid_argument(
    trainer: trainer_service_pb2_grpc.TrainerServiceStub, change: dict[str, Any], field: str
) -> None:
    """What the gateway's dispatcher sees: INVALID_ARGUMENT, which it fails at once
    (no restart), where these used to be INTERNAL and retried three times."""
    cmd = lenet_command(n_epoch=1, **change)
    err = expect_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        test_trainer.drain(trainer.Train),
        pb.TrainerServiceTrainRequest(attempt_name="bad", command=cmd),
    )
    assert field in violations(err), violations(err)


def test_the_gateway_refuses_the_transform_mistakes_before_queueing() -> None:
    for transform, field in [
        ({"Resize": {"size": [0]}}, "command.transform.Resize.size"),
        ({"Grayscale": {"num_output_channels": 2}},
         "command.transform.Grayscale.num_output_channels"),
        ({"Resize": {"size": 10, "max_size": 5}}, "command.transform.Resize.max_size"),
    ]:  # fmt: skip
        v = Violations()
        validation.check_trainable(v, "command", command(transform=transform), GatewayLimits())
        assert [i.field for i in v.items] == [field], v.items


def test_a_loss_that_fails_in_testing_is_the_commands_mistake(
    source: MemorySource, config: TrainerConfig
) -> None:
    events = train(config, command(n_epoch=1))
    weights = b"".join(e.weights.data for e in events if e.WhichOneof("event") == "weights")
    test_command = json_format.ParseDict(
        {"criterion": {"name": "BCELoss"}}, attempt_pb2.TestCommand()
    )
    request = pb.TrainerServiceTestRequest(weights=held(weights), command=test_command)
    problems = refused(testing.test, request, config, None, 0, lambda e: None, SIGNALS)
    assert "Sigmoid" in problems["command.criterion"], problems


def test_out_of_memory_and_our_bugs_are_not_the_commands_fault() -> None:
    assert command_fault(RuntimeError("all elements of input should be between 0 and 1"))
    assert command_fault(ValueError("num_output_channels must be 1 or 3"))
    assert not command_fault(torch.OutOfMemoryError("CUDA out of memory"))
    assert not command_fault(AttributeError("'NoneType' object has no attribute 'x'"))
    assert not command_fault(KeyError("x"))


def test_a_bug_in_the_loop_is_not_wrapped() -> None:
    class Broken(torch.nn.Module):
        def forward(self, scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            raise AttributeError("a bug of ours")

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    data = loop.TensorImages(torch.zeros(4, 1, 2, 2), torch.zeros(4).long())
    batches = loop.loader(data, 2, shuffle=False)
    transform = run.BatchTransform.identity()
    with pytest.raises(AttributeError):
        loop.evaluate(
            net, batches, transform, Broken(), torch.device("cpu"), optim.Target.INDEX, 2,
            lambda: False,
        )  # fmt: skip


# --- 5. One source of limits -------------------------------------------------------------


def test_gateway_and_trainer_limits_agree() -> None:
    gateway, trainer = GatewayLimits(), TrainerLimits()
    for f in dataclasses.fields(CommandLimits):
        assert (
            getattr(gateway, f.name) == getattr(trainer, f.name) == getattr(COMMAND_LIMITS, f.name)
        )
    assert trainer.max_epochs == 10_000 and trainer.max_batch_size == 4_096


@pytest.mark.parametrize(
    "field,value", [("n_epoch", 50_000), ("batch_size", 10_000), ("n_epoch", 10_001)]
)
def test_the_gateway_refuses_what_the_trainer_would(
    field: str, value: int, source: MemorySource, config: TrainerConfig
) -> None:
    cmd = command(**{field: value})
    v = Violations()
    validation.check_trainable(v, "command", cmd, GatewayLimits())
    assert [i.field for i in v.items] == [f"command.{field}"], v.items
    assert f"command.{field}" in refused(train, config, cmd)


def test_the_largest_allowed_values_pass_the_gateway() -> None:
    v = Violations()
    cmd = command(n_epoch=COMMAND_LIMITS.max_epochs, batch_size=COMMAND_LIMITS.max_batch_size)
    validation.check_trainable(v, "command", cmd, GatewayLimits())
    assert v.items == []


# --- 6. Resampling filters are named exactly ---------------------------------------------


@pytest.mark.parametrize(
    "spelling,name",
    [
        ("bilinear", "bilinear"), ("BICUBIC", "bicubic"), ("Lanczos", "lanczos"),
        ("nearest", "nearest"), ("box", "box"), ("hamming", "hamming"),
        ("Image.ANTIALIAS", "lanczos"), ("Image.BILINEAR", "bilinear"),
        ("Image.Resampling.BICUBIC", "bicubic"), ("PIL.Image.NEAREST", "nearest"),
        ("bilinearX", None), ("bil", None), ("bilinear\n", None), (" bilinear", None),
        ("Image.", None), ("os.bilinear", None), ("Image.bilinearX", None), ("", None),
        ("'Image.ANTIALIAS'", None), ("bi linear", None),
    ],
)  # fmt: skip
def test_resample_names_match_whole_strings(spelling: str, name: str | None) -> None:
    assert vocabulary.resample_name(spelling) == name
    ops = [attempt_pb2.ImageOp(resize=attempt_pb2.Resize(size=[8], resample=spelling))]
    gateway, trainer = Violations(), Violations()
    cmd = command()
    cmd.image_ops.extend(ops)
    validation.check_trainable(gateway, "command", cmd, GatewayLimits())
    check_image_ops(trainer, "command.image_ops", ops, COMMAND_LIMITS)
    expected = [] if name or not spelling else ["command.image_ops[0].resize.resample"]
    assert [i.field for i in gateway.items] == expected
    assert [i.field for i in trainer.items] == expected


def test_a_null_weight_is_the_losses_default() -> None:
    """Found by the fuzzer as INTERNAL: `"weight": null` is torch's default, no weights."""
    from trainer import optim

    v = Violations()
    spec = optim.check_criterion(
        v, "command.criterion", struct({"name": "CrossEntropyLoss", "weight": None})
    )
    assert spec is not None and not v.items
    assert optim.check_criterion_for(v, "command.criterion", spec, 3) and not v.items
