import pytest

from edge.profile.line_profile import RegionCut


def test_a_region_cut_keeps_its_contrast_and_one_from_before_draws_the_map_s_boxes() -> None:
    cut = RegionCut("line", 2.0, None, 0.3, 3.0)
    assert RegionCut.from_dict(cut.as_dict()) == cut
    before = {"source": "map", "threshold": 7.5, "peak_fraction": 0.7, "relative": None}  # saved before it existed
    assert RegionCut.from_dict(before).contrast is None
    with pytest.raises(ValueError, match="contrast"):
        RegionCut.from_dict({**cut.as_dict(), "contrast": 0})
    grown = RegionCut("map", 7.5, None, 0.2, 4.0, 2.0)
    assert RegionCut.from_dict(grown.as_dict()) == grown and RegionCut.from_dict(before).grow is None
    for contrast, grow in ((4.0, 4.0), (4.0, 0.0), (None, 2.0)):
        with pytest.raises(ValueError, match="grow"):
            RegionCut.from_dict({**grown.as_dict(), "contrast": contrast, "grow": grow})


def test_a_line_cut_adds_the_anomaly_map_it_was_fit_with_and_one_from_before_reads_the_logit_alone() -> None:
    import numpy as np

    logit = np.full((4, 4), -10.0, np.float32)
    anomaly = np.zeros((4, 4), np.float32)
    anomaly[1, 2] = 5.0
    cut = RegionCut("line", 0.0, None, 0.3, map_weight=4.0, map_level=2.0)
    assert RegionCut.from_dict(cut.as_dict()) == cut
    combined = cut.line_region_map(logit, anomaly)
    assert combined[1, 2] == -10.0 + 4.0 * 3.0 and combined[0, 0] == -10.0 - 4.0 * 2.0
    before = {"source": "line", "threshold": 0.0, "peak_fraction": None, "relative": 0.3}  # saved before it existed
    assert (RegionCut.from_dict(before).line_region_map(logit, anomaly) == logit).all()
    with pytest.raises(ValueError, match="map_weight"):
        RegionCut.from_dict({**cut.as_dict(), "map_weight": -1.0})
    with pytest.raises(ValueError, match="map_level"):
        RegionCut.from_dict({**cut.as_dict(), "map_level": float("nan")})
