"""How the line's regions are cut from its anomaly map, fitted on synthetic defects pasted on its own good images
(edge.fit.synthetic): the map level a region must reach (a multiple of the calibrated map threshold) and whether a
region is narrowed to the part around its peak (edge.grounding.regions.region_mask), or each frame's regions cut at
a level relative to its own map (edge.grounding.regions.defect_regions). The boxes are scored as a defect frame
gets them; the choice is the one whose boxes best match the pasted defects' (the closest boxes, by mean overlap,
among the cuts within one defect of the best F1 of recall and precision at IoU ≥ 0.3); the calibrated threshold
without narrowing unless another is better by `MIN_GAIN`. Then, where the defects' frames are at hand, whether
the boxes are drawn around the frame's own pixels that stand out from their surroundings (a contrast cut,
edge.grounding.regions.contrast_box): the map is one value a patch and draws a small defect's box several times
its size.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from edge.findings import iou, mask_box
from edge.grounding.regions import Blob, defect_regions, drawn_boxes
from edge.profile.line_profile import RegionCut

SEED_FACTORS = (1.0, 1.25, 1.5, 2.0)  # × the calibrated map threshold
PEAK_FRACTIONS: tuple[float | None, ...] = (None, 0.6, 0.7, 0.8, 0.9)
RELATIVE_SHARES = (0.2, 0.3, 0.4, 0.5)  # of the way down from a frame's map peak to its mean
CONTRASTS = (2.5, 3.0, 4.0, 5.0)  # robust standard deviations a defect's pixels stand out by (a contrast cut)
CONTRAST_GROWS = (2.0,)  # … and the level the parts that stand out grow to (a faint defect's whole extent)
IOU_MATCH = 0.3
MIN_GAIN = 0.02
MAX_CONTRAST_F1_LOSS = 0.05  # two of 40 held-out defects


@dataclass(frozen=True)
class PastedDefect:
    anomaly_map: np.ndarray  # the smoothed map of the frame with the defect pasted in (or the line model's map)
    mask: np.ndarray  # bool, frame pixels of the defect
    width: int
    height: int
    tower: tuple[np.ndarray, np.ndarray] | None = None  # float16 patch grids (s8, s16), for the line model
    source: int = -1  # which good image it was pasted on (defects of one image stay on one side of a split)
    image: np.ndarray | None = None  # the frame with the defect in it (grey levels), for a contrast cut's boxes
    kind: str = ""  # the synthetic recipe (edge.fit.synthetic.FIT_KINDS); "" for an operator's box


def region_scores(defects: list[PastedDefect], threshold: float, peak_fraction: float | None,
                  relative: float | None = None, contrast: float | None = None, grow: float | None = None
                  ) -> tuple[float, float, float]:
    """(recall, precision, mean overlap) of the cut's boxes against the pasted defects' boxes: found at IoU ≥ 0.3,
    and each defect's best IoU averaged (0 where no box)."""
    return _box_scores(defects, _cut_blobs(defects, threshold, peak_fraction, relative), contrast, grow)


def _cut_blobs(defects: list[PastedDefect], threshold: float, peak_fraction: float | None,
               relative: float | None) -> list[list[Blob]]:
    """Each defect frame's regions as the cut draws them from its map."""
    return [defect_regions(d.anomaly_map, threshold, d.width, d.height, peak_fraction, relative)[0].blobs
            for d in defects]


def _box_scores(defects: list[PastedDefect], blobs: list[list[Blob]], contrast: float | None,
                grow: float | None) -> tuple[float, float, float]:
    """region_scores of regions already cut (`blobs`, one list per defect), their boxes drawn as `contrast` and
    `grow` say."""
    found = boxes = matched = 0
    best: list[float] = []
    for d, cut in zip(defects, blobs, strict=True):
        truth = mask_box(d.mask)
        overlaps = [iou((b.x, b.y, b.w, b.h), truth) for b in drawn_boxes(cut, d.image, contrast, grow)]
        found += bool(overlaps) and max(overlaps) >= IOU_MATCH
        boxes += len(overlaps)
        matched += sum(o >= IOU_MATCH for o in overlaps)
        best.append(max(overlaps, default=0.0))
    return found / max(len(defects), 1), matched / boxes if boxes else 0.0, float(np.mean(best)) if best else 0.0


Scored = TypeVar("Scored", bound=tuple[Any, ...])


def closest_near_best(scored: Sequence[Scored], defects: int) -> Scored:
    """Of candidates (F1, mean overlap, …) measured on `defects` held-out defects, the closest boxes among those
    within one defect of the best F1 (the first on a tie): one box found or missed more moves F1 by about that
    much, and on a few dozen defects which of two such cuts leads is chance — the line model's random numbers alone
    flip it — where the overlap counts every defect's box."""
    best_f1 = max(c[0] for c in scored)
    return max((c for c in scored if c[0] >= best_f1 - 1.0 / max(defects, 1) - 1e-9), key=lambda c: c[1])


@dataclass(frozen=True)
class FittedCut:
    threshold: float
    peak_fraction: float | None
    relative: float | None
    measured: dict[str, object]
    contrast: float | None = None
    grow: float | None = None

    def cut(self, source: str) -> RegionCut:
        return RegionCut(source, self.threshold, self.peak_fraction, self.relative, self.contrast, self.grow)


