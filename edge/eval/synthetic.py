"""Synthetic defects with pixel masks, pasted on real nominal images: scratch, spot, cut-paste.

Seeded and self-contained (numpy + OpenCV). The starter pack's build script makes defects of the same three kinds on
the textile *train* split; these are drawn by this module on held-out images (textile test, ELPV test), so the
images are new to the pack while the kinds of defect are not — the report says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

KINDS = ("scratch", "spot", "cut-paste")
VOCAB_CLASS = {"scratch": "scratch", "spot": "spot", "cut-paste": "patch"}


@dataclass(frozen=True)
class SyntheticDefect:
    image: np.ndarray  # BGR uint8
    mask: np.ndarray  # bool, True on defect pixels
    kind: str


def _contrast(image: np.ndarray, rng: np.random.Generator) -> float:
    """A signed intensity offset of 3–6 image standard deviations (at least 40 grey levels)."""
    spread = max(float(image.std()), 10.0)
    return float(rng.choice([-1.0, 1.0]) * max(40.0, rng.uniform(3.0, 6.0) * spread))


def _apply(image: np.ndarray, mask_f: np.ndarray, offset: float) -> np.ndarray:
    out = image.astype(np.float32) + offset * mask_f[..., None]
    return np.clip(out, 0, 255).astype(np.uint8)


def scratch(image: np.ndarray, rng: np.random.Generator) -> SyntheticDefect:
    h, w = image.shape[:2]
    length = rng.uniform(0.25, 0.5) * min(h, w)
    angle = rng.uniform(0, np.pi)
    cx, cy = rng.uniform(0.2 * w, 0.8 * w), rng.uniform(0.2 * h, 0.8 * h)
    dx, dy = np.cos(angle) * length / 2, np.sin(angle) * length / 2
    mask = np.zeros((h, w), np.uint8)
    cv2.line(mask, (int(cx - dx), int(cy - dy)), (int(cx + dx), int(cy + dy)), 255, int(rng.integers(2, 4)),
             cv2.LINE_AA)
    mask_f = mask.astype(np.float32) / 255.0
    return SyntheticDefect(_apply(image, mask_f, _contrast(image, rng)), mask > 64, "scratch")


def spot(image: np.ndarray, rng: np.random.Generator) -> SyntheticDefect:
    h, w = image.shape[:2]
    r = int(rng.integers(4, 10))
    center = (int(rng.uniform(0.15 * w, 0.85 * w)), int(rng.uniform(0.15 * h, 0.85 * h)))
    axes = (r, max(2, int(r * rng.uniform(0.6, 1.0))))
    mask = np.zeros((h, w), np.uint8)
    cv2.ellipse(mask, center, axes, float(rng.uniform(0, 180)), 0, 360, 255, -1, cv2.LINE_AA)
    mask_f = cv2.GaussianBlur(mask.astype(np.float32) / 255.0, (3, 3), 0)
    return SyntheticDefect(_apply(image, mask_f, _contrast(image, rng)), mask > 64, "spot")


def cut_paste(image: np.ndarray, donor: np.ndarray, rng: np.random.Generator) -> SyntheticDefect:
    """A rectangle of another image (rotated 90°, brightness shifted) pasted in."""
    h, w = image.shape[:2]
    size = int(rng.uniform(0.12, 0.2) * min(h, w))
    dh, dw = donor.shape[:2]
    sy, sx = int(rng.integers(0, dh - size)), int(rng.integers(0, dw - size))
    piece = np.rot90(donor[sy:sy + size, sx:sx + size]).astype(np.float32)
    piece = np.clip(piece * rng.uniform(0.6, 0.8) if rng.random() < 0.5 else piece * rng.uniform(1.25, 1.5), 0, 255)
    y, x = int(rng.integers(int(0.1 * h), int(0.9 * h) - size)), int(rng.integers(int(0.1 * w), int(0.9 * w) - size))
    out = image.copy()
    out[y:y + size, x:x + size] = piece.astype(np.uint8)
    mask = np.zeros((h, w), bool)
    mask[y:y + size, x:x + size] = True
    return SyntheticDefect(out, mask, "cut-paste")


def make_defect(image: np.ndarray, donor: np.ndarray, kind: str, rng: np.random.Generator) -> SyntheticDefect:
    """A defect of `kind` on `image` (`donor`: the other image a cut-paste takes its piece from)."""
    if kind not in KINDS:
        raise ValueError(f"unknown synthetic defect kind {kind!r} (known: {', '.join(KINDS)})")
    return cut_paste(image, donor, rng) if kind == "cut-paste" else {"scratch": scratch, "spot": spot}[kind](image, rng)
