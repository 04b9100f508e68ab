import json
from pathlib import Path

import numpy as np
import pytest

from edge.profile.line_profile import LineProfile, ProfileError
from edge.profile.versions import load_profile, save_profile
from edge.vlm.vocabulary import load_vocabulary


def _profile() -> LineProfile:
    rng = np.random.default_rng(0)
    bank = {8: rng.standard_normal((20, 4)).astype(np.float32)}
    return LineProfile(line_id="l1", version="", pack_version="starter@1", vocabulary=load_vocabulary(), bank=bank,
                       patch_stats={8: {"zero": (0.1, 0.2), "few": (0.3, 0.4)}}, anomaly_threshold=2.0,
                       anomaly_scale=0.5)


def test_versions_are_written_side_by_side_and_current_moves(tmp_path: Path) -> None:
    first = save_profile(_profile(), tmp_path)
    second = save_profile(_profile(), tmp_path)
    assert (first, second) == ("v0001", "v0002")
    loaded = load_profile(tmp_path, pack_version="starter@1")
    assert loaded.version == "v0002" and loaded.anomaly_threshold == 2.0
    assert loaded.patch_stats[8]["few"] == (0.3, 0.4)
    np.testing.assert_allclose(loaded.bank[8], _profile().bank[8], atol=1e-2)  # stored as float16


def test_profile_of_another_pack_is_refused(tmp_path: Path) -> None:
    save_profile(_profile(), tmp_path)
    with pytest.raises(ProfileError, match="lineside calibrate` again"):
        load_profile(tmp_path, pack_version="other@2")


def test_missing_profile_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="lineside calibrate"):
        load_profile(tmp_path / "none")


def test_a_profile_written_before_the_frame_score_and_head_still_loads(tmp_path: Path) -> None:
    import json

    save_profile(_profile(), tmp_path)
    path = tmp_path / "v0001" / "profile.json"
    data = json.loads(path.read_text())
    for key in ("frame_stats", "frame_weights", "frame_threshold", "frame_scale", "head"):
        data.pop(key)
    path.write_text(json.dumps(data))
    old = load_profile(tmp_path)
    assert old.head is None and old.frame_threshold is None
    # it decides on the map's maximum against the threshold it was fit with
    assert old.frame_score(2.5, 99.0) == (2.5, 2.0, 0.5)


def test_frame_score_fuses_map_and_global_in_good_standard_deviations(tmp_path: Path) -> None:
    from edge.fit.classifier import fit_head

    profile = _profile()
    profile.frame_stats = {"map": (1.0, 0.5), "global": (-2.0, 1.0)}
    profile.frame_weights = {"map": 1.0, "global": 1.0}
    profile.frame_threshold, profile.frame_scale = 3.0, 0.7
    assert profile.frame_score(2.0, 0.0) == (2.0, 3.0, 0.7)  # ((2-1)/0.5 + (0+2)/1) / 2
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 6))
    profile.head = fit_head(x, (x[:, 0] > 0).astype(float))
    save_profile(profile, tmp_path)
    loaded = load_profile(tmp_path)
    assert loaded.frame_stats == profile.frame_stats and loaded.frame_threshold == 3.0
    assert loaded.head is not None
    np.testing.assert_allclose(loaded.head.predict(x), profile.head.predict(x), rtol=1e-6)


def test_the_search_subspace_is_kept_and_a_profile_from_before_searches_in_full(tmp_path: Path) -> None:
    profile = _profile()
    profile.search_basis = {8: np.linalg.qr(np.random.default_rng(1).standard_normal((4, 4)))[0][:2].astype(
        np.float32)}
    save_profile(profile, tmp_path)
    loaded = load_profile(tmp_path)
    assert set(loaded.search_basis) == {8}
    np.testing.assert_array_equal(loaded.search_basis[8], profile.search_basis[8])  # float32, as fitted
    assert loaded.to_json()["search_basis"]["dims"] == {"8": 2}
    save_profile(_profile(), tmp_path)  # no subspace: nothing written, nothing read
    assert not (tmp_path / "v0002" / "search_basis.npz").exists()
    assert load_profile(tmp_path).search_basis == {}


def test_the_coarse_to_fine_share_is_kept_and_one_out_of_range_is_refused(tmp_path: Path) -> None:
    profile = _profile()
    profile.coarse_share = 0.125
    save_profile(profile, tmp_path)
    assert load_profile(tmp_path).coarse_share == 0.125
    save_profile(_profile(), tmp_path)
    assert load_profile(tmp_path).coarse_share is None, "every patch searched, as before the option"
    meta = tmp_path / "v0002" / "profile.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "coarse_share": 2}))
    with pytest.raises(ProfileError, match="unreadable: coarse_share 2 is not in"):
        load_profile(tmp_path)