def fit_region_cut(defects: list[PastedDefect], thresholds: Sequence[float]) -> FittedCut:
    """How the line's regions are cut, and what was measured: one of `thresholds` with one of PEAK_FRACTIONS, or
    a relative cut (one of RELATIVE_SHARES; the threshold then admits the regions beside the strongest) — the
    closest boxes among those within one defect of the best F1; the default (the first threshold, no narrowing)
    unless another is better in F1 or, as good in F1, in overlap by MIN_GAIN."""
    table: dict[str, tuple[float, float, float, float]] = {}
    scored: list[tuple[float, float, float, float | None, float | None]] = []
    cuts = [(f, None) for f in PEAK_FRACTIONS] + [(None, r) for r in RELATIVE_SHARES]
    for threshold, (fraction, relative) in itertools.product(thresholds, cuts):
        recall, precision, overlap = region_scores(defects, threshold, fraction, relative)
        f1 = 2 * recall * precision / max(recall + precision, 1e-9)
        key = f"{threshold:.3g}/{fraction}" if relative is None else f"{threshold:.3g}/relative {relative}"
        table[key] = (round(recall, 3), round(precision, 3), round(f1, 3), round(overlap, 3))
        scored.append((f1, overlap, threshold, fraction, relative))
    best = closest_near_best(scored, len(defects))
    default_f1, default_overlap = table[f"{thresholds[0]:.3g}/None"][2:]
    gain = best[0] >= default_f1 + MIN_GAIN or (round(best[0], 2) >= round(default_f1, 2)
                                                and best[1] >= default_overlap + MIN_GAIN)
    f1, overlap, threshold, fraction, relative = (best if gain else
                                                  (default_f1, default_overlap, thresholds[0], None, None))
    said = (f"{relative:g} of the way down from each frame's peak (others above {threshold:.3g})"
            if relative is not None else f"above {threshold:.3g}"
            + (f", narrowed to {fraction:g} of each peak" if fraction is not None else ""))
    measured: dict[str, object] = {"region_cut_default_f1": default_f1, "region_cut_defects": len(defects),
                                   "region_cut_table": table}
    contrast = grow = None
    if defects and all(d.image is not None for d in defects):
        contrast, grow, f1, overlap, measured["region_contrast_table"] = _fit_contrast(
            defects, threshold, fraction, relative, f1, overlap)
        if contrast is not None:
            said += f"; boxes drawn around the pixels {contrast:g} σ from their surroundings"
            if grow is not None:
                said += f" and those joined to them beyond {grow:g} σ"
    return FittedCut(threshold, fraction, relative, {
        "region_cut": said, "region_cut_f1": round(f1, 3), "region_cut_overlap": round(overlap, 3), **measured},
        contrast, grow)


def _fit_contrast(defects: list[PastedDefect], threshold: float, fraction: float | None, relative: float | None,
                  f1: float, overlap: float
                  ) -> tuple[float | None, float | None, float, float, dict[str, tuple[float, ...]]]:
    """Whether the cut's boxes are drawn around the frame's own pixels (edge.grounding.regions.contrast_box), and
    at which of CONTRASTS, the parts grown or not to one of CONTRAST_GROWS: the closest boxes (mean overlap), kept
    where closer than the map's by MIN_GAIN and their F1 at most MAX_CONTRAST_F1_LOSS lower; between as close, the
    parts as they stand. Judged by closeness, not F1 first: the map's cut is already chosen for its F1, a contrast
    cut only redraws its boxes, and on the few dozen held-out defects a line has, F1 at IoU ≥ 0.3 moves by a
    defect's share (0.025 at 40) where a box crosses 0.3 either way. (contrast or None, grow or None, their F1,
    their overlap, the table: recall, precision, F1 and overlap per choice; F1 and overlap of the map's boxes)."""
    table: dict[str, tuple[float, ...]] = {"map's boxes": (round(f1, 3), round(overlap, 3))}
    best: tuple[float, float, float | None, float | None] = (f1, overlap, None, None)
    choices = [(k, None) for k in CONTRASTS] + [(k, g) for g in CONTRAST_GROWS for k in CONTRASTS if g < k]
    blobs = _cut_blobs(defects, threshold, fraction, relative)  # the cut is chosen: only its boxes are redrawn
    for contrast, grow in choices:
        recall, precision, mean_overlap = _box_scores(defects, blobs, contrast, grow)
        f1_k = 2 * recall * precision / max(recall + precision, 1e-9)
        key = f"{contrast:g}" if grow is None else f"{contrast:g} grown to {grow:g}"
        table[key] = (round(recall, 3), round(precision, 3), round(f1_k, 3), round(mean_overlap, 3))
        if f1_k >= f1 - MAX_CONTRAST_F1_LOSS - 1e-9 and mean_overlap > best[1]:
            best = (f1_k, mean_overlap, contrast, grow)
    if best[2] is None or best[1] < overlap + MIN_GAIN:
        return None, None, f1, overlap, table
    return best[2], best[3], best[0], best[1], table


def map_thresholds(threshold: float) -> list[float]:
    """The anomaly map's candidate levels: multiples of its calibrated threshold, that threshold first."""
    return [threshold * f for f in SEED_FACTORS]
