"""The CI soak: `lineside soak --minutes 2` (station + daemon processes, looping textile source at 15 fps)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge.tools.soak import Sample, verdict
from tests.conftest import run_lineside


@pytest.mark.soak
def test_two_minute_soak_has_a_flat_memory_line(tmp_path: Path, calibrated_profile: Path) -> None:
    result = run_lineside("soak", "--minutes", "2", "--interval", "10", "--workdir", str(tmp_path / "soak"),
                          "--profile", str(calibrated_profile), timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "verdict: PASS" in result.stdout
    report = json.loads((tmp_path / "soak" / "soak-result.json").read_text())
    assert len(report["samples"]) == 12 and report["verdict"]["frames"] > 100
    assert report["verdict"]["rss_peak_mb"] <= 400


def _s(t: float, rss: float, fds: int) -> Sample:
    return Sample(t, rss, fds, 10, int(t * 10), 10.0, 50.0, 80.0, 90.0, 100.0)


def test_soak_verdict_rules() -> None:
    flat = [_s(t, 200 + t / 1000, 19) for t in range(10, 130, 10)]
    assert verdict(flat, 30)["pass"]
    growing = [_s(t, 200 + t / 5, 19) for t in range(10, 130, 10)]
    assert not verdict(growing, 30)["growth_ok"]
    leaking = [_s(t, 200, 19 + t // 40) for t in range(10, 130, 10)]
    assert not verdict(leaking, 30)["fds_ok"]
    blip = [_s(t, 200, 20 if t == 100 else 19) for t in range(10, 130, 10)]  # a file open at one sample
    assert verdict(blip, 30)["fds_ok"], "a transient FD is not a leak"
    fat = [_s(t, 450, 19) for t in range(10, 130, 10)]
    assert not verdict(fat, 30)["rss_ok"]
