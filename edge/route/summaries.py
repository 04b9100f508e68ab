"""DecisionSummarizer: every decision counted into its minute; each finished minute goes to the station.

The daemon hands over each decision (the dict it writes to the decision log); the summarizer adds it to the bucket of
its capture minute. A minute is finished ``grace_s`` after it ends (a frame captured at 12:00:59.9 is decided a
little later), then its summary is put into the durable outbox, which sends it like an item (see
``edge.transport.summary``). A decision for a minute already sent — a backlog after a stall — opens a new part of
that minute; the station adds parts up. At shutdown the unfinished minute is sent as it is: the next run is another
boot, with its own summary ids.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edge.transport.outbox import Outbox, OutboxError
from edge.transport.summary import DecisionSummary

log = logging.getLogger(__name__)

KEEP_PARTS_S = 6 * 3600  # remember which parts were sent for this long (later decisions for a minute are unlikely)


@dataclass
class _Minute:
    frames: int = 0
    auto: Counter[str] = field(default_factory=Counter)
    routed: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    versions: Counter[str] = field(default_factory=Counter)
    first_frame_id: str | None = None
    last_frame_id: str | None = None


class DecisionSummarizer:
    """Counts decisions per minute and queues one DecisionSummary per finished minute in the outbox."""

    def __init__(self, line_id: str, outbox: Outbox, *, grace_s: float = 5.0, boot: str | None = None,
                 clock: Callable[[], float] = time.time, interval_s: float = 1.0) -> None:
        self.line_id = line_id
        self.outbox = outbox
        self.grace_s = grace_s
        self.boot = boot or f"{int(time.time() * 1000):x}{os.getpid() % 1000:03d}"
        self._clock = clock
        self._interval_s = interval_s
        self._lock = threading.Lock()
        self._minutes: dict[int, _Minute] = {}
        self._parts: dict[int, int] = {}  # minute → parts already queued
        self.counters = {"decisions": 0, "summaries": 0, "errors": 0, "bad_decisions": 0}
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, decision: dict[str, Any]) -> None:
        """Count one decision (frame_id, wall, verdict, routed, reason, pack, profile as the daemon logs them)."""
        try:
            minute = int(float(decision["wall"]) // 60 * 60)
            verdict = str(decision["verdict"])
            version = f"{decision.get('pack', '?')} {decision.get('profile', '?')}"
        except (KeyError, TypeError, ValueError) as exc:  # a daemon bug, not a reason to stop counting
            with self._lock:
                self.counters["bad_decisions"] += 1
            log.error("decision summary: decision %r not counted: %s", decision.get("frame_id"), exc)
            return
        with self._lock:
            m = self._minutes.setdefault(minute, _Minute())
            m.frames += 1
            (m.routed if decision.get("routed") else m.auto)[verdict] += 1
            if decision.get("routed") and decision.get("reason"):
                m.reasons[str(decision["reason"])] += 1
            m.versions[version] += 1
            frame_id = decision.get("frame_id")
            if isinstance(frame_id, str):
                m.first_frame_id = m.first_frame_id or frame_id
                m.last_frame_id = frame_id
            self.counters["decisions"] += 1
        if self._thread is None:
            self._start()

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="DecisionSummarizer", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stopping.wait(self._interval_s):
            self.flush()

    def flush(self, everything: bool = False) -> int:
        """Queue the finished minutes (all of them with ``everything``); returns how many summaries were queued."""
        now = self._clock()
        with self._lock:
            due = sorted(m for m in self._minutes if everything or m + 60 + self.grace_s <= now)
            ready = [(minute, self._minutes.pop(minute)) for minute in due]
            for old in [m for m in self._parts if m < now - KEEP_PARTS_S]:
                del self._parts[old]
        queued = 0
        for minute, m in ready:
            with self._lock:
                part = self._parts.get(minute, 0)
            summary = DecisionSummary(
                summary_id=f"summary/{self.line_id}/{self.boot}/{minute}/{part}", line_id=self.line_id,
                boot=self.boot, minute_wall=minute, frames=m.frames, auto=dict(m.auto), routed=dict(m.routed),
                reasons=dict(m.reasons), versions=dict(m.versions), first_frame_id=m.first_frame_id,
                last_frame_id=m.last_frame_id)
            try:
                name = self.outbox.put_summary(summary)
            except OutboxError as exc:
                with self._lock:
                    self.counters["errors"] += 1
                    # put the counts back: the next flush tries again (same part number)
                    self._merge_back(minute, m)
                log.error("decision summary %s not queued: %s", summary.summary_id, exc)
                continue
            with self._lock:
                self._parts[minute] = part + 1
                if name is None:  # a full outbox under refuse_newest refused it; the outbox counted and logged that
                    self.counters["errors"] += 1
                else:
                    self.counters["summaries"] += 1
                    queued += 1
        return queued

    def _merge_back(self, minute: int, m: _Minute) -> None:
        current = self._minutes.setdefault(minute, _Minute())
        current.frames += m.frames
        for name in ("auto", "routed", "reasons", "versions"):
            getattr(current, name).update(getattr(m, name))
        current.first_frame_id = m.first_frame_id or current.first_frame_id
        current.last_frame_id = current.last_frame_id or m.last_frame_id

    def close(self) -> None:
        """Stop the timer and queue whatever was counted (the unfinished minute too)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(5)
        self.flush(everything=True)
