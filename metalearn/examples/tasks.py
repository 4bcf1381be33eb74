"""The family of image-classification tasks the meta-learning suite learns and is judged on.

Everything is made here, offline and deterministically: scikit-learn's bundled digits
(8x8, 0..16) transformed (rotated, mirrored, inverted, noised, blurred, up- and
down-sampled, cut to 10 images a class), and two families drawn with Pillow (geometric
shapes, and letters in Pillow's built-in font) so that the suite is not all digits.
Each variant's images are uploaded under their own labels (`"<variant>/<class>"`), so a
task is just a list of labels, as it is for any user.

`FAMILY` is the table's tasks; `HELD_OUT` are two tasks of the same kinds kept out of the
table, for the real warm-started study end to end. `NEW_LETTERS` is a task that shares no
label and no image with any of them (five other letters, drawn and noised as
`noisyletters` with a seed of their own): the one `make demo` and the README ask
metalearn about (`metalearn examples import-letters` uploads it).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from metalearn.examples import drawn
from metalearn.v1 import dataset_service_pb2

# Pixel arrays of one class: (N, H, W) floats in 0..1.
Images = np.ndarray


@dataclass(frozen=True)
class Task:
    """One task: a name and the labels it trains on."""

    name: str
    labels: tuple[str, ...]

    @property
    def family(self) -> str:
        """What its images are (digits, shapes, letters, colours, painted, arrows,
        textures): leave-one-family-out leaves out every task of the same kind."""
        return family(self.labels[0].split("/", 1)[0])


def family(variant: str) -> str:
    for kind in ("shapes", "letters", "colours", "painted", "arrows", "textures", "edges"):
        if variant.endswith(kind):
            return kind
    return "digits"


@cache
def _digits() -> dict[int, Images]:
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

    data = load_digits()
    images = data.images / 16.0
    return {d: images[data.target == d] for d in range(10)}


def _resize(images: Images, size: int, resample: Image.Resampling) -> Images:
    out = [
        np.asarray(
            Image.fromarray((im * 255).astype(np.uint8), mode="L").resize((size, size), resample)
        )
        / 255.0
        for im in images
    ]
    return np.stack(out)


def _blur(images: Images) -> Images:
    up = _resize(images, 16, Image.Resampling.BILINEAR)
    blurred = [
        np.asarray(
            Image.fromarray((im * 255).astype(np.uint8), mode="L").filter(
                ImageFilter.GaussianBlur(1.5)
            )
        )
        / 255.0
        for im in up
    ]
    return _resize(np.stack(blurred), 8, Image.Resampling.BOX)


def _noised(images: Images, sigma: float, seed: int) -> Images:
    rng = np.random.default_rng(seed)
    return np.clip(images + rng.normal(0.0, sigma, images.shape), 0.0, 1.0)


# Digit variants: class index -> that class's images.
_DIGIT_VARIANTS: dict[str, Callable[[int], Images]] = {
    "digits": lambda d: _digits()[d],
    "rot90": lambda d: np.rot90(_digits()[d], 1, axes=(1, 2)),
    "mirror": lambda d: _digits()[d][:, :, ::-1],
    "inverted": lambda d: 1.0 - _digits()[d],
    "noisy": lambda d: _noised(_digits()[d], 0.35, 100 + d),
    "blurred": lambda d: _blur(_digits()[d]),
    "up16": lambda d: _resize(_digits()[d], 16, Image.Resampling.BILINEAR),
    "down4": lambda d: _resize(_digits()[d], 4, Image.Resampling.BOX),
    "few": lambda d: _digits()[d][:10],
    "fewnoisy": lambda d: _noised(_digits()[d][10:20], 0.25, 200 + d),
}

SHAPES = ("circle", "square", "triangle", "cross", "ring")
LETTERS = tuple("ABCDEFGHJK")


def _draw_shape(kind: str, rng: np.random.Generator) -> Images:
    image = Image.new("L", (48, 48), 0)
    draw = ImageDraw.Draw(image)
    r = rng.uniform(8, 18)
    cx, cy = rng.uniform(r + 2, 46 - r, size=2)
    width = int(rng.integers(3, 6))
    box = (cx - r, cy - r, cx + r, cy + r)
    if kind == "circle":
        draw.ellipse(box, fill=255)
    elif kind == "ring":
        draw.ellipse(box, outline=255, width=width)
    elif kind == "square":
        draw.rectangle(box, fill=255)
    elif kind == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=255)
    else:
        draw.line((cx - r, cy, cx + r, cy), fill=255, width=width)
        draw.line((cx, cy - r, cx, cy + r), fill=255, width=width)
    image = image.rotate(float(rng.uniform(-30, 30)), resample=Image.Resampling.BILINEAR)
    return np.asarray(image.resize((16, 16), Image.Resampling.BOX)) / 255.0


def _draw_letter(letter: str, rng: np.random.Generator) -> Images:
    font = ImageFont.load_default(size=int(rng.integers(34, 44)))
    image = Image.new("L", (48, 48), 0)
    draw = ImageDraw.Draw(image)
    dx, dy = rng.uniform(-5, 5, size=2)
    draw.text((24 + dx, 24 + dy), letter, fill=255, font=font, anchor="mm")
    image = image.rotate(float(rng.uniform(-20, 20)), resample=Image.Resampling.BILINEAR)
    return np.asarray(image.resize((16, 16), Image.Resampling.BOX)) / 255.0


def _drawn(
    kind: str, index: int, count: int, seed: int, noise: float, letters: str = "".join(LETTERS)
) -> Images:
    rng = np.random.default_rng(seed + index)
    if kind == "shapes":
        images = np.stack([_draw_shape(SHAPES[index], rng) for _ in range(count)])
    else:
        images = np.stack([_draw_letter(letters[index], rng) for _ in range(count)])
    return _noised(images, noise, seed + 50 + index) if noise else images


_DRAWN_VARIANTS: dict[str, Callable[[int], Images]] = {
    "shapes": lambda i: _drawn("shapes", i, 150, 300, 0.0),
    "noisyshapes": lambda i: _drawn("shapes", i, 150, 400, 0.3),
    "fewshapes": lambda i: _drawn("shapes", i, 10, 500, 0.0),
    "letters": lambda i: _drawn("letters", i, 120, 600, 0.0),
    "noisyletters": lambda i: _drawn("letters", i, 120, 700, 0.3),
    "fewletters": lambda i: _drawn("letters", i, 10, 800, 0.0),
}


def _mislabeled(
    make: Callable[[int], Images], n_classes: int, share: float
) -> Callable[[int], Images]:
    """Class i's images with `share` of them taken from class i+1 (labels wrong at that
    rate, as hand-labelled data often is)."""

    def images(i: int) -> Images:
        own, other = make(i), make((i + 1) % n_classes)
        wrong = round(len(own) * share)
        return np.concatenate([own[wrong:], other[:wrong]])

    return images


def _imbalanced(make: Callable[[int], Images], counts: tuple[int, ...]) -> Callable[[int], Images]:
    """Class i cut to counts[i] images: a majority class and rare ones."""
    return lambda i: make(i)[: counts[i]]


# The wide suite's variants (see `drawn`): 16 x 16, colour where the name says so.
_WIDE_VARIANTS: dict[str, Callable[[int], Images]] = {
    "colours": lambda i: drawn.colour_blobs(i, 150, 1000 + 17 * i),
    "fewcolours": lambda i: drawn.colour_blobs(i, 40, 1100 + 17 * i),
    "painted": lambda i: drawn.painted_shapes(i, 150, 1200 + 17 * i),
    "fewpainted": lambda i: drawn.painted_shapes(i, 40, 1300 + 17 * i),
    "arrows": lambda i: drawn.arrows(i, 150, 1400 + 17 * i),
    "fewarrows": lambda i: drawn.arrows(i, 40, 1500 + 17 * i),
    "noisyarrows": lambda i: _noised(drawn.arrows(i, 150, 1600 + 17 * i), 0.3, 1650 + i),
    "textures": lambda i: drawn.textures(i, 150, 1700 + 17 * i),
    "fewtextures": lambda i: drawn.textures(i, 40, 1800 + 17 * i),
    # Digit 8 at a tenth of the others (the suite uses 3 against 8).
    "imbdigits": _imbalanced(lambda d: _digits()[d], (170,) * 8 + (17, 17)),
    "imbshapes": _imbalanced(lambda i: _drawn("shapes", i, 150, 1900, 0.0), (150, 60, 30, 15, 8)),
    "mislabeledshapes": _mislabeled(lambda i: _drawn("shapes", i, 100, 2000, 0.0), 5, 0.3),
    "mislabeleddigits": _mislabeled(lambda d: _digits()[d], 10, 0.3),
    "edges": lambda i: drawn.edges(i, 100, 2100 + 17 * i),
    "noisyedges": lambda i: _noised(drawn.edges(i, 100, 2200 + 17 * i), 0.3, 2250 + i),
}


def _framed_digits(variant: str, count: int, seed: int) -> Callable[[int], Images]:
    """Framed digits of a digit variant: `count` a class in the middle (its first
    images), the clutter from every class's others."""

    def images(d: int) -> Images:
        clutter = np.concatenate([_DIGIT_VARIANTS[variant](c)[100:] for c in range(10)])
        return drawn.framed(_DIGIT_VARIANTS[variant](d)[:count], clutter, seed + d)

    return images


