"""Regions from an anomaly map, and a caption for each: class, where, how big, best description.

A region's class and description come from its own embedding (the mean of the patch embeddings inside it) scored
against every state of every defect class: the class with the best ensemble score wins, and the description is the
best of that class's states (best-of-N by image–text score).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

from edge.findings import Region, caption_of
from edge.vlm.prompts import TextBank

_ROWS = ("upper", "middle", "lower")
_COLS = ("left", "center", "right")
MAX_REGIONS = 8
HOTTEST_SHARE = 0.25  # a defect frame with no region above the cut shows the area this near its map's peak


def location_word(cx: float, cy: float, width: int, height: int) -> str:
    """3×3 grid word for a point: 'upper-left', 'upper', …, 'center', …, 'lower-right'."""
    row = _ROWS[min(int(3 * cy / height), 2)]
    col = _COLS[min(int(3 * cx / width), 2)]
    if row == "middle" and col == "center":
        return "center"
    if row == "middle":
        return col
    if col == "center":
        return row
    return f"{row}-{col}"


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def classify_embedding(embedding: np.ndarray, text: TextBank, logit_scale: float) -> dict[str, float]:
    """Defect-class probabilities (good excluded) of one unit-norm embedding."""
    sims = text.class_embeddings[1:] @ embedding
    return dict(zip(text.defect_classes, _softmax(logit_scale * sims).tolist(), strict=True))


@dataclass(frozen=True)
class Blob:
    """One connected region of the map in frame pixels, before it is captioned."""

    x: int
    y: int
    w: int
    h: int
    area: int
    peak: float
    label: int  # its label in `RegionMask.labels`
    cx: float = 0.0  # its centroid, in frame pixels
    cy: float = 0.0


@dataclass(frozen=True)
class RegionMask:
    up: np.ndarray  # the map resized to the frame, or to at most PIXELS_PER_CELL a map cell on a large frame
    labels: np.ndarray  # connected-component labels of `up`'s pixels (0 = none)
    blobs: list[Blob]  # largest peak first, small specks left out; in frame pixels


# Regions are cut on the map brought to the frame's size, but no finer than this many pixels a map cell: the map
# itself is one value a patch, and on a 5 MP frame the full-size cut took 63 ms a defect frame (BENCHMARKS.md,
# "Regions on large frames"). Odd, so that the working pixels fall on the cells' centres: a region's peak is then
# the map's own value, as at full size; a box edge is off by at most 1/15 of a cell.
PIXELS_PER_CELL = 15


def region_mask(smoothed_map: np.ndarray, threshold: float, frame_w: int, frame_h: int,
                peak_fraction: float | None = None, min_area_pct: float = 0.02,
                pixels_per_cell: int | None = PIXELS_PER_CELL) -> RegionMask:
    """The map's regions: connected pixels above `threshold`, largest peak first. With `peak_fraction` f, each is
    narrowed to the connected pixels around its peak above f × peak where that is higher than `threshold` (a broad
    low rise with a sharp defect in it becomes the defect's own box; the line's profile says whether that fits its
    defects, edge.fit.regions). Cut at the frame's size, or along an axis where the frame is larger, at
    `pixels_per_cell` a map cell (None: always the frame's size); the boxes are in frame pixels either way."""
    grid_h, grid_w = smoothed_map.shape
    work_w, work_h = frame_w, frame_h
    if pixels_per_cell is not None:
        work_w, work_h = min(frame_w, pixels_per_cell * grid_w), min(frame_h, pixels_per_cell * grid_h)
    scaled = (work_w, work_h) != (frame_w, frame_h)
    sx, sy = frame_w / work_w, frame_h / work_h
    up = cv2.resize(smoothed_map, (work_w, work_h), interpolation=cv2.INTER_LINEAR)
    # one byte a pixel and no frame-sized temporaries per region: on a 25 MP frame each would cost 100s of MB
    n, labels, stats, centroids = cv2.connectedComponentsWithStats((up > threshold).view(np.uint8), connectivity=8)
    blobs = []
    frame_area = frame_w * frame_h
    for label in range(1, n):
        x, y, w, h, area = (int(v) for v in stats[label])
        if 100.0 * area * sx * sy / frame_area < min_area_pct and area * sx * sy < 9:
            continue
        inside = (labels[y:y + h, x:x + w] == label).view(np.uint8)  # within the region's box only
        _, peak, _, (px, py) = cv2.minMaxLoc(up[y:y + h, x:x + w], mask=inside)
        cx, cy = float(centroids[label][0]), float(centroids[label][1])
        if peak_fraction is not None and peak_fraction * peak > threshold:
            core = ((up[y:y + h, x:x + w] > peak_fraction * peak) & (inside > 0)).view(np.uint8)
            _, sub, sub_stats, sub_centroids = cv2.connectedComponentsWithStats(core, connectivity=8)
            k = int(sub[py, px])
            box = labels[y:y + h, x:x + w]
            box[(inside > 0) & (sub != k)] = 0  # the narrowed region is what its caption reads
            sx0, sy0, w, h, area = (int(v) for v in sub_stats[k])
            x, y = x + sx0, y + sy0
            cx, cy = x - sx0 + float(sub_centroids[k][0]), y - sy0 + float(sub_centroids[k][1])
        if scaled:  # the working pixels' box and centre in frame pixels
            x0, y0 = int(x * sx), int(y * sy)
            x1, y1 = min(frame_w, int(np.ceil((x + w) * sx))), min(frame_h, int(np.ceil((y + h) * sy)))
            x, y, w, h, area = x0, y0, x1 - x0, y1 - y0, int(round(area * sx * sy))
            cx, cy = (cx + 0.5) * sx - 0.5, (cy + 0.5) * sy - 0.5
        blobs.append(Blob(x, y, w, h, area, float(peak), label, cx, cy))
    blobs.sort(key=lambda b: b.peak, reverse=True)
    return RegionMask(up, labels, blobs[:MAX_REGIONS])


def frame_level(smoothed_map: np.ndarray, share: float) -> float:
    """The level `share` of the way down from the map's peak to its mean: a cut relative to the frame's own map."""
    peak = float(smoothed_map.max())
    return peak - share * (peak - float(smoothed_map.mean()))


def defect_regions(smoothed_map: np.ndarray, threshold: float, frame_w: int, frame_h: int,
                   peak_fraction: float | None = None, relative: float | None = None, min_area_pct: float = 0.02
                   ) -> tuple[RegionMask, float]:
    """The regions of a frame decided defective, and the level they were cut at.

    Absolute cut (`relative` None): the map's regions above `threshold` (`region_mask`, narrowed by
    `peak_fraction`); where none reaches it, the hottest area (within HOTTEST_SHARE of the map's range below its
    peak), so that a defect frame always shows where it is most unlike the line's good frames.
    Relative cut: every region is cut at the frame's own level, `relative` of the way down from its peak to its
    mean (a map whose scale the line's defects do not share — a line model trained on other defects, a dim
    defect — still gives a box of the defect's own size); the strongest region is kept, and every other one whose
    peak reaches `threshold`."""
    if relative is not None:
        level = frame_level(smoothed_map, relative)
        cut = region_mask(smoothed_map, level, frame_w, frame_h, None, min_area_pct)
        cut = RegionMask(cut.up, cut.labels, cut.blobs[:1] + [b for b in cut.blobs[1:] if b.peak > threshold])
    else:
        level = threshold
        cut = region_mask(smoothed_map, threshold, frame_w, frame_h, peak_fraction, min_area_pct)
        if not cut.blobs:
            level = frame_level(smoothed_map, HOTTEST_SHARE)
            cut = region_mask(smoothed_map, level, frame_w, frame_h, None, min_area_pct)
            cut = RegionMask(cut.up, cut.labels, cut.blobs[:1])
    return cut, level


# A contrast cut reads the box grown by this share of its size on each side: room for the defect's own edges where
# the map's box fell short of them, and a ring of its surroundings to measure them against.
CONTRAST_MARGIN = 0.5
CONTRAST_MAX_SIDE = 512  # a larger window is read every n-th pixel to about this size (a box edge off by < n)
MIN_CONTRAST_PIXELS = 4  # a part smaller than this is grain, not a defect
CONTRAST_PART_SHARE = 0.2  # parts under this share of the largest are the surroundings' own spread


def grey(frame: np.ndarray) -> np.ndarray:
    """A frame's 8-bit grey levels, as a contrast cut reads them (a grey frame as it is): a third of a BGR frame's
    memory, for the frames calibrate keeps to fit the cut on."""
    return cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if frame.ndim == 3 else frame


def _median(histogram: np.ndarray) -> int:
    """The median of the values a 256-bin histogram counts."""
    return int(np.searchsorted(np.cumsum(histogram), (int(histogram.sum()) + 1) // 2))


def contrast_box(frame: np.ndarray, blob: Blob, contrast: float, grow: float | None = None) -> Blob:
    """The blob with its box drawn around the frame's own pixels: the map is one value a patch (8 px or more) and
    spreads a small defect over its neighbours, while the defect's pixels stand out from their surroundings. In the
    window of the box grown by CONTRAST_MARGIN, the pixels whose grey level (after a 3×3 median) is more than
    `contrast` robust standard deviations (1.4826 × MAD) from the median of the window's ring outside the box — on
    one side of it, the darker or the brighter, whichever the box holds more of beyond the ring's rate of them —
    in the connected parts that reach into the box and do not cross the window from edge to edge (at least
    MIN_CONTRAST_PIXELS and CONTRAST_PART_SHARE of the largest) — with `grow`, each part grown through the pixels
    beyond `grow` on its side of that median (`_grown`) — give the new box, area and centre. The blob as it was
    where none stands out (a defect of texture, not of brightness). Grey levels stay 8-bit, and a window larger
    than CONTRAST_MAX_SIDE is read every n-th pixel: a few milliseconds a box on any frame. A frame other than 8-bit
    grey or BGR keeps the map's box."""
    if frame.dtype != np.uint8 or not (frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] == 3)):
        return blob
    height, width = frame.shape[:2]
    mx, my = int(np.ceil(blob.w * CONTRAST_MARGIN)), int(np.ceil(blob.h * CONTRAST_MARGIN))
    x0, y0 = max(0, blob.x - mx), max(0, blob.y - my)
    x1, y1 = min(width, blob.x + blob.w + mx), min(height, blob.y + blob.h + my)
    if (x1 - x0) * (y1 - y0) - blob.w * blob.h < 16:  # a box that fills the frame: no surroundings to read
        return blob
    step = -(-max(x1 - x0, y1 - y0) // CONTRAST_MAX_SIDE)  # window pixels per working pixel, along each axis
    window = np.ascontiguousarray(frame[y0:y1:step, x0:x1:step])
    levels8 = cv2.medianBlur(grey(window), 3)
    bx0, by0 = (blob.x - x0) // step, (blob.y - y0) // step
    bx1, by1 = -(-(blob.x + blob.w - x0) // step), -(-(blob.y + blob.h - y0) // step)
    inside = np.bincount(levels8[by0:by1, bx0:bx1].ravel(), minlength=256)
    histogram = np.bincount(levels8.ravel(), minlength=256) - inside  # the ring: the window less the box
    if histogram.sum() < 16:
        return blob
    background = _median(histogram)
    deviation = np.arange(256) - background  # each grey level's, signed
    spread = 1.4826 * _median(np.bincount(np.abs(deviation), weights=histogram, minlength=256)
                              .astype(np.int64)) + 0.5
    # a defect is darker or brighter than its surroundings: the side whose standing pixels the box holds most of
    # beyond the ring's own rate of them (a busbar or a thread that stands out as much in the ring is the product's)
    sides = (deviation < -contrast * spread, deviation > contrast * spread)
    excess = [inside[side].sum() - histogram[side].sum() * inside.sum() / histogram.sum() for side in sides]
    standing = cv2.LUT(levels8, sides[int(excess[1] > excess[0])].astype(np.uint8))
    n, labels, stats, centroids = cv2.connectedComponentsWithStats(standing, connectivity=8)
    reaching = np.flatnonzero(np.bincount(labels[by0:by1, bx0:bx1].ravel(), minlength=n)[1:]) + 1
    reaching = reaching[~_crossing(stats[reaching], standing.shape)]
    areas = stats[reaching, cv2.CC_STAT_AREA]
    reaching = reaching[(areas >= MIN_CONTRAST_PIXELS) & (areas >= CONTRAST_PART_SHARE * areas.max(initial=0))]
    if not len(reaching):
        return blob
    if grow is not None:  # the defect's parts, each grown to the level: the grain left out above stays out
        kept = np.zeros(n, np.uint8)
        kept[reaching] = 1
        seeds = kept[labels]
        n, labels, stats, centroids = cv2.connectedComponentsWithStats(
            _grown(levels8, seeds, deviation, grow * spread), connectivity=8)
        reaching = np.flatnonzero(np.bincount(labels[seeds > 0], minlength=n)[1:]) + 1
    part = stats[reaching]
    left, top = int(part[:, cv2.CC_STAT_LEFT].min() * step), int(part[:, cv2.CC_STAT_TOP].min() * step)
    right = min(x1 - x0, int(np.ceil((part[:, cv2.CC_STAT_LEFT] + part[:, cv2.CC_STAT_WIDTH]).max() * step)))
    bottom = min(y1 - y0, int(np.ceil((part[:, cv2.CC_STAT_TOP] + part[:, cv2.CC_STAT_HEIGHT]).max() * step)))
    area = part[:, cv2.CC_STAT_AREA]
    cx, cy = ((centroids[reaching] + 0.5) * area[:, None]).sum(axis=0) / area.sum() * step - 0.5
    return replace(blob, x=x0 + left, y=y0 + top, w=right - left, h=bottom - top,
                   area=int(round(area.sum() * step * step)), cx=x0 + float(cx), cy=y0 + float(cy))


def _crossing(parts: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Which of the parts (rows of connected-component stats) run from one edge of the window to the opposite one:
    a line of the product (a busbar, a thread, an edge) that crosses the window, not a defect the map boxed."""
    left, top = parts[:, cv2.CC_STAT_LEFT], parts[:, cv2.CC_STAT_TOP]
    right, bottom = left + parts[:, cv2.CC_STAT_WIDTH], top + parts[:, cv2.CC_STAT_HEIGHT]
    return np.asarray(((left == 0) & (right == shape[1])) | ((top == 0) & (bottom == shape[0])))


def _grown(levels8: np.ndarray, standing: np.ndarray, deviation: np.ndarray, level: float) -> np.ndarray:
    """The `standing` pixels and every pixel joined to one of them through pixels more than `level` from the
    surroundings' median on its side (`deviation`: each grey level's, signed) — hysteresis, as Canny's edges grow.
    A defect fainter than its surroundings' spread stands out only by its darkest (or brightest) grains; the rest
    of it is a run of pixels beyond the spread's lower reach, where the surroundings' own grains stay apart. A run
    that reaches the window's edge is the surroundings' (a grain that percolates), not the defect's: not taken."""
    grown = standing.copy()
    for side in (deviation < -level, deviation > level):
        joined = cv2.LUT(levels8, side.astype(np.uint8))
        n, labels = cv2.connectedComponents(joined, connectivity=8)
        seeded = np.zeros(n, np.uint8)
        seeded[labels[(standing > 0) & (joined > 0)]] = 1
        seeded[0] = 0
        seeded[np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])] = 0
        grown |= seeded[labels]
    return grown


def drawn_boxes(blobs: list[Blob], frame: np.ndarray | None, contrast: float | None,
                grow: float | None = None) -> list[Blob]:
    """The boxes a frame's regions are drawn with: the map's, or each drawn around the frame's own pixels that
    stand out by `contrast` (grown to `grow`: `contrast_box`) where the line's profile cuts so."""
    if frame is None or contrast is None:
        return blobs
    return [contrast_box(frame, b, contrast, grow) for b in blobs]


def find_regions(smoothed_map: np.ndarray, threshold: float, patches: np.ndarray, frame_w: int, frame_h: int,
                 text: TextBank, logit_scale: float, min_area_pct: float = 0.02,
                 peak_fraction: float | None = None, relative: float | None = None,
                 frame: np.ndarray | None = None, contrast: float | None = None,
                 grow: float | None = None) -> list[Region]:
    """The regions of a frame decided defective (`defect_regions`) in frame pixels, each captioned, largest peak
    first; with the `frame` and a `contrast`, each box drawn around the frame's pixels that stand out (grown to
    `grow`: `contrast_box`). A region's class and description read the map's cells either way."""
    grid_h, grid_w = smoothed_map.shape
    regions, level = defect_regions(smoothed_map, threshold, frame_w, frame_h, peak_fraction, relative, min_area_pct)
    if not regions.blobs:
        return []
    frame_area = frame_w * frame_h
    grid_labels = cv2.resize(regions.labels.astype(np.float32), (grid_w, grid_h), interpolation=cv2.INTER_NEAREST)
    found = []
    for mapped, blob in zip(regions.blobs, drawn_boxes(regions.blobs, frame, contrast, grow), strict=True):
        # the region's embedding: the map's patches in it, weighted by how anomalous they are
        cells = grid_labels == mapped.label
        if not cells.any():
            cy = int((mapped.y + mapped.h / 2) * grid_h / frame_h)
            cx = int((mapped.x + mapped.w / 2) * grid_w / frame_w)
            cells = np.zeros((grid_h, grid_w), bool)
            cells[min(cy, grid_h - 1), min(cx, grid_w - 1)] = True
        weights = np.clip(smoothed_map[cells] - level, 1e-3, None)[:, None]
        emb = (patches[cells] * weights).sum(axis=0)
        emb /= max(float(np.linalg.norm(emb)), 1e-12)
        probs = classify_embedding(emb, text, logit_scale)
        cls = max(probs, key=probs.__getitem__)
        state_scores = text.state_embeddings[cls] @ emb
        best = int(state_scores.argmax())
        x, y, w, h, area = blob.x, blob.y, blob.w, blob.h, blob.area
        area_pct = round(100.0 * area / frame_area, 3)
        location = location_word(blob.cx, blob.cy, frame_w, frame_h)
        found.append(Region(
            x=x, y=y, w=w, h=h, area_px=area, area_pct=area_pct, peak=blob.peak, defect_class=cls,
            location=location, caption=caption_of(cls, location, w, h, area_pct), description=text.states[cls][best],
            caption_score=float(state_scores[best]), class_probs=probs))
    return found
