"""`python -m edge.bench.compare paced`: the bare encoder's own run times back to back and paced, at a tiny size
(the keys and their order; the figures themselves are in BENCHMARKS.md)."""

from __future__ import annotations

from edge.bench.compare import compare_paced


def test_paced_reports_each_variants_percentiles_over_the_same_number_of_runs() -> None:
    result = compare_paced(seconds=0.8, rounds=2)
    assert result["runs_per_variant"] == 2 * 3  # 0.8 s over 2 variants and 2 rounds at 15 fps: 3 runs a round
    for variant in ("back_to_back", "paced"):
        p50, p90, p99 = (result[f"{variant}_p{q}_ms"] for q in (50, 90, 99))
        assert 0 < p50 <= p90 <= p99
        assert result[f"{variant}_p99_over_p50"] >= 1.0
