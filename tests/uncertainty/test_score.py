import pytest

from edge.uncertainty.score import baseline_uncertainty, frame_class_scores, route


def test_confident_far_from_threshold_is_certain() -> None:
    u = baseline_uncertainty({"good": 0.99, "spot": 0.01}, anomaly_score=0.0, threshold=5.0, scale=1.0)
    assert u.value < 0.1


def test_near_threshold_and_split_scores_is_uncertain() -> None:
    u = baseline_uncertainty({"good": 0.5, "spot": 0.5}, anomaly_score=3.0, threshold=3.0, scale=1.0)
    assert u.value > 0.9
    assert 0.0 <= u.value <= 1.0


def test_uncertainty_grows_towards_the_threshold() -> None:
    values = []
    for score in (0.0, 1.0, 2.0, 2.9):
        scores = frame_class_scores(score, threshold=3.0, scale=1.0, defect_probs={"spot": 0.8, "texture": 0.2})
        values.append(baseline_uncertainty(scores, score, 3.0, 1.0).value)
    assert values == sorted(values)


def test_class_scores_are_a_distribution_and_follow_the_threshold() -> None:
    below = frame_class_scores(1.0, 3.0, 1.0, {"spot": 0.7, "texture": 0.3})
    above = frame_class_scores(5.0, 3.0, 1.0, {"spot": 0.7, "texture": 0.3})
    assert sum(below.values()) == pytest.approx(1.0)
    assert below["good"] > 0.5 > above["good"]
    assert above["spot"] > above["texture"]


def test_route_sends_only_above_threshold() -> None:
    assert route(0.6, 0.5) and not route(0.5, 0.5)
