"""The SDK's task sample (`Run.log_task_sample`) and declared meta-features
(`start_run(task_features=...)`): every kind of image it takes comes out as the same
pixels, the sample is a seeded uniform draw within the gateway's limits, bad input is
named at the call, and a real gateway takes what it sends."""

from __future__ import annotations

import io
import logging
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import metalearn
from metalearn.outgoing import MetalearnError
from metalearn.reporting import sample
from metalearn.reporting.run import Run
from metalearn.v1 import (
    attempt_service_pb2,
    attempt_service_pb2_grpc,
    task_pb2,
    task_service_pb2,
    task_service_pb2_grpc,
)
from tests.harness import GatewayThread


def _name() -> str:
    return f"sample-{uuid.uuid4().hex[:10]}"


def _pixels(data: bytes) -> np.ndarray:
    """What Pillow decodes `data` to: the pixels a trainer profiles."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image)


def _encoded(image: object, label: int = 0) -> bytes:
    return sample.encode(sample.prepare(image, label, "images[0]"))


def _noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


def _png(array: np.ndarray, fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format=fmt)
    return out.getvalue()


# The encoding: every accepted kind of image, through Pillow, gives the same pixels.
@pytest.mark.parametrize("shape", [(12, 9), (12, 9, 1), (12, 9, 3), (12, 9, 4)])
def test_a_uint8_numpy_image_comes_back_as_the_same_pixels(shape: tuple[int, ...]) -> None:
    array = _noise(np.random.default_rng(1), shape)
    expected = array[:, :, 0] if shape[-1:] == (1,) else array
    assert np.array_equal(_pixels(_encoded(array)), expected)


def test_a_float_image_is_scaled_to_the_nearest_uint8() -> None:
    array = np.random.default_rng(2).random((8, 10, 3), dtype=np.float32)
    expected = np.rint(array * 255).astype(np.uint8)
    assert np.array_equal(_pixels(_encoded(array)), expected)
    assert np.array_equal(_pixels(_encoded(array.astype(np.float64))), expected)


def test_a_torch_tensor_is_read_as_channels_first() -> None:
    rgb = _noise(np.random.default_rng(3), (7, 11, 3))
    chw = torch.from_numpy(rgb).permute(2, 0, 1)  # as torchvision's ToTensor lays it out
    assert np.array_equal(_pixels(_encoded(chw)), rgb)
    assert np.array_equal(_pixels(_encoded(chw.float() / 255)), rgb)
    gray = torch.from_numpy(rgb[:, :, 0].copy())
    assert np.array_equal(_pixels(_encoded(gray)), rgb[:, :, 0])
    assert np.array_equal(_pixels(_encoded(gray.unsqueeze(0))), rgb[:, :, 0])


def test_a_pil_image_is_sent_in_a_mode_a_trainer_reads() -> None:
    rgb = _noise(np.random.default_rng(4), (9, 9, 3))
    assert np.array_equal(_pixels(_encoded(Image.fromarray(rgb))), rgb)
    palette = Image.fromarray(rgb).convert("P")
    assert np.array_equal(_pixels(_encoded(palette)), np.asarray(palette.convert("RGB")))
    bits = Image.fromarray(rgb[:, :, 0]).convert("1")
    assert np.array_equal(_pixels(_encoded(bits)), np.asarray(bits.convert("L")))


def test_png_and_jpeg_files_are_sent_as_they_are_and_others_as_png(tmp_path: Path) -> None:
    rgb = _noise(np.random.default_rng(5), (10, 6, 3))
    png, jpeg, bmp = _png(rgb), _png(rgb, "JPEG"), _png(rgb, "BMP")
    assert _encoded(png) == png
    assert _encoded(jpeg) == jpeg
    (tmp_path / "a.jpg").write_bytes(jpeg)
    (tmp_path / "b.bmp").write_bytes(bmp)
    assert _encoded(tmp_path / "a.jpg") == jpeg
    assert _encoded(str(tmp_path / "a.jpg")) == jpeg
    from_bmp = _encoded(tmp_path / "b.bmp")
    assert from_bmp.startswith(b"\x89PNG") and np.array_equal(_pixels(from_bmp), rgb)


def test_the_pixels_are_copied_at_the_call() -> None:
    """The sample is encoded later, off the training thread: the caller's array changed
    in place meanwhile must not change what is sent."""
    array = np.zeros((4, 4, 3), dtype=np.uint8)
    item = sample.prepare(array, 0, "images[0]")
    array[:] = 255
    assert np.array_equal(_pixels(sample.encode(item)), np.zeros((4, 4, 3), dtype=np.uint8))


# The draw and the size bound.
def test_the_sample_is_seeded_uniform_and_keeps_the_class_balance() -> None:
    drawn = sample.draw(10_000, 500, seed=0)
    assert len(drawn) == 500 and len(set(drawn)) == 500
    assert all(0 <= i < 10_000 for i in drawn)
    assert sample.draw(10_000, 500, seed=0) == drawn
    assert sample.draw(10_000, 500, seed=1) != drawn
    assert sorted(sample.draw(30, 500, seed=0)) == list(range(30))
    # Classes sorted as a dataset often is: a first-500 slice would show only class 0.
    labels = [0] * 7_000 + [1] * 3_000
    share = sum(labels[i] for i in drawn) / len(drawn)
    assert 0.25 < share < 0.35
    # Dropping from the end keeps a uniform sample too: its first 100 are not the lowest.
    assert max(drawn[:100]) > 5_000


def test_images_past_8_mib_are_dropped_from_the_end_of_the_random_order() -> None:
    rng = np.random.default_rng(6)
    # Noise does not compress: each PNG is about 0.75 MB, 20 of them about 15 MB.
    encoded = [(i % 2, _encoded(_noise(rng, (500, 500, 3)))) for i in range(20)]
    kept = sample.fit(encoded)
    assert 0 < len(kept) < len(encoded) and kept == encoded[: len(kept)]
    size = sample.REQUEST_OVERHEAD + sum(len(d) + sample.IMAGE_OVERHEAD for _, d in kept)
    assert size <= sample.MAX_BYTES
    assert size + len(encoded[len(kept)][1]) + sample.IMAGE_OVERHEAD > sample.MAX_BYTES
    request = task_pb2.TaskSample(
        images=[task_pb2.SampleImage(label=label, data=data) for label, data in kept]
    )
    assert request.ByteSize() <= sample.MAX_BYTES
    assert sample.fit(encoded[:3]) == encoded[:3]


# Bad input, named at the call.
def test_labels_are_indices_or_names_of_the_declared_labels() -> None:
    declared = ["cat", "dog", "bird"]
    assert sample.label_indices(["dog", 0, np.int64(2)], declared) == [1, 0, 2]
    assert sample.label_indices(np.array([2, 1]), declared) == [2, 1]
    assert sample.label_indices(torch.tensor([0, 2]), declared) == [0, 2]
    assert sample.label_indices(np.array(["bird", "cat"]), declared) == [2, 0]
    with pytest.raises(ValueError, match=r"labels\[1\]: 'fish' is not one of"):
        sample.label_indices(["cat", "fish"], declared)
    with pytest.raises(ValueError, match=r"labels\[0\]: 3 is not an index into the run's 3"):
        sample.label_indices([3], declared)
    with pytest.raises(ValueError, match=r"labels\[0\]: -1 is not an index"):
        sample.label_indices([-1], declared)
    with pytest.raises(ValueError, match=r"labels\[0\]: 1.0 is neither"):
        sample.label_indices([1.0], declared)
    with pytest.raises(ValueError, match=r"labels\[0\]: True is neither"):
        sample.label_indices([True], declared)
    with pytest.raises(ValueError, match="declares no labels"):
        sample.label_indices([0], [])


@pytest.mark.parametrize(
    ("image", "message"),
    [
        ("not/a/file.png", r"'not/a/file.png' is not a file"),
        (b"GIF89a but not really", "not an image Pillow can read"),
        (_png(np.zeros((4, 4), np.uint8), "BMP"), "bytes of a BMP image"),
        ([[0, 1], [2, 3]], "a list is not an image"),
        (np.zeros((3, 8, 8), np.uint8), r"shape \(3, 8, 8\).*x.transpose\(1, 2, 0\)"),
        (np.zeros((8, 8, 2), np.uint8), "its channels must be 1, 3 or 4"),
        (np.zeros((2, 8, 8, 3), np.uint8), "images are H x W or H x W x C"),
        (np.zeros((8, 8), np.int32), "of int32: images are uint8, or float"),
        (np.full((8, 8), 1.5), "floats from 1.5 to 1.5: float images are in"),
        (np.full((8, 8), -0.5), "undo a Normalize"),
        (np.full((8, 8), np.nan), "floats from nan"),
        (np.zeros((0, 8), np.uint8), "is empty"),
        (np.zeros((1025, 1024), np.uint8), "1024x1025 pixels is over the limit of 1,048,576"),
        (torch.zeros(8, 8, 3), r"shape \(8, 8, 3\): tensors are C x H x W"),
        (torch.zeros(3, 8, 8, dtype=torch.int64), "torch.int64"),
        (torch.full((3, 8, 8), 2.0), "float images are in"),
        (Image.new("RGB", (2048, 1024)), "2048x1024 pixels is over the limit"),
    ],
)
def test_a_non_image_is_named(image: object, message: str) -> None:
    with pytest.raises(ValueError, match=message) as err:
        sample.prepare(image, 0, "images[7]")
    assert str(err.value).startswith("images[7]: ")


def test_a_big_file_is_refused_by_its_header_alone(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    Image.new("L", (2000, 1000)).save(path)
    with pytest.raises(ValueError, match="2000x1000 pixels is over the limit"):
        sample.prepare(path, 0, "images[0]")


def _run(gateway: GatewayThread, tmp_path: Path, **kwargs: object) -> Run:
    return metalearn.start_run(
        _name(), gateway=gateway.address, token=gateway.admin_token, spool_dir=tmp_path,
        **kwargs,  # type: ignore[arg-type]
    )  # fmt: skip


def test_bad_calls_raise_at_once_and_send_nothing(gateway: GatewayThread, tmp_path: Path) -> None:
    images = [np.zeros((4, 4), np.uint8)] * 4
    with _run(gateway, tmp_path) as run, pytest.raises(ValueError, match="declares no labels"):
        run.log_task_sample(images, [0, 1, 0, 1])
    with _run(gateway, tmp_path, labels=["cat", "dog"]) as run:
        with pytest.raises(ValueError, match="4 images, 3 labels"):
            run.log_task_sample(images, [0, 1, 0])
        with pytest.raises(ValueError, match=r"labels\[2\]: 'bird'"):
            run.log_task_sample(images, ["cat", "dog", "bird", "cat"])
        with pytest.raises(ValueError, match="only the label 'dog'"):
            run.log_task_sample(images, [1, 1, 1, 1])
        with pytest.raises(ValueError, match="images is empty"):
            run.log_task_sample([], [])
        with pytest.raises(ValueError, match="max_images must be an integer from 1 to 1000"):
            run.log_task_sample(images, [0, 1, 0, 1], max_images=1001)
        with pytest.raises(ValueError, match="max_images"):
            run.log_task_sample(images, [0, 1, 0, 1], max_images=0)
        with pytest.raises(ValueError, match=r"images\[2\]: 'nowhere' is not a file"):
            run.log_task_sample([*images[:2], "nowhere", images[3]], [0, 1, 0, 1])
        assert run.task_sample_task is None and run.task_sample_error is None
    with pytest.raises(RuntimeError, match="has finished"):
        run.log_task_sample(images, [0, 1, 0, 1])


def test_declared_features_are_checked_at_the_call(gateway: GatewayThread) -> None:
    address, token = gateway.address, gateway.admin_token
    with pytest.raises(ValueError, match=r"task_features\['imbalance'\]: nan is not finite"):
        metalearn.start_run(_name(), labels=["a", "b"], task_features={"imbalance": float("nan")},
                            gateway=address, token=token)  # fmt: skip
    with pytest.raises(TypeError, match=r"task_features\['pixel_std'\]: 'high' is not a number"):
        metalearn.start_run(_name(), labels=["a", "b"], task_features={"pixel_std": "high"},
                            gateway=address, token=token)  # fmt: skip
    with pytest.raises(TypeError, match="the name 3 is not a string"):
        metalearn.start_run(_name(), labels=["a", "b"], task_features={3: 1.0},  # type: ignore[dict-item]
                            gateway=address, token=token)  # fmt: skip
    # A name that is no profile feature is the gateway's to name.
    with pytest.raises(MetalearnError) as err:
        metalearn.start_run(_name(), labels=["a", "b"], task_features={"colourfulness": 1.0},
                            gateway=address, token=token)  # fmt: skip
    assert "task.features[colourfulness]" in err.value.violations


# Against a real gateway.
def _tasks(gateway: GatewayThread) -> list[task_pb2.Task]:
    with gateway.channel() as channel:
        stub = task_service_pb2_grpc.TaskServiceStub(channel)
        return list(
            stub.ListTasks(
                task_service_pb2.ListTasksRequest(all_versions=True, page_size=500)
            ).tasks
        )


def test_declared_features_are_stored_with_the_run_and_its_task(
    gateway: GatewayThread, tmp_path: Path
) -> None:
    with _run(
        gateway, tmp_path, labels=["cat", "dog"], dataset="pets", input_shape=[3, 32, 32],
        train_size=1000, task_features={"imbalance": 0.25, "pixel_std": 0.3},
    ) as run:  # fmt: skip
        run.log(epoch=1, loss=0.5)
        attempt_id = run.id
    with gateway.channel() as channel:
        got = (
            attempt_service_pb2_grpc.AttemptServiceStub(channel)
            .GetAttempt(attempt_service_pb2.GetAttemptRequest(id=attempt_id))
            .attempt
        )
    assert dict(got.reported.task.features) == {"imbalance": 0.25, "pixel_std": 0.3}
    declared = [t for t in _tasks(gateway) if t.dataset == "pets"]
    assert [t.source for t in declared] == [task_pb2.TASK_SOURCE_DECLARED]
    assert declared[0].profile.features["imbalance"] == 0.25
    assert declared[0].profile.features["pixel_std"] == 0.3


def _images(count: int, seed: int) -> tuple[np.ndarray, list[int]]:
    """`count` small RGB images, a batch as numpy holds a dataset, of 3 classes that
    differ in brightness."""
    rng = np.random.default_rng(seed)
    labels = [i % 3 for i in range(count)]
    base = np.array(labels, dtype=np.float32)[:, None, None, None] * 0.3
    images = np.clip(base + rng.random((count, 16, 16, 3), dtype=np.float32) * 0.3, 0, 1)
    return images, labels


def test_a_sample_sent_through_the_sdk_makes_the_task_a_sampled_one(
    gateway: GatewayThread, tmp_path: Path
) -> None:
    images, labels = _images(300, seed=7)
    with _run(gateway, tmp_path, labels=["cat", "dog", "bird"], dataset="zoo") as run:
        run.log_task_sample(images, labels, max_images=120, seed=3)
        run.log(epoch=1, loss=0.5)
    # finish() waited for the upload: the gateway's answer is there without polling.
    assert run.task_sample_error is None
    task = run.task_sample_task
    assert task is not None
    assert task.source == task_pb2.TASK_SOURCE_SAMPLE and task.dataset == "zoo"
    assert sorted(task.label_names) == ["bird", "cat", "dog"]
    assert task.state in (task_pb2.TASK_STATE_PENDING, task_pb2.TASK_STATE_READY)
    listed = {t.fingerprint: t for t in _tasks(gateway)}
    assert task.fingerprint in listed
    assert listed[task.fingerprint].source == task_pb2.TASK_SOURCE_SAMPLE

    # The same draw sent again (by another run) is the same version of the task; another
    # seed draws other images, a new version.
    with _run(gateway, tmp_path, labels=["cat", "dog", "bird"], dataset="zoo") as again:
        again.log_task_sample(images, labels, max_images=120, seed=3)
    with _run(gateway, tmp_path, labels=["cat", "dog", "bird"], dataset="zoo") as other:
        other.log_task_sample(images, labels, max_images=120, seed=4)
    assert again.task_sample_task is not None and other.task_sample_task is not None
    assert again.task_sample_task.fingerprint == task.fingerprint
    assert other.task_sample_task.fingerprint != task.fingerprint


def test_a_sample_over_8_mib_is_cut_to_fit_and_taken(
    gateway: GatewayThread, tmp_path: Path
) -> None:
    rng = np.random.default_rng(8)
    # 16 noise images of 1,048,576 grey pixels: about 1 MB each as PNG, 16 MB in all.
    images = [_noise(rng, (1024, 1024)) for _ in range(16)]
    with _run(gateway, tmp_path, labels=["a", "b"]) as run:
        run.log_task_sample(images, [i % 2 for i in range(16)], max_images=16)
    assert run.task_sample_error is None and run.task_sample_task is not None
    assert 2 <= run._samples[-1].images_sent < 16


@pytest.mark.slow  # seconds of PNG encoding
def test_the_call_returns_before_the_sample_is_encoded(
    gateway: GatewayThread, tmp_path: Path
) -> None:
    """Encoding 400 noise images of 256x256 takes seconds (PNG's deflate); the call only
    draws, checks and copies them, and the upload runs in a thread of its own (not the
    sender's, which epochs wait for). No timing is asserted: which thread does the work."""
    rng = np.random.default_rng(9)
    images = _noise(rng, (400, 256, 256, 3))
    with _run(gateway, tmp_path, labels=["a", "b"]) as run:
        run.log_task_sample(images, [i % 2 for i in range(400)], max_images=400)
        upload = run._samples[-1]
        assert isinstance(upload, threading.Thread) and upload is not run._sender
        assert upload is not threading.current_thread()
        run.log(epoch=1, loss=0.5)  # training goes on meanwhile
    assert run.task_sample_error is None and run.task_sample_task is not None


def test_a_refused_sample_is_a_warning_not_an_error_in_training(
    gateway: GatewayThread, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A PNG whose header is whole but whose pixels are cut short passes the call's
    header check; the gateway decodes it and refuses the sample."""
    png = _png(_noise(np.random.default_rng(10), (64, 64, 3)))
    broken = png[: len(png) // 2]
    caplog.set_level(logging.WARNING, logger="metalearn.reporting")
    with _run(gateway, tmp_path, labels=["a", "b"]) as run:
        run.log_task_sample([broken, png], [0, 1])
        deadline = time.monotonic() + 60
        while run.task_sample_error is None and time.monotonic() < deadline:
            time.sleep(0.05)
        run.log(epoch=1, loss=0.5)
    assert run.task_sample_task is None
    assert run.task_sample_error is not None
    assert run.task_sample_error.startswith("INVALID_ARGUMENT")
    assert "task sample was not taken" in caplog.text


@pytest.mark.slow  # waits out the SDK's retry pauses
def test_a_sample_sent_while_the_gateway_is_down_goes_once_it_is_back(
    postgres_url: str, tmp_path: Path
) -> None:
    """The gateway stops after the run has started and comes back on the same address
    a few seconds later: the upload, refused as UNAVAILABLE meanwhile, is tried again
    (without the retries, `task_sample_error` would be that UNAVAILABLE)."""
    from gateway.config import GatewayConfig
    from gateway.inprocess import GatewayThread as Gateway
    from tests.harness import fresh_database

    url = fresh_database(postgres_url, "sample_restart")
    first = Gateway(url, GatewayConfig(listen="127.0.0.1:0", database_url=url)).start()
    port, token = first.port, first.admin_token
    images, labels = _images(60, seed=11)
    second = None
    try:
        run = metalearn.start_run(_name(), labels=["a", "b", "c"], gateway=first.address,
                                  token=token, spool_dir=tmp_path)  # fmt: skip
        assert run.id > 0  # started before the gateway goes
        first.stop()
        run.log_task_sample(images, labels)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:  # its first tries fail meanwhile
            assert run.task_sample_task is None and run.task_sample_error is None
            time.sleep(0.1)
        # Tokens live in the database: the same one opens the second gateway.
        config = GatewayConfig(listen=f"127.0.0.1:{port}", database_url=url)
        second = Gateway(url, config).start()
        run.log(epoch=1, loss=0.5)
        run.finish()
        assert run.task_sample_error is None
        assert run.task_sample_task is not None
        assert run.task_sample_task.source == task_pb2.TASK_SOURCE_SAMPLE
    finally:
        if second is not None:
            second.stop()
