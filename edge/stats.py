"""Statistics that fitting, the runtime and the evaluation share, in plain numpy (the runtime carries no
scikit-learn): ROC/AUROC, accuracy, FPR at a TPR, risk–coverage, calibration bins."""

from __future__ import annotations

import numpy as np


def sigmoid(z: np.ndarray) -> np.ndarray:
    """σ(z) = 1 / (1 + e^−z), clipped so that no exp overflows."""
    return np.asarray(1.0 / (1.0 + np.exp(-np.clip(z, -50, 50))))


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false-positive rate, true-positive rate) at every distinct score, from (0, 0) to (1, 1)."""
    labels = np.asarray(labels, bool).ravel()
    scores = np.asarray(scores, np.float64).ravel()
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], labels[order]
    last_of_tie = np.r_[np.nonzero(np.diff(s))[0], y.size - 1]
    tps = np.cumsum(y)[last_of_tie]
    fps = (last_of_tie + 1) - tps
    pos, neg = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    return np.r_[0.0, fps / neg], np.r_[0.0, tps / pos]


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve = P(score of a positive > score of a negative), ties counted half (Mann–Whitney)."""
    labels = np.asarray(labels, bool).ravel()
    scores = np.asarray(scores, np.float64).ravel()
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(scores.size, np.float64)
    # average ranks over ties
    starts = np.r_[0, np.nonzero(np.diff(sorted_scores))[0] + 1]
    ends = np.r_[starts[1:], scores.size]
    avg = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(avg, ends - starts)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def accuracy(truth: np.ndarray, predicted: np.ndarray) -> float:
    truth, predicted = np.asarray(truth), np.asarray(predicted)
    return float((truth == predicted).mean()) if truth.size else float("nan")


def fpr_at_tpr(labels: np.ndarray, scores: np.ndarray, tpr_target: float = 0.95) -> float:
    """False-positive rate at the first threshold whose true-positive rate reaches `tpr_target` (FPR@95 % TPR)."""
    fpr, tpr = roc_curve(labels, scores)
    return float(fpr[int(np.searchsorted(tpr, tpr_target, side="left"))])


def risk_coverage(uncertainty: np.ndarray, wrong: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(coverage, selective risk) when the k surest decisions are accepted, k = 1 … N."""
    order = np.argsort(np.asarray(uncertainty, np.float64), kind="mergesort")
    errors = np.cumsum(np.asarray(wrong, np.float64)[order])
    k = np.arange(1, order.size + 1)
    return k / order.size, errors / k


def aurc(uncertainty: np.ndarray, wrong: np.ndarray) -> float:
    """Area under the risk–coverage curve (lower is better; the error rate itself when the scorer is random)."""
    return float(risk_coverage(uncertainty, wrong)[1].mean()) if np.size(wrong) else float("nan")


def empirical_risk_threshold(uncertainty: np.ndarray, wrong: np.ndarray, alpha: float) -> float:
    """The largest threshold t whose accepted set (uncertainty ≤ t) has error rate ≤ α on these decisions."""
    u = np.asarray(uncertainty, np.float64)
    order = np.argsort(u, kind="mergesort")
    coverage, risk = risk_coverage(u, wrong)
    u_sorted = u[order]
    # only thresholds at the last of tied values are real thresholds
    last = np.r_[np.nonzero(np.diff(u_sorted))[0], u_sorted.size - 1]
    ok = last[risk[last] <= alpha]
    return float(u_sorted[ok.max()]) if ok.size else float(u_sorted[0]) - 1e-9


def reliability(probability: np.ndarray, outcome: np.ndarray, bins: int = 10) -> dict[str, list[float]]:
    """Mean predicted probability, observed frequency and count per equal-width bin; plus the expected calibration
    error (count-weighted |observed − predicted|)."""
    p = np.asarray(probability, np.float64)
    y = np.asarray(outcome, np.float64)
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    mean_p, freq, count = [], [], []
    for b in range(bins):
        sel = idx == b
        count.append(float(sel.sum()))
        mean_p.append(float(p[sel].mean()) if sel.any() else float("nan"))
        freq.append(float(y[sel].mean()) if sel.any() else float("nan"))
    ece = sum(c * abs(f - m) for c, f, m in zip(count, freq, mean_p, strict=True) if c) / max(p.size, 1)
    return {"predicted": mean_p, "observed": freq, "count": count, "ece": [float(ece)]}
