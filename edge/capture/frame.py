"""One captured image and where and when it came from."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True, slots=True)
class Frame:
    """A frame as the rest of the pipeline sees it.

    ``seq`` counts frames delivered by one capture run (from 0, never reused, not even across reconnects), so
    a gap in ``seq`` seen by a consumer is exactly the frames it did not get. ``mono_ts`` orders and spaces
    frames (time.monotonic); ``wall_ts`` is for people and the station (time.time).
    """

    source_id: str
    seq: int
    mono_ts: float
    wall_ts: float
    image: np.ndarray  # BGR, uint8, H×W×3
    origin: str  # file path, "video frame N", URL or device, for logs and errors


def as_bgr(image: np.ndarray) -> np.ndarray:
    """Bring what a backend returned to BGR uint8 H×W×3; ValueError names what could not be converted.

    Cameras and GStreamer pipelines may hand out grey (H×W or H×W×1) or BGRA frames and 16-bit sensors exist;
    everything downstream assumes one layout, so the conversion happens once, here.
    """
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)  # keep the top 8 bits, as imread(IMREAD_COLOR) would
    elif image.dtype != np.uint8:
        raise ValueError(f"unsupported pixel type {image.dtype}")
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    raise ValueError(f"unsupported image shape {image.shape}")
