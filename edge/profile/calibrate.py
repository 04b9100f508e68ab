"""`lineside calibrate`: fit a line profile from good images (and, optionally, labelled defect images).

The good images are split in two: two thirds feed the memory bank (greedy k-centre coreset per stride, as in
PatchCore), one third is held out and scored against that bank to learn what "good" looks like in numbers: the
mean and spread of every patch score (to put zero- and few-shot scores on one scale) and of the frame score, whose
upper tail gives the threshold. With defect images the threshold is instead the one that best separates held-out
good frames from the defects (balanced accuracy).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import cv2
import numpy as np

from edge.datasets import IMAGE_SUFFIXES
from edge.grounding.anomaly import combine, raw_scores, smooth
from edge.profile.profile import LineProfile, ProfileError, Vocabulary, save_profile
from edge.vlm.pack import ModelPack
from edge.vlm.prompts import build_text_bank
from edge.vlm.runtime import ImageEmbedding, ImageEncoder, TextEncoder

log = logging.getLogger(__name__)
Progress = Callable[[Iterable[Path], str], Iterable[Path]]


def list_images(directory: Path) -> list[Path]:
    if not directory.is_dir():
        raise ProfileError(f"{directory}: not a directory of images")
    files = sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ProfileError(f"{directory}: no images (.jpg, .png, .bmp, .tif) found")
    return files


def read_image(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise ProfileError(f"{path}: unreadable image")
    return image


def coreset(features: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    """Greedy k-centre subsample (PatchCore); distances on a 64-d random projection to keep it fast."""
    if features.shape[0] <= size:
        return features
    rng = np.random.default_rng(seed)
    proj = features @ rng.standard_normal((features.shape[1], 64)).astype(np.float32)
    chosen = [int(rng.integers(features.shape[0]))]
    dist = np.linalg.norm(proj - proj[chosen[0]], axis=1)
    for _ in range(size - 1):
        nxt = int(dist.argmax())
        chosen.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(proj - proj[nxt], axis=1))
    return features[np.asarray(chosen)]


def _identity(items: Iterable[Path], _label: str) -> Iterable[Path]:
    return items


def calibrate(pack: ModelPack, vocabulary: Vocabulary, good: list[Path], line_id: str, profile_dir: Path,
              defects: list[Path] | None = None, bank_size: dict[int, int] | None = None, sigmas: float = 3.0,
              provider: str = "auto", progress: Progress = _identity, seed: int = 0) -> LineProfile:
    """Fit and save a new profile version; returns it."""
    if len(good) < 3:
        raise ProfileError(f"calibration needs at least 3 good images, got {len(good)}")
    started = time.monotonic()
    encoder = ImageEncoder(pack, provider)
    text = build_text_bank(vocabulary, TextEncoder(pack, provider))
    scale = pack.logit_scale
    bank_size = bank_size or {8: 2048, 16: 1024}

    order = np.random.default_rng(seed).permutation(len(good))
    n_bank = max(1, round(len(good) * 2 / 3))
    bank_files = [good[i] for i in order[:n_bank]]
    holdout_files = [good[i] for i in order[n_bank:]]

    unreadable: list[str] = []

    def embed(files: list[Path], label: str) -> list[ImageEmbedding]:
        out = []
        for path in progress(files, label):
            try:
                out.append(encoder.encode(read_image(path)))
            except ProfileError as exc:  # one bad file must not spoil a line setup: say so, count it, go on
                log.error("%s (skipped)", exc)
                unreadable.append(str(path))
        if not out:
            raise ProfileError(f"calibration: none of the {len(files)} {label} images could be read")
        return out

    bank_embs = embed(bank_files, "memory bank")
    bank: dict[int, np.ndarray] = {}
    for stride in encoder.strides:
        feats = np.concatenate([e.patches[stride].reshape(-1, pack.embedding_dim) for e in bank_embs])
        bank[stride] = coreset(feats, bank_size.get(stride, 1024), seed)

    holdout = embed(holdout_files, "held-out good")
    raws = [raw_scores(e, bank, text.class_embeddings, scale) for e in holdout]
    patch_stats = {
        stride: {mode: (float(np.mean([r[stride][mode] for r in raws])),
                        float(np.std([r[stride][mode] for r in raws])))
                 for mode in raws[0][stride]}
        for stride in raws[0]
    }
    weights = {"few": 0.5, "zero": 0.5}
    good_scores = np.array([float(smooth(combine(r, patch_stats, weights)).max()) for r in raws])
    spread = float(max(good_scores.std(), 0.25))
    threshold = float(good_scores.mean() + sigmas * spread)
    metrics: dict[str, object] = {"good_images": len(good), "bank_images": len(bank_files),
                                  "holdout_images": len(holdout_files),
                                  "holdout_good_score_mean": float(good_scores.mean()),
                                  "holdout_good_score_max": float(good_scores.max()),
                                  "unreadable_images": unreadable}
    if defects:
        defect_scores = np.array([
            float(smooth(combine(raw_scores(e, bank, text.class_embeddings, scale), patch_stats, weights)).max())
            for e in embed(defects, "defects")])
        candidates = np.unique(np.concatenate([good_scores, defect_scores]))
        balanced = [((good_scores <= t).mean() + (defect_scores > t).mean()) / 2 for t in candidates]
        threshold = float(candidates[int(np.argmax(balanced))])
        metrics.update(defect_images=len(defects), holdout_balanced_accuracy=float(max(balanced)))
    metrics["seconds"] = round(time.monotonic() - started, 1)
    profile = LineProfile(line_id=line_id, version="", pack_version=pack.version, vocabulary=vocabulary,
                          bank=bank, patch_stats=patch_stats, anomaly_threshold=threshold, anomaly_scale=spread,
                          weights=weights, metrics=metrics)
    save_profile(profile, profile_dir)
    log.info("line %s: profile %s saved in %s (%.1f s)", line_id, profile.version, profile_dir,
             metrics["seconds"])
    return profile
