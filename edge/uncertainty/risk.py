"""Risk control for routing: finite-sample bounds on the error rate among auto-decided frames.

`clopper_pearson` is the exact binomial interval. `risk_threshold` picks the uncertainty threshold below which the
daemon decides by itself so that the error rate among those frames is ≤ α with confidence 1 − δ: thresholds are
tested from the surest frames outward, each with the Clopper–Pearson upper bound, and the scan stops at the first
one that fails (fixed-sequence testing, as in Learn-then-Test: the family-wise error stays ≤ δ without a
multiplicity correction). `budget_threshold` sends at most b of the frames to review, most uncertain first.
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
    # lower: P(X ≥ errors | p) = tail, i.e. for the n − errors correct ones, P(Y ≤ n − errors | 1 − p) = tail
    lower = 0.0 if errors == 0 else 1 - _solve(lambda q: _binom_cdf(n - errors, n, q), tail)
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

    Candidates are the distinct uncertainty values, surest first; the scan stops at the first candidate that fails
    (fixed-sequence testing). With no candidate passing, the threshold is below every score: everything is reviewed."""
    u = np.asarray(uncertainty, np.float64).ravel()
    w = np.asarray(wrong, bool).ravel()
    if u.size != w.size:
        raise ValueError(f"{u.size} uncertainties but {w.size} error flags")
    order = np.argsort(u, kind="mergesort")
    u_sorted, w_sorted = u[order], w[order]
    cum_errors = np.cumsum(w_sorted)
    last_of_value = np.r_[np.nonzero(np.diff(u_sorted))[0], u_sorted.size - 1] if u.size else np.array([], int)
    best = RiskCalibration(float(u_sorted[0]) - 1e-9 if u.size else 0.0, alpha, delta, int(u.size), 0, 0, 1.0)
    for idx in last_of_value:
        accepted, errors = int(idx) + 1, int(cum_errors[idx])
        bound = risk_upper_bound(errors, accepted, delta)
        if bound > alpha:
            break
        best = RiskCalibration(float(u_sorted[idx]), alpha, delta, int(u.size), accepted, errors, bound)
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
