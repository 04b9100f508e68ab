"""Where a decided frame goes: to review through the durable outbox (uncertain, OoD or audit-sampled), or decided
here; either way onto the decisions PUB socket when set, and into the decision log, the per-minute summaries and a
batch's journal.

The decision is taken, counted and published on the daemon's loop; the outbox write, and every record that says a
routed frame is safe, happen on the writer thread once the frame is durable (edge.route.writer). The routing rule
itself is edge.uncertainty.score.review_route; the wire item is edge.inspect.review_item.
"""

from __future__ import annotations

import logging
import time
from typing import Any, cast

import numpy as np
import zmq

from edge.capture.frame import Frame
from edge.config import LineConfig
from edge.inspect.inspector import Inspection
from edge.inspect.review_item import review_item
from edge.ops.logs import frame_context
from edge.ops.metrics import DaemonMetrics
from edge.route.decision_log import DecisionLog
from edge.route.publisher import DecisionPublisher
from edge.route.resume import BatchJournal
from edge.route.summaries import DecisionSummarizer
from edge.route.writer import DecidedFrame, ReviewWriter
from edge.transport.outbox import Outbox
from edge.uncertainty.score import ReviewRoute, review_route

log = logging.getLogger("edge.daemon")


class DecisionSink:
    """Routes, records and publishes each decided frame of one line. `counters` is the daemon's own dict: the sink
    counts frames, routed, auto, ood, sampled, outbox_errors, published and publish_errors in it."""

    def __init__(self, cfg: LineConfig, outbox: Outbox, summaries: DecisionSummarizer, metrics: DaemonMetrics,
                 counters: dict[str, int], journal: BatchJournal | None = None) -> None:
        self.cfg = cfg  # replaced by the daemon on a reload (routing may change)
        self.outbox = outbox
        self.summaries = summaries
        self.metrics = metrics
        self.counters = counters
        self.by_verdict: dict[str, int] = {}
        self.by_route: dict[tuple[str, str], int] = {}
        self.publisher: DecisionPublisher | None = None
        self.journal = journal  # a batch source's record of what is decided (edge.route.resume)
        self._audit_rng = np.random.default_rng(cfg.routing.audit_seed)
        self._log = (DecisionLog(cfg.decision_log, cfg.decision_log_max_bytes, cfg.decision_log_keep)
                     if cfg.decision_log else None)
        self.writer = ReviewWriter(outbox, self._record, metrics, capacity=cfg.transport.writer_queue,
                                   name=f"review-writer-{cfg.id}",
                                   max_bytes=max(1, round(cfg.transport.writer_queue_mb * 1024 * 1024)),
                                   before_put=self._flush_journal if journal is not None else None)

    def frame_id(self, frame: Frame) -> str | None:
        """The frame id a resumed batch gave this file before a restart, when it was on its way to review."""
        pending = self.journal.pending(frame.origin) if self.journal is not None else None
        return pending[0] if pending is not None else None

    def decide(self, frame: Frame, frame_id: str, result: Inspection, review_threshold: float,
               versions: tuple[str, str]) -> None:
        """Route one inspected frame: to review or decided here; count and publish it, and hand it to the writer,
        which puts a routed frame into the outbox and records each frame once that is done (edge.route.writer).
        Blocks only while the writer's queue is full."""
        ctx = frame_context(self.cfg.id, frame.source_id, frame_id, "inspect")
        stage = self.metrics.stage_seconds
        t = time.monotonic()
        reason = review_route(result.uncertainty, review_threshold, float(self._audit_rng.random()),
                              self.cfg.routing.audit_fraction)
        pending = self.journal.pending(frame.origin) if self.journal is not None else None
        if pending is not None:  # routed before a restart, perhaps stored already: route it again, same id
            reason = cast(ReviewRoute, pending[1])
        routed = reason is not None
        self.counters["frames"] += 1
        self.counters["routed" if routed else "auto"] += 1
        if reason == "ood":
            self.counters["ood"] += 1
            log.warning("line %s camera %s frame %s: unlike anything the line knows (OoD distance %.3f > %.3f): "
                        "to review", self.cfg.id, frame.source_id, frame_id, result.uncertainty.ood_distance,
                        result.uncertainty.ood_threshold, extra=ctx)
        elif reason == "sampled":
            self.counters["sampled"] += 1
        self.by_verdict[result.verdict] = self.by_verdict.get(result.verdict, 0) + 1
        key = ("review" if routed else "auto", result.verdict)
        self.by_route[key] = self.by_route.get(key, 0) + 1
        stage.labels("route").observe(time.monotonic() - t)
        decision = {
            "frame_id": frame_id, "wall": frame.wall_ts, "origin": frame.origin, "verdict": result.verdict,
            "anomaly_score": round(result.anomaly_score, 4), "uncertainty": round(result.uncertainty.value, 4),
            "routed": routed, "reason": reason, "queued": None if routed else False, "pack": versions[0],
            "profile": versions[1]}
        decided = DecidedFrame(frame, frame_id, decision, ctx)
        if reason is not None:
            if self.journal is not None and pending is None:
                try:  # flushed by the writer before the item goes into the outbox (one fsync a group)
                    self.journal.will_route(frame.origin, frame_id, reason, sync=False)
                except OSError as exc:
                    self._journal_error(frame, frame_id, exc, ctx)
            decided.item = review_item(self.cfg, frame, frame_id, result, versions, reason)
            decided.jpeg_quality = self.cfg.routing.jpeg_quality
        if self.publisher is not None:  # the line hears the decision now; the outbox write is the writer's
            self._publish(frame, frame_id, result, decision, ctx)
        self.writer.submit(decided)
        self.metrics.frame_latency.observe(time.monotonic() - frame.mono_ts)

    def _record(self, decided: DecidedFrame) -> None:
        """What a decided frame leaves behind, once a routed one is durable in the outbox (or has failed to get
        there): the error count and line, the decision log line, the per-minute count, the batch journal's done."""
        frame, frame_id, decision, ctx = decided.frame, decided.frame_id, decided.decision, decided.ctx
        if decided.error is not None:
            self.counters["outbox_errors"] += 1
            log.error("line %s camera %s frame %s stage outbox: %s", self.cfg.id, frame.source_id, frame_id,
                      decided.error, extra={**ctx, "stage": "outbox"})
        if self._log is not None:
            self._log.write(decision)
        if self.journal is not None:
            try:
                self.journal.done(frame.origin, frame_id)
            except OSError as exc:  # decided all the same; a restart would decide this file again
                self._journal_error(frame, frame_id, exc, ctx)
        self.summaries.add(decision)

    def _flush_journal(self) -> None:
        """The writer's step before it puts a group: the group's route records to the disk. A journal that cannot
        be flushed does not keep the frames from review: a restart may then decide them again under new ids (a
        frame reviewed twice, never a frame lost)."""
        assert self.journal is not None
        try:
            self.journal.sync()
        except OSError as exc:
            self.counters["journal_errors"] = self.counters.get("journal_errors", 0) + 1
            log.error("line %s: batch journal %s: %s (routed frames go to review all the same; a restart may route "
                      "them again)", self.cfg.id, self.journal.path, exc)

    def _journal_error(self, frame: Frame, frame_id: str, exc: OSError, ctx: dict[str, Any]) -> None:
        assert self.journal is not None
        self.counters["journal_errors"] = self.counters.get("journal_errors", 0) + 1
        log.error("line %s camera %s frame %s: batch journal %s: %s", self.cfg.id, frame.source_id, frame_id,
                  self.journal.path, exc, extra=ctx)

    def drain(self, timeout: float) -> bool:
        """Wait until every decided frame is written and recorded (bounded); True if all were."""
        return self.writer.drain(timeout)

    def _publish(self, frame: Frame, frame_id: str, result: Inspection, decision: dict[str, Any],
                 ctx: dict[str, Any]) -> None:
        assert self.publisher is not None
        t = time.monotonic()
        try:
            self.publisher.publish({
                **{k: v for k, v in decision.items() if k != "queued"}, "line": self.cfg.id, "camera": frame.source_id,
                "class_scores": {k: round(v, 4) for k, v in result.class_scores.items()},
                "regions": [{"x": r.x, "y": r.y, "w": r.w, "h": r.h, "defect_class": r.defect_class,
                             "caption": r.caption} for r in result.regions],
                "latency_ms": round((time.monotonic() - frame.mono_ts) * 1000, 1)})
            self.counters["published"] += 1
        except zmq.ZMQError as exc:
            self.counters["publish_errors"] += 1
            log.error("line %s camera %s frame %s stage publish: %s", self.cfg.id, frame.source_id, frame_id,
                      exc, extra={**ctx, "stage": "publish"})
        self.metrics.stage_seconds.labels("publish").observe(time.monotonic() - t)

    def close(self, timeout: float = 1.0) -> None:
        """Stop the writer (after a drain bounded by `timeout`) and close the log, journal and PUB socket. A writer
        still busy on a hung disk keeps the log and the journal open: the process is ending anyway."""
        self.writer.close(timeout)
        if not self.writer.running():
            if self._log is not None:
                self._log.close()
            if self.journal is not None:
                self.journal.close()
        if self.publisher is not None:
            self.publisher.close()
