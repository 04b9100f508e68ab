import numpy as np

from edge.eval.localisation import iou, mask_box
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


def test_pro_weighs_every_region_alike_and_matches_its_two_ends() -> None:
    from edge.eval.localisation import pro_auc

    rng = np.random.default_rng(0)
    masks, perfect, noise, half = [], [], [], []
    for _ in range(6):
        mask = np.zeros((64, 64), bool)
        mask[5:35, 5:35] = True  # a large region …
        mask[50:53, 50:53] = True  # … and a small one, apart
        masks.append(mask)
        perfect.append(mask.astype(np.float32) + 0.01 * rng.random((64, 64)))
        noise.append(rng.random((64, 64)))
        only_large = np.zeros((64, 64))
        only_large[5:35, 5:35] = 1.0  # finds the large region, misses the small one entirely
        half.append(only_large + 0.01 * rng.random((64, 64)))
    assert pro_auc(masks, perfect) > 0.99
    assert abs(pro_auc(masks, noise) - 0.15) < 0.03  # overlap = FPR on average: area 0.045 of 0.3
    # a small region counts as much as a large one: (1 + its chance-level overlap 0.15) / 2
    assert abs(pro_auc(masks, half) - 0.575) < 0.03
