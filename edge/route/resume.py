"""Batch runs resume: what a non-looping folder or video source has decided, on disk beside the decision log, so a
restart after kill -9 or a power cut goes on where it stopped — every file decided once across restarts, every
routed one in the station once.

The journal is a file of JSON lines, each appended whole. The header is fsynced before the call returns; a ``route``
record is fsynced before its frame's item goes into the outbox — by the outbox writer, one fsync for each group it
puts (``sync``), so that a busy disk holds no decision; ``done`` records are not fsynced (one fsync a decided file
cost the decision loop ~1 ms, more on a busy disk): a kill -9 keeps them (they are in the page cache), the next
fsync (the writer's next group, or the close) takes them to the disk, and a power cut that loses the last ones is
the crash "between the decision log line and ``done``" below, settled from the decision log's tail:

    {"journal": 1, "kind": "folder", "path": "/data/batch-7", "since": "<boot id>"}   the batch it is about
    {"route": "<origin>", "frame_id": "...", "reason": "uncertain"}   before the frame goes into the outbox
    {"done": "<origin>", "frame_id": "..."}                          after its decision is logged

Order per frame (edge.route.sink): ``route`` record → outbox put (durable) → decision log line → ``done`` record.
The route record is written as the frame is decided; the put and the two records after it by the outbox writer
thread (edge.route.writer), in decision order, so a frame still waiting in the writer's queue when the process
dies is a frame between ``route`` and ``done``. A crash anywhere in there is settled at the next start:

- before ``route``: nothing left the process; the file is decided again, as if for the first time;
- between ``route`` and ``done``: the frame may be in the outbox or already acknowledged by the station. It is
  decided again *under the frame id and reason it had* (``pending``), so the station, which writes each frame id
  once, stores it once, and the outbox settles both copies with one ack;
- between the decision log line and ``done`` (auto-decided or routed): the decision log's tail shows the frame
  decided since the journal began (its frame id's boot is not older than ``since``); it is marked done and not
  decided again, so the decision log holds it once.

A looping or live source is no batch and has no journal. The journal of another source (kind or path changed) is
replaced by a fresh one. A finished batch stays finished: delete the journal to inspect the files again.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from edge.config import LineConfig
from edge.durable import write_atomic

log = logging.getLogger(__name__)

VERSION = 1
LOG_TAIL_BYTES = 1 << 20  # the decision log's tail read at start: far more than the frames one crash can leave


def journal_path(cfg: LineConfig) -> Path | None:
    """Where the line's batch journal lives; None for a source that is no batch (looping, or live)."""
    if cfg.source.kind not in ("folder", "video") or cfg.source.loop:
        return None
    if cfg.resume_journal is not None:
        return cfg.resume_journal
    if cfg.decision_log is not None:
        return cfg.decision_log.with_name(cfg.decision_log.name + ".resume")
    return cfg.transport.outbox_dir / "resume.jsonl"


class BatchJournal:
    """The decided files of one batch source; ``decided`` is the capture thread's skip test, the rest is the
    decision sink's (see the module docstring for the order)."""

    def __init__(self, path: Path, cfg: LineConfig, boot_id: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._decided: set[str] = set()
        self._pending: dict[str, tuple[str, str]] = {}  # origin -> (frame id, reason) of a route without done
        header = {"journal": VERSION, "kind": cfg.source.kind, "path": str(cfg.source.path), "since": boot_id}
        records = self._read()
        if records and {k: records[0].get(k) for k in ("journal", "kind", "path")} != {
                k: header[k] for k in ("journal", "kind", "path")}:
            log.warning("line %s: batch journal %s is about %s %s; starting a new one for %s %s", cfg.id, path,
                        records[0].get("kind"), records[0].get("path"), header["kind"], header["path"])
            records = []
        if not records:
            write_atomic(path, (json.dumps(header) + "\n").encode())
            records = [header]
        self.since = str(records[0].get("since", boot_id))
        for record in records[1:]:
            if "route" in record:
                self._pending[str(record["route"])] = (str(record["frame_id"]), str(record["reason"]))
            elif "done" in record:
                self._decided.add(str(record["done"]))
                self._pending.pop(str(record["done"]), None)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        if path.stat().st_size and not path.read_bytes().endswith(b"\n"):  # a line torn by a power cut
            os.write(self._fd, b"\n")
        if cfg.decision_log is not None:
            self._settle_from_log(cfg.decision_log)
        if self._decided or self._pending:
            log.info("line %s: resuming the batch of %s %s: %d decided before this start, %d to route again under "
                     "their frame ids (journal %s; delete it to inspect everything again)", cfg.id, cfg.source.kind,
                     cfg.source.path, len(self._decided), len(self._pending), path)

    def _read(self) -> list[dict[str, Any]]:
        try:
            text = self.path.read_text(errors="replace")
        except FileNotFoundError:
            return []
        records = []
        for line in text.splitlines():
            try:
                record = json.loads(line)
            except ValueError:  # torn by a power cut (never by kill -9: each line is one write)
                continue
            if isinstance(record, dict):
                records.append(record)
        return records if records and "journal" in records[0] else []

    def _settle_from_log(self, decision_log: Path) -> None:
        """Frames in the decision log's tail, decided since this journal began, whose done record the crash took."""
        lines: list[str] = []
        for path in (decision_log.with_name(decision_log.name + ".1"), decision_log):
            try:
                with open(path, "rb") as fh:
                    fh.seek(max(0, os.fstat(fh.fileno()).st_size - LOG_TAIL_BYTES))
                    lines += fh.read().decode(errors="replace").splitlines()
            except OSError:
                continue
        since = int(self.since, 16)
        for line in lines:
            try:
                d = json.loads(line)
                origin, boot = str(d["origin"]), str(d["frame_id"]).split(":")[2]
                ours = int(boot, 16) >= since
            except (ValueError, KeyError, IndexError, TypeError):
                continue
            if ours and origin not in self._decided:
                self.done(origin, str(d["frame_id"]))

    # ---- the capture thread's side ------------------------------------------------------------------------
    def decided(self, origin: str) -> bool:
        with self._lock:
            return origin in self._decided

    def __len__(self) -> int:
        with self._lock:
            return len(self._decided)

    # ---- the decision sink's side -------------------------------------------------------------------------
    def pending(self, origin: str) -> tuple[str, str] | None:
        """(frame id, reason) of a frame that was on its way to review when the process stopped."""
        with self._lock:
            return self._pending.get(origin)

    def will_route(self, origin: str, frame_id: str, reason: str, sync: bool = True) -> None:
        """Record that the frame of `origin` goes to review as `frame_id`. With `sync` False the record is written
        but not flushed: `sync()` is to run before the frame's item is put into the outbox."""
        self._append({"route": origin, "frame_id": frame_id, "reason": reason}, sync=sync)
        with self._lock:
            self._pending[origin] = (frame_id, reason)

    def done(self, origin: str, frame_id: str) -> None:
        self._append({"done": origin, "frame_id": frame_id}, sync=False)
        with self._lock:
            self._decided.add(origin)
            self._pending.pop(origin, None)

    def _append(self, record: dict[str, str], sync: bool = True) -> None:
        os.write(self._fd, (json.dumps(record) + "\n").encode())
        if sync:
            os.fsync(self._fd)

    def sync(self) -> None:
        """Take every record appended so far to the disk."""
        os.fsync(self._fd)

    def close(self) -> None:
        try:
            os.fsync(self._fd)
        finally:
            os.close(self._fd)
