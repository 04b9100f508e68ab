"""How likely is this frame's decision wrong, as one number in [0, 1], and where the frame goes.

With a learned failure predictor in the line profile (edge.uncertainty.failure) the number is its p(wrong). Without
one (a profile calibrated from good images only, or with too few errors to learn from) it is the baseline: the mean
of four signals over the class scores p (good + defect classes) and the frame score s with threshold τ —
max-softmax (1 − max p)/(1 − 1/K), margin 1 − (p₁ − p₂), normalised entropy H(p)/log K, and closeness to the
threshold exp(−|s − τ| / σ) with σ the spread of good frames' scores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

ReviewRoute = Literal["ood", "uncertain", "sampled"]


@dataclass(frozen=True, slots=True)
class Uncertainty:
    value: float  # what routing compares with its threshold
    source: str  # "learned" or "baseline"
    scores: dict[str, float] = field(default_factory=dict)  # every scorer's value on this decision
    ood_distance: float = 0.0  # cosine distance of g to the nearest reference frame of the line
    ood: bool = False  # beyond the profile's OoD threshold
    ood_threshold: float = float("nan")  # that threshold (nan: the profile has no OoD detector)

    def as_dict(self) -> dict[str, float | str | bool]:
        return {"uncertainty": self.value, "source": self.source, **self.scores, "ood_distance": self.ood_distance,
                "ood": self.ood}


def baseline_uncertainty(class_scores: dict[str, float], anomaly_score: float, threshold: float,
                         scale: float) -> Uncertainty:
    probs = sorted(class_scores.values(), reverse=True)
    top1 = probs[0]
    top2 = probs[1] if len(probs) > 1 else 0.0
    k = max(len(probs), 2)
    entropy = -sum(p * math.log(p) for p in probs if p > 0) / math.log(k)
    closeness = math.exp(-abs(anomaly_score - threshold) / max(scale, 1e-6))
    # 1 − max p ranges over [0, 1 − 1/K]: stretch it to [0, 1] like the other three
    value = ((1 - top1) / (1 - 1 / k) + (1 - (top1 - top2)) + entropy + closeness) / 4
    return Uncertainty(min(max(value, 0.0), 1.0), "baseline",
                       {"msp": 1 - top1, "margin": 1 - (top1 - top2), "entropy": entropy,
                        "threshold_closeness": closeness})


def frame_class_scores(anomaly_score: float, threshold: float, scale: float,
                       defect_probs: dict[str, float]) -> dict[str, float]:
    """p(good) from the anomaly score's distance to the threshold (logistic in units of σ); the defect mass is
    split by the defect-class probabilities."""
    z = (anomaly_score - threshold) / max(scale, 1e-6)
    p_defect = 1.0 / (1.0 + math.exp(-max(min(z, 50.0), -50.0)))
    scores = {"good": 1.0 - p_defect}
    scores.update({c: p_defect * p for c, p in defect_probs.items()})
    return scores


def route(uncertainty: float, review_threshold: float) -> bool:
    """True = send to review."""
    return uncertainty > review_threshold


def review_route(uncertainty: Uncertainty, review_threshold: float, audit_draw: float, audit_fraction: float
                 ) -> ReviewRoute | None:
    """Why a frame goes to review, or None when the daemon decides it: unlike anything the line knows (`ood`,
    always), too unsure (`uncertain`), or drawn for the audit of auto-decisions (`sampled`: `audit_draw` is a
    uniform [0, 1) number, so an `audit_fraction` of the frames the daemon would decide go to a person too)."""
    if uncertainty.ood:
        return "ood"
    if route(uncertainty.value, review_threshold):
        return "uncertain"
    if audit_draw < audit_fraction:
        return "sampled"
    return None
