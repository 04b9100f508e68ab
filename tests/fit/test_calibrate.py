"""`lineside calibrate` on the real starter pack and real textile images: how the good images are used."""

from pathlib import Path

import numpy as np
import onnx
import pytest

from edge.datasets import textile_split
from edge.demo import default_pack_dir
from edge.fit.calibrate import COARSE_TO_FINE_SHARE, calibrate, coreset
from edge.fit.search import MIN_AGREEMENT
from edge.grounding.anomaly import few_shot_scores, searched_patches
from edge.images import read_image
from edge.inspect.assess import split_rows
from edge.inspect.inspector import Inspector
from edge.profile.line_profile import LineProfile
from edge.profile.versions import load_profile
from edge.vlm.cpu import cpu_target
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


def test_with_search_subspace_the_bank_is_searched_where_it_was_measured_to_reproduce_it(
        nine_good: tuple[LineProfile, list[Path]], tmp_path: Path) -> None:
    """Asked for, each stride's search runs in the smallest subspace whose scores of bank images, against a bank
    without their fold, agree with the full search; on frames the profile never saw, defective or not, it finds
    nearly the same scores, and the version's frame graph reproduces the numpy search (checked at load). Not asked
    for, the search is the full one."""
    full_search, good = nine_good
    assert full_search.search_basis == {} and "search_dims" not in full_search.metrics
    pack = load_pack(default_pack_dir())
    profile = calibrate(pack, load_vocabulary(), good, "line-1", tmp_path, provider="cpu", region_defects=0,
                        bank_size={8: GOOD * 32 * 32, 16: GOOD * 16 * 16}, search_subspace=True)
    load_profile(tmp_path, pack_version=pack.version)  # the graph's outputs are its numpy references, or refused
    chosen = profile.metrics["search_dims"]
    assert chosen and {int(s) for s in chosen} == set(profile.search_basis)
    for stride, basis in profile.search_basis.items():
        k = basis.shape[0]
        assert chosen[str(stride)] == k < basis.shape[1]
        assert profile.metrics["search_agreement"][str(stride)][str(k)] >= MIN_AGREEMENT
        np.testing.assert_allclose(basis @ basis.T, np.eye(k), atol=1e-4)
    encoder = ImageEncoder(pack, "cpu")
    defects = [p for p, label in textile_split("test") if label == "local"][:2]
    for path in defects + [p for p, label in textile_split("test") if label == "nominal"][:2]:
        emb = encoder.encode(read_image(path))
        for stride, basis in profile.search_basis.items():
            full = few_shot_scores(emb.patches[stride], profile.bank[stride])
            searched = few_shot_scores(emb.patches[stride], profile.bank[stride], basis)
            assert np.corrcoef(full.ravel(), searched.ravel())[0, 1] > 0.97
            if path in defects:  # the defect's peak stays where it was, to a patch
                peak = np.array(np.unravel_index(full.argmax(), full.shape))
                assert np.abs(peak - np.unravel_index(searched.argmax(), full.shape)).max() <= 1


def test_coarse_to_fine_searches_the_finest_stride_where_the_next_is_high_in_graph_and_reference_alike(
        nine_good: tuple[LineProfile, list[Path]], tmp_path: Path) -> None:
    """Asked for, the version's frame graph searches an eighth of the finest patches — where the next stride's
    few-shot score is highest — and reproduces the numpy reference (checked at load); on frames it never saw, a
    local defect's few-shot peak is where the full search puts it, and the searched patches score as in the full
    search. Not asked for, every patch is searched; where the bank holds every patch of its images (which then
    score 0 everywhere and tie at the search's cut), the full search, and calibrate says why."""
    full_search, good = nine_good
    assert full_search.coarse_share is None and "coarse_to_fine" not in full_search.metrics
    pack = load_pack(default_pack_dir())
    every_patch = calibrate(pack, load_vocabulary(), good, "line-1", tmp_path / "every", provider="cpu",
                            region_defects=0, bank_size={8: GOOD * 32 * 32, 16: GOOD * 16 * 16},
                            coarse_to_fine_search=True)
    assert every_patch.coarse_share is None and "not used" in every_patch.metrics["coarse_to_fine"]
    load_profile(tmp_path / "every", pack_version=pack.version)
    calibrate(pack, load_vocabulary(), good, "line-1", tmp_path, provider="cpu", region_defects=0,
              coarse_to_fine_search=True)
    profile = load_profile(tmp_path, pack_version=pack.version)  # the graph's outputs are its references, or refused
    assert profile.coarse_share == COARSE_TO_FINE_SHARE
    assert profile.metrics["coarse_to_fine"] == f"the finest stride searched at {COARSE_TO_FINE_SHARE:g} of its patches"
    inspector = Inspector(pack, profile, "cpu", search="float32")
    defects = [p for p, label in textile_split("test") if label == "local"][:3]
    for path in defects:
        outputs = inspector.image_encoder.run(inspector.image_encoder.preprocess(read_image(path))[None])
        few = inspector.graph.run(outputs)["few_s8"][0]
        full = few_shot_scores(inspector.image_encoder.embeddings(outputs)[0].patches[8], profile.bank[8])
        same = np.isclose(few, full, atol=1e-4)
        assert searched_patches(few.size, COARSE_TO_FINE_SHARE) <= same.sum() < few.size
        peak = np.array(np.unravel_index(full.argmax(), full.shape))
        assert np.abs(peak - np.unravel_index(few.argmax(), few.shape)).max() <= 1
        assert inspector.inspect(read_image(path)).verdict != "good"
    # the int8 twin quantises the searched product only: the one that chooses where to search stays float, so the
    # twin searches the patches the float graph searches (a patch at the cut changing sides would move its score
    # from the search's to the fill's, beyond what the twin may differ by)
    assert profile.graph is not None and profile.graph.int8 is not None
    twin = onnx.load_from_string(profile.graph.int8)
    banks = {name for node in twin.graph.node for name in node.input if name.startswith("banks.")}
    assert "banks.16" in banks and "banks.8" not in banks and "banks.8_quantized" in banks
    if cpu_target() == "x86-vnni":  # where the int8 kernels run it, it reproduces the references (checked at load)
        assert Inspector(pack, profile, "cpu", search="int8").search == "int8"


def test_coreset_keeps_outliers_and_has_the_asked_size() -> None:
    rng = np.random.default_rng(1)
    feats = np.concatenate([rng.standard_normal((500, 8)) * 0.01, [[10.0] * 8]]).astype(np.float32)
    picked = coreset(feats, 20)
    assert picked.shape == (20, 8)
    assert any(np.allclose(row, 10.0) for row in picked)


def test_defects_slipped_into_the_good_folder_are_the_first_labels_to_check(tmp_path: Path) -> None:
    """Two defect images among 50 good ones, 50 defects labelled as such: calibrate's list of labels to check names
    the two files first — the line engineer's way to a wrong label before it teaches the head."""
    calib = textile_split("calib")
    good = [p for p, label in calib if label == "nominal"][:50]
    bad = [p for p, label in calib if label != "nominal"][:52]
    profile = calibrate(load_pack(default_pack_dir()), load_vocabulary(), good + bad[50:], "line-1", tmp_path,
                        defects=bad[:50], provider="cpu", region_defects=0)
    suspects = profile.metrics["label_suspects"]
    assert {s["frame"] for s in suspects[:2]} == {str(p) for p in bad[50:]}
    assert all(s["label"] == "good" for s in suspects[:2])
