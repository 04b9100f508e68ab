"""The learned failure predictor: shapes, ViLU's loss weighting, the hand-written gradient, that it learns, OoD."""

import math

import numpy as np
import pytest

from edge.fit.failure import (
    BAG_MEMBERS,
    CROSS_FIT_MEMBERS,
    CROSS_FIT_REPEATS,
    cross_fit_failure,
    cross_fitted_predictor,
    fit_failure_predictor,
    fit_msp_predictor,
    fit_ood,
    forward_backward,
    merged,
    vilu_weight,
    weighted_bce,
)
from edge.fit.failure import _gelu_and_grad as gelu_and_grad
from edge.stats import auroc
from edge.uncertainty.failure import (
    NEIGHBOUR_NAMES,
    SCALAR_NAMES,
    TAIL,
    FailurePredictor,
    NeighbourIndex,
    baseline_scores,
    decision_scalars,
    failure_features,
    gelu,
)
from edge.uncertainty.score import Uncertainty, review_route


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_feature_and_output_shapes() -> None:
    rng = np.random.default_rng(0)
    n, d, c = 7, 16, 5
    g, text = _unit(rng.standard_normal((n, d))), _unit(rng.standard_normal((c, d)))
    pooled = [_unit(rng.standard_normal((n, d))) for _ in range(2)]
    z = rng.standard_normal(n)
    q = np.full((n, c - 1), 1 / (c - 1))
    scalars = decision_scalars(z, rng.random((n, 3)), rng.standard_normal(n), q)
    assert scalars.shape == (n, len(SCALAR_NAMES))
    near = np.zeros((n, len(NEIGHBOUR_NAMES)))
    x = failure_features(g, pooled, np.where(z > 0, 1, 0), text, 10.0, scalars, near)
    assert x.shape == (n, 3 * d + 2 * d + len(TAIL))
    np.testing.assert_allclose(x[:, d:2 * d], text[np.where(z > 0, 1, 0)])  # t̂ = the decided class's text
    attention = x[:, 2 * d:3 * d]
    assert np.allclose(attention, (np.exp(10 * g @ text.T) / np.exp(10 * g @ text.T).sum(1, keepdims=True)) @ text,
                       atol=1e-5)
    y = (z > 0).astype(int)
    y[:2] = 1 - y[:2]
    model = fit_failure_predictor(np.repeat(x, 4, axis=0), np.tile(y, 4), epochs=3, validation=0.0)
    p = model.predict(x)
    assert p.shape == (n,) and ((p > 0) & (p < 1)).all()


def test_wrong_decisions_weigh_log_one_plus_odds_of_the_batch_accuracy() -> None:
    assert vilu_weight(0.9) == pytest.approx(math.log(1 + 0.9 / 0.1))
    wrong = np.array([1, 0, 0, 0])  # batch accuracy 0.75
    logit = np.array([0.3, -1.0, 0.5, 2.0])
    loss, grad = weighted_bce(logit, wrong)
    p = 1 / (1 + np.exp(-logit))
    w = math.log(1 + 0.75 / 0.25)
    expected = -(w * np.log(p[0]) + np.log(1 - p[1]) + np.log(1 - p[2]) + np.log(1 - p[3])) / 4
    assert loss == pytest.approx(expected)
    assert grad[0] == pytest.approx(w * (p[0] - 1) / 4) and grad[1] == pytest.approx(p[1] / 4)


def test_hand_written_gradient_matches_torch() -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((20, 6)), (rng.random(20) < 0.3).astype(float)
    params = {"w1": rng.standard_normal((6, 5)), "b1": rng.standard_normal(5), "w2": rng.standard_normal(5),
              "b2": rng.standard_normal(1)}
    loss, grads = forward_backward(params, x, y)
    t = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in params.items()}
    h = torch.nn.functional.gelu(torch.tensor(x) @ t["w1"] + t["b1"], approximate="tanh")
    logit = h @ t["w2"] + t["b2"]
    acc = 1 - y.mean()
    weight = torch.tensor(np.where(y > 0, math.log(1 + acc / (1 - acc)), 1.0))
    t_loss = torch.nn.functional.binary_cross_entropy_with_logits(logit, torch.tensor(y), weight=weight)
    t_loss.backward()
    assert loss == pytest.approx(float(t_loss.detach()), rel=1e-6)
    for k in params:
        np.testing.assert_allclose(grads[k], t[k].grad.numpy(), rtol=1e-5, atol=1e-8)  # type: ignore[union-attr]


