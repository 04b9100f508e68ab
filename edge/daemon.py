"""The line-side daemon: capture → encode → ground → caption → score → route → outbox, for one line.

`Inspector.inspect` is one frame's way through the models, top to bottom. `Daemon` wires it to a capture thread,
the durable outbox and the sender, keeps counters, writes a status file, and stops cleanly on SIGTERM (the frame
being inspected finishes, the outbox is given a bounded time to drain; what is not acknowledged stays on disk).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from edge.capture.frame import Frame
from edge.capture.thread import CaptureThread
from edge.config import LineConfig
from edge.grounding.anomaly import combine, raw_scores, smooth
from edge.grounding.regions import FoundRegion, classify_embedding, find_regions
from edge.profile.profile import LineProfile, load_profile
from edge.transport.outbox import Outbox, OutboxError
from edge.transport.schema import Region, ReviewItem, ReviewReason
from edge.transport.sender import OutboxSender
from edge.uncertainty.score import Uncertainty, baseline_uncertainty, frame_class_scores, route
from edge.vlm.pack import ModelPack, load_pack
from edge.vlm.prompts import TextBank, build_text_bank
from edge.vlm.runtime import ImageEncoder, TextEncoder

log = logging.getLogger("edge.daemon")


@dataclass(frozen=True)
class Inspection:
    """What the models say about one frame."""

    verdict: str
    class_scores: dict[str, float]
    anomaly_score: float
    anomaly_threshold: float
    regions: list[FoundRegion]
    uncertainty: Uncertainty
    anomaly_map: np.ndarray = field(repr=False)


class Inspector:
    """Models for one line: the pack's encoders, the profile's vocabulary and memory bank."""

    def __init__(self, pack: ModelPack, profile: LineProfile, provider: str = "auto",
                 intra_op_threads: int = 0) -> None:
        self.pack = pack
        self.profile = profile
        self.image_encoder = ImageEncoder(pack, provider, intra_op_threads)
        self.text_bank: TextBank = build_text_bank(profile.vocabulary, TextEncoder(pack, provider, intra_op_threads))

    @property
    def versions(self) -> tuple[str, str]:
        return self.pack.version, self.profile.describe()

    def inspect(self, bgr: np.ndarray) -> Inspection:
        profile, text, scale = self.profile, self.text_bank, self.pack.logit_scale
        height, width = bgr.shape[:2]
        # encode: global embedding g and patch grids in the joint image–text space
        emb = self.image_encoder.encode(bgr)
        # ground: zero-shot ⊕ few-shot anomaly map, frame score = its (smoothed) maximum
        anomaly_map = smooth(combine(raw_scores(emb, profile.bank, text.class_embeddings, scale),
                                     profile.patch_stats, profile.weights))
        anomaly_score = float(anomaly_map.max())
        threshold = profile.anomaly_threshold
        # caption: regions above threshold, each with class, place, size and best description
        finest = min(emb.patches)
        regions = find_regions(anomaly_map, threshold, emb.patches[finest], width, height, text, scale)
        # verdict: good or the defect class (from the strongest region, else from the whole frame)
        defect_probs = regions[0].class_probs if regions else classify_embedding(emb.global_, text, scale)
        class_scores = frame_class_scores(anomaly_score, threshold, profile.anomaly_scale, defect_probs)
        verdict = "good" if anomaly_score <= threshold else max(defect_probs, key=defect_probs.__getitem__)
        # score: how likely this decision is wrong
        uncertainty = baseline_uncertainty(class_scores, anomaly_score, threshold, profile.anomaly_scale)
        return Inspection(verdict, class_scores, anomaly_score, threshold, regions, uncertainty, anomaly_map)


def load_inspector(cfg: LineConfig) -> Inspector:
    pack = load_pack(cfg.model.pack)
    profile = load_profile(cfg.profile, pack_version=pack.version)
    return Inspector(pack, profile, cfg.model.provider, cfg.model.intra_op_threads)


def review_item(cfg: LineConfig, frame: Frame, frame_id: str, result: Inspection, versions: tuple[str, str],
                reason: ReviewReason = "uncertain") -> ReviewItem:
    height, width = frame.image.shape[:2]
    return ReviewItem(
        frame_id=frame_id, line_id=cfg.id, source_id=frame.source_id, seq=frame.seq,
        captured_wall=frame.wall_ts, decided_wall=time.time(), width=width, height=height,
        verdict=result.verdict, class_scores=result.class_scores, anomaly_score=result.anomaly_score,
        anomaly_threshold=result.anomaly_threshold, uncertainty=result.uncertainty.value, reason=reason,
        regions=[Region(x=r.x, y=r.y, w=r.w, h=r.h, area_px=r.area_px, area_pct=r.area_pct, peak=r.peak,
                        defect_class=r.defect_class, location=r.location, caption=r.caption,
                        description=r.description, caption_score=r.caption_score) for r in result.regions],
        pack_version=versions[0], profile_version=versions[1])


def _safe_id(text: str) -> str:
    return "".join(c if c.isalnum() or c in "_.-" else "_" for c in text)


class Daemon:
    """One line: a capture thread feeding the inspector; unsure frames into the outbox, sure ones decided."""

    def __init__(self, cfg: LineConfig, inspector: Inspector | None = None) -> None:
        self.cfg = cfg
        self.inspector = inspector or load_inspector(cfg)
        self.outbox = Outbox.from_config(cfg.transport)
        self.sender = OutboxSender(self.outbox, cfg.transport)
        # files wait for us, a camera does not: replay every file, but keep only the newest frame of a live source
        self.capture = CaptureThread(cfg.source, deliver_all=cfg.source.kind in ("folder", "video"))
        self.boot_id = format(int(time.time() * 1000), "x")
        self.stop_event = threading.Event()
        self.counters: dict[str, int] = {"frames": 0, "routed": 0, "auto": 0, "errors": 0, "outbox_errors": 0}
        self.by_verdict: dict[str, int] = {}
        self.started_mono = time.monotonic()
        self._decision_log = open(cfg.decision_log, "a", buffering=1) if cfg.decision_log else None  # noqa: SIM115

    def frame_id(self, frame: Frame) -> str:
        return f"{self.cfg.id}:{_safe_id(frame.source_id)}:{self.boot_id}:{frame.seq}"

    def handle(self, frame: Frame) -> None:
        frame_id = self.frame_id(frame)
        try:
            result = self.inspector.inspect(frame.image)
        except Exception:  # a frame the models choke on is counted and logged, never fatal
            self.counters["errors"] += 1
            log.exception("line %s camera %s frame %s stage inspect: failed", self.cfg.id, frame.source_id, frame_id)
            return
        routed = route(result.uncertainty.value, self.cfg.routing.review_threshold)
        self.counters["frames"] += 1
        self.counters["routed" if routed else "auto"] += 1
        self.by_verdict[result.verdict] = self.by_verdict.get(result.verdict, 0) + 1
        versions = self.inspector.versions
        queued = False
        if routed:
            ok, jpeg = cv2.imencode(".jpg", frame.image, [cv2.IMWRITE_JPEG_QUALITY, self.cfg.routing.jpeg_quality])
            try:
                if not ok:
                    raise OutboxError(f"JPEG encoding failed for frame {frame_id}")
                # None = a full outbox refused it; the outbox has counted and logged that
                queued = self.outbox.put(review_item(self.cfg, frame, frame_id, result, versions),
                                         jpeg.tobytes()) is not None
            except OutboxError as exc:
                self.counters["outbox_errors"] += 1
                log.error("line %s camera %s frame %s stage outbox: %s", self.cfg.id, frame.source_id, frame_id, exc)
        if self._decision_log is not None:
            self._decision_log.write(json.dumps({
                "frame_id": frame_id, "wall": frame.wall_ts, "origin": frame.origin, "verdict": result.verdict,
                "anomaly_score": round(result.anomaly_score, 4), "uncertainty": round(result.uncertainty.value, 4),
                "routed": routed, "queued": queued, "pack": versions[0], "profile": versions[1]}) + "\n")

    def status(self) -> dict[str, Any]:
        elapsed = max(time.monotonic() - self.started_mono, 1e-9)
        pack_version, profile_version = self.inspector.versions
        return {
            "line": self.cfg.id, "pid": os.getpid(), "uptime_s": round(elapsed, 1),
            "fps": round(self.counters["frames"] / elapsed, 2), **self.counters, "by_verdict": self.by_verdict,
            "capture": {"status": self.capture.status, **self.capture.counters},
            "outbox": self.outbox.snapshot(), "station": self.sender.status(),
            "pack": pack_version, "profile": profile_version,
        }

    def _write_status(self) -> None:
        if self.cfg.status_file is None:
            return
        tmp = self.cfg.status_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.status(), indent=1))
        os.replace(tmp, self.cfg.status_file)

    def run(self, seconds: float | None = None) -> dict[str, Any]:
        """Inspect until stopped, `seconds` pass, or a finite source ends; then drain and return the status."""
        log.info("line %s: pack %s, profile %s, source %s", self.cfg.id, *self.inspector.versions,
                 self.cfg.source.kind)
        self.sender.start()
        self.capture.start()
        deadline = None if seconds is None else time.monotonic() + seconds
        last_status = 0.0
        try:
            while not self.stop_event.is_set():
                if deadline is not None and time.monotonic() >= deadline:
                    break
                frame = self.capture.get(timeout=0.2)
                if frame is not None:
                    self.handle(frame)
                elif self.capture.ended:
                    log.info("line %s: source ended after %d frames", self.cfg.id, self.counters["frames"])
                    break
                if time.monotonic() - last_status > 2.0:
                    self._write_status()
                    last_status = time.monotonic()
        finally:
            self.capture.stop()
            if not self.sender.drain(self.cfg.transport.drain_timeout_s):
                log.warning("line %s: %d items still in the outbox at shutdown; they are sent at the next start",
                            self.cfg.id, self.outbox.depth())
            self.sender.stop()
            self.sender.join(timeout=5)
            self.capture.join(timeout=5)
            self._write_status()
            if self._decision_log is not None:
                self._decision_log.close()
        return self.status()

    def install_signal_handlers(self) -> None:
        def _stop(signum: int, _frame: object) -> None:
            log.info("line %s: %s received, draining", self.cfg.id, signal.Signals(signum).name)
            self.stop_event.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
