"""A task's profile: meta-features of its train split, for telling tasks apart.

How tasks are profiled and compared: docs/architecture.md §11.

The gateway stores one profile per task and learns a distance over them, so a profile must
be a pure function of the task's images: the same images, labels and image ops give the
same numbers on any trainer. Hence everything random is seeded, the images are read in a
fixed order (the preprocessor sorts them by label and hash), the labels are sorted (a task
is a set of labels), and the arithmetic runs on one thread, where float sums cannot be
reordered by a thread pool. The test split is never read: profiles steer the search for
commands, and the test split must stay unseen by anything that chooses a command.

Features (the names are a contract with the gateway):

- sizes: `log_images`, `log_classes`, `imbalance`, `log_pixels`, `channels`;
- pixels (all of them, scaled to [0, 1]): `pixel_mean`, `pixel_std`, `pixel_skew`,
  `sparsity`;
- landmarkers, cheap classifiers on flattened pixels of a stratified sample, as their
  cross-validated gain over chance (0 = chance, 1 = perfect): `landmark_centroid`,
  `landmark_1nn`, `landmark_linear`;
- view landmarkers, the same three on two views of the same sample, as their gain
  minus the whole image's: where in the frame the classes differ (`centre_centroid`,
  `centre_1nn`, `centre_linear`: the middle half of each side; above 0 when the border
  holds clutter, near -1 when the classes differ only at the edges) and whether colour
  tells them apart (`grey_centroid`, `grey_1nn`, `grey_linear`: the channels' mean;
  near -1 when only colour does, 0 for a greyscale task). These are relative
  landmarkers (Fuernkranz and Petrak, 2001): which preprocessing suits a task is what
  they measure, and what a ranking of commands with a crop or a greyscale needs to
  know, which no statistic of the whole image says;
- a probe, a fixed untrained conv net under a fixed seed, and how its features separate
  the classes: `probe_1nn`, `probe_centroid`, `probe_fisher`, `probe_class_distance`.

A task declared by runs reported from users' own code has no images in the store: its
reporter may send a sample of them instead (`sample_tensors`), which is profiled the same
way once decoded to one mode and one size, in an order of its own content (the labels'
sorted order, then each image's hash), so a sample's profile is a function of the set of
labelled images it holds, as a stored task's is.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from PIL import Image
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.neighbors import KNeighborsClassifier, NearestCentroid
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]
from torch import nn

from metalearn.errors import FailedPrecondition, FieldViolation, InvalidArgument, Violations
from metalearn.limits import MAX_SAMPLE_BYTES, MAX_SAMPLE_IMAGES, SAMPLE_FORMATS, CommandLimits
from metalearn.v1 import attempt_pb2, dataset_service_pb2, task_pb2
from trainer import checks
from trainer.config import TrainerConfig
from trainer.data import ImageSource, Preprocessor, Tensors
from trainer.transforms import Pipeline, check_image_ops, check_sizes

# The seed of the gateway's train/test split whose train split is profiled, and of every
# random choice here (sample, folds, probe weights).
SEED = 0
# Images the landmarkers and the probe see at most: enough for stable accuracies, few
# enough that 1-NN and the probe take well under a second.
SAMPLE_SIZE = 600
FOLDS = 3
# Larger images are area-downsampled to fit this side (aspect kept) for the landmarkers
# and the probe, so their cost does not grow with the image size.
VIEW_SIDE = 32
# A pixel below this (of 1) counts as empty for `sparsity`.
SPARSE_BELOW = 0.1
# The linear landmarker's iterations at most.
LINEAR_MAX_ITER = 300
# Decimals kept: the last bits of a float sum are noise, not a property of the task.
DECIMALS = 6
# Pixels counted per bincount, so a dataset of gigabytes needs no copy of its size.
_CHUNK = 1 << 24
# Floats one batch of the downsampling or the probe holds at most.
_BATCH_FLOATS = 1 << 24
# The preprocessor and the image source name a training command's fields; a profile's
# request has the same ones under `task`.
_FIELDS = ("command.", "task.")
# A declared task's sample is bounded by MAX_SAMPLE_IMAGES and MAX_SAMPLE_BYTES
# (metalearn/limits.py, shared with the gateway): the gateway checks them first, and the
# trainer again, because a sample is the one place a trainer decodes bytes that the
# gateway did not check and store itself.
# A sample holds only SAMPLE_FORMATS (metalearn/limits.py). Pillow is told to try only
# these, so no other format's parser ever reads a reporter's bytes.
# The filter that brings a sample's images to one size. Bilinear (antialiased when it
# shrinks, as Pillow's resize always is): its weights are plain arithmetic, computed and
# applied in fixed point the same way everywhere, where bicubic's and Lanczos's would
# lean on libm; and it is the resize filter a command's image ops default to.
SAMPLE_RESAMPLE = Image.Resampling.BILINEAR
# Modes that are greyscale: a sample of only these is profiled as one channel (L), any
# other mode makes it RGB (palettes included, even grey ones: telling them apart would
# mean reading every palette, and a colour task sent as a palette is the likelier case).
# Alpha is dropped, as `convert` drops it: a profile reads what a classifier would see.
_GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N"})
# 16-bit greyscale PNGs (Pillow opens them as I;16 or I): `convert("L")` clips their
# values at 255, so they are scaled to 8 bits here instead.
_WIDE_GREY_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})


def check_task(task: task_pb2.TaskKey, config: TrainerConfig) -> list[str]:
    """The task's labels, sorted, or INVALID_ARGUMENT naming each bad field of `task`."""
    limits = config.limits
    v = Violations()
    labels = list(task.label_names)
    checks.labels(v, "task", labels, 0, limits.max_labels)
    check_image_ops(v, "task.image_ops", task.image_ops, limits)
    check_sizes(v, "task.image_ops", task.image_ops, _no_transform(), limits.max_input_pixels)
    v.raise_if_any()
    return sorted(labels)


