"""SIGTERM during a stream loses nothing: a real station process and a real daemon process over loopback ZeroMQ.

The station is frozen (SIGSTOP) mid-stream so that acks stop and items are in flight when the daemon gets SIGTERM;
every frame the daemon routed to review must then be either in the station's database or on disk in the outbox.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import urllib.request
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

from edge.tools.net import free_port
from edge.transport.outbox import Outbox
from tests.conftest import LINESIDE, REPO
from tests.ops.conftest import make_line, wait_for


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def _routed(workdir: Path) -> list[str]:
    path = workdir / "decisions.jsonl"
    if not path.exists():
        return []
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]
    assert all(d["queued"] for d in lines if d["routed"])
    return [d["frame_id"] for d in lines if d["routed"]]


def _station_metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return {s.name: s.value for f in text_string_to_metric_families(r.read().decode())
                for s in f.samples if s.labels.get("kind") in (None, "stored")}


def test_sigterm_leaves_every_routed_frame_acked_or_in_the_outbox(tmp_path: Path, textile_images: dict[str, Path],
                                                                  calibrated_profile: Path) -> None:
    _, config = make_line(tmp_path, textile_images["frames"], calibrated_profile, loop=True, fps=30,
                          drain_timeout_s=1.0)
    data = yaml.safe_load(config.read_text())
    metrics_port, health_port = free_port(), free_port()
    data["station"]["metrics_port"] = metrics_port
    data["line"]["ops"] = {"health_port": health_port}
    config.write_text(yaml.safe_dump(data))
    http_port = data["station"]["http_port"]

    station = subprocess.Popen([*LINESIDE, "station", "--config", str(config)], cwd=REPO, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    daemon: subprocess.Popen[str] | None = None
    try:
        wait_for(lambda: _http_ok(f"http://127.0.0.1:{http_port}/healthz"), 60, "the station")
        daemon = subprocess.Popen([*LINESIDE, "--log-format", "json", "run", "--config", str(config)], cwd=REPO,
                                  text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        wait_for(lambda: len(_routed(tmp_path)) >= 4, 120, "routed frames")
        # a routed frame is logged once it is in the outbox; the sender delivers it to the station after that
        wait_for(lambda: _station_metrics(metrics_port)["lineside_station_ingest_total"] >= 1, 30,
                 "the station storing a routed frame")
        assert _station_metrics(metrics_port)["process_resident_memory_bytes"] > 0
        assert _http_ok(f"http://127.0.0.1:{health_port}/readyz")

        station.send_signal(signal.SIGSTOP)  # acks stop; what is routed from now on waits in the outbox
        n = len(_routed(tmp_path))
        wait_for(lambda: len(_routed(tmp_path)) >= n + 3, 60, "frames routed while the station is frozen")
        daemon.send_signal(signal.SIGTERM)
        out, err = daemon.communicate(timeout=60)
        assert daemon.returncode == 0, err[-3000:]
        status = json.loads(out.strip().splitlines()[-1])
        logged = [json.loads(line) for line in err.splitlines() if line.startswith("{")]  # --log-format json
        assert any("SIGTERM received" in entry["msg"] for entry in logged)
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.kill()
        station.send_signal(signal.SIGCONT)
        station.terminate()
        station.communicate(timeout=30)

    routed = _routed(tmp_path)
    with sqlite3.connect(tmp_path / "station.db") as db:
        stored = {row[0] for row in db.execute("SELECT frame_id FROM review_items")}
    outbox = Outbox(tmp_path / "outbox")
    waiting = set()
    for name in outbox.take(100_000):
        item = outbox.load(name)
        assert item is not None
        waiting.add(item.frame_id)
    assert waiting, "the frozen station left items in the outbox"
    assert status["outbox"]["depth"] == len(waiting)
    missing = [f for f in routed if f not in stored and f not in waiting]
    assert not missing, f"{len(missing)} of {len(routed)} routed frames are lost: {missing[:5]}"
    assert len(routed) == status["routed"]
