"""Station storage housekeeping: orphan files, and a retention policy by disk watermark.

Orphans. An image is written (temp file, fsync, rename) *before* its row is committed, so a crash or a failed
commit (disk full, database locked) can leave an image with no row, and a kill -9 in the middle of a write leaves
a hidden ``.*.tmp`` file. Neither is ever read again. ``remove_orphans`` deletes both: at station start (nothing is
writing yet) and every ``orphan_scan_interval_s`` while it runs, under the ingest's store lock so that an image
between its rename and its commit is never taken for an orphan. Only ``*.jpg`` and ``.*.tmp`` files inside the line
folders are considered: anything else under ``storage_dir`` (``session.secret``) is left alone.

Retention. A station that runs for years fills its disk. With ``retention_min_free_bytes`` (keep at least this much
free on the images' file system) and/or ``retention_max_bytes`` (images take at most this much), every
``retention_interval_s`` the oldest *reviewed* items (by capture time) are deleted, rows first and then their
images, until both watermarks hold. An item nobody has reviewed is never deleted, and neither is one waiting for a
second review (it is pending). When only unreviewed items are left and the watermark still does not hold, the
station says so — one ERROR line when it starts, one INFO line when it ends, ``lineside_station_retention_blocked``
1 — and keeps ingesting until the disk is really full; then ingest fails, nothing is acknowledged, and the edges
keep their frames. Export what training needs (``lineside train`` reads reviewed items) before the watermark reaches
it. Deleting rows first means a crash between the two steps leaves orphan images (removed by the next scan), never a
row without its image.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import delete, select

from edge.durable import TMP_SUFFIX
from edge.station.store.db import Database
from edge.station.tables import STATUS_REVIEWED, ReviewItemRow

log = logging.getLogger(__name__)

IMAGE_SUFFIX = ".jpg"
_CHUNK = 500
_DELETE_BATCH = 200
COUNTER_NAMES = ("orphan_images", "orphan_temp_files", "orphan_bytes", "retention_items", "retention_bytes",
                 "retention_blocked", "errors")


@dataclass(frozen=True)
class OrphanReport:
    """What one orphan scan deleted (nothing, by default)."""

    images: int = 0
    temp_files: int = 0
    bytes: int = 0


@dataclass(frozen=True)
class RetentionReport:
    """What one retention run deleted, and where the watermarks stand after it."""

    items: int
    bytes: int
    blocked: bool  # the watermark still does not hold and no reviewed item is left to delete
    free_bytes: int
    image_bytes: int | None  # measured only when retention_max_bytes is set


@dataclass(frozen=True)
class RetentionPolicy:
    """The watermarks (``retention_min_free_bytes``, ``retention_max_bytes``); neither set: keep everything."""

    min_free_bytes: int | None = None
    max_bytes: int | None = None

    @property
    def active(self) -> bool:
        return self.min_free_bytes is not None or self.max_bytes is not None


@dataclass(frozen=True)
class MaintenanceSchedule:
    """How often the maintainer applies retention and scans for orphans, and how old an orphan must be to go."""

    retention_interval_s: float = 60.0
    orphan_interval_s: float = 3600.0
    orphan_grace_s: float = 60.0


def _line_dirs(storage_dir: Path) -> Iterator[Path]:
    with contextlib.suppress(FileNotFoundError), os.scandir(storage_dir) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                yield Path(entry.path)


def free_bytes(storage_dir: Path) -> int:
    """Bytes an unprivileged writer may still use on the file system of ``storage_dir``."""
    st = os.statvfs(storage_dir)
    return int(st.f_bavail * st.f_frsize)


def image_bytes(storage_dir: Path) -> int:
    """Bytes of the image files under ``storage_dir`` (one scandir per line folder)."""
    total = 0
    for directory in _line_dirs(storage_dir):
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.name.endswith(IMAGE_SUFFIX):
                    with contextlib.suppress(FileNotFoundError):
                        total += entry.stat(follow_symlinks=False).st_size
    return total


def remove_orphans(store: Database, grace_s: float = 60.0, lock: threading.Lock | None = None,
                   now: float | None = None) -> OrphanReport:
    """Delete images that no row points at and leftover temp files, both older than ``grace_s``.

    ``lock``: the ingest's store lock; held per chunk of files, so ingest waits at most one chunk's query.
    """
    now = time.time() if now is None else now
    storage_dir = Path(store.storage_dir)
    images = temps = freed = 0
    for directory in _line_dirs(storage_dir):
        candidates: dict[str, tuple[Path, int]] = {}
        with os.scandir(directory) as entries:
            for entry in entries:
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if now - st.st_mtime < grace_s or not entry.is_file(follow_symlinks=False):
                    continue
                if entry.name.startswith(".") and entry.name.endswith(TMP_SUFFIX):
                    Path(entry.path).unlink(missing_ok=True)
                    temps, freed = temps + 1, freed + st.st_size
                elif entry.name.endswith(IMAGE_SUFFIX):
                    candidates[f"{directory.name}/{entry.name}"] = (Path(entry.path), st.st_size)
        names = list(candidates)
        for start in range(0, len(names), _CHUNK):
            chunk = names[start:start + _CHUNK]
            with lock or contextlib.nullcontext(), store.session() as s:
                # by frame id first (a file is named after its frame id, and frame_id has the unique index); only
                # what that does not explain — true orphans, or a frame id the file name had to sanitise — is
                # looked up by image_path, which has no index
                stems = [name.rsplit("/", 1)[1][:-len(IMAGE_SUFFIX)] for name in chunk]
                known = set(s.scalars(select(ReviewItemRow.image_path).where(ReviewItemRow.frame_id.in_(stems))))
                rest = [name for name in chunk if name not in known]
                if rest:
                    known |= set(s.scalars(select(ReviewItemRow.image_path).where(ReviewItemRow.image_path.in_(rest))))
                for name in chunk:
                    if name not in known:
                        path, size = candidates[name]
                        path.unlink(missing_ok=True)
                        images, freed = images + 1, freed + size
    if images or temps:
        log.info("storage %s: removed %d orphan images and %d leftover temp files (%.1f MB)", storage_dir, images,
                 temps, freed / 1e6)
    return OrphanReport(images=images, temp_files=temps, bytes=freed)


def _bytes_to_free(policy: RetentionPolicy, free: int, used: int | None) -> int:
    need = 0
    if policy.min_free_bytes is not None:
        need = max(need, policy.min_free_bytes - free)
    if policy.max_bytes is not None and used is not None:
        need = max(need, used - policy.max_bytes)
    return need


def apply_retention(store: Database, policy: RetentionPolicy) -> RetentionReport:
    """Delete the oldest reviewed items (rows, then images) until the watermarks hold; never a pending item."""
    storage_dir = Path(store.storage_dir)
    free = free_bytes(storage_dir)
    used = image_bytes(storage_dir) if policy.max_bytes is not None else None
    need = _bytes_to_free(policy, free, used)
    items = freed = 0
    while need > 0:
        with store.session() as s:
            rows = list(s.execute(
                select(ReviewItemRow.id, ReviewItemRow.image_path)
                .where(ReviewItemRow.status == STATUS_REVIEWED)
                .order_by(ReviewItemRow.captured_wall, ReviewItemRow.id).limit(_DELETE_BATCH)))
        if not rows:
            return RetentionReport(items=items, bytes=freed, blocked=True, free_bytes=free, image_bytes=used)
        paths = [storage_dir / str(image_path) for _, image_path in rows]
        sizes = []
        for path in paths:
            try:
                sizes.append(path.stat().st_size)
            except FileNotFoundError:
                sizes.append(0)
        with store.session(write=True) as s:
            # still reviewed at delete time: an undo between the select and here brings an item back to pending
            s.execute(delete(ReviewItemRow).where(ReviewItemRow.id.in_([i for i, _ in rows]),
                                                  ReviewItemRow.status == STATUS_REVIEWED))
        for path in paths:  # after the commit: a crash here leaves orphans (removed later), not rows without images
            path.unlink(missing_ok=True)
        batch = sum(sizes)
        items, freed = items + len(rows), freed + batch
        free = free_bytes(storage_dir)
        used = None if used is None else used - batch
        need = _bytes_to_free(policy, free, used)
    return RetentionReport(items=items, bytes=freed, blocked=False, free_bytes=free, image_bytes=used)


class StoreMaintainer(threading.Thread):
    """Runs orphan scans and retention on their intervals, counts what they did, says when retention is blocked."""

    def __init__(self, store: Database, policy: RetentionPolicy, schedule: MaintenanceSchedule = MaintenanceSchedule(),
                 *, lock: threading.Lock | None = None) -> None:
        super().__init__(name="station-storage-maintainer", daemon=True)
        self.store, self.policy, self.schedule, self.lock = store, policy, schedule, lock
        self.blocked = False  # retention cannot reach its watermark (logged once on the way in and out)
        self.last_free_bytes: int | None = None
        self.last_image_bytes: int | None = None
        self._counters = dict.fromkeys(COUNTER_NAMES, 0)
        self._counter_lock = threading.Lock()
        self._stopping = threading.Event()

    @property
    def counters(self) -> dict[str, int]:
        with self._counter_lock:
            return dict(self._counters)

    def _add(self, **amounts: int) -> None:
        with self._counter_lock:
            for name, n in amounts.items():
                self._counters[name] += n

    def clean_at_start(self) -> OrphanReport:
        """Before ingest starts nothing is being written: every orphan may go, whatever its age."""
        return self._orphans(grace_s=0.0)

    def _orphans(self, grace_s: float) -> OrphanReport:
        try:
            report = remove_orphans(self.store, grace_s, self.lock)
        except Exception as exc:  # housekeeping must never stop the station; the next scan tries again
            self._add(errors=1)
            log.error("storage %s: orphan scan failed: %s: %s", self.store.storage_dir, type(exc).__name__, exc)
            return OrphanReport()
        self._add(orphan_images=report.images, orphan_temp_files=report.temp_files, orphan_bytes=report.bytes)
        return report

    def retention(self) -> RetentionReport | None:
        if not self.policy.active:
            return None
        try:
            report = apply_retention(self.store, self.policy)
        except Exception as exc:
            self._add(errors=1)
            log.error("storage %s: retention failed: %s: %s", self.store.storage_dir, type(exc).__name__, exc)
            return None
        self.last_free_bytes, self.last_image_bytes = report.free_bytes, report.image_bytes
        self._add(retention_items=report.items, retention_bytes=report.bytes)
        if report.items:
            log.info("storage %s: retention deleted the %d oldest reviewed items (%.1f MB); %.1f MB free",
                     self.store.storage_dir, report.items, report.bytes / 1e6, report.free_bytes / 1e6)
        if report.blocked and not self.blocked:
            self._add(retention_blocked=1)
            log.error("storage %s: retention cannot reach its watermark (min free %s bytes, max %s bytes; %.1f MB "
                      "free): only unreviewed items are left, and those are never deleted — review or export items, "
                      "or give the station more disk", self.store.storage_dir, self.policy.min_free_bytes,
                      self.policy.max_bytes, report.free_bytes / 1e6)
        elif self.blocked and not report.blocked:
            log.info("storage %s: retention watermark holds again", self.store.storage_dir)
        self.blocked = report.blocked
        return report

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        if self.is_alive():
            self.join(timeout)

    def run(self) -> None:
        every = self.schedule
        next_orphans = time.monotonic() + every.orphan_interval_s
        self.retention()
        while not self._stopping.wait(min(every.retention_interval_s, every.orphan_interval_s)):
            self.retention()
            if time.monotonic() >= next_orphans:
                self._orphans(every.orphan_grace_s)
                next_orphans = time.monotonic() + every.orphan_interval_s


class StorageCollector(Collector):
    """Prometheus view of the maintainer: what housekeeping deleted, and whether retention is blocked."""

    def __init__(self, maintainer: StoreMaintainer) -> None:
        self.maintainer = maintainer

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        fam = CounterMetricFamily("lineside_station_storage", "storage housekeeping: orphan_images, "
                                  "orphan_temp_files, orphan_bytes, retention_items, retention_bytes, "
                                  "retention_blocked (episodes), errors", labels=["kind"])
        for kind, value in sorted(self.maintainer.counters.items()):
            fam.add_metric([kind], float(value))
        yield fam
        yield GaugeMetricFamily("lineside_station_retention_blocked", "1 while retention cannot reach its watermark "
                                "because only unreviewed items are left", value=float(self.maintainer.blocked))
        if self.maintainer.last_free_bytes is not None:
            yield GaugeMetricFamily("lineside_station_storage_free_bytes", "free bytes on the images' file system "
                                    "at the last retention run", value=float(self.maintainer.last_free_bytes))
        if self.maintainer.last_image_bytes is not None:
            yield GaugeMetricFamily("lineside_station_image_bytes", "bytes of review images at the last retention "
                                    "run", value=float(self.maintainer.last_image_bytes))
