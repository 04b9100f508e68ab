import numpy as np

from edge.grounding.anomaly import combine, few_shot_scores, smooth, zero_shot_scores
from edge.grounding.regions import Blob, contrast_box, defect_regions, find_regions, location_word, region_mask
from edge.vlm.prompts import TextBank


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _bank(dim: int = 16) -> TextBank:
    rng = np.random.default_rng(0)
    classes = ["good", "spot", "scratch"]
    states = {c: _unit(rng.standard_normal((2, dim))).astype(np.float32) for c in classes}
    class_emb = np.stack([_unit(states[c].mean(0)) for c in classes]).astype(np.float32)
    return TextBank(classes, class_emb, states, {c: [f"{c} a", f"{c} b"] for c in classes})


def test_location_words_cover_the_grid() -> None:
    assert location_word(5, 5, 300, 300) == "upper-left"
    assert location_word(150, 5, 300, 300) == "upper"
    assert location_word(150, 150, 300, 300) == "center"
    assert location_word(295, 150, 300, 300) == "right"
    assert location_word(295, 299, 300, 300) == "lower-right"


def test_region_box_caption_and_class_come_from_the_patches() -> None:
    text = _bank()
    grid = np.zeros((32, 32), np.float32)
    grid[4:8, 20:26] = 5.0  # a hot area in the upper right of the grid
    patches = np.tile(text.class_embeddings[0], (32, 32, 1))
    patches[4:8, 20:26] = text.state_embeddings["scratch"][1]  # those patches look like "scratch b"
    regions = find_regions(grid, threshold=2.5, patches=patches, frame_w=256, frame_h=256, text=text,
                           logit_scale=50.0)
    assert len(regions) == 1
    r = regions[0]
    assert 150 <= r.x <= 170 and 25 <= r.y <= 40 and 40 <= r.w <= 56 and 24 <= r.h <= 40
    assert r.defect_class == "scratch" and r.description == "scratch b"
    assert r.location == "upper-right"
    assert r.caption.startswith(f"scratch, upper-right, {r.w}×{r.h} px (")


def test_no_region_below_threshold() -> None:
    text = _bank()
    patches = np.tile(text.class_embeddings[0], (8, 8, 1))
    assert find_regions(np.zeros((8, 8), np.float32), 1.0, patches, 64, 64, text, 50.0) == []


def test_scores_and_combination() -> None:
    text = _bank()
    patches = np.tile(text.class_embeddings[0], (4, 4, 1))
    patches[1, 1] = text.class_embeddings[1]
    zero = zero_shot_scores(patches, text.class_embeddings, 50.0)
    assert zero[1, 1] > 0.9 and zero[0, 0] < 0.1
    few = few_shot_scores(patches, text.class_embeddings[:1])
    assert few[0, 0] < 1e-5 and few[1, 1] > 0.1
    fine = {"zero": zero, "few": few}
    coarse = {"zero": zero[::2, ::2], "few": few[::2, ::2]}
    stats = {s: {"zero": (0.0, 1.0), "few": (0.0, 1.0)} for s in (8, 16)}
    combined = combine({8: fine, 16: coarse}, stats, {"few": 0.5, "zero": 0.5})
    assert combined.shape == (4, 4)
    assert np.unravel_index(smooth(combined).argmax(), (4, 4)) in {(1, 1), (0, 0), (0, 1), (1, 0)}


def test_a_broad_rise_is_narrowed_to_the_defect_around_its_peak() -> None:
    """A broad low rise (z 3) with a sharp defect (z 9) in it: cut at the threshold, the box is the rise; with a
    peak fraction of 0.5, the box is the defect's own, and its caption reads the defect's patches."""
    text = _bank()
    grid = np.zeros((32, 32), np.float32)
    grid[4:24, 4:24] = 3.0
    grid[10:12, 10:12] = 9.0
    patches = np.tile(text.class_embeddings[0], (32, 32, 1))
    patches[10:12, 10:12] = text.class_embeddings[1]  # "spot"
    (broad,) = find_regions(grid, 2.0, patches, 256, 256, text, 50.0)
    (narrow,) = find_regions(grid, 2.0, patches, 256, 256, text, 50.0, peak_fraction=0.5)
    assert broad.w > 140 and broad.h > 140
    assert 70 <= narrow.x <= 85 and 12 <= narrow.w <= 28 and 12 <= narrow.h <= 28
    assert narrow.defect_class == "spot" and narrow.peak == broad.peak
    # a region whose peak share is under the threshold keeps its threshold cut
    (same,) = find_regions(grid, 2.0, patches, 256, 256, text, 50.0, peak_fraction=0.1)
    assert (same.x, same.y, same.w, same.h) == (broad.x, broad.y, broad.w, broad.h)


