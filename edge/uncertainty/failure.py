"""Learned failure prediction (ViLU-style): how likely is this frame's decision wrong, learned from labelled frames.

Inputs of one decision (all from the frame's own encoder pass; `failure_features`):
  g   — the global image embedding,
  t̂   — the text embedding of the decided class (good, or the defect class the global embedding matches best),
  a   — softmax(s · g Tᵀ) T, the image-conditioned attention over all class text embeddings T (ViLU's cross-attention
        with g as the query),
  the pooled patch embedding per stride (what the region-level grid says about the whole frame), a few scalars —
  the decision's signed and absolute margin z to its threshold, the anomaly map's maximum / top-2 % / mean, the
  global zero-shot score and the max-softmax, margin and entropy of the decision's class distribution — and two
  neighbourhood features (`NeighbourIndex`): the share of the decision's 10 nearest labelled frames that carry the
  other label, and the trust score.
An MLP (standardised input → 64 GELU → 1) maps them to the logit of "this decision is wrong", trained with ViLU's
weighted binary cross-entropy (edge.fit.failure); the daemon's inference here is one small matrix product, numpy.

Which inputs are kept is measured per line (edge.fit.refit): the full set, the `compact` set (scalars and
neighbourhood only), or none — `fit_msp_predictor`, a logistic calibration of max-softmax — whichever ranks the line's
failures best out of fold. Measured on ELPV (1,930 labelled cells, 362 out-of-fold errors, 5-fold): MSP 0.792,
full MLP 0.821, compact 0.848; the embeddings overfit at this size (they are what ViLU learns from on ImageNet-scale
data). From 83 labelled cells the full MLP learned noise (0.47): the margin fallback exists for that.

Baseline scorers on the same decisions (`baseline_scores`): max-softmax (MSP), margin, entropy, DOCTOR (Gini,
1 − Σp²), energy (−logsumexp of the decision logits) and MCM (max softmax of the zero-shot cosine similarities of g
to the class texts, temperature 1). All are "higher = more likely wrong".

Out-of-distribution (`OodDetector`): the cosine distance of g to its nearest labelled reference frame of the line;
the threshold is a high quantile of the references' own leave-one-out distances times a margin. A frame beyond it
(lens covered, wrong product, lighting failure) is not something the profile's decision means anything for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.stats import sigmoid

SCALAR_NAMES = ("z", "abs_z", "map_max", "map_top", "map_mean", "global_score", "msp", "margin", "entropy")
NEIGHBOUR_NAMES = ("neighbour_disagreement", "trust")
TAIL = SCALAR_NAMES + NEIGHBOUR_NAMES  # the last columns of every feature row, after the embeddings
MSP_COLUMN = TAIL.index("msp") - len(TAIL)
NEIGHBOURS_K = 10
BASELINES = ("msp", "margin", "entropy", "mcm", "doctor", "energy")


def _softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def decision_logits(z: np.ndarray, defect_probs: np.ndarray) -> np.ndarray:
    """[N, C] logits whose softmax is the decision's class distribution: good gets −z/2, defect class c gets
    z/2 + log q_c (q the defect-class split), so p(good) = σ(−z) and p(c) = σ(z)·q_c."""
    z = np.atleast_1d(np.asarray(z, np.float64))
    q = np.atleast_2d(np.asarray(defect_probs, np.float64))
    return np.concatenate([-z[:, None] / 2, z[:, None] / 2 + np.log(np.maximum(q, 1e-12))], axis=1)


def baseline_scores(z: np.ndarray, defect_probs: np.ndarray, g: np.ndarray, class_embeddings: np.ndarray
                    ) -> dict[str, np.ndarray]:
    """The classical failure scores of N decisions (higher = more likely wrong)."""
    logits = decision_logits(z, defect_probs)
    p = _softmax(logits)
    top = np.sort(p, axis=1)[:, ::-1]
    k = p.shape[1]
    sims = np.atleast_2d(g) @ class_embeddings.T
    return {
        "msp": 1.0 - top[:, 0],
        "margin": 1.0 - (top[:, 0] - top[:, 1]),
        "entropy": -(p * np.log(np.maximum(p, 1e-12))).sum(axis=1) / math.log(k),
        "doctor": 1.0 - (p ** 2).sum(axis=1),
        "energy": -np.log(np.exp(logits - logits.max(axis=1, keepdims=True)).sum(axis=1)) - logits.max(axis=1),
        "mcm": 1.0 - _softmax(sims).max(axis=1),  # temperature 1 on cosine similarities, as in MCM
    }


def failure_features(g: np.ndarray, pooled: list[np.ndarray], predicted: np.ndarray, class_embeddings: np.ndarray,
                     logit_scale: float, scalars: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    """[N, F] inputs of the failure predictor. g [N, D]; pooled: per stride [N, D]; predicted [N] class index into
    `class_embeddings` [C, D]; scalars [N, len(SCALAR_NAMES)]; neighbours [N, len(NEIGHBOUR_NAMES)]."""
    g = np.atleast_2d(g).astype(np.float32)
    text = class_embeddings.astype(np.float32)
    t_hat = text[np.asarray(predicted, int)]
    attention = _softmax(logit_scale * (g @ text.T)) @ text
    return np.concatenate([g, t_hat, attention, *[np.atleast_2d(p) for p in pooled],
                           np.atleast_2d(scalars).astype(np.float32), np.atleast_2d(neighbours).astype(np.float32)],
                          axis=1).astype(np.float32)


@dataclass
class NeighbourIndex:
    """The line's labelled frames as neighbours: how many of a decision's k nearest labelled frames carry another
    label than the one decided, and the trust score (Jiang et al. 2018: log of the distance to the nearest frame of
    another label over the distance to the nearest of the decided label). Distances are cosine, in the classifier
    features standardised by the labelled frames' mean and spread."""

    refs: np.ndarray  # [M, d] unit-norm standardised feature rows
    labels: np.ndarray  # [M] 1 = defect
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def build(cls, rows: np.ndarray, labels: np.ndarray) -> NeighbourIndex:
        x = np.asarray(rows, np.float32)
        mean, std = x.mean(axis=0), np.maximum(x.std(axis=0), 1e-6)
        return cls(cls._unit((x - mean) / std), np.asarray(labels, np.int8), mean, std)

    @staticmethod
    def _unit(x: np.ndarray) -> np.ndarray:
        return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)

    def features(self, rows: np.ndarray, decided_defect: np.ndarray, leave_one_out: bool = False) -> np.ndarray:
        """[N, 2] for feature rows with their decisions; `leave_one_out` when `rows` are the references themselves
        (training: a frame is not its own neighbour)."""
        q = self._unit((np.atleast_2d(rows).astype(np.float32) - self.mean) / self.std)
        decided = np.asarray(decided_defect, np.int8).ravel()
        out = np.empty((q.shape[0], 2), np.float32)
        k = min(NEIGHBOURS_K, self.refs.shape[0] - int(leave_one_out))
        for start in range(0, q.shape[0], 1024):  # bounded memory however many labelled frames
            sims = q[start:start + 1024] @ self.refs.T
            if leave_one_out:
                sims[np.arange(sims.shape[0]), np.arange(start, start + sims.shape[0])] = -np.inf
            dec = decided[start:start + 1024, None]
            nearest = np.argpartition(-sims, k - 1, axis=1)[:, :k]
            out[start:start + 1024, 0] = (self.labels[nearest] != dec).mean(axis=1)
            dist = np.clip(1.0 - sims, 0.0, 2.0)  # the excluded self is +inf → 2; rounding can cross 0
            same = np.where(self.labels[None, :] == dec, dist, 2.0).min(axis=1)
            other = np.where(self.labels[None, :] != dec, dist, 2.0).min(axis=1)
            out[start:start + 1024, 1] = np.log((other + 1e-3) / (same + 1e-3))
        return out

    def save(self, path: Path) -> None:
        np.savez(path, refs=self.refs.astype(np.float16), labels=self.labels, mean=self.mean, std=self.std)

    @classmethod
    def load(cls, path: Path) -> NeighbourIndex:
        with np.load(path) as npz:
            return cls(cls._unit(npz["refs"].astype(np.float32)), npz["labels"], npz["mean"], npz["std"])


