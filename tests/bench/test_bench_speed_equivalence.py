"""The speed changes of BENCHMARKS.md give the same numbers as the code they replaced (no timing asserted here)."""

from __future__ import annotations

import numpy as np

from edge.grounding.anomaly import few_shot_scores
from edge.vlm.runtime import channels_last


def _unit(a: np.ndarray) -> np.ndarray:
    return (a / np.linalg.norm(a, axis=-1, keepdims=True)).astype(np.float32)


def test_channels_last_equals_numpy_transpose() -> None:
    rng = np.random.default_rng(0)
    for shape in ((256, 32, 32), (256, 16, 16), (8, 3, 5)):
        grid = rng.standard_normal(shape).astype(np.float32)
        out = channels_last(grid)
        assert out.flags["C_CONTIGUOUS"] and out.dtype == np.float32
        np.testing.assert_array_equal(out, np.ascontiguousarray(grid.transpose(1, 2, 0)))


def test_few_shot_scores_equal_the_plain_product() -> None:
    rng = np.random.default_rng(1)
    patches = _unit(rng.standard_normal((32, 32, 256)))
    bank = _unit(rng.standard_normal((2048, 256)))
    expected = (1.0 - (patches.reshape(-1, 256) @ bank.T).max(axis=1)).reshape(32, 32)
    np.testing.assert_allclose(few_shot_scores(patches, bank), expected, rtol=0, atol=1e-6)


def _zero_shot_reference(patches: np.ndarray, classes: np.ndarray, scale: float) -> np.ndarray:
    h, w, d = patches.shape
    logits = scale * (patches.reshape(-1, d) @ classes.T)
    logits -= logits.max(axis=1, keepdims=True)
    prob = np.exp(logits)
    return (1.0 - prob[:, 0] / prob.sum(axis=1)).reshape(h, w)


def test_zero_shot_scores_equal_the_full_softmax() -> None:
    from edge.grounding.anomaly import zero_shot_scores

    rng = np.random.default_rng(2)
    patches = _unit(rng.standard_normal((16, 16, 256)))
    classes = _unit(rng.standard_normal((7, 256)))
    for scale in (14.5894, 100.0):
        out = zero_shot_scores(patches, classes, scale)
        assert out.dtype == np.float32 and out.shape == (16, 16) and np.isfinite(out).all()
        np.testing.assert_allclose(out, _zero_shot_reference(patches, classes, scale), rtol=0, atol=1e-5)