def test_regions_on_a_large_frame_match_the_full_size_cut() -> None:
    """On a 5 MP frame the map is cut at 15 pixels a cell and the boxes scaled: the same regions as cutting it at
    the frame's full size, each box edge within one working pixel, in frame pixels, the same peaks; a small frame
    is cut at its own size."""
    rng = np.random.default_rng(3)
    grid = smooth(rng.standard_normal((32, 32)).astype(np.float32) * 2.0)
    grid[5:8, 20:26] += 6.0  # a scratch-like rise
    grid[25, 3] += 8.0  # a one-patch spot
    for peak_fraction in (None, 0.5):
        fast = region_mask(grid, 1.5, 2448, 2048, peak_fraction)
        full = region_mask(grid, 1.5, 2448, 2048, peak_fraction, pixels_per_cell=None)
        assert fast.labels.shape == (480, 480) and full.labels.shape == (2048, 2448)
        assert len(fast.blobs) == len(full.blobs) >= 2
        step_x, step_y = 2448 / 480, 2048 / 480
        for a, b in zip(fast.blobs, full.blobs, strict=True):
            assert abs(a.x - b.x) <= step_x + 1 and abs(a.y - b.y) <= step_y + 1
            assert abs((a.x + a.w) - (b.x + b.w)) <= step_x + 1 and abs((a.y + a.h) - (b.y + b.h)) <= step_y + 1
            assert abs(a.area - b.area) <= 0.02 * b.area + step_x * b.h + step_y * b.w
            assert abs(a.cx - b.cx) <= step_x and abs(a.cy - b.cy) <= step_y
            # the cells' own values; full size samples beside a cell's centre, a little lower on a one-patch spot
            assert b.peak - 1e-6 <= a.peak < b.peak + 0.15
    small = region_mask(grid, 1.5, 300, 300)
    assert small.labels.shape == (300, 300)
    assert small.blobs == region_mask(grid, 1.5, 300, 300, pixels_per_cell=None).blobs


def test_a_relative_cut_boxes_each_defect_at_its_frame_s_own_level() -> None:
    """Two frames with the same bump on maps of different level (−3 and +3): a fixed level boxes the bump at two
    sizes; cut half way down from the peak to the map's mean, both boxes are the same. Beside the strongest
    region, a second one is kept only if its peak reaches the threshold."""
    yy, xx = np.mgrid[0:32, 0:32].astype(np.float32)
    bump = 6.0 * np.exp(-((yy - 10) ** 2 + (xx - 12) ** 2) / (2 * 1.5 ** 2))
    low, high = (bump - 3.0).astype(np.float32), (bump + 3.0).astype(np.float32)
    fixed = [defect_regions(m, 0.5, 256, 256)[0].blobs[0] for m in (low, high)]
    assert fixed[1].w > fixed[0].w + 16
    relative = [defect_regions(m, 0.5, 256, 256, relative=0.5)[0].blobs[0] for m in (low, high)]
    assert (relative[0].x, relative[0].y, relative[0].w, relative[0].h) == \
        (relative[1].x, relative[1].y, relative[1].w, relative[1].h)
    assert 16 <= relative[0].w <= 32  # about the bump above half its height (2 × 1.18 σ = 3.5 cells = 28 px)
    second = high.copy()
    second[24:26, 24:26] = 8.0  # a second, weaker peak (8 against 9) on the high map
    assert len(defect_regions(second, 7.5, 256, 256, relative=0.3)[0].blobs) == 2
    assert len(defect_regions(second, 8.5, 256, 256, relative=0.3)[0].blobs) == 1


