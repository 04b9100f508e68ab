"""The prepared GPU check, run here on the CPU provider against the CPU path: the same code a device run takes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import PACK


def test_device_check_reports_decisions_against_the_cpu_path(calibrated_profile: Path,
                                                              textile_images: dict[str, Path]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "edge.bench.device", "--provider", "cpu", "--pack", str(PACK), "--profile",
         str(calibrated_profile), "--frames", str(textile_images["frames"]), "--n", "6", "--seconds", "1",
         "--json"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["provider_tower"] == report["provider_graph"] == "CPUExecutionProvider"
    against = report["against_cpu"]
    # the same provider and graph as the reference: every decision the same, to the last bit
    assert against["frames"] == against["verdicts_equal"] == against["region_counts_equal"] == 6
    assert against["score_max_abs_diff"] == against["anomaly_map_max_abs_diff"] == 0.0
    assert report["encoder_fps"] > 0 and report["pipeline_fps"] > 0
    assert 0 < report["pipeline_over_encoder"] < 2


def test_device_check_refuses_an_empty_frames_folder(tmp_path: Path, calibrated_profile: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "edge.bench.device", "--provider", "cpu", "--pack", str(PACK), "--profile",
         str(calibrated_profile), "--frames", str(tmp_path), "--json"], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "no frames" in result.stderr
