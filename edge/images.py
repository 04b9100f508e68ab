"""Image files in: what counts as an image file, listing a folder of them, and reading one (BGR, 8-bit, 3 channels).

Every place a person's image file enters lineside outside the capture sources reads it here: calibrate, train,
eval, quantise and the scripts.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"})


class ImageError(ValueError):
    """An image file or folder that cannot be used; one line naming the path and the problem."""


def list_images(directory: Path) -> list[Path]:
    """The image files of a folder (by suffix), sorted by name; ImageError when there is none."""
    if not directory.is_dir():
        raise ImageError(f"{directory}: not a directory of images")
    files = sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ImageError(f"{directory}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found")
    return files


def read_image(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise ImageError(f"{path}: unreadable image")
    return image
