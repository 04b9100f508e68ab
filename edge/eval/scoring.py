"""What every data set's evaluation shares: the run's context (pack, seed, output, how to fit a profile), scoring
frames through the daemon's own path with the ablation scores beside, and the binary, failure and OoD figures."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from edge.eval import plots
from edge.eval.failure import failure_figures
from edge.fit.calibrate import calibrate
from edge.grounding.anomaly import coarse_to_fine, combine, global_zero_shot_score, raw_scores, smooth
from edge.grounding.classifier import frame_features
from edge.images import read_image
from edge.inspect.inspector import Inspection, Inspector
from edge.profile.line_profile import LineProfile
from edge.progress import Progress
from edge.stats import accuracy, auroc, roc_curve
from edge.vlm.pack import ModelPack
from edge.vlm.runtime import ImageEmbedding
from edge.vlm.vocabulary import load_vocabulary

T = TypeVar("T")





@dataclass
class Scored:
    """One evaluated frame: the inspection plus the ablation scores from the same embedding."""

    truth: int  # 1 = defect
    group: str
    inspection: Inspection
    ablation: dict[str, float] = field(default_factory=dict)


@dataclass
class Context:
    pack: ModelPack
    out: Path
    seed: int
    quick: bool
    provider: str
    progress: Progress
    profiles: dict[str, str] = field(default_factory=dict)
    defect_rates: dict[str, float | None] = field(default_factory=dict)  # what each profile was told of its line
    bank_size: dict[int, int] | None = None  # memory-bank coreset size per stride (None: calibrate's default)
    search_subspace: bool = False  # calibrate's `search_subspace`: the few-shot search in fewer dimensions
    coarse_to_fine: bool = False  # calibrate's `coarse_to_fine_search`: the finest stride searched where coarse is high

    def fit(self, name: str, good: list[Path], defects: list[Path] | None = None,
            defect_rate: float | None = None) -> Inspector:
        profile_dir = self.out / "profiles" / name
        shutil.rmtree(profile_dir, ignore_errors=True)
        profile = calibrate(self.pack, load_vocabulary(), good, f"eval-{name}", profile_dir, defects=defects,
                            provider=self.provider, seed=self.seed, bank_size=self.bank_size,
                            search_subspace=self.search_subspace, coarse_to_fine_search=self.coarse_to_fine,
                            progress=lambda items, label: self.progress(list(items), label),
                            defect_rate=defect_rate)
        self.profiles[name] = f"{profile.describe()} ({profile.metrics['seconds']} s)"
        self.defect_rates[name] = None if defect_rate is None else round(defect_rate, 4)
        return Inspector(self.pack, profile, self.provider)

    def subset(self, items: list[T], n: int) -> list[T]:
        if not self.quick or len(items) <= n:
            return items
        idx = np.random.default_rng(self.seed).permutation(len(items))[:n]
        return [items[i] for i in sorted(idx)]


def ablation_scores(inspector: Inspector, emb: ImageEmbedding, inspection: Inspection) -> dict[str, float]:
    profile: LineProfile = inspector.profile
    text, scale = inspector.text_bank, inspector.pack.logit_scale
    raw = inspection.raw_scores or coarse_to_fine(
        raw_scores(emb, profile.bank, text.class_embeddings, scale, profile.search_basis), profile.patch_stats,
        profile.coarse_share)
    out = {
        "zero-shot map": float(smooth(combine(raw, profile.patch_stats, {"zero": 1.0})).max()),
        "few-shot map": float(smooth(combine(raw, profile.patch_stats, {"few": 1.0})).max()),
        "both (map)": float(inspection.anomaly_map.max()),
        "global zero-shot": global_zero_shot_score(emb.global_, text.class_embeddings, scale),
    }
    out["both + global"] = profile.frame_score(out["both (map)"], out["global zero-shot"])[0]
    if profile.head is not None:
        features = frame_features(emb, inspection.anomaly_map, out["global zero-shot"])
        out["head"] = float(profile.head.predict(features)[0])
    return out


def score_files(ctx: Context, inspector: Inspector, items: list[tuple[Path, int, str]], label: str) -> list[Scored]:
    out = []
    for path, truth, group in ctx.progress(items, label):
        bgr = read_image(path)
        emb = inspector.image_encoder.encode(bgr)
        inspection = inspector.inspect_embedding(emb, bgr)
        out.append(Scored(truth, group, inspection, ablation_scores(inspector, emb, inspection)))
    return out


def binary_figures(scored: list[Scored]) -> dict[str, Any]:
    truth = np.array([s.truth for s in scored])
    predicted = np.array([int(s.inspection.verdict != "good") for s in scored])
    score = np.array([s.inspection.anomaly_score for s in scored])
    ablation = {name: round(auroc(truth, np.array([s.ablation[name] for s in scored])), 4)
                for name in scored[0].ablation}
    return {"accuracy": round(accuracy(truth, predicted), 4), "auroc": round(auroc(truth, score), 4),
            "n": len(scored), "ablation_auroc": ablation,
            "confusion": [[int(((truth == t) & (predicted == p)).sum()) for p in (0, 1)] for t in (0, 1)]}


def failure_section(ctx: Context, name: str, scored: list[Scored], inspector: Inspector) -> dict[str, Any]:
    """Issue 6's failure-prediction and routing figures on the same decisions (edge.eval.failure)."""
    truth = np.array([s.truth for s in scored])
    decided = np.array([int(s.inspection.verdict != "good") for s in scored])
    names = sorted({k for s in scored for k in s.inspection.uncertainty.scores})
    scores = {k: np.array([s.inspection.uncertainty.scores.get(k, np.nan) for s in scored]) for k in names}
    scores = {k: v for k, v in scores.items() if np.isfinite(v).all()}
    if "learned" not in scores and "msp" not in scores:
        return {}
    figures = failure_figures(truth, decided, scores, inspector.profile.routing, ctx.out, name, ctx.seed)
    fitted = inspector.profile.metrics
    figures["failure"]["calibration"] = {  # what calibrate measured out of fold on the labelled rows
        k: fitted[k] for k in ("failure_inputs", "failure_oof_auroc_by_inputs", "failure_oof_auroc_msp",
                               "oof_accuracy", "rows") if k in fitted}
    return figures


