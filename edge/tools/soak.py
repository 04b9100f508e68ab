"""`lineside soak`: station + daemon as real processes on a looping textile source; is the memory line flat?

Every ``interval_s`` the daemon's resident memory, open file descriptors and threads are read from /proc, and the
frame-to-decision latencies of the window (from the daemon's decisions PUB feed, ``latency_ms``) are summarised.
Verdict: peak RSS ≤ 400 MB, RSS growth ≤ 5 % from the end of the warm-up to the end, no FD growth (the
highest count of the last three samples not above the highest of the first three after the warm-up).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
import zmq

from edge.ops.metrics import open_fds, rss_bytes, thread_count
from edge.tools.net import free_port, wait_http

RSS_LIMIT_MB = 400.0
RSS_GROWTH_LIMIT = 0.05
LINESIDE = [sys.executable, "-m", "edge.cli"]


class SoakError(RuntimeError):
    """The soak could not run (a process did not start or died); the message says which and its last output."""


@dataclass
class Sample:
    t_s: float
    rss_mb: float
    fds: int
    threads: int
    frames: int
    fps: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    station_rss_mb: float


@dataclass
class SoakResult:
    samples: list[Sample] = field(default_factory=list)
    warmup_s: float = 0.0
    verdict: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return bool(self.verdict.get("pass"))



def _wait(url: str, timeout: float, proc: subprocess.Popen[bytes], log_file: Path) -> None:
    try:
        wait_http(url, timeout, proc, log_file)
    except (RuntimeError, TimeoutError) as exc:
        raise SoakError(str(exc)) from None


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def textile_profile(profile_dir: Path, pack: Path, profile: Path | None, line_id: str) -> None:
    """A line profile in ``profile_dir``: a copy of ``profile`` when given, else the one there, else one calibrated
    on the demo's textile images (about 10 s)."""
    if profile is not None:
        shutil.rmtree(profile_dir, ignore_errors=True)
        shutil.copytree(profile, profile_dir)
    elif not (profile_dir / "CURRENT").exists():
        from edge.demo import demo_calibration_images
        from edge.fit.calibrate import calibrate
        from edge.vlm.pack import load_pack
        from edge.vlm.vocabulary import load_vocabulary

        good, defects = demo_calibration_images()
        print(f"{line_id}: calibrating a textile line profile from {len(good)} good images …", flush=True)
        calibrate(load_pack(pack), load_vocabulary(), good, line_id, profile_dir, defects=defects,
                  provider="cpu", progress=lambda items, _label: items)


def prepare(workdir: Path, fps: float, profile: Path | None, pack: Path) -> tuple[Path, dict[str, int]]:
    """Frames, a calibrated profile and a config.yaml under `workdir`; returns the config path and the ports."""
    from edge.demo import lay_out_frames

    workdir.mkdir(parents=True, exist_ok=True)
    lay_out_frames(workdir / "frames")
    profile_dir = workdir / "profile"
    textile_profile(profile_dir, pack, profile, "soak-line")
    for stale in ("outbox", "images", "station.db", "station.db-wal", "station.db-shm", "decisions.jsonl"):
        path = workdir / stale
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    ports = {"ingest": free_port(), "http": free_port(), "health": free_port(), "pub": free_port(),
             "station_metrics": free_port()}
    cfg = {
        "line": {
            "id": "soak-line",
            "source": {"kind": "folder", "id": "cam0", "path": str(workdir / "frames"), "fps": fps, "loop": True},
            "model": {"pack": str(pack), "provider": "cpu"},
            "profile": str(profile_dir),
            "transport": {"station": f"tcp://127.0.0.1:{ports['ingest']}", "outbox_dir": str(workdir / "outbox")},
            "status_file": str(workdir / "daemon-status.json"),
            "ops": {"health_port": ports["health"], "decisions_pub": f"tcp://127.0.0.1:{ports['pub']}"},
        },
        "station": {"ingest_bind": f"tcp://127.0.0.1:{ports['ingest']}", "http_port": ports["http"],
                    "database_url": f"sqlite:///{workdir / 'station.db'}", "storage_dir": str(workdir / "images"),
                    "metrics_port": ports["station_metrics"]},
    }
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, ports


def _stop(proc: subprocess.Popen[bytes], timeout: float = 30) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def run_soak(workdir: Path, minutes: float, fps: float = 15.0, interval_s: float = 10.0,
             profile: Path | None = None, pack: Path | None = None, echo: Any = print) -> SoakResult:
    from edge.demo import default_pack_dir

    workdir = workdir.resolve()
    config, ports = prepare(workdir, fps, profile, pack or default_pack_dir())
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("NOTIFY_SOCKET", None)
    station_log, daemon_log = workdir / "station.log", workdir / "daemon.log"
    with open(station_log, "wb") as slog, open(daemon_log, "wb") as dlog:
        station = subprocess.Popen([*LINESIDE, "station", "--config", str(config)], stdout=slog,
                                   stderr=subprocess.STDOUT, env=env)
        daemon: subprocess.Popen[bytes] | None = None
        sub: zmq.Socket = zmq.Context.instance().socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, b"decision")
        try:
            _wait(f"http://127.0.0.1:{ports['http']}/healthz", 60, station, station_log)
            sub.connect(f"tcp://127.0.0.1:{ports['pub']}")
            daemon = subprocess.Popen([*LINESIDE, "run", "--config", str(config)], stdout=dlog,
                                      stderr=subprocess.STDOUT, env=env)
            _wait(f"http://127.0.0.1:{ports['health']}/readyz", 120, daemon, daemon_log)
            return _sample(daemon, station, sub, minutes * 60, interval_s, echo, daemon_log)
        finally:
            sub.close(linger=0)
            if daemon is not None:
                _stop(daemon)
            _stop(station)


