"""The faults injected while a run streams: each scenario starts, kills, freezes, cuts or fills what it needs."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path

from edge.tools.faults.harness import FaultOptions, FaultRun, ScenarioResult
from edge.tools.faults.processes import SCENARIOS, FaultRunError


def _kill_points(opts: FaultOptions) -> list[int]:
    return [opts.frames * (k + 1) // (opts.kills + 1) for k in range(opts.kills)]


def _station_kill(run: FaultRun) -> list[str]:
    run.start()
    for at in _kill_points(run.opts):
        run.wait_routed(at)
        run.kill_station()
        time.sleep(0.3)
        run.start_station()
    return [f"station killed -9 {run.opts.kills}× and restarted"]


def _edge_kill(run: FaultRun) -> list[str]:
    run.start()
    for at in _kill_points(run.opts):
        run.wait_routed(at)
        run.kill_edge()
        run.start_edge()
    return [f"edge killed -9 {run.opts.kills}× and restarted"]


def _unreachable(run: FaultRun) -> list[str]:
    assert run.proxy is not None
    run.start()
    run.wait_routed(run.opts.frames // 4)
    run.proxy.cut()
    time.sleep(run.opts.outage_s)
    during = run.routed()
    run.proxy.restore()
    return [f"link cut and port refused for {run.opts.outage_s:g} s ({during} frames routed by its end)"]


def _slow(run: FaultRun) -> list[str]:
    run.start(latency_s=0.05, bytes_per_s=400_000)
    frozen = run.opts.ack_timeout_s * 1.5
    for at in (run.opts.frames // 4, run.opts.frames // 2):
        run.wait_routed(at)
        run.kill_station(signal.SIGSTOP)
        time.sleep(frozen)
        run.kill_station(signal.SIGCONT)
    return [f"link +50 ms each way, 400 KB/s; station frozen {frozen:g} s twice (past the ack timeout)"]


def _dup_reorder(run: FaultRun) -> list[str]:
    run.start(duplicate_p=0.1, reorder_p=0.2)
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
    run.start()
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
    command = " ".join(["python -m edge.tools.faults", *sys.argv[1:]])
    (out / "results.md").write_text(f"Command: `{command}`\n\n{table}\n")
    (out / "results.json").write_text(json.dumps([asdict(r) for r in results], indent=2))
    return results
