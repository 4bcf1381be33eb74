"""The trainer's pieces without a server: model builder, optimizers, transforms, artifacts."""

from __future__ import annotations

import io
import pickle

import pytest
import torch
from google.protobuf import json_format, struct_pb2

from metalearn.errors import InvalidArgument, Violations
from metalearn.v1 import attempt_pb2
from trainer import artifacts, model, optim
from trainer.transforms import BatchTransform, check_pipeline


def layers(*specs: dict) -> attempt_pb2.Model:
    return json_format.ParseDict({"layers": list(specs)}, attempt_pb2.Model())


def struct(value: dict) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(value)
    return s


LENET = layers(
    {"name": "Conv2d", "in_channels": 3, "out_channels": 6, "kernel_size": 5},
    {"name": "ReLU", "inplace": True},
    {"name": "MaxPool2d", "kernel_size": 2, "stride": 2},
    {"name": "Conv2d", "in_channels": "auto", "out_channels": 16, "kernel_size": 5},
    {"name": "BatchNorm2d", "num_features": "auto"},
    {"name": "Flatten", "start_dim": 1},
    {"name": "Linear", "in_features": "auto", "out_features": 84},
    {"name": "Dropout", "p": 0.25},
    {"name": "Linear", "in_features": "auto", "out_features": "n_labels"},
)


def resolve(m: attempt_pb2.Model, shape=(3, 32, 32), n_labels=4, budget=10**9):
    v = Violations()
    spec = model.resolve(v, "command.model", m, shape, n_labels, budget)
    return spec, {item.field: item.description for item in v.items}


def test_auto_sizes_come_from_the_traced_shape() -> None:
    spec, problems = resolve(LENET)
    assert problems == {} and spec is not None
    resolved = {i: layer for i, layer in enumerate(spec.layers)}
    assert resolved[3]["in_channels"] == 6 and resolved[4]["num_features"] == 16
    assert resolved[6]["in_features"] == 16 * 10 * 10 and resolved[8]["out_features"] == 4
    net = model.build(spec)
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 4)
    # The spec travels as JSON in a weights file and rebuilds the same model.
    again = model.ModelSpec.from_json(spec.to_json())
    assert model.build(again).state_dict().keys() == net.state_dict().keys()


@pytest.mark.parametrize(
    "bad,field,words",
    [
        ({"name": "Conv2d", "in_channels": 3, "out_channels": 6, "kernel_sizes": 5},
         "command.model.layers[0].kernel_sizes", "takes no argument"),
        ({"name": "Conv2d", "in_channels": 3, "out_channels": 6},
         "command.model.layers[0]", "needs ['kernel_size']"),
        ({"name": "Conv3d", "in_channels": 3}, "command.model.layers[0].name", "unknown layer"),
        ({"name": "Conv2d", "in_channels": 5, "out_channels": 6, "kernel_size": 3},
         "command.model.layers[0]", "layer 0 (Conv2d) expects 5 input channels, got 3 (from"
         " the input images of shape (batch, 3, 32, 32))"),
        ({"name": "Conv2d", "in_channels": 3, "out_channels": 6, "kernel_size": 99},
         "command.model.layers[0]", "has a 99x99 kernel, larger than its 32x32 input"),
        ({"name": "Linear", "in_features": "n_labels", "out_features": 3},
         "command.model.layers[0].in_features", "not allowed"),
        ({"name": "Dropout", "p": 1.5}, "command.model.layers[0]", "Dropout"),
        ({"name": "ReLU", "device": "cuda"}, "command.model.layers[0].device", "takes no argument"),
        # Found by the fuzzer: both passed the meta-device trace and failed on a real batch.
        ({"name": "Conv2d", "in_channels": 3, "out_channels": 6, "kernel_size": 0},
         "command.model.layers[0].kernel_size", "must be at least 1"),
        ({"name": "Conv2d", "in_channels": 3, "out_channels": 6, "kernel_size": 3,
          "stride": [1, 0]}, "command.model.layers[0].stride", "must be at least 1"),
        ({"name": "Conv2d", "in_channels": 3, "out_channels": 6, "kernel_size": 3,
          "padding": None}, "command.model.layers[0].padding", "null is not a value"),
    ],
)  # fmt: skip
def test_layer_mistakes_name_the_layer_and_argument(bad, field, words) -> None:
    spec, problems = resolve(layers(bad, {"name": "Flatten"}))
    assert spec is None and field in problems and words in problems[field], problems


