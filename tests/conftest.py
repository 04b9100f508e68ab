"""Shared fixtures: the committed starter pack, real textile images, a calibrated line profile, free ports."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from edge.tools.net import free_port

REPO = Path(__file__).resolve().parent.parent
PACK = REPO / "models" / "starter"
LINESIDE = [sys.executable, "-m", "edge.cli"]


def run_lineside(*args: str, timeout: float = 300, env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LINESIDE, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, cwd=cwd or REPO)


@pytest.fixture(scope="session")
def textile_images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Folders of real textile images: 'good' (train nominal), and test-split frames of every label."""
    from edge.datasets import textile_split

    root = tmp_path_factory.mktemp("textile")
    folders = {}
    good = [p for p, label in textile_split("train") if label == "nominal"][:15]
    folders["good"] = root / "good"
    folders["good"].mkdir()
    for p in good:
        shutil.copy(p, folders["good"] / p.name)
    test = textile_split("test")
    for label in ("nominal", "local", "global"):
        d = root / f"test_{label}"
        d.mkdir()
        for p in [q for q, lab in test if lab == label][:8]:
            shutil.copy(p, d / p.name)
        folders[f"test_{label}"] = d
    frames = root / "frames"
    frames.mkdir()
    i = 0
    for label in ("nominal", "local", "global"):
        for p in sorted(folders[f"test_{label}"].iterdir()):
            shutil.copy(p, frames / f"{i:04d}_{label}.jpg")
            i += 1
    folders["frames"] = frames
    return folders


def line_config(workdir: Path, frames: Path, ingest_port: int, http_port: int, **line_overrides: object) -> Path:
    """A config.yaml for one test line + station, everything under `workdir`."""
    line = {
        "id": "test-line",
        "source": {"kind": "folder", "id": "cam0", "path": str(frames), "fps": 30, "loop": False},
        "model": {"pack": str(PACK), "provider": "cpu"},
        "profile": str(workdir / "profile"),
        "routing": {"review_threshold": 0.35},
        "transport": {"station": f"tcp://127.0.0.1:{ingest_port}", "outbox_dir": str(workdir / "outbox"),
                      "ack_timeout_s": 1.0, "retry_initial_s": 0.2, "retry_max_s": 1.0, "drain_timeout_s": 15},
        "status_file": str(workdir / "status.json"),
        "decision_log": str(workdir / "decisions.jsonl"),
    }
    line.update(line_overrides)  # type: ignore[arg-type]
    cfg = {"line": line, "station": {
        "ingest_bind": f"tcp://127.0.0.1:{ingest_port}", "http_host": "127.0.0.1", "http_port": http_port,
        "database_url": f"sqlite:///{workdir / 'station.db'}", "storage_dir": str(workdir / "images")}}
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="session")
def calibrated_profile(tmp_path_factory: pytest.TempPathFactory, textile_images: dict[str, Path]) -> Path:
    """A line profile calibrated by the real `lineside calibrate` on real good textile images."""
    workdir = tmp_path_factory.mktemp("calibrated")
    config = line_config(workdir, textile_images["frames"], free_port(), free_port())
    result = run_lineside("calibrate", "--config", str(config), "--good", str(textile_images["good"]))
    assert result.returncode == 0, result.stderr
    return workdir / "profile"


def wait_until(predicate: Callable[[], object], timeout: float) -> bool:
    """Poll `predicate` every 50 ms until it holds or `timeout` s pass; its last answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())