def _no_transform() -> Pipeline:
    """A profile looks at the images as the image ops leave them: no transform at all."""
    return Pipeline([], [], None, [], path="task.transform")


def _as_task_fields(err: InvalidArgument) -> InvalidArgument:
    """The preprocessor's and image source's violations, named by this request's fields."""
    old, new = _FIELDS
    return InvalidArgument(
        (
            FieldViolation(new + f.field.removeprefix(old), f.description)
            if f.field.startswith(old)
            else f
            for f in err.violations
        ),
        err.omitted,
    )


def load(
    labels: list[str],
    image_ops: Sequence[attempt_pb2.ImageOp],
    config: TrainerConfig,
    channel: grpc.Channel,
) -> Tensors:
    """The train split (seed 0) of `labels` after `image_ops`, through the trainer's cache
    (a training run of the same images and ops, with no fixed transform, shares it)."""
    limits = config.limits
    source = ImageSource(channel, config.gateway_deadline_seconds)
    try:
        refs = source.list(labels, dataset_service_pb2.SPLIT_TRAIN, SEED)
        counts = {label: 0 for label in labels}
        for ref in refs:
            counts[ref.label] += 1
        empty = [label for label, count in counts.items() if count == 0]
        if empty:
            raise FailedPrecondition(f"no training images for labels {empty}: upload some first")
        preprocessor = Preprocessor(
            source,
            config.cache_dir,
            limits.max_data_bytes,
            limits.max_input_pixels,
            cache_max_bytes=config.cache_max_bytes,
        )
        return preprocessor.tensors(refs, labels, image_ops, _no_transform())
    except InvalidArgument as err:
        raise _as_task_fields(err) from err


