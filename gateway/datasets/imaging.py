"""Checks uploaded images by decoding them, and splits images deterministically."""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

from PIL import Image

from gateway.config import Limits

ACCEPTED_FORMATS = frozenset({"PNG", "JPEG", "WEBP", "BMP", "GIF"})


class RejectedImage(Exception):
    """An uploaded file that is not an image we store; the message says why."""


@dataclass(frozen=True)
class DecodedImage:
    """What decoding tells about a valid image."""

    sha256: bytes
    format: str
    width: int
    height: int


def inspect_image(data: bytes, limits: Limits) -> DecodedImage:
    """Decodes `data` fully; raises RejectedImage with a reason if it is not acceptable."""
    if not data:
        raise RejectedImage("empty file")
    if len(data) > limits.max_image_bytes:
        raise RejectedImage(f"{len(data)} bytes is over the limit of {limits.max_image_bytes}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                fmt = image.format or ""
                if fmt not in ACCEPTED_FORMATS:
                    raise RejectedImage(
                        f"format {fmt or 'unknown'} is not one of {sorted(ACCEPTED_FORMATS)}"
                    )
                width, height = image.size
                # Checked before decoding, so a bomb never allocates its pixels.
                if width * height > limits.max_image_pixels:
                    raise RejectedImage(
                        f"{width}x{height} pixels is over the limit of {limits.max_image_pixels}"
                    )
                image.load()  # a truncated or corrupt file fails here, not at training
    except RejectedImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise RejectedImage(f"too many pixels: {err}") from err
    except Exception as err:  # Pillow raises many types for broken files
        raise RejectedImage(f"cannot decode: {err}") from err
    return DecodedImage(hashlib.sha256(data).digest(), fmt, width, height)


def in_test_split(sha256: bytes, seed: int, test_fraction: float) -> bool:
    """Whether an image is held out: depends only on its hash, the seed and the fraction."""
    digest = hashlib.sha256(seed.to_bytes(8, "big", signed=True) + sha256).digest()
    return int.from_bytes(digest[:8], "big") < test_fraction * 2**64
