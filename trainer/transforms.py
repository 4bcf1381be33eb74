"""Image ops (Pillow, in the command's order) and transforms (torchvision v2, canonical order).

A command's `transform` is a Struct: a set of named transforms whose order a JSON object
cannot carry (the prototype's `{"ToTensor": true, "Normalize": {...}}` comes back from
the store with its keys sorted). They are applied in the order torchvision's reference
training scripts use: fixed geometry and colour, random augmentations, conversion to a
float tensor, Normalize, RandomErasing.

The fixed part is applied once per image and cached as uint8 tensors; the random part
runs per sample and epoch; conversion and Normalize run per batch.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from google.protobuf import struct_pb2
from PIL import Image
from torchvision.transforms import v2

from metalearn import geometry, vocabulary
from metalearn.errors import InvalidArgument, Violations
from metalearn.limits import CommandLimits
from metalearn.structs import plain_struct
from metalearn.v1 import attempt_pb2

# Applied once, cached.
FIXED = vocabulary.FIXED_TRANSFORMS
# Applied per sample, every epoch, on uint8 tensors.
RANDOM = vocabulary.RANDOM_TRANSFORMS
# Applied per sample to float tensors, after Normalize.
AFTER_NORMALIZE = vocabulary.AFTER_NORMALIZE_TRANSFORMS
# Image modes kept as they are; any other becomes RGB ("1" becomes L).
_TENSOR_MODES = frozenset({"L", "RGB", "RGBA"})
# What torch and torchvision raise for values they cannot work with. Anything else (out
# of memory above all, a subclass of RuntimeError) is no mistake of the command's.
_VALUE_ERRORS = (RuntimeError, ValueError, TypeError, IndexError)


def command_fault(err: BaseException) -> bool:
    """Whether an error raised by a command's own transform or loss is the command's
    mistake (a value torch refuses), rather than out of memory or a bug of ours."""
    return isinstance(err, _VALUE_ERRORS) and not isinstance(err, torch.OutOfMemoryError)


@dataclass(frozen=True)
class Pipeline:
    """A command's transforms, split by when they run."""

    fixed: list[tuple[str, dict[str, Any]]]
    random: list[tuple[str, dict[str, Any]]]
    normalize: dict[str, Any] | None
    after_normalize: list[tuple[str, dict[str, Any]]]
    # Where the transforms came from ("command.transform"), to name them in errors.
    path: str = "command.transform"

    def fixed_key(self) -> list[Any]:
        """What the cached tensors depend on (with the image ops)."""
        return [[name, args] for name, args in self.fixed]

    def without_augmentation(self) -> Pipeline:
        """The same pipeline for evaluation: fixed steps and Normalize only."""
        return Pipeline(self.fixed, [], self.normalize, [], self.path)

    def sized(self) -> dict[str, Any]:
        """The transforms that change an image's size, as `metalearn.geometry` reads them."""
        return {name: args for name, args in self.fixed + self.random}

    def plan(self, start: geometry.Size) -> geometry.Plan:
        """Every size an image of `start` takes through these transforms."""
        return geometry.transform_steps(self.path, self.sized(), start)


def _as_arg(value: Any) -> Any:
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_as_arg(item) for item in value]
    return value


def _make(name: str, args: dict[str, Any]) -> Callable[[Any], Any]:
    transform: Callable[[Any], Any] = getattr(v2, name)(**args)
    return transform


def check_pipeline(v: Violations, path: str, struct: struct_pb2.Struct) -> Pipeline | None:
    """The transforms of a command, each constructed once so torchvision checks its values."""
    order = {
        name: i
        for i, name in enumerate(FIXED + RANDOM + ("ToTensor", "Normalize") + AFTER_NORMALIZE)
    }
    raw = plain_struct(struct)
    steps: list[tuple[str, dict[str, Any]]] = []
    ok = True
    for name in sorted(raw, key=lambda n: order.get(n, -1)):
        value = raw[name]
        field = f"{path}.{name}"
        if name not in vocabulary.TRANSFORMS or name not in order:
            v.add(field, f"unknown transform; allowed: {sorted(vocabulary.TRANSFORMS)}")
            ok = False
            continue
        if value is True or value is None or value == {}:
            args: dict[str, Any] = {}
        elif value is False:
            continue  # switched off
        elif isinstance(value, dict):
            args = {k: _as_arg(a) for k, a in value.items()}
        else:
            v.add(field, "give true or an object of arguments")
            ok = False
            continue
        if name == "ToTensor":
            if args:
                v.add(field, "takes no arguments")
                ok = False
            continue  # always done: a model takes float tensors
        params = inspect.signature(getattr(v2, name)).parameters
        unknown = sorted(set(args) - set(params) - {"inplace"})
        if unknown or "inplace" in args:
            v.add(
                field,
                f"{name} takes {sorted(set(params) - {'inplace'})}, not {unknown or ['inplace']}",
            )
            ok = False
            continue
        try:
            _make(name, args)
        except Exception as err:  # torchvision's own checks
            v.add(field, f"{name}: {err}")
            ok = False
            continue
        steps.append((name, args))
    if not ok:
        return None
    return Pipeline(
        fixed=[s for s in steps if s[0] in FIXED],
        random=[s for s in steps if s[0] in RANDOM],
        normalize=next((a for n, a in steps if n == "Normalize"), None),
        after_normalize=[s for s in steps if s[0] in AFTER_NORMALIZE],
        path=path,
    )


def check_sizes(
    v: Violations,
    ops_path: str,
    ops: Sequence[attempt_pb2.ImageOp],
    pipeline: Pipeline,
    max_pixels: int,
) -> None:
    """The image sizes the ops and transforms ask for, from their numbers alone (as the
    gateway checks them): a step over the pixel limit, a size of 0, a crop larger than
    the image it crops... each named before any image is made."""
    for problem in geometry.check(ops_path, ops, pipeline.path, pipeline.sized(), max_pixels):
        v.add(problem.field, problem.description)


