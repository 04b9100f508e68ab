from pathlib import Path

import numpy as np

from edge.fit.classifier import best_threshold, fit_head
from edge.grounding.anomaly import global_zero_shot_score
from edge.grounding.classifier import LinearHead, frame_features
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


def test_a_known_defect_rate_moves_the_threshold_to_fewer_wrong_decisions_on_the_line() -> None:
    """Set up from 150 good + 150 defect frames, a line that makes 10 % defects: the head told the rate calls fewer
    frames defective and makes fewer wrong decisions on that line's stream than the balanced threshold."""
    rng = np.random.default_rng(3)

    def frames(n_good: int, n_bad: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.r_[np.zeros(n_good), np.ones(n_bad)]
        x = rng.standard_normal((y.size, 6))
        x[:, 0] += 1.6 * y  # overlapping classes: where the threshold sits matters
        return x, y

    x, y = frames(150, 150)
    balanced = fit_head(x, y)
    told = fit_head(x, y, defect_rate=0.1)
    assert told.threshold > balanced.threshold
    stream_x, stream_y = frames(9000, 1000)
    errors = {name: float(((head.predict(stream_x) > head.threshold) != (stream_y > 0)).mean())
              for name, head in (("balanced", balanced), ("told", told))}
    assert errors["told"] < errors["balanced"] - 0.03, errors
    # its out-of-fold figure is the accuracy expected at that rate, not the balanced one
    assert told.cv_accuracy > balanced.cv_accuracy


def test_stack_gives_the_frame_scores_their_own_weight_and_survives_a_round_trip(tmp_path: Path) -> None:
    """80 labelled rows of 300 noise columns whose last column (a frame score) alone separates good from defect:
    one L2 penalty over every standardised column drowns it, the stack on (head logit, score columns) does not."""
    rng = np.random.default_rng(5)

    def rows(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = (rng.random(n) < 0.5).astype(float)
        x = rng.standard_normal((n, 300))
        x[:, -1] = 2.5 * y + rng.standard_normal(n)
        return x, y

    x, y = rows(80)
    test_x, test_y = rows(2000)
    plain = fit_head(x, y)
    stacked = fit_head(x, y, stack_columns=(-4, -1))
    assert stacked.stack is not None and plain.stack is None
    from edge.stats import auroc

    assert auroc(test_y, stacked.predict(test_x)) > auroc(test_y, plain.predict(test_x)) + 0.05
    stacked.save(tmp_path / "head.npz")
    again = LinearHead.load(tmp_path / "head.npz")
    np.testing.assert_allclose(again.predict(test_x), stacked.predict(test_x), rtol=1e-5)
    assert again.stack is not None and again.stack.columns == (-4, -1)


def test_threshold_between_cleanly_separated_classes_leans_away_from_the_wider_one() -> None:
    """A small set that separates cleanly: every threshold in the gap counts the same, but new good frames spread
    like the good ones did — the smoothed threshold sits further from the wide good class than the gap's middle,
    and makes fewer mistakes on new frames from the same classes."""
    rng = np.random.default_rng(11)
    good, bad = rng.normal(0.0, 2.0, 30), rng.normal(12.0, 0.5, 30)
    gap = (good.max(), bad.min())
    assert gap[0] < gap[1]
    t, acc = best_threshold(good, bad)
    assert acc == 1.0 and gap[0] < t < gap[1] and t > sum(gap) / 2
    new_good, new_bad = rng.normal(0.0, 2.0, 100_000), rng.normal(12.0, 0.5, 100_000)
    errors = {name: float((new_good > v).mean() + (new_bad <= v).mean()) for name, v in
              (("smoothed", t), ("middle", sum(gap) / 2))}
    assert errors["smoothed"] < errors["middle"], errors


def test_threshold_on_a_large_set_is_the_empirical_optimum() -> None:
    rng = np.random.default_rng(12)
    good, bad = rng.normal(0.0, 1.0, 4000), rng.normal(1.5, 1.0, 1000)
    t, acc = best_threshold(good, bad, defect_rate=0.2)
    candidates = np.linspace(-2, 4, 601)
    empirical = [0.2 * (bad > c).mean() + 0.8 * (good <= c).mean() for c in candidates]
    assert acc >= max(empirical) - 0.005
