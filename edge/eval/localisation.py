"""The localisation figures' measures: boxes in frame pixels (x, y, w, h), their overlap and the box around a mask;
and the per-region overlap curve (PRO) as MVTec AD defines it."""

from __future__ import annotations

import cv2
import numpy as np

from edge.findings import Box, iou, mask_box

__all__ = ["Box", "iou", "mask_box", "pro_auc"]

def pro_auc(masks: list[np.ndarray], scores: list[np.ndarray], fpr_limit: float = 0.3, steps: int = 2000) -> float:
    """Area under the per-region-overlap curve up to `fpr_limit` false-positive rate, divided by `fpr_limit`
    (MVTec AD; Bergmann et al. 2021). At each threshold t on the pixel scores, a defect's overlap is the share of its
    pixels above t, for every connected defect region of every mask; PRO(t) is their mean, every region weighing the
    same however large; FPR(t) is the share of defect-free pixels (over all images) above t. 1.0: every region
    wholly found before any false alarm. `masks` bool and `scores` float, one pair per image, same shapes."""
    negatives: list[np.ndarray] = []
    regions: list[np.ndarray] = []
    for mask, score in zip(masks, scores, strict=True):
        negatives.append(score[~mask])
        n, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
        regions += [np.sort(score[labels == k]) for k in range(1, n)]
    if not regions:
        return float("nan")
    neg = np.sort(np.concatenate(negatives))
    thresholds = np.quantile(neg, np.linspace(1.0 - fpr_limit, 1.0, steps))
    fpr = 1.0 - np.searchsorted(neg, thresholds, side="right") / neg.size
    pro = np.mean([1.0 - np.searchsorted(r, thresholds, side="right") / r.size for r in regions], axis=0)
    order = np.argsort(fpr)
    fpr, pro = np.r_[0.0, fpr[order]], np.r_[pro[order][0], pro[order]]
    keep = fpr <= fpr_limit
    end = float(np.interp(fpr_limit, fpr, pro))
    return float(np.trapezoid(np.r_[pro[keep], end], np.r_[fpr[keep], fpr_limit]) / fpr_limit)
