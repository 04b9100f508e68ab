"""Small JPEGs of review images for the console's grids (a look-alike group shows many frames at once).

A camera frame of a few megapixels shown 240 px wide wastes the network and the browser's decoder; the station
decodes the stored JPEG once at a reduced scale (libjpeg's DCT scaling: ``IMREAD_REDUCED_COLOR_2/4/8``, several
times faster than a full decode), resizes it to at most ``max_side`` and keeps the result in a small in-memory LRU,
so a grid page and its prefetch cost one decode per frame. Only files the store names are read (by item id), and
only regular files up to ``MAX_SOURCE_BYTES`` whose JPEG header is within ``DEFAULT_MAX_PIXELS`` (edge.images).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

import cv2
import numpy as np

from edge.config import DEFAULT_MAX_PIXELS, ImageLimits
from edge.images import ImageError, read_file, read_header
from edge.transport.schema import MAX_JPEG_BYTES

MAX_SOURCE_BYTES = MAX_JPEG_BYTES
_REDUCED = ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4), (2, cv2.IMREAD_REDUCED_COLOR_2))


class ThumbnailError(ValueError):
    """The image cannot be made into a thumbnail; the text says which file and why."""


def thumbnail(path: Path, width: int, height: int, max_side: int = 320, quality: int = 82) -> bytes:
    """A JPEG of the image at ``path`` (``width`` × ``height`` as stored) scaled to fit ``max_side``."""
    try:  # the bounded reader's checks: a regular file, its size, its header's pixels, all before decoding
        data = read_file(path, ImageLimits(max_file_bytes=MAX_SOURCE_BYTES))
        header = read_header(data, str(path))
    except ImageError as exc:
        raise ThumbnailError(str(exc)) from None
    if header.format != "jpeg" or header.pixels > DEFAULT_MAX_PIXELS:
        raise ThumbnailError(f"{path}: {header.format.upper()} of {header.width} × {header.height} pixels, not a "
                             f"review JPEG of at most {DEFAULT_MAX_PIXELS} pixels")
    flag = cv2.IMREAD_COLOR
    for factor, reduced in _REDUCED:
        if max(width, height) // factor >= max_side:
            flag = reduced
            break
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    if image is None:
        raise ThumbnailError(f"{path}: not a decodable image")
    scale = max_side / max(image.shape[:2])
    if scale < 1:
        image = cv2.resize(image, (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale))),
                           interpolation=cv2.INTER_AREA)
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ThumbnailError(f"{path}: could not encode the thumbnail")
    return encoded.tobytes()


class ThumbnailCache:
    """Thumbnails by item id, least recently used dropped beyond ``max_bytes`` (an item's image never changes)."""

    def __init__(self, max_bytes: int = 32 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[int, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, item_id: int, path: Path, width: int, height: int) -> bytes:
        with self._lock:
            data = self._items.get(item_id)
            if data is not None:
                self._items.move_to_end(item_id)
                return data
        data = thumbnail(path, width, height)
        with self._lock:
            if item_id not in self._items:
                self._items[item_id] = data
                self._bytes += len(data)
            while self._bytes > self.max_bytes and self._items:
                _, old = self._items.popitem(last=False)
                self._bytes -= len(old)
        return data
