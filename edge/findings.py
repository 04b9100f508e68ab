"""What the line finds in a frame, named once for every layer: the good label, a defect region, and box geometry.

The grounding step makes `Region`s, the wire carries them to the station (edge.transport.schema), the station stores
them as table rows and shows them (mappers in edge.station), and the trainer reads them back with the reviews
(edge.transport.reviewed). `class_probs` stays at the edge: the verdict is taken from it, the wire does not carry it.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

GOOD = "good"  # the verdict of a frame without a defect; every other verdict is a defect class


class Region(BaseModel):
    """One defect region in frame pixel coordinates, with its caption."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    x: int = Field(ge=0)
    y: int = Field(ge=0)
    w: int = Field(gt=0)
    h: int = Field(gt=0)
    area_px: int = Field(ge=0)
    area_pct: float = Field(ge=0, le=100)
    peak: float = Field(description="peak anomaly score in the region")
    defect_class: str
    location: str = Field(description="3x3 grid word: upper-left … lower-right")
    caption: str = Field(description='e.g. "crack, upper-left, 34×12 px (0.6 %)"')
    description: str = Field(description="best prompt variant of the class for this region")
    caption_score: float = Field(description="image–text score of the best description")
    class_probs: dict[str, float] = Field(default_factory=dict, exclude=True,
                                          description="defect-class split of the region's embedding (edge only)")


def caption_of(defect_class: str, location: str, w: int, h: int, area_pct: float) -> str:
    """'crack, upper-left, 34×12 px (0.6 %)'."""
    return f"{defect_class}, {location}, {w}×{h} px ({area_pct:.1f} %)"


Box = tuple[int, int, int, int]  # x, y, w, h


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    ix = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    iy = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = ix * iy
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


def mask_box(mask: np.ndarray) -> Box:
    """The smallest box around a non-empty mask's pixels."""
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)
