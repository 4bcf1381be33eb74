"""A declared task profiled from a sample of its images sent with ProfileTask (what the
gateway does for a task that runs reported from users' own code declared): decoded to
one mode and size, deterministic, every bad input named; the digits' landmarks stand
well above the same images' with shuffled labels."""

from __future__ import annotations

import io
import random
import struct
import zlib
from collections.abc import Iterator, Sequence
from typing import Any

import grpc
import numpy as np
import pytest
import torch
from PIL import Image

from gateway.tasks.profiler import FEATURES, profile_problem
from metalearn import digits
from metalearn.credentials import open_channel
from metalearn.errors import InvalidArgument
from metalearn.limits import CommandLimits
from metalearn.v1 import attempt_pb2, task_pb2, trainer_service_pb2, trainer_service_pb2_grpc
from tests.harness import GatewayThread
from tests.rpc import expect_error, violations
from trainer import profiling
from trainer.config import TrainerConfig
from trainer.server import create_server

pb = trainer_service_pb2
CODE = grpc.StatusCode
CREDENTIAL = "test-gateway-credential"
# Labels no other test uploads: the store holds no images of them, so a profile of them
# can only come from the sample.
LABELS = ("sample circle", "sample square", "sample bar", "sample never shown")
LANDMARKS = ("landmark_centroid", "landmark_1nn", "landmark_linear", "probe_1nn", "probe_centroid")


