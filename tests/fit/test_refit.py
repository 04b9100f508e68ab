"""edge.fit.refit on labelled rows with known structure: the decision, the failure predictor, the routing
threshold (risk and budget policies), the OoD detector, and the round trip through a saved version."""

from pathlib import Path

import numpy as np
import pytest

from edge.fit.refit import LABEL_SUSPECTS, RoutingSpec, label_suspects, refit, routing_of
from edge.inspect.assess import assess_rows, decision_margins, split_rows
from edge.profile.line_profile import LineProfile
from edge.profile.rows import LabelledRows
from edge.profile.versions import load_profile, save_profile
from edge.vlm.prompts import TextBank
from edge.vlm.vocabulary import load_vocabulary

DIM = 8  # embedding dim; rows are [g, pooled s8, pooled s16, 4 map/global stats]


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _text() -> TextBank:
    classes = ["good", "spot", "texture", "scratch", "patch"]
    emb = _unit(np.random.default_rng(9).standard_normal((5, DIM))).astype(np.float32)
    return TextBank(classes, emb, {c: emb[i:i + 1] for i, c in enumerate(classes)}, {c: [c] for c in classes})


def _rows(n: int, seed: int) -> LabelledRows:
    """Good frames around one direction, defects around another, with an overlapping band where labels are noisy
    (the decisions there are the ones that fail)."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(np.int64)
    centre = np.where(y[:, None] > 0, 1.0, -1.0) * np.r_[np.ones(DIM // 2), np.zeros(DIM // 2)]
    ambiguous = rng.random(n) < 0.3
    spread = np.where(ambiguous, 2.5, 0.6)[:, None]
    g = _unit(centre + spread * rng.standard_normal((n, DIM)))
    pooled = [_unit(g + 0.3 * rng.standard_normal((n, DIM))) for _ in range(2)]
    stats = np.column_stack([y + rng.standard_normal(n), y + rng.standard_normal(n), rng.standard_normal(n),
                             y * 2 + rng.standard_normal(n)])
    return LabelledRows(np.hstack([g, *pooled, stats]).astype(np.float32), y)


def _profile() -> LineProfile:
    return LineProfile(line_id="l1", version="", pack_version="starter@1", vocabulary=load_vocabulary(),
                       bank={8: np.zeros((4, DIM), np.float32)}, patch_stats={8: {"zero": (0.0, 1.0)}},
                       anomaly_threshold=2.0, anomaly_scale=1.0, frame_stats={"map": (0.0, 1.0),
                                                                              "global": (0.0, 1.0)},
                       frame_weights={"map": 1.0, "global": 1.0}, frame_threshold=3.0, frame_scale=1.0)


def test_refit_learns_the_decision_its_failures_and_a_safe_threshold(tmp_path: Path) -> None:
    rows, test = _rows(800, 0), _rows(3000, 1)
    profile = _profile()
    metrics = refit(profile, rows, _text(), 10.0, DIM, RoutingSpec("risk", alpha=0.05, delta=0.1))
    assert profile.head is not None and profile.use_head
    assert metrics["failure_inputs"] in ("full", "compact", "msp") and profile.failure is not None
    assert profile.routing is not None and profile.routing["policy"] == "risk"
    cal = profile.routing["calibration"]
    assert cal["upper_bound"] <= 0.05 and cal["accepted"] > 0
    menu = metrics["coverage_by_alpha"]  # what the same rows vouch for at other risks (calibrate prints it)
    assert menu["0.05"] == pytest.approx(cal["coverage"], abs=1e-4) and menu["0.005"] < menu["0.1"]

    z = decision_margins(profile, test.features, DIM)
    wrong = ((z > 0).astype(int) != test.labels).astype(bool)
    assert 0.02 < wrong.mean() < 0.4, "the noisy band makes real failures"
    assessed = assess_rows(profile, test.features, z, _text(), 10.0, DIM)
    assert assessed.p_wrong is not None and assessed.ood_distance is not None
    accepted = assessed.p_wrong <= profile.routing["threshold"]
    assert accepted.mean() > 0.2, "the line decides a real share by itself"
    assert wrong[accepted].mean() <= 0.05, "and keeps the promised error rate on new frames"

    profile.rows = rows
    save_profile(profile, tmp_path)
    again = load_profile(tmp_path, with_rows=True)
    assert again.rows is not None and len(again.rows) == len(rows)
    again_assessed = assess_rows(again, test.features, decision_margins(again, test.features, DIM), _text(), 10.0,
                                 DIM)
    assert again_assessed.p_wrong is not None
    np.testing.assert_allclose(again_assessed.p_wrong, assessed.p_wrong, atol=0.02)  # float16 neighbours on disk
    assert load_profile(tmp_path).rows is None, "the daemon does not load the rows"


def test_the_lines_defect_rate_is_kept_and_used_by_every_refit(tmp_path: Path) -> None:
    """A profile told its line makes 5 % defects keeps that through save/load, and refit's thresholds (fused score
    and head) are the ones with the best accuracy at that rate: fewer frames called defective than balanced."""
    rows, test = _rows(600, 0), _rows(3000, 1)
    balanced, told = _profile(), _profile()
    told.defect_rate = 0.05
    refit(balanced, rows, _text(), 10.0, DIM)
    metrics = refit(told, rows, _text(), 10.0, DIM)
    assert told.head is not None and balanced.head is not None
    assert told.head.threshold > balanced.head.threshold
    assert told.frame_threshold is not None and balanced.frame_threshold is not None
    assert told.frame_threshold >= balanced.frame_threshold
    called = {name: float((decision_margins(p, test.features, DIM) > 0).mean())
              for name, p in (("balanced", balanced), ("told", told))}
    assert called["told"] < called["balanced"], called
    assert metrics["head_cv_accuracy"] == told.head.cv_accuracy
    told.rows = rows
    save_profile(told, tmp_path)
    assert load_profile(tmp_path).defect_rate == 0.05
    assert load_profile(tmp_path, with_rows=True).defect_rate == 0.05


def test_budget_policy_sends_at_most_its_share() -> None:
    profile = _profile()
    refit(profile, _rows(800, 0), _text(), 10.0, DIM, RoutingSpec("budget", budget=0.1))
    assert profile.routing is not None and profile.routing["policy"] == "budget"
    test = _rows(3000, 2)
    z = decision_margins(profile, test.features, DIM)
    p = assess_rows(profile, test.features, z, _text(), 10.0, DIM).p_wrong
    assert p is not None
    assert (p > profile.routing["threshold"]).mean() == pytest.approx(0.1, abs=0.03)


def test_good_frames_only_give_no_predictor_and_keep_the_fused_threshold() -> None:
    rows = _rows(200, 3)
    good = LabelledRows(rows.features[rows.labels == 0], rows.labels[rows.labels == 0])
    profile = _profile()
    metrics = refit(profile, good, _text(), 10.0, DIM)
    assert profile.head is None and profile.failure is None and profile.routing is None
    assert profile.frame_threshold == 3.0 and "not fit" in metrics["failure_predictor"]
    assert profile.ood is not None, "what the line looks like is known from good frames alone"


def test_the_policy_asked_for_is_kept_for_the_next_training_even_before_a_threshold_can_be_fit(
        tmp_path: Path) -> None:
    """A line calibrated from good frames alone has no threshold yet; the engineer's budget policy must still be
    what `lineside train` routes the next version by, not the default risk policy."""
    rows = _rows(200, 3)
    good = LabelledRows(rows.features[rows.labels == 0], rows.labels[rows.labels == 0])
    profile = _profile()
    profile.metrics = refit(profile, good, _text(), 10.0, DIM, RoutingSpec("budget", budget=0.3))
    assert profile.routing is None
    save_profile(profile, tmp_path)
    assert routing_of(load_profile(tmp_path)) == RoutingSpec("budget", budget=0.3)
    refit(profile, _rows(800, 0), _text(), 10.0, DIM, RoutingSpec("risk", alpha=0.05))
    assert routing_of(profile) == RoutingSpec("risk", alpha=0.05)
    assert routing_of(_profile()) == RoutingSpec(), "a version from before the policy was kept: the default"


def test_a_frame_reviewed_again_keeps_only_its_latest_label() -> None:
    first = LabelledRows(np.zeros((3, 4), np.float32), np.array([0, 0, 1]), sources=["", "review:a", "review:b"])
    later = LabelledRows(np.ones((1, 4), np.float32), np.array([1]), classes=["spot"], sources=["review:a"])
    both = first.extend(later)
    assert both.sources == ["", "review:b", "review:a"] and both.labels.tolist() == [0, 1, 1]
    assert both.classes == ["", "", "spot"]


def test_rows_split_into_their_parts() -> None:
    rows = _rows(5, 4).features
    parts = split_rows(rows, DIM)
    assert parts.g.shape == (5, DIM) and len(parts.pooled) == 2 and parts.map_stats.shape == (5, 3)
    with pytest.raises(ValueError, match="do not fit"):
        split_rows(rows[:, :-1], DIM)


def test_the_labels_to_check_are_the_flipped_ones() -> None:
    """Five clear frames labelled the other way: out of fold the line decides them against their labels, surer
    than any frame of the noisy band, and lists them first by the names it was given."""
    rows = _rows(600, 3)
    y = rows.labels
    clear = np.flatnonzero(np.abs(rows.features[:, :DIM // 2].sum(axis=1)) > 1.4)[:5]
    y[clear] = 1 - y[clear]
    names = [f"review:{i}" for i in range(len(rows))]
    metrics = refit(_profile(), rows, _text(), 10.0, DIM, row_names=names)
    listed = [s["frame"] for s in metrics["label_suspects"]]
    assert len(listed) == LABEL_SUSPECTS and set(listed[:5]) == {f"review:{i}" for i in clear}
    first = metrics["label_suspects"][0]
    assert first["label"] == ("defect" if y[int(first["frame"].split(":")[1])] else "good") and first["margin"] > 0
    with pytest.raises(ValueError, match="row names"):
        refit(_profile(), rows, _text(), 10.0, DIM, row_names=names[:-1])


def test_label_suspects_lists_only_contradicted_labels_surest_first() -> None:
    z = np.array([3.0, -2.0, 0.5, -4.0, 1.0])
    labels = np.array([0, 1, 1, 0, 0])
    got = label_suspects(z, labels, ["a", "", "c", "d", "e"])
    assert [s["frame"] for s in got] == ["a", "calibration row 1", "e"]
    assert [s["margin"] for s in got] == [3.0, 2.0, 1.0] and [s["label"] for s in got] == ["good", "defect", "good"]
    assert label_suspects(z, labels, ["a", "b", "c", "d", "e"], limit=1)[0]["frame"] == "a"
