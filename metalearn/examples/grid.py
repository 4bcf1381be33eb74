"""The fixed search spaces of the learning-curve tables: every command of a grid trained
on every task of its suite.

Each is written as a study's search space (paths into a base command, categorical
choices), so the same space serves the table, the simulated searches that replay it
and the real warm-started studies. Its levels spread from useless (Adam at 0.3
diverges, SGD at 0.0003 hardly moves in 10 epochs) to good, so that finding the best
takes a search.

`CLASSIC` is the first suite's 64 commands (optimizer x learning rate, batch size, the
first layer's width, a mild rotation). `WIDE` is the wide suite's (issue 29): the same
optimizers and rates, and two choices whose best value depends on the task — cropping
to the middle 8 x 8 (what makes a digit among clutter easy, and what ruins a task whose
class lies at the border or fills the image) and dropping colour (ruinous where the
class is a colour, a help where colour is a nuisance).
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

EPOCHS = 10

_CLASSIC_SPACE: list[dict[str, Any]] = [
    {"path": "optimizer.name", "categorical": {"values": ["SGD", "Adam"]}},
    {"path": "optimizer.lr", "categorical": {"values": [0.0003, 0.003, 0.03, 0.3]}},
    {"path": "batch_size", "categorical": {"values": [16, 128]}},
    {"path": "model.layers[0].out_channels", "categorical": {"values": [4, 32]}},
    {"path": "transform.RandomAffine.degrees", "categorical": {"values": [0, 25]}},
]

_WIDE_SPACE: list[dict[str, Any]] = [
    {"path": "optimizer.name", "categorical": {"values": ["SGD", "Adam"]}},
    {"path": "optimizer.lr", "categorical": {"values": [0.0003, 0.003, 0.03, 0.3]}},
    {"path": "batch_size", "categorical": {"values": [16, 128]}},
    {"path": "transform.CenterCrop", "categorical": {"values": [False, {"size": 8}]}},
    {"path": "transform.Grayscale", "categorical": {"values": [False, True]}},
]


def _classic_base(labels: Sequence[str]) -> dict[str, Any]:
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


def _wide_base(labels: Sequence[str]) -> dict[str, Any]:
    """The classic command with a 16-wide first layer, and the two choices switched off
    (an 8 x 8 crop of an 8 x 8 image changes nothing).
    Normalize's one mean and std serve colour images as well (broadcast per channel)."""
    document = _classic_base(labels)
    document["model"]["layers"][0]["out_channels"] = 16
    document["transform"] = {
        "CenterCrop": False,
        "Grayscale": False,
        "ToTensor": True,
        "Normalize": {"mean": [0.5], "std": [0.5]},
    }
    return document


@dataclass(frozen=True)
class Grid:
    """One table's commands: a search space over a base command."""

    name: str
    space: list[dict[str, Any]]
    base: Callable[[Sequence[str]], dict[str, Any]]

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(p["path"] for p in self.space)

    def base_command(self, labels: Sequence[str]) -> dict[str, Any]:
        """The command every grid point changes (as JSON, the prototype's field names)."""
        return copy.deepcopy(self.base(labels))

    def points(self) -> list[dict[str, Any]]:
        """Every grid point as {path: value}, in a fixed order (its index names it)."""
        choices = [p["categorical"]["values"] for p in self.space]
        return [dict(zip(self.paths, v, strict=True)) for v in itertools.product(*choices)]

    def command(self, labels: Sequence[str], point: dict[str, Any]) -> dict[str, Any]:
        document = self.base_command(labels)
        for path, value in point.items():
            node: Any = document
            steps = path.replace("[", ".").replace("]", "").split(".")
            for step in steps[:-1]:
                node = node[int(step)] if step.isdigit() else node[step]
            node[steps[-1]] = value
        return document


CLASSIC = Grid("classic", _CLASSIC_SPACE, _classic_base)
WIDE = Grid("wide", _WIDE_SPACE, _wide_base)
GRIDS = {g.name: g for g in (CLASSIC, WIDE)}

# The classic grid's, under the names the examples and tests have always used.
SPACE = CLASSIC.space
PATHS = CLASSIC.paths
base_command = CLASSIC.base_command
points = CLASSIC.points
command = CLASSIC.command