def _framed_arrows(count: int, noise: float, seed: int) -> Callable[[int], Images]:
    def images(i: int) -> Images:
        others = [drawn.small(drawn.arrows(c, 30, seed + 50 + c)) for c in range(4)]
        clutter = np.concatenate(others)
        found = drawn.framed(drawn.small(drawn.arrows(i, count, seed + i)), clutter, seed + 10 + i)
        return _noised(found, noise, seed + 20 + i) if noise else found

    return images


def _framed_drawn(kind: str, count: int, noise: float, seed: int) -> Callable[[int], Images]:
    """Drawn letters or shapes, boxed down to 8 x 8 and framed by others of their kind."""
    n = len(SHAPES) if kind == "shapes" else len(LETTERS)

    def images(i: int) -> Images:
        clutter = np.concatenate(
            [drawn.small(_drawn(kind, c, 20, seed + 50, 0.0)) for c in range(n)]
        )
        found = drawn.framed(drawn.small(_drawn(kind, i, count, seed, 0.0)), clutter, seed + 10 + i)
        return _noised(found, noise, seed + 20 + i) if noise else found

    return images


_WIDE_VARIANTS.update(
    {
        "framedletters": _framed_drawn("letters", 40, 0.0, 3100),
        "framednoisyletters": _framed_drawn("letters", 40, 0.25, 3200),
        "framedfewletters": _framed_drawn("letters", 15, 0.0, 3300),
        "framedshapes": _framed_drawn("shapes", 60, 0.0, 3400),
        "framednoisyshapes": _framed_drawn("shapes", 60, 0.25, 3500),
        "framedfewshapes": _framed_drawn("shapes", 20, 0.0, 3600),
        "frameddigits": _framed_digits("digits", 40, 2300),
        "framednoisy": _framed_digits("noisy", 40, 2400),
        "framedrot90": _framed_digits("rot90", 40, 2500),
        "framedmirror": _framed_digits("mirror", 40, 2600),
        "framedfew": _framed_digits("digits", 15, 2700),
        "framedarrows": _framed_arrows(60, 0.0, 2800),
        "framednoisyarrows": _framed_arrows(60, 0.25, 2900),
        "framedfewarrows": _framed_arrows(25, 0.0, 3000),
    }
)


