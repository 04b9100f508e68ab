"""How regions are cut is fitted on pasted defects: the cut whose boxes match them best, today's unless another is
clearly better."""

import numpy as np

from edge.fit.regions import PEAK_FRACTIONS, PastedDefect, closest_near_best, fit_region_cut, region_scores


def _defect(rng: np.random.Generator, broad: bool) -> PastedDefect:
    """A 256×256 frame with a 16×16 px defect; on `broad` lines the map also rises around it (the ELPV look)."""
    grid = rng.normal(0, 0.3, (32, 32)).astype(np.float32)
    y, x = (int(v) for v in rng.integers(4, 26, 2))
    if broad:
        grid[max(0, y - 5):y + 7, max(0, x - 5):x + 7] += 3.0
    grid[y:y + 2, x:x + 2] += 8.0
    mask = np.zeros((256, 256), bool)
    mask[8 * y:8 * y + 16, 8 * x:8 * x + 16] = True
    return PastedDefect(grid, mask, 256, 256)


def test_a_line_whose_defects_sit_in_broad_rises_gets_narrowed_regions() -> None:
    rng = np.random.default_rng(0)
    defects = [_defect(rng, broad=True) for _ in range(20)]
    assert region_scores(defects, 2.0, None)[0] < 0.2  # the whole rise is the box: no match
    fitted = fit_region_cut(defects, [2.0, 3.0])
    recall, precision, _ = region_scores(defects, fitted.threshold, fitted.peak_fraction, fitted.relative)
    assert (fitted.peak_fraction, fitted.relative) != (None, None) and recall > 0.9 and precision > 0.9
    assert fitted.measured["region_cut_f1"] > fitted.measured["region_cut_default_f1"]  # type: ignore[operator]


def test_a_line_whose_cut_already_fits_keeps_it() -> None:
    """Maps that rise exactly on the defects: cut half way up (the default here), the boxes are the defects'; no
    other cut is better, so the default stays."""
    rng = np.random.default_rng(1)
    defects = []
    for _ in range(20):
        y, x = (int(v) for v in rng.integers(2, 28, 2))
        grid = np.zeros((32, 32), np.float32)
        grid[y:y + 2, x:x + 2] = 8.0
        mask = np.zeros((256, 256), bool)
        mask[8 * y:8 * y + 16, 8 * x:8 * x + 16] = True
        defects.append(PastedDefect(grid, mask, 256, 256))
    fitted = fit_region_cut(defects, [4.0, 3.0, 2.0])
    assert (fitted.threshold, fitted.peak_fraction, fitted.relative) == (4.0, None, None)


def test_a_line_whose_map_drifts_from_frame_to_frame_gets_a_cut_relative_to_each_frame() -> None:
    """Defects as smooth bumps on a map whose level and contrast move with each frame (as a line model's logits do
    on defects unlike those it was trained on): the box a fixed level gives, or a share of the peak, grows and
    shrinks with them; a cut half way down from each frame's own peak to its mean is the defect's own box, and the
    fit says so."""
    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[0:32, 0:32].astype(np.float32)
    defects = []
    for _ in range(24):
        y, x = (float(v) for v in rng.uniform(6, 26, 2))
        offset, height = float(rng.uniform(-4, 4)), float(rng.uniform(3, 10))
        grid = offset + height * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 1.5 ** 2))
        grid = (grid + rng.normal(0, 0.05, grid.shape)).astype(np.float32)
        mask = np.zeros((256, 256), bool)  # the bump above half its height, in frame pixels
        fy, fx = np.mgrid[0:256, 0:256]
        mask[((fy + 0.5) / 8 - 0.5 - y) ** 2 + ((fx + 0.5) / 8 - 0.5 - x) ** 2 < 2 * 1.5 ** 2 * np.log(2)] = True
        defects.append(PastedDefect(grid, mask, 256, 256))
    levels = [0.0, -1.0, 1.0, 2.0, 3.0]
    fitted = fit_region_cut(defects, levels)
    assert fitted.relative is not None
    recall, precision, overlap = region_scores(defects, fitted.threshold, None, fitted.relative)
    assert recall > 0.9 and precision > 0.9 and overlap > 0.9
    assert max(region_scores(defects, t, f)[2] for t in levels for f in PEAK_FRACTIONS) < 0.7


def _spread_spot(rng: np.random.Generator, dark: bool) -> PastedDefect:
    """A 10 px spot on a grainy frame that the map spreads over 5 × 5 patches (40 px): `dark`, it stands out in the
    frame's grey levels; otherwise it is a defect of texture the frame's brightness does not show."""
    frame = np.clip(128 + rng.normal(0, 6, (256, 256)), 0, 255).astype(np.uint8)
    y, x = (int(v) for v in rng.integers(4, 24, 2))
    grid = rng.normal(0, 0.2, (32, 32)).astype(np.float32)
    grid[y - 2:y + 3, x - 2:x + 3] += 6.0
    mask = np.zeros((256, 256), bool)
    mask[8 * y - 1:8 * y + 9, 8 * x - 1:8 * x + 9] = True
    if dark:
        frame[mask] = 30
    return PastedDefect(grid, mask, 256, 256, image=np.repeat(frame[..., None], 3, axis=2))


def test_a_line_whose_map_spreads_small_defects_gets_boxes_drawn_around_their_pixels() -> None:
    rng = np.random.default_rng(3)
    defects = [_spread_spot(rng, dark=True) for _ in range(20)]
    fitted = fit_region_cut(defects, [2.0, 3.0])
    assert fitted.contrast is not None and fitted.cut("map").contrast == fitted.contrast
    assert region_scores(defects, fitted.threshold, fitted.peak_fraction, fitted.relative)[0] < 0.2
    recall, precision, _ = region_scores(defects, fitted.threshold, fitted.peak_fraction, fitted.relative,
                                         fitted.contrast)
    assert recall > 0.9 and precision > 0.9 and float(fitted.measured["region_cut_f1"]) > 0.9  # type: ignore[arg-type]
    table = fitted.measured["region_contrast_table"]
    assert isinstance(table, dict) and table["map's boxes"][0] < 0.2 and table[f"{fitted.contrast:g}"][2] > 0.9
    assert fitted.grow is None  # the spots' pixels stand out whole: as close without growing them


def test_a_line_whose_defects_do_not_stand_out_in_brightness_keeps_the_map_s_boxes() -> None:
    rng = np.random.default_rng(4)
    assert fit_region_cut([_spread_spot(rng, dark=False) for _ in range(20)], [2.0, 3.0]).contrast is None
    without_images = [PastedDefect(d.anomaly_map, d.mask, 256, 256) for d in
                      (_spread_spot(rng, dark=True) for _ in range(20))]
    assert fit_region_cut(without_images, [2.0, 3.0]).contrast is None


def test_a_cut_one_held_out_defect_behind_in_f1_wins_by_closer_boxes_two_behind_does_not() -> None:
    # (F1, mean overlap, name) on 40 held-out defects: one defect is 0.025 of F1
    leader, closer, far_closer = (0.825, 0.495, "leader"), (0.815, 0.504, "closer"), (0.775, 0.60, "two behind")
    assert closest_near_best([leader, closer, far_closer], 40)[2] == "closer"
    assert closest_near_best([leader, far_closer], 40)[2] == "leader"
    assert closest_near_best([leader, (0.825, 0.495, "tie")], 40)[2] == "leader"  # the first on a tie
    assert closest_near_best([leader, closer], 400)[2] == "leader"  # on 400 defects 0.01 of F1 is four of them