def check_image_ops(
    v: Violations, path: str, ops: Sequence[attempt_pb2.ImageOp], limits: CommandLimits
) -> None:
    """Image ops the gateway could not fully check: sizes and filter names. (The pixels
    they make are checked with the transforms', by `check_sizes`.)"""
    if len(ops) > limits.max_image_ops:
        v.add(path, f"at most {limits.max_image_ops} image operations")
        return
    for i, op in enumerate(ops):
        which = op.WhichOneof("op")
        field = f"{path}[{i}]"
        if which is None:
            v.add(field, "set one of resize, convert, center_crop, grayscale")
        elif which in ("resize", "center_crop"):
            size = list(getattr(op, which).size)
            if len(size) not in (1, 2) or min(size) <= 0:
                v.add(f"{field}.{which}.size", "give one or two positive sizes")
            elif max(size) > limits.max_image_side:
                v.add(f"{field}.{which}.size", f"sides are at most {limits.max_image_side}")
            if (
                which == "resize"
                and op.resize.resample
                and not vocabulary.resample_name(op.resize.resample)
            ):
                v.add(f"{field}.resize.resample", f"unknown filter {op.resize.resample!r}")
        elif which == "convert" and not vocabulary.image_mode(op.convert.mode):
            v.add(
                f"{field}.convert.mode", f"unknown mode; allowed: {sorted(vocabulary.IMAGE_MODES)}"
            )
        elif which == "grayscale" and op.grayscale.num_output_channels not in (0, 1, 3):
            v.add(f"{field}.grayscale.num_output_channels", "must be 1 or 3")


def _wh(size: Sequence[int]) -> tuple[int, int]:
    return (size[0], size[0]) if len(size) == 1 else (size[0], size[1])


def draft(image: Image.Image, ops: Sequence[attempt_pb2.ImageOp]) -> None:
    """Before decoding: lets a JPEG decode straight at 1/2, 1/4 or 1/8 of its size when
    the first op shrinks it at least that much anyway (libjpeg's DCT scaling, what
    Pillow's own `thumbnail` does). A 500x500 photo resized to 64x64 then decodes at
    125x125, several times faster; other formats ignore it."""
    if ops and ops[0].WhichOneof("op") == "resize":
        image.draft(image.mode, _wh(ops[0].resize.size))


def apply_image_ops(image: Image.Image, ops: Sequence[attempt_pb2.ImageOp]) -> Image.Image:
    """The command's Pillow operations, in its order."""
    for op in ops:
        which = op.WhichOneof("op")
        if which == "resize":
            resample = vocabulary.resample_name(op.resize.resample or "bilinear") or "bilinear"
            image = image.resize(_wh(op.resize.size), Image.Resampling[resample.upper()])
        elif which == "convert":
            image = image.convert(vocabulary.image_mode(op.convert.mode))
        elif which == "center_crop":
            width, height = _wh(op.center_crop.size)
            left, top = (image.width - width) // 2, (image.height - height) // 2
            image = image.crop((left, top, left + width, top + height))
        elif which == "grayscale":
            channels = op.grayscale.num_output_channels or 1
            image = image.convert("L")
            if channels == 3:
                image = image.convert("RGB")
    return image


def tensor_mode(image: Image.Image) -> Image.Image:
    """The image in a mode a tensor is made of: L, RGB or RGBA."""
    if image.mode not in _TENSOR_MODES:
        image = image.convert("L" if image.mode == "1" else "RGB")
    return image


def fixed_tensor(image: Image.Image, pipeline: Pipeline) -> torch.Tensor:
    """An image after its ops, as the uint8 (C, H, W) tensor the cache keeps.

    A fixed transform that fails on a real image is the command's mistake, named with
    the transform (Resize, CenterCrop, Pad, Grayscale run here, on every image)."""
    x: torch.Tensor = v2.functional.pil_to_tensor(tensor_mode(image))
    for name, args in pipeline.fixed:
        try:
            x = _make(name, args)(x)
        except Exception as err:
            if not command_fault(err):
                raise
            raise InvalidArgument.one(
                f"{pipeline.path}.{name}",
                f"{name} cannot transform an image of {tuple(x.shape)}: {err}",
            ) from err
    return x.contiguous()


class BatchTransform:
    """What runs after the cache: random augmentation per sample, then float and Normalize."""

    def __init__(self, pipeline: Pipeline) -> None:
        self._random = (
            v2.Compose([_make(n, a) for n, a in pipeline.random]) if pipeline.random else None
        )
        self._after = (
            v2.Compose([_make(n, a) for n, a in pipeline.after_normalize])
            if pipeline.after_normalize
            else None
        )
        norm = pipeline.normalize
        self._mean = (
            torch.tensor(norm["mean"], dtype=torch.float32).view(-1, 1, 1) if norm else None
        )
        self._std = torch.tensor(norm["std"], dtype=torch.float32).view(-1, 1, 1) if norm else None

    @classmethod
    def identity(cls) -> BatchTransform:
        """For batches that are already float and normalized."""
        done = cls(Pipeline([], [], None, []))
        done._convert = False
        return done

    _convert = True

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        if not self._convert:
            return batch
        if self._random is not None:
            batch = torch.stack([self._random(x) for x in batch])
        x = batch.to(torch.float32).div_(255.0)
        if self._mean is not None and self._std is not None:
            x = (x - self._mean) / self._std
        if self._after is not None:
            x = torch.stack([self._after(s) for s in x])
        return x
