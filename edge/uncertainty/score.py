"""Uncertainty, first version: how likely is this frame's decision wrong, as one number in [0, 1].

Four signals over the class scores p (good + defect classes) and the anomaly score s with threshold τ:
max-softmax (1 − max p)/(1 − 1/K), margin 1 − (p₁ − p₂), normalised entropy H(p)/log K, and closeness to the threshold
exp(−|s − τ| / σ) with σ the spread of good frames' scores. Their mean is the uncertainty. The learned failure
predictor (ViLU) replaces this behind the same `Scorer` seam in a later issue.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Uncertainty:
    value: float
    msp: float
    margin: float
    entropy: float
    threshold_closeness: float

    def as_dict(self) -> dict[str, float]:
        return {"uncertainty": self.value, "msp": self.msp, "margin": self.margin, "entropy": self.entropy,
                "threshold_closeness": self.threshold_closeness}


class Scorer(Protocol):
    def __call__(self, class_scores: dict[str, float], anomaly_score: float, threshold: float,
                 scale: float) -> Uncertainty: ...


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
    return Uncertainty(min(max(value, 0.0), 1.0), top1, top1 - top2, entropy, closeness)


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
