"""Fault injection for the review transport: every routed frame reaches the station exactly once, whatever happens.

``python -m edge.ops.faults run --frames 10000 --out var/faults`` runs every scenario (the long version; CI runs
``tests/transport/test_faults.py``, the same scenarios over a few hundred frames) and writes ``results.md`` and
``results.json`` into ``--out``: per scenario the frames routed, stored, lost, duplicated, left in the outbox, and
the seconds it took.

Each scenario streams N frames from a real **edge process** (the real ``Outbox`` + ``OutboxSender``, fed synthetic
``ReviewItem`` s with small real JPEGs instead of the vision models, so 10,000 frames take a minute) to a real
**station process** (the ``Store`` + ``IngestServer`` that ``lineside station`` runs, without its console) over
loopback TCP, and injects one kind of fault while the stream runs:

- ``station_kill``: kill -9 the station several times mid-stream and start it again;
- ``edge_kill``: kill -9 the edge several times and start it again: the outbox on disk must be resent, and a frame
  put but not yet recorded as routed is put again (two outbox files for one frame id);
- ``unreachable``: a ``FaultProxy`` between them cuts every connection and refuses new ones for ``--outage-s``;
- ``slow``: the proxy delays and throttles the link, and the station is frozen (SIGSTOP) past the edge's ack timeout
  twice: acks come late, the edge resends, the station gets duplicates;
- ``disk_full``: the station's database and images live on a small tmpfs that is filled up mid-stream, then freed
  (where tmpfs cannot be mounted — not root — a Store subclass raises ENOSPC while a flag file exists instead: the
  one fake here, and the results say which was used);
- ``dup_reorder``: the proxy duplicates and reorders whole ZeroMQ messages in both directions (items and acks).

Then the edge must exit by itself with its outbox drained, and the check is made from the files: every frame id
0..N-1 in the station's database exactly once, its image file byte for byte the frame that was sent, nothing left in
the outbox (``pending/`` or ``rejected/``).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edge.ops.faultproxy import FaultProxy
from edge.ops.signals import SignalDispatcher

SCENARIOS = ("station_kill", "edge_kill", "unreachable", "slow", "disk_full", "dup_reorder")
LINE = "faults"


class FaultRunError(RuntimeError):
    """A scenario could not be run (a process would not start); not the same as a scenario that found a loss."""


# ---- synthetic frames --------------------------------------------------------------------------------------------

def base_jpeg() -> bytes:
    """A real JPEG of a few KB (a gradient with sensor-like noise)."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(7)
    ramp = np.linspace(60, 200, 160, dtype=np.float32)
    image = np.repeat(np.repeat(ramp[None, :, None], 120, axis=0), 3, axis=2)
    image += rng.normal(0, 6, image.shape).astype(np.float32)
    ok, buf = cv2.imencode(".jpg", np.clip(image, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise FaultRunError("OpenCV cannot encode a JPEG")
    return bytes(buf.tobytes())


def frame_jpeg(base: bytes, frame_id: str) -> bytes:
    """`base` with the frame id in a JPEG comment (COM) segment after SOI: still a valid JPEG, unique per frame, so
    a stored image can be checked byte for byte against the frame it claims to be."""
    comment = frame_id.encode()
    return base[:2] + b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment + base[2:]


def frame_id(run: str, seq: int) -> str:
    return f"{LINE}:cam0:{run}:{seq}"


def fault_item(run: str, seq: int) -> Any:
    from edge.transport.schema import Region, ReviewItem

    now = time.time()
    return ReviewItem(
        frame_id=frame_id(run, seq), line_id=LINE, source_id="cam0", seq=seq, captured_wall=now, decided_wall=now,
        width=160, height=120, verdict="spot", class_scores={"good": 0.45, "spot": 0.55}, anomaly_score=1.2,
        anomaly_threshold=1.0, uncertainty=0.55, reason="uncertain",
        regions=[Region(x=10, y=12, w=20, h=8, area_px=160, area_pct=0.8, peak=1.3, defect_class="spot",
                        location="upper-left", caption="spot, upper-left, 20×8 px (0.8 %)",
                        description="a dark spot", caption_score=0.3)],
        pack_version="faults", profile_version="faults/v1")


# ---- the station process -----------------------------------------------------------------------------------------

def _enospc_ingest(base: type, flag: Path) -> type:
    """The disk-full fake, used only where no tmpfs can be mounted: storing raises ENOSPC while `flag` exists."""

    class EnospcIngest(base):
        def _check(self) -> None:
            if flag.exists():
                raise OSError(errno.ENOSPC, "No space left on device (simulated)", str(flag))

        def add_item(self, item: Any, jpeg: bytes) -> bool:
            self._check()
            return bool(super().add_item(item, jpeg))

        def add_items(self, batch: list[Any]) -> list[bool]:
            self._check()
            return list(super().add_items(batch))

    return EnospcIngest


def station_main(args: argparse.Namespace) -> int:
    """The station's ingest half as a process; writes its counters to ``--status`` every 0.2 s."""
    from edge.station.ingest import IngestServer, sqlite_wal_checkpoint
    from edge.station.retention import remove_orphans
    from edge.station.store import Store
    from edge.station.store.ingest import Ingest

    store = Store(args.database_url, Path(args.images))
    ingest = store.ingest if args.enospc_flag is None else _enospc_ingest(Ingest, Path(args.enospc_flag))(store)
    remove_orphans(store, grace_s=0)  # as `lineside station` does at start: what a kill -9 left behind
    server = IngestServer(ingest, args.bind, poll_ms=20, checkpoint=lambda: sqlite_wal_checkpoint(store.engine),
                          checkpoint_idle_s=0.5)
    server.start()
    stop = threading.Event()
    signals = SignalDispatcher({signal.SIGTERM: lambda _: stop.set()}).start()
    status = Path(args.status)
    try:
        while not stop.wait(0.2):
            _write_json(status, {"pid": os.getpid(), "ready": True, "counters": server.counters})
    finally:
        signals.close()
        server.stop()
        _write_json(status, {"pid": os.getpid(), "ready": False, "counters": server.counters})
        store.close()
    return 0


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


# ---- the edge process --------------------------------------------------------------------------------------------

def _resume_point(routed_log: Path) -> int:
    """Next seq to produce: one past the last whole line of the routed log. A line cut by kill -9 is dropped (the
    frame it named is put again: the station settles the twin)."""
    if not routed_log.exists():
        return 0
    data = routed_log.read_bytes()
    whole = data[:data.rfind(b"\n") + 1]
    if len(whole) != len(data):
        with open(routed_log, "r+b") as fh:
            fh.truncate(len(whole))
    seqs = [int(line) for line in whole.split()]
    return max(seqs) + 1 if seqs else 0


def edge_main(args: argparse.Namespace) -> int:
    """Put `--frames` frames into a real outbox at `--rate`, send them with the real sender, exit once drained."""
    from edge.config import TransportConfig
    from edge.transport.outbox import Outbox
    from edge.transport.sender import OutboxSender

    cfg = TransportConfig(station=args.station, outbox_dir=Path(args.outbox), ack_timeout_s=args.ack_timeout_s,
                          retry_initial_s=0.1, retry_max_s=1.0, max_in_flight=32, outbox_fsync=args.fsync)
    outbox = Outbox.from_config(cfg)
    sender = OutboxSender(outbox, cfg)
    sender.start()
    routed_log = Path(args.routed_log)
    start = _resume_point(routed_log)
    base = base_jpeg()
    t0 = time.monotonic()
    with open(routed_log, "a") as routed:
        for seq in range(start, args.frames):
            ahead = t0 + (seq - start) / args.rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
            item = fault_item(args.run, seq)
            if outbox.put(item, frame_jpeg(base, item.frame_id)) is None:
                print(f"outbox refused {item.frame_id}", file=sys.stderr)
                return 2
            routed.write(f"{seq}\n")
            routed.flush()  # after the put: a frame logged as routed is always on disk in the outbox
    drained = sender.drain(args.drain_timeout_s)
    sender.stop()
    sender.join(5)
    print(json.dumps({"drained": drained, "outbox": outbox.snapshot(), "sender": sender.status()}))
    return 0 if drained else 1


# ---- the harness ------------------------------------------------------------------------------------------------

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _python() -> list[str]:
    return [sys.executable, "-m", "edge.ops.faults"]


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


# ---- scenarios ---------------------------------------------------------------------------------------------------

def _kill_points(opts: FaultOptions) -> list[int]:
    return [opts.frames * (k + 1) // (opts.kills + 1) for k in range(opts.kills)]


def _station_kill(run: FaultRun) -> list[str]:
    run.start_station()
    run.start_edge()
    for at in _kill_points(run.opts):
        run.wait_routed(at)
        run.kill_station()
        time.sleep(0.3)
        run.start_station()
    return [f"station killed -9 {run.opts.kills}× and restarted"]


def _edge_kill(run: FaultRun) -> list[str]:
    run.start_station()
    run.start_edge()
    for at in _kill_points(run.opts):
        run.wait_routed(at)
        run.kill_edge()
        run.start_edge()
    return [f"edge killed -9 {run.opts.kills}× and restarted"]


def _unreachable(run: FaultRun) -> list[str]:
    assert run.proxy is not None
    run.start_station()
    run.start_edge()
    run.wait_routed(run.opts.frames // 4)
    run.proxy.cut()
    time.sleep(run.opts.outage_s)
    during = run.routed()
    run.proxy.restore()
    return [f"link cut and port refused for {run.opts.outage_s:g} s ({during} frames routed by its end)"]


def _slow(run: FaultRun) -> list[str]:
    assert run.proxy is not None
    run.proxy.latency_s = 0.05
    run.proxy.bytes_per_s = 400_000
    run.start_station()
    run.start_edge()
    frozen = run.opts.ack_timeout_s * 1.5
    for at in (run.opts.frames // 4, run.opts.frames // 2):
        run.wait_routed(at)
        run.kill_station(signal.SIGSTOP)
        time.sleep(frozen)
        run.kill_station(signal.SIGCONT)
    return [f"link +50 ms each way, 400 KB/s; station frozen {frozen:g} s twice (past the ack timeout)"]


def _dup_reorder(run: FaultRun) -> list[str]:
    assert run.proxy is not None
    run.proxy.duplicate_p = 0.1
    run.proxy.reorder_p = 0.2
    run.start_station()
    run.start_edge()
    return ["10 % of messages duplicated and 20 % reordered, both directions"]


@contextlib.contextmanager
def _small_disk(path: Path, size_mb: int) -> Iterator[bool]:
    """A tmpfs of `size_mb` at `path` when this process may mount one (root); yields whether it is mounted."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = False
    if os.geteuid() == 0 and shutil.which("mount"):
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(path)],
                              capture_output=True, text=True)
        mounted = done.returncode == 0
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _fill(path: Path, leave_bytes: int) -> Path:
    """A file that leaves only about `leave_bytes` free on `path`'s file system: written until ENOSPC (the station
    writes at the same time, so a size measured first would be stale), then cut back by `leave_bytes`."""
    filler = path / "filler.bin"
    chunk = b"\0" * (1 << 20)
    with open(filler, "wb", buffering=0) as fh:
        while True:
            try:
                fh.write(chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if len(chunk) <= 4096:
                    break
                chunk = chunk[:len(chunk) // 16]
    os.truncate(filler, max(0, filler.stat().st_size - leave_bytes))
    return filler


def _disk_full(run: FaultRun, mounted: bool) -> list[str]:
    run.start_station()
    run.start_edge()
    run.wait_routed(run.opts.frames // 4)
    if mounted:
        filler = _fill(run.images.parent, 64 * 1024)
        how = "tmpfs filled (64 KB left)"
    else:
        assert run.enospc_flag is not None
        run.enospc_flag.touch()
        filler = run.enospc_flag
        how = "no tmpfs here (not root): ENOSPC simulated by a Store subclass"
    run.wait_for(lambda: run.station_counters()["errors"] > 0, 30, "the station to hit the full disk")
    time.sleep(run.opts.outage_s)
    errors = run.station_counters()["errors"]
    filler.unlink()
    return [f"{how}; full for {run.opts.outage_s:g} s ({errors} failed stores), then freed"]


def run_scenario(name: str, workdir: Path, opts: FaultOptions) -> ScenarioResult:
    """Run one scenario in `workdir` (which must not exist yet or be empty) and check its outcome."""
    if name not in SCENARIOS:
        raise ValueError(f"unknown fault scenario {name!r}; use one of {', '.join(SCENARIOS)}")
    workdir.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    edge_exit: int | None = None
    with contextlib.ExitStack() as stack:
        station_dir = None
        mounted = False
        if name == "disk_full":
            station_dir = workdir / "station-disk"
            mounted = stack.enter_context(_small_disk(station_dir, max(16, opts.frames * 12 // 1000 + 8)))
        run = FaultRun(workdir, name, opts, proxy=name in ("unreachable", "slow", "dup_reorder"),
                       station_dir=station_dir)
        if name == "disk_full" and not mounted:
            run.enospc_flag = workdir / "enospc.flag"
        try:
            if name == "disk_full":
                notes = _disk_full(run, mounted)
            else:
                notes = {"station_kill": _station_kill, "edge_kill": _edge_kill, "unreachable": _unreachable,
                         "slow": _slow, "dup_reorder": _dup_reorder}[name](run)
            edge_exit = run.wait_edge()
            if edge_exit is None:
                notes.append(f"edge did not drain within {opts.timeout_s:g} s")
        except FaultRunError as exc:
            notes.append(f"aborted: {exc}")
        except Exception as exc:  # the harness's own failure: report it in the table, go on with the next scenario
            notes.append(f"aborted: harness error {type(exc).__name__}: {exc}")
        finally:
            if run.station is not None and run.station.poll() is None:
                run.kill_station(signal.SIGCONT)
                run.kill_station(signal.SIGTERM)
            run.close()
        return run.verify(edge_exit, notes)


# ---- report ------------------------------------------------------------------------------------------------------

def results_table(results: list[ScenarioResult]) -> str:
    lines = ["| scenario | frames | routed | stored | lost | duplicated | outbox left | seconds | faults injected |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        lines.append(f"| {r.scenario} | {r.frames:,} | {r.routed:,} | {r.stored:,} | {r.lost} | {r.duplicated} | "
                     f"{r.outbox_left} | {r.seconds:.1f} | {'; '.join(r.notes)} |")
    return "\n".join(lines)


def run_all(out: Path, opts: FaultOptions, scenarios: list[str], say: Callable[[str], None] = print) -> list[
        ScenarioResult]:
    out.mkdir(parents=True, exist_ok=True)
    results: list[ScenarioResult] = []
    for name in scenarios:
        workdir = out / name
        if workdir.exists():
            shutil.rmtree(workdir)
        say(f"{name}: {opts.frames} frames …")
        result = run_scenario(name, workdir, opts)
        say(f"{name}: {'ok' if result.ok else 'FAILED'} — stored {result.stored}/{result.frames}, lost {result.lost}, "
            f"duplicated {result.duplicated}, outbox left {result.outbox_left}, {result.seconds:.1f} s")
        results.append(result)
    table = results_table(results)
    command = " ".join(["python -m edge.ops.faults", *sys.argv[1:]])
    (out / "results.md").write_text(f"Command: `{command}`\n\n{table}\n")
    (out / "results.json").write_text(json.dumps([asdict(r) for r in results], indent=2))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edge.ops.faults", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run fault scenarios and write results.md / results.json")
    p.add_argument("--frames", type=int, default=10_000)
    p.add_argument("--out", type=Path, default=Path("var/faults"))
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"comma list of {', '.join(SCENARIOS)}")
    p.add_argument("--rate", type=float, default=250.0, help="frames/s the edge routes")
    p.add_argument("--outage-s", type=float, default=60.0, help="unreachable / disk full: how long")
    p.add_argument("--kills", type=int, default=5, help="station_kill / edge_kill: how many kill -9")
    p.add_argument("--fsync", choices=("always", "batch"), default="always", help="the edge outbox's fsync policy")
    p.add_argument("--timeout-s", type=float, default=900.0, help="per scenario")
    p.add_argument("--database-url", default=None, help="station database (default: SQLite per scenario)")
    s = sub.add_parser("station", help="(internal) a station ingest process")
    s.add_argument("--database-url", required=True)
    s.add_argument("--images", required=True)
    s.add_argument("--bind", required=True)
    s.add_argument("--status", required=True)
    s.add_argument("--enospc-flag", default=None)
    e = sub.add_parser("edge", help="(internal) an edge outbox + sender process")
    e.add_argument("--station", required=True)
    e.add_argument("--outbox", required=True)
    e.add_argument("--routed-log", required=True)
    e.add_argument("--frames", type=int, required=True)
    e.add_argument("--rate", type=float, required=True)
    e.add_argument("--run", required=True)
    e.add_argument("--ack-timeout-s", type=float, default=1.0)
    e.add_argument("--fsync", choices=("always", "batch"), default="batch")
    e.add_argument("--drain-timeout-s", type=float, default=120.0)
    args = parser.parse_args(argv)
    if args.command == "station":
        return station_main(args)
    if args.command == "edge":
        return edge_main(args)
    names = [n.strip() for n in args.scenarios.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; use {', '.join(SCENARIOS)}")
    opts = FaultOptions(frames=args.frames, rate=args.rate, outage_s=args.outage_s, kills=args.kills,
                        fsync=args.fsync, timeout_s=args.timeout_s, database_url=args.database_url)
    results = run_all(args.out, opts, names)
    print(results_table(results))
    print(f"written: {args.out / 'results.md'}, {args.out / 'results.json'}")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
