"""Risk control for routing: finite-sample bounds on the error rate among auto-decided frames.

`clopper_pearson` is the exact binomial interval. `risk_threshold` picks the uncertainty threshold below which the
daemon decides by itself so that the error rate among those frames is ≤ α with confidence 1 − δ: the selection
with guaranteed risk (SGR) binary search, each test a Clopper–Pearson upper bound at δ / (number of tests).
(A fixed-sequence scan from the surest frame outward would be valid without the correction, but its first tests
have one or two frames, whose bound can never be below a 1 % α: it would stop at once.)
`budget_threshold` sends at most b of the frames to review, most uncertain first.
Pure Python + numpy: the daemon and the station use these without scipy.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


def _binom_cdf(k: int, n: int, p: float) -> float:
    """P(X ≤ k) for X ~ Binomial(n, p), summed in log space (n up to ~10⁶ is fine)."""
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 1.0 if k >= n else 0.0
    log_p, log_q = math.log(p), math.log1p(-p)
    terms = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q
             for i in range(0, k + 1)]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


def _solve(fn: Callable[[float], float], target: float) -> float:
    """Bisection for the p in [0, 1] where the decreasing function fn(p) crosses target."""
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if fn(mid) > target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def clopper_pearson(errors: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided exact interval for an error rate seen as `errors` out of `n` (each side (1 − confidence)/2)."""
    if n <= 0:
        return 0.0, 1.0
    tail = (1 - confidence) / 2
    # lower: P(X ≥ errors | p) = tail, i.e. P(X ≤ errors − 1 | p) = 1 − tail (a sum of `errors` terms, not n)
    lower = 0.0 if errors == 0 else _solve(lambda p: _binom_cdf(errors - 1, n, p), 1 - tail)
    upper = 1.0 if errors >= n else _solve(lambda p: _binom_cdf(errors, n, p), tail)
    return lower, upper


def risk_upper_bound(errors: int, n: int, delta: float) -> float:
    """One-sided Clopper–Pearson upper bound: the true error rate is below it with probability ≥ 1 − δ."""
    if n <= 0:
        return 1.0
    if errors >= n:
        return 1.0
    return _solve(lambda p: _binom_cdf(errors, n, p), delta)


@dataclass(frozen=True)
class RiskCalibration:
    """The routing threshold and what the calibration split said about it."""

    threshold: float  # uncertainty ≤ threshold: decided by the daemon
    alpha: float
    delta: float
    n: int  # calibration frames
    accepted: int  # of them, decided automatically at `threshold`
    errors: int  # of those, wrong
    upper_bound: float  # (1 − δ) upper bound on the error rate among the accepted

    @property
    def coverage(self) -> float:
        return self.accepted / self.n if self.n else 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {"threshold": self.threshold, "alpha": self.alpha, "delta": self.delta, "n": self.n,
                "accepted": self.accepted, "errors": self.errors, "upper_bound": self.upper_bound,
                "coverage": self.coverage}


def risk_threshold(uncertainty: np.ndarray, wrong: np.ndarray, alpha: float, delta: float = 0.1) -> RiskCalibration:
    """The largest threshold whose accepted set (uncertainty ≤ t) has a (1 − δ) upper error bound ≤ α.

    SGR (Geifman & El-Yaniv 2017): a binary search over the sorted uncertainties, each of its ⌈log₂ N⌉ tests at
    confidence 1 − δ/⌈log₂ N⌉ (Bonferroni), so the returned threshold's bound holds with probability ≥ 1 − δ. With
    no threshold passing, it lies below every score: everything is reviewed."""
    u = np.asarray(uncertainty, np.float64).ravel()
    w = np.asarray(wrong, bool).ravel()
    if u.size != w.size:
        raise ValueError(f"{u.size} uncertainties but {w.size} error flags")
    if u.size == 0:
        return RiskCalibration(0.0, alpha, delta, 0, 0, 0, 1.0)
    order = np.argsort(u, kind="mergesort")
    u_sorted, cum_errors = u[order], np.cumsum(w[order])
    # a threshold accepts whole groups of tied values: test only at the last index of each
    last_of_value = np.r_[np.nonzero(np.diff(u_sorted))[0], u_sorted.size - 1]
    tests = max(1, math.ceil(math.log2(last_of_value.size))) if last_of_value.size > 1 else 1
    best = RiskCalibration(float(u_sorted[0]) - 1e-9, alpha, delta, int(u.size), 0, 0, 1.0)
    lo, hi = 0, last_of_value.size - 1
    for _ in range(tests):
        if lo > hi:
            break
        mid = (lo + hi + 1) // 2
        idx = int(last_of_value[mid])
        accepted, errors = idx + 1, int(cum_errors[idx])
        bound = risk_upper_bound(errors, accepted, delta / tests)
        if bound <= alpha:
            best = RiskCalibration(float(u_sorted[idx]), alpha, delta, int(u.size), accepted, errors, bound)
            lo = mid + 1
        else:
            hi = mid - 1
    return best


def budget_threshold(uncertainty: np.ndarray, budget: float) -> float:
    """The threshold that sends at most a `budget` fraction of these frames to review (uncertainty > t)."""
    u = np.sort(np.asarray(uncertainty, np.float64).ravel())
    if u.size == 0:
        return 1.0
    keep = int(math.ceil((1 - budget) * u.size))  # frames decided automatically
    if keep <= 0:
        return float(u[0]) - 1e-9
    return float(u[min(keep, u.size) - 1])
