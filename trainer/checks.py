"""A command's checks that need more than its own fields: its labels' count, the real
images' size (for the random transforms), and the errors its parts raise on real data.

Shared by Train (`trainer.run`) and Test (`trainer.testing`).
"""

from __future__ import annotations

from metalearn import geometry
from metalearn.errors import InvalidArgument, Violations
from trainer import loop, model, optim
from trainer.config import Limits
from trainer.transforms import Pipeline


def labels(v: Violations, path: str, labels: list[str], n_labels: int, max_labels: int) -> int:
    """The labels a model scores (and `n_labels`, 0 for as many as labels); the count."""
    if not labels:
        v.add(f"{path}.label_names", "give at least one label")
    if len(labels) > max_labels or n_labels > max_labels:
        v.add(
            f"{path}.label_names" if len(labels) > max_labels else f"{path}.n_labels",
            f"at most {max_labels} labels",
        )
        return n_labels or len(labels)
    for i, label in enumerate(labels):
        if not label or len(label) > 256:
            v.add(f"{path}.label_names[{i}]", "must be 1 to 256 characters")
        elif labels.index(label) != i:
            v.add(f"{path}.label_names[{i}]", f"{label!r} is listed twice")
    if n_labels and n_labels < len(labels):
        v.add(f"{path}.n_labels", f"is {n_labels}, fewer than the {len(labels)} labels")
    return n_labels or len(labels)


def command_error(
    err: loop.CommandFailed, pipeline: Pipeline, criterion: optim.Named, when: str
) -> InvalidArgument:
    """A part of the command that refused the real data, as the command's mistake."""
    if err.stage == "criterion":
        hint = (
            " (BCELoss takes probabilities in [0, 1]: end the model with Sigmoid, or use"
            " BCEWithLogitsLoss)"
            if criterion.name == "BCELoss"
            else ""
        )
        return InvalidArgument.one(
            "command.criterion",
            f"{criterion.name} failed {when}, batch {err.batch}: {err.error}{hint}",
        )
    if err.stage == "model":  # met by one rank of several (see trainer.distributed)
        return InvalidArgument.one(
            "command.devices",
            f"the model failed on one device's part of batch {err.batch} {when}: {err.error}"
            " (use fewer devices or a larger batch_size)",
        )
    return InvalidArgument.one(
        pipeline.path, f"cannot transform the images {when}, batch {err.batch}: {err.error}"
    )


def augmentation(
    v: Violations,
    spec: model.ModelSpec,
    pipeline: Pipeline,
    input_shape: tuple[int, ...],
    limits: Limits,
) -> None:
    """The random transforms on the cached images' real size (the cache is shared by
    commands that differ only in them, so this is not left to preprocessing). Random
    crops give training images of another size than the cached ones, which evaluation
    uses as they are: the model must take both."""
    channels, height, width = input_shape
    augmented = Pipeline([], pipeline.random, None, [], pipeline.path)
    plan = augmented.plan(geometry.Size(height, width, channels))
    for problem in plan.problems:
        v.add(problem.field, problem.description)
    step = plan.over(limits.max_input_pixels)
    if step is not None:
        v.add(
            step.field,
            f"makes the {width}x{height} images {step.size.describe()}, over this trainer's"
            f" limit of {limits.max_input_pixels:,} pixels",
        )
    if plan.problems or step is not None:
        return
    final = plan.final
    trained = (final.channels, final.height, final.width)
    if trained == input_shape:
        return
    scratch = Violations()
    if not model.takes(scratch, "command.model", spec, trained, limits.max_parameters):
        first = scratch.items[0]
        v.add(
            plan.steps[-1].field,
            f"makes training images {trained}, while evaluation (which applies no random"
            f" transform) gives the model {input_shape}; the model cannot take both:"
            f" {first.field}: {first.description}",
        )
