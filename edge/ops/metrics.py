"""Prometheus metrics of the daemon and the station, each in its own registry (no process-global state).

Counters that already live in the parts (capture thread, outbox, sender, ingest) are read at scrape time by a
collector, so there is one source of truth; only latencies are recorded as they happen (histograms).
"""

from __future__ import annotations

import os
import resource
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

STAGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def rss_bytes(pid: int | str = "self") -> int:
    """Resident set size from /proc (Linux); 0 where there is no /proc."""
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MiB: VmHWM of /proc/self/status, the high-water mark of
    this program's own memory. (getrusage's ru_maxrss is not: Linux carries the parent's peak into it across fork
    and exec, so a daemon started by a big process would report that process's peak.) getrusage where there is
    no /proc."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def open_fds(pid: int | str = "self") -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def thread_count(pid: int | str = "self") -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


class _Versioned(Protocol):
    @property
    def versions(self) -> tuple[str, str]: ...


class _LineId(Protocol):
    @property
    def id(self) -> str: ...


class _Counted(Protocol):
    @property
    def counters(self) -> dict[str, Any]: ...


class _Outbox(Protocol):
    def snapshot(self) -> dict[str, Any]: ...


class _Sender(_Counted, Protocol):
    def status(self) -> dict[str, object]: ...


class DaemonView(Protocol):
    """What the daemon's collector reads at scrape time (edge.daemon.Daemon is one)."""

    @property
    def cfg(self) -> _LineId: ...
    @property
    def inspector(self) -> _Versioned: ...
    @property
    def counters(self) -> dict[str, int]: ...
    @property
    def by_route(self) -> dict[tuple[str, str], int]: ...
    @property
    def sender(self) -> _Sender: ...
    @property
    def notifier(self) -> _Counted: ...
    @property
    def outbox(self) -> _Outbox: ...
    def capture_counters(self) -> dict[str, Any]: ...
    def capture_queue_depth(self) -> int: ...
    def writer_snapshot(self) -> dict[str, int]: ...
    def readiness(self) -> tuple[bool, dict[str, Any]]: ...


def _counter(name: str, doc: str, labels: list[str], rows: dict[tuple[str, ...], float]) -> CounterMetricFamily:
    fam = CounterMetricFamily(name, doc, labels=labels)
    for key, value in sorted(rows.items()):
        fam.add_metric(list(key), value)
    return fam


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


