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
weighted binary cross-entropy: a wrong decision weighs log(1 + acc / (1 − acc)) with acc the batch accuracy, so the
rare failures are not drowned by the sure successes. Training and inference are numpy (forward, backward and Adam
written out below; the gradient is checked against torch in the tests): `lineside train` and `lineside calibrate`
run on the line's box without torch, and the daemon's inference is one small matrix product.

Which inputs are kept is measured per line (edge.profile.fit): the full set, the `compact` set (scalars and
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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.stats import auroc

SCALAR_NAMES = ("z", "abs_z", "map_max", "map_top", "map_mean", "global_score", "msp", "margin", "entropy")
NEIGHBOUR_NAMES = ("neighbour_disagreement", "trust")
TAIL = SCALAR_NAMES + NEIGHBOUR_NAMES  # the last columns of every feature row, after the embeddings
MSP_COLUMN = TAIL.index("msp") - len(TAIL)
NEIGHBOURS_K = 10
MIN_MSP_SLOPE = 1e-3
BASELINES = ("msp", "margin", "entropy", "mcm", "doctor", "energy")


def _softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -50, 50)))


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


def vilu_weight(accuracy: float) -> float:
    """ViLU's weight of a wrong decision in the BCE: log(1 + acc / (1 − acc)) = −log(1 − acc)."""
    acc = min(max(accuracy, 1e-6), 1 - 1e-6)
    return float(math.log1p(acc / (1 - acc)))


