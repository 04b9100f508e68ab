"""The coarse-to-fine few-shot search (edge.grounding.anomaly.coarse_to_fine): the finest stride keeps the full
search's score where the next stride is highest, and elsewhere the next stride's score on its own scale."""

from __future__ import annotations

import numpy as np

from edge.grounding.anomaly import coarse_to_fine, searched_patches

STATS = {8: {"few": (0.2, 0.05), "zero": (0.5, 0.1)}, 16: {"few": (0.3, 0.1), "zero": (0.5, 0.1)}}


def _raw(rng: np.random.Generator) -> dict[int, dict[str, np.ndarray]]:
    return {8: {"few": rng.random((8, 8), dtype=np.float32), "zero": rng.random((8, 8), dtype=np.float32)},
            16: {"few": rng.random((4, 4), dtype=np.float32), "zero": rng.random((4, 4), dtype=np.float32)}}


def test_the_finest_stride_is_searched_where_the_next_one_is_highest() -> None:
    raw = _raw(np.random.default_rng(0))
    raw[16]["few"][:] = 0.3
    raw[16]["few"][1, 2] = 0.9  # a defect the coarser search found: the finest patches under it are searched
    got = coarse_to_fine(raw, STATS, 4 / 64)
    assert searched_patches(64, 4 / 64) == 4
    np.testing.assert_array_equal(got[8]["few"][2:4, 4:6], raw[8]["few"][2:4, 4:6])
    # elsewhere the coarser score, as many good-image deviations from its mean on the finest stride's scale
    assert got[8]["few"][7, 0] == np.float32(0.2 + 0.05 * (0.3 - 0.3) / 0.1)
    assert got[8]["few"][7, 0] != raw[8]["few"][7, 0]
    assert np.array_equal(got[8]["zero"], raw[8]["zero"]) and got[16] is raw[16], "only the finest search changes"
    assert np.count_nonzero(got[8]["few"] == raw[8]["few"]) == 4


def test_every_patch_searched_or_no_share_is_the_full_search() -> None:
    raw = _raw(np.random.default_rng(1))
    assert coarse_to_fine(raw, STATS, None) is raw
    np.testing.assert_array_equal(coarse_to_fine(raw, STATS, 1.0)[8]["few"], raw[8]["few"])
    one_stride = {8: raw[8]}
    assert coarse_to_fine(one_stride, STATS, 0.1) is one_stride
