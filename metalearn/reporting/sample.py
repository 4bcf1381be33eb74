"""A sample of a reported run's images, sent so that metalearn profiles its task from
pixels rather than from what the run declares (opt-in: `Run.log_task_sample`).

    with metalearn.start_run("r1", labels=["cat", "dog"]) as run:
        run.log_task_sample(x_train[:500], y_train[:500])   # once, before training
        for epoch in range(1, 11):
            ...

`images` is a sequence of images, each a PIL image, a numpy array (H x W or H x W x C,
C in 1/3/4, uint8 or float in [0, 1]), a torch tensor (C x H x W or H x W, as
torchvision gives them, uint8 or float in [0, 1]), the bytes of a PNG or JPEG file, or
a path to an image file; a numpy array or tensor holding a batch (N x ...) is such a
sequence too. `labels` gives each image's class: an index into the run's declared
labels, or one of their names. Only these two sequences are taken (no Dataset or
loader): slice what you want sampled, `x[:500], y[:500]`.

On the training thread, the call draws a seeded, uniform random sample of at most
`max_images` (so the data's class balance is kept), checks it and turns arrays and
tensors into uint8 pixels (one pass over the drawn images: a mistake is raised there,
as `ValueError`, and later changes to the caller's arrays do not leak into the sample).
A daemon thread of its own (not the sender's: epochs are not delayed) encodes each
image as PNG (PNG and JPEG files are sent as they are), drops images at random until the
whole is under the gateway's 8 MiB, and sends it (ReportingService.UploadTaskSample),
trying again while the gateway is unreachable. What the gateway answers is the run's
`task_sample_task`; a refusal is logged as a warning and kept in `task_sample_error`,
never raised into training.
"""

from __future__ import annotations

import io
import logging
import math
import operator
import random
import sys
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from PIL import Image

from metalearn import limits
from metalearn.outgoing import translate
from metalearn.v1 import reporting_service_pb2, reporting_service_pb2_grpc, task_pb2

log = logging.getLogger("metalearn.reporting")
rpb = reporting_service_pb2

# The gateway's limits (reporting_service.proto, UploadTaskSample; metalearn/limits.py).
MAX_IMAGES = limits.MAX_SAMPLE_IMAGES
MAX_PIXELS = limits.MAX_SAMPLE_PIXELS
MAX_BYTES = limits.MAX_SAMPLE_BYTES
# What one image costs in the request beside its bytes: the field tags and lengths of
# a SampleImage inside the repeated field (under 16 bytes: varints of at most 5 bytes
# for the label and the length, 3 tag bytes, the message's own length).
IMAGE_OVERHEAD = 16
# And the request itself (the attempt id and the sample's tag and length).
REQUEST_OVERHEAD = 32
# Pauses between tries while the gateway is unreachable: a restart of the gateway takes
# seconds, and a sample that has not gone in half a minute is not worth a longer wait.
RETRY_PAUSES = (1.0, 2.0, 4.0, 8.0, 15.0)
CALL_TIMEOUT = 120.0
# How long `Run.finish` waits for a sample still on its way.
FINISH_WAIT_SECONDS = 60.0
_KEPT_FORMATS = frozenset({"PNG", "JPEG"})
# The modes a trainer makes tensors of (trainer/transforms.tensor_mode): other modes are
# converted as it would convert them, so what it profiles is what the PNG holds.
_MODES = frozenset({"L", "RGB", "RGBA"})
_ARRAY_MODES = {1: "L", 3: "RGB", 4: "RGBA"}


@dataclass(frozen=True)
class Item:
    """One drawn image as the sender's thread encodes it: uint8 pixels (H x W or
    H x W x C), a PIL image, encoded PNG/JPEG bytes, or a file to read."""

    label: int
    pixels: np.ndarray[Any, Any] | None = None
    image: Image.Image | None = None
    data: bytes | None = None
    path: Path | None = None


def _torch() -> Any:
    """torch when the caller has imported it (tensors exist only then): importing it
    here would cost seconds and gigabytes to a run that never made one."""
    return sys.modules.get("torch")


def _is_tensor(value: Any) -> bool:
    torch = _torch()
    return torch is not None and isinstance(value, torch.Tensor)


