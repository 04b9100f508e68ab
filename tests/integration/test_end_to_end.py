"""Daemon and station as real processes over loopback ZeroMQ, with a real SQLite file and the starter pack."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from edge.tools.net import free_port, wait_http
from tests.conftest import LINESIDE, REPO, line_config


def _decisions(workdir: Path) -> list[dict]:
    return [json.loads(line) for line in (workdir / "decisions.jsonl").read_text().splitlines()]


def _station_frame_ids(workdir: Path) -> list[str]:
    with sqlite3.connect(workdir / "station.db") as db:
        return [row[0] for row in db.execute("SELECT frame_id FROM review_items")]


@pytest.fixture
def line_workdir(tmp_path: Path, calibrated_profile: Path) -> Path:
    shutil.copytree(calibrated_profile, tmp_path / "profile")
    return tmp_path


def _start_station(config: Path, http_port: int) -> subprocess.Popen[str]:
    station = subprocess.Popen([*LINESIDE, "station", "--config", str(config)], cwd=REPO, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    wait_http(f"http://127.0.0.1:{http_port}/healthz", 60)
    return station


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.terminate()
    try:
        out, _ = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out or ""


def test_every_routed_frame_is_in_the_station_exactly_once(line_workdir: Path,
                                                            textile_images: dict[str, Path]) -> None:
    ingest_port, http_port = free_port(), free_port()
    config = line_config(line_workdir, textile_images["frames"], ingest_port, http_port)
    station = _start_station(config, http_port)
    try:
        daemon = subprocess.run([*LINESIDE, "run", "--config", str(config)], cwd=REPO, text=True,
                                capture_output=True, timeout=300)
        assert daemon.returncode == 0, daemon.stderr[-3000:]
        status = json.loads(daemon.stdout.strip().splitlines()[-1])
    finally:
        station_log = _stop(station)
    decisions = _decisions(line_workdir)
    n_frames = len(list(textile_images["frames"].iterdir()))
    assert len(decisions) == n_frames == status["frames"]
    routed = [d["frame_id"] for d in decisions if d["routed"]]
    assert routed, "the test line should route some frames to review"
    assert len(routed) < n_frames, "and decide some itself"
    stored = _station_frame_ids(line_workdir)
    assert sorted(stored) == sorted(routed), station_log[-2000:]
    assert len(set(stored)) == len(stored)
    assert status["outbox"]["depth"] == 0
    assert not list((line_workdir / "outbox" / "pending").iterdir())
    # every decision records the versions it was made with
    assert all(d["pack"].startswith("starter@") and d["profile"].startswith("test-line@v") for d in decisions)


def test_unreachable_station_is_not_an_error_and_the_outbox_holds_the_frames(
        line_workdir: Path, textile_images: dict[str, Path]) -> None:
    ingest_port, http_port = free_port(), free_port()
    config = line_config(line_workdir, textile_images["frames"], ingest_port, http_port)
    first = subprocess.run([*LINESIDE, "run", "--config", str(config)], cwd=REPO, text=True,
                           capture_output=True, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    status = json.loads(first.stdout.strip().splitlines()[-1])
    assert status["frames"] == len(list(textile_images["frames"].iterdir()))  # it kept inspecting
    assert status["station"]["state"] == "unreachable"
    assert status["routed"] > 0 and status["outbox"]["depth"] == status["routed"]
    said = [line for line in first.stderr.splitlines() if "edge.transport.sender" in line and "unreachable" in line]
    assert len(said) == 1, first.stderr[-3000:]  # said once, not per retry
    assert "Traceback" not in first.stderr

    # the station comes back: the next daemon start sends what waited, nothing lost or doubled
    station = _start_station(config, http_port)
    try:
        second = subprocess.run([*LINESIDE, "run", "--config", str(config)], cwd=REPO, text=True,
                                capture_output=True, timeout=300)
        assert second.returncode == 0, second.stderr[-3000:]
    finally:
        _stop(station)
    routed = [d["frame_id"] for d in _decisions(line_workdir) if d["routed"]]
    assert sorted(_station_frame_ids(line_workdir)) == sorted(routed)
    assert not list((line_workdir / "outbox" / "pending").iterdir())
