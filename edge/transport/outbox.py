"""Durable outbox at the edge: a review item is a file on disk until the station has acknowledged it.

Layout under the outbox directory::

    pending/    one file per item waiting for an ack, named <enqueue time ns>-<frame id>.item (FIFO by name), and
                per-minute decision summaries, <enqueue time ns>-<summary id>.summary, in the same queue;
                hidden temp files of a write that was interrupted are removed at start
    rejected/   items the station refused as malformed: kept for a person to look at, counted, never dropped

A file is written to a temp file, fsynced, renamed into place and the directory fsynced (`edge.durable`), so after
``put`` returns the item survives kill -9 and power loss. On ack the file is unlinked; if that unlink is lost the
item is sent again and the station, which writes each frame id once, acks the duplicate.

File format: 4-byte big-endian header length, the JSON header, then the JPEG bytes (none for a summary).

Bounds (``outbox_max_items``, ``outbox_max_bytes``; both off by default). A station away for a week must not fill
the edge's disk, so the outbox can be bounded; what happens at the bound is a choice, and never silent — the
``full_events`` counter goes up and one warning is logged when the outbox *becomes* full, one info line when it
is no longer full (with how many items the episode cost), and ``evicted`` / ``refused`` count every item. Routing
goes on either way: the daemon keeps deciding frames.

- ``drop_oldest`` (default): the new item is written, the oldest waiting items are deleted to make room. Costs
  the oldest frames of the outage; keeps the most recent ones, which say most about the line *now*. An item
  already sent and awaiting its ack may be evicted too (if its ack comes, nothing more happens; if not, it is
  lost with the rest of the oldest).
- ``refuse_newest``: the new item is not written (``put`` returns None). Costs the newest frames; keeps the start
  of the outage intact (useful when the first bad parts explain the rest).
An item larger than ``outbox_max_bytes`` by itself is always refused.

fsync (``outbox_fsync``).
- ``always`` (default): every ``put`` fsyncs the file and the directory before it returns: a power loss loses
  nothing that ``put`` accepted. Costs one or two disk flushes per routed frame (see ``flush`` timings in the
  README; a few ms each on SD cards and cheap eMMC). ``put_many`` (the daemon's writer thread, edge.route.writer)
  keeps that promise for a group of items with one directory flush: each file fsynced, then the directory once,
  and only then are the items queued and their names returned.
- ``batch``: ``put`` writes and renames without fsync; the files written since the last flush are fsynced, and
  the directory once, when ``FSYNC_BATCH_ITEMS`` puts have gathered or ``FSYNC_BATCH_S`` (100 ms) has passed
  (checked at each put and by the sender's loop, so at most about 0.2 s). A power loss (not a process crash: the
  page cache survives kill -9) can cost the items put in that last window: they vanish, or come back as
  unreadable files that are moved to ``rejected/`` and counted in ``read_errors`` at the next start.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from edge.durable import TMP_SUFFIX, fsync_dir, remove_stale_temp_files, replace_synced, write_atomic
from edge.transport.schema import KIND_ITEM, ReviewItem
from edge.transport.summary import KIND_SUMMARY, DecisionSummary

if TYPE_CHECKING:
    from edge.config import TransportConfig

log = logging.getLogger(__name__)
_LEN = struct.Struct(">I")
SUFFIX = ".item"
SUMMARY_SUFFIX = ".summary"
FSYNC_BATCH_ITEMS = 64
FSYNC_BATCH_S = 0.1
FullPolicy = Literal["drop_oldest", "refuse_newest"]
FsyncPolicy = Literal["always", "batch"]


class OutboxError(RuntimeError):
    """The outbox cannot be used (directory not writable, disk full)."""


@dataclass(frozen=True, slots=True)
class PendingItem:
    name: str
    frame_id: str  # the id the station acks: a frame id, or a summary id
    header: bytes
    jpeg: bytes
    kind: bytes = KIND_ITEM  # KIND_SUMMARY: a decision summary, sent as [kind, header]


def _safe_name(frame_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in frame_id)[:150]


class Outbox:
    """Thread-safe durable FIFO of review items, optionally bounded (see the module docstring)."""

    def __init__(self, directory: Path, *, max_items: int | None = None, max_bytes: int | None = None,
                 full_policy: FullPolicy = "drop_oldest", fsync: FsyncPolicy = "always") -> None:
        if full_policy not in ("drop_oldest", "refuse_newest"):
            raise ValueError(f"unknown outbox full policy {full_policy!r}")
        if fsync not in ("always", "batch"):
            raise ValueError(f"unknown outbox fsync policy {fsync!r}")
        self.directory = Path(directory)
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.full_policy = full_policy
        self.fsync = fsync
        self.pending_dir = self.directory / "pending"
        self.rejected_dir = self.directory / "rejected"
        try:
            for d in (self.pending_dir, self.rejected_dir):
                d.mkdir(parents=True, exist_ok=True)
            remove_stale_temp_files(self.pending_dir)
        except OSError as exc:
            raise OutboxError(f"outbox {self.directory}: {exc.strerror}") from None
        self._lock = threading.Lock()
        names = sorted(p.name for p in self.pending_dir.iterdir() if p.name.endswith((SUFFIX, SUMMARY_SUFFIX)))
        # two send queues: review items, and decision summaries (sent when the items leave room; ``take`` and
        # ``depth`` are about items only, ``take_summaries`` and ``waiting`` see the summaries too)
        self._queue: deque[str] = deque(n for n in names if n.endswith(SUFFIX))
        self._summary_queue: deque[str] = deque(n for n in names if n.endswith(SUMMARY_SUFFIX))
        self._known: set[str] = set(names)
        self._summaries: set[str] = set(self._summary_queue)
        # everything on disk with its size, oldest first (names sort by enqueue time): the eviction order
        self._sizes: dict[str, int] = {name: self._size_on_disk(name) for name in names}
        self._bytes = sum(self._sizes.values())
        self._full = False
        self._full_episode = 0  # items evicted or refused since the outbox became full
        self._dirty: list[Path] = []  # batch fsync: files renamed into place but not yet fsynced
        self._dirty_since = 0.0
        self.counters = {"queued": 0, "acked": 0, "rejected": 0, "write_errors": 0, "read_errors": 0,
                         "recovered": len(names), "full_events": 0, "evicted": 0, "refused": 0,
                         "fsyncs": 0, "summaries_queued": 0}
        self._wakeup = threading.Event()
        if self._queue:
            log.info("outbox %s: %d items from before the restart wait for the station",
                     self.directory, len(self._queue))

    @classmethod
    def from_config(cls, cfg: TransportConfig) -> Outbox:
        """The outbox a line's transport config describes (directory, bounds, full and fsync policies)."""
        return cls(cfg.outbox_dir, max_items=cfg.outbox_max_items, max_bytes=cfg.outbox_max_bytes,
                   full_policy=cfg.outbox_full_policy, fsync=cfg.outbox_fsync)

    def _size_on_disk(self, name: str) -> int:
        try:
            return (self.pending_dir / name).stat().st_size
        except OSError:
            return 0

    def put(self, item: ReviewItem, jpeg: bytes) -> str | None:
        """Write an item (durably under fsync "always"); returns its outbox name, or None when a full outbox
        refused it (policy ``refuse_newest``, or an item bigger than the byte bound). Raises OutboxError if it
        cannot be written."""
        return self._put(*self._item_file(item, jpeg))

    def put_many(self, items: list[tuple[ReviewItem, bytes]]) -> list[str | None | OutboxError]:
        """``put`` for several items, one result each, in order: the outbox name, None (refused by a full outbox)
        or the OutboxError that kept it from being written; an error costs only its own item.

        Under fsync "always" this is a group commit: each file is written and fsynced, then the directory is
        fsynced once for all of them (one directory flush instead of one per item). An item is queued for the
        sender, and its name returned, only once that directory fsync has made it durable — what ``put`` promises.
        Under "batch" each item is put as by ``put``."""
        results: list[str | None | OutboxError] = []
        if self.fsync != "always":
            for item, jpeg in items:
                try:
                    results.append(self.put(item, jpeg))
                except OutboxError as exc:
                    results.append(exc)
            return results
        written: list[tuple[int, str, int]] = []  # (index in results, name, size): renamed into place, not yet durable
        held_bytes = 0  # the sizes in `written`
        for item, jpeg in items:
            name, ident, data = self._item_file(item, jpeg)
            if written and self._over_alone(len(written) + 1, held_bytes + len(data)):
                self._commit(written, results)  # the group alone is past a bound: room only once it is counted
                written, held_bytes = [], 0
            if not self._make_room(ident, len(data), len(written), held_bytes):
                results.append(None)
                continue
            try:
                replace_synced(self.pending_dir / name, data)
            except OSError as exc:
                results.append(self._write_error(ident, exc))
                continue
            written.append((len(results), name, len(data)))
            held_bytes += len(data)
            results.append(name)
        self._commit(written, results)
        return results

    def _commit(self, written: list[tuple[int, str, int]], results: list[str | None | OutboxError]) -> None:
        """The directory fsync that makes a group of fsynced, renamed files durable; then they are queued."""
        if not written:
            return
        try:
            fsync_dir(self.pending_dir)
        except OSError as exc:  # the files stay in pending/ and are found at the next start, as after ``put``
            with self._lock:
                self.counters["write_errors"] += 1
            for index, name, _ in written:
                results[index] = OutboxError(f"outbox {self.directory}: cannot make {name} durable: {exc.strerror}")
            return
        for _, name, size in written:
            self._register(name, size)
        self._wakeup.set()

    def _item_file(self, item: ReviewItem, jpeg: bytes) -> tuple[str, str, bytes]:
        """(file name, frame id, file content) of a review item."""
        header = item.model_dump_json().encode()
        name = f"{time.time_ns():020d}-{_safe_name(item.frame_id)}{SUFFIX}"
        return name, item.frame_id, b"".join((_LEN.pack(len(header)), header, jpeg))

    def put_summary(self, summary: DecisionSummary) -> str | None:
        """Queue a decision summary behind the items already waiting; same durability, bounds and return."""
        header = summary.model_dump_json().encode()
        name = f"{time.time_ns():020d}-{_safe_name(summary.summary_id)}{SUMMARY_SUFFIX}"
        return self._put(name, summary.summary_id, _LEN.pack(len(header)) + header)

    def _put(self, name: str, ident: str, data: bytes) -> str | None:
        if not self._make_room(ident, len(data)):
            return None
        try:
            if self.fsync == "always":
                write_atomic(self.pending_dir / name, data)
            else:
                self._write_unsynced(self.pending_dir / name, data)
        except OSError as exc:
            raise self._write_error(ident, exc) from None
        self._register(name, len(data))
        self._wakeup.set()
        self.flush_if_due()
        return name

    def _write_error(self, ident: str, exc: OSError) -> OutboxError:
        """Count a failed write and say which item it was."""
        with self._lock:
            self.counters["write_errors"] += 1
        return OutboxError(f"outbox {self.directory}: cannot write {ident}: {exc.strerror}")

    def _register(self, name: str, size: int) -> None:
        """A file written into pending/ joins its send queue and the bounds' accounting."""
        with self._lock:
            if name.endswith(SUMMARY_SUFFIX):
                self._summary_queue.append(name)
                self._summaries.add(name)
            else:
                self._queue.append(name)
            self._known.add(name)
            self._sizes[name] = size
            self._bytes += size
            self.counters["summaries_queued" if name in self._summaries else "queued"] += 1

    # -- bounds ----------------------------------------------------------------------------------------------
    def _over(self, extra_items: int, extra_bytes: int) -> bool:
        return ((self.max_items is not None and len(self._sizes) + extra_items > self.max_items)
                or (self.max_bytes is not None and self._bytes + extra_bytes > self.max_bytes))

    def _over_alone(self, items: int, size: int) -> bool:
        """Past a bound with nothing else in the outbox."""
        return ((self.max_items is not None and items > self.max_items)
                or (self.max_bytes is not None and size > self.max_bytes))

    def _make_room(self, frame_id: str, size: int, held_items: int = 0, held_bytes: int = 0) -> bool:
        """Apply the full policy for a new item of `size` bytes, beside `held_items` / `held_bytes` written by this
        call's group but not yet counted; False when the item must be refused."""
        evicted: list[str] = []
        extra_items, extra_bytes = 1 + held_items, size + held_bytes
        with self._lock:
            if not self._over(extra_items, extra_bytes):
                if self._full:
                    log.info("outbox %s: no longer full (%d items, %d bytes); %d items %s while it was full",
                             self.directory, len(self._sizes), self._bytes, self._full_episode,
                             "evicted" if self.full_policy == "drop_oldest" else "refused")
                    self._full = False
                return True
            if not self._full:
                self._full = True
                self._full_episode = 0
                self.counters["full_events"] += 1
                log.warning("outbox %s: full (%d items, %d bytes; bounds %s items, %s bytes): policy %s, %s until "
                            "the station takes items again", self.directory, len(self._sizes), self._bytes,
                            self.max_items, self.max_bytes, self.full_policy,
                            "the oldest items are deleted" if self.full_policy == "drop_oldest"
                            else "new items are refused")
            too_big = self.max_bytes is not None and size > self.max_bytes
            if self.full_policy == "refuse_newest" or too_big:
                self.counters["refused"] += 1
                self._full_episode += 1
                if too_big:
                    log.error("outbox %s: item %s (%d bytes) is larger than outbox_max_bytes %d; refused",
                              self.directory, frame_id, size, self.max_bytes)
                return False
            while self._sizes and self._over(extra_items, extra_bytes):
                oldest = next(iter(self._sizes))
                self._bytes -= self._sizes.pop(oldest)
                self._unqueue_locked(oldest)
                evicted.append(oldest)
                self.counters["evicted"] += 1
                self._full_episode += 1
        for name in evicted:  # outside the lock: file system work
            try:
                (self.pending_dir / name).unlink(missing_ok=True)
            except OSError as exc:  # it comes back at the next start; the bound is then exceeded for a while
                log.error("outbox %s: cannot evict %s: %s", self.directory, name, exc)
        return True

    # -- batch fsync -----------------------------------------------------------------------------------------
    def _write_unsynced(self, path: Path, data: bytes) -> None:
        tmp = path.parent / f".{path.name}.{os.getpid()}.{threading.get_ident()}{TMP_SUFFIX}"
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        with self._lock:
            if not self._dirty:
                self._dirty_since = time.monotonic()
            self._dirty.append(path)

    def flush_if_due(self) -> None:
        """Under fsync "batch": flush when enough items have gathered or the oldest unsynced one is old enough."""
        with self._lock:
            due = bool(self._dirty) and (len(self._dirty) >= FSYNC_BATCH_ITEMS
                                         or time.monotonic() - self._dirty_since >= FSYNC_BATCH_S)
        if due:
            self.flush()

    def flush(self) -> None:
        """Make every item put so far durable (fsync each unsynced file, then the directory once)."""
        with self._lock:
            dirty, self._dirty = self._dirty, []
        if not dirty:
            return
        for path in dirty:
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:  # acked or evicted already: nothing to keep
                continue
            except OSError as exc:
                log.error("outbox %s: cannot fsync %s: %s", self.directory, path.name, exc)
                continue
            try:
                os.fsync(fd)
            except OSError as exc:
                with self._lock:
                    self.counters["write_errors"] += 1
                log.error("outbox %s: fsync of %s failed: %s", self.directory, path.name, exc)
            finally:
                os.close(fd)
        try:
            fsync_dir(self.pending_dir)
        except OSError as exc:
            with self._lock:
                self.counters["write_errors"] += 1
            log.error("outbox %s: fsync of the directory failed: %s", self.directory, exc)
            return
        with self._lock:
            self.counters["fsyncs"] += 1

    def take(self, limit: int) -> list[str]:
        """Remove up to `limit` names from the head of the send queue (they stay on disk until acked)."""
        return self._take(self._queue, limit)

    def take_summaries(self, limit: int) -> list[str]:
        """``take`` for the decision summaries' queue."""
        return self._take(self._summary_queue, limit)

    def _take(self, queue: deque[str], limit: int) -> list[str]:
        with self._lock:
            return [queue.popleft() for _ in range(min(limit, len(queue)))]

    def requeue(self, names: list[str]) -> None:
        """Put names back at the head (in order), e.g. after a send timed out."""
        with self._lock:
            for name in reversed(names):
                if name in self._known:
                    (self._summary_queue if name in self._summaries else self._queue).appendleft(name)

    def load(self, name: str) -> PendingItem | None:
        """Read one pending item; an unreadable file is moved to rejected/ and counted."""
        path = self.pending_dir / name
        try:
            data = path.read_bytes()
            (n,) = _LEN.unpack_from(data)
            header, jpeg = data[4:4 + n], data[4 + n:]
            if name.endswith(SUMMARY_SUFFIX):
                summary_id = DecisionSummary.model_validate_json(header).summary_id
                return PendingItem(name, summary_id, header, b"", KIND_SUMMARY)
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
            self._bytes -= self._sizes.pop(name, 0)
            self._unqueue_locked(name)

    def _unqueue_locked(self, name: str) -> None:
        self._known.discard(name)
        queue = self._summary_queue if name in self._summaries else self._queue
        self._summaries.discard(name)
        with contextlib.suppress(ValueError):  # not queued: it was in flight
            queue.remove(name)

    def depth(self) -> int:
        """Review items on disk waiting for an ack (queued or in flight); decision summaries not counted."""
        with self._lock:
            return len(self._known) - len(self._summaries)

    def waiting(self) -> int:
        """Everything on disk waiting for an ack: review items and decision summaries."""
        with self._lock:
            return len(self._known)

    def wait_for_work(self, timeout: float) -> None:
        self.flush_if_due()
        self._wakeup.wait(min(timeout, FSYNC_BATCH_S) if self._dirty else timeout)
        self._wakeup.clear()
        self.flush_if_due()

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counters, depth=len(self._known) - len(self._summaries), summaries=len(self._summaries),
                        bytes=self._bytes, full=int(self._full))
