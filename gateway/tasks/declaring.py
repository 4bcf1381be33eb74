"""The tasks that runs reported by users' own code declare (docs/architecture.md §11):
their versions made from a declaration (READY at once, with the features it gives) and
from a sample of images a reporter sent (profiled by a trainer like any task)."""

from __future__ import annotations

from gateway.store.tasks import TaskRecord, TaskStore
from learning.tasks import declared
from metalearn.v1 import attempt_pb2, task_pb2


def features_of(task: attempt_pb2.DeclaredTask) -> dict[str, float]:
    return declared.features(task.labels, task.input_shape, task.train_size, task.features)


async def declare(
    tasks: TaskStore, owner: str, task: attempt_pb2.DeclaredTask
) -> TaskRecord | None:
    """The declared task's version for what `task` declares; None when it names no task
    (neither a dataset nor labels)."""
    if not task.dataset and not task.labels:
        return None
    return await tasks.declare(owner, task.dataset, list(task.labels), features_of(task))


async def sample(
    tasks: TaskStore, owner: str, task: attempt_pb2.DeclaredTask, images: task_pb2.TaskSample
) -> TaskRecord:
    """The version that a checked sample of the task's images makes. Its labels are stored
    sorted (a task is a set of labels), so each image's index is moved to its label's
    place in that order, and the sample's bytes are canonical: the same images with the
    same labels make the same version whatever order the run declared its labels in."""
    order = sorted(set(task.labels))
    place = {label: i for i, label in enumerate(order)}
    moved = [
        task_pb2.SampleImage(label=place[task.labels[image.label]], data=image.data)
        for image in images.images
    ]
    moved.sort(key=lambda image: (image.label, image.data))
    canonical = task_pb2.TaskSample(images=moved)
    return await tasks.sampled(
        owner, task.dataset, order, canonical.SerializeToString(deterministic=True),
        features_of(task),
    )  # fmt: skip
