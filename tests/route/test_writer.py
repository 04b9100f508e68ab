"""The outbox writer (edge.route.writer) behind the decision sink, with a real outbox, decision log and batch
journal on disk: a routed frame is recorded (decision log, journal `done`) only once it is durable; a slow disk
flush does not delay the decisions behind it; a full queue blocks the decision loop and drops nothing; a drain
writes everything, and gives up within its bound on a disk that does not answer. The disk's slowness is the only
thing faked (os.fsync / the outbox's put_many made to wait)."""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
import yaml

from edge.capture.frame import Frame
from edge.config import LineConfig, parse_config
from edge.inspect.inspector import Inspection
from edge.ops.metrics import DaemonMetrics
from edge.route.resume import BatchJournal, journal_path
from edge.route.sink import DecisionSink
from edge.route.summaries import DecisionSummarizer
from edge.transport import outbox as outbox_module
from edge.transport.outbox import Outbox
from edge.uncertainty.score import Uncertainty
from tests.conftest import line_config

THRESHOLD = 0.35  # a frame with uncertainty above it is routed to review


def _cfg(tmp_path: Path, writer_queue: int = 16, writer_queue_mb: float = 128.0) -> LineConfig:
    frames = tmp_path / "frames"
    frames.mkdir(exist_ok=True)
    path = line_config(tmp_path, frames, 1, 2)
    data = yaml.safe_load(path.read_text())
    data["line"]["routing"]["audit_fraction"] = 0.0
    data["line"]["transport"]["writer_queue"] = writer_queue
    data["line"]["transport"]["writer_queue_mb"] = writer_queue_mb
    return parse_config(data, str(path), env={}).line


class Line:
    """A decision sink as the daemon wires it, minus the models: decide() takes a hand-made Inspection."""

    def __init__(self, tmp_path: Path, writer_queue: int = 16, journal: bool = False,
                 writer_queue_mb: float = 128.0) -> None:
        self.cfg = _cfg(tmp_path, writer_queue, writer_queue_mb)
        self.outbox = Outbox.from_config(self.cfg.transport)
        self.summaries = DecisionSummarizer(self.cfg.id, self.outbox, boot="b0")
        self.counters: dict[str, int] = {k: 0 for k in ("frames", "routed", "auto", "ood", "sampled", "outbox_errors",
                                                        "published", "publish_errors", "journal_errors")}
        path = journal_path(self.cfg)
        self.journal = BatchJournal(path, self.cfg, "b0") if journal and path is not None else None
        self.metrics = DaemonMetrics(cast(Any, None))  # the collector is read at scrape time only; none here
        self.sink = DecisionSink(self.cfg, self.outbox, self.summaries, self.metrics, self.counters, self.journal)
        self.rng = np.random.default_rng(0)

    def decide(self, seq: int, routed: bool) -> float:
        """Decide frame `seq`; returns how long decide() took, in seconds."""
        image = self.rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
        frame = Frame("cam0", seq, time.monotonic(), time.time(), image, f"/batch/{seq:04d}.jpg")
        result = Inspection(verdict="spot" if routed else "good", class_scores={"good": 0.5, "spot": 0.5},
                            anomaly_score=1.0, anomaly_threshold=2.0, regions=[],
                            uncertainty=Uncertainty(0.9 if routed else 0.05, "baseline"),
                            anomaly_map=np.zeros((8, 8), np.float32))
        started = time.monotonic()
        self.sink.decide(frame, f"test-line:cam0:b0:{seq}", result, THRESHOLD, ("pack@1", "profile@1"))
        return time.monotonic() - started

    def decide_routed(self, frames: int, fps: float | None = None) -> list[float]:
        """Decide `frames` routed frames (paced at `fps` when given, else one after the other), drain the writer and
        close; returns how long each decide() took, in seconds."""
        took: list[float] = []
        try:
            started = time.monotonic()
            for seq in range(frames):
                if fps is not None:
                    time.sleep(max(0.0, started + seq / fps - time.monotonic()))
                took.append(self.decide(seq, routed=True))
            assert self.sink.drain(20)
        finally:
            self.close()
        return took

    def logged(self) -> list[dict[str, Any]]:
        assert self.cfg.decision_log is not None
        return [json.loads(line) for line in self.cfg.decision_log.read_text().splitlines()]

    def close(self) -> None:
        self.sink.close(timeout=10)
        self.summaries.close()