class DaemonCollector(Collector):
    def __init__(self, daemon: DaemonView) -> None:
        self.d = daemon

    def collect(self) -> Iterator[Any]:
        d = self.d
        pack, profile = d.inspector.versions
        info = InfoMetricFamily("lineside_build", "model pack and line profile the decisions are made with")
        info.add_metric([], {"line": d.cfg.id, "pack": pack, "profile": profile})
        yield info
        cap = d.capture_counters()
        yield _counter("lineside_capture_frames", "frames read from the source (frames in)", [],
                       {(): float(cap["captured"] or 0)})
        yield _counter("lineside_capture_events", "capture events: dropped (replaced before inspection); skipped "
                       "frames and files by reason (corrupt, empty, not_regular, too_large, too_many_pixels, "
                       "undecodable, unreadable); resumed (decided before a restart); reconnects, errors", ["kind"],
                       {(k,): float(v or 0) for k, v in cap.items() if k not in ("captured", "status", "last_error")})
        yield _gauge("lineside_capture_queue_depth", "frames captured and waiting for the inspector",
                     float(d.capture_queue_depth()))
        yield _gauge("lineside_capture_connected", "1 while the source is connected", float(cap["status"] ==
                                                                                             "connected"))
        c = d.counters
        yield _counter("lineside_frames_inspected", "frames decided (frames out)", [], {(): float(c["frames"])})
        yield _counter("lineside_decisions", "decisions by route (auto / review) and verdict", ["route", "verdict"],
                       {k: float(v) for k, v in d.by_route.items()})
        yield _gauge("lineside_review_rate", "share of decided frames routed to review since start",
                     c["routed"] / c["frames"] if c["frames"] else 0.0)
        yield _counter("lineside_review_reasons", "frames sent to review by reason: ood (unlike anything the line "
                       "knows), sampled (audit of auto-decisions), uncertain", ["reason"],
                       {("ood",): float(c["ood"]), ("sampled",): float(c["sampled"]),
                        ("uncertain",): float(c["routed"] - c["ood"] - c["sampled"])})
        yield _counter("lineside_ood_alarms", "frames unlike anything the line knows (lens covered, wrong product, "
                       "lighting failure): alert when this rises", [], {(): float(c["ood"])})
        yield _counter("lineside_errors", "errors by kind", ["kind"], {
            ("inspect",): float(c["errors"]), ("outbox",): float(c["outbox_errors"]),
            ("inference_stuck",): float(c["inference_stuck"]), ("capture",): float(cap["errors"] or 0),
            ("sender",): float(d.sender.counters["errors"]), ("publish",): float(c["publish_errors"]),
            ("notify",): float(d.notifier.counters["errors"]), ("journal",): float(c["journal_errors"])})
        yield _counter("lineside_worker_restarts", "inference worker restarts by the internal watchdog", [],
                       {(): float(c["worker_restarts"])})
        yield _counter("lineside_capture_stalls", "connected sources reopened after no frame for capture_stall_s",
                       [], {(): float(c["capture_stalls"])})
        yield _counter("lineside_reloads", "SIGHUP reloads by result", ["result"],
                       {("ok",): float(c["reloads"]), ("failed",): float(c["reload_failures"])})
        yield _counter("lineside_decisions_published", "decisions sent on the PUB socket", [],
                       {(): float(c["published"])})
        w = d.writer_snapshot()
        yield _gauge("lineside_writer_queue_depth", "decided frames waiting for the outbox writer (routed frames "
                     "not yet durable, and the records behind them)", float(w["queue"]))
        yield _gauge("lineside_writer_queue_bytes", "image bytes of the frames the outbox writer holds",
                     float(w["bytes"]))
        yield _counter("lineside_writer_blocked_seconds", "time the decision loop waited for room in the writer's "
                       "queue (back-pressure from a slow disk)", [], {(): w["blocked_ms"] / 1000})
        yield _counter("lineside_writer_events", "outbox writer events: groups (one directory fsync each), written "
                       "(routed frames made durable), blocked (decisions that waited for room)", ["kind"],
                       {(k,): float(w[k]) for k in ("groups", "written", "blocked")})
        ob = d.outbox.snapshot()
        yield _gauge("lineside_outbox_depth", "review items on disk waiting for the station's ack", ob["depth"])
        yield _gauge("lineside_outbox_bytes", "bytes of review items on disk", ob["bytes"])
        yield _counter("lineside_outbox_events", "outbox events by kind", ["kind"],
                       {(k,): float(ob[k]) for k in ("queued", "acked", "rejected", "evicted", "refused",
                                                       "write_errors", "read_errors", "full_events")})
        st = d.sender.status()
        yield _gauge("lineside_station_connected", "1 while the station acknowledges", float(st["state"] ==
                                                                                             "connected"))
        yield _gauge("lineside_station_in_flight", "items sent, ack not yet received", float(st["in_flight"]))  # type: ignore[arg-type]
        yield _counter("lineside_station_events", "sender events: sent, acks, timeouts, reconnects", ["kind"],
                       {(k,): float(st[k]) for k in ("sent", "acks", "timeouts", "reconnects")})  # type: ignore[arg-type]
        yield _gauge("lineside_ready", "1 once the daemon does its job (see /readyz)", float(d.readiness()[0]))


class DaemonMetrics:
    """The daemon's registry: scrape-time collector + stage latency histograms + process metrics (RSS, FDs)."""

    def __init__(self, daemon: DaemonView) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.registry.register(DaemonCollector(daemon))
        self.stage_seconds = Histogram(
            "lineside_stage_seconds", "time per pipeline stage: inspect (all models, when the inspector does not "
            "split it), encode/ground/caption/score (when it does), route, outbox (per routed frame, on the outbox "
            "writer thread), publish",
            ["stage"], buckets=STAGE_BUCKETS, registry=self.registry)
        self.frame_latency = Histogram(
            "lineside_frame_latency_seconds", "capture to decision taken and published, per frame",
            buckets=STAGE_BUCKETS, registry=self.registry)
        self.durable_latency = Histogram(
            "lineside_durable_latency_seconds", "capture to durable in the outbox, per routed frame",
            buckets=STAGE_BUCKETS, registry=self.registry)


class StationCollector(Collector):
    def __init__(self, ingest_counters: Callable[[], dict[str, int]]) -> None:
        self.ingest_counters = ingest_counters

    def collect(self) -> Iterator[Any]:
        counters = self.ingest_counters()
        yield _counter("lineside_station_ingest", "ingest events: received, stored, duplicates, malformed, errors, "
                       "auth_rejected", ["kind"], {(k,): float(v) for k, v in counters.items()})


def station_registry(ingest_counters: Callable[[], dict[str, int]]) -> CollectorRegistry:
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    registry.register(StationCollector(ingest_counters))
    return registry
