"""`lineside calibrate` on the real starter pack and real textile images: how the good images are used."""

from pathlib import Path

import numpy as np

from edge.datasets import textile_split
from edge.demo import default_pack_dir
from edge.fit.calibrate import calibrate, coreset
from edge.grounding.anomaly import few_shot_scores
from edge.images import read_image
from edge.vlm.pack import load_pack
from edge.vlm.runtime import ImageEncoder
from edge.vlm.vocabulary import load_vocabulary


def test_every_good_image_is_in_the_bank_and_a_row_scored_without_itself(tmp_path: Path) -> None:
    """Nine good images: all nine feed the memory bank and all nine are good rows, each scored against a bank built
    without it — scored against the final bank, which holds all its patches (no coreset here), an image matches
    itself, which its row does not."""
    pack = load_pack(default_pack_dir())
    good = [p for p, label in textile_split("train") if label == "nominal"][:9]
    profile = calibrate(pack, load_vocabulary(), good, "line-1", tmp_path, provider="cpu",
                        bank_size={8: 9 * 32 * 32, 16: 9 * 16 * 16})
    metrics = profile.metrics
    assert (metrics["bank_images"], metrics["holdout_images"], metrics["cross_fit_folds"]) == (9, 9, 3)
    assert profile.rows is not None and len(profile.rows) == 9
    emb = ImageEncoder(pack, "cpu").encode(read_image(good[0]))
    row_mean, _ = profile.patch_stats[8]["few"]
    assert float(few_shot_scores(emb.patches[8], profile.bank[8]).max()) < 1e-4 < 0.05 < row_mean


def test_coreset_keeps_outliers_and_has_the_asked_size() -> None:
    rng = np.random.default_rng(1)
    feats = np.concatenate([rng.standard_normal((500, 8)) * 0.01, [[10.0] * 8]]).astype(np.float32)
    picked = coreset(feats, 20)
    assert picked.shape == (20, 8)
    assert any(np.allclose(row, 10.0) for row in picked)
