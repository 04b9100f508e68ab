"""Fit the decision, the failure predictor, the routing threshold and the OoD detector from labelled frame rows.

One labelled frame is one row: the classifier head's feature vector (`edge.grounding.head.frame_features`: g, the
pooled patch embedding per stride, and the anomaly map's max / top-2 % / mean and the global zero-shot score), its
label (1 = defect), the defect class when someone named it, and where it came from (`calibrate`, or the station
frame id of a review). `lineside calibrate` makes the first rows from held-out good and labelled defect images;
`lineside train` adds the station's reviewed frames and refits (`refit`), so every version keeps its rows
(`rows.npz`) and the next training starts from them without re-encoding anything.

`refit`, on a profile whose memory bank and patch statistics are already set:
1. the fused frame score's threshold (best accuracy at the line's defect rate, `profile.defect_rate`; balanced
   accuracy when the rate is not known) and, with ≥ 2 frames of each label, the classifier head (out-of-fold
   predictions kept), used where its out-of-fold accuracy so weighted is at least the fused score's;
2. each row's *out-of-fold* decision (the head's k-fold prediction, so its errors look like the errors on new
   frames) and whether that decision was wrong;
3. the failure predictor (edge.uncertainty.failure) on those decisions, cross-fitted so that every row also gets
   an out-of-fold p(wrong);
4. the routing threshold from those out-of-fold p(wrong): policy `risk` (error rate among auto-decided frames ≤ α
   with confidence 1 − δ, Clopper–Pearson, fixed-sequence) or `budget` (at most b of frames to review);
5. the OoD detector from the rows' global embeddings.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edge.grounding.head import FRAME_SCORE_COLUMNS, best_threshold, fit_head_with_oof, logit
from edge.profile.profile import LineProfile
from edge.stats import auroc
from edge.uncertainty.failure import (
    NEIGHBOUR_NAMES,
    FailurePredictor,
    NeighbourIndex,
    baseline_scores,
    cross_fit_failure,
    decision_scalars,
    failure_features,
    fit_failure_predictor,
    fit_msp_predictor,
    fit_ood,
)
from edge.uncertainty.risk import budget_threshold, risk_threshold
from edge.vlm.prompts import TextBank

log = logging.getLogger(__name__)
Policy = Literal["risk", "budget"]
MIN_WRONG_FOR_PREDICTOR = 8  # fewer failures than this: nothing to learn from, keep the baseline uncertainty
MIN_WRONG_FOR_MLP = 30  # fewer out-of-fold failures than this: calibrated max-softmax, no MLP
MLP_MIN_GAIN = 0.01  # an MLP's out-of-fold failure AUROC must beat calibrated max-softmax's by this much
MIN_OOD_REFERENCES = 30  # fewer labelled frames than this say too little about what the line looks like


@dataclass(frozen=True)
class RoutingSpec:
    policy: Policy = "risk"
    alpha: float = 0.01
    delta: float = 0.1
    budget: float = 0.2

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1 or not 0 < self.delta < 1 or not 0 <= self.budget <= 1:
            raise ValueError(f"routing: alpha and delta must be in (0, 1) and budget in [0, 1], got {self}")


@dataclass
class LabelledRows:
    features: np.ndarray  # [N, d] float32 frame_features rows
    labels: np.ndarray  # [N] 1 = defect
    classes: list[str] = field(default_factory=list)  # operator's defect class ("" = not named)
    sources: list[str] = field(default_factory=list)  # "review:<frame id>"; "" for calibration images

    def __post_init__(self) -> None:
        n = self.labels.size
        self.classes = self.classes or [""] * n
        self.sources = self.sources or [""] * n
        if self.features.shape[0] != n or len(self.classes) != n or len(self.sources) != n:
            raise ValueError("labelled rows: features, labels, classes and sources differ in length")

    def __len__(self) -> int:
        return int(self.labels.size)

    def extend(self, other: LabelledRows) -> LabelledRows:
        """These rows plus `other`'s, skipping sources already present (a frame reviewed twice counts once, with
        its latest label)."""
        latest = {s: i for i, s in enumerate(other.sources) if s}
        keep = [i for i, s in enumerate(self.sources) if not s or s not in latest]
        return LabelledRows(np.concatenate([self.features[keep], other.features]),
                            np.concatenate([self.labels[keep], other.labels]),
                            [self.classes[i] for i in keep] + other.classes,
                            [self.sources[i] for i in keep] + other.sources)

    def save(self, path: Path) -> None:
        np.savez_compressed(path, features=self.features.astype(np.float16), labels=self.labels.astype(np.int8),
                            classes=np.array(self.classes, dtype=str), sources=np.array(self.sources, dtype=str))

    @classmethod
    def load(cls, path: Path) -> LabelledRows:
        with np.load(path) as npz:
            return cls(npz["features"].astype(np.float32), npz["labels"].astype(np.int64),
                       [str(c) for c in npz["classes"]], [str(s) for s in npz["sources"]])


@dataclass(frozen=True)
class RowParts:
    g: np.ndarray  # [N, D]
    pooled: list[np.ndarray]  # per stride [N, D]
    map_stats: np.ndarray  # [N, 3]
    global_score: np.ndarray  # [N]


def split_rows(features: np.ndarray, dim: int) -> RowParts:
    """The parts of frame_features rows: g, pooled patches per stride, map stats, global score."""
    x = np.atleast_2d(features)
    n_strides = (x.shape[1] - 4) // dim - 1
    if x.shape[1] != dim * (n_strides + 1) + 4:
        raise ValueError(f"frame feature rows of width {x.shape[1]} do not fit embedding dim {dim}")
    return RowParts(x[:, :dim], [x[:, dim * (i + 1):dim * (i + 2)] for i in range(n_strides)], x[:, -4:-1], x[:, -1])


def global_class_probs(g: np.ndarray, text: TextBank, logit_scale: float) -> np.ndarray:
    """[N, C − 1]: the defect-class split of each frame from its global embedding."""
    logits = logit_scale * (np.atleast_2d(g) @ text.class_embeddings[1:].T)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def features_for_failure(parts: RowParts, z: np.ndarray, text: TextBank, logit_scale: float,
                         neighbours: np.ndarray) -> np.ndarray:
    """Failure-predictor inputs of N decisions with margins z (> 0 = defect) and their neighbourhood features."""
    q = global_class_probs(parts.g, text, logit_scale)
    predicted = np.where(z > 0, 1 + q.argmax(axis=1), 0)
    scalars = decision_scalars(z, parts.map_stats, parts.global_score, q)
    return failure_features(parts.g, parts.pooled, predicted, text.class_embeddings, logit_scale, scalars,
                            neighbours)


@dataclass(frozen=True)
class RowAssessment:
    """What the profile says about N decisions beyond the verdict: the classical scores, the learned p(wrong)
    (None without a predictor) and the OoD distance (None without a detector)."""

    baselines: dict[str, np.ndarray]
    p_wrong: np.ndarray | None
    ood_distance: np.ndarray | None


def assess_rows(profile: LineProfile, rows: np.ndarray, z: np.ndarray, text: TextBank, logit_scale: float,
                dim: int) -> RowAssessment:
    """The uncertainty side of N decisions with margins z, from their feature rows (the daemon's per-frame path
    and the evaluation's replay both come through here)."""
    rows = np.atleast_2d(rows)
    z = np.atleast_1d(np.asarray(z, np.float64))
    parts = split_rows(rows, dim)
    baselines = baseline_scores(z, global_class_probs(parts.g, text, logit_scale), parts.g, text.class_embeddings)
    p_wrong = None
    if profile.failure is not None:
        near = (profile.neighbours.features(rows, z > 0) if profile.neighbours is not None
                else np.zeros((rows.shape[0], len(NEIGHBOUR_NAMES)), np.float32))
        p_wrong = profile.failure.predict(features_for_failure(parts, z, text, logit_scale, near))
    ood = profile.ood.distance(parts.g) if profile.ood is not None else None
    return RowAssessment(baselines, p_wrong, ood)


def decision_margins(profile: LineProfile, rows: np.ndarray, dim: int) -> np.ndarray:
    """z of the profile's good/defect decision for feature rows (> 0 = defect), as the daemon decides: the head
    where it is in use, else the fused frame score."""
    if profile.head is not None and profile.use_head:
        return np.asarray(logit(profile.head.predict(rows)) - logit(profile.head.threshold), np.float64)
    return np.asarray(fused_margin(profile, split_rows(rows, dim)), np.float64)


def fused_margin(profile: LineProfile, parts: RowParts) -> np.ndarray:
    """z of the fused frame score (no head) for every row."""
    scores = np.array([profile.frame_score(float(m), float(g))[0]
                       for m, g in zip(parts.map_stats[:, 0], parts.global_score, strict=True)])
    thr = profile.frame_threshold if profile.frame_threshold is not None else profile.anomaly_threshold
    return (scores - thr) / max(profile.frame_scale or profile.anomaly_scale, 1e-6)


def refit(profile: LineProfile, rows: LabelledRows, text: TextBank, logit_scale: float, dim: int,
          routing: RoutingSpec | None = None, seed: int = 0, fit_classifier: bool = True) -> dict[str, Any]:
    """Refit `profile` in place from `rows` (steps 1–5 of the module docstring); returns metrics for the record."""
    routing = routing or RoutingSpec()
    parts = split_rows(rows.features, dim)
    y = rows.labels.astype(int)
    n_bad, n_good = int(y.sum()), int((1 - y).sum())
    metrics: dict[str, Any] = {"rows": len(rows), "rows_defect": n_bad, "rows_good": n_good}
    profile.head, profile.failure, profile.routing, profile.neighbours, profile.ood = None, None, None, None, None
    if n_bad and n_good and profile.frame_stats and profile.frame_threshold is not None:
        good_frame = np.array([profile.frame_score(float(m), float(g))[0] for m, g in
                               zip(parts.map_stats[y == 0, 0], parts.global_score[y == 0], strict=True)])
        bad_frame = np.array([profile.frame_score(float(m), float(g))[0] for m, g in
                              zip(parts.map_stats[y == 1, 0], parts.global_score[y == 1], strict=True)])
        profile.frame_threshold, balanced = best_threshold(good_frame, bad_frame, profile.defect_rate)
        metrics["fused_balanced_accuracy"] = balanced
    else:
        balanced = float("nan")
    z = fused_margin(profile, parts)
    if fit_classifier and n_bad >= 2 and n_good >= 2:
        head, oof = fit_head_with_oof(rows.features, y, seed=seed, defect_rate=profile.defect_rate,
                                      stack_columns=FRAME_SCORE_COLUMNS)
        profile.head = head
        # keep the head only where it beats the fused score on these frames (its out-of-fold balanced accuracy
        # against the fused score's in-sample one, which flatters the fused score)
        profile.use_head = math.isnan(balanced) or head.cv_accuracy >= balanced
        metrics.update(head_cv_accuracy=head.cv_accuracy, head_l2=head.l2, head_in_use=profile.use_head)
        if profile.use_head:
            z = logit(oof) - logit(head.threshold)
    wrong = ((z > 0).astype(int) != y).astype(int)
    metrics.update(oof_accuracy=round(1 - float(wrong.mean()), 4), oof_wrong=int(wrong.sum()))
    if len(rows) >= MIN_OOD_REFERENCES:
        profile.ood = fit_ood(parts.g, seed=seed)
        metrics["ood_threshold"] = profile.ood.threshold
    if wrong.sum() < MIN_WRONG_FOR_PREDICTOR or (1 - wrong).sum() < MIN_WRONG_FOR_PREDICTOR:
        metrics["failure_predictor"] = f"not fit: {int(wrong.sum())} wrong of {len(rows)} out-of-fold decisions"
        return metrics
    profile.neighbours = NeighbourIndex.build(rows.features, y)
    near = profile.neighbours.features(rows.features, z > 0, leave_one_out=True)
    features = features_for_failure(parts, z, text, logit_scale, near)
    # keep the inputs that rank this line's failures best out of fold: all of them, the compact scalars and
    # neighbourhood, or calibrated max-softmax alone. An MLP needs failures to learn from and must beat max-softmax
    # by MLP_MIN_GAIN (measured: from 83 rows — 50 + 50 ELPV cells, 18 failures — the full MLP learned noise, test
    # failure AUROC 0.47 against MSP's 0.74, and the out-of-fold comparison between candidates was noise too)
    candidates: dict[str, tuple[np.ndarray, Callable[[], FailurePredictor]]] = {
        "msp": (cross_fit_failure(features, wrong, seed=seed, fit=fit_msp_predictor),
                lambda: fit_msp_predictor(features, wrong))}
    if wrong.sum() >= MIN_WRONG_FOR_MLP and (1 - wrong).sum() >= MIN_WRONG_FOR_MLP:
        candidates["full"] = (cross_fit_failure(features, wrong, seed=seed),
                              lambda: fit_failure_predictor(features, wrong, seed=seed))
        candidates["compact"] = (cross_fit_failure(features, wrong, seed=seed, inputs="compact"),
                                 lambda: fit_failure_predictor(features, wrong, seed=seed, inputs="compact"))
    oof_auroc = {name: round(auroc(wrong, oof), 4) for name, (oof, _) in candidates.items()}
    chosen = max(candidates, key=lambda name: oof_auroc[name] - (MLP_MIN_GAIN if name != "msp" else 0.0))
    oof_wrong = candidates[chosen][0]
    profile.failure = candidates[chosen][1]()
    # the decision's own max-softmax over good/defect, 1 − σ(|z|), ranks exactly as −|z|
    metrics.update(failure_oof_auroc_by_inputs=oof_auroc, failure_inputs=chosen,
                   failure_oof_auroc_msp=round(auroc(wrong, -np.abs(z)), 4))
    if routing.policy == "risk":
        cal = risk_threshold(oof_wrong, wrong, routing.alpha, routing.delta)
        threshold, calibration = cal.threshold, cal.as_dict()
    else:
        threshold = budget_threshold(oof_wrong, routing.budget)
        calibration = {"n": len(rows), "routed": int((oof_wrong > threshold).sum())}
    profile.routing = {"policy": routing.policy, "alpha": routing.alpha, "delta": routing.delta,
                       "budget": routing.budget, "threshold": float(threshold), "calibration": calibration}
    metrics.update(failure_oof_auroc=round(auroc(wrong, oof_wrong), 4), failure_info=profile.failure.info,
                   routing=profile.routing)
    return metrics
