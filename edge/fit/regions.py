"""How the line's regions are cut from its anomaly map, fitted on synthetic defects pasted on its own good images
(edge.fit.synthetic): the map level a region must reach (a multiple of the calibrated map threshold) and whether a
region is narrowed to the part around its peak (edge.grounding.regions.region_mask). The choice is the one whose
boxes best match the pasted defects' (F1 of recall and precision at IoU ≥ 0.3); today's cut — the calibrated
threshold, no narrowing — unless another is better by `MIN_GAIN`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.findings import iou, mask_box
from edge.grounding.regions import region_mask

SEED_FACTORS = (1.0, 1.25, 1.5, 2.0)
PEAK_FRACTIONS: tuple[float | None, ...] = (None, 0.6, 0.7, 0.8, 0.9)
IOU_MATCH = 0.3
MIN_GAIN = 0.02


@dataclass(frozen=True)
class PastedDefect:
    anomaly_map: np.ndarray  # the smoothed map of the frame with the defect pasted in
    mask: np.ndarray  # bool, frame pixels of the defect
    width: int
    height: int


def region_scores(defects: list[PastedDefect], threshold: float, peak_fraction: float | None
                  ) -> tuple[float, float]:
    """(recall, precision) of the cut's boxes against the pasted defects' boxes at IoU ≥ 0.3."""
    found = boxes = matched = 0
    for d in defects:
        truth = mask_box(d.mask)
        overlaps = [iou((b.x, b.y, b.w, b.h), truth) for b in
                    region_mask(d.anomaly_map, threshold, d.width, d.height, peak_fraction).blobs]
        found += bool(overlaps) and max(overlaps) >= IOU_MATCH
        boxes += len(overlaps)
        matched += sum(o >= IOU_MATCH for o in overlaps)
    return found / max(len(defects), 1), matched / boxes if boxes else 0.0


def fit_region_cut(defects: list[PastedDefect], threshold: float) -> tuple[float, float | None, dict[str, object]]:
    """(region threshold, peak fraction, what was measured) for the line."""
    table: dict[str, tuple[float, float, float]] = {}
    best: tuple[float, float, float | None] | None = None
    for factor in SEED_FACTORS:
        for fraction in PEAK_FRACTIONS:
            recall, precision = region_scores(defects, threshold * factor, fraction)
            f1 = 2 * recall * precision / max(recall + precision, 1e-9)
            table[f"x{factor:g}/{fraction}"] = (round(recall, 3), round(precision, 3), round(f1, 3))
            if best is None or f1 > best[0]:
                best = (f1, factor, fraction)
    assert best is not None
    default_f1 = table["x1/None"][2]
    f1, factor, fraction = best if best[0] >= default_f1 + MIN_GAIN else (default_f1, 1.0, None)
    return threshold * factor, fraction, {"region_cut": f"x{factor:g} map threshold, peak fraction {fraction}",
                                          "region_cut_f1": round(f1, 3), "region_cut_default_f1": default_f1,
                                          "region_cut_defects": len(defects), "region_cut_table": table}
