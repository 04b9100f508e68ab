"""Batching: several waiting frames through one encoder run give the same decisions as one by one, none lost."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import yaml

from edge.config import parse_config
from edge.daemon import Daemon
from edge.images import read_image
from edge.inspect.inspector import Inspector
from edge.tools.net import free_port
from tests.conftest import line_config


def test_inspect_batch_matches_frame_by_frame(real_inspector: Inspector, textile_images: dict[str, Path]) -> None:
    images = [read_image(p) for p in sorted(textile_images["frames"].iterdir())[::5][:4]]
    batched = real_inspector.inspect_batch(images)
    for image, got in zip(images, batched, strict=True):
        one = real_inspector.inspect(image)
        assert got.verdict == one.verdict
        assert abs(got.anomaly_score - one.anomaly_score) < 1e-3
        assert abs(got.uncertainty.value - one.uncertainty.value) < 1e-3
        np.testing.assert_allclose(got.anomaly_map, one.anomaly_map, atol=1e-3)


def _decisions(tmp_path: Path, frames: Path, profile: Path, **model: object) -> tuple[dict, list[dict]]:
    shutil.copytree(profile, tmp_path / "profile")
    config = line_config(tmp_path, frames, free_port(), free_port())
    data = yaml.safe_load(config.read_text())
    data["line"]["model"].update(model)
    data["line"]["routing"]["audit_fraction"] = 0.0
    data["line"]["transport"]["drain_timeout_s"] = 0.2
    status = Daemon(parse_config(data, str(config), env={}).line).run(120)
    return status, [json.loads(line) for line in (tmp_path / "decisions.jsonl").read_text().splitlines()]


def test_a_batching_daemon_decides_every_frame_as_the_unbatched_one(
        tmp_path: Path, textile_images: dict[str, Path], calibrated_profile: Path) -> None:
    frames = textile_images["frames"]
    one_status, one = _decisions(tmp_path / "one", frames, calibrated_profile)
    status, batched = _decisions(tmp_path / "batch", frames, calibrated_profile, max_batch=4, batch_wait_ms=200)
    n = len(list(frames.iterdir()))
    assert len(batched) == len(one) == n == status["frames"] and status["errors"] == 0
    assert status["batched_frames"] > 0 and one_status["batched_frames"] == 0
    assert [int(d["frame_id"].rsplit(":", 1)[1]) for d in batched] == list(range(n)), "in order, none lost"
    for a, b in zip(one, batched, strict=True):
        assert a["origin"] == b["origin"] and a["verdict"] == b["verdict"] and a["routed"] == b["routed"]
        assert abs(a["anomaly_score"] - b["anomaly_score"]) < 1e-3