def test_shape_mistakes_say_the_layer_and_both_shapes_in_plain_words() -> None:
    # torch says "mat1 and mat2 shapes cannot be multiplied (2x400 and 256x120)".
    _, problems = resolve(
        layers(
            {"name": "Conv2d", "in_channels": 3, "out_channels": 16, "kernel_size": 5},
            {"name": "MaxPool2d", "kernel_size": 14},
            {"name": "Flatten"},
            {"name": "Linear", "in_features": 256, "out_features": 120},
        )
    )
    assert problems == {
        "command.model.layers[3]": "layer 3 (Linear) expects 256 input features, got 64"
        " (from layer 2's output of shape (batch, 64))"
    }
    _, problems = resolve(
        layers({"name": "Flatten"}, {"name": "BatchNorm2d", "num_features": "auto"})
    )
    # Others: the layer, what it was given and from where, then torch's reason.
    assert problems["command.model.layers[1]"] == (
        "layer 1 (BatchNorm2d) cannot take layer 0's output of shape (batch, 3072):"
        " expected 4D input (got 2D input)"
    )


def test_the_output_must_score_each_label() -> None:
    _, problems = resolve(
        layers({"name": "Flatten"}, {"name": "Linear", "in_features": "auto", "out_features": 7})
    )
    assert "(batch, 7)" in problems["command.model.layers"]


def test_parameter_budget_is_checked_before_allocating() -> None:
    # 3 x 4096 x 4096 x 100,000 parameters would need 6 TB; the meta device makes it free.
    huge = layers(
        {"name": "Flatten"},
        {"name": "Linear", "in_features": "auto", "out_features": 100_000},
        {"name": "Linear", "in_features": "auto", "out_features": "n_labels"},
    )
    spec, problems = resolve(huge, shape=(3, 1024, 1024), budget=200_000_000)
    assert spec is None and "over this trainer's budget" in problems["command.model"]


def test_named_architectures() -> None:
    spec, problems = resolve(attempt_pb2.Model(name="resnet18"), shape=(3, 64, 64), n_labels=5)
    assert problems == {} and spec is not None and spec.architecture == "resnet18"
    assert model.build(spec)(torch.zeros(1, 3, 64, 64)).shape == (1, 5)
    _, problems = resolve(attempt_pb2.Model(name="os.system"))
    assert "unknown architecture" in problems["command.model.name"]


def test_optimizer_criterion_scheduler_checks() -> None:
    v = Violations()
    assert optim.check_optimizer(v, "o", struct({})).name == "SGD"  # the prototype's default
    assert optim.check_optimizer(v, "o", struct({"name": "Adam", "lr": -1})) is None
    assert optim.check_optimizer(v, "o2", struct({"name": "Adam", "learning_rate": 1})) is None
    assert optim.check_optimizer(v, "o3", struct({"name": "Magic"})) is None
    assert (
        optim.check_criterion(v, "c", struct({"name": "CrossEntropyLoss", "reduction": "none"}))
        is None
    )
    w = optim.check_criterion(v, "c2", struct({"name": "CrossEntropyLoss", "weight": [1, 2]}))
    assert w is not None and torch.equal(w.kwargs["weight"], torch.tensor([1.0, 2.0]))
    one = optim.check_scheduler(v, "s", struct({"name": "OneCycleLR", "max_lr": 0.1}), 3, 10)
    assert one is not None and one.kwargs["total_steps"] == 30 and optim.steps_per_batch(one)
    assert optim.check_scheduler(v, "s2", struct({"name": "StepLR"}), 3, 10) is None  # step_size
    fields = [item.field for item in v.items]
    assert fields == ["o", "o2.learning_rate", "o3.name", "c.reduction", "s2"], v.items


def test_transforms_run_in_canonical_order() -> None:
    v = Violations()
    # Keys sorted as the store returns them: Normalize before ToTensor.
    pipe = check_pipeline(v, "t", struct({
        "Normalize": {"mean": [0.5], "std": [0.5]}, "RandomHorizontalFlip": {"p": 1.0},
        "Resize": {"size": [4, 4]}, "ToTensor": True,
    }))  # fmt: skip
    assert v.items == [] and pipe is not None
    assert [n for n, _ in pipe.fixed] == ["Resize"] and [n for n, _ in pipe.random] == [
        "RandomHorizontalFlip"
    ]
    batch = torch.tensor([[[[0, 255]]]], dtype=torch.uint8)  # one 1x1x2 image
    assert BatchTransform(pipe)(batch).tolist() == [[[[1.0, -1.0]]]]  # flipped, normalized
    assert BatchTransform(pipe.without_augmentation())(batch).tolist() == [[[[-1.0, 1.0]]]]
    assert check_pipeline(v, "t", struct({"Rotate": True, "Normalize": {"mean": [0.5]}})) is None
    assert [item.field for item in v.items] == ["t.Rotate", "t.Normalize"]


