"""Anomaly maps: zero-shot (patches vs class texts) ⊕ few-shot (patches vs the line's good-reference memory bank).

Both scores are computed per patch at every stride of the pack, put on one scale with the good-image statistics the
profile holds (z-scores), weighted, brought to the finest grid and averaged over strides. The frame's anomaly score
is the map's maximum.

The few-shot search may run in a subspace (`basis`, per stride: the few directions that carry nearly all of the
bank's energy, chosen at calibrate, edge.fit.search): patches and bank are projected on it and compared there, which
costs a fraction of the full product, and the SEARCH_CANDIDATES most similar bank patches found there are compared
again in all dimensions — so a patch's score is the full search's wherever its nearest bank patch is among them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import cv2
import numpy as np

from edge.vlm.runtime import ImageEmbedding

try:  # optional: without it, BLAS keeps its own thread count (slower on small boxes, same results)
    from threadpoolctl import ThreadpoolController
except ImportError:  # pragma: no cover - depends on the install
    ThreadpoolController = None

RawScores = dict[int, dict[str, np.ndarray]]  # stride -> {"few": [h, w], "zero": [h, w]}
SearchBasis = dict[int, np.ndarray]  # stride -> [k, D] orthonormal rows: the subspace its few-shot search runs in
# bank patches a subspace search compares again in all dimensions: on ELPV cells at 64 dimensions, 8 find the full
# search's nearest patch for 99.97 % of patches (4: 99.5 %, 1: 85 %; README "Search subspace")
SEARCH_CANDIDATES = 8


def zero_shot_scores(patches: np.ndarray, class_embeddings: np.ndarray, logit_scale: float) -> np.ndarray:
    """1 − p(good) per patch; patches [h, w, D], class_embeddings [C, D] with 'good' first."""
    h, w, d = patches.shape
    with _one_blas_thread():  # a small product: threads would cost more than they bring
        logits = patches.reshape(-1, d) @ class_embeddings.T
    # only p(good) is needed: 1 / Σ_j exp(l_j − l_good). Never NaN (the good term is 1); a huge logit scale may
    # overflow a term to inf, giving p(good) = 0, which is then the right limit.
    logits -= logits[:, :1]
    logits *= logit_scale
    with np.errstate(over="ignore"):
        p_good = 1.0 / np.exp(logits, out=logits).sum(axis=1)
    return (1.0 - p_good).reshape(h, w).astype(np.float32, copy=False)


def few_shot_scores(patches: np.ndarray, bank: np.ndarray, basis: np.ndarray | None = None) -> np.ndarray:
    """1 − cosine similarity to the nearest good-reference patch; bank [M, D] unit-norm. With a search `basis`
    [k, D], patches and bank are compared on its axes first, and the SEARCH_CANDIDATES closest there again in
    all D dimensions: 1 − the largest of those cosines."""
    h, w, d = patches.shape
    flat = patches.reshape(-1, d)
    if basis is None:
        def nearest_of(part: np.ndarray) -> np.ndarray:
            return np.asarray((part @ bank.T).max(axis=1))
    else:
        projected = bank @ basis.T

        def nearest_of(part: np.ndarray) -> np.ndarray:
            return np.asarray(search_candidates(part, bank, basis, projected)[0].max(axis=1))
    # The product in halves on two Python threads, each on one BLAS thread: both cores work (ONNX Runtime's pool
    # no longer spins between runs, edge.vlm.runtime) and no BLAS worker pool is left spinning against the next
    # encoder run, which a multi-threaded BLAS call does (BENCHMARKS.md, "BLAS threads")
    with _one_blas_thread():
        halves = np.array_split(flat, _PRODUCT_WORKERS)
        nearest = np.concatenate(list(_product_pool().map(nearest_of, halves)))
    return (1.0 - nearest).reshape(h, w)


def search_candidates(patches: np.ndarray, bank: np.ndarray, basis: np.ndarray, projected: np.ndarray,
                      count: int = SEARCH_CANDIDATES) -> tuple[np.ndarray, np.ndarray]:
    """For patches [n, D]: the full cosines [n, c] of the `count` bank patches most similar on `basis`'s axes
    (`projected` = bank @ basis.T), and those similarities [n, c] in the same (unsorted) order; c = min(count, M)."""
    approx = (patches @ basis.T) @ projected.T
    c = min(count, approx.shape[1])
    top = np.argpartition(approx, approx.shape[1] - c, axis=1)[:, -c:]
    return np.einsum("nd,ncd->nc", patches, bank[top]), np.take_along_axis(approx, top, axis=1)


_blas: list[Any] = []
_PRODUCT_WORKERS = max(1, min(2, os.cpu_count() or 1))
_pool: list[ThreadPoolExecutor] = []


def _product_pool() -> ThreadPoolExecutor:
    if not _pool:
        _pool.append(ThreadPoolExecutor(_PRODUCT_WORKERS, thread_name_prefix="few-shot"))
    return _pool[0]


def _one_blas_thread() -> AbstractContextManager[Any]:
    """Limit BLAS to one thread for one product (speed only: results are the same)."""
    if ThreadpoolController is None:
        return nullcontext()
    if not _blas:
        _blas.append(ThreadpoolController())
    return _blas[0].limit(limits=1, user_api="blas")


def raw_scores(emb: ImageEmbedding, bank: dict[int, np.ndarray], class_embeddings: np.ndarray,
               logit_scale: float, basis: SearchBasis | None = None) -> RawScores:
    """Zero- and few-shot scores per stride; the few-shot search in `basis`'s subspace where it has one for the
    stride."""
    out: RawScores = {}
    for stride, patches in emb.patches.items():
        scores = {"zero": zero_shot_scores(patches, class_embeddings, logit_scale)}
        if stride in bank and bank[stride].size:
            scores["few"] = few_shot_scores(patches, bank[stride], (basis or {}).get(stride))
        out[stride] = scores
    return out


def searched_patches(patches: int, share: float) -> int:
    """How many of a grid's `patches` a coarse-to-fine search compares with the memory bank: `share` of them, at
    least one."""
    return max(1, min(patches, int(np.ceil(patches * share))))


def coarse_candidates(coarse_few: np.ndarray, shape: tuple[int, int], share: float) -> tuple[np.ndarray, np.ndarray]:
    """The next stride's few-shot scores brought to the finest grid's `shape` ([h·w], as the map brings strides
    together) and the finest patches searched: the `share` of them where those scores are highest, highest first."""
    up = cv2.resize(coarse_few, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR).ravel()
    return up, np.argsort(-up, kind="stable")[:searched_patches(up.size, share)]


def coarse_to_fine_pair(searched_strides: Iterable[int]) -> tuple[int, int] | None:
    """(fine, coarse) of a coarse-to-fine search: the two finest of the strides searched against a bank; None with
    fewer than two, where there is nothing coarser to choose the patches by."""
    strides = sorted(searched_strides)
    return (strides[0], strides[1]) if len(strides) >= 2 else None


def coarse_to_fine(raw: RawScores, patch_stats: dict[int, dict[str, tuple[float, float]]],
                   share: float | None) -> RawScores:
    """The few-shot scores of a coarse-to-fine search: the finest stride searched only at the `share` of its
    patches where the next stride's few-shot score is highest, every other patch given that coarser score on the
    finest stride's scale (the same number of good-image standard deviations). The finest stride's search is most
    of the frame's search (four times the patches of the next); a defect raises the coarser score around it.
    `raw` as it is without a share, or with fewer than two searched strides."""
    pair = coarse_to_fine_pair(s for s in raw if "few" in raw[s])
    if share is None or pair is None:
        return raw
    fine, coarse = pair
    few = raw[fine]["few"]
    up, searched = coarse_candidates(raw[coarse]["few"], few.shape, share)
    (fine_mean, fine_std), (coarse_mean, coarse_std) = patch_stats[fine]["few"], patch_stats[coarse]["few"]
    out = (fine_mean + fine_std * (up - coarse_mean) / max(coarse_std, 1e-6)).astype(np.float32)
    out[searched] = few.ravel()[searched]
    return {**raw, fine: {**raw[fine], "few": out.reshape(few.shape)}}


def combine(raw: RawScores, patch_stats: dict[int, dict[str, tuple[float, float]]],
            weights: dict[str, float]) -> np.ndarray:
    """One anomaly map on the finest stride's grid, in good-image standard deviations."""
    finest = min(raw)
    shape = raw[finest]["zero"].shape
    total: np.ndarray = np.zeros(shape, np.float32)
    n = 0
    for stride, modes in raw.items():
        per_stride: np.ndarray = np.zeros(modes["zero"].shape, np.float32)
        weight_sum = 0.0
        for mode, score in modes.items():
            weight = weights.get(mode, 0.0)
            if weight <= 0:
                continue
            mean, std = patch_stats[stride][mode]
            per_stride += weight * (score - mean) / max(std, 1e-6)
            weight_sum += weight
        if weight_sum == 0:
            continue
        per_stride /= weight_sum
        if per_stride.shape != shape:
            per_stride = cv2.resize(per_stride, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
        total += per_stride
        n += 1
    return total / max(n, 1)


def smooth(anomaly_map: np.ndarray) -> np.ndarray:
    """A light 3×3 Gaussian (σ = 0.5 patch), so that one noisy patch does not decide a frame alone; regions and
    frame score both use it. Not a 3×3 mean: that spreads a defect one patch wide over nine and costs the smallest
    ones (measured, `lineside eval --dataset all`, starter pack: textile map-maximum AUROC 0.943 → 0.951, local
    defects 0.886 → 0.903; synthetic-loc pixel AUROC 0.964 → 0.965, region recall 0.47 → 0.49)."""
    return cv2.GaussianBlur(anomaly_map, (3, 3), 0.5, borderType=cv2.BORDER_REPLICATE)


def global_zero_shot_score(global_embedding: np.ndarray, class_embeddings: np.ndarray, logit_scale: float) -> float:
    """The whole frame's zero-shot defect score: log p(defect) − log p(good) of the global embedding g."""
    logits = logit_scale * (class_embeddings @ global_embedding)
    logits = logits - logits.max()
    defect = float(np.log(np.exp(logits[1:]).sum()))
    return defect - float(logits[0])
