"""The line-profile classifier head at run time: good vs defect from what the frame's way has already computed.

Features x of a frame (all from one encoder pass, `frame_features`): the global embedding g, the mean patch embedding
at each stride, and four numbers of the grounding step — the anomaly map's maximum, the mean of its top 2 %, its
mean, and the global zero-shot score. p(defect | x) = σ(wᵀ·(x − μ)/σ + b), optionally through a stack (`Stack`) on
(the head's logit, `FRAME_SCORE_COLUMNS`), against the head's threshold. How it is fit: edge.fit.classifier.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.stats import sigmoid
from edge.vlm.runtime import ImageEmbedding

FRAME_SCORE_COLUMNS = (-4, -1)  # of frame_features: the anomaly map's maximum and the global zero-shot score


def frame_features(emb: ImageEmbedding, anomaly_map: np.ndarray, global_score: float) -> np.ndarray:
    flat = np.sort(anomaly_map.ravel())
    top = flat[-max(1, flat.size // 50):]
    pooled = [emb.patches[s].reshape(-1, emb.patches[s].shape[-1]).mean(axis=0) for s in sorted(emb.patches)]
    stats = np.array([flat[-1], top.mean(), flat.mean(), global_score], np.float32)
    return np.concatenate([emb.global_.astype(np.float32), *pooled, stats]).astype(np.float32)


def logit(p: np.ndarray | float, eps: float = 1e-6) -> np.ndarray:
    """log(p / (1 − p)) with p clipped to [eps, 1 − eps]: the head's p(defect) as a decision score (the daemon's and
    the profile's margins) and as the stack's input (eps 1e-9 there)."""
    q = np.clip(np.asarray(p, np.float64), eps, 1 - eps)
    return np.asarray(np.log(q / (1 - q)))


@dataclass
class LinearHead:
    mean: np.ndarray
    std: np.ndarray
    w: np.ndarray
    b: float
    threshold: float  # on p(defect)
    l2: float
    cv_accuracy: float  # out-of-fold accuracy at `threshold` at the line's defect rate (balanced if unknown)
    stack: Stack | None = None  # the second stage on (head logit, frame scores); None: the head alone decides

    def predict(self, features: np.ndarray) -> np.ndarray:
        """p(defect) for [N, d] (or one [d]) feature rows."""
        x = np.atleast_2d(features)
        z = (x - self.mean) / self.std @ self.w + self.b
        if self.stack is not None:
            z = self.stack.logit(z, x)
        return sigmoid(z)

    def save(self, path: Path) -> None:
        arrays: dict[str, Any] = {
            "mean": self.mean, "std": self.std, "w": self.w,
            "scalars": np.array([self.b, self.threshold, self.l2, self.cv_accuracy])}
        if self.stack is not None:
            arrays.update({"stack_mean": self.stack.mean, "stack_std": self.stack.std, "stack_w": self.stack.w,
                           "stack_b": np.array([self.stack.b]), "stack_columns": np.array(self.stack.columns)})
        np.savez(path, **arrays)

    @classmethod
    def load(cls, path: Path) -> LinearHead:
        with np.load(path) as npz:
            b, threshold, l2, cv = (float(v) for v in npz["scalars"])
            stack = (Stack(npz["stack_mean"], npz["stack_std"], npz["stack_w"], float(npz["stack_b"][0]),
                           tuple(int(c) for c in npz["stack_columns"])) if "stack_w" in npz.files else None)
            return cls(npz["mean"], npz["std"], npz["w"], b, threshold, l2, cv, stack)


@dataclass
class Stack:
    """logit = w · standardised([head logit, features[columns]]) + b."""

    mean: np.ndarray
    std: np.ndarray
    w: np.ndarray
    b: float
    columns: tuple[int, ...]

    def inputs(self, head_logit: np.ndarray, features: np.ndarray) -> np.ndarray:
        x = np.column_stack([head_logit, *(features[:, c] for c in self.columns)])
        return (x - self.mean) / self.std

    def logit(self, head_logit: np.ndarray, features: np.ndarray) -> np.ndarray:
        return np.asarray(self.inputs(head_logit, features) @ self.w + self.b)


