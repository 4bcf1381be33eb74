"""What the gateway checks in everything a trainer streams back, before it is stored.

A trainer is compute we lend work to, not a party we trust: a broken or hostile one
could claim epoch 999 of a 3-epoch run, an accuracy of 42, or a file that never ends.
These checks are pure (no I/O), so each rule is tested without servers; the
dispatcher applies them and turns a `TrainerLied` into a failed run of that trainer.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from metalearn.v1 import attempt_pb2, trainer_service_pb2

tpb = trainer_service_pb2


class TrainerLied(Exception):
    """The trainer sent something no honest trainer sends; the message says what."""


class Diverged(Exception):
    """The trainer reported a non-finite loss: the command diverged (not a lie)."""


@dataclass(frozen=True)
class Problem:
    """A number no run can have: the field (relative to the message it is in, as an
    INVALID_ARGUMENT names it) and what is wrong with it."""

    field: str
    detail: str


# Per epoch, the numbers that must be finite and not negative (a loss may be anything:
# cross-entropy is >= 0, but a user's criterion need not be).
_NON_NEGATIVE = ("learning_rate", "seconds", "samples_per_second")


def diverged(e: attempt_pb2.EpochMetrics) -> bool:
    """A non-finite training or validation loss: what a diverging run reports. True of a
    run, so not a lie: the trainer's run ends there (DIVERGED), an import keeps it."""
    return not (math.isfinite(e.loss) and math.isfinite(e.val_loss))


def epoch_problems(e: attempt_pb2.EpochMetrics) -> list[Problem]:
    """Every number of one epoch that cannot be true, whoever reports it (a trainer, an
    import): the one set of checks for epochs. Pure and cheap: one pass, no I/O."""
    found = [
        Problem(name, f"{name} {getattr(e, name)} is impossible: must be finite and >= 0")
        for name in _NON_NEGATIVE
        if not 0.0 <= getattr(e, name) < math.inf  # also refuses NaN
    ]
    if not 0.0 <= e.val_accuracy <= 1.0:  # also refuses NaN
        found.append(
            Problem("val_accuracy", f"validation accuracy {e.val_accuracy} is not between 0 and 1")
        )
    return found


def problems_of_test_result(
    result: attempt_pb2.TestResult, labels: Sequence[str], images_available: int | None
) -> list[Problem]:
    """Every number of a test result that images of these labels cannot give, whoever
    reports it. `labels`: the model's labels in its order (empty: not known, as in a
    document recorded elsewhere; the matrix is then any n x n); `images_available`: how
    many images there are to test (None: not known)."""
    found: list[Problem] = []
    high = images_available if images_available is not None else math.inf
    if not 0 <= result.images <= high:
        found.append(Problem("images", f"tested {result.images} images; there are {high}"))
    if not 0.0 <= result.accuracy <= 1.0:  # also refuses NaN
        found.append(Problem("accuracy", f"accuracy {result.accuracy} is not between 0 and 1"))
    if math.isnan(result.loss):
        found.append(Problem("loss", "the test loss is NaN"))
    known = set(labels)
    for label, value in result.per_label_accuracy.items():
        if (known and label not in known) or not 0.0 <= value <= 1.0:
            found.append(
                Problem(
                    f"per_label_accuracy[{label[:64]!r}]",
                    f"per-label accuracy {value} of {label[:64]!r}: must be between 0 and 1"
                    + (" and of the model's labels" if labels else ""),
                )
            )
            break  # one is enough: a map of 10,000 wrong ones says nothing more
    matrix = result.confusion_matrix
    if not matrix:
        return found
    n = len(labels) if labels else math.isqrt(len(matrix))
    if len(matrix) != n * n:
        found.append(
            Problem("confusion_matrix", f"a confusion matrix of {len(matrix)} cells for {n} labels")
        )
    elif min(matrix) < 0:
        found.append(Problem("confusion_matrix", "counts must not be negative"))
    elif sum(matrix) != result.images:
        found.append(
            Problem("confusion_matrix", "the confusion matrix does not add up to the images tested")
        )
    elif result.images:
        correct = sum(matrix[i * n + i] for i in range(n))
        if abs(correct / result.images - result.accuracy) > 1e-6:
            found.append(Problem("accuracy", "the accuracy is not the confusion matrix's"))
    return found