def encode(pixels: np.ndarray[Any, Any], fmt: str, mode: str | None = None) -> bytes:
    image = Image.fromarray(pixels)
    if mode is not None:
        image = image.convert(mode)
    buffer = io.BytesIO()
    # Quality 95: JPEG's loss must not blur the classes' shapes away.
    image.save(buffer, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def shape_image(
    label: int, size: tuple[int, int], rng: np.random.Generator
) -> np.ndarray[Any, Any]:
    """An RGB image (height, width) of noise with its class's bright shape in its own
    colour: a circle (0), a square (1) or a bar (2)."""
    height, width = size
    pixels = rng.integers(0, 70, (height, width, 3), dtype=np.uint8)
    y, x = np.mgrid[0:height, 0:width]
    cy, cx = height / 2, width / 2
    if label == 0:
        inside = (y - cy) ** 2 + (x - cx) ** 2 < (min(height, width) / 3) ** 2
    elif label == 1:
        inside = (abs(y - cy) < height / 4) & (abs(x - cx) < width / 4)
    else:
        inside = abs(y - cy) < height / 8
    pixels[inside, label] = 240
    return pixels


def shapes_sample(per_class: int = 20, seed: int = 0) -> task_pb2.TaskSample:
    """Three of LABELS' four classes: two thirds 16x16 PNGs, a third 24x20 JPEGs (to be
    resized to 16x16, the most common size)."""
    rng = np.random.default_rng(seed)
    sample = task_pb2.TaskSample()
    for label in range(3):
        for k in range(per_class):
            if k % 3 == 2:
                data = encode(shape_image(label, (20, 24), rng), "JPEG")
            else:
                data = encode(shape_image(label, (16, 16), rng), "PNG")
            sample.images.add(label=label, data=data)
    return sample


def request(
    sample: task_pb2.TaskSample,
    labels: Sequence[str] = LABELS,
    image_ops: Sequence[attempt_pb2.ImageOp] = (),
) -> pb.TrainerServiceProfileTaskRequest:
    key = task_pb2.TaskKey(label_names=labels, image_ops=image_ops)
    return pb.TrainerServiceProfileTaskRequest(task=key, sample=sample)


def without_seconds(p: task_pb2.TaskProfile) -> task_pb2.TaskProfile:
    """The profile but for the time it took, the one field that may differ."""
    found = task_pb2.TaskProfile()
    found.CopyFrom(p)
    found.ClearField("seconds")
    return found


@pytest.fixture(scope="module")
def trainer(
    gateway_server: GatewayThread, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[trainer_service_pb2_grpc.TrainerServiceStub]:
    """A real trainer server in this process, whose gateway is the session's real one."""
    config = TrainerConfig(
        listen="127.0.0.1:0", gateway=gateway_server.address,
        cache_dir=tmp_path_factory.mktemp("cache"), token=gateway_server.admin_token,
        gateway_credential=CREDENTIAL,
    )  # fmt: skip
    server, port, _, _ = create_server(config)
    server.start()
    with open_channel(f"127.0.0.1:{port}", CREDENTIAL) as channel:
        yield trainer_service_pb2_grpc.TrainerServiceStub(channel)
    server.stop(5).wait()


def test_a_sample_is_profiled_instead_of_the_stores_images(
    trainer: trainer_service_pb2_grpc.TrainerServiceStub,
) -> None:
    sample = shapes_sample()
    found = trainer.ProfileTask(request(sample), timeout=120).profile
    assert set(found.features) == FEATURES
    assert profile_problem(found) == ""
    # 60 images of 3 shown classes; the fourth label counts as a class all the same (the
    # gateway's n_classes is the declared labels); RGB, at the PNGs' size.
    assert found.images == 60 and found.classes == 4
    assert list(found.input_shape) == [3, 16, 16]
    assert found.features["log_classes"] == 2 and found.features["channels"] == 3
    assert found.features["log_pixels"] == 8
    # Three of four classes shown: the smallest count is 0, so all imbalance.
    assert found.features["imbalance"] == 1
    # The shapes are plain to see, the JPEGs' resize and loss included.
    assert found.features["landmark_1nn"] > 0.8 and found.features["probe_1nn"] > 0.8
    # Deterministic: the same bytes again give the same profile, and so do the same
    # labelled images sent in another order with the labels listed in another order.
    again = trainer.ProfileTask(request(sample), timeout=120).profile
    assert without_seconds(again) == without_seconds(found)
    reordered_labels = [LABELS[i] for i in (2, 0, 3, 1)]
    position = {label: i for i, label in enumerate(reordered_labels)}
    shuffled = list(sample.images)
    random.Random(5).shuffle(shuffled)
    reordered = task_pb2.TaskSample(
        images=[
            task_pb2.SampleImage(label=position[LABELS[image.label]], data=image.data)
            for image in shuffled
        ]
    )
    third = trainer.ProfileTask(request(reordered, reordered_labels), timeout=120).profile
    assert without_seconds(third) == without_seconds(found)
    # What the RPC returns is the pure function's profile of the sample.
    local = profiling.profile(profiling.sample_tensors(sample, LABELS, CommandLimits()), 4)
    assert without_seconds(local) == without_seconds(found)


def test_the_tensors_are_the_images_in_one_mode_and_size() -> None:
    rng = np.random.default_rng(1)
    grey = [rng.integers(0, 256, (10, 12), dtype=np.uint8) for _ in range(3)]
    odd = rng.integers(0, 256, (7, 9), dtype=np.uint8)
    sample = task_pb2.TaskSample(
        images=[
            task_pb2.SampleImage(label=1, data=encode(grey[0], "PNG")),
            task_pb2.SampleImage(label=0, data=encode(grey[1], "PNG")),
            task_pb2.SampleImage(label=0, data=encode(grey[2], "PNG", mode="1")),
            task_pb2.SampleImage(label=1, data=encode(odd, "PNG")),
        ]
    )
    found = profiling.sample_tensors(sample, ["b", "a"], CommandLimits())
    # All greyscale (L and 1-bit): one channel, at the common 12x10.
    assert found.images.shape == (4, 1, 10, 12) and found.images.dtype == torch.uint8
    # Labels index the sorted labels ("a", "b"): the request's 1 ("a") is class 0.
    assert found.labels.tolist() == [0, 0, 1, 1]
    rows = {bytes(found.images[i].numpy().tobytes()): i for i in range(4)}
    assert found.labels[rows[grey[1].tobytes()]] == 1
    # The odd size is Pillow's bilinear resize of it, exactly.
    resized = np.asarray(Image.fromarray(odd).resize((12, 10), Image.Resampling.BILINEAR))
    assert resized.tobytes() in rows
    # 1-bit becomes 0 and 255.
    one_bit = np.asarray(Image.fromarray(grey[2]).convert("1").convert("L"))
    assert one_bit.tobytes() in rows

    # One colour image makes the whole sample RGB, greys repeated in every channel.
    colour = rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)
    mixed = task_pb2.TaskSample(
        images=[
            task_pb2.SampleImage(label=0, data=encode(grey[0], "PNG")),
            task_pb2.SampleImage(label=1, data=encode(colour, "JPEG")),
        ]
    )
    found = profiling.sample_tensors(mixed, ["a", "b"], CommandLimits())
    assert found.images.shape == (2, 3, 10, 12)
    assert torch.equal(found.images[0, 0], torch.from_numpy(grey[0]))
    assert torch.equal(found.images[0, 0], found.images[0, 2])

    # A 16-bit grey PNG is scaled to 8 bits, not clipped at 255 (convert("L") would).
    wide = (np.arange(120, dtype=np.uint16).reshape(10, 12) * 500).astype(np.uint16)
    deep = task_pb2.TaskSample(
        images=[
            task_pb2.SampleImage(label=0, data=encode(wide, "PNG")),
            task_pb2.SampleImage(label=1, data=encode(grey[0], "PNG")),
        ]
    )
    found = profiling.sample_tensors(deep, ["a", "b"], CommandLimits())
    assert found.images.shape == (2, 1, 10, 12)
    assert found.images[0, 0].numpy().tolist() == (wide >> 8).astype(np.uint8).tolist()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims a size in its header and holds almost no data: a decompression
    bomb's header, which must be refused before anything is decoded."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 16)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def small_png(value: int = 0) -> bytes:
    return encode(np.full((4, 4), value, dtype=np.uint8), "PNG")


def with_image(data: bytes, label: int = 0, at: int = 3) -> task_pb2.TaskSample:
    """Four good images of classes 0 and 1 with `data`/`label` at `at`."""
    images = [task_pb2.SampleImage(label=i % 2, data=small_png(i)) for i in range(4)]
    images[at] = task_pb2.SampleImage(label=label, data=data)
    return task_pb2.TaskSample(images=images)


def test_bad_samples_are_named(trainer: trainer_service_pb2_grpc.TrainerServiceStub) -> None:
    def refused(req: pb.TrainerServiceProfileTaskRequest) -> dict[str, str]:
        err = expect_error(CODE.INVALID_ARGUMENT, trainer.ProfileTask, req, timeout=60)
        return violations(err)

    gif = io.BytesIO()
    Image.new("L", (4, 4)).save(gif, format="GIF")
    truncated = encode(np.random.default_rng(0).integers(0, 256, (32, 32), dtype=np.uint8), "PNG")
    for data, words in [
        (b"not an image", "not a PNG or JPEG"),
        (gif.getvalue(), "not a PNG or JPEG"),
        # One pixel over 1,048,576; then a bomb's header (Pillow itself refuses it).
        (png_header_only(1025, 1024), "over the limit of 1,048,576 pixels"),
        (png_header_only(100_000, 100_000), "larger than 1,048,576 pixels"),
        # The header is fine; the pixels stop short.
        (truncated[: len(truncated) // 2], "cannot be decoded"),
    ]:
        found = refused(request(with_image(data)))
        assert set(found) == {"sample.images[3].data"}, (words, found)
        assert words in found["sample.images[3].data"]
    for label in (-1, len(LABELS)):
        found = refused(request(with_image(small_png(), label=label)))
        assert set(found) == {"sample.images[3].label"}, found
        assert f"0 to {len(LABELS) - 1}" in found["sample.images[3].label"]
    # Each bad image is named at once.
    both = with_image(b"junk", label=9)
    both.images[0].data = b"also junk"
    assert set(refused(request(both))) == {
        "sample.images[0].data", "sample.images[3].data", "sample.images[3].label"
    }  # fmt: skip

    def images_refused(sample: task_pb2.TaskSample, words: str) -> None:
        found = refused(request(sample))
        assert set(found) == {"sample.images"}, found
        assert words in found["sample.images"], found

    images_refused(task_pb2.TaskSample(), "at least 2 images")
    too_many = task_pb2.TaskSample(
        images=[task_pb2.SampleImage(label=i % 2, data=small_png()) for i in range(1001)]
    )
    images_refused(too_many, "over the limit of 1,000")
    # Trailing bytes that Pillow would ignore still count: 8 MiB is of what is sent.
    padded = small_png() + b"\0" * (4 * 1024 * 1024)
    heavy = task_pb2.TaskSample(images=[task_pb2.SampleImage(label=i, data=padded) for i in (0, 1)])
    images_refused(heavy, "over the limit of 8,388,608")
    one_class = task_pb2.TaskSample(
        images=[task_pb2.SampleImage(label=2, data=small_png(i)) for i in range(5)]
    )
    images_refused(one_class, "only 'sample bar'")
    # A sample is profiled as sent: no image ops.
    resize = attempt_pb2.ImageOp(resize=attempt_pb2.Resize(size=[8]))
    found = refused(request(with_image(small_png()), image_ops=[resize]))
    assert set(found) == {"task.image_ops"}, found
    # The task's labels are checked as ever.
    assert "task.label_names[1]" in refused(request(with_image(small_png()), ["a", "a"]))


def test_a_sample_over_the_data_limit_is_refused_before_decoding() -> None:
    sample = with_image(small_png())
    # Four 4x4 grey images are 64 bytes.
    with pytest.raises(InvalidArgument) as info:
        profiling.sample_tensors(sample, LABELS, CommandLimits(max_data_bytes=63))
    assert [v.field for v in info.value.violations] == ["sample.images"]
    assert (
        profiling.sample_tensors(sample, LABELS, CommandLimits(max_data_bytes=64)).images.numel()
        == 64
    )


# The landmarks of real labels must beat shuffled ones by at least this much, on the gain
# over chance (0 = chance, 1 = perfect). The digits' are 0.89 to 0.98 with their labels
# and within 0.03 of 0 with shuffled ones; profiles are deterministic (seeded,
# single-threaded, rounded) and so is the shuffle, so the same bytes give the same numbers
# on every run and a margin this wide cannot flake.
MARGIN = 0.5


def test_the_digits_landmarks_stand_above_shuffled_labels() -> None:
    uploads = digits.load()[:600]
    labels = list(digits.LABELS)
    real = task_pb2.TaskSample(
        images=[task_pb2.SampleImage(label=labels.index(u.label), data=u.data) for u in uploads]
    )
    targets = [image.label for image in real.images]
    random.Random(0).shuffle(targets)
    shuffled = task_pb2.TaskSample(
        images=[
            task_pb2.SampleImage(label=t, data=image.data)
            for t, image in zip(targets, real.images, strict=True)
        ]
    )
    limits = CommandLimits()
    real_features = profiling.profile(profiling.sample_tensors(real, labels, limits), 10).features
    noise = profiling.profile(profiling.sample_tensors(shuffled, labels, limits), 10).features
    for name in LANDMARKS:
        assert real_features[name] - noise[name] >= MARGIN, (name, real_features[name], noise[name])
    assert real_features["probe_fisher"] > 3 * noise["probe_fisher"]
    # The same images: what does not read labels is the same.
    for name in ("log_images", "log_pixels", "pixel_mean", "pixel_std", "pixel_skew", "sparsity"):
        assert real_features[name] == noise[name], name
    # Greyscale PNGs stay one channel, at their own 8x8.
    assert real_features["channels"] == 1 and real_features["log_pixels"] == 6
