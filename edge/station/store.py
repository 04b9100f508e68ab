"""The station's store: review items, their regions and people's reviews, in a SQL database plus image files.

SQLite today, PostgreSQL later: the engine comes from a URL, the models use portable types only.

Durability. The station acknowledges an item to the edge only after ``add_item`` has returned, and an ack
tells the edge it may delete its own copy. So a committed item must survive a power cut, otherwise the frame
is lost on both sides. On SQLite that is why every connection runs ``journal_mode=WAL`` with
``synchronous=FULL``: in WAL mode, ``NORMAL`` only syncs at checkpoints, so the last transactions before a
power cut can vanish even though their commits returned; ``FULL`` fsyncs the WAL at every commit. The image
file is written and fsynced (see ``imagefiles``) *before* the row that points at it is committed, so a
committed row always has its image.

Concurrency. The ingest thread and the console write at the same time. Writes on SQLite start with
``BEGIN IMMEDIATE`` (take the write lock up front, wait up to ``busy_timeout``), so a read-then-write
transaction never fails half-way with SQLITE_BUSY when another writer got in between.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, exists, func, insert, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased, selectinload

from edge.durable import fsync_dir, replace_synced
from edge.station import audit, imagefiles, migrations, summaries
from edge.station.queue import QueueFilter, head_query, make_cursor, page_query
from edge.station.tables import (
    DECISIONS,
    STATUS_PENDING,
    STATUS_REVIEWED,
    HeatmapRow,
    LeaseRow,
    RegionRow,
    ReviewItemRow,
    ReviewRow,
)
from edge.transport.schema import ReviewItem
from edge.transport.summary import DecisionSummary

log = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 10_000
GOOD = "good"
MAX_BOXES = 200
MAX_COMMENT_CHARS = 2000


class ItemNotFound(LookupError):
    """No review item with that id."""


class ReviewError(ValueError):
    """A review that cannot be recorded; the text says why (shown to the reviewer / API client)."""


class LeaseConflict(RuntimeError):
    """Someone else holds a live lease on the item; the text names them and until when."""


@dataclass(frozen=True)
class LeaseView:
    item_id: int
    username: str
    claimed_wall: float
    expires_wall: float


@dataclass(frozen=True)
class QueuePage:
    items: list[ItemView]
    next_cursor: str | None  # None on the last page
    total: int  # items matching the filter (leases of others not subtracted)


@dataclass(frozen=True)
class RegionView:
    x: int
    y: int
    w: int
    h: int
    area_px: int
    area_pct: float
    peak: float
    defect_class: str
    location: str
    caption: str
    description: str
    caption_score: float


@dataclass(frozen=True)
class ReviewView:
    id: int
    item_id: int
    decision: str
    final_verdict: str
    defect_class: str | None
    reviewer: str
    created_wall: float
    seconds_spent: float | None
    boxes: list[dict[str, Any]] | None = None  # the operator's [{x, y, w, h, class}]; None: the model's regions
    comment: str | None = None
    second_review: bool = False


@dataclass(frozen=True)
class ReferenceView:
    """A recently reviewed-good frame of a line, shown beside an item for comparison."""

    item_id: int
    frame_id: str
    reviewer: str
    reviewed_wall: float


@dataclass(frozen=True)
class ItemView:
    """A review item as the console and the API see it (detached from any DB session)."""

    id: int
    frame_id: str
    line_id: str
    source_id: str
    seq: int
    captured_wall: float
    decided_wall: float
    received_wall: float
    width: int
    height: int
    verdict: str
    class_scores: dict[str, float]
    anomaly_score: float
    anomaly_threshold: float
    uncertainty: float
    reason: str
    pack_version: str
    profile_version: str
    image_path: str
    status: str
    regions: list[RegionView] = field(default_factory=list)
    reviews: list[ReviewView] = field(default_factory=list)
    second_review_of: str | None = None  # waiting for a second review by anyone but this user
    heatmap_png: str | None = None  # base64 PNG (ReviewItem.heatmap_png); loaded by get_item only

    @property
    def awaits_second_review(self) -> bool:
        return self.second_review_of is not None

    @property
    def top_caption(self) -> str:
        """Caption of the strongest region ('' when the model found none)."""
        if not self.regions:
            return ""
        return max(self.regions, key=lambda r: r.peak).caption

    @property
    def latest_review(self) -> ReviewView | None:
        return self.reviews[-1] if self.reviews else None

    @property
    def classes(self) -> list[str]:
        """The labels a reviewer may choose: the keys of class_scores, in the order the model gave them."""
        return list(self.class_scores)


def _region_view(r: RegionRow) -> RegionView:
    return RegionView(x=r.x, y=r.y, w=r.w, h=r.h, area_px=r.area_px, area_pct=r.area_pct, peak=r.peak,
                      defect_class=r.defect_class, location=r.location, caption=r.caption,
                      description=r.description, caption_score=r.caption_score)


def _review_view(r: ReviewRow) -> ReviewView:
    return ReviewView(id=r.id, item_id=r.item_id, decision=r.decision, final_verdict=r.final_verdict,
                      defect_class=r.defect_class, reviewer=r.reviewer, created_wall=r.created_wall,
                      seconds_spent=r.seconds_spent, boxes=r.boxes, comment=r.comment,
                      second_review=bool(r.second_review))


def _item_view(row: ReviewItemRow, heatmap_png: str | None = None) -> ItemView:
    return ItemView(
        id=row.id, frame_id=row.frame_id, line_id=row.line_id, source_id=row.source_id, seq=row.seq,
        captured_wall=row.captured_wall, decided_wall=row.decided_wall, received_wall=row.received_wall,
        width=row.width, height=row.height, verdict=row.verdict,
        class_scores={str(k): float(v) for k, v in row.class_scores.items()},
        anomaly_score=row.anomaly_score, anomaly_threshold=row.anomaly_threshold, uncertainty=row.uncertainty,
        reason=row.reason, pack_version=row.pack_version, profile_version=row.profile_version,
        image_path=row.image_path, status=row.status,
        regions=[_region_view(r) for r in row.regions], reviews=[_review_view(r) for r in row.reviews],
        second_review_of=row.second_review_of, heatmap_png=heatmap_png)


def _review_json(r: ReviewRow | None) -> dict[str, Any] | None:
    if r is None:
        return None
    return {"id": r.id, "decision": r.decision, "final_verdict": r.final_verdict, "defect_class": r.defect_class,
            "reviewer": r.reviewer, "created_wall": r.created_wall, "seconds_spent": r.seconds_spent,
            "boxes": r.boxes, "comment": r.comment, "second_review": bool(r.second_review)}


def model_boxes(row: ReviewItemRow) -> list[dict[str, Any]]:
    """The model's regions as boxes in the operator's format (what an operator's edit starts from)."""
    return [{"x": r.x, "y": r.y, "w": r.w, "h": r.h, "class": r.defect_class} for r in row.regions]


def effective_boxes(row: ReviewItemRow, review: ReviewRow | None) -> list[dict[str, Any]]:
    """The boxes that stand for an item: the operator's from ``review`` when they edited them, else the model's."""
    if review is not None and review.boxes is not None:
        return list(review.boxes)
    return model_boxes(row)


def check_boxes(raw: Any, width: int, height: int, classes: list[str]) -> list[dict[str, Any]]:
    """The operator's boxes, validated and clipped to the frame: ``[{x, y, w, h, class}]`` in frame pixels, each of
    a defect class of the item. ReviewError says what is wrong (the console shows it)."""
    if not isinstance(raw, list):
        raise ReviewError("boxes must be a list of {x, y, w, h, class}")
    if len(raw) > MAX_BOXES:
        raise ReviewError(f"{len(raw)} boxes; at most {MAX_BOXES}")
    defects = [c for c in classes if c != GOOD]
    out: list[dict[str, Any]] = []
    for i, box in enumerate(raw, 1):
        if not isinstance(box, dict):
            raise ReviewError(f"box {i} is not an object")
        try:
            x, y, w, h = (float(box[k]) for k in ("x", "y", "w", "h"))
        except (KeyError, TypeError, ValueError):
            raise ReviewError(f"box {i} needs numbers x, y, w, h") from None
        if not all(abs(v) < 1e7 for v in (x, y, w, h)):  # also refuses NaN and infinity
            raise ReviewError(f"box {i} is out of range")
        if w <= 0 or h <= 0:
            raise ReviewError(f"box {i} has no area ({w:g}×{h:g})")
        x0, y0 = max(0, min(width - 1, round(x))), max(0, min(height - 1, round(y)))
        x1, y1 = max(x0 + 1, min(width, round(x + w))), max(y0 + 1, min(height, round(y + h)))
        cls = box.get("class")
        if cls not in defects:
            raise ReviewError(f"box {i}: class {cls!r} is not a defect class of this item; use one of "
                              f"{', '.join(defects) or '(none)'}")
        out.append({"x": x0, "y": y0, "w": x1 - x0, "h": y1 - y0, "class": cls})
    return out


def picked_for_second_review(frame_id: str, fraction: float) -> bool:
    """Whether an item goes to a second reviewer: a hash of its frame id, so the choice is reproducible (the same
    after an undo) and independent of who reviews first or when."""
    if fraction <= 0:
        return False
    return zlib.crc32(frame_id.encode()) / 2**32 < fraction


def _lease_view(row: LeaseRow) -> LeaseView:
    return LeaseView(item_id=row.item_id, username=row.username, claimed_wall=row.claimed_wall,
                     expires_wall=row.expires_wall)


CLAIM_ATTEMPTS = 5


def _take_lease(s: Session, item_id: int, username: str, minutes: float, now: float) -> LeaseView:
    """Inside a write transaction: give ``username`` the lease (new, renewed or taken over once expired)."""
    row = s.get(LeaseRow, item_id)
    expires = now + minutes * 60
    if row is None:
        row = LeaseRow(item_id=item_id, username=username, claimed_wall=now, expires_wall=expires)
        s.add(row)
        audit.record(s, username, "lease", item_id, None, {"expires_wall": expires}, now=now)
    elif row.username == username and row.expires_wall > now:
        row.expires_wall = expires  # a renewal: the clock of time spent keeps running, no audit row
    elif row.expires_wall <= now:
        before = {"username": row.username, "expires_wall": row.expires_wall}
        row.username, row.claimed_wall, row.expires_wall = username, now, expires
        audit.record(s, username, "lease", item_id, before, {"expires_wall": expires}, now=now)
    else:
        raise LeaseConflict(f"item {item_id} is being reviewed by {row.username} until "
                            f"{time.strftime('%H:%M:%S', time.localtime(row.expires_wall))}; "
                            "take the next item instead")
    s.flush()
    return _lease_view(row)


def _group_counts(session: Session, column: Any, where: Any = None) -> dict[str, int]:
    query = select(column, func.count()).group_by(column)
    if where is not None:
        query = query.where(where)
    return {str(key): int(n) for key, n in session.execute(query)}


_IMAGE_WRITERS = 16
_image_pool: list[ThreadPoolExecutor] = []


def _write_images(images: list[tuple[Path, bytes]]) -> None:
    """``write_atomic`` for many files: each written to a temp file, fsynced and renamed, then each directory
    fsynced once. The fsyncs run in parallel threads: the file system journals them together, several times
    faster than one after the other (BENCHMARKS.md, "Ingest"). On return every file is whole and durable;
    the first failure is raised (after all writes have finished)."""
    directories = {path.parent for path, _ in images}
    for directory in directories:
        if not directory.is_dir():
            directory.mkdir(parents=True, exist_ok=True)
            fsync_dir(directory.parent)
    if len(images) == 1:
        replace_synced(*images[0])
    else:
        if not _image_pool:
            _image_pool.append(ThreadPoolExecutor(_IMAGE_WRITERS, thread_name_prefix="station-image-writer"))
        futures = [_image_pool[0].submit(replace_synced, path, data) for path, data in images]
        errors = [f.exception() for f in futures]
        first = next((e for e in errors if e is not None), None)
        if first is not None:
            raise first
    for directory in directories:
        fsync_dir(directory)


def _item_values(item: ReviewItem, image_path: str) -> dict[str, Any]:
    return dict(
        frame_id=item.frame_id, line_id=item.line_id, source_id=item.source_id, seq=item.seq,
        captured_wall=item.captured_wall, decided_wall=item.decided_wall, received_wall=time.time(),
        width=item.width, height=item.height, verdict=item.verdict, class_scores=dict(item.class_scores),
        anomaly_score=item.anomaly_score, anomaly_threshold=item.anomaly_threshold,
        uncertainty=item.uncertainty, reason=item.reason, pack_version=item.pack_version,
        profile_version=item.profile_version, image_path=image_path, status=STATUS_PENDING)


def _item_row(item: ReviewItem, image_path: str) -> ReviewItemRow:
    return ReviewItemRow(**_item_values(item, image_path),
                         regions=[RegionRow(**r.model_dump()) for r in item.regions])


def _install_sqlite_pragmas(engine: Engine) -> None:
    """Per-connection SQLite settings (see the module docstring), and BEGIN IMMEDIATE for write sessions."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # the driver must not open transactions itself; "begin" below does
        cur = dbapi_conn.cursor()
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cur.execute("PRAGMA foreign_keys=ON")
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


def _make_engine(database_url: str) -> Engine:
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:" and not url.database.startswith("file:"):
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url)
        _install_sqlite_pragmas(engine)
        return engine
    return create_engine(url, pool_pre_ping=True)


class Store:
    """Review items in a database, their images as files under ``storage_dir``."""

    def __init__(self, database_url: str, storage_dir: Path | str) -> None:
        self.storage_dir = Path(storage_dir)
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        self.engine = _make_engine(database_url)
        self._write_engine = self.engine.execution_options(sqlite_begin="IMMEDIATE")
        migrations.upgrade(self._write_engine)  # new database: created by the migrations; at head: one query

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def session(self, write: bool = False) -> Iterator[Session]:
        """A session for the station's other modules (users, export); ``write=True`` is one transaction."""
        with self._write() if write else self._read() as s:
            yield s

    @contextmanager
    def _read(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as session:
            yield session

    @contextmanager
    def _write(self) -> Iterator[Session]:
        with Session(self._write_engine, expire_on_commit=False) as session, session.begin():
            yield session

    # ---- ingest ----

    def has_frame(self, frame_id: str) -> bool:
        with self._read() as s:
            return s.scalar(select(ReviewItemRow.id).where(ReviewItemRow.frame_id == frame_id)) is not None

    def add_item(self, item: ReviewItem, jpeg: bytes) -> bool:
        """Store an item exactly once: True when it was new, False when that frame_id was already stored.

        Either way, on return the item is durable and may be acknowledged. A known frame_id writes nothing
        (not even the image). Two concurrent inserts of the same frame_id are settled by the UNIQUE
        constraint: the loser gets False. The image is written before the commit; if the commit fails the
        file stays (harmless, overwritten by the retry) and the exception propagates so that the caller does
        not ack.
        """
        if self.has_frame(item.frame_id):
            return False
        relative = imagefiles.relative_image_path(item.line_id, item.frame_id)
        imagefiles.write_atomic(imagefiles.resolve(self.storage_dir, relative), jpeg)
        row = _item_row(item, relative)
        try:
            with self._write() as s:
                s.add(row)
                if item.heatmap_png is not None:
                    s.flush()  # the item's id
                    s.add(HeatmapRow(item_id=row.id, png=item.heatmap_png))
        except IntegrityError:
            if self.has_frame(item.frame_id):
                return False
            raise
        return True

    def add_summary(self, summary: DecisionSummary) -> bool:
        """Store a per-minute decision summary once per summary_id (see ``edge.station.summaries``)."""
        return summaries.add_summary(self, summary)

    def add_items(self, batch: list[tuple[ReviewItem, bytes]]) -> list[bool]:
        """``add_item`` for many items in one transaction: one lookup, one commit (one WAL fsync) for the lot.

        Same contract item by item: on return every item is durable and may be acknowledged; the result says
        which were new (a frame_id already stored, or repeated earlier in ``batch``, is False and writes
        nothing). Images are all written and fsynced, each directory fsynced once, before the commit. If the
        transaction fails nothing of it is committed and the exception propagates (the caller acks none; it may
        retry the items one by one to find the one that fails).
        """
        if not batch:
            return []
        ids = list({item.frame_id for item, _ in batch})
        with self._read() as s:
            known = set(s.scalars(select(ReviewItemRow.frame_id).where(ReviewItemRow.frame_id.in_(ids))))
        new: list[bool] = []
        rows: list[ReviewItem] = []
        images: list[tuple[Path, bytes]] = []
        for item, jpeg in batch:
            if item.frame_id in known:
                new.append(False)
                continue
            known.add(item.frame_id)
            relative = imagefiles.relative_image_path(item.line_id, item.frame_id)
            images.append((imagefiles.resolve(self.storage_dir, relative), jpeg))
            rows.append(item)
            new.append(True)
        if not rows:
            return new
        _write_images(images)
        values = [_item_values(item, imagefiles.relative_image_path(item.line_id, item.frame_id)) for item in rows]
        try:
            with self._write() as s:
                # Core inserts (two statements for the lot) rather than ORM objects: a third of the CPU per item
                returning = insert(ReviewItemRow).returning(ReviewItemRow.id, sort_by_parameter_order=True)
                item_ids = s.execute(returning, values).scalars().all()
                regions = [{"item_id": item_id, **r.model_dump()}
                           for item_id, item in zip(item_ids, rows, strict=True) for r in item.regions]
                if regions:
                    s.execute(insert(RegionRow), regions)
                heatmaps = [{"item_id": item_id, "png": item.heatmap_png}
                            for item_id, item in zip(item_ids, rows, strict=True) if item.heatmap_png is not None]
                if heatmaps:
                    s.execute(insert(HeatmapRow), heatmaps)
        except IntegrityError:  # another writer stored one of them meanwhile: settle item by item
            return [is_new and self.add_item(item, jpeg) for (item, jpeg), is_new in zip(batch, new, strict=True)]
        return new

    # ---- queries ----

    def list_items(self, status: str | None = STATUS_PENDING, limit: int = 50,
                   offset: int = 0) -> list[ItemView]:
        """Items in queue order (most uncertain first, then oldest); ``status=None`` lists all."""
        query = (select(ReviewItemRow)
                 .options(selectinload(ReviewItemRow.regions), selectinload(ReviewItemRow.reviews))
                 .order_by(ReviewItemRow.uncertainty.desc(), ReviewItemRow.id)
                 .limit(limit).offset(offset))
        if status is not None:
            query = query.where(ReviewItemRow.status == status)
        with self._read() as s:
            return [_item_view(row) for row in s.scalars(query)]

    def queue(self, limit: int = 50, offset: int = 0) -> list[ItemView]:
        """The review queue: pending items, most uncertain first."""
        return self.list_items(STATUS_PENDING, limit, offset)

    def next_pending_id(self, exclude: int | None = None) -> int | None:
        """Id of the item at the head of the queue (other than ``exclude``); None when the queue is empty."""
        query = (select(ReviewItemRow.id).where(ReviewItemRow.status == STATUS_PENDING)
                 .order_by(ReviewItemRow.uncertainty.desc(), ReviewItemRow.id).limit(1))
        if exclude is not None:
            query = query.where(ReviewItemRow.id != exclude)
        with self._read() as s:
            return s.scalar(query)

    def queue_page(self, flt: QueueFilter, username: str | None = None, limit: int = 50,
                   after: tuple[float, int] | None = None, now: float | None = None, offset: int = 0) -> QueuePage:
        """One page of the filtered queue, hiding items someone other than ``username`` is reviewing.

        Page with ``after`` (the previous page's ``next_cursor``): it stays fast however deep the page is.
        ``offset`` is kept for old API clients and costs a walk over the skipped rows.
        """
        now = time.time() if now is None else now
        query = page_query(flt, username, now, limit + 1, after).offset(offset).options(
            selectinload(ReviewItemRow.regions), selectinload(ReviewItemRow.reviews))
        with self._read() as s:
            rows = list(s.scalars(query))
            total = s.scalar(select(func.count()).select_from(ReviewItemRow).where(*flt.conditions())) or 0
            more = len(rows) > limit
            rows = rows[:limit]
            items = [_item_view(row) for row in rows]
        return QueuePage(items=items, next_cursor=make_cursor(flt.sort, rows[-1]) if more else None,
                         total=int(total))

    def filter_choices(self) -> dict[str, list[str]]:
        """Values present in the data, for the queue's filter drop-downs."""
        with self._read() as s:
            return {name: sorted(str(v) for v in s.scalars(select(column).distinct()))
                    for name, column in (("line", ReviewItemRow.line_id), ("verdict", ReviewItemRow.verdict),
                                         ("reason", ReviewItemRow.reason))}

    # ---- leases ----

    def lease_of(self, item_id: int, now: float | None = None) -> LeaseView | None:
        """The live lease on an item, None when it is free (no lease or an expired one)."""
        now = time.time() if now is None else now
        with self._read() as s:
            row = s.get(LeaseRow, item_id)
            return _lease_view(row) if row is not None and row.expires_wall > now else None

    def claim(self, item_id: int, username: str, minutes: float, now: float | None = None) -> LeaseView:
        """Take (or renew) the lease on an item for ``minutes``; LeaseConflict if someone else holds it."""
        now = time.time() if now is None else now
        with self._write() as s:
            row = s.get(ReviewItemRow, item_id)
            if row is None:
                raise ItemNotFound(f"no review item {item_id}")
            if row.second_review_of == username:
                raise LeaseConflict(f"item {item_id} waits for a second review by someone other than you "
                                    "(you reviewed it first); take the next item instead")
            return _take_lease(s, item_id, username, minutes, now)

    def claim_next(self, username: str, minutes: float, flt: QueueFilter | None = None,
                   exclude: int | None = None, now: float | None = None) -> int | None:
        """Lease the head of the queue for ``username`` and return its id (None when nothing is left).

        Finding the head and taking its lease happen in one write transaction; on SQLite that transaction
        holds the database's write lock from its first statement (BEGIN IMMEDIATE), so two reviewers asking at
        the same moment are served one after the other and can never be handed the same item.
        """
        now = time.time() if now is None else now
        for attempt in range(CLAIM_ATTEMPTS):
            try:
                with self._write() as s:
                    item_id = s.scalar(head_query(flt or QueueFilter(), username, now, exclude))
                    if item_id is not None:
                        _take_lease(s, item_id, username, minutes, now)
                    return item_id
            except (LeaseConflict, IntegrityError):
                # PostgreSQL (read committed): another reviewer leased the same head between our read and our
                # insert; that item is now leased, so the next attempt's head is another one
                if attempt == CLAIM_ATTEMPTS - 1:
                    raise
        return None

    def peek_next(self, username: str, exclude: int | None = None, now: float | None = None) -> int | None:
        """The item ``claim_next`` would most likely hand out, without leasing it (for prefetching its image)."""
        with self._read() as s:
            return s.scalar(head_query(QueueFilter(), username, time.time() if now is None else now, exclude))

    def release(self, item_id: int, username: str) -> None:
        """Give up my lease on an item (no-op if I do not hold it)."""
        with self._write() as s:
            row = s.get(LeaseRow, item_id)
            if row is not None and row.username == username:
                s.delete(row)

    def audit_log(self, limit: int = 100, item_id: int | None = None,
                  username: str | None = None) -> list[audit.AuditEntry]:
        with self._read() as s:
            return [audit.entry(row) for row in s.scalars(audit.recent_query(limit, item_id, username))]

    def record(self, username: str, action: str, item_id: int | None = None, before: Any = None,
               after: Any = None) -> None:
        """An audit row for a change that has no other row (login, logout)."""
        with self._write() as s:
            audit.record(s, username, action, item_id, before, after)

    def get_item(self, item_id: int) -> ItemView | None:
        """One item with its regions, reviews and heatmap."""
        with self._read() as s:
            row = s.get(ReviewItemRow, item_id,
                        options=[selectinload(ReviewItemRow.regions), selectinload(ReviewItemRow.reviews)])
            if row is None:
                return None
            return _item_view(row, s.scalar(select(HeatmapRow.png).where(HeatmapRow.item_id == item_id)))

    def good_references(self, line_id: str, limit: int = 4, exclude: int | None = None) -> list[ReferenceView]:
        """The line's most recently reviewed-good frames, newest answer first: items whose latest review says good.

        Walks the good answers newest first (``ix_reviews_final_verdict``) and stops at ``limit`` hits, so it stays
        quick however many items there are; a good answer later overruled by another review does not count."""
        newer = aliased(ReviewRow)
        query = (select(ReviewRow.item_id, ReviewItemRow.frame_id, ReviewRow.reviewer, ReviewRow.created_wall)
                 .join(ReviewItemRow, ReviewItemRow.id == ReviewRow.item_id)
                 .where(ReviewRow.final_verdict == GOOD, ReviewItemRow.line_id == line_id,
                        ReviewItemRow.status == STATUS_REVIEWED,
                        ~exists().where(newer.item_id == ReviewRow.item_id, newer.id > ReviewRow.id))
                 .order_by(ReviewRow.id.desc()).limit(limit))
        if exclude is not None:
            query = query.where(ReviewRow.item_id != exclude)
        with self._read() as s:
            return [ReferenceView(item_id=i, frame_id=f, reviewer=r, reviewed_wall=w)
                    for i, f, r, w in s.execute(query)]

    def latest_item_id(self) -> int:
        """The highest item id (0 for an empty store): new arrivals have higher ones."""
        with self._read() as s:
            return int(s.scalar(select(func.max(ReviewItemRow.id))) or 0)

    def count_arrivals(self, flt: QueueFilter, after_id: int, up_to_id: int) -> int:
        """Items with ids in (after_id, up_to_id] that ``flt`` shows: the live queue's "n new items"."""
        with self._read() as s:
            return int(s.scalar(select(func.count()).select_from(ReviewItemRow).where(
                ReviewItemRow.id > after_id, ReviewItemRow.id <= up_to_id, *flt.conditions())) or 0)

    def image_file(self, item_id: int) -> Path | None:
        """The image file of an item, looked up by id (never from a client-supplied path)."""
        with self._read() as s:
            relative = s.scalar(select(ReviewItemRow.image_path).where(ReviewItemRow.id == item_id))
        return None if relative is None else imagefiles.resolve(self.storage_dir, relative)

    def status_counts(self) -> dict[str, Any]:
        """Just items by status, for every page's header: answered from the queue index, so it stays cheap with
        100,000 items (``counts`` scans the table for the per-verdict figures)."""
        with self._read() as s:
            by_status = _group_counts(s, ReviewItemRow.status)
        return {"by_status": {STATUS_PENDING: by_status.get(STATUS_PENDING, 0),
                              STATUS_REVIEWED: by_status.get(STATUS_REVIEWED, 0)}}

    def counts(self) -> dict[str, Any]:
        """Items by status and by model verdict, pending items by verdict, and the number of reviews."""
        with self._read() as s:
            by_status = _group_counts(s, ReviewItemRow.status)
            by_verdict = _group_counts(s, ReviewItemRow.verdict)
            pending_by_verdict = _group_counts(s, ReviewItemRow.verdict,
                                               ReviewItemRow.status == STATUS_PENDING)
            reviews = s.scalar(select(func.count()).select_from(ReviewRow)) or 0
        return {
            "items": sum(by_status.values()),
            "by_status": {STATUS_PENDING: by_status.get(STATUS_PENDING, 0),
                          STATUS_REVIEWED: by_status.get(STATUS_REVIEWED, 0)},
            "by_verdict": by_verdict,
            "pending_by_verdict": pending_by_verdict,
            "reviews": reviews,
        }

    def ping(self) -> None:
        """Raise if the database cannot be queried."""
        with self._read() as s:
            s.scalar(select(func.count()).select_from(ReviewItemRow).limit(1))

    # ---- reviews ----

    def add_review(self, item_id: int, decision: str, reviewer: str, defect_class: str | None = None,
                   seconds_spent: float | None = None, now: float | None = None, *,
                   boxes: list[dict[str, Any]] | None = None, comment: str | None = None,
                   second_review_fraction: float = 0.0) -> ReviewView:
        """Record a person's answer and mark the item reviewed. Reviewing again adds a row; the latest wins.

        - ``accept``: the model's verdict is right (final verdict = the item's verdict).
        - ``reject``: the model called a defect but the part is good (final verdict = 'good'); not valid for
          an item the model already called good — use ``relabel`` to name its defect.
        - ``relabel``: the part is ``defect_class`` (one of the item's class_scores keys, 'good' included).

        ``boxes`` (``[{x, y, w, h, class}]``, frame pixels, defect classes of the item) are the operator's own when
        they added, moved, resized or deleted boxes: they then stand instead of the model's regions (which stay as
        the model sent them); None keeps the model's. A final answer 'good' takes no boxes. ``comment`` is free text.

        Second review: a first answer on an item picked by ``picked_for_second_review(frame_id,
        second_review_fraction)`` puts it back in the queue (pending, ``second_review_of`` = this reviewer) for
        anyone else; their answer is marked ``second_review`` and closes the item. The first reviewer cannot give
        it (ReviewError).

        Refused with LeaseConflict while someone other than ``reviewer`` holds a live lease on the item. The
        reviewer's own lease is released (the item is done). The audit row (before = the previous latest review
        and the boxes that stood, after = this one) is written in the same transaction; time spent is the client's
        figure, else the time since the reviewer's lease was claimed.
        """
        if decision not in DECISIONS:
            raise ReviewError(f"unknown decision {decision!r}; use one of {', '.join(DECISIONS)}")
        reviewer = reviewer.strip()
        if not reviewer or len(reviewer) > 100:
            raise ReviewError("reviewer must be 1 to 100 characters")
        if seconds_spent is not None and not 0 <= seconds_spent < 86_400:
            raise ReviewError(f"seconds_spent {seconds_spent} out of range")
        comment = (comment or "").strip() or None
        if comment is not None and len(comment) > MAX_COMMENT_CHARS:
            raise ReviewError(f"comment is {len(comment)} characters; at most {MAX_COMMENT_CHARS}")
        defect_class = (defect_class or "").strip() or None
        now = time.time() if now is None else now
        with self._write() as s:
            row = s.get(ReviewItemRow, item_id)
            if row is None:
                raise ItemNotFound(f"no review item {item_id}")
            lease = s.get(LeaseRow, item_id)
            if lease is not None and lease.expires_wall > now and lease.username != reviewer:
                raise LeaseConflict(f"item {item_id} is being reviewed by {lease.username}; your review was "
                                    "not saved — take the next item instead")
            if row.second_review_of == reviewer:
                raise ReviewError(f"item {item_id} waits for a second review by someone other than you "
                                  "(you gave the first); take the next item instead")
            classes = list(row.class_scores)
            if decision == "relabel":
                if defect_class is None:
                    raise ReviewError("relabel needs defect_class")
                if defect_class not in classes:
                    raise ReviewError(f"unknown class {defect_class!r} for item {item_id}; "
                                      f"use one of {', '.join(classes)}")
                final = defect_class
            else:
                if defect_class is not None:
                    raise ReviewError(f"defect_class is only for relabel, not {decision}")
                if decision == "accept":
                    final = row.verdict
                elif row.verdict == GOOD:
                    raise ReviewError(f"item {item_id} is already verdict 'good'; "
                                      "to mark it defective use relabel with a class")
                else:
                    final = GOOD
            if boxes is not None:
                boxes = check_boxes(boxes, row.width, row.height, classes)
                if final == GOOD and boxes:
                    raise ReviewError("a good part has no defect boxes: delete them, or relabel with a defect class")
            if seconds_spent is None and lease is not None and lease.username == reviewer:
                seconds_spent = round(max(0.0, now - lease.claimed_wall), 1)
            previous = row.reviews[-1] if row.reviews else None
            second = row.second_review_of is not None
            review = ReviewRow(item_id=row.id, decision=decision, final_verdict=final,
                               defect_class=None if final == GOOD else final, reviewer=reviewer,
                               created_wall=now, seconds_spent=seconds_spent, boxes=boxes, comment=comment,
                               second_review=second)
            s.add(review)
            before = {"status": row.status, "review": _review_json(previous),
                      "boxes": effective_boxes(row, previous)}
            if second:
                row.second_review_of, row.status = None, STATUS_REVIEWED
            elif previous is None and picked_for_second_review(row.frame_id, second_review_fraction):
                row.second_review_of, row.status = reviewer, STATUS_PENDING  # back in the queue, for someone else
            else:
                row.status = STATUS_REVIEWED
            if lease is not None and lease.username == reviewer:
                s.delete(lease)
            s.flush()
            audit.record(s, reviewer, "review", item_id, before,
                         {"status": row.status, "second_review_of": row.second_review_of,
                          "review": _review_json(review), "boxes": effective_boxes(row, review)},
                         seconds_spent, now=now)
            return _review_view(review)

    def undo_last_review(self, username: str, minutes: float, now: float | None = None) -> int | None:
        """Take back ``username``'s most recent review: the row goes (the audit log keeps it), the item returns
        to its previous state (pending when it has no other review, waiting for its second review again when the
        undone one was that) and to the user, leased. Returns the item id, None when there is nothing of theirs to
        undo. Refused with LeaseConflict while someone else holds the item, and with ReviewError when someone
        reviewed it again since (theirs is the latest answer).
        """
        now = time.time() if now is None else now
        with self._write() as s:
            review = s.scalar(select(ReviewRow).where(ReviewRow.reviewer == username)
                              .order_by(ReviewRow.id.desc()).limit(1))
            if review is None:
                return None
            item = review.item
            if item.reviews[-1].id != review.id:
                raise ReviewError(f"item {item.id} was reviewed again by {item.reviews[-1].reviewer} after you; "
                                  "nothing undone")
            before = {"status": item.status, "second_review_of": item.second_review_of,
                      "review": _review_json(review)}
            item.reviews.remove(review)  # delete-orphan cascade deletes the row
            if review.second_review and item.reviews:
                item.second_review_of, item.status = item.reviews[-1].reviewer, STATUS_PENDING
            else:
                item.second_review_of = None
                item.status = STATUS_REVIEWED if item.reviews else STATUS_PENDING
            s.flush()
            _take_lease(s, item.id, username, minutes, now)
            audit.record(s, username, "undo", item.id, before,
                         {"status": item.status, "second_review_of": item.second_review_of,
                          "review": _review_json(item.reviews[-1] if item.reviews else None)},
                         now=now)
            return item.id
