"""Paced-input latency: frames at a camera's rate through the daemon, every one routed to a real station.

Three figures per frame: decision latency (capture timestamp to decision taken; the line's figure), durable latency
(capture to the routed frame durable in the outbox, on the outbox writer thread; edge.route.writer) and commit
latency (capture to committed at the station). The station runs in a process of its own, as it is deployed: in the
daemon's process its ingest thread would contend with the decision loop for the interpreter lock, a cost no line
pays.
"""

from __future__ import annotations

import multiprocessing
import queue
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from edge.bench.inference import Say, _close, _quiet, bench_line, decode
from edge.capture.frame import Frame


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, np.float64), q)) if values else 0.0


class _TimedSink:
    """The store's ingest, plus the time from capture to commit of each new item (for the latency bench)."""

    def __init__(self, ingest: Any) -> None:
        self.ingest = ingest
        self.latencies_ms: list[float] = []

    def add_item(self, item: Any, jpeg: bytes) -> bool:
        new = bool(self.ingest.add_item(item, jpeg))
        if new:
            self.latencies_ms.append((time.time() - item.captured_wall) * 1000)
        return new

    def add_items(self, batch: list[tuple[Any, bytes]]) -> list[bool]:
        results: list[bool] = self.ingest.add_items(batch)
        now = time.time()
        self.latencies_ms.extend((now - item.captured_wall) * 1000 for (item, _), new in zip(batch, results,
                                                                                             strict=True) if new)
        return results


STATION_START_S = 120.0  # a fresh interpreter importing the station and opening its database


def _station_process(conn: Connection, station_dir: str) -> None:
    """A real station (IngestServer + Store on a SQLite file in `station_dir`): sends its endpoint, serves until
    told to stop, then sends the commit latencies of the items it stored."""
    from edge.station.ingest import IngestServer
    from edge.station.store import Store

    store = Store(f"sqlite:///{station_dir}/station.db", Path(station_dir) / "images")
    sink = _TimedSink(store.ingest)
    server = IngestServer(sink, "tcp://127.0.0.1:0", poll_ms=20)
    server.start()
    try:
        conn.send(server.endpoint)
        conn.recv()
    finally:
        server.stop()
        store.close()
    conn.send(sink.latencies_ms)


@contextmanager
def station_process(station_dir: str) -> Iterator[tuple[str, list[float]]]:
    """Run `_station_process` in a spawned process; yields its endpoint and the list its commit latencies (ms) are
    put into when the block ends."""
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    process = context.Process(target=_station_process, args=(theirs, station_dir), name="bench-station",
                              daemon=True)
    process.start()
    commit_ms: list[float] = []
    try:
        deadline = time.monotonic() + STATION_START_S
        while not ours.poll(0.2):
            if not process.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"bench station: no endpoint (exit code {process.exitcode}, "
                                   f"{time.monotonic() - deadline + STATION_START_S:.0f} s after its start)")
        yield ours.recv(), commit_ms
        ours.send("stop")
        if not ours.poll(30):
            raise RuntimeError("bench station: no commit latencies within 30 s of stopping")
        commit_ms.extend(ours.recv())
    finally:
        process.join(timeout=10)
        if process.is_alive():
            process.kill()
            process.join(timeout=5)


def _paced_loop(daemon: Any, jpegs: list[bytes], fps: float, seconds: float) -> tuple[list[float], tuple[int, int]]:
    frames: queue.Queue[Frame] = queue.Queue()
    stop = threading.Event()
    period = 1.0 / fps
    total = int(seconds * fps)
    at_last_frame: list[int] = []  # earlier frames still waiting when the camera delivered its last one

    def produce() -> None:
        start_wall, start_mono = time.time(), time.monotonic()
        for seq in range(total):
            due = start_mono + seq * period
            delay = due - time.monotonic()
            if delay > 0 and stop.wait(delay):
                return
            stamped = start_wall + seq * period  # the capture timestamp: when the camera delivered it
            frames.put(Frame("bench", seq, due, stamped, decode(jpegs[seq % len(jpegs)]), f"bench frame {seq}"))
        at_last_frame.append(max(0, frames.qsize() - 1))  # the one just delivered is not a backlog

    producer = threading.Thread(target=produce, name="bench-camera", daemon=True)
    producer.start()
    latencies: list[float] = []
    backlog_max = 0
    try:
        while len(latencies) < total:
            try:
                frame = frames.get(timeout=5)
            except queue.Empty:
                break
            backlog_max = max(backlog_max, frames.qsize())
            daemon.handle(frame)
            latencies.append((time.time() - frame.wall_ts) * 1000)
        return latencies, (backlog_max, at_last_frame[0] if at_last_frame else frames.qsize())
    finally:
        stop.set()
        producer.join(timeout=2)


