"""Frames for the browser tests: a woven texture with a dark scratch and a dark spot painted at known places, and
those two defects as the model's regions (SCRATCH, SPOT), so the boxes on the page are known exactly."""

from __future__ import annotations

import cv2
import numpy as np

from edge.findings import Region

SCRATCH = Region(x=36, y=56, w=78, h=33, area_px=2574, area_pct=4.1, peak=0.88, defect_class="scratch",
                 location="upper-left", caption="scratch, upper-left, 78×33 px (4.1 %)",
                 description="a thin dark scratch across the fabric", caption_score=0.287)
SPOT = Region(x=169, y=159, w=22, h=22, area_px=484, area_pct=0.8, peak=0.71, defect_class="spot",
              location="lower-right", caption="spot, lower-right, 22×22 px (0.8 %)",
              description="a dark stain on the fabric", caption_score=0.254)


def woven(seed: int) -> np.ndarray:
    """A woven-looking grey texture, 250×250 BGR."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(128, 30, (250, 250)).astype(np.float32)
    img = cv2.GaussianBlur(noise, (0, 0), sigmaX=4, sigmaY=1)
    return cv2.cvtColor(np.clip(img, 0, 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)


def defect_jpeg(img: np.ndarray, scratch: bool = True, spot: bool = True) -> bytes:
    """``img`` with the defects of SCRATCH and / or SPOT painted where those regions say, as a JPEG."""
    if scratch:
        cv2.line(img, (40, 60), (110, 85), (25, 25, 25), 3, cv2.LINE_AA)
    if spot:
        cv2.circle(img, (180, 170), 9, (30, 30, 30), -1, cv2.LINE_AA)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 92])
    assert ok
    return buf.tobytes()
