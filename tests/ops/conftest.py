"""A line config under tmp_path with the calibrated test profile, and a way to run a Daemon in a thread."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge.config import LineConfig, parse_config
from edge.inspect.inspector import Inspector, load_inspector
from edge.tools.net import free_port
from tests.conftest import line_config


def make_line(workdir: Path, frames: Path, profile: Path, *, loop: bool = False, fps: float = 30,
              ops: dict[str, Any] | None = None, drain_timeout_s: float = 1.0) -> tuple[LineConfig, Path]:
    if not (workdir / "profile").exists():
        shutil.copytree(profile, workdir / "profile")
    path = line_config(workdir, frames, free_port(), free_port())
    data = yaml.safe_load(path.read_text())
    data["line"]["source"].update(loop=loop, fps=fps)
    data["line"]["transport"]["drain_timeout_s"] = drain_timeout_s
    if ops:
        data["line"]["ops"] = ops
    path.write_text(yaml.safe_dump(data))
    return parse_config(data, str(path), env={}).line, path


@pytest.fixture(scope="session")
def real_inspector(tmp_path_factory: pytest.TempPathFactory, calibrated_profile: Path,
                   textile_images: dict[str, Path]) -> Inspector:
    cfg, _ = make_line(tmp_path_factory.mktemp("inspector"), textile_images["frames"], calibrated_profile)
    return load_inspector(cfg)


def wait_for(cond: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


class Running:
    """daemon.run() in a background thread; .result is its status once it returns."""

    def __init__(self, daemon: Any, seconds: float | None = None) -> None:
        self.daemon = daemon
        self.result: dict[str, Any] | None = None
        self.thread = threading.Thread(target=self._run, args=(seconds,), daemon=True)
        self.thread.start()

    def _run(self, seconds: float | None) -> None:
        self.result = self.daemon.run(seconds)

    def stop(self, timeout: float = 30) -> dict[str, Any]:
        self.daemon.stop_event.set()
        self.thread.join(timeout)
        assert self.result is not None, "daemon.run() did not return"
        return self.result