class _RecordedHistogram:
    """The daemon's capture-to-durable histogram, keeping each observation for the percentiles."""

    def __init__(self, histogram: Any) -> None:
        self.histogram = histogram
        self.seconds: list[float] = []

    def observe(self, value: float) -> None:
        self.seconds.append(value)
        self.histogram.observe(value)


def bench_latency(pack_dir: Path, provider: str = "cpu", seconds: float = 20.0, fps: float = 15.0,
                  good_images: int = 30, frames: int = 60, say: Say = _quiet) -> dict[str, Any]:
    """Frames paced at `fps` → decision, durable and station-commit latency.

    A paced producer thread stamps each frame at its due time and decodes it (the capture thread's job); the
    daemon's `handle` decides it; every frame is routed (review threshold 0, the transport's worst case) through
    the outbox writer, the durable outbox (fsync "always") and the sender to a real station (IngestServer + Store on
    a temp SQLite file) in a process of its own, whose commit time per item gives the commit latency. Backlog: frames
    waiting at worst, and when the last frame arrived, not counting that frame (`backlog_end`; > 0 means the input
    rate is above what the pipeline sustains). `writer_blocked_ms`: how long decisions waited for room in the
    writer's queue (a disk slower than the input rate).
    """
    from edge.daemon import Daemon
    from edge.inspect.inspector import load_inspector

    with (tempfile.TemporaryDirectory(prefix="lineside-bench-station-") as station_dir,
          station_process(station_dir) as (endpoint, commit_ms),
          bench_line(pack_dir, provider, good_images, frames, say, review_threshold=0.0, station=endpoint) as line):
        daemon = Daemon(line.cfg, load_inspector(line.cfg))
        durable = _RecordedHistogram(daemon.metrics.durable_latency)
        daemon.metrics.durable_latency = durable  # type: ignore[assignment]
        for data in line.frames[:3]:  # warm-up, not timed, not sent
            daemon.inspector.inspect(decode(data))
        daemon.sender.start()
        say(f"latency: {fps:g} fps input for {seconds:g} s, every frame routed to a real station …")
        decision_ms, backlog = _paced_loop(daemon, line.frames, fps, seconds)
        daemon.sink.drain(10.0)
        writer = daemon.sink.writer.snapshot()
        daemon.sender.drain(10.0)
        daemon.sender.stop()
        daemon.sender.join(timeout=5)
        _close(daemon)
    durable_ms = [s * 1000 for s in durable.seconds]
    p50, p99 = percentile(decision_ms, 50), percentile(decision_ms, 99)
    return {"latency_fps": fps, "latency_frames": len(decision_ms), "latency_p50_ms": round(p50, 1),
            "latency_p99_ms": round(p99, 1), "latency_p99_over_p50": round(p99 / max(p50, 1e-9), 2),
            "durable_p50_ms": round(percentile(durable_ms, 50), 1),
            "durable_p99_ms": round(percentile(durable_ms, 99), 1), "durable_items": len(durable_ms),
            "writer_groups": writer["groups"], "writer_deepest": writer["deepest"],
            "writer_blocked_ms": writer["blocked_ms"],
            "commit_p50_ms": round(percentile(commit_ms, 50), 1),
            "commit_p99_ms": round(percentile(commit_ms, 99), 1), "commit_items": len(commit_ms),
            "backlog_max": backlog[0], "backlog_end": backlog[1]}