@dataclass(frozen=True)
class SamplePlan:
    """A sample that passed every check that needs no decoding: what to decode, in which
    order, to which mode and size."""

    sample: task_pb2.TaskSample
    # Indices into `sample.images`, in the order the tensors hold them.
    order: list[int]
    # Each image's class, by index into the sorted labels (a task is a set of labels).
    classes: list[int]
    mode: str
    # Width, height: Pillow's order.
    size: tuple[int, int]
    fingerprint: str


def _header(data: bytes, max_pixels: int) -> tuple[tuple[int, int], str] | str:
    """An encoded image's (width, height) and mode from its header, or why it is refused.

    Only the header is read: the pixel bound is checked before anything is decoded, as the
    gateway checks uploads, so a small file that would decode to gigabytes (a
    decompression bomb) never allocates its pixels."""
    try:
        # Pillow's own bomb guard only warns below twice its 89-megapixel default, and
        # raises above it: both mean too large here.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=SAMPLE_FORMATS) as image:
                width, height = image.size
                mode = image.mode
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return f"is larger than {max_pixels:,} pixels"
    except Exception as err:  # Pillow raises many types for bytes it cannot read
        return f"is not a PNG or JPEG image ({type(err).__name__}: {err})"
    if width * height > max_pixels:
        return f"is {width}x{height}, over the limit of {max_pixels:,} pixels: resize it"
    return (width, height), mode


