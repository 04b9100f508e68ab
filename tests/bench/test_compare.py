"""`python -m edge.bench.compare paced`: the bare encoder's own run times back to back and paced, at a tiny size
(the keys and their order; the figures themselves are in BENCHMARKS.md); `compare contrast`: every frame and box
size timed, each drawn box on the spot."""

from __future__ import annotations

from edge.bench.compare import compare_contrast, compare_paced


def test_paced_reports_each_variants_percentiles_over_the_same_number_of_runs() -> None:
    result = compare_paced(seconds=0.8, rounds=2)
    assert result["runs_per_variant"] == 2 * 3  # 0.8 s over 2 variants and 2 rounds at 15 fps: 3 runs a round
    for variant in ("back_to_back", "paced"):
        p50, p90, p99 = (result[f"{variant}_p{q}_ms"] for q in (50, 90, 99))
        assert 0 < p50 <= p90 <= p99
        assert result[f"{variant}_p99_over_p50"] >= 1.0


def test_contrast_times_every_box_that_fits_its_frame_and_draws_each_on_the_spot() -> None:
    result = compare_contrast(repeat=1, rounds=1)
    sizes = [k for k in result if " box " in k]
    assert sizes == ["500x500 box 40", "500x500 box 200"] + [f"{f} box {s}" for f in ("2448x2048", "5472x3648")
                                                             for s in (40, 200, 1200, 2000)]
    assert all(result[k]["ms"] > 0 and result[k]["edge_error_px"] <= 5 for k in sizes)
    # grown, the spot takes in the grain beside it below 2 σ: within two read steps (every 8th pixel at most)
    assert all(result[k]["ms_grown"] > 0 and result[k]["edge_error_px_grown"] <= 16 for k in sizes)
