"""The hostile-input run's small form: the named bad cases and 300 mutated files through a real `lineside run` over
a real folder source; every file decided or skipped with its reason, nothing crashes, peak RSS under 1 GB. The full
form is `python -m edge.tools.hostile --mutants 10000` (README, "Hostile input")."""

from __future__ import annotations

from pathlib import Path

from edge.tools.hostile import RSS_LIMIT_MB, describe, mutate, run


def test_a_hostile_folder_is_decided_or_skipped_by_reason_under_the_memory_ceiling(
        tmp_path: Path, calibrated_profile: Path) -> None:
    report = run(tmp_path, mutants=300, profile=calibrated_profile, timeout_s=300, echo=lambda *_: None)
    assert report["pass"], describe(report)
    assert report["files"] == 300 + 40 + 15
    assert report["good_decided"] == report["good_files"] == 40
    assert report["peak_rss_mb"] < RSS_LIMIT_MB
    skipped = report["skipped"]
    assert skipped["not_regular"] == 4 and skipped["too_large"] == 1 and skipped["empty"] == 1
    assert skipped["too_many_pixels"] >= 2 and skipped["undecodable"] >= 2
    # the same per-reason counters reached /metrics (lineside_capture_events{kind=…}) while it ran
    assert {"not_regular", "too_many_pixels", "undecodable"} <= set(report["metrics_seen"])


def test_mutations_are_reproducible_and_damage_the_file() -> None:
    import numpy as np

    data = bytes(range(256)) * 40
    a = [mutate(data, np.random.default_rng(s)) for s in range(50)]
    b = [mutate(data, np.random.default_rng(s)) for s in range(50)]
    assert a == b and all(m != data for m in a)
