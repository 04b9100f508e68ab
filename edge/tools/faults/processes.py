"""The two processes of a fault-injection run: a station (the real Store + IngestServer, no console) and an edge
(the real Outbox + OutboxSender fed synthetic review items with small real JPEGs instead of the vision models)."""

from __future__ import annotations

import argparse
import errno
import json
import os
import signal
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any

from edge.ops.signals import SignalDispatcher

SCENARIOS = ("station_kill", "edge_kill", "unreachable", "slow", "disk_full", "dup_reorder")


LINE = "faults"


class FaultRunError(RuntimeError):
    """A scenario could not be run (a process would not start); not the same as a scenario that found a loss."""


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
