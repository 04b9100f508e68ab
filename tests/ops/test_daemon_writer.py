"""The daemon with its outbox writer on a slow disk (real models, a real folder source, a real outbox; only the
disk's slowness is faked: every directory fsync takes 0.5 s, longer than the models take to fill the writer's queue
even on a loaded machine): deciding goes on while the writer lags, a full writer queue holds the loop back rather
than dropping a frame, and the shutdown writes everything the writer holds before the outbox drain."""

from __future__ import annotations

import json
import logging
import os
import stat
import time
from pathlib import Path

import pytest
import yaml

from edge.config import parse_config
from edge.daemon import Daemon
from edge.inspect.inspector import Inspector
from edge.transport.outbox import Outbox
from tests.ops.conftest import make_line


def test_shutdown_writes_every_routed_frame_the_writer_holds(
        tmp_path: Path, textile_images: dict[str, Path], calibrated_profile: Path, real_inspector: Inspector,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    _, config = make_line(tmp_path, textile_images["frames"], calibrated_profile, fps=1000)
    data = yaml.safe_load(config.read_text())
    data["line"]["routing"].update(review_threshold=0.0)  # every frame to review
    data["line"]["transport"]["writer_queue"] = 4
    cfg = parse_config(data, str(config), env={}).line
    real_fsync = os.fsync

    def slow_fsync(fd: int) -> None:
        real_fsync(fd)
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            time.sleep(0.5)

    monkeypatch.setattr(os, "fsync", slow_fsync)
    daemon = Daemon(cfg, inspector=real_inspector)
    with caplog.at_level(logging.INFO, logger="edge.daemon"):
        status = daemon.run(120)  # the folder ends; no station: what is written stays in the outbox
    n = len(list(textile_images["frames"].iterdir()))
    decisions = [json.loads(line) for line in (tmp_path / "decisions.jsonl").read_text().splitlines()]
    assert status["frames"] == n and len(decisions) == n
    assert all(d["routed"] and d["queued"] for d in decisions), "every routed frame durable before the exit"
    assert [int(d["frame_id"].rsplit(":", 1)[1]) for d in decisions] == list(range(n)), "logged in order"
    assert Outbox(tmp_path / "outbox").depth() == n
    writer = status["writer"]
    assert writer["written"] == n and writer["queue"] == 0 and writer["deepest"] <= 4
    assert writer["blocked"] >= 1, "the disk was slower than the models: deciding waited for room"
    assert writer["groups"] < n, "several frames per directory flush"
    assert any("written and recorded at shutdown" in r.getMessage() for r in caplog.records)
    registry = daemon.metrics.registry
    assert registry.get_sample_value("lineside_writer_events_total", {"kind": "written"}) == n
    assert registry.get_sample_value("lineside_durable_latency_seconds_count") == n
