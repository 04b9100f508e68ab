"""Synthetic defects with pixel masks for *fitting*, pasted on the line's own good images: a line with only good
images still gets a localiser, and the region extraction is tuned on defects whose extent is known.

Deliberately not the evaluation's generator (edge.eval.synthetic: straight scratches, elliptic spots, square
cut-paste): these are smooth random blobs, curved strokes and polygon pieces of another good image, DRAEM- and
CutPaste-like, so that `lineside eval`'s localisation figures measure defects of shapes the fit never saw.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

FIT_KINDS = ("blob", "stroke", "piece")


@dataclass(frozen=True)
class FitDefect:
    image: np.ndarray  # BGR uint8
    mask: np.ndarray  # bool
    kind: str


def _offset(image: np.ndarray, rng: np.random.Generator) -> float:
    """A signed intensity change of 2.5–6 image standard deviations (at least 30 grey levels)."""
    spread = max(float(image.std()), 8.0)
    return float(rng.choice([-1.0, 1.0]) * max(30.0, rng.uniform(2.5, 6.0) * spread))


def _blend(image: np.ndarray, alpha: np.ndarray, fill: np.ndarray) -> np.ndarray:
    out = image.astype(np.float32) * (1 - alpha[..., None]) + fill.astype(np.float32) * alpha[..., None]
    return np.clip(out, 0, 255).astype(np.uint8)


def blob(image: np.ndarray, rng: np.random.Generator) -> FitDefect:
    """A smooth random blob (thresholded low-frequency noise) a few to ~15 % of the frame across."""
    h, w = image.shape[:2]
    size = rng.uniform(0.03, 0.15) * min(h, w)
    noise = cv2.resize(rng.random((8, 8)).astype(np.float32), (int(2 * size) + 1, int(2 * size) + 1),
                       interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[:noise.shape[0], :noise.shape[1]]
    radial = 1.0 - np.hypot(yy - size, xx - size) / max(size, 1.0)
    shape = (noise * 0.6 + radial) > rng.uniform(0.55, 0.8)
    mask = np.zeros((h, w), bool)
    cy, cx = int(rng.uniform(0.1 * h, 0.9 * h)), int(rng.uniform(0.1 * w, 0.9 * w))
    y0, x0 = max(0, cy - int(size)), max(0, cx - int(size))
    part = shape[: h - y0, : w - x0]
    mask[y0:y0 + part.shape[0], x0:x0 + part.shape[1]] = part
    if mask.sum() < 4:
        mask[cy:cy + 2, cx:cx + 2] = True
    alpha = cv2.GaussianBlur(mask.astype(np.float32), (3, 3), 0)
    return FitDefect(_blend(image, alpha, image.astype(np.float32) + _offset(image, rng)), mask, "blob")


def stroke(image: np.ndarray, rng: np.random.Generator) -> FitDefect:
    """A curved stroke 1–5 px wide, 10–45 % of the frame long."""
    h, w = image.shape[:2]
    length = rng.uniform(0.1, 0.45) * min(h, w)
    steps = int(rng.integers(3, 7))
    angle = rng.uniform(0, 2 * np.pi)
    point = np.array([rng.uniform(0.15 * w, 0.85 * w), rng.uniform(0.15 * h, 0.85 * h)])
    points = [point.copy()]
    for _ in range(steps):
        angle += rng.normal(0, 0.5)
        point = point + length / steps * np.array([np.cos(angle), np.sin(angle)])
        points.append(point.copy())
    canvas = np.zeros((h, w), np.uint8)
    cv2.polylines(canvas, [np.round(np.array(points)).astype(np.int32)], False, 255, int(rng.integers(1, 6)),
                  cv2.LINE_AA)
    mask = canvas > 64
    return FitDefect(_blend(image, canvas.astype(np.float32) / 255.0,
                            image.astype(np.float32) + _offset(image, rng)), mask, "stroke")


def piece(image: np.ndarray, donor: np.ndarray, rng: np.random.Generator) -> FitDefect:
    """A random polygon of another good image, flipped and with its contrast changed, pasted in."""
    h, w = image.shape[:2]
    size = int(rng.uniform(0.06, 0.22) * min(h, w))
    sides = int(rng.integers(3, 8))
    angles = np.sort(rng.uniform(0, 2 * np.pi, sides))
    radii = size / 2 * rng.uniform(0.5, 1.0, sides)
    cy, cx = rng.uniform(0.1 * h + size / 2, 0.9 * h - size / 2), rng.uniform(0.1 * w + size / 2, 0.9 * w - size / 2)
    poly = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], axis=1).round().astype(np.int32)
    canvas = np.zeros((h, w), np.uint8)
    cv2.fillPoly(canvas, [poly], 255)
    source = cv2.resize(donor, (w, h))[:, ::-1] if rng.random() < 0.5 else cv2.resize(donor, (w, h))[::-1]
    gain = rng.uniform(0.55, 0.8) if rng.random() < 0.5 else rng.uniform(1.25, 1.6)
    shifted = np.roll(source, (int(rng.integers(0, h)), int(rng.integers(0, w))), axis=(0, 1)).astype(np.float32)
    mask = canvas > 0
    return FitDefect(_blend(image, mask.astype(np.float32), shifted * gain), mask, "piece")


def fit_defect(image: np.ndarray, donor: np.ndarray, kind: str, rng: np.random.Generator) -> FitDefect:
    """A defect of `kind` on `image` (`donor`: the good image a piece is cut from)."""
    if kind not in FIT_KINDS:
        raise ValueError(f"unknown fitting defect kind {kind!r} (known: {', '.join(FIT_KINDS)})")
    return piece(image, donor, rng) if kind == "piece" else {"blob": blob, "stroke": stroke}[kind](image, rng)
