"""Many lines, one station: N daemon-like sender processes into one station process, 50 KB JPEGs, durable commits.

``python -m edge.bench.ingest_procs --senders 4 --seconds 20`` starts the station's ingest as a process (the
``Store`` + ``IngestServer`` of ``lineside station``, SQLite WAL ``synchronous=FULL``, image files fsynced before
the commit, acks after it) and N edge processes, each with its own real on-disk ``Outbox`` (fsync ``always`` by
default, as a daemon) and ``OutboxSender``, keeping up to ``--window`` frames waiting. The rate is the station's
stored-item count over the measured window (after ``--warmup-s``); at the end every edge drains and the database
must hold exactly the frames the edges put, once each. All processes share this machine's cores: the edges' own
work (JPEG put + fsync, sending) is paid from the station's CPU budget here, not on separate boxes as on a site.

``lineside bench ingest`` (threads in one process, DEALER sockets without outboxes) measures the station alone.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _item(line: str, seq: int) -> Any:
    from edge.transport.schema import ReviewItem

    now = time.time()
    return ReviewItem(frame_id=f"{line}:cam0:1:{seq}", line_id=line, source_id="cam0", seq=seq, captured_wall=now,
                      decided_wall=now, width=640, height=480, verdict="crack",
                      class_scores={"good": 0.3, "crack": 0.7}, anomaly_score=2.0, anomaly_threshold=1.0,
                      uncertainty=0.6, pack_version="bench", profile_version="bench/v1")


def sender_main(args: argparse.Namespace) -> int:
    """One line's edge: put frames into a real outbox as fast as the window allows for `--seconds`, then drain."""
    from edge.bench.station import jpeg_of_size
    from edge.config import TransportConfig
    from edge.transport.outbox import Outbox
    from edge.transport.sender import OutboxSender

    jpeg = jpeg_of_size(args.jpeg_kb)
    cfg = TransportConfig(station=args.station, outbox_dir=Path(args.outbox), outbox_fsync=args.fsync,
                          max_in_flight=args.in_flight, ack_timeout_s=10.0)
    outbox = Outbox.from_config(cfg)
    sender = OutboxSender(outbox, cfg)
    sender.start()
    seq = 0
    end = time.monotonic() + args.seconds
    while time.monotonic() < end:
        if outbox.depth() < args.window:
            outbox.put(_item(args.line, seq), jpeg)
            seq += 1
        else:
            time.sleep(0.001)
    drained = sender.drain(60)
    sender.stop()
    sender.join(5)
    print(json.dumps({"line": args.line, "put": seq, "drained": drained, "jpeg_bytes": len(jpeg),
                      "outbox": outbox.snapshot()}))
    return 0 if drained else 1


def _stored(status: Path) -> int:
    try:
        return int(json.loads(status.read_text())["counters"]["stored"])
    except (OSError, ValueError, KeyError):
        return -1


def bench(senders: int, seconds: float, warmup_s: float, fsync: str, window: int, jpeg_kb: int,
          database_url: str | None, workdir: Path) -> dict[str, Any]:
    from sqlalchemy import create_engine, text

    from edge.tools.faults.harness import free_port

    port = free_port()
    status = workdir / "station.json"
    url = database_url or f"sqlite:///{workdir / 'station.db'}"
    station = subprocess.Popen([sys.executable, "-m", "edge.tools.faults", "station", "--database-url", url,
                                "--images", str(workdir / "images"), "--bind", f"tcp://127.0.0.1:{port}",
                                "--status", str(status)], stdout=open(workdir / "station.log", "wb"),  # noqa: SIM115
                               stderr=subprocess.STDOUT)
    procs: list[subprocess.Popen[str]] = []
    try:
        deadline = time.monotonic() + 30
        while _stored(status) < 0:
            if time.monotonic() > deadline or station.poll() is not None:
                raise RuntimeError(f"station did not start (see {workdir / 'station.log'})")
            time.sleep(0.05)
        run_s = warmup_s + seconds + 0.5
        for k in range(senders):
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "edge.bench.ingest_procs", "sender", "--station", f"tcp://127.0.0.1:{port}",
                 "--outbox", str(workdir / f"outbox-{k}"), "--line", f"line-{k + 1}", "--seconds", str(run_s),
                 "--fsync", fsync, "--window", str(window), "--jpeg-kb", str(jpeg_kb)],
                stdout=subprocess.PIPE, stderr=open(workdir / f"sender-{k}.log", "wb"), text=True))  # noqa: SIM115
        time.sleep(warmup_s)
        t0, n0 = time.monotonic(), _stored(status)
        time.sleep(seconds)
        t1, n1 = time.monotonic(), _stored(status)
        reports = []
        for proc in procs:
            out, _ = proc.communicate(timeout=120)
            reports.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        station.send_signal(signal.SIGTERM)
        station.wait(30)
    engine = create_engine(url)
    with engine.connect() as conn:
        rows, distinct = conn.execute(text("SELECT count(*), count(DISTINCT frame_id) FROM review_items")).one()
    engine.dispose()
    put = sum(r["put"] for r in reports)
    return {"ingest_procs_fps": round((n1 - n0) / (t1 - t0), 1), "ingest_procs_senders": senders,
            "ingest_procs_fsync": fsync, "ingest_procs_jpeg_kb": round(reports[0]["jpeg_bytes"] / 1000, 1),
            "ingest_procs_put": put, "ingest_procs_stored": int(rows), "ingest_procs_distinct": int(distinct),
            "ingest_procs_drained": all(r["drained"] for r in reports),
            "ingest_procs_exactly_once": int(rows) == int(distinct) == put,
            "ingest_procs_database": url.split(":", 1)[0], "load_at_start": round(os.getloadavg()[0], 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edge.bench.ingest_procs", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command")
    s = sub.add_parser("sender", help="(internal) one edge process")
    s.add_argument("--station", required=True)
    s.add_argument("--outbox", required=True)
    s.add_argument("--line", required=True)
    s.add_argument("--seconds", type=float, required=True)
    s.add_argument("--fsync", choices=("always", "batch"), default="always")
    s.add_argument("--window", type=int, default=128)
    s.add_argument("--in-flight", type=int, default=32)
    s.add_argument("--jpeg-kb", type=int, default=50)
    parser.add_argument("--senders", type=int, default=4, help="edge processes (lines)")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured window")
    parser.add_argument("--warmup-s", type=float, default=3.0)
    parser.add_argument("--fsync", choices=("always", "batch"), default="always", help="the edges' outbox fsync")
    parser.add_argument("--window", type=int, default=128, help="frames waiting per edge outbox, at most")
    parser.add_argument("--jpeg-kb", type=int, default=50)
    parser.add_argument("--database-url", default=None, help="default: a SQLite file in a temp dir")
    args = parser.parse_args(argv)
    if args.command == "sender":
        return sender_main(args)
    load = round(os.getloadavg()[0], 1)
    with tempfile.TemporaryDirectory(prefix="lineside-ingest-procs-") as tmp:
        result = bench(args.senders, args.seconds, args.warmup_s, args.fsync, args.window, args.jpeg_kb,
                       args.database_url, Path(tmp))
    result["load_at_start"] = load
    result["command"] = " ".join(["python -m edge.bench.ingest_procs", *(argv if argv is not None else sys.argv[1:])])
    print(json.dumps(result))
    return 0 if result["ingest_procs_exactly_once"] and result["ingest_procs_drained"] else 1


if __name__ == "__main__":
    sys.exit(main())