def weighted_bce(logit: np.ndarray, wrong: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean ViLU-weighted BCE of a batch and its gradient with respect to the logits."""
    y = np.asarray(wrong, np.float64)
    weight = np.where(y > 0, vilu_weight(1.0 - float(y.mean())), 1.0)
    p = _sigmoid(logit)
    loss = -(weight * (y * np.log(np.maximum(p, 1e-12)) + (1 - y) * np.log(np.maximum(1 - p, 1e-12)))).mean()
    return float(loss), weight * (p - y) / y.size


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
        h = _gelu(x @ self.w1 + self.b1)
        return np.asarray(h @ self.w2 + self.b2, np.float64)

    def _columns(self, features: np.ndarray) -> np.ndarray:
        return features[:, -len(TAIL):] if self.info.get("inputs") == "compact" else features

    def predict(self, features: np.ndarray) -> np.ndarray:
        """p(wrong) per row."""
        return _sigmoid(self.logit(features))

    def save(self, path: Path) -> None:
        np.savez(path, mean=self.mean, std=self.std, w1=self.w1, b1=self.b1, w2=self.w2, b2=np.array([self.b2]),
                 info=np.array(repr(self.info)))

    @classmethod
    def load(cls, path: Path) -> FailurePredictor:
        import ast

        with np.load(path) as npz:
            return cls(npz["mean"], npz["std"], npz["w1"], npz["b1"], npz["w2"], float(npz["b2"][0]),
                       ast.literal_eval(str(npz["info"])))


_SQRT_2_PI = math.sqrt(2 / math.pi)


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1 + np.tanh(_SQRT_2_PI * (x + 0.044715 * x ** 3)))


def _gelu_grad(x: np.ndarray) -> np.ndarray:
    inner = _SQRT_2_PI * (x + 0.044715 * x ** 3)
    t = np.tanh(inner)
    return 0.5 * (1 + t) + 0.5 * x * (1 - t ** 2) * _SQRT_2_PI * (1 + 3 * 0.044715 * x ** 2)


def forward_backward(params: dict[str, np.ndarray], x: np.ndarray, wrong: np.ndarray
                     ) -> tuple[float, dict[str, np.ndarray]]:
    """Loss and gradients of the MLP on standardised inputs x (exposed for the gradient check)."""
    pre = x @ params["w1"] + params["b1"]
    h = _gelu(pre)
    logit = h @ params["w2"] + params["b2"][0]
    loss, d_logit = weighted_bce(logit, wrong)
    grads = {"w2": h.T @ d_logit, "b2": np.array([d_logit.sum()])}
    d_pre = np.outer(d_logit, params["w2"]) * _gelu_grad(pre)
    grads["w1"] = x.T @ d_pre
    grads["b1"] = d_pre.sum(axis=0)
    return loss, grads


def fit_failure_predictor(features: np.ndarray, wrong: np.ndarray, seed: int = 0, hidden: int = 64,
                          epochs: int = 150, batch: int = 128, lr: float = 1e-3, weight_decay: float = 1e-2,
                          validation: float = 0.2, inputs: str = "full") -> FailurePredictor:
    """Fit on [N, F] features with wrong [N] (1 = the decision was wrong). Adam with decoupled weight decay; the
    epoch kept is the one with the best AUROC on a stratified `validation` share (early stopping). `inputs`:
    "full" (embeddings + scalars + neighbours) or "compact" (the scalars and neighbour features only)."""
    if inputs not in ("full", "compact"):
        raise ValueError(f"inputs must be full or compact, not {inputs!r}")
    features = np.atleast_2d(features)[:, -len(TAIL):] if inputs == "compact" else features
    x_all = np.asarray(features, np.float64)
    y_all = np.asarray(wrong, np.float64)
    if x_all.shape[0] != y_all.size:
        raise ValueError(f"{x_all.shape[0]} feature rows but {y_all.size} labels")
    if y_all.sum() < 2 or (1 - y_all).sum() < 2:
        raise ValueError("the failure predictor needs at least 2 wrong and 2 right decisions")
    rng = np.random.default_rng(seed)
    val = np.zeros(y_all.size, bool)
    for cls in (0, 1):
        idx = rng.permutation(np.nonzero(y_all == cls)[0])
        val[idx[: max(1, int(round(idx.size * validation)))]] = True
    if validation <= 0:
        val[:] = False
    train = ~val
    mean = x_all[train].mean(axis=0)
    std = np.maximum(x_all[train].std(axis=0), 1e-6)
    x = (x_all - mean) / std
    f = x.shape[1]
    params = {"w1": rng.standard_normal((f, hidden)) * math.sqrt(1.0 / f), "b1": np.zeros(hidden),
              "w2": rng.standard_normal(hidden) * math.sqrt(1.0 / hidden), "b2": np.zeros(1)}
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v = {k: np.zeros_like(val_) for k, val_ in params.items()}
    beta1, beta2, step = 0.9, 0.999, 0
    best: tuple[float, int, dict[str, np.ndarray]] = (-1.0, 0, {k: p.copy() for k, p in params.items()})
    train_idx = np.nonzero(train)[0]
    for epoch in range(epochs):
        order = rng.permutation(train_idx)
        for start in range(0, order.size, batch):
            rows = order[start:start + batch]
            _, grads = forward_backward(params, x[rows], y_all[rows])
            step += 1
            for k in params:
                m[k] = beta1 * m[k] + (1 - beta1) * grads[k]
                v[k] = beta2 * v[k] + (1 - beta2) * grads[k] ** 2
                m_hat = m[k] / (1 - beta1 ** step)
                v_hat = v[k] / (1 - beta2 ** step)
                decay = weight_decay if k in ("w1", "w2") else 0.0
                params[k] = params[k] - lr * (m_hat / (np.sqrt(v_hat) + 1e-8) + decay * params[k])
        if val.any():
            logit = _gelu(x[val] @ params["w1"] + params["b1"]) @ params["w2"] + params["b2"][0]
            score = auroc(y_all[val], logit)
            if score > best[0]:
                best = (score, epoch + 1, {k: p.copy() for k, p in params.items()})
    if val.any():
        val_auroc, best_epoch, params = best
    else:
        val_auroc, best_epoch = float("nan"), epochs
    info = {"kind": "mlp", "inputs": inputs, "rows": int(y_all.size), "wrong": int(y_all.sum()), "hidden": hidden,
            "epochs": best_epoch,
            "validation_auroc": round(float(val_auroc), 4), "features": int(f), "seed": seed}
    return FailurePredictor(mean.astype(np.float32), std.astype(np.float32), params["w1"].astype(np.float32),
                            params["b1"].astype(np.float32), params["w2"].astype(np.float32),
                            float(params["b2"][0]), info)


def fit_msp_predictor(features: np.ndarray, wrong: np.ndarray) -> FailurePredictor:
    """The fallback: p(wrong) = σ(w·(1 − max p) + b), a logistic fit on the decision's max-softmax alone — MSP's
    ranking, calibrated to an error probability. Used where no MLP beats it out of fold."""
    msp = np.atleast_2d(features)[:, MSP_COLUMN].astype(np.float64)
    y = np.asarray(wrong, np.float64)
    theta = np.zeros(2)
    xa = np.column_stack([msp, np.ones_like(msp)])
    for _ in range(25):
        p = _sigmoid(xa @ theta)
        grad = xa.T @ (p - y) + 1e-3 * theta
        hess = (xa * (p * (1 - p))[:, None]).T @ xa + 1e-3 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        theta -= step
        if float(np.abs(step).max()) < 1e-6:
            break
    if theta[0] < MIN_MSP_SLOPE:
        # a less confident decision is never *less* likely wrong: on a few rows the fit can say so by chance (an
        # 83-row fold did: out-of-fold AUROC 0.32); keep MSP's ranking and fit only the level
        theta[0] = MIN_MSP_SLOPE
        rate = min(max(float(y.mean()), 1e-4), 1 - 1e-4)
        theta[1] = math.log(rate / (1 - rate)) - theta[0] * float(msp.mean())
        for _ in range(10):
            p = _sigmoid(theta[0] * msp + theta[1])
            theta[1] -= float((p - y).sum()) / max(float((p * (1 - p)).sum()), 1e-9)
    f = np.atleast_2d(features).shape[1]
    return FailurePredictor(np.zeros(f, np.float32), np.ones(f, np.float32), np.zeros((f, 0), np.float32),
                            np.zeros(0, np.float32), np.array([theta[0]], np.float32), float(theta[1]),
                            {"kind": "msp", "rows": int(y.size), "wrong": int(y.sum()), "features": int(f)})


def cross_fit_failure(features: np.ndarray, wrong: np.ndarray, folds: int = 5, seed: int = 0,
                      fit: Callable[..., FailurePredictor] | None = None, **fit_args: Any) -> np.ndarray:
    """Out-of-fold p(wrong) for every row: each fold scored by a predictor (`fit`, the MLP by default) that never
    saw it, so a routing threshold can be calibrated on these rows without the optimism of in-sample scores."""
    y = np.asarray(wrong, int)
    rng = np.random.default_rng(seed)
    fold = np.empty(y.size, int)
    for cls in (0, 1):
        idx = rng.permutation(np.nonzero(y == cls)[0])
        fold[idx] = np.arange(idx.size) % folds
    out = np.empty(y.size)
    for k in range(folds):
        held = fold == k
        if fit is None:
            model = fit_failure_predictor(features[~held], y[~held], seed=seed + k, **fit_args)
        else:
            model = fit(features[~held], y[~held], **fit_args)
        out[held] = model.predict(features[held])
    return out


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


def fit_ood(g: np.ndarray, quantile: float = 0.995, margin: float = 1.5, max_references: int = 4096,
            seed: int = 0) -> OodDetector:
    """References = the line's labelled frames' g (a random subset past `max_references`); threshold = `margin` ×
    the `quantile` of their leave-one-out nearest-neighbour distances."""
    refs = np.asarray(g, np.float32)
    if refs.shape[0] > max_references:
        refs = refs[np.sort(np.random.default_rng(seed).permutation(refs.shape[0])[:max_references])]
    if refs.shape[0] < 2:
        raise ValueError("the OoD detector needs at least 2 reference frames")
    sims = refs @ refs.T
    np.fill_diagonal(sims, -np.inf)
    loo = 1.0 - sims.max(axis=1)
    return OodDetector(refs, float(np.quantile(loo, quantile) * margin))
