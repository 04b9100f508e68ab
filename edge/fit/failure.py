"""Fitting the failure predictor and the OoD detector (edge.uncertainty.failure) on labelled decisions.

The MLP is trained with ViLU's weighted binary cross-entropy: a wrong decision weighs log(1 + acc / (1 − acc)) with
acc the batch accuracy, so the rare failures are not drowned by the sure successes. Forward, backward and Adam are
numpy, written out below (the gradient is checked against torch in the tests): `lineside train` and `lineside
calibrate` fit it without torch. `fit_msp_predictor` is the small-data fallback, a logistic calibration of
max-softmax; `cross_fit_failure` gives every labelled decision an out-of-fold p(wrong), from which the routing
threshold is calibrated, and `cross_fitted_predictor` gives both the out-of-fold p(wrong) (averaged over several
fold draws) and the MLP predictor (the first draw's fold bags merged) from one set of fits. `fit_ood` sets the OoD
detector's references and threshold.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from edge.stats import auroc, sigmoid
from edge.uncertainty.failure import (
    MSP_COLUMN,
    SQRT_2_PI,
    TAIL,
    FailurePredictor,
    OodDetector,
    gelu,
    gelu_tanh,
)

MIN_MSP_SLOPE = 1e-3  # the least slope of p(wrong) on max-softmax a calibration may keep (fit_msp_predictor)
BAG_MEMBERS = 5  # MLPs whose logits the failure predictor averages (README, "Uncertainty …": why)
BAG_SEED_STRIDE = 1000  # member m of a predictor fit with seed s draws from seed s + 1000 m (member 0: s)
CROSS_FIT_REPEATS = 3  # fold draws a cross-fitted predictor averages over (README, "Uncertainty …": why)
CROSS_FIT_MEMBERS = 2  # MLPs per fold's bag there: 3 draws × 5 folds × 2 = 30 fits, as many as 5 folds + 1 × 5
REPEAT_SEED_STRIDE = 100  # fold k of draw r of a cross-fit with seed s fits with seed s + 100 r + k


def vilu_weight(accuracy: float) -> float:
    """ViLU's weight of a wrong decision in the BCE: log(1 + acc / (1 − acc)) = −log(1 − acc)."""
    acc = min(max(accuracy, 1e-6), 1 - 1e-6)
    return float(math.log1p(acc / (1 - acc)))


