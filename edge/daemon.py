"""The line-side daemon: capture → encode → ground → caption → score → route → outbox, for one line.

`Daemon` wires the frame's algorithm (edge.inspect) to a capture thread, the decision sink (edge.route) with
the durable outbox and the sender, keeps counters, writes a status file, and stops cleanly on SIGTERM (the frame
being inspected finishes, the outbox writer writes what it holds, the outbox is given a bounded time to drain; what
is not acknowledged stays on disk).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edge.capture.frame import Frame
from edge.capture.thread import COUNTER_NAMES, CaptureThread
from edge.config import ConfigError, LineConfig, load_config
from edge.inspect.inspector import Inspection, Inspector, load_inspector
from edge.ops.health import HealthServer
from edge.ops.logs import frame_context
from edge.ops.metrics import DaemonMetrics, peak_rss_mb
from edge.ops.notify import SystemdNotifier
from edge.ops.reload import Reloader, file_stamp
from edge.ops.signals import SignalDispatcher
from edge.ops.watchdog import InferenceStuck, InferenceWorker, WorkerGaveUp
from edge.route.publisher import DecisionPublisher
from edge.route.resume import BatchJournal, journal_path
from edge.route.sink import DecisionSink
from edge.route.summaries import DecisionSummarizer
from edge.transport.outbox import Outbox
from edge.transport.sender import OutboxSender

log = logging.getLogger("edge.daemon")


def _safe_id(text: str) -> str:
    return "".join(c if c.isalnum() or c in "_.-" else "_" for c in text)


class Daemon:
    """One line: a capture thread feeding the inspector; unsure frames into the outbox, sure ones decided.

    Operations (edge/ops): the inspector runs in an ``InferenceWorker`` that the internal watchdog replaces when a
    frame's inference is stuck; a connected source silent for ``ops.capture_stall_s`` is reopened; systemd hears
    READY=1 once the source is connected or a frame is decided, WATCHDOG=1 while the main loop turns (frames
    progress, or the source is legitimately idle, reconnecting or ended) and STOPPING=1 at SIGTERM; SIGHUP
    reloads the config's routing, the model pack and the line profile's CURRENT version between frames (a version
    that does not load is refused and the old one keeps running); /healthz, /readyz and /metrics are served when
    ``ops.health_port`` is set, and every decision is published on ``ops.decisions_pub`` when set.
    """

    def __init__(self, cfg: LineConfig, inspector: Inspector | None = None) -> None:
        self.cfg = cfg
        self.inspector = inspector or load_inspector(cfg)
        self.outbox = Outbox.from_config(cfg.transport)
        self.sender = OutboxSender(self.outbox, cfg.transport)
        self.boot_id = format(int(time.time() * 1000), "x")
        journal = journal_path(cfg)  # a batch (non-looping folder or video) resumes where it stopped
        self.journal = BatchJournal(journal, cfg, self.boot_id) if journal is not None else None
        self.capture = self._new_capture()
        self._capture_base: dict[str, int] = {}  # counters of capture threads replaced after a stall
        self.summaries = DecisionSummarizer(cfg.id, self.outbox, boot=self.boot_id)  # per-minute counts → station
        self.stop_event = threading.Event()
        self.config_path: Path | None = None  # set by `lineside run`: SIGHUP re-reads it
        self.exit_code = 0
        self.counters: dict[str, int] = {
            "frames": 0, "routed": 0, "auto": 0, "errors": 0, "outbox_errors": 0, "inference_stuck": 0,
            "worker_restarts": 0, "capture_stalls": 0, "reloads": 0, "reload_failures": 0, "published": 0,
            "publish_errors": 0, "ood": 0, "sampled": 0, "batched_frames": 0, "journal_errors": 0}
        self.reloader: Reloader[tuple[LineConfig, Inspector]] = Reloader(
            self._prepare_reload, self.watched_signature, cfg.ops.reload_watch_s, name=f"line {cfg.id}")
        self.started_mono = time.monotonic()
        self.loop_mono = self.started_mono  # the main loop's last turn (/healthz)
        self._quiet_since = self.started_mono  # last frame, or when the source last became connected
        self._last_ping = 0.0
        self._stopping = False
        ops = cfg.ops
        self.notifier = SystemdNotifier()
        self.worker: InferenceWorker[Any] = InferenceWorker(  # an Inspection, or a list for a batch
            self._inspect, stuck_s=ops.inference_stuck_s, max_restarts=ops.worker_restarts_max,
            window_s=ops.worker_restart_window_s, backoff_initial_s=ops.worker_backoff_initial_s,
            factory=self._fresh_inspector if inspector is None else None, name=f"inference-{cfg.id}")
        self.metrics = DaemonMetrics(self)
        self.sink = DecisionSink(cfg, self.outbox, self.summaries, self.metrics, self.counters, self.journal)
        self.health: HealthServer | None = None

    # ---- parts ---------------------------------------------------------------------------------------------
    def _new_capture(self, after: object = None) -> CaptureThread:
        # files wait for us, a camera does not: replay every file, but keep only the newest frame of a live source
        return CaptureThread(self.cfg.source, deliver_all=self.cfg.source.kind in ("folder", "video"), after=after,
                             limits=self.cfg.images, skip=self.journal.decided if self.journal else None)

    def _inspect(self, image: np.ndarray | list[np.ndarray]) -> Any:
        if isinstance(image, list):  # a batch: one encoder run for all (an inspector without one goes frame by frame)
            batch = getattr(self.inspector, "inspect_batch", None)
            return batch(image) if batch is not None else [self.inspector.inspect(i) for i in image]
        return self.inspector.inspect(image)

    def _gather(self, first: Frame) -> list[Frame]:
        """`first` and, with model.max_batch > 1, the frames that arrive within model.batch_wait_ms after it."""
        frames = [first]
        limit = self.cfg.model.max_batch
        if limit > 1:
            deadline = time.monotonic() + self.cfg.model.batch_wait_ms / 1000
            while len(frames) < limit:
                more = self.capture.get(timeout=max(0.0, deadline - time.monotonic()))
                if more is None:
                    break
                frames.append(more)
        return frames

    def _fresh_inspector(self) -> Callable[[np.ndarray], Inspection]:
        """For the watchdog: a new inspector (new ONNX sessions) after a stuck one; the old one on failure."""
        try:
            self.inspector = load_inspector(self.cfg)
        except Exception as exc:
            log.error("line %s: cannot load a fresh inspector after a stuck one (%s); reusing the old", self.cfg.id,
                      exc, extra=frame_context(self.cfg.id, self.cfg.source.id, None, "inspect"))
        return self._inspect

    def review_threshold(self) -> float:
        """The profile's calibrated threshold on p(wrong) under the `profile` policy, else the configured one."""
        calibrated = self.inspector.review_threshold if self.cfg.routing.policy == "profile" else None
        return self.cfg.routing.review_threshold if calibrated is None else calibrated

    def frame_id(self, frame: Frame) -> str:
        """<line>:<source>:<boot>:<seq>; a resumed batch's file routed before the restart keeps the id it had."""
        return self.sink.frame_id(frame) or f"{self.cfg.id}:{_safe_id(frame.source_id)}:{self.boot_id}:{frame.seq}"

    def capture_counters(self) -> dict[str, Any]:
        now = self.capture.counters
        return {k: int(v or 0) + self._capture_base.get(k, 0) if k in COUNTER_NAMES else v for k, v in now.items()}

    def capture_queue_depth(self) -> int:
        return int(getattr(self.capture, "_slot", None) is not None)  # 0/1: the capture thread's one-frame slot

    def writer_snapshot(self) -> dict[str, int]:
        """The outbox writer's queue and counters (edge.route.writer)."""
        return self.sink.writer.snapshot()

    # ---- one frame -----------------------------------------------------------------------------------------
    def handle(self, frame: Frame) -> None:
        self.handle_batch([frame])

    def handle_batch(self, frames: list[Frame]) -> None:
        """Inspect frames (one encoder batch when there are several) and decide each, in order."""
        first = frames[0]
        ctx = frame_context(self.cfg.id, first.source_id, self.frame_id(first), "inspect")
        stage = self.metrics.stage_seconds
        started = time.monotonic()
        try:
            if len(frames) == 1:
                results = [self.worker.inspect(first.image, self.stop_event)]
            else:
                results = self.worker.inspect([f.image for f in frames], self.stop_event)
        except InferenceStuck as exc:
            self.counters["inference_stuck"] += 1
            self.counters["worker_restarts"] = self.worker.restarts
            log.error("line %s camera %s frame %s stage inspect: %s%s", self.cfg.id, first.source_id,
                      self.frame_id(first), exc, f" (a batch of {len(frames)} frames)" if len(frames) > 1 else "",
                      extra=ctx)
            return
        except WorkerGaveUp:
            self.counters["inference_stuck"] += 1
            raise
        except Exception:  # a frame the models choke on is counted and logged, never fatal
            if len(frames) > 1:  # find the one that failed: the others are decided as usual
                for frame in frames:
                    self.handle_batch([frame])
                return
            self.counters["errors"] += 1
            log.exception("line %s camera %s frame %s stage inspect: failed", self.cfg.id, first.source_id,
                          self.frame_id(first), extra=ctx)
            return
        if len(frames) > 1:
            self.counters["batched_frames"] += len(frames)
        timings = getattr(self.inspector, "timings", None)  # an inspector may split its time into stages
        per_frame = (time.monotonic() - started) / len(frames)
        for frame, result in zip(frames, results, strict=True):
            if isinstance(timings, dict) and timings:
                for name, seconds in timings.items():
                    stage.labels(name).observe(seconds)
            else:
                stage.labels("inspect").observe(per_frame)
            self._decide(frame, result)

    def _decide(self, frame: Frame, result: Inspection) -> None:
        self.sink.decide(frame, self.frame_id(frame), result, self.review_threshold(), self.inspector.versions)

    @property
    def by_route(self) -> dict[tuple[str, str], int]:
        return self.sink.by_route

    # ---- health --------------------------------------------------------------------------------------------
    def readiness(self) -> tuple[bool, dict[str, Any]]:
        status = self.capture.status
        ready = not self._stopping and (self.counters["frames"] > 0 or status in ("connected", "ended"))
        return ready, {"capture": status, "frames": self.counters["frames"], "stopping": self._stopping}

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        age = time.monotonic() - self.loop_mono
        alive = age < self.cfg.ops.inference_stuck_s + 5 and self.exit_code == 0
        return alive, {"loop_age_s": round(age, 2), "worker_restarts": self.worker.restarts}

    def _heartbeat(self, now: float) -> None:
        """The main loop turned: READY once the daemon does its job; WATCHDOG while it keeps doing it."""
        self.loop_mono = now
        if not self.notifier.enabled:
            return
        if not self.notifier.ready_sent and self.readiness()[0]:
            pack, profile = self.inspector.versions
            self.notifier.ready(f"line {self.cfg.id}: pack {pack}, profile {profile}")
        if self.notifier.ready_sent and now - self._last_ping >= self.notifier.ping_interval():
            self._last_ping = now
            self.notifier.watchdog()

    def _check_capture(self, now: float, got_frame: bool) -> None:
        """A source that says 'connected' but has given nothing for capture_stall_s is reopened."""
        if got_frame or self.capture.status != "connected":
            self._quiet_since = now
            return
        if now - self._quiet_since < self.cfg.ops.capture_stall_s:
            return
        self.counters["capture_stalls"] += 1
        log.error("line %s camera %s stage capture: connected but no frame for %.0f s; reopening the source",
                  self.cfg.id, self.cfg.source.id, now - self._quiet_since,
                  extra=frame_context(self.cfg.id, self.cfg.source.id, None, "capture"))
        old = self.capture
        old.stop()
        old.join(timeout=1.0)  # a read blocked in the backend may outlive this; it is a daemon thread
        for k, v in old.counters.items():
            if k in COUNTER_NAMES:
                self._capture_base[k] = self._capture_base.get(k, 0) + int(v or 0)
        # the new thread counts frames from 0 again: a new boot id keeps frame ids unique
        self.boot_id = format(max(int(time.time() * 1000), int(self.boot_id, 16) + 1), "x")
        self.capture = self._new_capture(old.position)  # a file source goes on after the last file read
        self.capture.start()
        self._quiet_since = now

    # ---- reload (SIGHUP or a new version on disk) -----------------------------------------------------------------
    def watched_signature(self) -> tuple[object, ...]:
        """What a new pack or profile version changes on disk: the profile's CURRENT and the pack's manifest, both
        replaced atomically when a version is written."""
        return file_stamp(self.cfg.profile / "CURRENT"), file_stamp(self.cfg.model.pack / "manifest.json")

    def _prepare_reload(self) -> tuple[LineConfig, Inspector] | None:
        """Load what the reload needs (config, pack, profile, new ONNX sessions); None when anything is refused,
        counted and logged — the running inspector is untouched either way."""
        ctx = frame_context(self.cfg.id, self.cfg.source.id, None, "reload")
        new_cfg = self.cfg
        if self.config_path is not None:
            try:
                new_cfg = load_config(self.config_path).line
            except ConfigError as exc:
                self.counters["reload_failures"] += 1
                log.error("line %s: reload refused, config does not load: %s", self.cfg.id, exc, extra=ctx)
                return None
            kept = [k for k in ("id", "source", "transport", "ops", "status_file", "decision_log", "images",
                                "resume_journal")
                    if getattr(new_cfg, k) != getattr(self.cfg, k)]
            if kept:
                log.warning("line %s: reload: %s changed; these need a restart and keep their old values",
                            self.cfg.id, ", ".join(kept), extra=ctx)
            new_cfg = self.cfg.model_copy(update={"routing": new_cfg.routing, "model": new_cfg.model,
                                                  "profile": new_cfg.profile})
        try:
            inspector = load_inspector(new_cfg)
        except Exception as exc:  # PackError, ProfileError, a broken ONNX file: keep the running inspector
            self.counters["reload_failures"] += 1
            log.error("line %s: reload refused, keeping pack %s profile %s: %s", self.cfg.id,
                      *self.inspector.versions, exc, extra=ctx)
            return None
        return new_cfg, inspector

    def _swap(self, new_cfg: LineConfig, inspector: Inspector) -> None:
        """Between frames: the next frame is decided by the new inspector, every earlier one by the old."""
        old_versions = self.inspector.versions
        self.cfg = new_cfg
        self.sink.cfg = new_cfg
        self.inspector = inspector
        self.counters["reloads"] += 1
        log.info("line %s: reloaded: pack %s → %s, profile %s → %s", self.cfg.id, old_versions[0],
                 inspector.versions[0], old_versions[1], inspector.versions[1],
                 extra=frame_context(self.cfg.id, self.cfg.source.id, None, "reload"))

    def reload(self) -> bool:
        """Re-read the config (when started from a file), the pack and the profile's CURRENT version and swap the
        inspector now. Anything that does not load is refused, counted and logged; the old keeps running."""
        self.reloader.mark_seen()
        prepared = self._prepare_reload()
        if prepared is None:
            return False
        self._swap(*prepared)
        return True

    # ---- status and lifecycle ------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        elapsed = max(time.monotonic() - self.started_mono, 1e-9)
        pack_version, profile_version = self.inspector.versions
        return {
            "line": self.cfg.id, "pid": os.getpid(), "uptime_s": round(elapsed, 1),
            "fps": round(self.counters["frames"] / elapsed, 2), **self.counters, "by_verdict": self.sink.by_verdict,
            "capture": {"status": self.capture.status, **self.capture_counters()},
            "writer": self.writer_snapshot(), "outbox": self.outbox.snapshot(), "station": self.sender.status(),
            "pack": pack_version, "profile": profile_version, "ready": self.readiness()[0],
            "exit_code": self.exit_code, "peak_rss_mb": peak_rss_mb(),
            "health": self.health.url if self.health is not None else None,
            "decisions_pub": self.sink.publisher.bound if self.sink.publisher is not None else None,
        }

    def _write_status(self) -> None:
        if self.cfg.status_file is not None:  # every 2 s: renamed into place whole, not fsynced
            tmp = self.cfg.status_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.status(), indent=1))
            os.replace(tmp, self.cfg.status_file)

    def _start_ops(self) -> None:
        ops = self.cfg.ops
        if ops.health_port is not None:
            self.health = HealthServer(ops.health_host, ops.health_port, self.metrics.registry,
                                       {"/healthz": self.liveness, "/readyz": self.readiness},
                                       name=f"daemon-{self.cfg.id}").start()
            log.info("line %s: health and metrics on %s", self.cfg.id, self.health.url)
        if ops.decisions_pub is not None:
            self.sink.publisher = DecisionPublisher(ops.decisions_pub)
            log.info("line %s: decisions published on %s", self.cfg.id, self.sink.publisher.bound)

    def run(self, seconds: float | None = None) -> dict[str, Any]:
        """Inspect until stopped, `seconds` pass, or a finite source ends; then drain and return the status.

        ``exit_code`` is non-zero afterwards when the internal watchdog gave up on the inference worker."""
        log.info("line %s: pack %s, profile %s, source %s", self.cfg.id, *self.inspector.versions,
                 self.cfg.source.kind)
        self._start_ops()
        self.sender.start()
        self.capture.start()
        deadline = None if seconds is None else time.monotonic() + seconds
        last_status = 0.0
        try:
            while not self.stop_event.is_set():
                if deadline is not None and time.monotonic() >= deadline:
                    break
                prepared = self.reloader.poll(time.monotonic())
                if prepared is not None:
                    self._swap(*prepared)
                frame = self.capture.get(timeout=0.2)
                if frame is not None:
                    self.handle_batch(self._gather(frame))
                elif self.capture.ended:
                    log.info("line %s: source ended after %d frames", self.cfg.id, self.counters["frames"])
                    break
                now = time.monotonic()
                self._check_capture(now, frame is not None)
                self._heartbeat(now)
                if now - last_status > 2.0:
                    self._write_status()
                    last_status = now
        except WorkerGaveUp as exc:
            self.exit_code = EXIT_WORKER_GAVE_UP
            log.critical("line %s: %s; exiting with %d for the supervisor to restart the daemon", self.cfg.id, exc,
                         EXIT_WORKER_GAVE_UP, extra=frame_context(self.cfg.id, self.cfg.source.id, None, "inspect"))
        finally:
            self._stopping = True
            self.notifier.stopping(f"line {self.cfg.id}: draining the outbox")
            self.capture.stop()
            self._drain_writer()  # routed frames still in memory go into the outbox before its drain
            self.summaries.close()  # the unfinished minute's summary goes into the outbox before the drain
            if not self.sender.drain(self.cfg.transport.drain_timeout_s):
                log.warning("line %s: %d items still in the outbox at shutdown; they are sent at the next start",
                            self.cfg.id, self.outbox.depth())
            self.sender.stop()
            self.sender.join(timeout=5)
            self.capture.join(timeout=5)
            self.worker.close()
            self._write_status()
            self.sink.close()
            if self.health is not None:
                self.health.stop()
        return self.status()

    def _drain_writer(self) -> None:
        """Bounded: a disk that does not answer for WRITER_DRAIN_S must not hold the shutdown forever."""
        waiting = self.sink.writer.depth()
        if not waiting:
            return
        started = time.monotonic()
        if self.sink.drain(WRITER_DRAIN_S):
            log.info("line %s: %d decided frames written and recorded at shutdown in %.2f s", self.cfg.id, waiting,
                     time.monotonic() - started)
        else:
            log.error("line %s: %d decided frames not written after %.0f s at shutdown (routed frames among them "
                      "are lost; a batch source decides them again at the next start)", self.cfg.id,
                      self.sink.writer.depth(), WRITER_DRAIN_S)

    def install_signal_handlers(self) -> SignalDispatcher:
        """SIGTERM/SIGINT drain and stop, SIGHUP reloads; handled on a thread of their own (edge.ops.signals).

        From the main thread only. Closing the returned dispatcher puts the previous handlers back.
        """
        def _stop(signum: signal.Signals) -> None:
            log.info("line %s: %s received, draining", self.cfg.id, signum.name)
            self.stop_event.set()

        def _reload(_signum: signal.Signals) -> None:
            log.info("line %s: SIGHUP received, reloading between frames", self.cfg.id)
            self.reloader.request()

        return SignalDispatcher({signal.SIGTERM: _stop, signal.SIGINT: _stop, signal.SIGHUP: _reload}).start()


EXIT_WORKER_GAVE_UP = 3
WRITER_DRAIN_S = 10.0  # at shutdown, the outbox writer's bound (then the outbox drain's transport.drain_timeout_s)