def decision_scalars(z: np.ndarray, map_stats: np.ndarray, global_score: np.ndarray, defect_probs: np.ndarray
                     ) -> np.ndarray:
    """[N, len(SCALAR_NAMES)]: map_stats [N, 3] = max, top-2 % mean, mean of the anomaly map."""
    z = np.atleast_1d(np.asarray(z, np.float64))
    base = baseline_scores(z, defect_probs, np.zeros((z.size, 1)), np.zeros((2, 1)))
    return np.column_stack([z, np.abs(z), np.atleast_2d(map_stats), np.atleast_1d(global_score),
                            base["msp"], base["margin"], base["entropy"]]).astype(np.float32)


@dataclass
class FailurePredictor:
    """Standardise → W1 (F×H) → GELU → w2 (H) → logit of "wrong"."""

    mean: np.ndarray
    std: np.ndarray
    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: float
    info: dict[str, Any]

    def logit(self, features: np.ndarray) -> np.ndarray:
        if self.info.get("kind") == "msp":  # calibrated max-softmax: σ(w·(1 − max p) + b)
            msp = np.atleast_2d(features)[:, MSP_COLUMN]
            return np.asarray(msp * float(self.w2[0]) + self.b2, np.float64)
        x = (self._columns(np.atleast_2d(features)) - self.mean) / self.std
        h = gelu(x @ self.w1 + self.b1)
        return np.asarray(h @ self.w2 + self.b2, np.float64)

    def _columns(self, features: np.ndarray) -> np.ndarray:
        return features[:, -len(TAIL):] if self.info.get("inputs") == "compact" else features

    def predict(self, features: np.ndarray) -> np.ndarray:
        """p(wrong) per row."""
        return sigmoid(self.logit(features))

    def save(self, path: Path) -> None:
        np.savez(path, mean=self.mean, std=self.std, w1=self.w1, b1=self.b1, w2=self.w2, b2=np.array([self.b2]),
                 info=np.array(repr(self.info)))

    @classmethod
    def load(cls, path: Path) -> FailurePredictor:
        import ast

        with np.load(path) as npz:
            return cls(npz["mean"], npz["std"], npz["w1"], npz["b1"], npz["w2"], float(npz["b2"][0]),
                       ast.literal_eval(str(npz["info"])))


SQRT_2_PI = math.sqrt(2 / math.pi)


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    """The tanh inside gelu's approximation (the fit reads it again for the derivative)."""
    # x * x * x, not x ** 3: numpy raises to an integer power other than 2 by pow() per element, ~70 times slower
    # (the failure predictor's fits spent most of their time there)
    return np.tanh(SQRT_2_PI * (x + 0.044715 * x * x * x))


def gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1 + gelu_tanh(x))


@dataclass
class OodDetector:
    """Nearest-reference cosine distance of g; above `threshold` = a frame unlike anything the line knows."""

    references: np.ndarray  # [M, D] unit-norm g of the line's labelled frames
    threshold: float

    def distance(self, g: np.ndarray) -> np.ndarray:
        sims = np.atleast_2d(g).astype(np.float32) @ self.references.T.astype(np.float32)
        return 1.0 - sims.max(axis=1)

    def save(self, path: Path) -> None:
        np.savez(path, references=self.references.astype(np.float16), threshold=np.array([self.threshold]))

    @classmethod
    def load(cls, path: Path) -> OodDetector:
        with np.load(path) as npz:
            return cls(npz["references"].astype(np.float32), float(npz["threshold"][0]))


