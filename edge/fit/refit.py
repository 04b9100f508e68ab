"""Fit the decision, the failure predictor, the routing threshold and the OoD detector from labelled frame rows.

`lineside calibrate` makes the first labelled rows (edge.profile.rows) from held-out good and labelled defect
images; `lineside train` adds the station's reviewed frames and refits (`refit`), so every version keeps its rows
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

It also lists the labels to check (`label_suspects`): the labelled frames whose out-of-fold decisions contradict
their labels most surely. A wrong label teaches the head the wrong thing, and one sure decision counted wrong among
the surest few hundred keeps the risk policy from vouching for any frame; these are where a wrong label is likeliest
(measured on the ELPV evaluation profile's 1,970 rows, seed 0, with 10 / 40 labels flipped at random: 5 / 9 of the
10 frames listed were flipped ones, where 0.5 % / 2 % of all rows were).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from edge.fit.classifier import best_threshold, fit_head_with_oof
from edge.fit.failure import cross_fit_failure, cross_fitted_predictor, fit_msp_predictor, fit_ood
from edge.grounding.classifier import FRAME_SCORE_COLUMNS, logit
from edge.inspect.assess import features_for_failure, fused_margin, split_rows
from edge.profile.line_profile import LineProfile
from edge.profile.rows import LabelledRows
from edge.stats import auroc
from edge.uncertainty.failure import FailurePredictor, NeighbourIndex
from edge.uncertainty.risk import budget_threshold, risk_threshold
from edge.vlm.prompts import TextBank

log = logging.getLogger(__name__)
Policy = Literal["risk", "budget"]
MIN_WRONG_FOR_PREDICTOR = 8  # fewer failures than this: nothing to learn from, keep the baseline uncertainty
MIN_WRONG_FOR_MLP = 30  # fewer out-of-fold failures than this: calibrated max-softmax, no MLP
MLP_MIN_GAIN = 0.01  # an MLP's out-of-fold failure AUROC must beat calibrated max-softmax's by this much
MIN_OOD_REFERENCES = 30  # fewer labelled frames than this say too little about what the line looks like
OTHER_ALPHAS = (0.005, 0.01, 0.02, 0.05, 0.1)  # risks whose coverage calibrate reports beside the chosen one
LABEL_SUSPECTS = 10  # labelled frames listed whose out-of-fold decisions contradict their labels most surely


@dataclass(frozen=True)
class RoutingSpec:
    policy: Policy = "risk"
    alpha: float = 0.01
    delta: float = 0.1
    budget: float = 0.2

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1 or not 0 < self.delta < 1 or not 0 <= self.budget <= 1:
            raise ValueError(f"routing: alpha and delta must be in (0, 1) and budget in [0, 1], got {self}")


def routing_of(profile: LineProfile) -> RoutingSpec:
    """The routing policy a version was fit for: its threshold's, else the one asked for where no threshold could
    be fit yet (too few labelled frames), else the default — so that retraining keeps the line engineer's choice."""
    asked = profile.routing or profile.metrics.get("routing_policy")
    if not asked:
        return RoutingSpec()
    return RoutingSpec(asked["policy"], float(asked["alpha"]), float(asked["delta"]), float(asked["budget"]))


def label_suspects(z: np.ndarray, labels: np.ndarray, names: Sequence[str], limit: int = LABEL_SUSPECTS
                   ) -> list[dict[str, Any]]:
    """The labelled frames whose decisions (margins z, > 0 = defect) contradict their labels, the surest first, at
    most `limit`: each frame's row, its name (a row without one: `calibration row <i>`), its label and the decision's
    margin."""
    against = np.where(np.asarray(labels) > 0, -np.asarray(z), np.asarray(z))
    order = [int(i) for i in np.argsort(-against, kind="mergesort") if against[i] > 0][:limit]
    return [{"row": i, "frame": names[i] or f"calibration row {i}", "label": "defect" if labels[i] else "good",
             "margin": round(float(against[i]), 3)} for i in order]


def refit(profile: LineProfile, rows: LabelledRows, text: TextBank, logit_scale: float, dim: int,
          routing: RoutingSpec | None = None, seed: int = 0, fit_classifier: bool = True,
          row_names: Sequence[str] | None = None) -> dict[str, Any]:
    """Refit `profile` in place from `rows` (steps 1–5 of the module docstring); returns metrics for the record.
    `row_names`: what to call each row in `label_suspects` (calibrate's image files); else the rows' sources."""
    routing = routing or RoutingSpec()
    if row_names is not None and len(row_names) != len(rows):
        raise ValueError(f"{len(row_names)} row names for {len(rows)} labelled rows")
    parts = split_rows(rows.features, dim)
    y = rows.labels.astype(int)
    n_bad, n_good = int(y.sum()), int((1 - y).sum())
    # the policy asked for, kept even where no threshold can be fit yet: `lineside train` goes on with it
    metrics: dict[str, Any] = {"rows": len(rows), "rows_defect": n_bad, "rows_good": n_good,
                               "routing_policy": asdict(routing)}
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
    metrics.update(oof_accuracy=round(1 - float(wrong.mean()), 4), oof_wrong=int(wrong.sum()),
                   label_suspects=label_suspects(z, y, rows.sources if row_names is None else row_names))
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
    candidates: dict[str, tuple[np.ndarray, FailurePredictor]] = {
        "msp": (cross_fit_failure(features, wrong, seed=seed, fit=fit_msp_predictor),
                fit_msp_predictor(features, wrong))}
    if wrong.sum() >= MIN_WRONG_FOR_MLP and (1 - wrong).sum() >= MIN_WRONG_FOR_MLP:
        for inputs in ("full", "compact"):
            oof, predictor = cross_fitted_predictor(features, wrong, seed=seed, inputs=inputs)
            candidates[inputs] = (oof, predictor)
    oof_auroc = {name: round(auroc(wrong, oof), 4) for name, (oof, _) in candidates.items()}
    chosen = max(candidates, key=lambda name: oof_auroc[name] - (MLP_MIN_GAIN if name != "msp" else 0.0))
    oof_wrong, profile.failure = candidates[chosen]
    # the decision's own max-softmax over good/defect, 1 − σ(|z|), ranks exactly as −|z|
    metrics.update(failure_oof_auroc_by_inputs=oof_auroc, failure_inputs=chosen,
                   failure_oof_auroc_msp=round(auroc(wrong, -np.abs(z)), 4))
    if routing.policy == "risk":
        cal = risk_threshold(oof_wrong, wrong, routing.alpha, routing.delta)
        threshold, calibration = cal.threshold, cal.as_dict()
        # what the same rows would vouch for at other risks: the line engineer's menu for --alpha
        metrics["coverage_by_alpha"] = {
            f"{a:g}": round(risk_threshold(oof_wrong, wrong, a, routing.delta).coverage, 4) for a in OTHER_ALPHAS}
    else:
        threshold = budget_threshold(oof_wrong, routing.budget)
        calibration = {"n": len(rows), "routed": int((oof_wrong > threshold).sum())}
    profile.routing = {"policy": routing.policy, "alpha": routing.alpha, "delta": routing.delta,
                       "budget": routing.budget, "threshold": float(threshold), "calibration": calibration}
    metrics.update(failure_oof_auroc=round(auroc(wrong, oof_wrong), 4), failure_info=profile.failure.info,
                   routing=profile.routing)
    return metrics
