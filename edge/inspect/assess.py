"""What the profile says about decisions beyond the verdict, from their frame feature rows: the baseline scores, the
learned p(wrong) and the OoD distance (`assess_rows`), and the decision's margin z (`decision_margins`).

The daemon's per-frame path (edge.inspect.inspector), the fitting (edge.fit.refit) and the evaluation's replay all
come through here, so a row is judged the same way wherever it is judged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.grounding.classifier import logit
from edge.profile.line_profile import LineProfile
from edge.uncertainty.failure import NEIGHBOUR_NAMES, baseline_scores, decision_scalars, failure_features
from edge.vlm.prompts import TextBank


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