@dataclass
class EpochChecker:
    """Epochs must arrive exactly first_epoch..n_epoch, in order, each once, with
    numbers that can be true."""

    n_epoch: int
    # The epoch after the checkpoint the gateway sent (1 without one).
    first_epoch: int
    # The command's labels: the dataset a trainer reports must be theirs.
    labels: tuple[str, ...] = ()
    started: bool = False
    last: int = 0

    def start(self, started: tpb.TrainStarted, images_available: int) -> None:
        if self.started:
            raise TrainerLied("sent `started` twice")
        if started.first_epoch != self.first_epoch:
            raise TrainerLied(
                f"started at epoch {started.first_epoch}, but the run starts at {self.first_epoch}"
            )
        if started.train_images < 0 or started.validation_images < 0:
            raise TrainerLied("reported a negative image count")
        if started.train_images + started.validation_images > images_available:
            raise TrainerLied(
                f"claims {started.train_images + started.validation_images} images;"
                f" the task has {images_available}"
            )
        if started.parameters < 0:
            raise TrainerLied("reported a negative parameter count")
        if started.HasField("dataset"):
            self._check_dataset(started.dataset, images_available, started.validation_images)
        self.started = True
        self.last = self.first_epoch - 1

    def _check_dataset(
        self, dataset: attempt_pb2.DatasetFingerprint, available: int, validation_images: int
    ) -> None:
        """The fingerprint is stored with the attempt: it must describe the command's data."""
        names = list(dataset.label_names)
        if sorted(names) != sorted(self.labels):
            raise TrainerLied("reported a dataset of other labels than the command's")
        counts = list(dataset.images_per_label)
        if len(counts) != len(names) or any(c < 0 for c in counts) or sum(counts) > available:
            raise TrainerLied(f"reported image counts {counts[:8]} for {available} images")
        held_out = list(dataset.validation_images_per_label)
        if held_out and (
            len(held_out) != len(names)
            or any(not 0 <= h <= c for h, c in zip(held_out, counts, strict=True))
            or sum(held_out) != validation_images
        ):
            raise TrainerLied(
                f"reported validation counts {held_out[:8]} that do not fit its counts"
                f" {counts[:8]} and its {validation_images} validation images"
            )
        size = list(dataset.image_size)
        if len(size) > 3 or any(not 0 <= side <= 1 << 16 for side in size):
            raise TrainerLied(f"reported an image size of {size[:8]}")
        digest = dataset.sha256
        if digest and (len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest)):
            raise TrainerLied("reported a dataset fingerprint that is not a sha256")

    def epoch(self, e: attempt_pb2.EpochMetrics) -> None:
        if not self.started:
            raise TrainerLied("sent an epoch before `started`")
        expected = self.last + 1
        if e.epoch != expected or e.epoch > self.n_epoch:
            raise TrainerLied(
                f"sent epoch {e.epoch}; expected {expected} of {self.n_epoch}"
                if e.epoch <= self.n_epoch
                else f"sent epoch {e.epoch} of a {self.n_epoch}-epoch run"
            )
        if diverged(e):
            # What an honest trainer reports as DIVERGED: the command's fault, not a lie.
            raise Diverged(f"epoch {e.epoch}: the loss is {e.loss}, validation {e.val_loss}")
        for problem in epoch_problems(e):
            raise TrainerLied(f"epoch {e.epoch}: {problem.detail}")
        self.last = e.epoch

    @property
    def complete(self) -> bool:
        return self.started and self.last == self.n_epoch


@dataclass
class ArtifactReceiver:
    """One file arriving in chunks: contiguous, bounded in size, of one epoch, and
    matching its sha256 at the end. It holds only the hash state, never the file."""

    kind: str
    max_bytes: int
    # A file may not be of an earlier epoch than the last of its kind in this run.
    not_before: int = 0
    epoch: int = -1
    total: int = -1
    received: int = 0
    chunks: int = 0
    _hash: hashlib._Hash = field(default_factory=hashlib.sha256)

    def accept(self, chunk: tpb.ArtifactChunk, epochs: EpochChecker) -> bool:
        """Checks one chunk; True when it was the file's last (and the file is whole)."""
        if self.chunks == 0:
            if not 0 <= chunk.total_size <= self.max_bytes:
                raise TrainerLied(
                    f"{self.kind} of {chunk.total_size} bytes (the limit is {self.max_bytes})"
                )
            low = epochs.first_epoch - 1
            if self.kind == "weights":
                if chunk.epoch != epochs.n_epoch or not epochs.complete:
                    raise TrainerLied(
                        f"weights of epoch {chunk.epoch} after epoch {epochs.last}"
                        f" of {epochs.n_epoch}"
                    )
            elif not epochs.started or not max(low, self.not_before) <= chunk.epoch <= epochs.last:
                raise TrainerLied(
                    f"checkpoint of epoch {chunk.epoch}; epochs so far {low}..{epochs.last}"
                    f" (the last checkpoint's {self.not_before})"
                )
            self.epoch, self.total = chunk.epoch, chunk.total_size
        elif chunk.epoch != self.epoch or chunk.total_size != self.total:
            raise TrainerLied(f"{self.kind} chunks disagree on the file's epoch or size")
        size = len(chunk.data)
        if chunk.offset != self.received or self.received + size > self.total:
            raise TrainerLied(
                f"{self.kind} chunk at offset {chunk.offset} (+{size}) after"
                f" {self.received} of {self.total} bytes"
            )
        if size == 0 and not (self.total == 0 and chunk.sha256):
            raise TrainerLied(f"empty {self.kind} chunk")
        self._hash.update(chunk.data)
        self.received += size
        self.chunks += 1
        if not chunk.sha256:
            return False
        if self.received != self.total:
            raise TrainerLied(f"{self.kind} ended at {self.received} of {self.total} bytes")
        if self._hash.hexdigest() != chunk.sha256.lower():
            raise TrainerLied(f"{self.kind} of epoch {self.epoch} does not match its sha256")
        return True


def check_test_result(
    result: attempt_pb2.TestResult, labels: list[str], images_available: int
) -> None:
    """A test result must be one that images of these labels can give."""
    for problem in problems_of_test_result(result, labels, images_available):
        raise TrainerLied(problem.detail)
