"""Task profiles: the meta-features of `trainer.profiling` on synthetic tensors, and the
ProfileTask RPC of a trainer (in this process and as the real daemon) on the digits."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import scipy.stats  # type: ignore[import-untyped]
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from metalearn import digits
from metalearn.credentials import open_channel
from metalearn.v1 import (
    attempt_pb2,
    dataset_service_pb2,
    dataset_service_pb2_grpc,
    task_pb2,
    trainer_service_pb2,
    trainer_service_pb2_grpc,
)
from tests.harness import GatewayThread
from tests.rpc import expect_error, violations
from trainer import profiling
from trainer.config import TrainerConfig
from trainer.data import Tensors
from trainer.server import create_server

pb = trainer_service_pb2
CODE = grpc.StatusCode
CREDENTIAL = "test-gateway-credential"
FEATURES = {
    "log_images", "log_classes", "imbalance", "log_pixels", "channels",
    "pixel_mean", "pixel_std", "pixel_skew", "sparsity",
    "landmark_centroid", "landmark_1nn", "landmark_linear",
    "centre_centroid", "centre_1nn", "centre_linear", "grey_centroid", "grey_1nn", "grey_linear",
    "probe_1nn", "probe_centroid", "probe_fisher", "probe_class_distance",
}  # fmt: skip
LANDMARKS = ("landmark_centroid", "landmark_1nn", "landmark_linear", "probe_1nn", "probe_centroid")


def tensors(images: torch.Tensor, labels: list[int] | torch.Tensor) -> Tensors:
    return Tensors(images, torch.as_tensor(labels, dtype=torch.int64), False, "")


def blobs(per_class: list[int], size: int = 8, channels: int = 1, seed: int = 0) -> Tensors:
    """Images whose class is a bright square at its own place, on noise: separable."""
    generator = torch.Generator().manual_seed(seed)
    labels = [c for c, n in enumerate(per_class) for _ in range(n)]
    images = torch.randint(0, 80, (len(labels), channels, size, size), generator=generator)
    side = max(1, size // 3)
    for i, c in enumerate(labels):
        top, left = divmod(c % 9, 3)
        images[i, :, top * side : (top + 1) * side, left * side : (left + 1) * side] += 170
    return tensors(images.to(torch.uint8), labels)


def same(a: task_pb2.TaskProfile, b: task_pb2.TaskProfile) -> bool:
    """Equal in everything but the time taken."""
    a, b = task_pb2.TaskProfile(**_fields(a)), task_pb2.TaskProfile(**_fields(b))
    return a == b


def _fields(p: task_pb2.TaskProfile) -> dict[str, Any]:
    return {
        "features": dict(p.features), "images": p.images, "classes": p.classes,
        "input_shape": list(p.input_shape),
    }  # fmt: skip


def test_the_same_images_give_the_same_profile() -> None:
    data = blobs([120, 130, 140, 150, 160])
    torch.manual_seed(1)
    first = profiling.profile(data, 5, sample_size=300)
    # Whatever the global generators hold, and on a copy of the data.
    torch.manual_seed(12345)
    np.random.seed(7)
    second = profiling.profile(
        tensors(data.images.clone(), data.labels.clone()), 5, sample_size=300
    )
    assert same(first, second)
    assert set(first.features) == FEATURES
    assert all(math.isfinite(v) and round(v, 6) == v for v in first.features.values())
    assert first.images == 700 and first.classes == 5 and list(first.input_shape) == [1, 8, 8]
    assert first.seconds > 0


def test_separable_classes_score_higher_than_random_labels() -> None:
    data = blobs([100] * 6, size=12)
    shuffled = data.labels[
        torch.randperm(len(data.labels), generator=torch.Generator().manual_seed(3))
    ]
    real = profiling.profile(data, 6).features
    noise = profiling.profile(tensors(data.images, shuffled), 6).features
    for name in LANDMARKS:
        assert real[name] > 0.8, (name, real[name])
        assert abs(noise[name]) < 0.25, (name, noise[name])
    assert real["probe_fisher"] > 5 * noise["probe_fisher"]
    assert real["probe_class_distance"] > 3 * noise["probe_class_distance"]
    # The same images: sizes and pixel statistics do not depend on the labels.
    for name in ("log_images", "imbalance", "pixel_mean", "pixel_std", "pixel_skew", "sparsity"):
        assert real[name] == noise[name]


def _marked(where: str, channels: int = 1, n: int = 60, size: int = 16) -> Tensors:
    """Two classes told apart only by `where`: a bright band at the top edge or not
    ("edge"), a faint square in the middle or not, under bright clutter at the border
    ("centre"), or red against green of one brightness ("colour")."""
    generator = torch.Generator().manual_seed(4)
    labels = [c for c in (0, 1) for _ in range(n)]
    images = torch.randint(0, 60, (len(labels), channels, size, size), generator=generator)
    for i, c in enumerate(labels):
        if where == "edge" and c:
            images[i, :, 0:2, :] += 180
        elif where == "centre":
            border = torch.randint(0, 2, (size, size), generator=generator).bool()
            border[size // 4 : size - size // 4, size // 4 : size - size // 4] = False
            images[i, :, border] += 190
            if c:
                images[i, :, size // 2 - 2 : size // 2 + 2, size // 2 - 2 : size // 2 + 2] += 50
        elif where == "colour":
            images[i, c, :, :] += 150
    return tensors(images.clamp(0, 255).to(torch.uint8), labels)


def test_view_landmarkers_say_where_the_classes_differ_and_whether_colour_does() -> None:
    edge = profiling.profile(_marked("edge"), 2).features
    centre = profiling.profile(_marked("centre"), 2).features
    colour = profiling.profile(_marked("colour", channels=3), 2).features
    # Tolerances: a landmarker's gain is an accuracy over 120 images, each one 1/60 of
    # gain; these cases are far apart by construction.
    # The band is cut off by the centre: from perfect to chance.
    assert edge["landmark_centroid"] > 0.9 and edge["centre_centroid"] < -0.8
    # Clutter at the border hides the square from 1-NN on the whole image, not the centre.
    assert centre["centre_1nn"] > 0.5 and centre["centre_centroid"] > 0.3, centre
    # Colour alone tells red from green: grey loses it all; a grey task loses nothing.
    assert colour["landmark_centroid"] > 0.9 and colour["grey_centroid"] < -0.8
    assert all(edge[f"grey_{k}"] == 0 for k in ("centroid", "1nn", "linear"))


def test_sizes_and_balance() -> None:
    balanced = profiling.profile(blobs([50, 50, 50, 50], size=16, channels=3), 4).features
    assert balanced["imbalance"] == 0
    assert balanced["log_images"] == round(math.log10(200), 6)
    assert balanced["log_classes"] == 2 and balanced["log_pixels"] == 8
    assert balanced["channels"] == 3
    skewed = profiling.profile(blobs([10, 40, 20]), 3).features
    assert skewed["imbalance"] == 0.75
    one_class = profiling.profile(blobs([30]), 1).features
    assert one_class["log_classes"] == 0 and one_class["imbalance"] == 0
    # One class: nothing to tell apart, chance is all there is.
    assert all(one_class[name] == 0 for name in (*LANDMARKS, "probe_fisher"))


def test_pixel_statistics_are_those_of_every_pixel() -> None:
    data = blobs([40, 60], size=10, channels=3, seed=5)
    pixels = data.images.double().numpy().ravel() / 255
    found = profiling.profile(data, 2).features
    assert found["pixel_mean"] == pytest.approx(pixels.mean(), abs=1e-6)
    assert found["pixel_std"] == pytest.approx(pixels.std(), abs=1e-6)
    assert found["pixel_skew"] == pytest.approx(scipy.stats.skew(pixels), abs=1e-6)
    assert found["sparsity"] == pytest.approx((pixels < 0.1).mean(), abs=1e-6)
    flat = profiling.profile(
        tensors(torch.full((20, 1, 4, 4), 128, dtype=torch.uint8), [0, 1] * 10), 2
    )
    assert flat.features["pixel_std"] == 0 and flat.features["pixel_skew"] == 0
    assert all(math.isfinite(v) for v in flat.features.values())


@pytest.mark.parametrize(
    "per_class",
    [[1], [1, 1], [1, 5], [2, 2, 1], [1, 1, 1, 30], [3, 700], [1] * 700],
    ids=lambda c: "-".join(map(str, c[:5])) + ("..." if len(c) > 5 else ""),
)
def test_tiny_classes_do_not_crash(per_class: list[int]) -> None:
    found = profiling.profile(blobs(per_class), len(per_class))
    assert set(found.features) == FEATURES
    assert all(math.isfinite(v) for v in found.features.values())
    assert all(-1 <= found.features[name] <= 1 for name in LANDMARKS)
    assert found.images == sum(per_class)


def test_identical_images_in_a_class_stay_finite() -> None:
    images = torch.zeros((40, 1, 6, 6), dtype=torch.uint8)
    images[20:] = 255  # two classes, each of one repeated image
    found = profiling.profile(tensors(images, [0] * 20 + [1] * 20), 2).features
    assert found["landmark_1nn"] == 1 and found["probe_1nn"] == 1
    assert all(math.isfinite(v) for v in found.values())


def test_the_sample_is_stratified_and_small() -> None:
    y = np.repeat(np.arange(4), [1000, 500, 3, 1]).astype(np.int64)
    chosen = profiling.stratified_sample(y, 600, 0)
    counts = np.bincount(y[chosen], minlength=4)
    assert len(chosen) == 600 and len(set(chosen.tolist())) == 600
    assert counts[2] >= 2 and counts[3] == 1  # small classes kept, as far as they go
    assert abs(counts[0] - 2 * counts[1]) <= 2  # the rest in proportion
    assert np.array_equal(chosen, profiling.stratified_sample(y, 600, 0))
    many = np.repeat(np.arange(1000), 3).astype(np.int64)
    assert len(profiling.stratified_sample(many, 600, 0)) == 600  # more classes than room
    assert len(profiling.stratified_sample(y[:50], 600, 0)) == 50


def test_large_images_are_viewed_small() -> None:
    data = blobs([30, 30], size=96, channels=3)
    found = profiling.profile(data, 2)
    assert list(found.input_shape) == [3, 96, 96]
    assert found.features["log_pixels"] == round(math.log2(96 * 96), 6)
    assert found.features["landmark_centroid"] > 0.8


def test_a_2000_image_8x8_task_takes_under_5_seconds() -> None:
    from sklearn.datasets import load_digits

    loaded = load_digits()
    images = torch.from_numpy((loaded.images * (255 / 16)).round().astype("uint8"))[:, None]
    index = torch.arange(2000) % len(images)
    started = time.perf_counter()
    found = profiling.profile(tensors(images[index], torch.from_numpy(loaded.target)[index]), 10)
    assert time.perf_counter() - started < 5
    assert found.features["landmark_1nn"] > 0.9 and found.features["probe_1nn"] > 0.9


# The RPC, on a trainer in this process (its worker processes are not used by profiles).


def start_trainer(gateway: GatewayThread, cache: Path) -> tuple[grpc.Server, str]:
    config = TrainerConfig(
        listen="127.0.0.1:0", gateway=gateway.address, cache_dir=cache,
        token=gateway.admin_token, gateway_credential=CREDENTIAL,
    )  # fmt: skip
    server, port, _, _ = create_server(config)
    server.start()
    return server, f"127.0.0.1:{port}"


@pytest.fixture(scope="module")
def trainer(
    digits_gateway: GatewayThread, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[trainer_service_pb2_grpc.TrainerServiceStub]:
    server, address = start_trainer(digits_gateway, tmp_path_factory.mktemp("cache"))
    with open_channel(address, CREDENTIAL) as channel:
        yield trainer_service_pb2_grpc.TrainerServiceStub(channel)
    server.stop(5).wait()


def task(
    labels: Sequence[str] = digits.LABELS, image_ops: Sequence[attempt_pb2.ImageOp] = ()
) -> task_pb2.TaskKey:
    return task_pb2.TaskKey(label_names=labels, image_ops=image_ops)


def profile_of(
    stub: trainer_service_pb2_grpc.TrainerServiceStub, key: task_pb2.TaskKey
) -> task_pb2.TaskProfile:
    reply = stub.ProfileTask(pb.TrainerServiceProfileTaskRequest(task=key), timeout=120)
    return reply.profile


def train_split_size(gateway: GatewayThread, labels: tuple[str, ...]) -> int:
    with gateway.channel() as channel:
        stub = dataset_service_pb2_grpc.DatasetServiceStub(channel)
        request = dataset_service_pb2.ReadImagesRequest(
            label_names=labels, split=dataset_service_pb2.SPLIT_TRAIN, seed=0,
            test_fraction=0.2, skip_data=True,
        )  # fmt: skip
        return len(list(stub.ReadImages(request)))


def test_profile_task_profiles_the_train_split(
    trainer: trainer_service_pb2_grpc.TrainerServiceStub, digits_gateway: GatewayThread
) -> None:
    found = profile_of(trainer, task())
    assert found.images == train_split_size(digits_gateway, digits.LABELS) < 1797
    assert found.classes == 10 and list(found.input_shape) == [1, 8, 8]
    assert set(found.features) == FEATURES
    assert found.features["landmark_1nn"] > 0.9 and found.features["probe_1nn"] > 0.9
    assert 0 < found.seconds < 60
    # A task is a set of labels: their order changes nothing; the cache makes it faster.
    again = profile_of(trainer, task(tuple(reversed(digits.LABELS))))
    assert same(found, again)
    resize = attempt_pb2.ImageOp(resize=attempt_pb2.Resize(size=[16]))
    gray3 = attempt_pb2.ImageOp(grayscale=attempt_pb2.Grayscale(num_output_channels=3))
    bigger = profile_of(trainer, task(digits.LABELS[:3], image_ops=[resize, gray3]))
    assert list(bigger.input_shape) == [3, 16, 16] and bigger.classes == 3
    assert bigger.features["log_pixels"] == 8 and bigger.features["channels"] == 3


def test_profile_task_refuses_bad_tasks(
    trainer: trainer_service_pb2_grpc.TrainerServiceStub,
) -> None:
    def refused(code: grpc.StatusCode, key: task_pb2.TaskKey) -> dict[str, str]:
        request = pb.TrainerServiceProfileTaskRequest(task=key)
        return violations(expect_error(code, trainer.ProfileTask, request, timeout=60))

    err = expect_error(
        CODE.FAILED_PRECONDITION,
        trainer.ProfileTask,
        pb.TrainerServiceProfileTaskRequest(task=task(["digit 1", "no such label"])),
    )
    assert "no such label" in (err.details() or "")  # type: ignore[attr-defined]
    zero = attempt_pb2.ImageOp(resize=attempt_pb2.Resize(size=[0]))
    mode = attempt_pb2.ImageOp(convert=attempt_pb2.Convert(mode="nonsense"))
    found = refused(CODE.INVALID_ARGUMENT, task(image_ops=[zero, attempt_pb2.ImageOp(), mode]))
    assert {
        "task.image_ops[0].resize.size",
        "task.image_ops[1]",
        "task.image_ops[2].convert.mode",
    } <= set(found)
    assert "task.label_names" in refused(CODE.INVALID_ARGUMENT, task([]))
    assert "task.label_names[1]" in refused(CODE.INVALID_ARGUMENT, task(["digit 1", "digit 1"]))
    huge = attempt_pb2.ImageOp(resize=attempt_pb2.Resize(size=[8000]))
    found = refused(CODE.INVALID_ARGUMENT, task(image_ops=[huge]))
    assert found and all(field.startswith("task.image_ops[0]") for field in found), found


# Sizes that stay cheap to profile, and some that every trainer refuses (0, over the
# largest side, over the pixel limit when square, none or three).
_SIZES = st.one_of(
    st.lists(st.integers(1, 24), min_size=1, max_size=2),
    st.lists(st.one_of(st.integers(-2, 24), st.sampled_from([0, 2000, 9000])), max_size=3),
)
_KNOWN = st.lists(st.sampled_from(digits.LABELS[:4]), min_size=1, max_size=3, unique=True)
_OPS = st.one_of(
    st.just(attempt_pb2.ImageOp()),
    st.builds(
        lambda size, resample: attempt_pb2.ImageOp(
            resize=attempt_pb2.Resize(size=size, resample=resample)
        ),
        _SIZES,
        st.sampled_from(["", "nearest", "bicubic", "lanczos", "bogus"]),
    ),
    st.builds(
        lambda size: attempt_pb2.ImageOp(center_crop=attempt_pb2.CenterCrop(size=size)), _SIZES
    ),
    st.builds(
        lambda mode: attempt_pb2.ImageOp(convert=attempt_pb2.Convert(mode=mode)),
        st.one_of(
            st.sampled_from(["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I", "F"]),
            st.text(max_size=5),
        ),
    ),
    st.builds(
        lambda n: attempt_pb2.ImageOp(grayscale=attempt_pb2.Grayscale(num_output_channels=n)),
        st.integers(-1, 4),
    ),
)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    labels=st.one_of(_KNOWN, _KNOWN, st.lists(st.text(max_size=20), max_size=3)),
    ops=st.lists(_OPS, max_size=3),
)
def test_bad_profile_requests_are_never_internal(
    trainer: trainer_service_pb2_grpc.TrainerServiceStub, labels: list[str], ops: list[Any]
) -> None:
    """Any task: a profile, or a client's error that names only fields of `task`."""
    request = pb.TrainerServiceProfileTaskRequest(task=task(labels, ops))
    try:
        found = trainer.ProfileTask(request, timeout=120).profile
    except grpc.RpcError as err:
        code = err.code()  # type: ignore[attr-defined]
        event(code.name)
        assert code not in (CODE.UNKNOWN, CODE.INTERNAL), err.details()  # type: ignore[attr-defined]
        assert all(field.startswith("task.") for field in violations(err)), violations(err)
    else:
        event("profiled")
        assert set(found.features) == FEATURES
        assert all(math.isfinite(v) for v in found.features.values())