def ood_section(ctx: Context, inspector: Inspector, scored: list[Scored], foreign: list[Path]) -> dict[str, Any]:
    """The line's OoD detector on its own test frames (false alarms) and on another product's images."""
    if inspector.profile.ood is None:
        return {}
    own = np.array([s.inspection.uncertainty.ood_distance for s in scored])
    rng = np.random.default_rng(ctx.seed)
    # a covered lens, a lighting failure, sensor noise: none of them a product the line knows
    frames = [np.zeros((300, 300, 3), np.uint8), np.full((300, 300, 3), 255, np.uint8),
              rng.integers(0, 256, (300, 300, 3), dtype=np.uint8)]
    frames += [read_image(p) for p in ctx.progress(foreign, "OoD: foreign frames")]
    other = [inspector.inspect(bgr).uncertainty.ood_distance for bgr in frames]
    far = np.array(other)
    thr = inspector.profile.ood.threshold
    return {"threshold": round(thr, 4), "false_alarm_rate": round(float((own > thr).mean()), 4),
            "detection_rate": round(float((far > thr).mean()), 4) if far.size else float("nan"),
            "auroc": round(auroc(np.r_[np.zeros(own.size), np.ones(far.size)], np.r_[own, far]), 4),
            "foreign": f"{len(foreign)} textile test images + black, white and noise frames on the ELPV line"}


def roc_plot(scored: list[Scored], title: str, path: Path) -> None:
    truth = np.array([s.truth for s in scored])
    curves = {}
    for name in scored[0].ablation:
        values = np.array([s.ablation[name] for s in scored])
        fpr, tpr = roc_curve(truth, values)
        curves[name] = (fpr, tpr, auroc(truth, values))
    plots.roc_png(curves, title, path)
