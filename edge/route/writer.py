"""ReviewWriter: the thread that puts routed frames into the durable outbox, off the decision path.

A slow disk flush (an fsync of the outbox file and of its directory, for every routed frame) used to stall the
decision of that frame and of every frame behind it. Now the decision sink decides a frame and hands it here; this
thread JPEG-encodes the routed ones (OpenCV releases the GIL, so the encode overlaps the next frame's inference),
writes whatever has gathered as one group (``Outbox.put_many``: each file fsynced, the directory once), and only
once a frame is durable runs the sink's ``record`` for it: the decision log line with ``queued``, the per-minute
summary count and the batch journal's ``done``. What *means* "this routed frame is safe" therefore never comes
before it is.

Order: records are written in decision order. A frame decided here (not routed) is recorded at once by the
sink when nothing is waiting in this queue, else behind the routed frames before it — so the decision log and the
journal read in decision order whatever the disk does.

Bounds: the writer holds at most ``capacity`` decided frames, queued or in hand, and at most ``max_bytes`` of
their images (a frame count alone would let 16 frames of a 20 MP camera hold ~1 GB); when either is reached,
``submit`` blocks the decision loop until the writer has made room (back-pressure: never a dropped frame, never
unbounded memory), and the time blocked is counted. One frame is always let in when the writer holds nothing, however
large (the line's image limits bound it). A frame held here is like the frame in the
capture slot: a crash loses it; a batch source decides it again at the next start (its journal has no ``done``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2

from edge.capture.frame import Frame
from edge.ops.metrics import DaemonMetrics
from edge.transport.outbox import Outbox, OutboxError
from edge.transport.schema import ReviewItem

log = logging.getLogger("edge.daemon")

GROUP_MAX = 32  # routed frames per group commit at most: bounds how long the first of a group waits for the last
DEFAULT_MAX_BYTES = 128 * 1024 * 1024


@dataclass(slots=True)
class DecidedFrame:
    """A decided frame on its way to its record; `item` is set when it is routed to review (then written first)."""

    frame: Frame
    frame_id: str
    decision: dict[str, Any]  # the decision log line; a routed frame's "queued" is set by the writer
    ctx: dict[str, Any]  # log context (line, camera, frame id)
    item: ReviewItem | None = None
    jpeg_quality: int = 90
    error: Exception | None = None  # why the outbox has not got it, when it has not


class ReviewWriter:
    """Routed frames into the outbox in groups, then every decided frame's record, in decision order.

    ``submit`` is called by one thread only (the daemon's main loop): that is what lets a frame that is not routed
    be recorded at once, without the queue, when the queue is empty and the writer idle."""

    def __init__(self, outbox: Outbox, record: Callable[[DecidedFrame], None], metrics: DaemonMetrics,
                 capacity: int = 16, name: str = "review-writer", max_bytes: int = DEFAULT_MAX_BYTES,
                 before_put: Callable[[], None] | None = None) -> None:
        if capacity < 1 or max_bytes < 1:
            raise ValueError(f"writer queue bounds must be at least 1, not {capacity} frames / {max_bytes} bytes")
        self.outbox = outbox
        self.capacity = capacity
        self.max_bytes = max_bytes
        self._before_put = before_put  # what must be durable before a group's items are (a batch's route records)
        self._record = record
        self._metrics = metrics
        self._name = name
        self._queue: deque[DecidedFrame] = deque()
        self._cond = threading.Condition()
        self._in_hand = 0  # decided frames taken from the queue by the writer and not yet recorded
        self._held_bytes = 0  # image bytes of the frames queued or in hand
        self._stopping = False
        self._thread: threading.Thread | None = None
        # submitted: through the queue (not the frames recorded at once); written: routed frames made durable;
        # groups: put_many calls (one directory fsync each); blocked / blocked_ms: submits that waited for room;
        # deepest / most_bytes: the most frames and image bytes held at once
        self.counters = {"submitted": 0, "written": 0, "groups": 0, "largest_group": 0, "blocked": 0,
                         "blocked_ms": 0, "deepest": 0, "most_bytes": 0}

    # ---- the decision loop's side --------------------------------------------------------------------------
    def submit(self, decided: DecidedFrame) -> None:
        """Queue a decided frame for the writer; a frame that is not routed is recorded here and now when nothing
        is ahead of it. Blocks while the queue is full."""
        with self._cond:
            if decided.item is None and not self._queue and not self._in_hand:
                direct = True
            else:
                direct = False
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                    self._thread.start()
                size = decided.frame.image.nbytes
                if self._full(size):
                    started = time.monotonic()
                    while self._full(size):
                        self._cond.wait(1.0)
                    self.counters["blocked"] += 1
                    self.counters["blocked_ms"] += round((time.monotonic() - started) * 1000)
                self._queue.append(decided)
                self._held_bytes += size
                self.counters["submitted"] += 1
                self.counters["deepest"] = max(self.counters["deepest"], len(self._queue) + self._in_hand)
                self.counters["most_bytes"] = max(self.counters["most_bytes"], self._held_bytes)
                self._cond.notify_all()
        if direct:  # the writer is idle and only this thread submits: nothing can be recorded before this one
            self._record(decided)

    def _full(self, size: int) -> bool:
        held = len(self._queue) + self._in_hand
        return held >= self.capacity or (held > 0 and self._held_bytes + size > self.max_bytes)

    def depth(self) -> int:
        """Decided frames waiting for the writer (routed ones, and the records queued behind them)."""
        with self._cond:
            return len(self._queue) + self._in_hand

    def snapshot(self) -> dict[str, int]:
        with self._cond:
            return dict(self.counters, queue=len(self._queue) + self._in_hand, capacity=self.capacity,
                        bytes=self._held_bytes, max_bytes=self.max_bytes)

    def drain(self, timeout: float) -> bool:
        """Wait until everything submitted is written and recorded; True if that happened within `timeout`."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queue or self._in_hand:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.5))
        return True

    def close(self, timeout: float) -> bool:
        """Drain (bounded by `timeout`) and stop the thread; False when frames were left unwritten."""
        drained = self.drain(timeout)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=1.0 if drained else 0.1)
        return drained and not self.running()

    def running(self) -> bool:
        """True while the writer thread is alive (it may still use the sink's log and journal)."""
        return self._thread is not None and self._thread.is_alive()

    # ---- the writer thread ---------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if not self._queue:  # stopping, nothing left
                    return
                group = self._take_group()
                self._in_hand = len(group)
            try:
                self._write(group)
            except Exception as exc:  # a bug here must not stop the writer: the decision loop would block for good
                log.exception("%s: writing a group of %d decided frames failed", self._name, len(group))
                for decided in group:
                    if decided.item is not None and decided.decision.get("queued") is None:
                        decided.decision["queued"], decided.error = False, exc
            for decided in group:
                try:
                    self._record(decided)
                except Exception:
                    log.exception("%s: recording frame %s failed", self._name, decided.frame_id)
            with self._cond:
                self._in_hand = 0
                self._held_bytes -= sum(decided.frame.image.nbytes for decided in group)
                self._cond.notify_all()

    def _take_group(self) -> list[DecidedFrame]:
        """The head of the queue up to the GROUP_MAX-th routed frame (records between them come along)."""
        group: list[DecidedFrame] = []
        routed = 0
        while self._queue and routed < GROUP_MAX:
            decided = self._queue.popleft()
            group.append(decided)
            routed += decided.item is not None
        return group

    def _write(self, group: list[DecidedFrame]) -> None:
        """JPEG-encode the group's routed frames and make them durable together; sets each one's ``queued``."""
        started = time.monotonic()
        batch: list[tuple[DecidedFrame, ReviewItem, bytes]] = []
        for decided in group:
            if decided.item is None:
                continue
            ok, jpeg = cv2.imencode(".jpg", decided.frame.image, [cv2.IMWRITE_JPEG_QUALITY, decided.jpeg_quality])
            if not ok:
                decided.error = OutboxError(f"JPEG encoding failed for frame {decided.frame_id}")
                decided.decision["queued"] = False
                continue
            batch.append((decided, decided.item, jpeg.tobytes()))
        if not batch:
            return
        if self._before_put is not None:
            self._before_put()
        results = self.outbox.put_many([(item, jpeg) for _, item, jpeg in batch])
        durable = time.monotonic()
        for (decided, _, _), result in zip(batch, results, strict=True):
            if isinstance(result, OutboxError):
                decided.error = result
            # None = a full outbox refused it; the outbox has counted and logged that
            decided.decision["queued"] = isinstance(result, str)
            if isinstance(result, str):
                self._metrics.durable_latency.observe(durable - decided.frame.mono_ts)
        self._metrics.stage_seconds.labels("outbox").observe((durable - started) / len(batch))
        with self._cond:
            self.counters["written"] += sum(isinstance(r, str) for r in results)
            self.counters["groups"] += 1
            self.counters["largest_group"] = max(self.counters["largest_group"], len(batch))
