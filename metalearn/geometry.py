"""How large an image is at every step of a command's image ops and transforms, worked out
from the command's numbers alone, before any image is made.

A `Resize` of 10^6 x 10^6 inside `transform` used to be found out by torch trying to
allocate a terabyte. Here each step's size follows from the arguments by torchvision's
own rules (`torchvision.transforms.v2`: sizes are [height, width], one value means the
smaller edge for Resize and a square for crops), so a step over the pixel limit is
refused naming its argument. Torch-free on purpose: the gateway refuses such a command
before it is queued, and the trainer runs the same arithmetic, first on the command and
then on each real image's size.

Before the images are seen, their size is not known unless an op or transform sets it;
the arithmetic then starts from a 1x1 image, which gives a lower bound: enough to refuse
a step that is too large for any image, never to refuse one that might fit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from metalearn import vocabulary
from metalearn.errors import FieldViolation
from metalearn.v1 import attempt_pb2

# Channels of a tensor made from an image of each mode: the trainer keeps L, RGB and
# RGBA as they are, makes "1" L and every other mode RGB.
_MODE_CHANNELS = {"1": 1, "L": 1, "RGBA": 4}
_RGB_CHANNELS = 3


def mode_channels(mode: str) -> int:
    """Channels of the tensor the trainer makes of an image in Pillow `mode`."""
    return _MODE_CHANNELS.get(mode, _RGB_CHANNELS)


@dataclass(frozen=True)
class Size:
    """One image's size at one step."""

    height: int
    width: int
    channels: int
    # False while the images' own size still shows through (nothing has set it yet):
    # height and width are then lower bounds.
    known: bool = True

    @property
    def pixels(self) -> int:
        return self.height * self.width

    def describe(self) -> str:
        return (
            f"{self.width}x{self.height}" if self.known else f"at least {self.width}x{self.height}"
        )


UNKNOWN = Size(1, 1, 1, known=False)


@dataclass(frozen=True)
class Step:
    """A size an image takes, and the argument that gave it that size."""

    field: str
    size: Size
    # Made once per image and kept (image ops, fixed transforms), or per sample (random).
    fixed: bool


@dataclass
class Plan:
    """Every size an image takes through a command, and the mistakes the numbers show."""

    start: Size
    steps: list[Step]
    problems: list[FieldViolation]

    @property
    def fixed(self) -> Step | None:
        """The last step whose image is kept: the size of the cached tensors."""
        return next((s for s in reversed(self.steps) if s.fixed), None)

    @property
    def final(self) -> Size:
        """What the model gets in training (random transforms included)."""
        return self.steps[-1].size if self.steps else self.start

    @property
    def evaluated(self) -> Size:
        """What the model gets in evaluation (no random transforms)."""
        fixed = self.fixed
        return fixed.size if fixed else self.start

    def over(self, max_pixels: int) -> Step | None:
        """The first step whose image has more than `max_pixels` pixels."""
        return next((s for s in self.steps if s.size.pixels > max_pixels), None)


