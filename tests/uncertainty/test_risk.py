"""Risk control: the bound is the exact binomial one, and a threshold picked with it keeps its promise."""

import numpy as np
import pytest

from edge.stats import aurc, empirical_risk_threshold, fpr_at_tpr, risk_coverage
from edge.uncertainty.risk import (
    budget_threshold,
    clopper_pearson,
    risk_threshold,
    risk_upper_bound,
    smallest_provable_set,
)


@pytest.mark.parametrize(("errors", "n"), [(0, 100), (3, 100), (10, 50), (1, 1000), (49, 50)])
def test_clopper_pearson_matches_the_beta_quantiles(errors: int, n: int) -> None:
    beta = pytest.importorskip("scipy.stats").beta
    lower, upper = clopper_pearson(errors, n, 0.95)
    assert lower == pytest.approx(beta.ppf(0.025, errors, n - errors + 1) if errors else 0.0, abs=1e-6)
    assert upper == pytest.approx(beta.ppf(0.975, errors + 1, n - errors), abs=1e-6)
    assert risk_upper_bound(errors, n, 0.1) == pytest.approx(beta.ppf(0.9, errors + 1, n - errors), abs=1e-6)


def _stream(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Decisions whose true error probability is known: p(wrong | u) = 0.3 · u²."""
    u = rng.random(n)
    return u, rng.random(n) < 0.3 * u ** 2


def _calibrate_streams(seed: int, draws: int, n: int, alpha: float, delta: float) -> tuple[float, float]:
    """(share of draws whose threshold's true risk exceeds α, mean coverage) over `draws` streams of n frames; the
    true risk of accepting u ≤ t is 0.1 · t² (the mean of 0.3 u² over [0, t])."""
    rng = np.random.default_rng(seed)
    violations, coverages = 0, []
    for _ in range(draws):
        cal = risk_threshold(*_stream(rng, n), alpha, delta)
        assert cal.accepted == 0 or cal.upper_bound <= alpha
        violations += 0.1 * min(cal.threshold, 1.0) ** 2 > alpha
        coverages.append(cal.coverage)
    return violations / draws, float(np.mean(coverages))


def test_risk_threshold_keeps_the_error_rate_below_alpha_with_confidence() -> None:
    violated, coverage = _calibrate_streams(0, 200, 2000, alpha=0.03, delta=0.1)  # α reached at t ≈ 0.548
    assert violated <= 0.1, "the guarantee: P(risk > α) ≤ δ"
    assert 0.25 < coverage < 0.548, "useful coverage, below the oracle's"


def test_a_few_hundred_labelled_frames_already_decide_some_frames_alone() -> None:
    """A line that has just been set up has a few hundred labelled frames: the threshold must already let the
    surest decide themselves, and still keep the promise."""
    violated, coverage = _calibrate_streams(1, 300, 300, alpha=0.05, delta=0.1)  # α reached at t ≈ 0.707
    assert violated <= 0.1
    # measured: 0.34 (the oracle 0.71); a Bonferroni-corrected binary search decided 0.04 of these frames
    assert coverage > 0.25


def test_the_scan_keeps_its_promise_when_every_set_is_just_over_alpha() -> None:
    """Every frame wrong with probability a little above α: any set that is accepted breaks the promise, so the
    scan may accept one in at most δ of the draws — its first test alone carries the whole δ."""
    rng = np.random.default_rng(2)
    alpha, delta = 0.05, 0.1
    accepted = sum(risk_threshold(rng.random(600), rng.random(600) < alpha * 1.2, alpha, delta).accepted > 0
                   for _ in range(400))
    assert accepted / 400 <= delta


@pytest.mark.parametrize(("alpha", "delta"), [(0.01, 0.1), (0.05, 0.1), (0.05, 0.05), (0.2, 0.01)])
def test_the_smallest_provable_set_is_the_first_whose_clean_bound_passes(alpha: float, delta: float) -> None:
    n = smallest_provable_set(alpha, delta)
    assert risk_upper_bound(0, n, delta) <= alpha < risk_upper_bound(0, n - 1, delta)
    u = np.linspace(0, 1, n - 1)  # one frame too few: nothing can be vouched for, even with no error at all
    assert risk_threshold(u, np.zeros(u.size, bool), alpha, delta).accepted == 0
    u = np.linspace(0, 1, n)
    assert risk_threshold(u, np.zeros(u.size, bool), alpha, delta).accepted == n


def test_tied_uncertainties_are_accepted_or_reviewed_together() -> None:
    u = np.repeat(np.arange(10.0), 50)  # ten groups of 50 tied values
    wrong = np.zeros(u.size, bool)
    wrong[-3:] = True
    cal = risk_threshold(u, wrong, 0.05, 0.1)
    assert cal.accepted % 50 == 0 and cal.accepted == 500 and cal.errors == 3
    wrong = np.zeros(u.size, bool)
    wrong[120] = True  # in the third group: its 50 tied frames stand or fall with it
    assert risk_threshold(u, wrong, 0.05, 0.1).clean_run == 100


def test_risk_threshold_reviews_everything_when_no_threshold_is_safe() -> None:
    u = np.linspace(0, 1, 50)
    cal = risk_threshold(u, np.ones(50, bool), alpha=0.01)
    assert cal.accepted == 0 and (u > cal.threshold).all()


def test_budget_threshold_sends_at_most_the_budget() -> None:
    u = np.random.default_rng(1).random(1001)
    for budget in (0.0, 0.05, 0.2, 1.0):
        t = budget_threshold(u, budget)
        assert (u > t).mean() <= budget + 1e-12
        assert (u > t).mean() >= budget - 2 / u.size
    ties = np.r_[np.zeros(90), np.ones(10)]
    assert (ties > budget_threshold(ties, 0.05)).mean() <= 0.05


def test_selective_metrics_on_a_perfect_and_a_useless_scorer() -> None:
    wrong = np.r_[np.zeros(90), np.ones(10)].astype(int)
    perfect = wrong + np.linspace(0, 0.5, 100)
    coverage, risk = risk_coverage(perfect, wrong)
    assert risk[89] == 0 and coverage[89] == pytest.approx(0.9)
    assert aurc(perfect, wrong) < aurc(-perfect, wrong)
    assert fpr_at_tpr(wrong, perfect) == 0.0
    assert empirical_risk_threshold(perfect, wrong, 0.0) == pytest.approx(perfect[89])