def test_one_profile_at_a_time(
    trainer: trainer_service_pb2_grpc.TrainerServiceStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    entered, release = threading.Event(), threading.Event()
    real = profiling.profile

    def held(*args: Any, **kwargs: Any) -> task_pb2.TaskProfile:
        entered.set()
        release.wait(60)
        return real(*args, **kwargs)

    monkeypatch.setattr(profiling, "profile", held)
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(profile_of, trainer, task(digits.LABELS[:2]))
        assert entered.wait(60)
        expect_error(
            CODE.RESOURCE_EXHAUSTED,
            trainer.ProfileTask,
            pb.TrainerServiceProfileTaskRequest(task=task(digits.LABELS[2:4])),
        )
        # A bad request is still told what is wrong with it, busy or not.
        expect_error(
            CODE.INVALID_ARGUMENT, trainer.ProfileTask, pb.TrainerServiceProfileTaskRequest()
        )
        release.set()
        assert first.result(60).classes == 2
    assert profile_of(trainer, task(digits.LABELS[2:4])).classes == 2


def test_only_the_gateway_may_profile(digits_gateway: GatewayThread, tmp_path: Path) -> None:
    server, address = start_trainer(digits_gateway, tmp_path)
    try:
        for token in (None, "not-the-credential", digits_gateway.admin_token):
            with open_channel(address, token) as channel:
                stub = trainer_service_pb2_grpc.TrainerServiceStub(channel)
                expect_error(
                    CODE.UNAUTHENTICATED,
                    stub.ProfileTask,
                    pb.TrainerServiceProfileTaskRequest(task=task()),
                )
    finally:
        server.stop(5).wait()


@pytest.mark.slow
def test_the_trainer_daemon_profiles_as_this_process_does(
    digits_gateway: GatewayThread,
    trainer: trainer_service_pb2_grpc.TrainerServiceStub,
    tmp_path: Path,
) -> None:
    """The real `metalearn trainer`, fresh cache: the same profile to the last digit."""
    log = (tmp_path / "trainer.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "metalearn.cli", "trainer", "--listen", "127.0.0.1:0",
         "--gateway", digits_gateway.address, "--cache-dir", str(tmp_path / "cache")],
        stdout=subprocess.PIPE, stderr=log, text=True,
        env={**os.environ, "METALEARN_TOKEN": digits_gateway.admin_token,
             "METALEARN_GATEWAY_CREDENTIAL": CREDENTIAL},
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "listening on" in line, (tmp_path / "trainer.log").read_text()
        with open_channel(line.rsplit(" ", 1)[-1].strip(), CREDENTIAL) as channel:
            daemon = trainer_service_pb2_grpc.TrainerServiceStub(channel)
            found = profile_of(daemon, task())
            expect_error(
                CODE.FAILED_PRECONDITION,
                daemon.ProfileTask,
                pb.TrainerServiceProfileTaskRequest(task=task(["missing"])),
            )
        assert same(found, profile_of(trainer, task()))
        proc.terminate()
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
