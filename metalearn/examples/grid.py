"""The fixed search space of the learning-curve table: 64 commands, every one trained on
every task of the family.

It is written as a study's search space (paths into a base command, categorical
choices), so the same space serves the table, the simulated searches that replay it
and the real warm-started studies. Its levels spread from useless (Adam at 0.3
diverges, SGD at 0.0003 hardly moves in 10 epochs) to good, so that finding the best
takes a search.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

EPOCHS = 10

SPACE: list[dict[str, Any]] = [
    {"path": "optimizer.name", "categorical": {"values": ["SGD", "Adam"]}},
    {"path": "optimizer.lr", "categorical": {"values": [0.0003, 0.003, 0.03, 0.3]}},
    {"path": "batch_size", "categorical": {"values": [16, 128]}},
    {"path": "model.layers[0].out_channels", "categorical": {"values": [4, 32]}},
    {"path": "transform.RandomAffine.degrees", "categorical": {"values": [0, 25]}},
]

PATHS: tuple[str, ...] = tuple(p["path"] for p in SPACE)
CHOICES: tuple[tuple[Any, ...], ...] = tuple(tuple(p["categorical"]["values"]) for p in SPACE)


def base_command(labels: Sequence[str]) -> dict[str, Any]:
    """The command every grid point changes (as JSON, the prototype's field names)."""
    return {
        "label_names": list(labels),
        "batch_size": 16,
        "n_epoch": EPOCHS,
        "seed": 1,
        "model": {
            "layers": [
                {
                    "name": "Conv2d",
                    "in_channels": "auto",
                    "out_channels": 4,
                    "kernel_size": 3,
                    "padding": 1,
                },
                {"name": "ReLU"},
                {"name": "MaxPool2d", "kernel_size": 2, "stride": 2},
                {
                    "name": "Conv2d",
                    "in_channels": "auto",
                    "out_channels": 32,
                    "kernel_size": 3,
                    "padding": 1,
                },
                {"name": "ReLU"},
                {"name": "MaxPool2d", "kernel_size": 2, "stride": 2},
                {"name": "Flatten", "start_dim": 1},
                {"name": "Linear", "in_features": "auto", "out_features": 64},
                {"name": "ReLU"},
                {"name": "Linear", "in_features": "auto", "out_features": "n_labels"},
            ]
        },
        "optimizer": {"name": "SGD", "lr": 0.03},
        "criterion": {"name": "CrossEntropyLoss"},
        "transform": {
            "RandomAffine": {"degrees": 0},
            "ToTensor": True,
            "Normalize": {"mean": [0.5], "std": [0.5]},
        },
        "target_transform": {"ToTensor": True},
    }


def points() -> list[dict[str, Any]]:
    """Every grid point as {path: value}, in a fixed order (its index names it)."""
    return [dict(zip(PATHS, values, strict=True)) for values in itertools.product(*CHOICES)]


def command(labels: Sequence[str], point: dict[str, Any]) -> dict[str, Any]:
    document = base_command(labels)
    for path, value in point.items():
        node: Any = document
        steps = path.replace("[", ".").replace("]", "").split(".")
        for step in steps[:-1]:
            node = node[int(step)] if step.isdigit() else node[step]
        node[steps[-1]] = value
    return document
