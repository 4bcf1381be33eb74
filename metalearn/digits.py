"""scikit-learn's bundled handwritten digits as PNG uploads: real data with no download.

1,797 grayscale images of 8x8 pixels (UCI's optical recognition of handwritten digits,
as shipped inside scikit-learn), labelled "digit 0" ... "digit 9".
"""

from __future__ import annotations

import io
from collections.abc import Iterator

from PIL import Image

from metalearn.v1 import dataset_service_pb2

LABELS = tuple(f"digit {d}" for d in range(10))


def digit_uploads() -> Iterator[dataset_service_pb2.UploadImagesRequest]:
    """One upload request per image, as an UploadImages stream takes them."""
    return iter(load())


def load() -> list[dataset_service_pb2.UploadImagesRequest]:
    """Every image as an upload request, rendered as an 8-bit grayscale PNG (about 300 KB
    in all: a list, so a progress bar knows the count without loading them twice)."""
    from sklearn.datasets import load_digits  # imported late: only this command needs it

    digits = load_digits()
    uploads = []
    for index, (pixels, target) in enumerate(zip(digits.images, digits.target, strict=True)):
        # Values are 0..16 (counts of set pixels in 4x4 blocks of the original scans).
        image = Image.fromarray((pixels * (255 / 16)).round().astype("uint8"), mode="L")
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        uploads.append(
            dataset_service_pb2.UploadImagesRequest(
                label=LABELS[int(target)],
                data=buffer.getvalue(),
                filename=f"digits/{index:04d}.png",
            )
        )
    return uploads
