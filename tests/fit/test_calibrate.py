"""`lineside calibrate` on the real starter pack and real textile images: how the good images are used."""

from pathlib import Path

import numpy as np
import pytest

from edge.datasets import textile_split
from edge.demo import default_pack_dir
from edge.fit.calibrate import calibrate, coreset
from edge.grounding.anomaly import few_shot_scores
from edge.images import read_image
from edge.inspect.assess import split_rows
from edge.profile.line_profile import LineProfile
from edge.vlm.pack import load_pack
from edge.vlm.runtime import ImageEncoder
from edge.vlm.vocabulary import load_vocabulary

GOOD = 9


@pytest.fixture(scope="module")
def nine_good(tmp_path_factory: pytest.TempPathFactory) -> tuple[LineProfile, list[Path]]:
    """A profile calibrated from nine good images, every patch in the bank (no coreset); and the images."""
    good = [p for p, label in textile_split("train") if label == "nominal"][:GOOD]
    profile = calibrate(load_pack(default_pack_dir()), load_vocabulary(), good, "line-1",
                        tmp_path_factory.mktemp("nine"), provider="cpu",
                        bank_size={8: GOOD * 32 * 32, 16: GOOD * 16 * 16})
    return profile, good


def test_every_good_image_is_in_the_bank_and_a_row_scored_without_itself(
        nine_good: tuple[LineProfile, list[Path]]) -> None:
    """Nine good images: all nine feed the memory bank and all nine are good rows, each scored against a bank built
    without it — scored against the final bank, which holds all its patches, an image matches itself, which its row
    does not."""
    profile, good = nine_good
    pack = load_pack(default_pack_dir())
    metrics = profile.metrics
    assert (metrics["bank_images"], metrics["holdout_images"], metrics["cross_fit_folds"]) == (9, 9, 3)
    assert profile.rows is not None and len(profile.rows) == 9
    emb = ImageEncoder(pack, "cpu").encode(read_image(good[0]))
    row_mean, _ = profile.patch_stats[8]["few"]
    assert float(few_shot_scores(emb.patches[8], profile.bank[8]).max()) < 1e-4 < 0.05 < row_mean


def test_a_good_only_threshold_is_three_good_frame_deviations_above_the_fused_score(
        nine_good: tuple[LineProfile, list[Path]]) -> None:
    """Without labelled defects the frame threshold sits 3 σ above the good rows' scores on the scale the daemon
    reads it against — the fused score of map maximum and global zero-shot score, not the raw map maximum."""
    profile, _ = nine_good
    assert profile.rows is not None and profile.frame_threshold is not None and profile.frame_scale is not None
    parts = split_rows(profile.rows.features, load_pack(default_pack_dir()).embedding_dim)
    fused = np.array([profile.frame_score(float(m), float(g))[0]
                      for m, g in zip(parts.map_stats[:, 0], parts.global_score, strict=True)])
    assert profile.frame_scale == pytest.approx(max(float(fused.std()), 0.25), abs=0.01)
    assert profile.frame_threshold == pytest.approx(fused.mean() + 3 * profile.frame_scale, abs=0.03)
    assert (fused < profile.frame_threshold).all()


def test_coreset_keeps_outliers_and_has_the_asked_size() -> None:
    rng = np.random.default_rng(1)
    feats = np.concatenate([rng.standard_normal((500, 8)) * 0.01, [[10.0] * 8]]).astype(np.float32)
    picked = coreset(feats, 20)
    assert picked.shape == (20, 8)
    assert any(np.allclose(row, 10.0) for row in picked)