def test_weights_round_trip_with_their_spec() -> None:
    net = torch.nn.Linear(3, 2)
    data = artifacts.weights_bytes(net.state_dict(), {"model": {"n_labels": 2}})
    tensors, spec = artifacts.read_weights(data)
    assert spec["model"] == {"n_labels": 2} and torch.equal(tensors["weight"], net.weight)
    with pytest.raises(InvalidArgument, match="weights"):
        artifacts.read_weights(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")


class _Exploit:
    def __reduce__(self):
        return (print, ("pwned",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_checkpoint_is_never_unpickled_beyond_tensors(capsys) -> None:
    buffer = io.BytesIO()
    torch.save({"format": 1, "payload": _Exploit()}, buffer)
    with pytest.raises(InvalidArgument, match="resume_checkpoint"):
        artifacts.read_checkpoint(buffer.getvalue())
    with pytest.raises(InvalidArgument):
        artifacts.read_checkpoint(pickle.dumps(_Exploit(), protocol=4))
    assert "pwned" not in capsys.readouterr().out


def test_chunks_reassemble_and_detect_damage() -> None:
    data = bytes(range(256)) * 10
    pieces = list(artifacts.chunks(data, 3, 1000))
    assert len(pieces) == 3 and pieces[-1].sha256 and not pieces[0].sha256
    assert artifacts.assemble(pieces) == data
    pieces[1].data = b"x" * len(pieces[1].data)
    with pytest.raises(ValueError, match="sha256"):
        artifacts.assemble(pieces)


def test_the_prototype_command_builds_as_written() -> None:
    from PIL import Image

    from metalearn import documents
    from tests.conftest import SEED
    from trainer.transforms import apply_image_ops, fixed_tensor

    seed = documents.attempt_from_json(SEED.read_text()).training_commands
    # Its hard-coded Linear(111392, 120) fits 500x500 RGB images, as the prototype had them.
    spec, problems = resolve(seed.model, shape=(3, 500, 500), n_labels=len(seed.label_names))
    assert problems == {} and spec is not None
    assert spec.layers[10]["in_features"] == 111392 and spec.layers[-1]["out_features"] == 9
    # "Image.ANTIALIAS" and "'RGB'" are understood; a grayscale PNG becomes RGB 500x500.
    image = apply_image_ops(Image.new("L", (40, 30)), seed.image_ops)
    assert (image.mode, image.size) == ("RGB", (500, 500))
    v = Violations()
    pipe = check_pipeline(v, "command.transform", seed.transform)
    assert (
        v.items == []
        and pipe is not None
        and pipe.normalize == {"mean": [0.5] * 3, "std": [0.5] * 3}
    )
    assert fixed_tensor(image, pipe).shape == (3, 500, 500)
    for name in ("criterion", "optimizer"):
        assert getattr(optim, f"check_{name}")(v, name, getattr(seed, name)) is not None


def test_fuzzer_findings_in_schedulers() -> None:
    """Found as INTERNAL by the Train fuzzer: values torch accepts at construction and
    trips over at the first step. Both are now the command's named mistake."""
    v = Violations()
    assert (
        optim.check_scheduler(v, "s", struct({"name": "StepLR", "step_size": "x"}), 3, 10) is None
    )
    too_short = struct({"name": "OneCycleLR", "max_lr": 0.1, "total_steps": 5})
    assert optim.check_scheduler(v, "s2", too_short, 3, 10) is None
    assert [item.field for item in v.items] == ["s", "s2"] and "30 steps" in v.items[1].description


def test_the_gateways_signature_table_matches_torch() -> None:
    """`metalearn/signatures.py` is what the installed torch says (run `make signatures`)."""
    from metalearn.signatures import SIGNATURES
    from trainer.signatures import signatures

    assert signatures() == SIGNATURES


def _photo(side: int) -> bytes:
    """A smooth JPEG (a gradient with a disc), like a photo rather than noise."""
    from PIL import Image, ImageDraw

    ramp = torch.linspace(0, 255, side).to(torch.uint8)
    pixels = torch.stack(
        [ramp.expand(side, side), ramp.expand(side, side).T, ramp[:1].expand(side, side)], -1
    )
    image = Image.fromarray(pixels.numpy())
    ImageDraw.Draw(image).ellipse((side // 4, side // 4, side // 2, side // 2), fill=(200, 30, 90))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


def test_a_jpeg_its_first_op_shrinks_decodes_at_a_draft_scale() -> None:
    from PIL import Image
    from torchvision.transforms.functional import pil_to_tensor

    from trainer.transforms import apply_image_ops, draft

    data = _photo(500)
    shrink = [attempt_pb2.ImageOp(resize=attempt_pb2.Resize(size=[64, 64]))]
    with Image.open(io.BytesIO(data)) as drafted, Image.open(io.BytesIO(data)) as whole:
        draft(drafted, shrink)
        assert drafted.size == (125, 125)  # 1/4: the smallest scale still >= 64
        small = pil_to_tensor(apply_image_ops(drafted, shrink)).float()
        full = pil_to_tensor(apply_image_ops(whole, shrink)).float()
    # The same picture at 64x64: a few levels apart at most, on average.
    assert (small - full).abs().mean() < 3.0
    crop_first = [
        attempt_pb2.ImageOp(center_crop=attempt_pb2.CenterCrop(size=[100, 100])),
        *shrink,
    ]
    with Image.open(io.BytesIO(data)) as cropped:
        draft(cropped, crop_first)  # a crop's pixels are the full image's: no draft
        assert cropped.size == (500, 500)


@pytest.mark.parametrize(("count", "batch"), [(103, 10), (64, 32), (5, 7)])
def test_batches_come_in_a_dataloaders_order(count: int, batch: int) -> None:
    """A seed keeps giving the batches it gave when runs went through a DataLoader."""
    from torch.utils.data import DataLoader, TensorDataset

    from trainer import loop

    images, labels = torch.arange(count).view(count, 1), torch.arange(count)
    theirs, ours = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    reference = DataLoader(
        TensorDataset(images, labels), batch_size=batch, shuffle=True, generator=theirs
    )
    batches = loop.loader(loop.TensorImages(images, labels), batch, shuffle=True, generator=ours)
    for _ in range(3):  # epochs: the generator moves on alike
        assert [y.tolist() for _, y in batches] == [y.tolist() for _, y in reference]
    assert ours.get_state().equal(theirs.get_state())
    in_order = loop.loader(loop.TensorImages(images, labels), batch, shuffle=False)
    assert torch.cat([y for _, y in in_order]).tolist() == list(range(count))
    assert len(in_order) == len(reference)
    # Unshuffled, torch's own generator moves on as a DataLoader's pass moved it.
    torch.manual_seed(3)
    list(DataLoader(TensorDataset(images, labels), batch_size=batch))
    moved = torch.get_rng_state()
    torch.manual_seed(3)
    list(in_order)
    assert torch.get_rng_state().equal(moved)


@pytest.mark.parametrize(
    "criterion",
    [
        torch.nn.CrossEntropyLoss(),
        torch.nn.CrossEntropyLoss(weight=torch.tensor([0.2, 1.0, 3.0])),
        torch.nn.CrossEntropyLoss(ignore_index=1),
        torch.nn.NLLLoss(weight=torch.tensor([1.0, 0.5, 2.0])),
        torch.nn.CrossEntropyLoss(reduction="sum"),
    ],
)
def test_the_ranks_weighted_losses_average_to_the_whole_batchs(criterion) -> None:
    """DDP averages the ranks' gradients: the weights make that the one-device gradient,
    class weights and ignored labels included (uneven parts too)."""
    from trainer.team import Team

    scores = torch.randn(7, 3)
    labels = torch.tensor([0, 1, 2, 2, 1, 0, 2])
    whole = criterion(scores, labels)
    for world in (2, 3):
        total = torch.tensor(0.0)
        for rank in range(world):
            team = Team(rank, world, torch.device("cpu"))
            part, part_labels, count = team.share(scores, labels)
            weight = team.weight(count, part_labels, labels, criterion)
            loss = criterion(part, part_labels)
            if not torch.isnan(loss):  # a part of ignored labels only: weight 0
                total += weight * loss
        assert float(total / world) == pytest.approx(float(whole), rel=1e-5)