def test_a_defect_frame_with_no_region_above_the_cut_shows_its_hottest_area() -> None:
    grid = np.zeros((32, 32), np.float32)
    grid[5:7, 20:22] = 1.0
    cut, level = defect_regions(grid, 2.0, 256, 256)
    assert len(cut.blobs) == 1 and level < 1.0
    assert 150 <= cut.blobs[0].x <= 165 and cut.blobs[0].w <= 24
    assert defect_regions(np.zeros((8, 8), np.float32), 1.0, 64, 64)[0].blobs == []


def _woven(rng: np.random.Generator, size: int = 256) -> np.ndarray:
    """A grey BGR frame with a fine weave and grain, as a textile line's frames look."""
    yy, xx = np.mgrid[0:size, 0:size]
    grey = 128 + 6 * np.sin(xx * 1.3) + 6 * np.sin(yy * 1.3) + rng.normal(0, 6, (size, size))
    return np.repeat(np.clip(grey, 0, 255).astype(np.uint8)[..., None], 3, axis=2)


def _iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return ix * iy / (a[2] * a[3] + b[2] * b[3] - ix * iy)


def test_a_contrast_cut_draws_the_box_around_the_defect_s_own_pixels() -> None:
    """The map spreads a 10 px spot over a box three times its size, or cuts a 40 px patch short; the pixels that
    stand out from the window's surroundings give the defect's own box, area and centre."""
    rng = np.random.default_rng(0)
    frame = _woven(rng)
    frame[100:110, 60:70] = 40  # a dark spot
    spread = Blob(x=50, y=90, w=30, h=30, area=900, peak=5.0, label=1, cx=65.0, cy=105.0)
    tight = contrast_box(frame, spread, 3.0)
    assert _iou((tight.x, tight.y, tight.w, tight.h), (60, 100, 10, 10)) > 0.8
    assert 80 <= tight.area <= 120 and abs(tight.cx - 64.5) < 1 and abs(tight.cy - 104.5) < 1
    assert (tight.peak, tight.label) == (spread.peak, spread.label)
    frame[150:190, 150:190] = 220  # a bright patch the map boxed short
    short = Blob(x=154, y=154, w=32, h=32, area=1024, peak=4.0, label=2, cx=170.0, cy=170.0)
    grown = contrast_box(frame, short, 3.0)
    assert _iou((grown.x, grown.y, grown.w, grown.h), (150, 150, 40, 40)) > 0.9


def test_a_faint_stain_is_boxed_whole_where_its_standing_grains_grow_into_it() -> None:
    """A 24 px stain 1.5 image standard deviations dark on a grainy weave: only its darkest grains stand out 4 σ
    from the surroundings, and their box is a fraction of it; grown through the pixels beyond 2 σ on the dark side,
    the parts fill the stain and stop at its edge (the surroundings' own grains beyond 2 σ stay apart). A sharp
    spot's box does not grow with it."""
    frame = _woven(np.random.default_rng(2))
    stain = frame.astype(np.float32)
    stain[100:124, 60:84] -= 1.5 * float(frame.std())
    stained = np.clip(stain, 0, 255).astype(np.uint8)
    mapped = Blob(x=52, y=92, w=40, h=40, area=1600, peak=5.0, label=1, cx=72.0, cy=112.0)
    standing = contrast_box(stained, mapped, 4.0)
    grown = contrast_box(stained, mapped, 4.0, grow=2.0)
    assert _iou((standing.x, standing.y, standing.w, standing.h), (60, 100, 24, 24)) < 0.5
    assert _iou((grown.x, grown.y, grown.w, grown.h), (60, 100, 24, 24)) > 0.85
    frame[100:110, 60:70] = 40  # a dark spot, as in the test above
    spot = contrast_box(frame, Blob(x=50, y=90, w=30, h=30, area=900, peak=5.0, label=1), 3.0, grow=2.0)
    assert _iou((spot.x, spot.y, spot.w, spot.h), (60, 100, 10, 10)) > 0.8


