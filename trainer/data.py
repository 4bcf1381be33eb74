"""A run's data: images from the gateway, decoded and preprocessed once, cached, split.

The gateway splits each label into train and test by image hash and seed, so a test
never sees a training image. The trainer holds out a validation part of the train split
the same way. Preprocessed images are kept as uint8 tensors in memory and in a
safetensors file under the cache directory, named by a fingerprint of the images'
hashes, their labels and the fixed ops, so a later run on the same data decodes nothing.
The directory is kept under a byte budget, least recently used files out (trainer/cache.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import safetensors
import safetensors.torch
import torch
from google.protobuf import json_format
from PIL import Image

from metalearn import geometry
from metalearn.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from metalearn.v1 import attempt_pb2, dataset_service_pb2, dataset_service_pb2_grpc
from trainer import cache
from trainer.transforms import Pipeline, apply_image_ops, draft, fixed_tensor, tensor_mode

log = logging.getLogger(__name__)

# Fraction of each label the gateway holds out for testing (its ReadImages default).
TEST_FRACTION = 0.2
# Fraction of the train split held out for validation.
VALIDATION_FRACTION = 0.1
# Bump when the cached tensors' meaning changes (2: JPEGs decoded at a draft scale).
_CACHE_FORMAT = 2
# Threads decoding a run's images.
_DECODERS = min(8, os.cpu_count() or 1)


@dataclass(frozen=True)
class ImageRef:
    """One image as the gateway lists it."""

    id: int
    label: str
    sha256: str


@dataclass
class Tensors:
    """Preprocessed images (uint8, N x C x H x W) and their class indices."""

    images: torch.Tensor
    labels: torch.Tensor
    cache_hit: bool
    fingerprint: str

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.images.shape[1:])


def in_validation(sha256: str, seed: int) -> bool:
    """Whether a train-split image is held out for validation (stable per hash and seed)."""
    digest = hashlib.sha256(f"{seed}:validation:{sha256}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < VALIDATION_FRACTION


def _gateway_error(err: grpc.RpcError, field: str) -> Exception:
    code = err.code()
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgument.one(field, f"the gateway refused it: {err.details()}")
    if code == grpc.StatusCode.NOT_FOUND:
        return NotFound(f"gateway: {err.details()}")
    return Unavailable(f"gateway: {code.name}: {err.details()}")


class ImageSource:
    """Reads images from the gateway's DatasetService."""

    def __init__(self, channel: grpc.Channel, deadline_seconds: float) -> None:
        self._stub = dataset_service_pb2_grpc.DatasetServiceStub(channel)
        self._deadline = deadline_seconds

    def _read(self, request: dataset_service_pb2.ReadImagesRequest, field: str) -> list[Any]:
        try:
            return list(self._stub.ReadImages(request, timeout=self._deadline))
        except grpc.RpcError as err:
            raise _gateway_error(err, field) from err

    def list(
        self,
        labels: Sequence[str],
        split: dataset_service_pb2.Split,
        seed: int,
        ids: Sequence[int] = (),
        limit: int = 0,
    ) -> list[ImageRef]:
        return self.listing(labels, split, seed, ids, limit).result()

    def listing(
        self,
        labels: Sequence[str],
        split: dataset_service_pb2.Split,
        seed: int,
        ids: Sequence[int] = (),
        limit: int = 0,
        page_size: int = 0,
    ) -> Listing:
        """The same list, asked now and read with `result()` (the gateway makes it while
        this process does something else), `page_size` images read a page (0: the
        gateway's most)."""
        request = dataset_service_pb2.ListImagesRequest(
            label_names=labels, split=split, seed=seed, test_fraction=TEST_FRACTION,
            ids=ids, limit=limit, page_size=page_size,
        )  # fmt: skip
        return Listing(self._stub, request, self._deadline)

    def fetch(self, refs: Sequence[ImageRef]) -> dict[int, bytes]:
        """The encoded bytes of the given images, in batches the gateway streams."""
        data: dict[int, bytes] = {}
        for start in range(0, len(refs), 512):
            ids = [r.id for r in refs[start : start + 512]]
            request = dataset_service_pb2.ReadImagesRequest(ids=ids)
            for r in self._read(request, "command.label_names"):
                data[r.id] = r.data
        return data


