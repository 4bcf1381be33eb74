"""The wide suite's image families, drawn here with Pillow and numpy (offline, seeded).

They are made so that what is good for one task is bad for another, which a suite of
digits, shapes and letters alone never showed:

- `colours`: the class is the hue (blobs of one colour on a grey ground); a command that
  drops colour destroys it.
- `painted`: the class is the shape, painted in a random colour on a ground of another
  random colour; colour is a nuisance, and dropping it helps.
- `arrows`: the class is the direction an arrow points.
- `textures`: the class is a pattern (stripes, checks, dots, rings, speckle) at any
  orientation, filling the image.
- `framed`: a digit or an arrow in the middle of a 16 x 16 image, others of its kind
  scattered around it; the class is the middle one, and a crop to the middle makes a
  hard few-shot task easy.
- `edges`: the class is the side a bar lies along; a crop to the middle destroys it.

Every function returns one class's images as an (N, H, W) or (N, H, W, 3) float array in
0..1.
"""

from __future__ import annotations

import colorsys

import numpy as np
from PIL import Image, ImageDraw

Images = np.ndarray

SIZE = 16
# Drawn at 3x and box-filtered down: anti-aliased edges at 16 x 16.
_SCALE = 3

HUES = ("red", "yellow", "green", "cyan", "blue", "magenta")
DIRECTIONS = ("up", "right", "down", "left")
SIDES = ("top", "right", "bottom", "left")
PATTERNS = ("stripes", "checks", "dots", "rings", "speckle")
SHAPES = ("circle", "square", "triangle", "cross", "ring")


