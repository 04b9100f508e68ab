"""The fault-injection harness: a run's processes, the edge and station they start, their results and report."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.tools.faultproxy import FaultProxy
from edge.tools.faults.processes import LINE, FaultRunError, base_jpeg, frame_id, frame_jpeg
from edge.tools.net import free_port


@dataclass
class ScenarioResult:
    scenario: str
    frames: int
    routed: int
    stored: int
    lost: int
    duplicated: int
    outbox_left: int
    seconds: float
    bad_images: int = 0
    edge_exit: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        # an aborted scenario may have lost nothing only because its fault never happened: not a pass
        return (self.lost == 0 and self.duplicated == 0 and self.outbox_left == 0 and self.bad_images == 0
                and self.routed == self.frames == self.stored and self.edge_exit == 0
                and not any(n.startswith("aborted") for n in self.notes))


@dataclass
class FaultOptions:
    frames: int = 400
    rate: float = 250.0  # frames/s the edge routes
    outage_s: float = 3.0  # unreachable / disk full: how long the fault lasts
    kills: int = 3  # station_kill / edge_kill: how many times
    ack_timeout_s: float = 1.0
    fsync: str = "batch"
    timeout_s: float = 120.0  # a scenario that has not finished by then is stopped and reported as failed
    database_url: str | None = None  # default: a SQLite file in the scenario's folder



def _python() -> list[str]:
    return [sys.executable, "-m", "edge.tools.faults"]


class FaultRun:
    """One scenario's processes and folders: a station (restartable on one port), an edge (restartable on one
    outbox), and optionally a FaultProxy between them."""

    def __init__(self, workdir: Path, scenario: str, opts: FaultOptions, *, proxy: bool = False,
                 station_dir: Path | None = None) -> None:
        self.workdir = workdir
        self.scenario = scenario
        # frame ids carry the run's start time too: a shared database (PostgreSQL) may hold earlier runs' frames
        self.run_id = f"{scenario}.{time.time_ns() // 1_000_000}"
        self.opts = opts
        workdir.mkdir(parents=True, exist_ok=True)
        data = station_dir or workdir / "station"
        data.mkdir(parents=True, exist_ok=True)
        self.images = data / "images"
        self.database_url = opts.database_url or f"sqlite:///{data / 'station.db'}"
        self.outbox = workdir / "outbox"
        self.routed_log = workdir / "routed.log"
        self.station_port = free_port()
        self.proxy: FaultProxy | None = None
        if proxy:
            self.proxy = FaultProxy(("127.0.0.1", self.station_port), seed=zlib.crc32(scenario.encode()))
            self.proxy.start()
        self.enospc_flag: Path | None = None
        self.station: subprocess.Popen[bytes] | None = None
        self.edge: subprocess.Popen[bytes] | None = None
        self.station_starts = 0
        self.edge_starts = 0
        self.started = time.monotonic()
        self.deadline = self.started + opts.timeout_s

    @property
    def edge_target(self) -> str:
        port = self.proxy.port if self.proxy is not None else self.station_port
        return f"tcp://127.0.0.1:{port}"

    def _status_file(self, n: int) -> Path:
        return self.workdir / f"station-{n}.json"

    def start(self, **proxy: float) -> None:
        """Set the proxy's faults (attributes of FaultProxy) if any, then start the station and the edge."""
        if proxy:
            assert self.proxy is not None, "this run has no proxy"
            for name, value in proxy.items():
                setattr(self.proxy, name, value)
        self.start_station()
        self.start_edge()

    def start_station(self) -> None:
        self.station_starts += 1
        n = self.station_starts
        cmd = [*_python(), "station", "--database-url", self.database_url, "--images", str(self.images),
               "--bind", f"tcp://127.0.0.1:{self.station_port}", "--status", str(self._status_file(n))]
        if self.enospc_flag is not None:
            cmd += ["--enospc-flag", str(self.enospc_flag)]
        with open(self.workdir / f"station-{n}.log", "wb") as out:
            self.station = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        self.wait_for(lambda: self._status(n).get("ready", False), 30, "the station to start")

    def _status(self, n: int) -> dict[str, Any]:
        try:
            return dict(json.loads(self._status_file(n).read_text()))
        except (OSError, ValueError):
            return {}

    def station_counters(self) -> Counter[str]:
        """Counters summed over every station run of this scenario (a killed run's last 0.2 s may be missing)."""
        total: Counter[str] = Counter()
        for n in range(1, self.station_starts + 1):
            total.update(self._status(n).get("counters", {}))
        return total

    def kill_station(self, sig: int = signal.SIGKILL) -> None:
        assert self.station is not None
        self.station.send_signal(sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            self.station.wait(30)

    def start_edge(self) -> None:
        self.edge_starts += 1
        cmd = [*_python(), "edge", "--station", self.edge_target, "--outbox", str(self.outbox),
               "--routed-log", str(self.routed_log), "--frames", str(self.opts.frames), "--rate",
               str(self.opts.rate), "--run", self.run_id, "--ack-timeout-s", str(self.opts.ack_timeout_s),
               "--fsync", self.opts.fsync, "--drain-timeout-s", str(max(5.0, self.deadline - time.monotonic()))]
        with open(self.workdir / f"edge-{self.edge_starts}.log", "wb") as out:
            self.edge = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)

    def kill_edge(self) -> None:
        assert self.edge is not None
        self.edge.kill()
        self.edge.wait(30)

    def routed(self) -> int:
        try:
            return self.routed_log.read_bytes().count(b"\n")
        except FileNotFoundError:
            return 0

    def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = min(time.monotonic() + timeout, self.deadline)
        while not predicate():
            if self.edge is not None and self.edge.poll() not in (None, 0):
                raise FaultRunError(f"{self.scenario}: the edge exited with {self.edge.returncode} while waiting "
                                    f"for {what} (see {self.workdir}/edge-{self.edge_starts}.log)")
            if time.monotonic() > deadline:
                raise FaultRunError(f"{self.scenario}: timed out waiting for {what}")
            time.sleep(0.02)

    def wait_routed(self, n: int) -> None:
        self.wait_for(lambda: self.routed() >= n, self.opts.timeout_s, f"{n} frames routed")

    def wait_edge(self) -> int | None:
        """Wait for the edge to finish (drained); None if the scenario's time ran out first."""
        assert self.edge is not None
        try:
            return self.edge.wait(max(1.0, self.deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            return None

    def close(self) -> None:
        for proc in (self.edge, self.station):
            if proc is not None and proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGCONT)
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        if self.proxy is not None:
            self.proxy.stop()

    def verify(self, edge_exit: int | None, notes: list[str]) -> ScenarioResult:
        """Compare what the edge routed with what the station stored, from the files."""
        from sqlalchemy import create_engine, text

        routed_seqs = {int(s) for s in self.routed_log.read_bytes().split()} if self.routed_log.exists() else set()
        engine = create_engine(self.database_url)
        try:
            with engine.connect() as conn:
                rows = list(conn.execute(text("SELECT frame_id, image_path FROM review_items "
                                              "WHERE line_id = :line AND frame_id LIKE :run"),
                                         {"line": LINE, "run": frame_id(self.run_id, 0)[:-1] + "%"}))
        finally:
            engine.dispose()
        expected = {frame_id(self.run_id, s) for s in range(self.opts.frames)}
        counts = Counter(str(r[0]) for r in rows)
        stored = set(counts) & expected
        duplicated = sum(c - 1 for c in counts.values()) + len(set(counts) - expected)
        base = base_jpeg()
        bad = 0
        for fid, rel in rows:
            try:
                if (self.images / rel).read_bytes() != frame_jpeg(base, fid):
                    bad += 1
            except OSError:
                bad += 1
        files = sum(1 for _ in (self.images / LINE).glob("*.jpg"))
        if files > len(rows):
            notes.append(f"{files - len(rows)} image files without a row (removed at the station's next start)")
        left = sum(1 for _ in (self.outbox / "pending").glob("*.item")) + sum(
            1 for _ in (self.outbox / "rejected").glob("*"))
        counters = self.station_counters()
        notes = [*notes, f"station: {counters['duplicates']} redeliveries settled as duplicates, "
                 f"{counters['errors']} store errors (not acked, resent)"]
        if self.proxy is not None:
            c = self.proxy.counters
            notes.append(f"proxy: {c['connections']} connections, {c['duplicated']} messages duplicated, "
                         f"{c['reordered']} reordered, {c['cuts']} cuts")
        return ScenarioResult(scenario=self.scenario, frames=self.opts.frames, routed=len(routed_seqs),
                              stored=len(stored), lost=len(expected - set(counts)), duplicated=duplicated,
                              outbox_left=left, seconds=round(time.monotonic() - self.started, 1), bad_images=bad,
                              edge_exit=edge_exit, notes=notes)
