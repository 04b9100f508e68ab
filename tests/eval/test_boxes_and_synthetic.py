import numpy as np

from edge.eval.boxes import iou, mask_box
from edge.eval.synthetic import KINDS, make_defect


def test_iou_and_mask_box() -> None:
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (5, 0, 10, 10)) == 50 / 150
    assert iou((0, 0, 10, 10), (20, 20, 5, 5)) == 0.0
    mask = np.zeros((50, 60), bool)
    mask[10:20, 30:35] = True
    assert mask_box(mask) == (30, 10, 5, 10)


def test_synthetic_defects_change_exactly_their_masked_pixels_and_are_seeded() -> None:
    rng = np.random.default_rng(0)
    image = (rng.random((120, 100, 3)) * 40 + 100).astype(np.uint8)
    donor = (rng.random((120, 100, 3)) * 40 + 20).astype(np.uint8)
    for kind in KINDS:
        a = make_defect(image, donor, kind, np.random.default_rng(5))
        b = make_defect(image, donor, kind, np.random.default_rng(5))
        assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
        assert a.mask.shape == image.shape[:2] and 10 < a.mask.sum() < 0.2 * a.mask.size
        changed = np.abs(a.image.astype(int) - image.astype(int)).max(axis=2) > 0
        assert changed[a.mask].mean() > 0.9  # the defect is where the mask says