def _rgb(hue: float, saturation: float, value: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(hue % 1.0, saturation, value)
    return int(r * 255), int(g * 255), int(b * 255)


def _down(image: Image.Image) -> np.ndarray:
    return np.asarray(image.resize((SIZE, SIZE), Image.Resampling.BOX)) / 255.0


def colour_blobs(index: int, count: int, seed: int) -> Images:
    rng = np.random.default_rng(seed)
    big = SIZE * _SCALE
    out = []
    for _ in range(count):
        grey = int(rng.integers(20, 110))
        image = Image.new("RGB", (big, big), (grey, grey, grey))
        draw = ImageDraw.Draw(image)
        for _ in range(int(rng.integers(2, 5))):
            hue = index / len(HUES) + rng.normal(0, 0.025)
            fill = _rgb(hue, rng.uniform(0.55, 1.0), rng.uniform(0.55, 1.0))
            r = rng.uniform(4, 12)
            cx, cy = rng.uniform(0, big, size=2)
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
        out.append(_down(image))
    return np.stack(out)


def _shape(
    draw: ImageDraw.ImageDraw, kind: str, rng: np.random.Generator, fill: tuple[int, int, int]
) -> None:
    big = SIZE * _SCALE
    r = rng.uniform(big * 0.18, big * 0.38)
    cx, cy = rng.uniform(r + 1, big - r - 1, size=2)
    width = int(rng.integers(4, 8))
    box = (cx - r, cy - r, cx + r, cy + r)
    if kind == "circle":
        draw.ellipse(box, fill=fill)
    elif kind == "ring":
        draw.ellipse(box, outline=fill, width=width)
    elif kind == "square":
        draw.rectangle(box, fill=fill)
    elif kind == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    else:
        draw.line((cx - r, cy, cx + r, cy), fill=fill, width=width)
        draw.line((cx, cy - r, cx, cy + r), fill=fill, width=width)


def painted_shapes(index: int, count: int, seed: int) -> Images:
    rng = np.random.default_rng(seed)
    big = SIZE * _SCALE
    out = []
    for _ in range(count):
        ground = rng.uniform()
        background = _rgb(ground, rng.uniform(0.3, 0.9), 0.45)
        image = Image.new("RGB", (big, big), background)
        draw = ImageDraw.Draw(image)
        hue = ground + rng.uniform(0.2, 0.8)
        _shape(draw, SHAPES[index], rng, _rgb(hue, rng.uniform(0.6, 1.0), rng.uniform(0.8, 1.0)))
        image = image.rotate(
            float(rng.uniform(-25, 25)), resample=Image.Resampling.BILINEAR, fillcolor=background
        )
        out.append(_down(image))
    return np.stack(out)


def arrows(index: int, count: int, seed: int) -> Images:
    rng = np.random.default_rng(seed)
    big = SIZE * _SCALE
    out = []
    for _ in range(count):
        image = Image.new("L", (big, big), 0)
        draw = ImageDraw.Draw(image)
        length = rng.uniform(big * 0.45, big * 0.8)
        cx, cy = big / 2 + rng.uniform(-big * 0.12, big * 0.12, size=2)
        width = int(rng.integers(4, 8))
        head = length * rng.uniform(0.3, 0.45)
        # Pointing up, then turned to the class's direction.
        tip, tail = (cx, cy - length / 2), (cx, cy + length / 2)
        draw.line((*tail, *tip), fill=255, width=width)
        draw.polygon(
            [tip, (cx - head * 0.7, tip[1] + head), (cx + head * 0.7, tip[1] + head)], fill=255
        )
        angle = -90.0 * index + float(rng.uniform(-20, 20))
        image = image.rotate(angle, resample=Image.Resampling.BILINEAR, center=(cx, cy))
        out.append(_down(image))
    return np.stack(out)


def textures(index: int, count: int, seed: int) -> Images:
    rng = np.random.default_rng(seed)
    big = SIZE * _SCALE * 2  # drawn larger, rotated, then the middle cut out
    out = []
    for _ in range(count):
        image = Image.new("L", (big, big), 0)
        draw = ImageDraw.Draw(image)
        period = rng.uniform(15, 24)
        kind = PATTERNS[index]
        if kind == "stripes":
            for x in np.arange(0, big, period):
                draw.rectangle((x, 0, x + period / 2, big), fill=255)
        elif kind == "checks":
            for x in np.arange(0, big, period):
                for y in np.arange(0, big, period):
                    if (int(x / period) + int(y / period)) % 2 == 0:
                        draw.rectangle((x, y, x + period, y + period), fill=255)
        elif kind == "dots":
            for x in np.arange(0, big, period):
                for y in np.arange(0, big, period):
                    r = period * 0.25
                    draw.ellipse((x - r, y - r, x + r, y + r), fill=255)
        elif kind == "rings":
            cx, cy = rng.uniform(big * 0.3, big * 0.7, size=2)
            for r in np.arange(period, big, period):
                draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=255, width=3)
        else:
            cells = rng.random((big // 6, big // 6)) < 0.35
            speckle = Image.fromarray((cells * 255).astype(np.uint8), mode="L")
            image = speckle.resize((big, big), Image.Resampling.NEAREST)
        image = image.rotate(float(rng.uniform(0, 360)), resample=Image.Resampling.BILINEAR)
        quarter = big // 4
        image = image.crop((quarter, quarter, big - quarter, big - quarter))
        pixels = _down(image) * rng.uniform(0.6, 1.0)
        out.append(np.clip(pixels + rng.normal(0, 0.08, pixels.shape), 0, 1))
    return np.stack(out)


def framed(centres: Images, clutter: Images, seed: int) -> Images:
    """16 x 16 images: each 8 x 8 image of `centres` in the middle, clean, and four to six
    8 x 8 images of `clutter` (every class's) scattered around it. The class is only the
    middle one: a crop to the middle finds it, a network that reads the whole image must
    learn to ignore the rest (hard from few examples)."""
    rng = np.random.default_rng(seed)
    out = []
    for centre in centres:
        canvas = np.zeros((SIZE, SIZE))
        for _ in range(int(rng.integers(4, 7))):
            y, x = (int(v) for v in rng.integers(0, SIZE // 2 + 1, size=2))
            if 3 <= y <= 5 and 3 <= x <= 5:
                continue  # it would lie under the middle one
            other = clutter[int(rng.integers(len(clutter)))] * rng.uniform(0.5, 1.0)
            canvas[y : y + 8, x : x + 8] = np.maximum(canvas[y : y + 8, x : x + 8], other)
        canvas[4:12, 4:12] = centre
        out.append(canvas)
    return np.stack(out)


def small(images: Images) -> Images:
    """16 x 16 images boxed down to 8 x 8."""
    return np.stack(
        [
            np.asarray(
                Image.fromarray((im * 255).astype(np.uint8)).resize((8, 8), Image.Resampling.BOX)
            )
            / 255.0
            for im in images
        ]
    )


def edges(index: int, count: int, seed: int) -> Images:
    """A bar along one edge (the class: top, right, bottom, left) over faint noise: a crop
    to the middle loses it."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        image = rng.uniform(0.0, 0.3, (SIZE, SIZE))
        width = int(rng.integers(2, 4))
        start = int(rng.integers(0, SIZE - 6))
        end = start + int(rng.integers(5, SIZE - start + 1))
        if index == 0:
            image[:width, start:end] = 1.0
        elif index == 1:
            image[start:end, -width:] = 1.0
        elif index == 2:
            image[-width:, start:end] = 1.0
        else:
            image[start:end, :width] = 1.0
        out.append(image)
    return np.stack(out)