class Listing:
    """A ListImages call under way: its first page asked now, the others (a run of more
    than a page's 100,000 images) when `result()` reads it."""

    def __init__(
        self, stub: Any, request: dataset_service_pb2.ListImagesRequest, deadline: float
    ) -> None:
        self._stub, self._request, self._deadline = stub, request, deadline
        self._future = stub.ListImages.future(request, timeout=deadline)

    def cancel(self) -> None:
        self._future.cancel()

    def result(self) -> list[ImageRef]:
        refs: list[ImageRef] = []
        future = self._future
        while True:
            try:
                found = future.result()
            except grpc.RpcError as err:
                raise _gateway_error(err, "command.label_names") from err
            refs.extend(_refs(found))
            if not found.next_page_token:
                return refs
            request = dataset_service_pb2.ListImagesRequest()
            request.CopyFrom(self._request)
            request.page_token = found.next_page_token
            future = self._stub.ListImages.future(request, timeout=self._deadline)


def _refs(found: dataset_service_pb2.ListImagesResponse) -> list[ImageRef]:
    """One page's images, checked to be columns that fit together."""
    digests = found.sha256
    names = list(found.label_names)
    if (
        len(digests) != 32 * len(found.ids)
        or len(found.labels) != len(found.ids)
        or any(not 0 <= label < len(names) for label in found.labels)
    ):
        raise Unavailable("gateway: ListImages answered columns that do not fit")
    return [
        ImageRef(image_id, names[label], digests[32 * i : 32 * i + 32].hex())
        for i, (image_id, label) in enumerate(zip(found.ids, found.labels, strict=True))
    ]


def fingerprint(refs: Sequence[ImageRef], label_names: Sequence[str], key: list[Any]) -> str:
    """What the preprocessed tensors depend on: each image, its class index, the ops."""
    digest = hashlib.sha256()
    digest.update(json.dumps([_CACHE_FORMAT, list(label_names), key]).encode())
    for ref in refs:
        digest.update(f"{ref.label}\0{ref.sha256}\n".encode())
    return digest.hexdigest()


def ops_key(image_ops: Sequence[attempt_pb2.ImageOp], pipeline: Pipeline) -> list[Any]:
    return [[json_format.MessageToDict(op) for op in image_ops], pipeline.fixed_key()]