def _int(value: Any) -> int | None:
    """A whole number as a command carries it (Struct numbers are floats)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return None


def _sides(value: Any) -> list[int] | None:
    """A size argument: one number, or a list of one or two (None if neither)."""
    items = value if isinstance(value, list) else [value]
    sides = [_int(item) for item in items]
    if not 1 <= len(sides) <= 2 or any(s is None for s in sides):
        return None
    return [s for s in sides if s is not None]


def _padding(value: Any) -> tuple[int, int, int, int] | None:
    """(left, top, right, bottom) of a padding argument: one number, or 1, 2 or 4."""
    items = value if isinstance(value, list) else [value]
    sides = [_int(item) for item in items]
    if len(sides) not in (1, 2, 4) or any(s is None for s in sides):
        return None
    p = [s for s in sides if s is not None]
    if len(p) == 1:
        return p[0], p[0], p[0], p[0]
    if len(p) == 2:
        return p[0], p[1], p[0], p[1]
    return p[0], p[1], p[2], p[3]


def _hw(sides: list[int]) -> tuple[int, int]:
    return (sides[0], sides[0]) if len(sides) == 1 else (sides[0], sides[1])


def image_op_steps(path: str, ops: Sequence[attempt_pb2.ImageOp], start: Size = UNKNOWN) -> Plan:
    """Sizes through the Pillow image ops (whose sizes are [width, height])."""
    plan = Plan(start, [], [])
    size = start
    for i, op in enumerate(ops):
        which = op.WhichOneof("op")
        field = f"{path}[{i}]"
        if which in ("resize", "center_crop"):
            given = list(getattr(op, which).size)
            if len(given) not in (1, 2) or min(given) <= 0:
                continue  # the op checks name this mistake
            width, height = (given[0], given[0]) if len(given) == 1 else (given[0], given[1])
            size = Size(height, width, size.channels)
            plan.steps.append(Step(f"{field}.{which}.size", size, fixed=True))
        elif which == "convert":
            mode = vocabulary.image_mode(op.convert.mode)
            if mode is not None:
                size = replace(size, channels=mode_channels(mode))
                plan.steps.append(Step(f"{field}.convert.mode", size, fixed=True))
        elif which == "grayscale" and op.grayscale.num_output_channels in (0, 1, 3):
            size = replace(size, channels=op.grayscale.num_output_channels or 1)
            plan.steps.append(Step(f"{field}.grayscale.num_output_channels", size, fixed=True))
    return plan


def _resize(
    size: Size, field: str, args: Mapping[str, Any], problems: list[FieldViolation]
) -> tuple[str, Size] | None:
    """torchvision's Resize: [h, w]; or the smaller edge, capped by `max_size`."""
    max_size = _int(args["max_size"]) if args.get("max_size") is not None else None
    if args.get("max_size") is not None and (max_size is None or max_size <= 0):
        problems.append(FieldViolation(f"{field}.max_size", "must be a positive whole number"))
        return None
    if args.get("size") is None:
        if max_size is None:
            return None  # torchvision names it: `size` is required
        if not size.known:
            return f"{field}.max_size", Size(1, 1, size.channels, known=False)
        short, long = sorted((size.height, size.width))
        new_short, new_long = int(max_size * short / long), max_size
        return f"{field}.max_size", _oriented(size, new_short, new_long)
    sides = _sides(args["size"])
    if sides is None:
        return None  # not numbers: torchvision names it
    if min(sides) <= 0:
        problems.append(FieldViolation(f"{field}.size", "sizes must be positive"))
        return None
    if len(sides) == 2:
        if max_size is not None:
            problems.append(
                FieldViolation(f"{field}.max_size", "only applies with one size (the smaller edge)")
            )
            return None
        return f"{field}.size", Size(sides[0], sides[1], size.channels)
    requested = sides[0]
    if max_size is not None and max_size <= requested:
        problems.append(
            FieldViolation(
                f"{field}.max_size", f"must be greater than the smaller edge's size {requested}"
            )
        )
        return None
    if not size.known and max_size is not None:
        # The cap shrinks the smaller edge of a long image: only 1x1 is sure.
        return f"{field}.size", Size(1, 1, size.channels, known=False)
    short, long = sorted((size.height, size.width))
    new_short, new_long = requested, int(requested * long / short)
    if max_size is not None and new_long > max_size:
        new_short, new_long = int(max_size * new_short / new_long), max_size
    return f"{field}.size", _oriented(size, new_short, new_long)


def _oriented(size: Size, new_short: int, new_long: int) -> Size:
    """A resized image keeps its orientation: the short side stays the short side."""
    if size.width <= size.height:
        return replace(size, width=new_short, height=new_long)
    return replace(size, width=new_long, height=new_short)


def _padded(size: Size, padding: tuple[int, int, int, int]) -> Size:
    left, top, right, bottom = padding
    height, width = size.height + top + bottom, size.width + left + right
    if not size.known:  # a lower bound stays one only while it is a size
        height, width = max(height, 1), max(width, 1)
    return replace(size, height=height, width=width)