def test_the_fit_s_activation_is_the_run_time_s_to_the_bit() -> None:
    """The fit takes gelu and its derivative from one tanh; the daemon scores with `gelu`: the same values, so a
    predictor scores at run time exactly what it was fitted on."""
    x = np.random.default_rng(5).standard_normal((64, 32)).astype(np.float32) * 3
    activation, derivative = gelu_and_grad(x)
    assert np.array_equal(activation, gelu(x))
    step = 1e-3
    numeric = (gelu(x.astype(np.float64) + step) - gelu(x.astype(np.float64) - step)) / (2 * step)
    np.testing.assert_allclose(derivative, numeric, rtol=1e-4, atol=1e-5)


def _decisions_that_fail(seed: int, n: int = 1200) -> tuple[np.ndarray, np.ndarray]:
    """Feature rows and wrong flags where failures live near one direction of the input space, not in any single
    baseline score."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 12))
    risk = 1 / (1 + np.exp(-(2.5 * x[:, 3] - 2.0 * np.abs(x[:, 7]))))
    return x, (rng.random(n) < risk * 0.5).astype(int)


def test_it_learns_which_decisions_fail_and_survives_a_round_trip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    x, wrong = _decisions_that_fail(seed=0)
    train, test = slice(0, 900), slice(900, None)
    model = fit_failure_predictor(x[train], wrong[train], seed=0)
    assert auroc(wrong[test], model.predict(x[test])) > 0.8
    assert model.info["rows"] == 900 and model.info["members"] == BAG_MEMBERS > 1
    assert len(model.info["epochs"]) == BAG_MEMBERS and all(1 <= e <= 150 for e in model.info["epochs"])
    model.save(tmp_path / "f.npz")
    again = FailurePredictor.load(tmp_path / "f.npz")
    np.testing.assert_allclose(again.predict(x[test]), model.predict(x[test]), rtol=1e-6)
    oof = cross_fit_failure(x[train], wrong[train], folds=3, epochs=30)
    assert oof.shape == (900,) and auroc(wrong[train], oof) > 0.7


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(np.argsort(np.argsort(a)), np.argsort(np.argsort(b)))[0, 1])


def test_a_cross_fitted_predictor_ranks_failures_as_well_and_moves_less_with_its_seed() -> None:
    """Calibrate's predictor and its out-of-fold p(wrong), from which the routing threshold is set, come from one set
    of fits over several fold draws. Refit with another seed on the same rows, both should rank the same decisions
    first more nearly than one fold draw and one bag on all rows did — the routing threshold rests on that order."""
    x, wrong = _decisions_that_fail(seed=3)
    train, test = slice(0, 900), slice(900, None)
    fits = [cross_fitted_predictor(x[train], wrong[train], seed=s, epochs=30) for s in (0, 1)]
    for oof, model in fits:
        assert oof.shape == (900,) and auroc(wrong[train], oof) > 0.75
        assert auroc(wrong[test], model.predict(x[test])) > 0.8
        assert model.info["members"] == 5 * CROSS_FIT_MEMBERS == model.w1.shape[1] // 64
        assert model.info["repeats"] == CROSS_FIT_REPEATS > 1
    once = [(cross_fit_failure(x[train], wrong[train], seed=s, epochs=30),
             fit_failure_predictor(x[train], wrong[train], seed=s, epochs=30)) for s in (0, 1)]
    assert _spearman(fits[0][0], fits[1][0]) > _spearman(once[0][0], once[1][0])
    assert (_spearman(fits[0][1].predict(x[test]), fits[1][1].predict(x[test]))
            > _spearman(once[0][1].predict(x[test]), once[1][1].predict(x[test])))


def test_a_bag_of_mlps_is_one_mlp_whose_logit_is_the_members_mean() -> None:
    """Each member standardises with its own training share's statistics; the bag, kept as one wider MLP, gives
    exactly the members' mean logit. Members differ (their own validation share, weights and batch order), and
    the first is the single MLP the same seed fits."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((400, 6)) * [1.0, 3.0, 0.2, 1.0, 5.0, 1.0] + [0.0, 2.0, -1.0, 0.0, 10.0, 0.0]
    wrong = (rng.random(400) < 1 / (1 + np.exp(-(x[:, 1] - 2.0)))).astype(int)
    members = [fit_failure_predictor(x, wrong, seed=7 + 1000 * m, epochs=20, members=1) for m in range(3)]
    bag = fit_failure_predictor(x, wrong, seed=7, epochs=20, members=3)
    logits = np.array([m.logit(x) for m in members])
    assert np.ptp(logits, axis=0).max() > 0.05  # the members are not copies of one another
    np.testing.assert_allclose(bag.logit(x), logits.mean(axis=0), atol=1e-4)
    assert bag.w1.shape == (6, 3 * 64) and bag.info["members"] == 3
    np.testing.assert_allclose(merged(members[:1], {}).logit(x), logits[0], atol=1e-4)


