import numpy as np

from edge.stats import auroc, roc_curve


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