class Preprocessor:
    """Turns image refs into cached tensors: `max_bytes` of them in memory at most, and
    the cache directory kept under `cache_max_bytes`."""

    def __init__(
        self,
        source: ImageSource,
        cache_dir: Path,
        max_bytes: int,
        max_pixels: int,
        cache_max_bytes: int = cache.DEFAULT_MAX_BYTES,
    ) -> None:
        self._source = source
        self._cache_dir = cache_dir
        self._max_bytes = max_bytes
        self._max_pixels = max_pixels
        self._cache_max_bytes = cache_max_bytes

    def tensors(
        self,
        refs: Sequence[ImageRef],
        label_names: Sequence[str],
        image_ops: Sequence[attempt_pb2.ImageOp],
        pipeline: Pipeline,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> Tensors:
        refs = sorted(refs, key=lambda r: (label_names.index(r.label), r.sha256, r.id))
        fp = fingerprint(refs, label_names, ops_key(image_ops, pipeline))
        path = self._cache_dir / f"{fp}.safetensors"
        # Marked as used before it is read: another trainer's eviction now takes it last.
        if cache.touch(path):
            try:
                cached = safetensors.torch.load_file(str(path))
                return Tensors(cached["images"], cached["labels"], True, fp)
            except FileNotFoundError:  # another trainer evicted it just now
                pass
            except Exception:  # a damaged cache file is rebuilt
                log.warning("cache file %s is unreadable; rebuilding it", path)
        data = self._source.fetch(refs)
        images: list[torch.Tensor] = []
        # Pillow lets go of the GIL while it decodes and resizes: threads use every core.
        with ThreadPoolExecutor(_DECODERS) as pool:
            decoded = pool.map(
                lambda ref: self._decode(data[ref.id], ref, image_ops, pipeline, len(refs)), refs
            )
            for i, (ref, x) in enumerate(zip(refs, decoded, strict=True)):
                if images and x.shape != images[0].shape:
                    raise FailedPrecondition(
                        f"image {ref.id} ({ref.label}) is {tuple(x.shape)} after image_ops,"
                        f" others are {tuple(images[0].shape)}: add a resize to"
                        " command.image_ops"
                    )
                images.append(x)
                if on_progress is not None:
                    on_progress(i + 1, len(refs))
        labels = torch.tensor([label_names.index(r.label) for r in refs], dtype=torch.int64)
        stacked = torch.stack(images) if images else torch.empty((0, 0, 0, 0), dtype=torch.uint8)
        self._store(path, stacked, labels)
        return Tensors(stacked, labels, False, fp)

    def _decode(
        self,
        data: bytes,
        ref: ImageRef,
        image_ops: Sequence[attempt_pb2.ImageOp],
        pipeline: Pipeline,
        count: int,
    ) -> torch.Tensor:
        try:
            with Image.open(io.BytesIO(data)) as opened:
                draft(opened, image_ops)
                opened.load()
                image = tensor_mode(apply_image_ops(opened, image_ops))
        except (OSError, ValueError) as err:
            raise FailedPrecondition(
                f"image {ref.id} ({ref.label}) cannot be processed: {err}"
            ) from err
        if image.width * image.height > self._max_pixels:
            raise InvalidArgument.one(
                "command.image_ops",
                f"images are {image.width}x{image.height} after the ops, over this trainer's"
                f" limit of {self._max_pixels:,} pixels: resize them",
            )
        self._check_sizes(image, pipeline, count)
        return fixed_tensor(image, pipeline)

    def _check_sizes(self, image: Image.Image, pipeline: Pipeline, count: int) -> None:
        """This image's size at every step of the transforms, worked out before any is
        made: a step over the pixel limit, or cached data over the memory limit, is the
        command's mistake, named with the argument that asked for that size."""
        start = geometry.Size(image.height, image.width, geometry.mode_channels(image.mode))
        plan = pipeline.plan(start)
        if plan.problems:
            raise InvalidArgument(plan.problems)
        step = plan.over(self._max_pixels)
        if step is not None:
            raise InvalidArgument.one(
                step.field,
                f"makes the {image.width}x{image.height} images {step.size.describe()},"
                f" over this trainer's limit of {self._max_pixels:,} pixels",
            )
        kept = plan.fixed
        size = kept.size if kept else start
        needed = size.channels * size.pixels * count
        if needed > self._max_bytes:
            raise InvalidArgument.one(
                kept.field if kept else "command.image_ops",
                f"{count} images of {size.channels}x{size.describe()} need {needed:,} bytes,"
                f" over this trainer's limit of {self._max_bytes:,}: make them smaller",
            )

    def _store(self, path: Path, images: torch.Tensor, labels: torch.Tensor) -> None:
        """Writes the cache file atomically, then evicts the least recently used others
        beyond the budget (after a failed write too: it may have been for want of
        space); a failure only costs the next run a decode."""
        tmp = None
        try:
            self._cache_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self._cache_dir, suffix=".tmp")
            os.close(fd)
            safetensors.torch.save_file({"images": images, "labels": labels}, tmp)
            os.replace(tmp, path)
        # safetensors reports its own I/O errors (a full disk) as SafetensorError.
        except (OSError, safetensors.SafetensorError) as err:
            log.warning("could not write cache file %s: %s", path, err)
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
        cache.prune(self._cache_dir, self._cache_max_bytes, keep=path)