@pytest.fixture
def slow_directory_flush(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Every fsync of a directory takes 0.3 s (a busy disk); returns the times they finished."""
    real_fsync = os.fsync
    finished: list[float] = []

    def fsync(fd: int) -> None:
        real_fsync(fd)
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            time.sleep(0.3)
            finished.append(time.monotonic())

    monkeypatch.setattr(os, "fsync", fsync)
    return finished


def test_a_routed_frame_is_logged_and_journaled_done_only_once_durable(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    line = Line(tmp_path, journal=True)
    assert line.journal is not None
    pending = line.outbox.pending_dir
    durable: set[str] = set()  # item files in pending/ when its directory was last fsynced
    events: list[str] = []
    real_fsync_dir = outbox_module.fsync_dir

    def fsync_dir(directory: Path) -> None:
        listed = {p.name for p in directory.iterdir()}
        real_fsync_dir(directory)
        if directory == pending:
            durable.update(listed)

    def done(origin: str, frame_id: str) -> None:  # on the writer thread: note, assert in the test's thread
        seq = int(frame_id.rsplit(":", 1)[1])
        on_disk = any(name.endswith(f"-{frame_id.replace(':', '_')}.item") for name in durable)
        events.append(f"done {seq}" + (" durable" if on_disk else ""))
        real_done(origin, frame_id)

    real_done = line.journal.done
    monkeypatch.setattr(outbox_module, "fsync_dir", fsync_dir)
    monkeypatch.setattr(line.journal, "done", done)
    try:
        for seq in range(12):
            line.decide(seq, routed=bool(seq % 2))
        assert line.sink.drain(10)
    finally:
        line.close()
    # in decision order; each routed (odd) frame's item file covered by a directory fsync before its done
    assert events == [f"done {seq}" + (" durable" if seq % 2 else "") for seq in range(12)]
    logged = line.logged()
    assert [d["frame_id"].rsplit(":", 1)[1] for d in logged] == [str(s) for s in range(12)], "logged in order"
    assert all(d["queued"] is True for d in logged if d["routed"]) and sum(d["routed"] for d in logged) == 6
    assert line.outbox.depth() == 6 and line.counters["outbox_errors"] == 0
    records = [json.loads(x) for x in line.journal.path.read_text().splitlines()[1:]]
    for seq in range(1, 12, 2):  # will_route before the put, done after it
        routes = [i for i, r in enumerate(records) if r.get("route") == f"/batch/{seq:04d}.jpg"]
        dones = [i for i, r in enumerate(records) if r.get("done") == f"/batch/{seq:04d}.jpg"]
        assert routes and dones and routes[0] < dones[0]


def test_a_slow_disk_flush_does_not_delay_the_decisions_behind_it(tmp_path: Path,
                                                                  slow_directory_flush: list[float]) -> None:
    line = Line(tmp_path)
    decide_s = line.decide_routed(20, fps=15)  # every frame routed; each directory flush takes 0.3 s
    # written in line, as Outbox.put does, each decide would take >= 0.3 s (the flush of its own item); the
    # bound leaves room for a loaded machine's scheduling
    assert max(decide_s) < 0.15, f"decide took up to {max(decide_s) * 1000:.0f} ms"
    writer = line.sink.writer.snapshot()
    assert writer["written"] == 20 and line.outbox.depth() == 20
    assert writer["groups"] < 20 and len(slow_directory_flush) < 20, "group commit: fewer directory flushes"
    assert writer["blocked"] == 0
    assert all(d["queued"] for d in line.logged())
    [durable] = [s.value for s in line.metrics.durable_latency.collect()[0].samples if s.name.endswith("_count")]
    assert durable == 20, "capture to durable, per routed frame"


def test_a_batch_s_route_records_are_flushed_by_the_writer_before_its_items(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # a busy disk: each flush of the journal takes 0.3 s; the decision loop must not wait for it, and no item may
    # go into the outbox before its route record is on disk (a restart must know the frame was routed)
    line = Line(tmp_path, journal=True)
    journal = line.journal
    assert journal is not None
    journal_inode = journal.path.stat().st_ino
    flushed: set[str] = set()  # frame ids whose route record was in the journal file at a flush
    real_fsync, real_put_many = os.fsync, line.outbox.put_many

    def fsync(fd: int) -> None:
        if os.fstat(fd).st_ino == journal_inode:
            written = journal.path.read_text().splitlines()
            time.sleep(0.3)
            real_fsync(fd)
            flushed.update(json.loads(x)["frame_id"] for x in written if '"route"' in x)
        else:
            real_fsync(fd)

    def put_many(items: list[Any]) -> list[Any]:
        assert all(item.frame_id in flushed for item, _ in items), "an item before its route record's flush"
        return real_put_many(items)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(line.outbox, "put_many", put_many)
    decide_s = line.decide_routed(8)
    assert max(decide_s) < 0.15, f"decide took up to {max(decide_s) * 1000:.0f} ms"
    writer = line.sink.writer.snapshot()
    assert writer["written"] == 8 and writer["groups"] < 8, "one journal flush a group, not a frame"
    assert flushed == {f"test-line:cam0:b0:{s}" for s in range(8)}
    assert all(d["queued"] for d in line.logged())


def test_a_journal_that_cannot_be_written_or_flushed_keeps_no_frame_from_review(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    # a failing journal costs at worst a frame reviewed twice after a restart, never a routed frame
    line = Line(tmp_path, journal=True)
    journal = line.journal
    assert journal is not None
    real_append = journal._append  # noqa: SLF001

    def append(record: dict[str, str], sync: bool = True) -> None:
        if record.get("route", "").endswith("0001.jpg"):
            raise OSError(28, "No space left on device")
        real_append(record, sync)

    def sync() -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(journal, "_append", append)
    monkeypatch.setattr(journal, "sync", sync)
    line.decide_routed(3)
    assert line.outbox.depth() == 3 and line.counters["outbox_errors"] == 0
    assert [d["queued"] for d in line.logged()] == [True, True, True]
    assert line.counters["journal_errors"] >= 2  # the unwritten route record, and each group's failed flush
    said = [r.getMessage() for r in caplog.records]
    assert any("No space left" in m for m in said) and any("routed frames go to review all the same" in m
                                                           for m in said)


def _decide_behind_a_stuck_disk(line: Line, monkeypatch: pytest.MonkeyPatch, frames: int, waiting_at: int
                                ) -> dict[str, int]:
    """Decide `frames` routed frames on a loop thread while the disk does not answer, until frame `waiting_at` is
    being decided; returns the writer's snapshot then (the loop must be waiting for room), lets the disk answer and
    drains."""
    disk = threading.Event()  # a disk that does not answer until set
    real_put_many = line.outbox.put_many

    def put_many(items: list[Any]) -> list[Any]:
        assert disk.wait(30)
        return real_put_many(items)

    monkeypatch.setattr(line.outbox, "put_many", put_many)
    loop = threading.Thread(target=lambda: [line.decide(seq, routed=True) for seq in range(frames)], daemon=True)
    try:
        loop.start()
        deadline = time.monotonic() + 10
        while line.counters["frames"] < waiting_at and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.3)
        held = line.sink.writer.snapshot()
        assert loop.is_alive(), "the decision loop waits for room"
        assert line.counters["frames"] == waiting_at, f"frame {waiting_at} waits, none after it is decided"
        disk.set()
        loop.join(10)
        assert not loop.is_alive()
        assert line.sink.drain(10)
    finally:
        disk.set()
        line.close()
    return held


def test_a_full_writer_queue_blocks_the_decision_loop_and_drops_nothing(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    line = Line(tmp_path, writer_queue=3)
    held = _decide_behind_a_stuck_disk(line, monkeypatch, frames=6, waiting_at=4)
    assert held["queue"] == 3, "bounded: 3 held, the 4th waits"
    writer = line.sink.writer.snapshot()
    assert writer["written"] == 6 and line.outbox.depth() == 6, "nothing dropped"
    assert writer["blocked"] >= 1 and writer["blocked_ms"] >= 300 and writer["deepest"] == 3
    assert [d["frame_id"] for d in line.logged()] == [f"test-line:cam0:b0:{s}" for s in range(6)]


FRAME_BYTES = 120 * 160 * 3  # Line.decide's frames


def test_the_writer_holds_no_more_image_bytes_than_its_bound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # room for 16 frames by count, for two by bytes: large frames are bounded by their memory, not their number
    line = Line(tmp_path, writer_queue=16, writer_queue_mb=2.5 * FRAME_BYTES / 2**20)
    held = _decide_behind_a_stuck_disk(line, monkeypatch, frames=5, waiting_at=3)
    assert held["queue"] == 2 and held["bytes"] == 2 * FRAME_BYTES
    writer = line.sink.writer.snapshot()
    assert writer["written"] == 5 and line.outbox.depth() == 5, "nothing dropped"
    assert writer["most_bytes"] == 2 * FRAME_BYTES and writer["bytes"] == 0 and writer["blocked"] >= 1


def test_one_frame_larger_than_the_byte_bound_still_passes(tmp_path: Path) -> None:
    line = Line(tmp_path, writer_queue_mb=0.5 * FRAME_BYTES / 2**20)
    line.decide_routed(3)
    assert line.sink.writer.snapshot()["written"] == 3 and line.outbox.depth() == 3


def test_a_drain_gives_up_within_its_bound_on_a_disk_that_does_not_answer(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    line = Line(tmp_path)
    disk = threading.Event()
    real_put_many = line.outbox.put_many
    monkeypatch.setattr(line.outbox, "put_many", lambda items: (disk.wait(30), real_put_many(items))[1])
    try:
        for seq in range(3):
            line.decide(seq, routed=True)
        line.decide(3, routed=False)  # behind routed frames: recorded after them
        started = time.monotonic()
        assert not line.sink.drain(0.5)
        assert 0.4 < time.monotonic() - started < 3
        assert line.sink.writer.depth() == 4 and line.outbox.depth() == 0
        assert not line.cfg.decision_log.exists() or not line.logged()  # type: ignore[union-attr]
        disk.set()
        assert line.sink.drain(10)
    finally:
        disk.set()
        line.close()
    assert [d["routed"] for d in line.logged()] == [True, True, True, False]
    assert line.outbox.depth() == 3


def test_an_outbox_write_error_is_counted_and_logged_after_the_fact(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    line = Line(tmp_path)
    real_replace = outbox_module.replace_synced

    def replace_synced(path: Path, data: bytes) -> None:
        if path.name.endswith("_1.item"):
            raise OSError(28, "No space left on device")
        real_replace(path, data)

    monkeypatch.setattr(outbox_module, "replace_synced", replace_synced)
    line.decide_routed(3)
    assert line.counters["outbox_errors"] == 1 and line.outbox.counters["write_errors"] == 1
    assert [d["queued"] for d in line.logged()] == [True, False, True]
    assert any("No space left" in r.getMessage() and r.frame_id.endswith(":1")  # type: ignore[attr-defined]
               for r in caplog.records)