def transform_steps(path: str, transform: Mapping[str, Any], start: Size) -> Plan:
    """Sizes through a command's transforms (a plain dict, as `plain_struct` gives), in
    the order the trainer applies them. Arguments that are not numbers are left to
    torchvision to name; the plan stops at the first step it cannot size."""
    plan = Plan(start, [], [])
    size = start
    for name in vocabulary.FIXED_TRANSFORMS + vocabulary.RANDOM_TRANSFORMS:
        value = transform.get(name)
        if value is None or value is False:
            continue
        args: Mapping[str, Any] = value if isinstance(value, dict) else {}
        field = f"{path}.{name}"
        fixed = name in vocabulary.FIXED_TRANSFORMS
        before = len(plan.problems)
        if name == "Resize":
            resized = _resize(size, field, args, plan.problems)
            if resized is None:
                return plan
            at, size = resized
            plan.steps.append(Step(at, size, fixed))
        elif name in ("CenterCrop", "RandomResizedCrop"):
            sides = _sides(args.get("size"))
            if sides is None:
                return plan
            if min(sides) <= 0:
                plan.problems.append(FieldViolation(f"{field}.size", "sizes must be positive"))
                return plan
            height, width = _hw(sides)
            size = Size(height, width, size.channels)
            plan.steps.append(Step(f"{field}.size", size, fixed))
        elif name == "Pad":
            padding = _padding(args.get("padding"))
            if padding is None:
                return plan
            size = _padded(size, padding)
            plan.steps.append(Step(f"{field}.padding", size, fixed))
        elif name == "Grayscale":
            channels = _int(args.get("num_output_channels", 1))
            if channels not in (1, 3):
                plan.problems.append(
                    FieldViolation(f"{field}.num_output_channels", "must be 1 or 3")
                )
                return plan
            size = replace(size, channels=channels)
            plan.steps.append(Step(f"{field}.num_output_channels", size, fixed))
        elif name == "RandomCrop":
            cropped = _random_crop(size, field, args, plan)
            if cropped is None:
                return plan
            size = cropped
        elif name == "RandomRotation" and args.get("expand"):
            # Each angle gives its own size: a batch needs one, and evaluation (which
            # rotates nothing) would give the model yet another.
            plan.problems.append(
                FieldViolation(
                    f"{field}.expand",
                    "would give each rotated image its own size (and evaluated images"
                    " another); rotate without expanding",
                )
            )
            return plan
        if size.known and min(size.height, size.width) <= 0:
            plan.problems.append(
                FieldViolation(plan.steps[-1].field, f"leaves an image of {size.describe()}")
            )
        if len(plan.problems) > before:
            return plan
    return plan


def _random_crop(size: Size, field: str, args: Mapping[str, Any], plan: Plan) -> Size | None:
    """torchvision's RandomCrop: pad by `padding`, then as needed, then crop `size`."""
    sides = _sides(args.get("size"))
    if sides is None:
        return None
    if min(sides) <= 0:
        plan.problems.append(FieldViolation(f"{field}.size", "sizes must be positive"))
        return None
    height, width = _hw(sides)
    if args.get("padding") is not None:
        padding = _padding(args["padding"])
        if padding is None:
            return None
        size = _padded(size, padding)
        plan.steps.append(Step(f"{field}.padding", size, fixed=False))
    if args.get("pad_if_needed"):
        grown_h = size.height + 2 * max(height - size.height, 0)
        grown_w = size.width + 2 * max(width - size.width, 0)
        if (grown_h, grown_w) != (size.height, size.width):
            size = replace(size, height=grown_h, width=grown_w)
            plan.steps.append(Step(f"{field}.size", size, fixed=False))
    elif size.known and (size.height < height or size.width < width):
        plan.problems.append(
            FieldViolation(
                f"{field}.size",
                f"{width}x{height} is larger than the images ({size.describe()}) it crops;"
                " set pad_if_needed or crop less",
            )
        )
        return None
    cropped = Size(height, width, size.channels)
    plan.steps.append(Step(f"{field}.size", cropped, fixed=False))
    return cropped


def plan(
    ops_path: str,
    image_ops: Sequence[attempt_pb2.ImageOp],
    transform_path: str,
    transform: Mapping[str, Any],
    start: Size = UNKNOWN,
) -> Plan:
    """Sizes through the image ops, then the transforms."""
    ops = image_op_steps(ops_path, image_ops, start)
    rest = transform_steps(transform_path, transform, ops.final)
    return Plan(start, ops.steps + rest.steps, ops.problems + rest.problems)


def check(
    ops_path: str,
    image_ops: Sequence[attempt_pb2.ImageOp],
    transform_path: str,
    transform: Mapping[str, Any],
    max_pixels: int,
) -> list[FieldViolation]:
    """What the numbers alone show wrong with a command's image sizes, before any image."""
    found = plan(ops_path, image_ops, transform_path, transform)
    problems = list(found.problems)
    step = found.over(max_pixels)
    if step is not None:
        problems.append(
            FieldViolation(
                step.field,
                f"makes images of {step.size.describe()} pixels; each step of the image ops"
                f" and transforms may make at most {max_pixels:,}",
            )
        )
    return problems
