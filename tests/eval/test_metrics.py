import numpy as np

from edge.eval.metrics import auroc, iou, mask_box, roc_curve
from edge.eval.synthetic import KINDS, make_defect


def test_auroc_matches_the_pairwise_definition() -> None:
    rng = np.random.default_rng(0)
    labels = rng.random(300) < 0.3
    scores = np.round(rng.random(300) + labels * 0.4, 1)  # rounded: many ties
    pos, neg = scores[labels], scores[~labels]
    pairwise = ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (
        pos.size * neg.size)
    assert abs(auroc(labels, scores) - pairwise) < 1e-12
    assert auroc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert auroc([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.4]) == 0.0


def test_roc_curve_runs_from_corner_to_corner_and_integrates_to_auroc() -> None:
    rng = np.random.default_rng(1)
    labels = rng.random(200) < 0.5
    scores = rng.random(200) + labels * 0.5
    fpr, tpr = roc_curve(labels, scores)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert abs(np.trapezoid(tpr, fpr) - auroc(labels, scores)) < 1e-9


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
