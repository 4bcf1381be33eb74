"""A task's profile from what runs reported by users' own code declare of it.

Such a task's images are not held here. Until a sample of them is sent and profiled,
what it can be compared by is what its runs declare: its classes, its input's shape and
its size give the same size features a trainer computes from images, and the reporter
may declare others by name (measured by its own code: a claim, like the run). A profile
made this way has only those features; the task distance compares it with other tasks
on the features both have (`similarity.Distance.between`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

# Every feature a task's profile may hold (what trainers compute: trainer/profiling.py,
# documented in task.proto). A newer trainer may send fewer, never others.
PROFILE_FEATURES = frozenset({
    "log_images", "log_classes", "imbalance", "log_pixels", "channels", "pixel_mean",
    "pixel_std", "pixel_skew", "sparsity", "landmark_centroid", "landmark_1nn",
    "landmark_linear", "probe_1nn", "probe_centroid", "probe_fisher", "probe_class_distance",
    "centre_centroid", "centre_1nn", "centre_linear", "grey_centroid", "grey_1nn", "grey_linear",
})  # fmt: skip
# Features derived from a declaration's own fields: declared by those fields, not by name
# (two statements of one fact could disagree).
DERIVED = frozenset({"log_images", "log_classes", "log_pixels", "channels"})
DECLARABLE = PROFILE_FEATURES - DERIVED
# A declared feature's magnitude at most (a profile's features are logs, fractions and
# small statistics; the gateway refuses larger ones from trainers too).
MAX_FEATURE = 1e6
# Every declarable feature fits.
MAX_DECLARED = 24


def features(
    labels: Sequence[str],
    input_shape: Sequence[int],
    train_size: int,
    declared: Mapping[str, float],
) -> dict[str, float]:
    """The profile features a declaration gives, computed as trainer/profiling.py computes
    them from images: `log_classes` from 2 or more labels, `log_images` from the training
    set's size, `channels` and `log_pixels` from an image's shape (C x H x W, or H x W for
    one channel), then every declared feature by name."""
    found: dict[str, float] = {}
    if len(labels) >= 2:
        found["log_classes"] = math.log2(len(labels))
    if train_size > 0:
        found["log_images"] = math.log10(train_size)
    shape = list(input_shape)
    if len(shape) == 2:
        shape = [1, *shape]
    if len(shape) == 3 and all(side > 0 for side in shape):
        found["channels"] = float(shape[0])
        found["log_pixels"] = math.log2(shape[1] * shape[2])
    for name, value in sorted(declared.items()):
        if name in DECLARABLE and math.isfinite(value):
            found[name] = float(value)
    return found


def problems(declared: Mapping[str, float]) -> list[tuple[str, str]]:
    """(feature name, why) for each declared feature that cannot be stored."""
    found = []
    for name in sorted(declared)[: MAX_DECLARED + 1]:
        value = declared[name]
        if name in DERIVED:
            found.append((name, "derived from the task's labels, input_shape and train_size:"
                                " declare those instead"))  # fmt: skip
        elif name not in PROFILE_FEATURES:
            found.append((name, f"not a profile feature (one of {', '.join(sorted(DECLARABLE))})"))
        elif not math.isfinite(value) or abs(value) > MAX_FEATURE:
            found.append((name, f"must be a finite number of magnitude at most {MAX_FEATURE:g}"))
    return found
