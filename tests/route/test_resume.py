"""Batch runs resume: a real `lineside run` killed -9 halfway through a 2,000-file folder and started again decides
each file once, and a real station process holds each routed frame once. The crash windows a kill rarely hits
(between the route record and the outbox put, between the decision log line and the done record) are laid on disk
as a crash leaves them and settled by a real daemon."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
from collections import Counter
from pathlib import Path

import pytest
import yaml

from edge.config import parse_config
from edge.daemon import Daemon
from edge.route.resume import BatchJournal, journal_path
from edge.tools.net import free_port, wait_http
from edge.transport.outbox import Outbox
from tests.conftest import LINESIDE, REPO, line_config
from tests.ops.conftest import wait_for

FILES = 400  # CI's form; the 2,000-file run of the acceptance is the slow one (pytest -m slow)


def _decisions(workdir: Path) -> list[dict]:
    path = workdir / "decisions.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def _batch(folder: Path, sources: Path, n: int) -> list[Path]:
    """n files named in order, hard links to the real textile frames in turn (2,000 files cost no disk)."""
    folder.mkdir()
    frames = sorted(sources.iterdir())
    paths = []
    for i in range(n):
        path = folder / f"{i:05d}.jpg"
        os.link(frames[i % len(frames)], path)
        paths.append(path)
    return paths


def _config(workdir: Path, frames: Path, profile: Path, drain_timeout_s: float = 30) -> Path:
    (workdir / "profile").symlink_to(profile)
    config = line_config(workdir, frames, free_port(), free_port())
    data = yaml.safe_load(config.read_text())
    data["line"]["source"]["fps"] = 1000  # as fast as the inspector goes
    data["line"]["routing"].update(audit_fraction=0.3, audit_seed=7)  # many routed frames, not all
    data["line"]["transport"]["drain_timeout_s"] = drain_timeout_s
    data["line"]["model"].update(max_batch=4, batch_wait_ms=20)
    config.write_text(yaml.safe_dump(data))
    return config


@pytest.mark.parametrize("files", [FILES, pytest.param(2000, marks=pytest.mark.slow)])
def test_kill_9_halfway_through_a_batch_then_a_restart_decides_each_file_once(
        files: int, tmp_path: Path, textile_images: dict[str, Path], calibrated_profile: Path) -> None:
    paths = _batch(tmp_path / "batch", textile_images["frames"], files)
    config = _config(tmp_path, tmp_path / "batch", calibrated_profile)
    http_port = yaml.safe_load(config.read_text())["station"]["http_port"]
    station = subprocess.Popen([*LINESIDE, "station", "--config", str(config)], cwd=REPO, text=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    daemon: subprocess.Popen[str] | None = None
    try:
        wait_http(f"http://127.0.0.1:{http_port}/healthz", 60, station)
        run = [*LINESIDE, "run", "--config", str(config)]
        daemon = subprocess.Popen(run, cwd=REPO, text=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: len(_decisions(tmp_path)) >= files // 2, 300, "half the batch decided")
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(10)
        before = _decisions(tmp_path)
        assert files // 2 <= len(before) < files, "killed halfway"

        daemon = subprocess.Popen(run, cwd=REPO, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = daemon.communicate(timeout=600)  # a batch source ends: `lineside run` exits by itself
        assert daemon.returncode == 0, err[-3000:]
        assert "resuming the batch" in err
        status = json.loads(out.strip().splitlines()[-1])
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.kill()
        station.send_signal(signal.SIGTERM)
        station.wait(30)

    decisions = _decisions(tmp_path)
    assert len(decisions) == files, "2,000 decisions in all"
    assert Counter(d["origin"] for d in decisions) == Counter(str(p) for p in paths), "each file once"
    assert len({d["frame_id"] for d in decisions}) == files
    assert status["capture"]["resumed"] == len(before) and status["frames"] == files - len(before)
    routed = {d["frame_id"] for d in decisions if d["routed"]}
    assert files // 20 < len(routed) < files
    with sqlite3.connect(tmp_path / "station.db") as db:
        stored = [row[0] for row in db.execute("SELECT frame_id FROM review_items")]
    assert sorted(stored) == sorted(routed), "the station holds each routed frame once, and nothing else"
    assert Outbox(tmp_path / "outbox").depth() == 0
    print(f"{files} files: {len(before)} decided before the kill -9, {files - len(before)} after the restart; "
          f"{len(decisions)} decisions, {len(set(d['origin'] for d in decisions))} files; {len(routed)} routed, "
          f"{len(stored)} in the station")

    # a finished batch stays finished: a third start decides nothing
    third = subprocess.run(run, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert third.returncode == 0 and len(_decisions(tmp_path)) == files
    assert json.loads(third.stdout.strip().splitlines()[-1])["capture"]["resumed"] == files


def test_the_crash_windows_are_settled_from_the_journal_and_the_decision_log(
        tmp_path: Path, textile_images: dict[str, Path], calibrated_profile: Path) -> None:
    paths = _batch(tmp_path / "batch", textile_images["frames"], 12)
    config = _config(tmp_path, tmp_path / "batch", calibrated_profile, drain_timeout_s=0.2)
    cfg = parse_config(yaml.safe_load(config.read_text()), str(config), env={}).line
    journal_file = journal_path(cfg)
    assert journal_file == tmp_path / "decisions.jsonl.resume"

    # What a process killed at three moments leaves: files 0-4 done; file 5 routed (route record written, its
    # outbox put perhaps not); file 6 decided and logged, its done record lost. An older run of another batch
    # left a line for file 7 in the log, before this journal began: it must not count.
    old = "test-line:cam0:1:0"
    with open(tmp_path / "decisions.jsonl", "w") as log:
        log.write(json.dumps({"frame_id": old, "origin": str(paths[7]), "routed": False}) + "\n")
    journal = BatchJournal(journal_file, cfg, boot_id="a0")
    for i in range(5):
        journal.done(str(paths[i]), f"test-line:cam0:a0:{i}")
    routed_id = "test-line:cam0:a0:5"
    journal.will_route(str(paths[5]), routed_id, "sampled")
    journal.close()
    with open(tmp_path / "decisions.jsonl", "a") as log:
        log.write(json.dumps({"frame_id": "test-line:cam0:a0:6", "origin": str(paths[6]), "routed": False}) + "\n")

    status = Daemon(cfg).run(120)
    decisions = _decisions(tmp_path)[1:]  # the old batch's line stays as it was
    # 0-4 and 6 not decided again, 5 decided again (it may not have reached the outbox), the rest once
    assert Counter(d["origin"] for d in decisions) == Counter(str(p) for p in paths[5:])
    again = next(d for d in decisions if d["origin"] == str(paths[5]))
    assert (again["frame_id"], again["reason"], again["routed"]) == (routed_id, "sampled", True)
    assert status["capture"]["resumed"] == 6 and status["frames"] == 6
    pending = {Outbox(tmp_path / "outbox").load(n).frame_id  # type: ignore[union-attr]
               for n in Outbox(tmp_path / "outbox").take(100)}
    assert routed_id in pending, "on its way to the station under the id it had"


def test_done_records_cost_the_decision_loop_no_fsync_and_survive_a_kill(
        tmp_path: Path, textile_images: dict[str, Path], calibrated_profile: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A `route` record is on disk before the outbox put (fsynced); a `done` record is written without a flush of
    its own — a kill keeps it (the page cache), the next route record or the close takes it to the disk."""
    paths = _batch(tmp_path / "batch", textile_images["frames"], 3)
    config = _config(tmp_path, tmp_path / "batch", calibrated_profile)
    cfg = parse_config(yaml.safe_load(config.read_text()), str(config), env={}).line
    journal_file = journal_path(cfg)
    assert journal_file is not None
    journal = BatchJournal(journal_file, cfg, boot_id="a0")
    flushed: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (flushed.append(fd), real_fsync(fd)))
    journal.done(str(paths[0]), "test-line:cam0:a0:0")
    assert flushed == []
    journal.will_route(str(paths[1]), "test-line:cam0:a0:1", "uncertain")
    assert len(flushed) == 1
    journal.done(str(paths[2]), "test-line:cam0:a0:2")
    # what a process killed now leaves: the file as written (no close), read by the next start
    again = BatchJournal(journal_file, cfg, boot_id="a1")
    assert again.decided(str(paths[0])) and again.decided(str(paths[2])) and not again.decided(str(paths[1]))
    assert again.pending(str(paths[1])) == ("test-line:cam0:a0:1", "uncertain")
    journal.close()
    assert len(flushed) == 2  # the close flushes what is left
    again.close()
