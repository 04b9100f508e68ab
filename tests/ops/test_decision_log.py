"""The decision log rolls over by size: every decision is in <log>.1 … then <log>, in order; the oldest go."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from edge.config import parse_config
from edge.daemon import Daemon
from edge.tools.net import free_port
from tests.conftest import line_config


def test_decision_log_rolls_over_and_keeps_every_recent_decision(tmp_path: Path, textile_images: dict[str, Path],
                                                                  calibrated_profile: Path) -> None:
    shutil.copytree(calibrated_profile, tmp_path / "profile")
    config = line_config(tmp_path, textile_images["frames"], free_port(), free_port())
    data = yaml.safe_load(config.read_text())
    data["line"].update(decision_log_max_bytes=4096, decision_log_keep=1)
    data["line"]["transport"]["drain_timeout_s"] = 0.2
    status = Daemon(parse_config(data, str(config), env={}).line).run(120)
    log, rolled = tmp_path / "decisions.jsonl", tmp_path / "decisions.jsonl.1"
    assert rolled.exists() and not (tmp_path / "decisions.jsonl.2").exists()
    assert rolled.stat().st_size >= 4096 and log.stat().st_size < 4096 + 1024
    lines = rolled.read_text().splitlines() + log.read_text().splitlines()
    seqs = [int(json.loads(line)["frame_id"].rsplit(":", 1)[1]) for line in lines]
    assert seqs == list(range(status["frames"] - len(seqs), status["frames"])), "the newest, in order, none torn"
