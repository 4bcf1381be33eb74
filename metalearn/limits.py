"""What one training command may ask for: the single source the gateway and trainer share.

Torch-free on purpose, like `metalearn.vocabulary`: the gateway refuses a command over
these bounds before it is queued, and the trainer refuses the same command with the same
numbers, so nothing the gateway accepts is later refused by a trainer for its size (it
used to queue 50,000 epochs that every trainer then refused).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CommandLimits:
    """Bounds on a command; beyond each is a field-named INVALID_ARGUMENT."""

    max_epochs: int = 10_000
    max_batch_size: int = 4_096
    max_layers: int = 256
    # Trainable parameters of the model, counted on the meta device before it is built.
    max_parameters: int = 200_000_000
    max_labels: int = 10_000
    max_image_ops: int = 32
    # A side set by an image op (resize, center_crop).
    max_image_side: int = 8192
    # Pixels (height x width) of one image at every step of its image ops and transforms:
    # what a model takes, and the largest image any step may make.
    max_input_pixels: int = 1024 * 1024
    # Preprocessed images of one run held in memory (uint8, after the fixed transforms).
    max_data_bytes: int = 4 * 1024**3
    # Devices (processes) one run trains on at once: one machine's GPUs, at most.
    max_devices: int = 16


COMMAND_LIMITS = CommandLimits()


# A declared task's sample of images (ReportingService.UploadTaskSample, then a trainer's
# ProfileTask): enough for a profile's landmarkers and probe (trainer/profiling.py reads
# at most 600), small enough to keep with the task. The gateway checks a sample against
# these before storing it and the trainer again before decoding it: the same numbers.
MAX_SAMPLE_IMAGES = 1_000
MAX_SAMPLE_BYTES = 8 * 1024 * 1024
MAX_SAMPLE_PIXELS = 1024 * 1024  # of one image
SAMPLE_FORMATS = ("PNG", "JPEG")