def label_indices(labels: Sequence[Any], declared: Sequence[str]) -> list[int]:
    """Each label as an index into `declared`; a ValueError names the first bad one."""
    if not declared:
        raise ValueError(
            "the run declares no labels: start_run(labels=[...]) names the classes a"
            " sample's labels point into"
        )
    # A numpy array or tensor of labels becomes plain ints or strs in one call (its
    # elements one by one would be thousands of 0-d objects).
    if not isinstance(labels, (list, tuple)) and hasattr(labels, "tolist"):
        labels = labels.tolist()
    names = {name: i for i, name in enumerate(declared)}
    found: list[int] = []
    for i, label in enumerate(labels):
        if isinstance(label, str):
            index = names.get(label)
            if index is None:
                raise ValueError(
                    f"labels[{i}]: {label!r} is not one of the run's declared labels"
                    f" {list(declared)!r}"
                )
        else:
            try:
                if isinstance(label, bool):
                    raise TypeError
                index = operator.index(label)
            except TypeError:
                raise ValueError(
                    f"labels[{i}]: {label!r} is neither an index into the run's declared"
                    f" labels nor one of their names"
                ) from None
            if not 0 <= index < len(declared):
                raise ValueError(
                    f"labels[{i}]: {index} is not an index into the run's"
                    f" {len(declared)} declared labels (0 to {len(declared) - 1})"
                )
        found.append(index)
    return found


def draw(count: int, max_images: int, seed: int) -> list[int]:
    """Positions of a uniform random sample of at most `max_images` of `count`, in a
    random order (so that dropping from its end keeps the rest a uniform sample)."""
    return random.Random(seed).sample(range(count), min(count, max_images))


def prepare(image: Any, label: int, where: str) -> Item:
    """`image` checked and, when it is an array or tensor, its pixels as uint8; a
    ValueError says what is wrong with it, `where` naming it."""
    if isinstance(image, Image.Image):
        width, height = image.size
        _check_pixels(where, width, height)
        return Item(label, image=image)
    if isinstance(image, np.ndarray):
        return Item(label, pixels=_uint8(image, where, "a numpy array"))
    if _is_tensor(image):
        return Item(label, pixels=_tensor_pixels(image, where))
    if isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
        fmt = _header(io.BytesIO(data), where)
        if fmt not in _KEPT_FORMATS:
            raise ValueError(f"{where}: bytes of a {fmt} image: bytes must be a PNG or JPEG")
        return Item(label, data=data)
    if isinstance(image, (str, Path)):
        path = Path(image)
        if not path.is_file():
            raise ValueError(f"{where}: {str(path)!r} is not a file")
        _header(path, where)
        return Item(label, path=path)
    raise ValueError(
        f"{where}: a {type(image).__name__} is not an image (a PIL image, a numpy array, a"
        " torch tensor, the bytes of a PNG or JPEG, or a path)"
    )


def _check_pixels(where: str, width: int, height: int) -> None:
    if width < 1 or height < 1:
        raise ValueError(f"{where}: an image of {width}x{height} pixels is empty")
    if width * height > MAX_PIXELS:
        raise ValueError(
            f"{where}: {width}x{height} pixels is over the limit of {MAX_PIXELS:,}: resize it"
        )


def _header(source: io.BytesIO | Path, where: str) -> str:
    """The image's format, read from its header only (its pixels are decoded later,
    off the training thread)."""
    try:
        with warnings.catch_warnings():
            # Its size is checked below against a far smaller limit than Pillow's.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source) as opened:
                fmt = opened.format or "unknown"
                width, height = opened.size
    except Image.DecompressionBombError as err:
        raise ValueError(f"{where}: too many pixels ({err})") from None
    except (OSError, ValueError) as err:  # Pillow's "cannot identify image file"
        raise ValueError(f"{where}: not an image Pillow can read ({err})") from None
    _check_pixels(where, width, height)
    return fmt


def _tensor_pixels(tensor: Any, where: str) -> np.ndarray[Any, Any]:
    torch = _torch()
    shape = tuple(tensor.shape)
    if tensor.dtype != torch.uint8 and not tensor.is_floating_point():
        raise ValueError(f"{where}: a tensor of {tensor.dtype}: images are uint8 or float")
    if tensor.dim() == 3:
        if shape[0] not in _ARRAY_MODES:
            raise ValueError(
                f"{where}: a tensor of shape {shape}: tensors are C x H x W (C 1, 3 or 4)"
                " as torchvision makes them, or H x W"
            )
        tensor = tensor.permute(1, 2, 0)
    elif tensor.dim() != 2:
        raise ValueError(f"{where}: a tensor of shape {shape}: images are C x H x W or H x W")
    # numpy has no bfloat16: floats go over as float32 (exact for an image's [0, 1]).
    tensor = tensor.detach().to("cpu")
    if tensor.is_floating_point():
        tensor = tensor.float()
    return _uint8(tensor.numpy(), where, "a tensor", shape)


