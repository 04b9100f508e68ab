"""How regions are cut is fitted on pasted defects: the cut whose boxes match them best, today's unless another is
clearly better."""

import numpy as np

from edge.fit.regions import PastedDefect, fit_region_cut, region_scores


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
    threshold, fraction, measured = fit_region_cut(defects, [2.0, 3.0])
    recall, precision, _ = region_scores(defects, threshold, fraction)
    assert fraction is not None and recall > 0.9 and precision > 0.9
    assert measured["region_cut_f1"] > measured["region_cut_default_f1"]  # type: ignore[operator]


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
    threshold, fraction, _ = fit_region_cut(defects, [4.0, 3.0, 2.0])
    assert (threshold, fraction) == (4.0, None)