def weighted_bce(logit: np.ndarray, wrong: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean ViLU-weighted BCE of a batch and its gradient with respect to the logits."""
    y = np.asarray(wrong, np.float64)
    weight = np.where(y > 0, vilu_weight(1.0 - float(y.mean())), 1.0)
    p = sigmoid(logit)
    loss = -(weight * (y * np.log(np.maximum(p, 1e-12)) + (1 - y) * np.log(np.maximum(1 - p, 1e-12)))).mean()
    return float(loss), weight * (p - y) / y.size


def _gelu_and_grad(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """gelu(x) and its derivative from one tanh (`gelu`'s own, so the same values to the bit)."""
    t = gelu_tanh(x)
    return 0.5 * x * (1 + t), 0.5 * (1 + t) + 0.5 * x * (1 - t ** 2) * SQRT_2_PI * (1 + 3 * 0.044715 * x ** 2)


def forward_backward(params: dict[str, np.ndarray], x: np.ndarray, wrong: np.ndarray
                     ) -> tuple[float, dict[str, np.ndarray]]:
    """Loss and gradients of the MLP on standardised inputs x (exposed for the gradient check)."""
    pre = x @ params["w1"] + params["b1"]
    h, gelu_grad = _gelu_and_grad(pre)
    logit = h @ params["w2"] + params["b2"][0]
    loss, d_logit = weighted_bce(logit, wrong)
    d_logit = d_logit.astype(pre.dtype, copy=False)  # float32 weights stay float32 (the BCE works in float64)
    grads = {"w2": h.T @ d_logit, "b2": np.array([d_logit.sum()])}
    d_pre = np.outer(d_logit, params["w2"]) * gelu_grad
    grads["w1"] = x.T @ d_pre
    grads["b1"] = d_pre.sum(axis=0)
    return loss, grads


def fit_failure_predictor(features: np.ndarray, wrong: np.ndarray, seed: int = 0, hidden: int = 64,
                          epochs: int = 150, batch: int = 128, lr: float = 1e-3, weight_decay: float = 1e-2,
                          validation: float = 0.2, inputs: str = "full", members: int = BAG_MEMBERS
                          ) -> FailurePredictor:
    """Fit on [N, F] features with wrong [N] (1 = the decision was wrong): `members` MLPs, each with its own
    validation share, initial weights and batch order, their logits averaged — kept as one MLP `members` × `hidden`
    wide. Each: Adam with decoupled weight decay; the epoch kept is the one with the best AUROC on a stratified
    `validation` share (early stopping). `inputs`: "full" (embeddings + scalars + neighbours) or "compact" (the
    scalars and neighbour features only)."""
    bag = [_fit_mlp(features, wrong, seed + BAG_SEED_STRIDE * m, hidden, epochs, batch, lr, weight_decay,
                    validation, inputs) for m in range(max(1, members))]
    if len(bag) == 1:
        return bag[0]
    return merged(bag, {**bag[0].info, "hidden": hidden * len(bag), "members": len(bag), "seed": seed,
                        "epochs": [m.info["epochs"] for m in bag],
                        "validation_auroc": round(float(np.mean([m.info["validation_auroc"] for m in bag])), 4)})


def merged(bag: list[FailurePredictor], info: dict[str, Any]) -> FailurePredictor:
    """MLPs of the same inputs as one: their hidden units side by side, each member's standardisation folded into
    its first layer, the output weights divided by their number — its logit is the members' mean logit."""
    mean = np.mean([m.mean.astype(np.float64) for m in bag], axis=0)
    std = np.mean([m.std.astype(np.float64) for m in bag], axis=0)
    w1, b1 = [], []
    for m in bag:  # (x − mean_m) / std_m = (x_common · std + mean − mean_m) / std_m, x_common = (x − mean) / std
        scale = std / m.std.astype(np.float64)
        w1.append(scale[:, None] * m.w1.astype(np.float64))
        b1.append(m.b1.astype(np.float64) + ((mean - m.mean) / m.std) @ m.w1.astype(np.float64))
    w2 = np.concatenate([m.w2.astype(np.float64) for m in bag]) / len(bag)
    return FailurePredictor(mean.astype(np.float32), std.astype(np.float32),
                            np.concatenate(w1, axis=1).astype(np.float32), np.concatenate(b1).astype(np.float32),
                            w2.astype(np.float32), float(np.mean([m.b2 for m in bag])), info)


def _fit_mlp(features: np.ndarray, wrong: np.ndarray, seed: int, hidden: int, epochs: int, batch: int, lr: float,
             weight_decay: float, validation: float, inputs: str) -> FailurePredictor:
    """One MLP of fit_failure_predictor's bag."""
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
    # float32 from here: the products are most of a fit's time, and float32 halves them (a bag fits several)
    x = ((x_all - mean) / std).astype(np.float32)
    f = x.shape[1]
    params: dict[str, np.ndarray] = {
        "w1": (rng.standard_normal((f, hidden)) * math.sqrt(1.0 / f)).astype(np.float32),
        "b1": np.zeros(hidden, np.float32),
        "w2": (rng.standard_normal(hidden) * math.sqrt(1.0 / hidden)).astype(np.float32),
        "b2": np.zeros(1, np.float32)}
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
            # Adam in place (the same operations in the same order, without a new array for each result)
            unbias1, unbias2 = 1 - beta1 ** step, 1 - beta2 ** step
            for k, param in params.items():
                grad, mk, vk = grads[k], m[k], v[k]
                mk *= beta1
                mk += (1 - beta1) * grad
                vk *= beta2
                vk += (1 - beta2) * (grad * grad)
                update = (mk / unbias1) / (np.sqrt(vk / unbias2) + 1e-8)
                update += (weight_decay if k in ("w1", "w2") else 0.0) * param
                param -= lr * update
        if val.any():
            logit = gelu(x[val] @ params["w1"] + params["b1"]) @ params["w2"] + params["b2"][0]
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
        p = sigmoid(xa @ theta)
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
            p = sigmoid(theta[0] * msp + theta[1])
            theta[1] -= float((p - y).sum()) / max(float((p * (1 - p)).sum()), 1e-9)
    f = np.atleast_2d(features).shape[1]
    return FailurePredictor(np.zeros(f, np.float32), np.ones(f, np.float32), np.zeros((f, 0), np.float32),
                            np.zeros(0, np.float32), np.array([theta[0]], np.float32), float(theta[1]),
                            {"kind": "msp", "rows": int(y.size), "wrong": int(y.sum()), "features": int(f)})


def _stratified_folds(y: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold index per row, each label spread evenly over the folds."""
    rng = np.random.default_rng(seed)
    fold = np.empty(y.size, int)
    for cls in (0, 1):
        idx = rng.permutation(np.nonzero(y == cls)[0])
        fold[idx] = np.arange(idx.size) % folds
    return fold


def cross_fit_failure(features: np.ndarray, wrong: np.ndarray, folds: int = 5, seed: int = 0,
                      fit: Callable[..., FailurePredictor] | None = None, **fit_args: Any) -> np.ndarray:
    """Out-of-fold p(wrong) for every row: each fold scored by a predictor (`fit`, the MLP by default) that never
    saw it, so a routing threshold can be calibrated on these rows without the optimism of in-sample scores."""
    y = np.asarray(wrong, int)
    fold = _stratified_folds(y, folds, seed)
    out = np.empty(y.size)
    for k in range(folds):
        held = fold == k
        if fit is None:
            model = fit_failure_predictor(features[~held], y[~held], seed=seed + k, **fit_args)
        else:
            model = fit(features[~held], y[~held], **fit_args)
        out[held] = model.predict(features[held])
    return out


def cross_fitted_predictor(features: np.ndarray, wrong: np.ndarray, folds: int = 5,
                           repeats: int = CROSS_FIT_REPEATS, members: int = CROSS_FIT_MEMBERS, seed: int = 0,
                           **fit_args: Any) -> tuple[np.ndarray, FailurePredictor]:
    """The MLP failure predictor and every row's out-of-fold p(wrong) from one set of fits: `repeats` stratified
    fold draws, each fold scored by a bag of `members` MLPs fit on the other folds. A row's p(wrong) is the mean
    logit of the `repeats` bags that never saw it; the predictor for new frames is the first draw's `folds` bags
    merged (their mean logit; every draw's would be three times as wide, ~1 ms a frame with the full inputs). Where
    one fold draw and one bag fit on all rows left the routing threshold to the luck of the draw, the average over
    draws and fold bags is steadier at the same number of MLP fits."""
    y = np.asarray(wrong, int)
    draws, members = max(1, repeats), max(1, members)
    logits = np.zeros(y.size)
    bags = []
    for r in range(draws):
        fold = _stratified_folds(y, folds, seed + REPEAT_SEED_STRIDE * r)
        for k in range(folds):
            held = fold == k
            bag = fit_failure_predictor(features[~held], y[~held], seed=seed + REPEAT_SEED_STRIDE * r + k,
                                        members=members, **fit_args)
            bags.append(bag)
            logits[held] += bag.logit(features[held])
    predictor = bags[:folds]
    info = {**bags[0].info, "rows": int(y.size), "wrong": int(y.sum()), "seed": seed, "folds": folds,
            "repeats": draws, "members": folds * members, "hidden": int(sum(b.w1.shape[1] for b in predictor)),
            "validation_auroc": round(float(np.mean([b.info["validation_auroc"] for b in bags])), 4)}
    info.pop("epochs", None)
    return sigmoid(logits / draws), merged(predictor, info)


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
