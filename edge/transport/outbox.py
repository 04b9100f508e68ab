"""Durable outbox at the edge: a review item is a file on disk until the station has acknowledged it.

Layout under the outbox directory::

    pending/    one file per item waiting for an ack, named <enqueue time ns>-<frame id>.item (FIFO by name);
                hidden temp files of a write that was interrupted are removed at start
    rejected/   items the station refused as malformed: kept for a person to look at, counted, never dropped

A file is written to a temp file, fsynced, renamed into place and the directory fsynced (`edge.durable`), so after
``put`` returns the item survives kill -9 and power loss. On ack the file is unlinked; if that unlink is lost the
item is sent again and the station, which writes each frame id once, acks the duplicate.

File format: 4-byte big-endian header length, the JSON header, then the JPEG bytes.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from edge.durable import remove_stale_temp_files, write_atomic
from edge.transport.schema import ReviewItem

log = logging.getLogger(__name__)
_LEN = struct.Struct(">I")
SUFFIX = ".item"


class OutboxError(RuntimeError):
    """The outbox cannot be used (directory not writable, disk full)."""


@dataclass(frozen=True, slots=True)
class PendingItem:
    name: str
    frame_id: str
    header: bytes
    jpeg: bytes


def _safe_name(frame_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in frame_id)[:150]


class Outbox:
    """Thread-safe durable FIFO of review items."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.pending_dir = self.directory / "pending"
        self.rejected_dir = self.directory / "rejected"
        try:
            for d in (self.pending_dir, self.rejected_dir):
                d.mkdir(parents=True, exist_ok=True)
            remove_stale_temp_files(self.pending_dir)
        except OSError as exc:
            raise OutboxError(f"outbox {self.directory}: {exc.strerror}") from None
        self._lock = threading.Lock()
        self._queue: deque[str] = deque(sorted(p.name for p in self.pending_dir.glob(f"*{SUFFIX}")))
        self._known: set[str] = set(self._queue)
        self.counters = {"queued": 0, "acked": 0, "rejected": 0, "write_errors": 0, "read_errors": 0,
                         "recovered": len(self._queue)}
        self._wakeup = threading.Event()
        if self._queue:
            log.info("outbox %s: %d items from before the restart wait for the station",
                     self.directory, len(self._queue))

    def put(self, item: ReviewItem, jpeg: bytes) -> str:
        """Write an item durably; returns its outbox name. Raises OutboxError if it cannot be written."""
        header = item.model_dump_json().encode()
        name = f"{time.time_ns():020d}-{_safe_name(item.frame_id)}{SUFFIX}"
        try:
            write_atomic(self.pending_dir / name, b"".join((_LEN.pack(len(header)), header, jpeg)))
        except OSError as exc:
            with self._lock:
                self.counters["write_errors"] += 1
            raise OutboxError(f"outbox {self.directory}: cannot write {item.frame_id}: {exc.strerror}") from None
        with self._lock:
            self._queue.append(name)
            self._known.add(name)
            self.counters["queued"] += 1
        self._wakeup.set()
        return name

    def take(self, limit: int) -> list[str]:
        """Remove up to `limit` names from the head of the send queue (they stay on disk until acked)."""
        with self._lock:
            out: list[str] = []
            while self._queue and len(out) < limit:
                out.append(self._queue.popleft())
            return out

    def requeue(self, names: list[str]) -> None:
        """Put names back at the head (in order), e.g. after a send timed out."""
        with self._lock:
            for name in reversed(names):
                if name in self._known:
                    self._queue.appendleft(name)

    def load(self, name: str) -> PendingItem | None:
        """Read one pending item; an unreadable file is moved to rejected/ and counted."""
        path = self.pending_dir / name
        try:
            data = path.read_bytes()
            (n,) = _LEN.unpack_from(data)
            header, jpeg = data[4:4 + n], data[4 + n:]
            frame_id = ReviewItem.model_validate_json(header).frame_id
        except FileNotFoundError:
            self._forget(name)
            return None
        except (OSError, struct.error, ValueError) as exc:
            with self._lock:
                self.counters["read_errors"] += 1
            log.error("outbox %s: item file %s is unreadable (%s); moved to rejected/", self.directory, name, exc)
            self._move_to_rejected(name)
            return None
        return PendingItem(name, frame_id, header, jpeg)

    def ack(self, name: str) -> None:
        """The station committed the item: delete it."""
        (self.pending_dir / name).unlink(missing_ok=True)
        self._forget(name)
        with self._lock:
            self.counters["acked"] += 1

    def reject(self, name: str, reason: str) -> None:
        """The station refused the item as malformed: keep it in rejected/ for a person, count it."""
        log.error("outbox %s: station rejected %s: %s (kept in rejected/)", self.directory, name, reason)
        self._move_to_rejected(name)
        with self._lock:
            self.counters["rejected"] += 1

    def _move_to_rejected(self, name: str) -> None:
        try:
            shutil.move(str(self.pending_dir / name), str(self.rejected_dir / name))
        except OSError as exc:  # it stays in pending/ and is tried again at the next start
            log.error("outbox %s: cannot move %s to rejected/: %s", self.directory, name, exc)
        self._forget(name)

    def _forget(self, name: str) -> None:
        with self._lock:
            self._known.discard(name)
            with contextlib.suppress(ValueError):  # not queued: it was in flight
                self._queue.remove(name)

    def depth(self) -> int:
        """Items on disk waiting for an ack (queued or in flight)."""
        with self._lock:
            return len(self._known)

    def wait_for_work(self, timeout: float) -> None:
        self._wakeup.wait(timeout)
        self._wakeup.clear()

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counters, depth=len(self._known))