def _class_names(variant: str) -> tuple[str, ...]:
    if variant.endswith("colours"):
        return drawn.HUES
    if variant.endswith("arrows"):
        return drawn.DIRECTIONS
    if variant.endswith("edges"):
        return drawn.SIDES
    if variant.endswith("textures"):
        return drawn.PATTERNS
    if variant.endswith("shapes") or variant.endswith("painted"):
        return SHAPES
    if variant.endswith("letters"):
        return LETTERS
    return tuple(str(d) for d in range(10))


def label(variant: str, klass: str) -> str:
    return f"{variant}/{klass}"


def _task(variant: str, classes: str | None = None) -> Task:
    names = _class_names(variant)
    chosen = names if classes is None else tuple(c for c in names if c in classes.split(","))
    suffix = "" if classes is None else "-" + "".join(chosen)
    return Task(f"{variant}{suffix}", tuple(label(variant, c) for c in chosen))


FAMILY: tuple[Task, ...] = (
    _task("digits"),
    _task("digits", "0,1,2,3,4"),
    _task("digits", "5,6,7,8,9"),
    _task("digits", "3,8"),
    _task("digits", "1,7"),
    _task("rot90"),
    _task("rot90", "2,5,7"),
    _task("mirror"),
    _task("inverted"),
    _task("inverted", "0,1,2,3,4"),
    _task("noisy"),
    _task("noisy", "3,8"),
    _task("blurred"),
    _task("up16"),
    _task("down4"),
    _task("few"),
    _task("few", "0,1,2,3,4"),
    _task("fewnoisy"),
    _task("shapes"),
    _task("noisyshapes"),
    _task("fewshapes"),
    _task("letters"),
    _task("noisyletters"),
    _task("fewletters", "A,B,C,D,E"),
)