def _sample(daemon: subprocess.Popen[bytes], station: subprocess.Popen[bytes], sub: zmq.Socket, duration_s: float,
            interval_s: float, echo: Any, daemon_log: Path) -> SoakResult:
    result = SoakResult(warmup_s=min(60.0, max(interval_s * 2, duration_s * 0.2)))
    echo(header())
    started = time.monotonic()
    next_at = started + interval_s
    latencies: list[float] = []
    frames_total = 0
    last_frames = 0
    poller = zmq.Poller()
    poller.register(sub, zmq.POLLIN)
    while True:
        now = time.monotonic()
        if daemon.poll() is not None:
            raise SoakError(f"the daemon exited with {daemon.returncode}: {daemon_log.read_text()[-2000:]}")
        if station.poll() is not None:
            raise SoakError(f"the station exited with {station.returncode}")
        if now >= next_at:
            s = Sample(t_s=round(now - started, 1), rss_mb=rss_bytes(daemon.pid) / 2**20, fds=open_fds(daemon.pid),
                       threads=thread_count(daemon.pid), frames=frames_total,
                       fps=(frames_total - last_frames) / interval_s, p50_ms=_percentile(latencies, 50),
                       p95_ms=_percentile(latencies, 95), p99_ms=_percentile(latencies, 99),
                       station_rss_mb=rss_bytes(station.pid) / 2**20)
            result.samples.append(s)
            echo(row(s))
            latencies, last_frames = [], frames_total
            next_at += interval_s
            if now - started >= duration_s - 1e-6:
                break
        if dict(poller.poll(max(0, int((next_at - time.monotonic()) * 1000)))):
            while True:
                try:
                    _topic, body = sub.recv_multipart(flags=zmq.NOBLOCK)
                except zmq.Again:
                    break
                latencies.append(float(json.loads(body)["latency_ms"]))
                frames_total += 1
    result.verdict = verdict(result.samples, result.warmup_s)
    return result


def verdict(samples: list[Sample], warmup_s: float) -> dict[str, Any]:
    after = [s for s in samples if s.t_s >= warmup_s] or samples[-1:]
    base = after[0]
    peak = max(s.rss_mb for s in samples)
    growth = (samples[-1].rss_mb - base.rss_mb) / base.rss_mb if base.rss_mb else 0.0
    # a leak stays: the end's count is the fewest FDs of the last samples, so a file open for a moment (a status
    # write, a log rotation) at a sampling instant does not read as growth
    fd_base = max(s.fds for s in after[:3])
    fd_end = min(s.fds for s in samples[-3:])
    checks = {"rss_peak_mb": round(peak, 1), "rss_ok": peak <= RSS_LIMIT_MB,
              "rss_growth_pct": round(growth * 100, 2), "growth_ok": growth <= RSS_GROWTH_LIMIT,
              "fds_after_warmup": fd_base, "fds_end": fd_end, "fds_ok": fd_end <= fd_base,
              "frames": samples[-1].frames if samples else 0}
    checks["pass"] = checks["rss_ok"] and checks["growth_ok"] and checks["fds_ok"] and checks["frames"] > 0
    return checks


def header() -> str:
    return ("|    t s | RSS MB | FDs | threads | frames |  fps | p50 ms | p95 ms | p99 ms | station RSS MB |\n"
            "|-------:|-------:|----:|--------:|-------:|-----:|-------:|-------:|-------:|---------------:|")


def _ms(v: float | None) -> str:
    return "—" if v is None else f"{v:.0f}"


def row(s: Sample) -> str:
    return (f"| {s.t_s:6.0f} | {s.rss_mb:6.1f} | {s.fds:3d} | {s.threads:7d} | {s.frames:6d} | {s.fps:4.1f} | "
            f"{_ms(s.p50_ms):>6} | {_ms(s.p95_ms):>6} | {_ms(s.p99_ms):>6} | {s.station_rss_mb:14.1f} |")


def describe_verdict(v: dict[str, Any]) -> str:
    return (f"verdict: {'PASS' if v['pass'] else 'FAIL'} — peak RSS {v['rss_peak_mb']} MB (≤ {RSS_LIMIT_MB:.0f}: "
            f"{'ok' if v['rss_ok'] else 'no'}), RSS growth after warm-up {v['rss_growth_pct']} % "
            f"(≤ {RSS_GROWTH_LIMIT * 100:.0f} %: {'ok' if v['growth_ok'] else 'no'}), FDs {v['fds_after_warmup']} → "
            f"{v['fds_end']} ({'no growth' if v['fds_ok'] else 'GROWTH'}), {v['frames']} frames decided")
