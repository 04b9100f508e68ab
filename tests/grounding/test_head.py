from pathlib import Path

import numpy as np

from edge.grounding.anomaly import global_zero_shot_score
from edge.grounding.head import LinearHead, fit_head, frame_features
from edge.vlm.runtime import ImageEmbedding


def test_head_separates_a_separable_problem_and_survives_a_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((120, 20))
    y = (x[:, 3] + 0.5 * x[:, 7] > 0.2).astype(float)
    head = fit_head(x, y)
    assert ((head.predict(x) > head.threshold) == (y > 0)).mean() > 0.9
    assert head.cv_accuracy > 0.8
    head.save(tmp_path / "head.npz")
    again = LinearHead.load(tmp_path / "head.npz")
    np.testing.assert_allclose(again.predict(x), head.predict(x), rtol=1e-6)
    assert again.threshold == head.threshold


def test_frame_features_and_global_score_shapes() -> None:
    rng = np.random.default_rng(0)
    emb = ImageEmbedding(rng.standard_normal(16).astype(np.float32),
                         {8: rng.standard_normal((4, 4, 16)).astype(np.float32),
                          16: rng.standard_normal((2, 2, 16)).astype(np.float32)})
    feats = frame_features(emb, rng.standard_normal((4, 4)).astype(np.float32), 0.3)
    assert feats.shape == (16 * 3 + 4,) and feats[-1] == np.float32(0.3)
    classes = np.eye(16, dtype=np.float32)[:3]
    assert global_zero_shot_score(classes[0], classes, 10.0) < 0 < global_zero_shot_score(classes[1], classes, 10.0)