def test_the_product_s_own_lines_in_the_window_do_not_stretch_the_defect_s_box() -> None:
    """A solar cell's busbars stand out from the cell as much as a defect does: dashes of one, crossing the box the
    map drew around a bright spot, are as frequent in the window's ring as in the box and on the other side (dark),
    and a continuous one crosses the window from edge to edge. Neither is the defect; its box is the spot's."""
    frame = _woven(np.random.default_rng(4))
    for x in range(0, 256, 23):  # a dashed busbar: 15 px dashes, 8 px gaps
        frame[100:104, x:x + 15] = 30
    frame[110:120, 60:70] = 230  # a bright spot just below it
    mapped = Blob(x=45, y=92, w=40, h=36, area=1440, peak=5.0, label=1, cx=65.0, cy=110.0)
    for grow in (None, 2.0):  # grown, it takes in a grain of the weave at its rim, not the busbar 6 px above
        spot = contrast_box(frame, mapped, 3.0, grow)
        assert _iou((spot.x, spot.y, spot.w, spot.h), (60, 110, 10, 10)) > 0.75 and spot.y > 104
    frame[100:104, :] = 30  # the busbar continuous, and the spot as dark as it
    frame[110:120, 60:70] = 30
    spot = contrast_box(frame, mapped, 3.0)
    assert _iou((spot.x, spot.y, spot.w, spot.h), (60, 110, 10, 10)) > 0.8


def test_on_a_large_frame_a_large_box_is_read_coarser_and_the_grain_in_it_does_not_stretch_it() -> None:
    """A 5 MP frame whose map drew a 1,200 px box around a 40 px spot: the window is read every few pixels, and
    the grain's scattered specks inside the box are not taken for the defect."""
    rng = np.random.default_rng(3)
    frame = rng.integers(100, 150, (2048, 2448, 3), dtype=np.uint8)
    frame[1000:1040, 1000:1040] = 20
    box = Blob(x=420, y=420, w=1200, h=1200, area=1_440_000, peak=5.0, label=1, cx=1020.0, cy=1020.0)
    tight = contrast_box(frame, box, 3.0)
    step = 5  # the 2,400 px window read every 5th pixel: each edge within a step
    assert all(abs(a - b) <= step for a, b in zip((tight.x, tight.y, tight.x + tight.w, tight.y + tight.h),
                                                   (1000, 1000, 1040, 1040), strict=True))
    assert abs(tight.area - 1600) < 400 and abs(tight.cx - 1019.5) < 3 and abs(tight.cy - 1019.5) < 3


def test_a_defect_of_texture_not_brightness_keeps_the_map_s_box() -> None:
    rng = np.random.default_rng(1)
    frame = _woven(rng)
    blob = Blob(x=100, y=100, w=24, h=24, area=576, peak=5.0, label=1, cx=112.0, cy=112.0)
    assert contrast_box(frame, blob, 5.0) == blob
    whole = Blob(x=0, y=0, w=256, h=256, area=65536, peak=5.0, label=1, cx=128.0, cy=128.0)
    assert contrast_box(frame, whole, 3.0) == whole  # no surroundings to read
    frame[110:118, 110:118] = 0  # a dark spot, but on frames the cut does not read: 16-bit, or with an alpha plane
    assert contrast_box(frame.astype(np.uint16) * 256, blob, 3.0) == blob
    assert contrast_box(np.dstack([frame, frame[..., :1]]), blob, 3.0) == blob
    assert contrast_box(frame, blob, 3.0) != blob


def test_find_regions_with_a_contrast_cut_captions_the_defect_s_size_and_classes_from_the_map() -> None:
    text = _bank()
    grid = np.zeros((32, 32), np.float32)
    grid[11:16, 6:11] = 5.0  # the map's box around the spot: 40 × 40 px
    patches = np.tile(text.class_embeddings[0], (32, 32, 1))
    patches[11:16, 6:11] = text.state_embeddings["spot"][0]
    frame = _woven(np.random.default_rng(2))
    frame[100:110, 60:70] = 40
    (mapped,) = find_regions(grid, 2.5, patches, 256, 256, text, 50.0)
    (drawn,) = find_regions(grid, 2.5, patches, 256, 256, text, 50.0, frame=frame, contrast=3.0)
    assert _iou((mapped.x, mapped.y, mapped.w, mapped.h), (60, 100, 10, 10)) < 0.1
    assert _iou((drawn.x, drawn.y, drawn.w, drawn.h), (60, 100, 10, 10)) > 0.8
    assert f"{drawn.w}×{drawn.h} px" in drawn.caption and 90 <= drawn.area_px <= 120
    assert drawn.class_probs == mapped.class_probs and drawn.defect_class == mapped.defect_class
