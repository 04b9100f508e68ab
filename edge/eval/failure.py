"""Failure prediction and risk-controlled routing on one evaluated set (their figures in `lineside eval`).

The decisions are the daemon's (good vs defect from `Inspector.inspect_embedding`); a decision is *wrong* when
it disagrees with the label at the good/defect level. Every scorer ranks the same decisions:
- `failure.<scorer>.auroc` / `.fpr95`: how well the scorer separates wrong from right decisions (FPR at 95 % TPR,
  wrong = positive);
- `failure.aurc`: area under the risk–coverage curve of the learned predictor (per scorer in `aurc_by_scorer`);
- `routing.coverage_at_1pct` / `_5pct`: the test split is cut at random into a calibration half and a test half
  (`SPLITS` times, seeded); on the calibration half the largest threshold with selective risk ≤ α is chosen, and
  the coverage it gives on the test half is averaged (its realised risk too);
- `routing.alpha`, `routing.delta`, `routing.realised_risk`, `routing.coverage`: the line profile's own threshold
  (calibrated at `lineside calibrate` on out-of-fold decisions with the Clopper–Pearson bound) applied to the whole
  test split — what the daemon would have done;
- `routing.bounded`: the same bound recalibrated on each calibration half, with the share of splits whose test risk
  stayed ≤ α (the guarantee says ≥ 1 − δ).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edge.eval import plots
from edge.stats import aurc, auroc, empirical_risk_threshold, fpr_at_tpr, reliability, risk_coverage
from edge.uncertainty.failure import BASELINES
from edge.uncertainty.risk import risk_threshold

SCORERS = ("learned", *BASELINES)
SPLITS = 100
ALPHAS = (0.01, 0.05)


def _split_halves(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    order = rng.permutation(n)
    return order[: n // 2], order[n // 2:]


def routing_by_splits(uncertainty: np.ndarray, wrong: np.ndarray, alpha: float, seed: int,
                      delta: float | None = None) -> dict[str, float]:
    """Mean test coverage / risk over random calibration–test halves, threshold chosen on the calibration half
    (empirically, or with the Clopper–Pearson bound when `delta` is given)."""
    rng = np.random.default_rng(seed)
    coverages, risks, held = [], [], []
    for _ in range(SPLITS):
        cal, test = _split_halves(wrong.size, rng)
        if delta is None:
            t = empirical_risk_threshold(uncertainty[cal], wrong[cal], alpha)
        else:
            t = risk_threshold(uncertainty[cal], wrong[cal], alpha, delta).threshold
        accepted = uncertainty[test] <= t
        coverages.append(float(accepted.mean()))
        risk = float(wrong[test][accepted].mean()) if accepted.any() else 0.0
        risks.append(risk)
        held.append(risk <= alpha)
    return {"coverage": round(float(np.mean(coverages)), 4), "risk": round(float(np.mean(risks)), 4),
            "risk_within_alpha_share": round(float(np.mean(held)), 4)}


def failure_figures(truth: np.ndarray, decided_defect: np.ndarray, scores: dict[str, np.ndarray],
                    profile_routing: dict[str, Any] | None, out: Path, name: str, seed: int) -> dict[str, Any]:
    """Figures for one set; `scores` maps scorer → uncertainty per decision (higher = more likely wrong)."""
    wrong = (np.asarray(truth, int) != np.asarray(decided_defect, int)).astype(int)
    present = [s for s in SCORERS if s in scores]
    figures: dict[str, Any] = {"n": int(wrong.size), "wrong": int(wrong.sum()),
                               "accuracy": round(1 - float(wrong.mean()), 4)}
    failure: dict[str, Any] = {s: {"auroc": round(auroc(wrong, scores[s]), 4),
                                   "fpr95": round(fpr_at_tpr(wrong, scores[s]), 4)} for s in present}
    failure["aurc_by_scorer"] = {s: round(aurc(scores[s], wrong), 4) for s in present}
    main = "learned" if "learned" in scores else "msp"
    failure["aurc"] = failure["aurc_by_scorer"][main]
    failure["scorer"] = main
    failure["reliability"] = reliability(scores[main], wrong) if main == "learned" else None
    figures["failure"] = failure
    routing: dict[str, Any] = {"scorer": main, "splits": SPLITS}
    for alpha in ALPHAS:
        key = f"{round(alpha * 100)}pct"
        by = routing_by_splits(scores[main], wrong, alpha, seed)
        routing[f"coverage_at_{key}"] = by["coverage"]
        routing[f"risk_at_{key}"] = by["risk"]
        routing[f"coverage_at_{key}_by_scorer"] = {
            s: routing_by_splits(scores[s], wrong, alpha, seed)["coverage"] for s in present}
    if profile_routing:
        alpha, delta = float(profile_routing["alpha"]), float(profile_routing["delta"])
        accepted = scores[main] <= float(profile_routing["threshold"])
        routing.update(policy=profile_routing["policy"], alpha=alpha, delta=delta,
                       threshold=round(float(profile_routing["threshold"]), 6),
                       coverage=round(float(accepted.mean()), 4),
                       realised_risk=round(float(wrong[accepted].mean()), 4) if accepted.any() else 0.0,
                       bounded=routing_by_splits(scores[main], wrong, alpha, seed, delta))
    figures["routing"] = routing
    curves = {}
    for s in present:
        cov, risk = risk_coverage(scores[s], wrong)
        curves[s] = (cov, risk, f"AURC {failure['aurc_by_scorer'][s]:.3f}")
    plots.lines_png(curves, f"{name}: selective risk vs coverage", "coverage", out / f"risk_coverage_{name}.png",
                    y_max=max(0.05, float(wrong.mean()) * 1.2))
    if failure["reliability"] is not None:
        rel = failure["reliability"]
        plots.lines_png({"learned p(wrong)": (np.array(rel["predicted"]), np.array(rel["observed"]),
                                              f"ECE {rel['ece'][0]:.3f}")},
                        f"{name}: reliability of p(wrong)", "predicted p(wrong)", out / f"reliability_{name}.png",
                        diagonal=True, markers=True)
    return figures
