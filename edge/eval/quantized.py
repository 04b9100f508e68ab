"""The image AUROC change of a quantised pack (`lineside pack quantize --eval`), through the evaluation's own path."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from edge.datasets import textile_split
from edge.eval.scoring import Context, score_files
from edge.eval.sets import TEXTILE_SETUP_SPLIT, textile_shots
from edge.progress import Progress, silent
from edge.stats import auroc
from edge.vlm.pack import ModelPack


def textile_auroc(pack: ModelPack, provider: str = "cpu", quick: bool = False, seed: int = 0,
                  progress: Progress = silent) -> dict[str, float]:
    """Image AUROC on the textile *calib* split through the evaluation's own path (`edge.eval.run`): a profile
    calibrated as `lineside eval` does (50 good + 25 local + 25 global of the calib split, seeded), every other calib
    frame through `Inspector.inspect_embedding` — never the test split, on which `lineside eval` reports. Slow
    (minutes); `quick` takes 12 shots and 60 frames."""
    good, defects = textile_shots(seed, quick)
    shots = set(good) | set(defects)
    with tempfile.TemporaryDirectory(prefix="lineside-quant-eval-") as tmp:
        ctx = Context(pack, Path(tmp), seed, quick, provider, progress)
        inspector = ctx.fit("textile", good, defects)
        items = ctx.subset([(p, int(lab != "nominal"), lab) for p, lab in textile_split(TEXTILE_SETUP_SPLIT)
                            if p not in shots], 60)
        scored = score_files(ctx, inspector, items, f"textile calib ({pack.version})")
    truth = np.array([s.truth for s in scored])
    return {"auroc": round(auroc(truth, np.array([s.inspection.anomaly_score for s in scored])), 4),
            "auroc_global_zero_shot": round(auroc(truth, np.array([s.ablation["global zero-shot"]
                                                                    for s in scored])), 4),
            "frames": float(len(scored))}


def auroc_change(fp32: ModelPack, int8: ModelPack, provider: str = "cpu", quick: bool = False,
                 progress: Progress = silent) -> dict[str, float]:
    """`textile_auroc` of both packs and the change in points (int8 − fp32, ×100)."""
    a = textile_auroc(fp32, provider, quick, progress=progress)
    b = textile_auroc(int8, provider, quick, progress=progress)
    return {"fp32_auroc": a["auroc"], "int8_auroc": b["auroc"],
            "auroc_change_points": round(100 * (b["auroc"] - a["auroc"]), 2),
            "fp32_auroc_global_zero_shot": a["auroc_global_zero_shot"],
            "int8_auroc_global_zero_shot": b["auroc_global_zero_shot"],
            "auroc_global_zero_shot_change_points": round(
                100 * (b["auroc_global_zero_shot"] - a["auroc_global_zero_shot"]), 2),
            "frames": a["frames"]}
