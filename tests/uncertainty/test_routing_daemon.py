"""Routing in the running daemon: frames unlike anything the line knows go to review as `ood` (counted, first in
the queue), the audit samples auto-decisions as `sampled`, and a profile's calibrated threshold replaces the
configured one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from edge.config import parse_config
from edge.daemon import Daemon
from edge.fit.failure import fit_ood
from edge.images import read_image
from edge.inspect.inspector import load_inspector
from edge.profile.versions import load_profile, save_profile
from edge.tools.net import free_port
from edge.transport.outbox import Outbox
from edge.transport.schema import ReviewItem
from tests.conftest import line_config


@pytest.fixture
def ood_line(tmp_path: Path, textile_images: dict[str, Path], calibrated_profile: Path) -> tuple[Path, Path]:
    """The test profile plus an OoD detector fit on the line's good images; a folder of textile frames with a
    covered lens and sensor noise among them."""
    shutil.copytree(calibrated_profile, tmp_path / "profile")
    frames = tmp_path / "frames"
    frames.mkdir()
    for i, path in enumerate(sorted(textile_images["test_nominal"].iterdir())[:4]):
        shutil.copy(path, frames / f"{i:02d}_textile{path.suffix}")
    cv2.imwrite(str(frames / "10_black.png"), np.zeros((256, 256, 3), np.uint8))
    cv2.imwrite(str(frames / "11_noise.png"), np.random.default_rng(0).integers(0, 256, (256, 256, 3), np.uint8))
    config = line_config(tmp_path, frames, free_port(), free_port())
    cfg = parse_config(yaml.safe_load(config.read_text()), str(config), env={}).line
    inspector = load_inspector(cfg)
    good = np.stack([inspector.image_encoder.encode(read_image(p)).global_
                     for p in sorted(textile_images["good"].iterdir())])
    profile = load_profile(tmp_path / "profile")
    profile.ood = fit_ood(good)
    save_profile(profile, tmp_path / "profile")
    return tmp_path, config


def _run(config: Path, **routing: object) -> tuple[Daemon, dict, list[dict]]:
    data = yaml.safe_load(config.read_text())
    data["line"]["routing"].update(routing)
    data["line"]["transport"]["drain_timeout_s"] = 0.2  # no station here: do not wait for acks at the end
    cfg = parse_config(data, str(config), env={}).line
    daemon = Daemon(cfg)
    status = daemon.run(120)
    decisions = [json.loads(line) for line in Path(data["line"]["decision_log"]).read_text().splitlines()]
    return daemon, status, decisions


def test_frames_unlike_the_line_go_to_review_as_ood_and_are_counted(ood_line: tuple[Path, Path]) -> None:
    workdir, config = ood_line
    daemon, status, decisions = _run(config, audit_fraction=0.0)
    by_name = {d["origin"].rsplit("/", 1)[-1]: d for d in decisions}
    assert by_name["10_black.png"]["reason"] == "ood" and by_name["11_noise.png"]["reason"] == "ood"
    assert all(d["reason"] != "ood" for name, d in by_name.items() if "textile" in name)
    assert status["ood"] == 2 and status["routed"] >= 2
    metrics = daemon.metrics.registry
    assert metrics.get_sample_value("lineside_ood_alarms_total") == 2
    assert metrics.get_sample_value("lineside_review_reasons_total", {"reason": "ood"}) == 2
    outbox = Outbox(workdir / "outbox")  # the station is not running: everything routed waits here
    items = [ReviewItem.model_validate_json(p.header) for p in map(outbox.load, outbox.take(100)) if p is not None]
    ood_items = [item for item in items if item.reason == "ood"]
    assert len(ood_items) == 2 and all(item.uncertainty == 1.0 for item in ood_items), "first in the queue"


def test_the_audit_sends_auto_decided_frames_as_sampled(ood_line: tuple[Path, Path]) -> None:
    _, config = ood_line
    _, status, decisions = _run(config, audit_fraction=1.0, review_threshold=1.0, audit_seed=0)
    reasons = [d["reason"] for d in decisions]
    assert reasons.count("ood") == 2 and reasons.count("sampled") == len(decisions) - 2
    assert status["sampled"] == len(decisions) - 2 and status["auto"] == 0