# The wide suite (issue 29): its own table over `grid.WIDE`, where what is best differs
# between tasks: the class is a colour (greyscale destroys it), a digit, an arrow, a
# letter or a shape among clutter (a crop to the middle makes it easy), or a bar at the
# border (the crop destroys it); shapes painted in random colours; digits with a rare
# class; shapes and digits with 30 % of labels wrong; and some of the first suite's
# tasks as they were.
WIDE: tuple[Task, ...] = (
    _task("colours"),
    _task("colours", "red,green,blue"),
    _task("fewcolours"),
    _task("painted"),
    _task("fewpainted"),
    _task("arrows"),
    _task("arrows", "left,right"),
    _task("fewarrows"),
    _task("noisyarrows"),
    _task("textures"),
    _task("fewtextures"),
    _task("digits"),
    _task("digits", "3,8"),
    _task("rot90"),
    _task("few"),
    _task("imbdigits", "3,8"),
    _task("mislabeleddigits"),
    _task("shapes"),
    _task("noisyshapes"),
    _task("imbshapes"),
    _task("mislabeledshapes"),
    _task("letters"),
    _task("noisyletters"),
    _task("frameddigits"),
    _task("frameddigits", "0,1,2,3,4"),
    _task("framednoisy"),
    _task("framedrot90"),
    _task("framedmirror"),
    _task("framedfew"),
    _task("framedarrows"),
    _task("framedarrows", "left,right"),
    _task("framednoisyarrows"),
    _task("framedfewarrows"),
    _task("framedletters"),
    _task("framedletters", "A,B,C,D,E"),
    _task("framednoisyletters"),
    _task("framedfewletters"),
    _task("framedshapes"),
    _task("framedshapes", "circle,square,triangle"),
    _task("framednoisyshapes"),
    _task("framedfewshapes"),
    _task("edges"),
    _task("noisyedges"),
)

# Kept out of the table: the end-to-end warm-started studies run on these.
HELD_OUT: tuple[Task, ...] = (
    _task("digits", "3,5,8"),
    _task("noisyletters", "A,B,C,D,E"),
)


def variant_of(task: Task) -> str:
    return task.labels[0].split("/", 1)[0]


def class_images(variant: str, klass: str) -> Images:
    names = _class_names(variant)
    index = names.index(klass)
    make = _DIGIT_VARIANTS.get(variant) or _DRAWN_VARIANTS.get(variant) or _WIDE_VARIANTS[variant]
    return make(index)


def png(pixels: Images) -> bytes:
    mode = "RGB" if pixels.ndim == 3 else "L"
    image = Image.fromarray(np.round(np.clip(pixels, 0, 1) * 255).astype(np.uint8), mode=mode)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def uploads(tasks: tuple[Task, ...]) -> Iterator[dataset_service_pb2.UploadImagesRequest]:
    """Every image of these tasks' labels, once each, as an UploadImages stream takes them."""
    seen: set[str] = set()
    for task in tasks:
        for name in task.labels:
            if name in seen:
                continue
            seen.add(name)
            variant, klass = name.split("/", 1)
            for index, pixels in enumerate(class_images(variant, klass)):
                yield dataset_service_pb2.UploadImagesRequest(
                    label=name, data=png(pixels), filename=f"{name}/{index:04d}.png"
                )


# Letters none of the tasks above draws, as noisy as `noisyletters` (and as many a class).
_NEW_LETTERS = "LMNPR"
NEW_LETTERS = Task("new-letters", tuple(f"letter {c}" for c in _NEW_LETTERS))


def new_letter_uploads() -> Iterator[dataset_service_pb2.UploadImagesRequest]:
    """Every image of NEW_LETTERS, as an UploadImages stream takes them."""
    for index, name in enumerate(NEW_LETTERS.labels):
        images = _drawn("letters", index, 120, 900, 0.3, letters=_NEW_LETTERS)
        for i, pixels in enumerate(images):
            yield dataset_service_pb2.UploadImagesRequest(
                label=name, data=png(pixels), filename=f"{name}/{i:04d}.png"
            )