def _uint8(
    array: np.ndarray[Any, Any], where: str, what: str, shown: tuple[int, ...] | None = None
) -> np.ndarray[Any, Any]:
    """H x W or H x W x C pixels as a new uint8 array (a copy: the caller may change
    theirs once the call returns)."""
    shape = shown if shown is not None else array.shape
    if array.ndim == 3 and array.shape[2] not in _ARRAY_MODES:
        hint = (
            " (C x H x W? numpy images are H x W x C: x.transpose(1, 2, 0))"
            if array.shape[0] in _ARRAY_MODES and shown is None
            else ""
        )
        raise ValueError(f"{where}: {what} of shape {shape}: its channels must be 1, 3 or 4{hint}")
    if array.ndim not in (2, 3):
        raise ValueError(f"{where}: {what} of shape {shape}: images are H x W or H x W x C")
    _check_pixels(where, array.shape[1], array.shape[0])
    if array.dtype == np.uint8:
        return np.array(array, dtype=np.uint8, copy=True)
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"{where}: {what} of {array.dtype}: images are uint8, or float in [0, 1]")
    low, high = float(np.min(array)), float(np.max(array))
    if not (math.isfinite(low) and math.isfinite(high) and low >= 0.0 and high <= 1.0):
        raise ValueError(
            f"{where}: {what} of floats from {low:g} to {high:g}: float images are in [0, 1]"
            " (undo a Normalize first)"
        )
    scaled: np.ndarray[Any, Any] = np.rint(array.astype(np.float32) * 255.0).astype(np.uint8)
    return scaled


def encode(item: Item) -> bytes:
    """The image as PNG, or the PNG/JPEG file it was given as."""
    if item.data is not None:
        return item.data
    if item.path is not None:
        data = item.path.read_bytes()
        with Image.open(io.BytesIO(data)) as opened:
            if opened.format in _KEPT_FORMATS:
                return data
            return _png(opened)
    if item.pixels is not None:
        pixels = item.pixels
        if pixels.ndim == 3 and pixels.shape[2] == 1:
            pixels = pixels[:, :, 0]
        mode = "L" if pixels.ndim == 2 else _ARRAY_MODES[pixels.shape[2]]
        return _png(Image.fromarray(np.ascontiguousarray(pixels), mode=mode))
    assert item.image is not None
    return _png(item.image)


def _png(image: Image.Image) -> bytes:
    if image.mode not in _MODES:
        image = image.convert("L" if image.mode == "1" else "RGB")
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def fit(encoded: list[tuple[int, bytes]], max_bytes: int = MAX_BYTES) -> list[tuple[int, bytes]]:
    """The longest start of `encoded` (in the sample's random order: what is dropped is
    dropped at random) whose request stays within `max_bytes`."""
    total = REQUEST_OVERHEAD
    for i, (_, data) in enumerate(encoded):
        total += len(data) + IMAGE_OVERHEAD
        if total > max_bytes:
            return encoded[:i]
    return encoded


class SampleUpload(threading.Thread):
    """Encodes and sends one sample; `task` or `error` says how it went."""

    def __init__(
        self,
        channel: grpc.Channel,
        items: list[Item],
        attempt_id: Any,
        run_name: str,
        previous: SampleUpload | None,
        max_bytes: int = MAX_BYTES,
    ) -> None:
        super().__init__(name=f"metalearn-sample-{run_name}", daemon=True)
        self._stub = reporting_service_pb2_grpc.ReportingServiceStub(channel)
        self._items = items
        # A callable giving the run's attempt id once started, None if it never will.
        self._attempt_id = attempt_id
        self._run_name = run_name
        # Samples go one after the other, so the last one sent is the task's newest.
        self._previous = previous
        self._max_bytes = max_bytes
        self.task: task_pb2.Task | None = None
        self.error: str | None = None
        self.images_sent = 0

    def run(self) -> None:
        try:
            self._run()
        except Exception as err:  # a bug of ours or an unreadable file: never training's
            self._fail(f"{type(err).__name__}: {err}")

    def _run(self) -> None:
        if self._previous is not None:
            self._previous.join()
        encoded = fit([(item.label, encode(item)) for item in self._items], self._max_bytes)
        self._items = []  # the pixels are not needed any more
        if not encoded:
            self._fail(f"no image fits in {self._max_bytes:,} bytes")
            return
        attempt_id = self._attempt_id()
        if attempt_id is None:
            self._fail("the run was never started, so its sample has nowhere to go")
            return
        request = rpb.UploadTaskSampleRequest(
            attempt_id=attempt_id,
            sample=task_pb2.TaskSample(
                images=[task_pb2.SampleImage(label=label, data=data) for label, data in encoded]
            ),
        )
        for pause in (*RETRY_PAUSES, None):
            try:
                self.task = self._stub.UploadTaskSample(request, timeout=CALL_TIMEOUT).task
                self.images_sent = len(encoded)
                return
            except grpc.RpcError as err:
                if pause is None or err.code() not in (
                    grpc.StatusCode.UNAVAILABLE,
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                ):
                    self._fail(str(translate(err)))
                    return
            time.sleep(pause)

    def _fail(self, message: str) -> None:
        self.error = message
        log.warning("metalearn: run %s: its task sample was not taken: %s",
                    self._run_name, message)  # fmt: skip
