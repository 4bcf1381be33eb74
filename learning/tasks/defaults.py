"""The command metalearn starts a task with when it has no history to draw from.

A small convolutional network that takes any input of at least 4x4 pixels and any
channel count (the adaptive pooling fixes the classifier's input), trained with Adam at
0.003, batch 32, for 10 epochs: Adam at 0.003 with the wider first layer is among the
best settings of the benchmark's grid on the digits (bench/metalearning), and a moderate
learning rate that does not diverge on the tasks tried there.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

DEFAULT_COMMAND: dict[str, Any] = {
    "batch_size": 32,
    "n_epoch": 10,
    "seed": 1,
    "model": {
        "layers": [
            {
                "name": "Conv2d",
                "in_channels": "auto",
                "out_channels": 32,
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
            {"name": "AdaptiveAvgPool2d", "output_size": 2},
            {"name": "Flatten", "start_dim": 1},
            {"name": "Linear", "in_features": "auto", "out_features": 64},
            {"name": "ReLU"},
            {"name": "Linear", "in_features": "auto", "out_features": "n_labels"},
        ]
    },
    "optimizer": {"name": "Adam", "lr": 0.003},
    "criterion": {"name": "CrossEntropyLoss"},
    "transform": {"ToTensor": True, "Normalize": {"mean": [0.5], "std": [0.5]}},
    "target_transform": {"ToTensor": True},
}


def command(labels: Sequence[str], image_ops: list[Any]) -> dict[str, Any]:
    """The default command for these labels and image ops (as JSON)."""
    found = copy.deepcopy(DEFAULT_COMMAND)
    found["label_names"] = list(labels)
    if image_ops:
        found["image_ops"] = copy.deepcopy(image_ops)
    return found
