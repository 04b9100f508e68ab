"""`lineside bench fit`: calibrate and train timed, each in a process of its own, train on the version calibrate
wrote; the reviewed frames are the training export an operator's answers make."""

from edge.bench.fit import bench_fit, reviewed_textile
from edge.demo import default_pack_dir


def test_reviewed_frames_come_round_again_when_more_are_asked_for_than_the_splits_hold() -> None:
    frames = reviewed_textile(850)  # the calib and test splits hold 800 images
    assert len(frames) == 850 and frames[800].image_path == frames[0].image_path
    assert {f.final_verdict for f in frames} == {"good", "spot", "texture"}
    assert all((f.defect_class is None) == f.is_good and f.image_path.is_file() for f in frames)
    assert {(f.width, f.height) for f in frames} == {(250, 250)}  # the textile frames' size


def test_fit_bench_times_calibrate_a_train_on_its_version_and_the_next_train() -> None:
    result = bench_fit(default_pack_dir(), good_images=8, defect_images=6, reviewed=12, new_reviews=3)
    assert result["calibrate_s"] > 0 and result["train_s"] > 0 and result["retrain_s"] > 0
    assert result["calibrate_images"] == 14 and result["train_reviewed"] == 12
    assert result["train_rows"] == 14 + 12  # calibrate's labelled rows and every reviewed frame
    assert result["retrain_rows"] == 14 + 12 + 3 and result["retrain_new"] == 3
    frames = reviewed_textile(15)
    # the three new frames and the good frames the line model learns from again, not the defects reviewed before
    assert result["retrain_read"] == sum(f.is_good for f in frames) + sum(not f.is_good for f in frames[12:])
