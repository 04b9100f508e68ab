"""deploy/: the systemd units say what the daemon does (notify, watchdog, restart, reload), they pass
`systemd-analyze verify` where it is installed, and the Jetson entry point's shell and Python halves run here."""

from __future__ import annotations

import configparser
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

UNITS = REPO / "deploy" / "systemd"
JETSON = REPO / "deploy" / "jetson"


def _unit(name: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNITS / name)
    return parser


@pytest.mark.parametrize("name", ["lineside-daemon.service", "lineside-station.service"])
def test_units_are_notify_with_watchdog_and_restart(name: str) -> None:
    service = _unit(name)["Service"]
    assert service["Type"] == "notify" and service["NotifyAccess"] == "main"
    assert int(service["WatchdogSec"]) > 0 and service["Restart"] == "on-failure"
    assert service["KillSignal"] == "SIGTERM"


def test_daemon_watchdog_is_a_backstop_behind_the_internal_one() -> None:
    from edge.config import OpsConfig, TransportConfig

    service = _unit("lineside-daemon.service")["Service"]
    assert int(service["WatchdogSec"]) > OpsConfig().inference_stuck_s
    assert int(service["TimeoutStopSec"]) > TransportConfig().drain_timeout_s
    assert "-HUP" in service["ExecReload"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    for unit in UNITS.glob("*.service"):  # point the units at this checkout so the executable check can pass
        (tmp_path / unit.name).write_text(unit.read_text().replace("/opt/lineside", str(REPO)))
    result = subprocess.run(["systemd-analyze", "verify", *map(str, tmp_path.glob("*.service"))],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_jetson_entrypoint_parses_and_its_preflight_runs_in_this_environment(tmp_path: Path,
                                                                            calibrated_profile: Path) -> None:
    assert subprocess.run(["bash", "-n", str(JETSON / "entrypoint.sh")], timeout=30).returncode == 0
    config = tmp_path / "config.yaml"
    config.write_text(f"line:\n  source: {{kind: folder, path: {tmp_path}}}\n  model: {{pack: {REPO}/models/starter,"
                      " provider: cpu}\n"
                      f"  profile: {calibrated_profile}\n")
    env = {**os.environ, "LINESIDE_CONFIG": str(config), "LINESIDE_PYTHON": sys.executable,
           "ORT_TENSORRT_CACHE_PATH": str(tmp_path / "engines")}
    result = subprocess.run(["bash", str(JETSON / "entrypoint.sh"), "preflight"], capture_output=True, text=True,
                            env=env, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["ok"] and report["pack"].startswith("ok") and report["engine_cache"].startswith("ok")
    assert "builds them" in result.stderr and (tmp_path / "engines").is_dir()
