"""The names a training command may use: layers, optimizers, losses, schedulers, transforms.

Torch-free on purpose: the gateway validates commands with these lists before any work
is queued, and the trainer builds from the same lists, so the two can never disagree
about what is allowed.
"""

from __future__ import annotations

import re

LAYERS: frozenset[str] = frozenset(
    {
        "Conv1d", "Conv2d", "Linear", "ReLU", "LeakyReLU", "GELU", "SiLU", "Sigmoid",
        "Tanh", "Softmax", "LogSoftmax", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d",
        "Flatten", "Dropout", "BatchNorm1d", "BatchNorm2d", "LayerNorm", "Identity",
        "MaxPool1d", "AvgPool1d", "AdaptiveAvgPool1d", "Dropout2d", "ELU", "Mish",
        "Hardswish", "PReLU", "GroupNorm", "ConvTranspose2d", "Unflatten",
    }
)  # fmt: skip

OPTIMIZERS: frozenset[str] = frozenset(
    {"SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta", "Adamax", "NAdam", "RAdam"}
)

CRITERIA: frozenset[str] = frozenset(
    {
        "CrossEntropyLoss", "NLLLoss", "MSELoss", "L1Loss", "SmoothL1Loss", "HuberLoss",
        "BCEWithLogitsLoss", "BCELoss", "KLDivLoss", "MultiMarginLoss",
    }
)  # fmt: skip

SCHEDULERS: frozenset[str] = frozenset(
    {
        "ReduceLROnPlateau", "StepLR", "MultiStepLR", "ExponentialLR", "CosineAnnealingLR",
        "OneCycleLR", "LinearLR", "ConstantLR", "CosineAnnealingWarmRestarts",
    }
)  # fmt: skip

TRANSFORMS: frozenset[str] = frozenset(
    {
        "ToTensor", "Normalize", "Resize", "CenterCrop", "RandomCrop", "RandomResizedCrop",
        "RandomHorizontalFlip", "RandomVerticalFlip", "RandomRotation", "ColorJitter",
        "Grayscale", "RandomErasing", "GaussianBlur", "RandomAffine", "Pad",
        "RandomGrayscale", "RandomAutocontrast", "RandomEqualize",
    }
)  # fmt: skip

TARGET_TRANSFORMS: frozenset[str] = frozenset({"ToTensor"})

# The order transforms run in, whatever order a command lists them (a JSON object's keys
# come back from the store sorted): torchvision's reference training scripts' order.
# Fixed geometry and colour, applied once per image and cached:
FIXED_TRANSFORMS: tuple[str, ...] = ("Resize", "CenterCrop", "Pad", "Grayscale")
# Random augmentations, applied per sample and epoch on uint8 images (training only):
RANDOM_TRANSFORMS: tuple[str, ...] = (
    "RandomResizedCrop", "RandomCrop", "RandomRotation", "RandomAffine",
    "RandomHorizontalFlip", "RandomVerticalFlip", "ColorJitter", "GaussianBlur",
    "RandomGrayscale", "RandomAutocontrast", "RandomEqualize",
)  # fmt: skip
# Applied per sample to float tensors, after Normalize (training only):
AFTER_NORMALIZE_TRANSFORMS: tuple[str, ...] = ("RandomErasing",)

# Pillow resampling filters, by every name the prototype and users write (any case).
RESAMPLE: dict[str, str] = {
    "nearest": "nearest", "bilinear": "bilinear", "bicubic": "bicubic",
    "lanczos": "lanczos", "box": "box", "hamming": "hamming",
    # Image.ANTIALIAS was Pillow's old name for LANCZOS (removed in Pillow 10).
    "antialias": "lanczos",
    "linear": "bilinear", "cubic": "bicubic",
}  # fmt: skip

IMAGE_MODES: frozenset[str] = frozenset(
    {"1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "YCbCr", "I", "F"}
)

# Layer arguments that are sizes: non-negative integers (or tuples of them).
SIZE_ARGS: frozenset[str] = frozenset(
    {
        "in_channels", "out_channels", "in_features", "out_features", "num_features",
        "kernel_size", "stride", "padding", "dilation", "groups", "output_size",
        "normalized_shape", "num_groups", "num_channels", "start_dim", "end_dim",
        "output_padding", "num_parameters", "dim",
    }
)  # fmt: skip
# Arguments whose size the trainer infers from the real input shape.
AUTO_ARGS: frozenset[str] = frozenset(
    {"in_channels", "in_features", "num_features", "normalized_shape", "num_channels"}
)
# Arguments that may name the number of labels.
N_LABELS_ARGS: frozenset[str] = frozenset({"out_features", "out_channels"})
# Sizes that may be negative (dimension indices count from the end).
SIGNED_ARGS: frozenset[str] = frozenset({"start_dim", "end_dim", "dim"})


# How the prototype (Python code pasted into JSON) wrote a filter: "Image.ANTIALIAS",
# "Image.Resampling.BICUBIC", "PIL.Image.BILINEAR"; or a bare name: "bilinear", "LANCZOS".
_RESAMPLE_SPELLING = re.compile(
    r"(?:(?:PIL\.)?Image\.(?:Resampling\.)?|Resampling\.)?(?P<name>[A-Za-z]+)"
)


def resample_name(spelling: str) -> str | None:
    """Maps "Image.ANTIALIAS", "LANCZOS", "Image.Resampling.BICUBIC", ... to a filter name.

    The whole string must be one of those spellings: "bilinearX", "bil" or "bilinear\\n"
    are not filters, and guessing at them would train with a filter nobody asked for.
    """
    match = _RESAMPLE_SPELLING.fullmatch(spelling)
    return RESAMPLE.get(match["name"].lower()) if match else None


def image_mode(spelling: str) -> str | None:
    """Maps "RGB" or the prototype's quoted "'RGB'" to a Pillow mode (whole strings only:
    "RGB\n" or " RGB" is no mode)."""
    for quote in ("'", '"'):
        if len(spelling) > 2 and spelling[0] == spelling[-1] == quote:
            spelling = spelling[1:-1]
            break
    return spelling if spelling in IMAGE_MODES else None
