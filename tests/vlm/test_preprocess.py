"""The pack's preprocessing as the manifest documents it: resize to the model's size (INTER_AREA), BGR → the
pack's colour order, (x / 255 − mean) / std per channel, channels first."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import cv2
import numpy as np
import pytest

from edge.vlm.pack import ModelPack
from edge.vlm.runtime import ImagePreprocessor

MEAN, STD = [0.40, 0.45, 0.50], [0.25, 0.26, 0.27]  # unequal per channel: a swapped channel shows


def _pack(color: str, size: tuple[int, int] = (48, 64)) -> ModelPack:
    return cast(ModelPack, SimpleNamespace(image={"size": list(size), "mean": MEAN, "std": STD, "color": color}))


def _documented(bgr: np.ndarray, color: str, size: tuple[int, int]) -> Any:
    h, w = size
    img = cv2.resize(bgr, (w, h), interpolation=cv2.INTER_AREA) if bgr.shape[:2] != (h, w) else bgr
    if color == "RGB":
        img = img[..., ::-1]
    x = (img.astype(np.float32) / 255.0 - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    return x.transpose(2, 0, 1)


@pytest.mark.parametrize("color", ["RGB", "BGR"])
@pytest.mark.parametrize("shape", [(48, 64, 3), (300, 401, 3), (17, 23, 3)])
def test_preprocessing_is_the_documented_formula(color: str, shape: tuple[int, int, int]) -> None:
    bgr = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    x = ImagePreprocessor.from_pack(_pack(color))(bgr)
    assert x.shape == (3, 48, 64) and x.dtype == np.float32 and x.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(x, _documented(bgr, color, (48, 64)), atol=1e-5)