def test_baselines_rank_by_closeness_to_the_decision_boundary() -> None:
    z = np.array([-6.0, -0.5, 0.1, 5.0])
    q = np.tile([[0.7, 0.3]], (4, 1))
    scores = baseline_scores(z, q, _unit(np.ones((4, 3))), _unit(np.eye(3)))
    for name in ("msp", "margin", "entropy", "doctor"):
        assert scores[name][1] > scores[name][0] and scores[name][2] > scores[name][3], name
    assert set(scores) == {"msp", "margin", "entropy", "mcm", "doctor", "energy"}


def test_ood_detector_flags_what_is_far_from_every_reference() -> None:
    rng = np.random.default_rng(0)
    centre = _unit(rng.standard_normal(64))
    refs = _unit(centre + 0.05 * rng.standard_normal((300, 64)))
    ood = fit_ood(refs)
    near = _unit(centre + 0.05 * rng.standard_normal((200, 64)))
    far = _unit(rng.standard_normal((50, 64)))
    assert (ood.distance(near) > ood.threshold).mean() < 0.02
    assert (ood.distance(far) > ood.threshold).all()


def test_ood_always_goes_to_review_and_the_audit_samples_its_share() -> None:
    sure = Uncertainty(0.01, "learned")
    assert review_route(Uncertainty(0.0, "learned", ood=True), 0.5, 0.99, 0.0) == "ood"
    assert review_route(Uncertainty(0.9, "learned"), 0.5, 0.99, 0.0) == "uncertain"
    draws = np.random.default_rng(0).random(20_000)
    routed = [review_route(sure, 0.5, float(d), 0.05) for d in draws]
    assert routed.count("sampled") / len(routed) == pytest.approx(0.05, abs=0.01)
    assert set(routed) == {"sampled", None}


def test_neighbours_say_when_the_labelled_frames_around_a_decision_disagree_with_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    good = rng.standard_normal((60, 8)) + 2.0
    bad = rng.standard_normal((60, 8)) - 2.0
    index = NeighbourIndex.build(np.vstack([good, bad]), np.r_[np.zeros(60), np.ones(60)])
    probe = np.vstack([good[:5] + 0.01, bad[:5] + 0.01])
    right = index.features(probe, np.r_[np.zeros(5), np.ones(5)] > 0)
    wrong = index.features(probe, np.r_[np.ones(5), np.zeros(5)] > 0)
    assert (right[:, 0] < 0.3).all() and (wrong[:, 0] > 0.7).all()
    assert (right[:, 1] > wrong[:, 1]).all(), "trust is higher for the decision its neighbours agree with"
    loo = index.features(np.vstack([good, bad]), np.r_[np.zeros(60), np.ones(60)] > 0, leave_one_out=True)
    assert loo.shape == (120, 2) and (loo[:, 0] < 0.5).mean() > 0.9
    index.save(tmp_path / "n.npz")
    np.testing.assert_allclose(NeighbourIndex.load(tmp_path / "n.npz").features(probe, right[:, 0] < 2),
                               index.features(probe, right[:, 0] < 2), atol=2e-2)


def test_msp_fallback_is_a_calibrated_max_softmax() -> None:
    rng = np.random.default_rng(0)
    msp = rng.random(3000) * 0.5
    wrong = (rng.random(3000) < 0.8 * msp).astype(int)
    features = np.zeros((3000, 5 + len(TAIL)))
    features[:, len(features[0]) - len(TAIL) + TAIL.index("msp")] = msp
    model = fit_msp_predictor(features, wrong)
    p = model.predict(features)
    assert auroc(wrong, p) == pytest.approx(auroc(wrong, msp))
    assert abs(p.mean() - wrong.mean()) < 0.01, "calibrated: mean p(wrong) = the error rate"


def test_msp_fallback_never_ranks_against_max_softmax() -> None:
    rng = np.random.default_rng(1)
    msp = rng.random(40) * 0.5
    wrong = (msp < 0.1).astype(int)  # by chance, here the surest decisions were the wrong ones
    features = np.zeros((40, len(TAIL)))
    features[:, TAIL.index("msp")] = msp
    p = fit_msp_predictor(features, wrong).predict(features)
    assert auroc(msp > 0.25, p) == 1.0, "still ranked by max-softmax"
    assert abs(p.mean() - wrong.mean()) < 0.02
