"""`lineside bench review` at a small, bounded size (CI): Chromium plays the operator through both modes on a real
station; every routed frame answered once, the groups the station made, fewer keys per frame with groups, and the
database holding one review per frame. No timing thresholds here (BENCHMARKS.md holds the measured figures)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_lineside
from tests.station.console_support import need_chromium

pytestmark = [pytest.mark.browser, pytest.mark.timeout(600)]


def test_review_bench_answers_every_frame_with_fewer_keys_in_groups() -> None:
    need_chromium()
    proc = run_lineside("bench", "review", "--json", "--frames", "24", "--console-items", "500", timeout=580)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["parts"] == ["review"] and result["review_queue_items"] == 524
    for mode in ("single", "grouped"):
        assert result[f"review_{mode}_frames"] == 24
        assert result[f"review_{mode}_next_shown_median_ms"] > 0
        assert result[f"review_{mode}_seconds_per_frame"] > 0
        assert result[f"review_{mode}_reviewed_once"] == 24  # the database: one review per frame
    assert result["review_single_groups"] == [] and result["review_single_answers"] == 24
    assert result["review_single_keys"] >= 25  # n, then at least one key per frame
    assert result["review_grouped_groups"] and max(result["review_grouped_groups"]) > 2
    assert result["review_grouped_answers"] < 24
    assert result["review_grouped_keys_per_frame"] < result["review_single_keys_per_frame"]