def _common_size(sizes: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """The sample's most common (width, height); among sizes as common, the one with the
    most pixels (the least detail lost), then the tallest: fixed rules, so the same sample
    always gets the same size whatever order its images came in."""
    counts = Counter(sizes)
    return max(counts, key=lambda wh: (counts[wh], wh[0] * wh[1], wh[1]))


def check_sample(
    sample: task_pb2.TaskSample, labels: Sequence[str], limits: CommandLimits
) -> SamplePlan:
    """Everything about a sample that can be checked from its images' headers, or
    INVALID_ARGUMENT naming each bad field under `sample`. `labels` are the task's labels
    in the order the sample's indices point into."""
    images = sample.images
    if not images:
        raise InvalidArgument.one("sample.images", "send at least 2 images of 2 classes")
    if len(images) > MAX_SAMPLE_IMAGES:
        raise InvalidArgument.one(
            "sample.images", f"{len(images):,} images, over the limit of {MAX_SAMPLE_IMAGES:,}"
        )
    total = sum(len(image.data) for image in images)
    if total > MAX_SAMPLE_BYTES:
        raise InvalidArgument.one(
            "sample.images", f"{total:,} bytes in all, over the limit of {MAX_SAMPLE_BYTES:,}"
        )
    v = Violations()
    headers: list[tuple[tuple[int, int], str]] = []
    for i, image in enumerate(images):
        if not 0 <= image.label < len(labels):
            v.add(
                f"sample.images[{i}].label",
                f"is {image.label}: must index the task's {len(labels)} labels"
                f" (0 to {len(labels) - 1})",
            )
        header = _header(image.data, limits.max_input_pixels)
        if isinstance(header, str):
            v.add(f"sample.images[{i}].data", header)
        else:
            headers.append(header)
    v.raise_if_any()
    shown = {image.label for image in images}
    if len(shown) < 2:
        raise InvalidArgument.one(
            "sample.images",
            f"shows only {labels[next(iter(shown))]!r}: a profile needs at least 2 classes",
        )
    mode = "L" if all(m in _GREY_MODES for _, m in headers) else "RGB"
    width, height = _common_size([size for size, _ in headers])
    needed = len(images) * len(mode) * width * height
    if needed > limits.max_data_bytes:
        raise InvalidArgument.one(
            "sample.images",
            f"{len(images)} images of {len(mode)}x{height}x{width} need {needed:,} bytes,"
            f" over this trainer's limit of {limits.max_data_bytes:,}: send smaller ones",
        )
    rank = {label: r for r, label in enumerate(sorted(labels))}
    classes = [rank[labels[image.label]] for image in images]
    digests = [hashlib.sha256(image.data).digest() for image in images]
    # The content's order, not the request's: the same labelled images sent in another
    # order (or with the labels listed in another order) give the same tensors.
    order = sorted(range(len(images)), key=lambda i: (classes[i], digests[i]))
    fingerprint = hashlib.sha256()
    for i in order:
        fingerprint.update(classes[i].to_bytes(4, "big") + digests[i])
    return SamplePlan(sample, order, classes, mode, (width, height), fingerprint.hexdigest())


def _pixels(image: Image.Image, mode: str, size: tuple[int, int]) -> NDArray[np.uint8]:
    """A decoded image as uint8 C x H x W in `mode`, resized to `size` if it is not."""
    if image.mode in _WIDE_GREY_MODES:
        # 16 bits to 8 by dropping the low byte (PNG's 16-bit range is 0..65535; Pillow's
        # "I" may hold more, clipped first): what an 8-bit export of the image would hold.
        wide = np.asarray(image).astype(np.int64).clip(0, 65535)
        image = Image.fromarray((wide >> 8).astype(np.uint8))  # 2-D uint8: L
    if image.mode != mode:
        image = image.convert(mode)
    if image.size != size:
        image = image.resize(size, SAMPLE_RESAMPLE)
    pixels = np.array(image, dtype=np.uint8)
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def decode_sample(plan: SamplePlan) -> Tensors:
    """A checked sample's images, decoded one at a time (on this thread: a profile takes
    one core) into uint8 N x C x H x W tensors of its mode and size, labelled by the
    sorted labels' indices. An image whose header was fine but whose data is not (a
    truncated file) is INVALID_ARGUMENT naming its `data`."""
    width, height = plan.size
    images = torch.empty((len(plan.order), len(plan.mode), height, width), dtype=torch.uint8)
    v = Violations()
    for row, i in enumerate(plan.order):
        try:
            # No bomb guard needed here: `check_sample` read this very header and bounded
            # its pixels.
            with Image.open(
                io.BytesIO(plan.sample.images[i].data), formats=SAMPLE_FORMATS
            ) as opened:
                opened.load()
                pixels = _pixels(opened, plan.mode, plan.size)
        except Exception as err:  # Pillow raises many types for broken files
            v.add(f"sample.images[{i}].data", f"cannot be decoded ({type(err).__name__}: {err})")
            continue
        images[row] = torch.from_numpy(pixels)
    v.raise_if_any()
    labels = torch.tensor([plan.classes[i] for i in plan.order], dtype=torch.int64)
    return Tensors(images, labels, False, plan.fingerprint)


def sample_tensors(
    sample: task_pb2.TaskSample, labels: Sequence[str], limits: CommandLimits
) -> Tensors:
    """A declared task's sample as the tensors `profile` takes: checked (`check_sample`),
    then decoded (`decode_sample`)."""
    return decode_sample(check_sample(sample, labels, limits))


def profile(
    tensors: Tensors,
    n_classes: int,
    *,
    started_at: float | None = None,
    sample_size: int = SAMPLE_SIZE,
) -> task_pb2.TaskProfile:
    """The profile of preprocessed images (uint8, N x C x H x W) labelled 0..n_classes-1.

    `seconds` counts from `started_at` (perf_counter), so that loading is included."""
    started_at = time.perf_counter() if started_at is None else started_at
    images, labels = tensors.images, tensors.labels
    if images.ndim != 4 or len(images) == 0 or len(images) != len(labels):
        raise ValueError(f"need N x C x H x W images with N labels, got {tuple(images.shape)}")
    if n_classes < 1 or int(labels.min()) < 0 or int(labels.max()) >= n_classes:
        raise ValueError(f"labels must be 0 to {n_classes - 1}")
    channels, height, width = (int(d) for d in images.shape[1:])
    y = labels.numpy().astype(np.int64)
    counts = np.bincount(y, minlength=n_classes)
    features: dict[str, float] = {
        "log_images": math.log10(len(y)),
        "log_classes": math.log2(n_classes),
        "imbalance": 1.0 - counts.min() / counts.max(),
        "log_pixels": math.log2(height * width),
        "channels": float(channels),
    }
    with _single_threaded():
        features.update(pixel_statistics(images))
        chosen = stratified_sample(y, sample_size, SEED)
        view = _view(images[torch.from_numpy(chosen)])
        sample_y = y[chosen]
        whole = landmarkers(view.flatten(1).double().numpy(), sample_y)
        features.update(whole)
        features.update(view_landmarkers(view, sample_y, whole))
        features.update(probe_statistics(probe(view), sample_y))
    return task_pb2.TaskProfile(
        features={name: _finite(value) for name, value in features.items()},
        images=len(y),
        classes=n_classes,
        input_shape=[channels, height, width],
        seconds=time.perf_counter() - started_at,
    )


def _finite(value: float) -> float:
    """Rounded; a value that is not a finite number (none should be) is 0, never NaN, which
    no distance between profiles could use."""
    value = float(value)
    return round(value, DECIMALS) if math.isfinite(value) else 0.0


@contextlib.contextmanager
def _single_threaded() -> Iterator[None]:
    """One torch thread and one BLAS thread: the same sums in the same order on every
    machine (so the same profile), and no core taken from the training runs beside it.
    The sample is small enough that this costs well under a second."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(before)


def pixel_statistics(images: torch.Tensor) -> dict[str, float]:
    """Mean, standard deviation, skewness and sparsity of every pixel value (of 1).

    Pixels are uint8, so their histogram holds all their moments: exact (the same as
    scipy.stats.skew of all pixels), in one pass and without a float copy of the data."""
    flat = images.reshape(-1)
    histogram = torch.zeros(256, dtype=torch.int64)
    for start in range(0, flat.numel(), _CHUNK):
        histogram += torch.bincount(flat[start : start + _CHUNK], minlength=256)
    p = histogram.double().numpy() / flat.numel()
    value = np.arange(256, dtype=np.float64) / 255.0
    mean = float(p @ value)
    centred = value - mean
    m2 = float(p @ centred**2)
    m3 = float(p @ centred**3)
    # A constant image set has no spread and no skew (scipy's would be NaN).
    skew = m3 / m2**1.5 if m2 > 1e-12 else 0.0
    return {
        "pixel_mean": mean,
        "pixel_std": math.sqrt(m2),
        "pixel_skew": skew,
        "sparsity": float(p[value < SPARSE_BELOW].sum()),
    }


def stratified_sample(y: NDArray[np.int64], size: int, seed: int) -> NDArray[np.int64]:
    """Indices (sorted) of at most `size` images, each class in proportion to its count,
    but with 2 images of every class that has them while they fit (a class needs two to
    be in both a training and a test fold), drawn with a seeded generator."""
    n = len(y)
    if n <= size:
        return np.arange(n, dtype=np.int64)
    classes, counts = np.unique(y, return_counts=True)
    quota = np.minimum(counts, min(2, size // len(classes)))
    spare = counts - quota
    left = size - int(quota.sum())
    # Largest remainders: proportional shares that add up to exactly `left`.
    share = spare * left / spare.sum()
    extra = np.floor(share).astype(np.int64)
    order = np.argsort(-(share - extra), kind="stable")
    extra[order[: left - int(extra.sum())]] += 1
    quota += extra
    rng = np.random.default_rng(seed)
    chosen = [
        rng.permutation(np.flatnonzero(y == c))[:q] for c, q in zip(classes, quota, strict=True)
    ]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def _view(images: torch.Tensor) -> torch.Tensor:
    """The images as floats in [0, 1], area-downsampled to fit VIEW_SIDE, in batches."""
    height, width = images.shape[-2:]
    scale = min(1.0, VIEW_SIDE / max(height, width))
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    batch = max(1, _BATCH_FLOATS // max(1, images[0].numel()))
    parts = []
    for start in range(0, len(images), batch):
        x = images[start : start + batch].to(torch.float32) / 255.0
        if size != (height, width):
            x = F.adaptive_avg_pool2d(x, size)
        parts.append(x)
    return torch.cat(parts)


def chance_gain(accuracy: float, k: int) -> float:
    """How far above chance (1/k) an accuracy is: 0 at chance, 1 when perfect."""
    if k < 2:
        return 0.0
    return float(np.clip((accuracy - 1 / k) / (1 - 1 / k), -1.0, 1.0))


def cross_validated_gain(make: Callable[[], Any], x: NDArray[Any], y: NDArray[np.int64]) -> float:
    """A classifier's stratified, seeded k-fold accuracy (k = FOLDS, fewer when a class
    has fewer images) as its gain over chance. A class of one image is tested but never
    learnt (it counts as a miss); a task where nothing can be learnt scores 0."""
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2 or counts.max() < 2:
        return 0.0
    smallest = int(counts.min())
    folds = min(FOLDS, smallest if smallest >= 2 else int(counts.max()))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=SEED)
    correct = 0
    # NearestCentroid computes spreads it does not use for prediction, dividing by zero
    # when a class is one image or identical ones: harmless, and not worth a warning.
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        # "The least populated class has only 1 member": handled above, on purpose.
        warnings.simplefilter("ignore", UserWarning)
        # A linear model short of convergence is still the landmark it is meant to be.
        warnings.simplefilter("ignore", ConvergenceWarning)
        for train, test in splitter.split(x, y):
            if len(np.unique(y[train])) < 2 or not np.ptp(x[train], axis=0).any():
                # Nothing to tell apart (one class, or identical inputs, which some
                # classifiers refuse): the most frequent class is all one can answer.
                predicted = np.full(len(test), np.bincount(y[train]).argmax())
            else:
                predicted = make().fit(x[train], y[train]).predict(x[test])
            correct += int((predicted == y[test]).sum())
    return chance_gain(correct / len(y), len(classes))


def _centroid() -> NearestCentroid:
    # Uniform priors: the plain nearest class mean (other priors switch scikit-learn to a
    # discriminant score on standardized features, another landmark).
    return NearestCentroid(priors="uniform")


def _linear() -> LogisticRegression:
    # Logistic regression rather than LDA: shrinkage LDA (the sound kind when pixels
    # outnumber images) inverts a pixels x pixels covariance, 80x slower at 3x32x32.
    return LogisticRegression(max_iter=LINEAR_MAX_ITER)


def landmarkers(x: NDArray[np.float64], y: NDArray[np.int64]) -> dict[str, float]:
    """Gains over chance of three cheap classifiers on flattened pixels."""
    return {
        "landmark_centroid": cross_validated_gain(_centroid, x, y),
        "landmark_1nn": cross_validated_gain(lambda: KNeighborsClassifier(1), x, y),
        "landmark_linear": cross_validated_gain(_linear, x, y),
    }


def centre(view: torch.Tensor) -> torch.Tensor:
    """The middle half of each side of N x C x H x W images (all of a side under 4)."""
    height, width = view.shape[-2:]
    return view[:, :, height // 4 : height - height // 4, width // 4 : width - width // 4]


def view_landmarkers(
    view: torch.Tensor, y: NDArray[np.int64], whole: dict[str, float]
) -> dict[str, float]:
    """The landmarkers on the centre of the images and on their grey version, each as its
    gain minus `whole`'s (the landmarkers on the whole image): what cropping or dropping
    colour would win or lose. A greyscale task loses nothing to grey: 0."""
    found: dict[str, float] = {}
    for name, part in (("centre", centre(view)), ("grey", view.mean(1, keepdim=True))):
        same = name == "grey" and view.shape[1] == 1
        gains = whole if same else landmarkers(part.flatten(1).double().numpy(), y)
        for key, gain in gains.items():
            found[key.replace("landmark_", f"{name}_")] = gain - whole[key]
    return found


def probe_net(channels: int) -> nn.Sequential:
    """The fixed probe: two random 3x3 conv layers and a 4x4 average pool, 512 features.

    Weights come from their own generator, seeded, never from torch's global one, so the
    probe is the same whatever ran before it; He initialisation keeps the ReLU features'
    scale from fading through the layers."""
    generator = torch.Generator().manual_seed(SEED)
    # Made on the meta device: nothing is drawn from the global generator for weights
    # that are replaced at once.
    first = nn.Conv2d(channels, 16, 3, padding=1, device="meta").to_empty(device="cpu")
    second = nn.Conv2d(16, 32, 3, padding=1, device="meta").to_empty(device="cpu")
    for conv in (first, second):
        nn.init.kaiming_uniform_(conv.weight, nonlinearity="relu", generator=generator)
        assert conv.bias is not None
        nn.init.zeros_(conv.bias)
    net = nn.Sequential(first, nn.ReLU(), second, nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten())
    return net.eval().requires_grad_(False)


def probe(view: torch.Tensor) -> NDArray[np.float64]:
    """The probe's features of images in [0, 1], normalized as the usual Normalize(0.5,
    0.5) would, in batches."""
    net = probe_net(int(view.shape[1]))
    per_image = 32 * int(view.shape[-2]) * int(view.shape[-1])
    batch = max(1, _BATCH_FLOATS // per_image)
    with torch.inference_mode():
        parts = [net((view[i : i + batch] - 0.5) / 0.5) for i in range(0, len(view), batch)]
    return torch.cat(parts).double().numpy()


def separation(x: NDArray[np.float64], y: NDArray[np.int64]) -> tuple[float, float]:
    """How far apart the classes are in a feature space: (log1p of the between-class over
    the within-class variance, the mean distance between class means over the mean
    within-class spread). Both are 0 for a single class."""
    classes = np.unique(y)
    if len(classes) < 2:
        return 0.0, 0.0
    means = np.stack([x[y == c].mean(axis=0) for c in classes])
    sizes = np.array([(y == c).sum() for c in classes], dtype=np.float64)
    residual = x - means[np.searchsorted(classes, y)]
    within = float((residual**2).sum() / len(y))
    between = float((sizes * ((means - x.mean(axis=0)) ** 2).sum(axis=1)).sum() / len(y))
    # Spread of each class: root mean squared distance of its images to its mean (classes
    # of one image have none to measure).
    spreads = [
        math.sqrt(float((residual[y == c] ** 2).sum(axis=1).mean()))
        for c, size in zip(classes, sizes, strict=True)
        if size >= 2
    ]
    spread = float(np.mean(spreads)) if spreads else 0.0
    gaps = np.sqrt(((means[:, None, :] - means[None, :, :]) ** 2).sum(axis=2))
    distance = float(gaps[np.triu_indices(len(classes), 1)].mean())
    # A floor relative to the total scale: identical images within classes give a large
    # but finite separation rather than a division by zero.
    floor = 1e-9 * (between + within) + 1e-300
    return math.log1p(between / max(within, floor)), distance / max(spread, math.sqrt(floor))


def probe_statistics(features: NDArray[np.float64], y: NDArray[np.int64]) -> dict[str, float]:
    """How well the probe's features tell the classes apart."""
    fisher, distance = separation(features, y)
    return {
        "probe_1nn": cross_validated_gain(lambda: KNeighborsClassifier(1), features, y),
        "probe_centroid": cross_validated_gain(_centroid, features, y),
        "probe_fisher": fisher,
        "probe_class_distance": distance,
    }
